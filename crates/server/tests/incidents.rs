//! The incident API beyond the seed documents: the state machine, manual
//! escalation, updates, the audit timeline, filters and pagination.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn put(server: &Server, token: &str, path: &str) -> StatusCode {
    server
        .call(Method::PUT, path, Some(token), None)
        .await
        .status
}

async fn list(server: &Server, t: &str, q: &str) -> (Vec<String>, common::Res) {
    let res = server.get(&format!("/incidents?{q}"), t).await;
    assert_eq!(res.status, StatusCode::OK, "{q}: {}", res.text);
    let ids = res
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, res)
}

async fn state_machine(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let s = server.setup_service(&a, "Web", &[&a.user_id], 1).await;
    let id = server
        .integration("trigger", &s.integration_key, &[("message", "m")])
        .await
        .str("id");
    let p = |action: &str| format!("/incidents/{id}/{action}");
    let t = a.token.as_str();
    let show_path = format!("/incidents/{id}");

    // Repeating the current state is accepted and changes nothing.
    assert_eq!(put(&server, t, &p("trigger")).await, StatusCode::NO_CONTENT);
    assert_eq!(
        put(&server, t, &p("acknowledge")).await,
        StatusCode::NO_CONTENT
    );
    let acked = server.get(&show_path, t).await.body;
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(
        put(&server, t, &p("acknowledge")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.get(&show_path, t).await.body["acknowledged_at"],
        acked["acknowledged_at"]
    );
    // Trigger from acknowledged goes back to triggered.
    assert_eq!(put(&server, t, &p("trigger")).await, StatusCode::NO_CONTENT);
    let again = server.get(&show_path, t).await.body;
    assert_eq!(again["state"], "triggered");
    assert_eq!(again["acknowledged_at"], Value::Null);
    assert_eq!(put(&server, t, &p("resolve")).await, StatusCode::NO_CONTENT);
    assert_eq!(put(&server, t, &p("resolve")).await, StatusCode::NO_CONTENT);
    // Impossible moves from resolved are 409 with a JSON error.
    for action in ["acknowledge", "escalate", "trigger"] {
        let res = server.call(Method::PUT, &p(action), Some(t), None).await;
        res.assert_error(StatusCode::CONFLICT);
        assert!(
            res.body["message"].as_str().unwrap().contains("resolved"),
            "{}",
            res.text
        );
    }
    // The timeline: one event per change, none for the repeats.
    let events = server.get(&format!("/incidents/{id}/events"), t).await;
    let actions: Vec<&str> = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "incident.resolve",
            "incident.trigger",
            "incident.acknowledge",
            "incident.create"
        ]
    );
    let ack = &events.body[2];
    assert_eq!(ack["actor"], json!({"type": "user", "id": a.user_id}));
    assert_eq!(ack["source"], json!({"type": "incident", "id": id}));
    assert_eq!(
        ack["changeset"]["state"],
        json!(["triggered", "acknowledged"])
    );
    assert_eq!(events.header("x-total-count").unwrap(), "4");
    // Unknown incident.
    assert_eq!(
        put(&server, t, "/incidents/AAAAAAAA/acknowledge").await,
        StatusCode::NOT_FOUND
    );
}

async fn manual_escalation_walks_the_rules(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let u2 = server
        .post(
            "/users",
            &a.token,
            json!({"name": "Two", "email": "two@example.com"}),
        )
        .await
        .str("id");
    let s = server.setup_service(&a, "Web", &[&a.user_id, &u2], 1).await;
    let id = server
        .integration("trigger", &s.integration_key, &[("message", "m")])
        .await
        .str("id");
    let t = a.token.as_str();
    let expect = [(&u2, 1usize, 1), (&a.user_id, 0, 2), (&u2, 1, 2)];
    // Acknowledged incidents can be escalated too: they go back to triggered.
    assert_eq!(
        put(&server, t, &format!("/incidents/{id}/acknowledge")).await,
        StatusCode::NO_CONTENT
    );
    for (user, rule, loop_count) in expect {
        assert_eq!(
            put(&server, t, &format!("/incidents/{id}/escalate")).await,
            StatusCode::NO_CONTENT
        );
        let inc = server.get(&format!("/incidents/{id}"), t).await.body;
        assert_eq!(inc["state"], "triggered");
        assert_eq!(inc["current_user_id"], user.as_str());
        assert_eq!(inc["current_policy_rule_id"], s.rule_ids[rule].as_str());
        assert_eq!(inc["escalation_loop_count"], loop_count);
        assert_eq!(
            inc["_links"]["current_user"]["href"],
            format!("/users/{user}")
        );
        assert_eq!(
            inc["_links"]["current_policy_rule"]["href"],
            format!("/policies/{}/rules/{}", s.policy_id, s.rule_ids[rule])
        );
    }
    let events = server.get(&format!("/incidents/{id}/events"), t).await.body;
    assert_eq!(events[0]["action"], "incident.escalate");
    assert!(
        events[0]["changeset"]
            .get("escalation_loop_count")
            .is_none(),
        "unchanged fields are left out"
    );
    assert_eq!(
        events[0]["changeset"]["current_user_id"],
        json!([a.user_id, u2])
    );
}

