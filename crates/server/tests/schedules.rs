//! Schedules through the API: layers, restrictions, overrides, DST weeks,
//! the shift list, the iCalendar feed, `/oncalls`, schedule-assigned
//! escalation rules and the escalation preview.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Account, Backend, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn users(server: &Server, a: &Account, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let email = format!("u{i}-{}@example.com", a.id);
        ids.push(
            server
                .post(
                    "/users",
                    &a.token,
                    json!({"name": format!("User {i}"), "email": email}),
                )
                .await
                .str("id"),
        );
    }
    ids
}

async fn schedule(server: &Server, a: &Account, name: &str, zone: &str) -> String {
    let res = server
        .post(
            "/schedules",
            &a.token,
            json!({"name": name, "time_zone": zone}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    res.str("id")
}

async fn on_call(server: &Server, a: &Account, id: &str, at: &str) -> Option<String> {
    let res = server
        .get(
            &format!("/schedules/{id}/on_call?at={}", at.replace('+', "%2B")),
            &a.token,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    res.body["users"]
        .as_array()
        .unwrap()
        .first()
        .map(|u| u["id"].as_str().unwrap().to_owned())
}

async fn layers_overrides_and_restrictions(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let u = users(&server, &a, 3).await;
    let s = schedule(&server, &a, "Primary", "Europe/Berlin").await;
    // Weekly rotation of three, handoff Monday 09:00 Berlin.
    let res = server
        .post(
            &format!("/schedules/{s}/layers"),
            &a.token,
            json!({"rule": "weekly", "count": 1, "start_at": "2026-01-05T09:00:00", "users": u}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.body["rule"], "weekly");
    assert_eq!(res.body["position"], 0);
    assert_eq!(
        on_call(&server, &a, &s, "2026-01-05T07:59:59Z").await,
        None,
        "before the start"
    );
    assert_eq!(
        on_call(&server, &a, &s, "2026-01-05T08:00:00Z")
            .await
            .as_deref(),
        Some(u[0].as_str())
    );
    assert_eq!(
        on_call(&server, &a, &s, "2026-01-12T09:00:00+01:00")
            .await
            .as_deref(),
        Some(u[1].as_str())
    );
    assert_eq!(
        on_call(&server, &a, &s, "2026-01-26T10:00:00+01:00")
            .await
            .as_deref(),
        Some(u[0].as_str())
    );
    // A weekday-office-hours layer on top shows the rotation through outside its windows.
    let res = server
        .post(&format!("/schedules/{s}/layers"), &a.token, json!({
            "rule": "daily", "count": 1, "start_at": "2026-01-01T00:00:00", "users": [u[2]],
            "restrictions": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}],
        }))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    // Wednesday 2026-01-07: 10:00 Berlin → layer 2; 18:00 → the rotation; Saturday → the rotation.
    assert_eq!(
        on_call(&server, &a, &s, "2026-01-07T10:00:00+01:00")
            .await
            .as_deref(),
        Some(u[2].as_str())
    );
    assert_eq!(
        on_call(&server, &a, &s, "2026-01-07T18:00:00+01:00")
            .await
            .as_deref(),
        Some(u[0].as_str())
    );
    assert_eq!(
        on_call(&server, &a, &s, "2026-01-10T10:00:00+01:00")
            .await
            .as_deref(),
        Some(u[0].as_str())
    );
    // An override covers everything and hands back at its end.
    let res = server
        .post(&format!("/schedules/{s}/overrides"), &a.token, json!({"user_id": u[1], "start_at": "2026-01-07T12:00:00+01:00", "end_at": "2026-01-07T20:00:00+01:00"}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let override_id = res.str("id");
    assert_eq!(
        on_call(&server, &a, &s, "2026-01-07T13:00:00+01:00")
            .await
            .as_deref(),
        Some(u[1].as_str())
    );
    assert_eq!(
        on_call(&server, &a, &s, "2026-01-07T20:00:00+01:00")
            .await
            .as_deref(),
        Some(u[0].as_str())
    );
    // The final shift list for that Wednesday, merged and clipped.
    let res = server.get(&format!("/schedules/{s}/shifts?since=2026-01-07T00:00:00%2B01:00&until=2026-01-08T00:00:00%2B01:00"), &a.token).await;
    let shifts: Vec<(String, String, String)> = res
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["user_id"].as_str().unwrap().into(),
                s["start"].as_str().unwrap().into(),
                s["end"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        (&u[0], "2026-01-06T23:00:00Z", "2026-01-07T08:00:00Z"),
        (&u[2], "2026-01-07T08:00:00Z", "2026-01-07T11:00:00Z"),
        (&u[1], "2026-01-07T11:00:00Z", "2026-01-07T19:00:00Z"),
        (&u[0], "2026-01-07T19:00:00Z", "2026-01-07T23:00:00Z"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(u, a, b)| (u.to_string(), a.to_string(), b.to_string()))
        .collect();
    assert_eq!(shifts, want);
    let listed = server
        .get(
            &format!(
                "/schedules/{s}/overrides?since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00Z"
            ),
            &a.token,
        )
        .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(
        server
            .delete(&format!("/schedules/{s}/overrides/{override_id}"), &a.token)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        on_call(&server, &a, &s, "2026-01-07T13:00:00+01:00")
            .await
            .as_deref(),
        Some(u[2].as_str())
    );
    // The schedule shows its layers; its events record every change.
    let shown = server.get(&format!("/schedules/{s}"), &a.token).await.body;
    assert_eq!(shown["layers"].as_array().unwrap().len(), 2);
    let events = server
        .get(&format!("/schedules/{s}/events"), &a.token)
        .await
        .body;
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "schedule.override_delete",
            "schedule.override_create",
            "schedule.layer_create",
            "schedule.layer_create",
            "schedule.create"
        ]
    );
}

async fn dst_weeks_keep_wall_clock_handoffs(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let u = users(&server, &a, 2).await;
    for (zone, week_start, offsets) in [
        // Berlin springs forward on Sunday 2026-03-29: +01:00 before, +02:00 after.
        (
            "Europe/Berlin",
            "2026-03-26",
            ["+01:00", "+01:00", "+01:00", "+02:00", "+02:00"],
        ),
        // New York falls back on Sunday 2026-11-01: -04:00 before, -05:00 after.
        (
            "America/New_York",
            "2026-10-29",
            ["-04:00", "-04:00", "-04:00", "-05:00", "-05:00"],
        ),
    ] {
        let s = schedule(&server, &a, zone, zone).await;
        let res = server
            .post(&format!("/schedules/{s}/layers"), &a.token, json!({"rule": "daily", "count": 1, "start_at": format!("{week_start}T09:00:00"), "users": u}))
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
        let since = format!("{week_start}T09:00:00{}", offsets[0]).replace('+', "%2B");
        let res = server
            .get(
                &format!(
                    "/schedules/{s}/shifts?since={since}&until={}",
                    "2026-12-31T00:00:00Z"
                ),
                &a.token,
            )
            .await;
        let shifts = res.body.as_array().unwrap();
        // Every handoff is at 09:00 local, before and after the change.
        let zone_tz = jiff::tz::TimeZone::get(zone).unwrap();
        for (n, shift) in shifts.iter().take(5).enumerate() {
            let start: jiff::Timestamp = shift["start"].as_str().unwrap().parse().unwrap();
            let local = start.to_zoned(zone_tz.clone());
            assert_eq!(
                (local.hour(), local.minute()),
                (9, 0),
                "{zone} shift {n}: {local}"
            );
            assert_eq!(
                local.strftime("%:z").to_string(),
                offsets[n],
                "{zone} shift {n}"
            );
            assert_eq!(shift["user_id"], u[n % 2].as_str());
        }
    }
}

async fn calendar_feed_and_oncalls(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let u = users(&server, &a, 2).await;
    let s = schedule(&server, &a, "Ops, primary", "UTC").await;
    let layer = server
        .post(
            &format!("/schedules/{s}/layers"),
            &a.token,
            json!({"rule": "daily", "count": 1, "start_at": "2020-01-01T00:00:00", "users": u}),
        )
        .await;
    assert_eq!(layer.status, StatusCode::CREATED, "{}", layer.text);
    // The feed takes the schedule's own feed token, never an API token.
    let feed = server
        .post(&format!("/schedules/{s}/feed_token"), &a.token, json!({}))
        .await
        .str("token");
    let cal = server
        .http
        .get(format!("{}/schedules/{s}.ics?token={feed}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(cal.status(), StatusCode::OK);
    assert!(cal.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/calendar"));
    let text = cal.text().await.unwrap();
    assert!(
        text.starts_with("BEGIN:VCALENDAR\r\n")
            && text.contains("BEGIN:VEVENT")
            && text.contains("Ops\\, primary"),
        "{text}"
    );
    assert!(
        text.matches("BEGIN:VEVENT").count() >= 60,
        "a week back and two months ahead"
    );
    let other = server.register("Beta").await;
    for token in ["nope", a.token.as_str(), other.token.as_str()] {
        let bad = server
            .http
            .get(format!("{}/schedules/{s}.ics?token={token}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::UNAUTHORIZED, "{token}");
    }

    // /oncalls: every schedule and every rule, a schedule rule resolved.
    let p = server
        .post("/policies", &a.token, json!({"name": "P"}))
        .await
        .str("id");
    server
        .post(
            &format!("/policies/{p}/rules"),
            &a.token,
            json!({"assignment": {"type": "schedule", "id": s}}),
        )
        .await;
    server
        .post(
            &format!("/policies/{p}/rules"),
            &a.token,
            json!({"assignment": {"type": "user", "id": a.user_id}}),
        )
        .await;
    let res = server
        .get("/oncalls?at=2020-01-02T12:00:00Z", &a.token)
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["schedules"][0]["user_id"], u[1].as_str());
    assert_eq!(res.body["rules"][0]["user_id"], u[1].as_str());
    assert_eq!(res.body["rules"][1]["user_id"], a.user_id.as_str());
}

async fn schedule_rules_page_whoever_is_on_call(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let u = users(&server, &a, 2).await;
    let s = schedule(&server, &a, "Primary", "UTC").await;
    // Six-hour turns starting long ago: who is on call depends on the hour.
    server
        .post(
            &format!("/schedules/{s}/layers"),
            &a.token,
            json!({"rule": "hourly", "count": 6, "start_at": "2020-01-01T00:00:00", "users": u}),
        )
        .await;
    let p = server
        .post("/policies", &a.token, json!({"name": "P", "loop_limit": 2}))
        .await
        .str("id");
    let r1 = server
        .post(
            &format!("/policies/{p}/rules"),
            &a.token,
            json!({"escalation_timeout": 300, "assignment": {"type": "schedule", "id": s}}),
        )
        .await;
    assert_eq!(r1.status, StatusCode::CREATED, "{}", r1.text);
    server
        .post(
            &format!("/policies/{p}/rules"),
            &a.token,
            json!({"escalation_timeout": 60, "assignment": {"type": "user", "id": a.user_id}}),
        )
        .await;
    let svc = server
        .post(
            "/services",
            &a.token,
            json!({"name": "Web", "policy_id": p}),
        )
        .await;
    let (svc_id, key) = (svc.str("id"), svc.str("integration_key"));
    let inc = server
        .integration("trigger", &key, &[("message", "down")])
        .await;
    // Whoever was on call at the incident's trigger instant (asking "now"
    // separately could straddle a handoff).
    let at = inc.str("triggered_at");
    let on_call_then = server
        .get(&format!("/schedules/{s}/on_call?at={at}"), &a.token)
        .await
        .body["users"][0]["id"]
        .clone();
    assert!(on_call_then.is_string());
    assert_eq!(
        inc.body["current_user_id"], on_call_then,
        "the schedule's on-call user is paged"
    );
    // The escalation preview walks rules and loops, resolving the schedule at each step.
    let res = server
        .get(
            &format!("/services/{svc_id}/escalation_preview?at=2020-01-01T04:00:00Z"),
            &a.token,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let steps: Vec<(String, Value, i64)> = res.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["at"].as_str().unwrap().to_owned(),
                s["user_id"].clone(),
                s["escalation_loop_count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("2020-01-01T04:00:00Z".to_owned(), json!(u[0]), 1),
            ("2020-01-01T09:00:00Z".to_owned(), json!(a.user_id), 1),
            ("2020-01-01T10:00:00Z".to_owned(), json!(u[1]), 2),
            ("2020-01-01T15:00:00Z".to_owned(), json!(a.user_id), 2),
        ]
    );
    // A schedule in use cannot be deleted; a user in a rotation neither.
    server
        .delete(&format!("/schedules/{s}"), &a.token)
        .await
        .assert_error(StatusCode::CONFLICT);
    server
        .delete(&format!("/users/{}", u[1]), &a.token)
        .await
        .assert_error(StatusCode::CONFLICT);
}

async fn bad_schedule_input(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let b = server.register("Beta").await;
    let u = users(&server, &a, 1).await;
    server
        .post(
            "/schedules",
            &a.token,
            json!({"name": "X", "time_zone": "Mars/Base"}),
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    let s = schedule(&server, &a, "S", "UTC").await;
    let layers = format!("/schedules/{s}/layers");
    for (body, field) in [
        (
            json!({"rule": "fortnightly", "start_at": "2026-01-01T00:00:00", "users": u}),
            "rule",
        ),
        (
            json!({"rule": "daily", "count": 0, "start_at": "2026-01-01T00:00:00", "users": u}),
            "count",
        ),
        (
            json!({"rule": "daily", "start_at": "2026-01-01T00:00:00Z", "users": u}),
            "start_at",
        ),
        (
            json!({"rule": "daily", "start_at": "tomorrow", "users": u}),
            "start_at",
        ),
        (
            json!({"rule": "daily", "start_at": "2026-01-01T00:00:00", "users": []}),
            "users",
        ),
        (
            json!({"rule": "daily", "start_at": "2026-01-01T00:00:00", "users": ["not an id"]}),
            "users",
        ),
        (
            json!({"rule": "daily", "start_at": "2026-01-01T00:00:00", "users": [b.user_id]}),
            "users",
        ),
        (
            json!({"rule": "daily", "start_at": "2026-01-01T00:00:00", "users": u, "restrictions": [{"days": ["someday"], "start": "09:00", "end": "17:00"}]}),
            "restrictions",
        ),
        (
            json!({"rule": "daily", "start_at": "2026-01-01T00:00:00", "users": u, "restrictions": [{"days": ["mon"], "start": "25:00", "end": "17:00"}]}),
            "restrictions",
        ),
    ] {
        let res = server.post(&layers, &a.token, body.clone()).await;
        res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(res.body["errors"][field].is_array(), "{body}: {}", res.text);
    }
    let overrides = format!("/schedules/{s}/overrides");
    for body in [
        json!({"user_id": u[0], "start_at": "2026-01-02T00:00:00Z", "end_at": "2026-01-01T00:00:00Z"}),
        json!({"user_id": u[0], "start_at": "soon"}),
        json!({"user_id": b.user_id, "start_at": "2026-01-01T00:00:00Z", "end_at": "2026-01-02T00:00:00Z"}),
    ] {
        server
            .post(&overrides, &a.token, body)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    }
    for q in ["at=never", "at=2026-13-01T00:00:00Z"] {
        server
            .get(&format!("/schedules/{s}/on_call?{q}"), &a.token)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    }
    server
        .get(
            &format!("/schedules/{s}/shifts?since=2026-01-01T00:00:00Z&until=2028-01-01T00:00:00Z"),
            &a.token,
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    // Another account's schedule is a 404 everywhere.
    for path in [
        format!("/schedules/{s}"),
        format!("/schedules/{s}/layers"),
        format!("/schedules/{s}/on_call"),
        format!("/schedules/{s}/shifts"),
        format!("/schedules/{s}/overrides"),
        format!("/schedules/{s}/events"),
    ] {
        server
            .get(&path, &b.token)
            .await
            .assert_error(StatusCode::NOT_FOUND);
    }
    server
        .post(
            &layers,
            &b.token,
            json!({"rule": "daily", "start_at": "2026-01-01T00:00:00", "users": [b.user_id]}),
        )
        .await
        .assert_error(StatusCode::NOT_FOUND);
    server
        .delete(&format!("/schedules/{s}"), &b.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    let p = server
        .post("/policies", &b.token, json!({"name": "P"}))
        .await
        .str("id");
    server
        .post(
            &format!("/policies/{p}/rules"),
            &b.token,
            json!({"assignment": {"type": "schedule", "id": s}}),
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
}

both_backends!(
    layers_overrides_and_restrictions,
    dst_weeks_keep_wall_clock_handoffs,
    calendar_feed_and_oncalls,
    schedule_rules_page_whoever_is_on_call,
    bad_schedule_input,
);
