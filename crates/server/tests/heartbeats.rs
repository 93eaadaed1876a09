//! Heartbeats, in-process on SQLite and on PostgreSQL: the API with its
//! roles and validation, pings, and expiry on a manual clock (moved by
//! hand, the engine run once with `engine::run_due`), so every expiry
//! fires at an instant the test chose. One test runs the real engine loop
//! on a fast clock to see that a new heartbeat wakes it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::Backend;
use klaxon_core::time::{format_ts, parse_ts, Millis, MINUTE_MS};
use klaxon_server::app::{router, AppState};
use klaxon_server::clock::Clock;
use klaxon_server::config::ConfigArgs;
use klaxon_server::{engine, notify};
use klaxon_store::Store;
use serde_json::{json, Value};
use tower::ServiceExt;

const PUBLIC_URL: &str = "https://klaxon.example";

fn t0() -> Millis {
    parse_ts("2026-01-05T09:00:00Z").unwrap()
}

fn minutes(n: i64) -> Millis {
    n * MINUTE_MS
}

/// The router on a clock, and the store and clock behind it.
struct TestApp {
    app: axum::Router,
    store: Arc<dyn Store>,
    clock: Clock,
    _dir: tempfile::TempDir,
}

/// A registered account: its owner's token, a service paging the owner,
/// and users of the other roles.
struct Team {
    owner: String,
    admin: String,
    responder: String,
    observer: String,
    service: String,
}

impl TestApp {
    async fn new(backend: Backend) -> TestApp {
        Self::with_clock(backend, Clock::manual(t0())).await
    }

