//! Sessions and tokens against the real binary, on both backends: a
//! password or email change needs the current password and revokes the
//! other tokens; admins list and revoke anyone's tokens in their account;
//! calendar feed tokens open their feed and nothing else; sessions expire
//! unless used; registration by invitation.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Account, Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Signs in; the session token.
async fn sign_in(server: &Server, email: &str, password: &str) -> String {
    let res = server
        .call(
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    res.str("token")
}

/// A user of `a`'s account with a password, made with an admin's
/// `token`; (id, email).
async fn add_user(
    server: &Server,
    a: &Account,
    token: &str,
    name: &str,
    role: &str,
) -> (String, String) {
    let email = format!("{name}@{}.example.com", a.id.to_lowercase());
    let res = server
        .post(
            "/users",
            token,
            json!({"name": name, "email": email, "role": role, "password": "long enough"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    (res.str("id"), email)
}

/// The status of a GET, without reading the body (an event stream's never
/// ends).
async fn status(server: &Server, path: &str, token: &str) -> StatusCode {
    server
        .http
        .get(format!("{}{path}", server.base))
        .header("Authorization", format!("Token token=\"{token}\""))
        .send()
        .await
        .unwrap()
        .status()
}

async fn password_change_needs_the_current_password_and_revokes_other_tokens(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let me = format!("/users/{}", a.user_id);
    let session = sign_in(&server, &a.email, "correct horse").await;
    let api = server
        .post("/tokens", &a.token, json!({"name": "ci"}))
        .await;
    assert_eq!(api.status, StatusCode::CREATED);
    let api = api.str("token");

    // The current password is required, and must be right.
    let res = server
        .put(&me, &session, json!({"password": "new password"}))
        .await;
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        res.body,
        json!({"errors": {"current_password": ["can't be blank"]}})
    );
    let res = server
        .put(
            &me,
            &session,
            json!({"password": "new password", "current_password": "wrong horse"}),
        )
        .await;
    assert_eq!(
        res.body,
        json!({"errors": {"current_password": ["is incorrect"]}})
    );
    // Refused changes revoke nothing.
    assert_eq!(status(&server, "/me", &api).await, StatusCode::OK);

    let res = server
        .put(
            &me,
            &session,
            json!({"password": "new password", "current_password": "correct horse"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    // The token the change came with still works; every other is gone.
    assert_eq!(status(&server, "/me", &session).await, StatusCode::OK);
    for old in [&a.token, &api] {
        server
            .get("/me", old)
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
    let left = server.get("/tokens", &session).await;
    assert_eq!(left.body.as_array().unwrap().len(), 1, "{}", left.text);
    server
        .call(
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": a.email, "password": "correct horse"})),
        )
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    let second = sign_in(&server, &a.email, "new password").await;

    // Email likewise; a name is changed without the password.
    let new_email = format!("renamed-{}", a.email);
    let res = server.put(&me, &second, json!({"email": new_email})).await;
    assert_eq!(
        res.body,
        json!({"errors": {"current_password": ["can't be blank"]}})
    );
    assert_eq!(
        server
            .put(&me, &second, json!({"name": "Olive"}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(status(&server, "/me", &session).await, StatusCode::OK);
    let res = server
        .put(
            &me,
            &second,
            json!({"email": new_email, "current_password": "new password"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(status(&server, "/me", &second).await, StatusCode::OK);
    server
        .get("/me", &session)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    sign_in(&server, &new_email, "new password").await;

    // An admin setting someone else's password revokes all of their
    // tokens; changing their name does not.
    let (rid, remail) = add_user(&server, &a, &second, "rita", "responder").await;
    let rita = sign_in(&server, &remail, "long enough").await;
    let res = server
        .put(&format!("/users/{rid}"), &second, json!({"name": "Rita"}))
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_eq!(status(&server, "/me", &rita).await, StatusCode::OK);
    let res = server
        .put(
            &format!("/users/{rid}"),
            &second,
            json!({"password": "set by admin"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    server
        .get("/me", &rita)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    sign_in(&server, &remail, "set by admin").await;
    // The audit log says how many tokens went.
    let events = server.get(&format!("/users/{rid}/events"), &second).await;
    let update = &events.body.as_array().unwrap()[0];
    assert_eq!(update["action"], "user.update");
    assert_eq!(update["changeset"]["tokens_revoked"], 1, "{update}");
}

async fn admins_list_and_revoke_other_users_tokens(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let b = server.register("Beta").await;
    let (rid, remail) = add_user(&server, &a, &a.token, "rita", "responder").await;
    let (_, oemail) = add_user(&server, &a, &a.token, "otto", "observer").await;
    let rita = sign_in(&server, &remail, "long enough").await;
    let otto = sign_in(&server, &oemail, "long enough").await;

    let list = server.get(&format!("/users/{rid}/tokens"), &a.token).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let tokens = list.body.as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["kind"], "session");
    assert!(tokens[0]["expires_at"].is_string(), "{}", tokens[0]);
    assert!(tokens[0].get("token").is_none(), "never the secret");
    let tid = tokens[0]["id"].as_str().unwrap().to_owned();

    // Responders and observers see their own, nobody else's.
    assert_eq!(
        status(&server, &format!("/users/{rid}/tokens"), &rita).await,
        StatusCode::OK
    );
    for (token, path) in [
        (&rita, format!("/users/{}/tokens", a.user_id)),
        (&otto, format!("/users/{rid}/tokens")),
    ] {
        server
            .get(&path, token)
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
    server
        .delete(&format!("/users/{rid}/tokens/{tid}"), &otto)
        .await
        .assert_error(StatusCode::FORBIDDEN);
    // Another account: 404 for listing and revoking, and a token id of
    // another account is not found under this one's user.
    server
        .get(&format!("/users/{rid}/tokens"), &b.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    server
        .delete(&format!("/users/{rid}/tokens/{tid}"), &b.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    let b_tokens = server.get("/tokens", &b.token).await;
    let b_tid = b_tokens.body[0]["id"].as_str().unwrap().to_owned();
    server
        .delete(&format!("/users/{rid}/tokens/{b_tid}"), &a.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    assert_eq!(status(&server, "/me", &rita).await, StatusCode::OK);

    // The admin revokes it.
    let res = server
        .delete(&format!("/users/{rid}/tokens/{tid}"), &a.token)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    server
        .get("/me", &rita)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    assert!(server
        .get(&format!("/users/{rid}/tokens"), &a.token)
        .await
        .body
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(status(&server, "/me", &b.token).await, StatusCode::OK);
}

async fn api_tokens_may_expire(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let res = server
        .post(
            "/tokens",
            &a.token,
            json!({"name": "ci", "expires_in_days": 7}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.body["kind"], "api");
    assert!(res.body["expires_at"].is_string());
    let res = server
        .post("/tokens", &a.token, json!({"name": "forever"}))
        .await;
    assert!(res.body["expires_at"].is_null());
    for (body, field) in [
        (json!({"expires_in_days": 0}), "expires_in_days"),
        (
            json!({"expires_in_days": 7, "expires_at": "2999-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (json!({"expires_at": "2000-01-01T00:00:00Z"}), "expires_at"),
        (json!({"expires_at": "soon"}), "expires_at"),
    ] {
        let res = server.post("/tokens", &a.token, body.clone()).await;
        res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            res.body["errors"].get(field).is_some(),
            "{body}: {}",
            res.text
        );
    }
}

async fn feed_tokens_open_only_their_calendar(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let b = server.register("Beta").await;
    let (_, oemail) = add_user(&server, &a, &a.token, "otto", "observer").await;
    let otto = sign_in(&server, &oemail, "long enough").await;
    let mut schedules = Vec::new();
    for name in ["Primary", "Secondary"] {
        let res = server
            .post("/schedules", &a.token, json!({"name": name}))
            .await;
        assert_eq!(res.status, StatusCode::CREATED);
        schedules.push(res.str("id"));
    }
    let (s1, s2) = (&schedules[0], &schedules[1]);
    let feed = server
        .post(&format!("/schedules/{s1}/feed_token"), &a.token, json!({}))
        .await;
    assert_eq!(feed.status, StatusCode::CREATED, "{}", feed.text);
    let secret = feed.str("token");
    let url = feed.str("url");
    // At the public URL (here the listen address as configured, port 0).
    assert!(
        url.ends_with(&format!("/schedules/{s1}.ics?token={secret}")),
        "{url}"
    );

    // The feed works with its token, and only with it.
    let ics = |id: &str, token: &str| format!("{}/schedules/{id}.ics?token={token}", server.base);
    let cal = server.http.get(ics(s1, &secret)).send().await.unwrap();
    assert_eq!(cal.status(), StatusCode::OK);
    assert!(cal.text().await.unwrap().starts_with("BEGIN:VCALENDAR"));
    for (url, why) in [
        (ics(s2, &secret), "another schedule"),
        (ics(s1, &a.token), "an API token"),
        (ics(s1, "nonsense"), "an unknown token"),
    ] {
        let res = server.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{why}");
    }
    server
        .get(&format!("/schedules/{s1}.ics"), &a.token)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);

    // Refused everywhere else, in the header or the query string.
    let me = &a.user_id;
    let routes = [
        "/me".to_owned(),
        "/tokens".into(),
        format!("/users/{me}/tokens"),
        "/users".into(),
        format!("/users/{me}"),
        format!("/users/{me}/contacts"),
        format!("/users/{me}/notification_rules"),
        format!("/users/{me}/notifications"),
        format!("/users/{me}/events"),
        "/incidents".into(),
        "/services".into(),
        "/policies".into(),
        "/schedules".into(),
        format!("/schedules/{s1}"),
        format!("/schedules/{s1}/layers"),
        format!("/schedules/{s1}/overrides"),
        format!("/schedules/{s1}/on_call"),
        format!("/schedules/{s1}/shifts"),
        format!("/schedules/{s1}/events"),
        "/oncalls".into(),
        "/events".into(),
        "/events/stream".into(),
        "/invitations".into(),
        "/webhook_signing_secret".into(),
    ];
    for path in &routes {
        // The route exists: the owner's token reads it.
        assert_eq!(
            status(&server, path, &a.token).await,
            StatusCode::OK,
            "{path}"
        );
        assert_eq!(
            status(&server, path, &secret).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        let res = server
            .http
            .get(format!("{}{path}?token={secret}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}?token=");
    }
    for path in [
        "/tokens",
        &format!("/schedules/{s1}/feed_token"),
        "/services",
    ] {
        server
            .post(path, &secret, json!({"name": "x"}))
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
    server
        .integration("trigger", &secret, &[("message", "x")])
        .await
        .assert_error(StatusCode::UNAUTHORIZED);

    // One per user and schedule: a new one replaces the old.
    let again = server
        .post(&format!("/schedules/{s1}/feed_token"), &a.token, json!({}))
        .await;
    let renewed = again.str("token");
    let old = server.http.get(ics(s1, &secret)).send().await.unwrap();
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED, "replaced");
    let new = server.http.get(ics(s1, &renewed)).send().await.unwrap();
    assert_eq!(new.status(), StatusCode::OK);
    // Observers may have one; another account may not.
    let res = server
        .post(&format!("/schedules/{s1}/feed_token"), &otto, json!({}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    server
        .post(&format!("/schedules/{s1}/feed_token"), &b.token, json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND);
    // Listed with the caller's tokens, and revocable.
    let listed = server.get("/tokens", &a.token).await;
    assert!(listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["kind"] == "feed" && t["schedule_id"] == s1.as_str()));
    let path = format!("/schedules/{s1}/feed_token");
    assert_eq!(
        server.delete(&path, &a.token).await.status,
        StatusCode::NO_CONTENT
    );
    let gone = server.http.get(ics(s1, &renewed)).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);
    server
        .delete(&path, &a.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

/// With the clock at 3600× (an hour a second) and a four-hour TTL, a
/// session lasts four real seconds unused: one used every half second
/// lives on past that, one left alone lapses.
async fn sessions_expire_unless_used(backend: Backend) {
    let server = Server::start_with(
        backend,
        &[("KLAXON_CLOCK_SPEED", "3600"), ("KLAXON_SESSION_TTL", "4h")],
    )
    .await;
    let a = server.register("Alpha").await;
    let busy = sign_in(&server, &a.email, "correct horse").await;
    let idle = sign_in(&server, &a.email, "correct horse").await;
    assert_eq!(status(&server, "/me", &idle).await, StatusCode::OK);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(7) {
        assert_eq!(
            status(&server, "/me", &busy).await,
            StatusCode::OK,
            "a session in use after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    server
        .get("/me", &idle)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    // The registration's API token does not expire.
    assert_eq!(status(&server, "/me", &a.token).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(5)).await;
    server
        .get("/me", &busy)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

async fn registration_by_invitation(backend: Backend) {
    let server = Server::start_with(backend, &[("KLAXON_REGISTRATIONS", "invite")]).await;
    let body = |email: &str, invitation: Option<&str>| {
        let mut b = json!({"account_name": "New", "name": "Nina", "email": email,
                           "password": "long enough"});
        if let Some(code) = invitation {
            b["invitation"] = Value::String(code.to_owned());
        }
        b
    };
    let register = |b: Value| server.call(Method::POST, "/registrations", None, Some(b));
    register(body("nina@example.com", None))
        .await
        .assert_error(StatusCode::FORBIDDEN);

    // The first account comes from the command line.
    let (ok, stdout, stderr) = server.run_cli(&[
        "bootstrap",
        "--account",
        "Ops",
        "--name",
        "Olga",
        "--email",
        "olga@example.com",
        "--password",
        "long enough",
    ]);
    assert!(ok, "{stderr}");
    let owner: Value = serde_json::from_str(stdout.trim()).unwrap();
    let admin = owner["token"].as_str().unwrap().to_owned();
    let inv = server
        .post("/invitations", &admin, json!({"role": "observer"}))
        .await;
    assert_eq!(inv.status, StatusCode::CREATED, "{}", inv.text);
    assert_eq!(
        inv.header("location").unwrap(),
        format!("/invitations/{}", inv.str("id"))
    );
    let code = inv.str("code");
    let joined = register(body("nina@example.com", Some(&code))).await;
    assert_eq!(joined.status, StatusCode::CREATED, "{}", joined.text);
    assert_eq!(joined.body["account_id"], owner["account_id"]);
    let nina = joined.str("token");
    let me = server.get("/me", &nina).await;
    assert_eq!(
        (me.body["role"].as_str(), me.body["email"].as_str()),
        (Some("observer"), Some("nina@example.com"))
    );
    // Once only; observers cannot invite.
    let res = register(body("nick@example.com", Some(&code))).await;
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.body["errors"]["invitation"].is_array(), "{}", res.text);
    server
        .post("/invitations", &nina, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    let listed = server.get("/invitations", &admin).await;
    let listed = listed.body.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["used_by"], joined.body["user_id"]);
    assert!(listed[0].get("code").is_none());

    // An invitation for one address; a taken email leaves it usable.
    let inv = server
        .post(
            "/invitations",
            &admin,
            json!({"email": "Rita@Example.com", "expires_in_days": 1}),
        )
        .await;
    let code = inv.str("code");
    let res = register(body("sam@example.com", Some(&code))).await;
    assert!(res.body["errors"]["email"].is_array(), "{}", res.text);
    let withdrawn = server
        .post("/invitations", &admin, json!({}))
        .await
        .str("id");
    assert_eq!(
        server
            .delete(&format!("/invitations/{withdrawn}"), &admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let joined = register(body("rita@example.com", Some(&code))).await;
    assert_eq!(joined.status, StatusCode::CREATED, "{}", joined.text);
    let me = server.get("/me", &joined.str("token")).await;
    assert_eq!(me.body["role"], "responder");
}

async fn closed_registrations_take_no_invitation(backend: Backend) {
    let server = Server::start_with(backend, &[("KLAXON_REGISTRATIONS", "closed")]).await;
    let res = server
        .call(
            Method::POST,
            "/registrations",
            None,
            Some(
                json!({"name": "N", "email": "n@example.com", "password": "long enough",
                        "invitation": "anything"}),
            ),
        )
        .await;
    res.assert_error(StatusCode::FORBIDDEN);
}

/// Expiry to the millisecond, in-process on a manual clock: a session
/// lapses exactly one TTL after its last renewal, a renewal is written at
/// most once a minute, and an API token's `expires_in_days` is exact.
mod manual_clock {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use klaxon_core::time::{format_ts, parse_ts, Millis, DAY_MS};
    use klaxon_server::app::{router, AppState};
    use klaxon_server::clock::Clock;
    use klaxon_server::config::ConfigArgs;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::common::Backend;

    async fn send(
        app: &axum::Router,
        method: Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub(super) async fn session_expiry_on_a_manual_clock(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/klaxon.db", dir.path().display()),
            Backend::Postgres => tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
                .await
                .unwrap(),
        };
        let store = klaxon_store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let t0: Millis = parse_ts("2026-01-05T09:00:00Z").unwrap();
        let clock = Clock::manual(t0);
        let config = ConfigArgs {
            session_ttl: Some("30d".into()),
            ..ConfigArgs::default()
        };
        let state = AppState::load(store, clock.clone(), Arc::new(config.load().unwrap()))
            .await
            .unwrap();
        let app = router(state);
        let ttl = 30 * DAY_MS;

        let (_, reg) = send(&app, Method::POST, "/registrations", "", json!({
            "account_name": "A", "name": "Ann", "email": "ann@example.com", "password": "correct horse",
        }))
        .await;
        let api = reg["token"].as_str().unwrap().to_owned();
        let (status, session) = send(
            &app,
            Method::POST,
            "/sessions",
            "",
            json!({
                "email": "ann@example.com", "password": "correct horse",
            }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{session}");
        assert_eq!(session["expires_at"], format_ts(t0 + ttl));
        let session = session["token"].as_str().unwrap().to_owned();
        let me = |token: &str| {
            let token = token.to_owned();
            let app = app.clone();
            async move { send(&app, Method::GET, "/me", &token, Value::Null).await.0 }
        };
        let stamps = || async {
            let (_, list) = send(&app, Method::GET, "/tokens", &api, Value::Null).await;
            let s = list
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["kind"] == "session")
                .unwrap()
                .clone();
            (s["last_used_at"].clone(), s["expires_at"].clone())
        };

        // The first use renews; another within the minute writes nothing.
        let used = clock.advance(Duration::from_secs(30));
        assert_eq!(me(&session).await, StatusCode::OK);
        let renewed = (json!(format_ts(used)), json!(format_ts(used + ttl)));
        assert_eq!(stamps().await, renewed);
        clock.advance(Duration::from_secs(59));
        assert_eq!(me(&session).await, StatusCode::OK);
        assert_eq!(stamps().await, renewed, "at most one write a minute");
        let used = clock.advance(Duration::from_secs(1));
        assert_eq!(me(&session).await, StatusCode::OK);
        assert_eq!(
            stamps().await,
            (json!(format_ts(used)), json!(format_ts(used + ttl)))
        );

        // Used a millisecond before it lapses, it lives another TTL; left
        // alone, it lapses exactly then.
        let last = used + ttl - 1;
        clock.set(last);
        assert_eq!(me(&session).await, StatusCode::OK);
        clock.set(last + ttl - 1);
        assert_eq!(me(&session).await, StatusCode::OK);
        let last = last + ttl - 1;
        clock.set(last + ttl);
        assert_eq!(me(&session).await, StatusCode::UNAUTHORIZED);
        clock.set(last + ttl + 1);
        assert_eq!(me(&session).await, StatusCode::UNAUTHORIZED);

        // An API token that expires in a day does, to the millisecond.
        let made = clock.now_ms();
        let (status, token) = send(
            &app,
            Method::POST,
            "/tokens",
            &api,
            json!({"expires_in_days": 1}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{token}");
        let token = token["token"].as_str().unwrap().to_owned();
        clock.set(made + DAY_MS - 1);
        assert_eq!(me(&token).await, StatusCode::OK);
        clock.set(made + DAY_MS);
        assert_eq!(me(&token).await, StatusCode::UNAUTHORIZED);
        // The registration's token never expires.
        assert_eq!(me(&api).await, StatusCode::OK);
    }
}

async fn session_expiry_on_a_manual_clock(backend: Backend) {
    manual_clock::session_expiry_on_a_manual_clock(backend).await;
}

both_backends!(
    session_expiry_on_a_manual_clock,
    password_change_needs_the_current_password_and_revokes_other_tokens,
    admins_list_and_revoke_other_users_tokens,
    api_tokens_may_expire,
    feed_tokens_open_only_their_calendar,
    sessions_expire_unless_used,
    registration_by_invitation,
    closed_registrations_take_no_invitation,
);