async fn updates_and_links(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let s = server.setup_service(&a, "Web", &[&a.user_id], 1).await;
    let t = a.token.as_str();
    let res = server
        .post(
            &format!("/services/{}/incidents", s.service_id),
            t,
            json!({"message": "m", "description": "d", "details": {"a": 1}}),
        )
        .await;
    let id = res.str("id");
    assert_eq!(res.body["details"], json!({"a": 1}));
    let res = server
        .put(
            &format!("/incidents/{id}"),
            t,
            json!({"message": "m2", "description": null, "details": "text"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert!(res.text.is_empty());
    let inc = server.get(&format!("/incidents/{id}"), t).await.body;
    assert_eq!(
        (
            inc["message"].clone(),
            inc["description"].clone(),
            inc["details"].clone()
        ),
        (json!("m2"), Value::Null, json!("text"))
    );
    let ev = server.get(&format!("/incidents/{id}/events"), t).await.body;
    assert_eq!(ev[0]["action"], "incident.update");
    assert_eq!(ev[0]["changeset"]["message"], json!(["m", "m2"]));
    server
        .put(&format!("/incidents/{id}"), t, json!({"message": ""}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    // A form-encoded JSON object in details is stored as an object.
    let res = server
        .form(
            Method::POST,
            &format!("/services/{}/incidents", s.service_id),
            t,
            &[("message", "f"), ("details", "{\"k\":\"v\"}")],
        )
        .await;
    assert_eq!(res.body["details"], json!({"k": "v"}));
    // The key of an open incident cannot be reused through the REST API.
    let res = server
        .post(
            &format!("/services/{}/incidents", s.service_id),
            t,
            json!({"message": "m", "key": inc["key"]}),
        )
        .await;
    assert_eq!(
        res.body,
        json!({"errors": {"key": ["has already been taken"]}})
    );
    // A rule deleted later leaves the incident without that link.
    assert_eq!(
        server
            .post(
                &format!("/policies/{}/rules", s.policy_id),
                t,
                json!({"assignment": {"type": "user", "id": a.user_id}})
            )
            .await
            .status,
        StatusCode::CREATED
    );
    server
        .delete(
            &format!("/policies/{}/rules/{}", s.policy_id, s.rule_ids[0]),
            t,
        )
        .await;
    let inc = server.get(&format!("/incidents/{id}"), t).await.body;
    assert_eq!(inc["current_policy_rule_id"], Value::Null);
    assert!(inc["_links"].get("current_policy_rule").is_none());
    assert!(inc["_links"].get("current_user").is_some());
}

async fn filters_and_pagination(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let u2 = server
        .post(
            "/users",
            &a.token,
            json!({"name": "Two", "email": "two@example.com"}),
        )
        .await
        .str("id");
    let web = server.setup_service(&a, "Web", &[&a.user_id], 1).await;
    let db = server.setup_service(&a, "DB", &[&u2], 1).await;
    let t = a.token.as_str();
    let mut ids = Vec::new();
    for n in 0..7 {
        let s = if n % 2 == 0 { &web } else { &db };
        let msg = if n == 3 {
            "disk 100%_full".to_owned()
        } else {
            format!("alert {n}")
        };
        ids.push(
            server
                .integration("trigger", &s.integration_key, &[("message", &msg)])
                .await
                .str("id"),
        );
    }
    put(&server, t, &format!("/incidents/{}/acknowledge", ids[0])).await;
    put(&server, t, &format!("/incidents/{}/resolve", ids[1])).await;
    let (all, res) = list(&server, t, "").await;
    assert_eq!(all.len(), 7);
    assert_eq!(all[0], ids[6], "newest first");
    assert_eq!(res.header("x-total-count").unwrap(), "7");
    assert_eq!(
        list(&server, t, "state=triggered,acknowledged")
            .await
            .0
            .len(),
        6
    );
    assert_eq!(
        list(&server, t, "state=acknowledged").await.0,
        [ids[0].clone()]
    );
    assert_eq!(
        list(&server, t, &format!("service_id={}", db.service_id))
            .await
            .0
            .len(),
        3
    );
    assert_eq!(
        list(&server, t, &format!("current_user_id={u2}"))
            .await
            .0
            .len(),
        3
    );
    assert_eq!(
        list(&server, t, "q=100%25_").await.0,
        [ids[3].clone()],
        "% and _ match literally"
    );
    assert_eq!(
        list(&server, t, "q=ALERT").await.0.len(),
        6,
        "case-insensitive"
    );
    assert_eq!(
        list(
            &server,
            t,
            "since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z"
        )
        .await
        .0
        .len(),
        7
    );
    assert_eq!(
        list(&server, t, "until=2000-01-01T00:00:00Z").await.0.len(),
        0
    );
    // Pages of 3: Link header with first/next/last, then prev.
    let (page1, res) = list(
        &server,
        t,
        "per_page=3&state=triggered,acknowledged,resolved",
    )
    .await;
    assert_eq!(page1, &all[..3]);
    let link = res.header("link").unwrap();
    assert!(
        link.contains("rel=\"next\"")
            && link.contains("page=2&per_page=3")
            && link.contains("state=triggered%2Cacknowledged%2Cresolved"),
        "{link}"
    );
    assert!(link.contains("page=3&per_page=3>; rel=\"last\""), "{link}");
    let (page3, res) = list(&server, t, "per_page=3&page=3").await;
    assert_eq!(page3, &all[6..]);
    let link = res.header("link").unwrap();
    assert!(
        link.contains("rel=\"prev\"") && !link.contains("rel=\"next\""),
        "{link}"
    );
    assert_eq!(list(&server, t, "per_page=3&page=9").await.0.len(), 0);
    assert_eq!(
        list(&server, t, "per_page=500").await.0.len(),
        7,
        "clamped to 100"
    );
    // The per-service list uses the same filters.
    let res = server
        .get(
            &format!("/services/{}/incidents?state=triggered", web.service_id),
            t,
        )
        .await;
    assert_eq!(res.body.as_array().unwrap().len(), 3);
}

both_backends!(
    state_machine,
    manual_escalation_walks_the_rules,
    updates_and_links,
    filters_and_pagination
);