    async fn with_clock(backend: Backend, clock: Clock) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/klaxon.db", dir.path().display()),
            Backend::Postgres => tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
                .await
                .unwrap(),
        };
        let store = klaxon_store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let config = ConfigArgs {
            public_url: Some(PUBLIC_URL.into()),
            ..ConfigArgs::default()
        };
        let state = AppState::load(
            store.clone(),
            clock.clone(),
            Arc::new(config.load().unwrap()),
        )
        .await
        .unwrap();
        TestApp {
            app: router(state),
            store,
            clock,
            _dir: dir,
        }
    }

    /// One request with a JSON body (or none); `(status, body)`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("Token token=\"{token}\""));
        let req = match body {
            Some(b) => req
                .header("Content-Type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        let res = self.app.clone().oneshot(req.unwrap()).await.unwrap();
        let status = res.status();
        let json = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        if !status.is_success() {
            assert!(json, "{status}: errors are JSON");
        }
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn ok(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let (status, body) = self.send(method.clone(), path, token, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        self.ok(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        self.ok(Method::POST, path, token, Some(body)).await
    }

    /// A user of `role` with a session token.
    async fn member(&self, owner: &str, account: &str, role: &str) -> String {
        let email = format!("{role}@{}.example.com", account.to_lowercase());
        self.post(
            "/users",
            owner,
            json!({"name": role, "email": email, "role": role, "password": "correct horse"}),
        )
        .await;
        let session = self
            .post(
                "/sessions",
                "",
                json!({"email": email, "password": "correct horse"}),
            )
            .await;
        session["token"].as_str().unwrap().to_owned()
    }

    /// An account with a service whose policy pages its owner after 30
    /// minutes, and users of every role.
    async fn team(&self, name: &str) -> Team {
        let reg = self
            .post(
                "/registrations",
                "",
                json!({"account_name": name, "name": "Owner",
                       "email": format!("owner@{}.example.com", name.to_lowercase()),
                       "password": "correct horse"}),
            )
            .await;
        let owner = reg["token"].as_str().unwrap().to_owned();
        let user = reg["user_id"].as_str().unwrap();
        let policy = self
            .post(
                "/policies",
                &owner,
                json!({"name": "Primary", "loop_limit": 1}),
            )
            .await;
        let policy_id = policy["id"].as_str().unwrap();
        self.post(
            &format!("/policies/{policy_id}/rules"),
            &owner,
            json!({"escalation_timeout": 30, "assignment": {"type": "user", "id": user}}),
        )
        .await;
        let service = self
            .post(
                "/services",
                &owner,
                json!({"name": "Backups", "policy_id": policy_id}),
            )
            .await;
        Team {
            admin: self.member(&owner, name, "admin").await,
            responder: self.member(&owner, name, "responder").await,
            observer: self.member(&owner, name, "observer").await,
            service: service["id"].as_str().unwrap().to_owned(),
            owner,
        }
    }

    /// Creates a heartbeat; its JSON.
    async fn heartbeat(&self, team: &Team, name: &str, interval: i64) -> Value {
        self.post(
            &format!("/services/{}/heartbeats", team.service),
            &team.owner,
            json!({"name": name, "interval": interval}),
        )
        .await
    }

    /// The service's incidents, oldest first.
    async fn incidents(&self, team: &Team) -> Vec<Value> {
        let list = self
            .get(
                &format!("/services/{}/incidents", team.service),
                &team.owner,
            )
            .await;
        let mut list = list.as_array().unwrap().clone();
        list.reverse();
        list
    }

    /// Sets the clock and runs the engine once.
    async fn tick_at(&self, at: Millis) {
        self.clock.set(at);
        engine::run_due(&*self.store, &self.clock).await.unwrap();
    }

    /// A ping by GET or POST; `(status, body)`.
    async fn ping(&self, method: Method, url: &str) -> (StatusCode, Value) {
        let path = url.strip_prefix(PUBLIC_URL).unwrap();
        let req = Request::builder().method(method).uri(path);
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::from("job finished: 3 files")).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }
}

fn errors_on(body: &Value) -> Vec<String> {
    body["errors"]
        .as_object()
        .map(|e| e.keys().cloned().collect())
        .unwrap_or_default()
}

/// Creating, reading, changing and deleting, by role, with the 422s.
async fn crud_roles_and_validation(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team("Alpha").await;
    let path = format!("/services/{}/heartbeats", team.service);

    let (status, body) = t
        .send(
            Method::POST,
            &path,
            &team.responder,
            Some(json!({"name": "nightly backup", "interval": 1440})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "responders manage: {body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["name"], "nightly backup");
    assert_eq!(body["interval"], 1440);
    assert_eq!(body["status"], "up");
    assert_eq!(body["service_id"], team.service.as_str());
    assert_eq!(body["last_ping_at"], Value::Null);
    assert_eq!(body["expires_at"], format_ts(t0() + minutes(1440)));
    let url = body["ping_url"].as_str().unwrap();
    let token = url
        .strip_prefix(&format!("{PUBLIC_URL}/heartbeats/"))
        .unwrap_or_else(|| panic!("ping URL under the public URL: {url}"));
    assert!(token.len() >= 32 && token.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(
        body["_links"]["self"]["href"],
        format!("{path}/{id}").as_str()
    );

    // Validation names the field.
    for (bad, field) in [
        (json!({"interval": 5}), "name"),
        (json!({"name": "  ", "interval": 5}), "name"),
        (json!({"name": "x".repeat(256), "interval": 5}), "name"),
        (json!({"name": "a"}), "interval"),
        (json!({"name": "a", "interval": 0}), "interval"),
        (json!({"name": "a", "interval": 43_201}), "interval"),
        (json!({"name": "a", "interval": "often"}), "interval"),
        (json!({"name": "nightly backup", "interval": 5}), "name"),
    ] {
        let (status, body) = t
            .send(Method::POST, &path, &team.admin, Some(bad.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(errors_on(&body), [field], "{bad}: {body}");
    }
    let (_, taken) = t
        .send(
            Method::POST,
            &path,
            &team.admin,
            Some(json!({"name": "nightly backup", "interval": 5})),
        )
        .await;
    assert_eq!(taken["errors"]["name"], json!(["has already been taken"]));
    t.post(
        &path,
        &team.admin,
        json!({"name": "hourly sync", "interval": 43_200}),
    )
    .await;

    // Observers read, without the secret URL, and change nothing.
    let list = t.get(&path, &team.observer).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hourly sync", "nightly backup"]);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h.get("ping_url").is_none()));
    let one = t.get(&format!("{path}/{id}"), &team.observer).await;
    assert_eq!(one["name"], "nightly backup");
    assert!(one.get("ping_url").is_none());
    let shown = t.get(&format!("{path}/{id}"), &team.admin).await;
    assert_eq!(shown["ping_url"], url);
    for (method, body) in [
        (Method::POST, Some(json!({"name": "x", "interval": 5}))),
        (Method::PUT, Some(json!({"interval": 5}))),
        (Method::DELETE, None),
    ] {
        let target = if method == Method::POST {
            path.clone()
        } else {
            format!("{path}/{id}")
        };
        let (status, _) = t.send(method, &target, &team.observer, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    // Updates are partial; a shorter interval counts from creation.
    t.clock.set(t0() + minutes(2));
    let (status, _) = t
        .send(
            Method::PUT,
            &format!("{path}/{id}"),
            &team.responder,
            Some(json!({"interval": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let shown = t.get(&format!("{path}/{id}"), &team.owner).await;
    assert_eq!(
        (&shown["name"], &shown["interval"]),
        (&json!("nightly backup"), &json!(60))
    );
    assert_eq!(shown["expires_at"], format_ts(t0() + minutes(60)));
    assert_eq!(shown["updated_at"], format_ts(t0() + minutes(2)));
    for (bad, field) in [
        (json!({"interval": -1}), "interval"),
        (json!({"name": ""}), "name"),
        (json!({"name": "hourly sync"}), "name"),
    ] {
        let (status, body) = t
            .send(
                Method::PATCH,
                &format!("{path}/{id}"),
                &team.admin,
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(errors_on(&body), [field], "{bad}: {body}");
    }
    let (status, _) = t
        .send(
            Method::DELETE,
            &format!("{path}/{id}"),
            &team.responder,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = t
        .send(Method::GET, &format!("{path}/{id}"), &team.owner, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = t.ping(Method::GET, url).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a deleted heartbeat's URL is dead"
    );

    // Every change is in the audit log, the token nowhere.
    let events = t.get("/events?per_page=100", &team.owner).await;
    let mut trail: Vec<(String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"]["id"] == json!(id))
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"]["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    trail.reverse();
    let want = ["heartbeat.create", "heartbeat.update", "heartbeat.delete"];
    assert_eq!(
        trail,
        want.map(|a| (a.to_owned(), "user".to_owned())).to_vec()
    );
    assert!(!events.to_string().contains(token));
}

/// Another account sees nothing and changes nothing.
async fn other_accounts_get_404(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team("Alpha").await;
    let other = t.team("Bravo").await;
    let h = t.heartbeat(&team, "cron", 5).await;
    let id = h["id"].as_str().unwrap();
    let path = format!("/services/{}/heartbeats", team.service);
    for (method, target, body) in [
        (Method::GET, path.clone(), None),
        (
            Method::POST,
            path.clone(),
            Some(json!({"name": "mine", "interval": 5})),
        ),
        (Method::GET, format!("{path}/{id}"), None),
        (
            Method::PUT,
            format!("{path}/{id}"),
            Some(json!({"interval": 1})),
        ),
        (Method::DELETE, format!("{path}/{id}"), None),
        // Its own service with the other's heartbeat id.
        (
            Method::GET,
            format!("/services/{}/heartbeats/{id}", other.service),
            None,
        ),
    ] {
        let (status, body) = t.send(method.clone(), &target, &other.owner, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {target}: {body}");
    }
    let (status, _) = t
        .send(
            Method::GET,
            &format!("/services/{}/heartbeats/{id}", team.service),
            "nosuch",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let unchanged = t.get(&format!("{path}/{id}"), &team.owner).await;
    assert_eq!(
        (&unchanged["name"], &unchanged["interval"]),
        (&json!("cron"), &json!(5))
    );
    let theirs = t
        .get(
            &format!("/services/{}/heartbeats", other.service),
            &other.owner,
        )
        .await;
    assert_eq!(theirs, json!([]));
}

/// A ping by GET or POST moves the expiry; an unknown token is a JSON 404.
async fn pings_by_get_and_post(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team("Alpha").await;
    let h = t.heartbeat(&team, "cron", 10).await;
    let url = h["ping_url"].as_str().unwrap();
    let show = format!(
        "/services/{}/heartbeats/{}",
        team.service,
        h["id"].as_str().unwrap()
    );

    t.clock.set(t0() + minutes(3));
    let (status, body) = t.ping(Method::GET, url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "up", "expires_at": format_ts(t0() + minutes(13))})
    );
    t.clock.set(t0() + minutes(8));
    let (status, body) = t.ping(Method::POST, url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_at"], format_ts(t0() + minutes(18)));
    let shown = t.get(&show, &team.owner).await;
    assert_eq!(shown["last_ping_at"], format_ts(t0() + minutes(8)));
    assert_eq!(shown["expires_at"], format_ts(t0() + minutes(18)));
    assert_eq!(shown["status"], "up");
    // Each ping pushed the expiry: nothing fired at the first one's.
    t.tick_at(t0() + minutes(13)).await;
    assert!(t.incidents(&team).await.is_empty());

    let token = url.rsplit('/').next().unwrap();
    let mut wrong = token.to_owned();
    wrong.replace_range(..1, if token.starts_with('A') { "B" } else { "A" });
    for bad in [wrong.as_str(), "short", "%00", "..%2F"] {
        for method in [Method::GET, Method::POST] {
            let (status, body) = t
                .ping(method.clone(), &format!("{PUBLIC_URL}/heartbeats/{bad}"))
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {bad}");
            assert_eq!(body["error"], "not_found");
        }
    }
}

/// No ping for an interval: one incident, paged like any trigger; more
/// silent intervals add none; a ping resolves it; silence again opens a
/// new one.
async fn expiry_opens_one_incident_and_a_ping_resolves_it(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team("Alpha").await;
    let h = t.heartbeat(&team, "nightly backup", 5).await;
    let id = h["id"].as_str().unwrap().to_owned();
    let url = h["ping_url"].as_str().unwrap().to_owned();
    let show = format!("/services/{}/heartbeats/{id}", team.service);
    let expiry = t0() + minutes(5);

    t.tick_at(expiry - 1).await;
    assert!(t.incidents(&team).await.is_empty(), "not a ms early");
    t.tick_at(expiry).await;
    let incidents = t.incidents(&team).await;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let first = &incidents[0];
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first["message"], "Heartbeat 'nightly backup' expired");
    assert_eq!(first["key"], format!("heartbeat:{id}").as_str());
    assert_eq!(first["state"], "triggered");
    assert_eq!(first["triggered_at"], format_ts(expiry));
    assert_eq!(first["details"]["heartbeat_id"], id.as_str());
    assert!(first["current_user_id"].is_string(), "assigned: {first}");
    // Paged like any trigger, once.
    let sent = notify::run_due(&*t.store, &t.clock, &notify::DevNotifier)
        .await
        .unwrap();
    assert_eq!(sent, 1);
    let pages = t
        .get(&format!("/incidents/{first_id}/notifications"), &team.owner)
        .await;
    assert_eq!(pages.as_array().unwrap().len(), 1);
    assert_eq!(pages[0]["reason"], "assigned");
    assert_eq!(pages[0]["status"], "delivered");
    let shown = t.get(&show, &team.owner).await;
    assert_eq!(shown["status"], "down");
    assert_eq!(shown["expires_at"], format_ts(expiry));

    // Three more silent intervals: still that one incident, paged once.
    for n in 2..=4 {
        t.tick_at(t0() + minutes(5 * n)).await;
    }
    let incidents = t.incidents(&team).await;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let sent = notify::run_due(&*t.store, &t.clock, &notify::DevNotifier)
        .await
        .unwrap();
    assert_eq!(sent, 0);

    // The ping resolves it, as the service.
    let ping_at = t0() + minutes(21);
    t.clock.set(ping_at);
    let (status, _) = t.ping(Method::GET, &url).await;
    assert_eq!(status, StatusCode::OK);
    let resolved = t.get(&format!("/incidents/{first_id}"), &team.owner).await;
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["resolved_at"], format_ts(ping_at));
    let trail = t
        .get(&format!("/incidents/{first_id}/events"), &team.owner)
        .await;
    assert_eq!(trail[0]["action"], "incident.resolve");
    assert_eq!(
        trail[0]["actor"],
        json!({"type": "service", "id": team.service})
    );
    let shown = t.get(&show, &team.owner).await;
    assert_eq!(shown["status"], "up");
    assert_eq!(shown["expires_at"], format_ts(ping_at + minutes(5)));

    // Silence again: a second incident, exactly at the new expiry.
    t.tick_at(ping_at + minutes(5) - 1).await;
    assert_eq!(t.incidents(&team).await.len(), 1);
    t.tick_at(ping_at + minutes(5)).await;
    let incidents = t.incidents(&team).await;
    assert_eq!(incidents.len(), 2, "{incidents:?}");
    assert_eq!(incidents[1]["state"], "triggered");
    assert_eq!(
        incidents[1]["triggered_at"],
        format_ts(ping_at + minutes(5))
    );
    assert_ne!(incidents[1]["id"], incidents[0]["id"]);

    // The heartbeat's own trail: expiry by the system, recovery by the service.
    let events = t.get("/events?per_page=100", &team.owner).await;
    let mut trail: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"]["id"] == json!(id))
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["actor"]["type"].as_str().unwrap()
            )
        })
        .collect();
    trail.reverse();
    assert_eq!(
        trail,
        [
            "heartbeat.create user",
            "heartbeat.expire system",
            "heartbeat.recover service",
            "heartbeat.expire system",
        ]
    );
}

/// A heartbeat deleted before it expires never fires.
async fn deleted_before_expiry_never_fires(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team("Alpha").await;
    let h = t.heartbeat(&team, "cron", 5).await;
    t.clock.set(t0() + minutes(4));
    let (status, _) = t
        .send(
            Method::DELETE,
            &format!(
                "/services/{}/heartbeats/{}",
                team.service,
                h["id"].as_str().unwrap()
            ),
            &team.owner,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for at in [
        t0() + minutes(5),
        t0() + minutes(60),
        t0() + minutes(24 * 60),
    ] {
        t.tick_at(at).await;
    }
    assert!(t.incidents(&team).await.is_empty());
}

/// A disabled service pages nobody: the expiry is recorded, and tried
/// again each interval until the service is back.
async fn a_disabled_service_is_retried_each_interval(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team("Alpha").await;
    let h = t.heartbeat(&team, "cron", 5).await;
    let (status, _) = t
        .send(
            Method::PUT,
            &format!("/services/{}/disable", team.service),
            &team.owner,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    t.tick_at(t0() + minutes(5)).await;
    t.tick_at(t0() + minutes(10)).await;
    assert!(t.incidents(&team).await.is_empty());
    let events = t.get("/events?per_page=10", &team.owner).await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "heartbeat.not_paged" && e["source"]["id"] == h["id"]),
        "{events}"
    );
    t.clock.set(t0() + minutes(12));
    t.send(
        Method::PUT,
        &format!("/services/{}/enable", team.service),
        &team.owner,
        None,
    )
    .await;
    t.tick_at(t0() + minutes(15) - 1).await;
    assert!(t.incidents(&team).await.is_empty());
    t.tick_at(t0() + minutes(15)).await;
    let incidents = t.incidents(&team).await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["message"], "Heartbeat 'cron' expired");
}

/// The engine loop, sleeping with nothing due, is woken by a new
/// heartbeat: on a clock 600 times fast a 1-minute heartbeat expires
/// after 100 ms, long before the loop's fallback poll.
async fn a_new_heartbeat_wakes_the_engine(backend: Backend) {
    let t = TestApp::with_clock(backend, Clock::new(600.0, None)).await;
    let team = t.team("Alpha").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let engine = tokio::spawn(engine::run(t.store.clone(), t.clock.clone(), stopped));
    // Let the loop find nothing due and go to sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    t.heartbeat(&team, "fast", 1).await;
    let deadline = engine::FALLBACK_POLL - Duration::from_secs(1);
    loop {
        if !t.incidents(&team).await.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "the engine did not wake for the new heartbeat"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    engine.await.unwrap();
}

both_backends!(
    crud_roles_and_validation,
    other_accounts_get_404,
    pings_by_get_and_post,
    expiry_opens_one_incident_and_a_ping_resolves_it,
    deleted_before_expiry_never_fires,
    a_disabled_service_is_retried_each_interval,
    a_new_heartbeat_wakes_the_engine,
);
