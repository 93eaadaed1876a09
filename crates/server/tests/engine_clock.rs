//! The escalation engine on a manual clock, in-process, on SQLite and on
//! PostgreSQL: the router is driven with `oneshot` requests, the clock is
//! moved by hand and the engine is run once (`engine::run_due`), so every
//! timer fires at an instant the test chose and every assertion is exact.
//! Nothing here sleeps or depends on the machine's speed.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::Backend;
use klaxon_core::time::{format_ts, parse_ts, Millis, MINUTE_MS};
use klaxon_server::app::{router, AppState};
use klaxon_server::clock::Clock;
use klaxon_server::config::ConfigArgs;
use klaxon_server::{engine, notify};
use klaxon_store::{FiredTimer, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

/// Every test starts here, on a whole second (events show whole seconds).
fn t0() -> Millis {
    parse_ts("2026-01-05T09:00:00Z").unwrap()
}

fn minutes(n: i64) -> Millis {
    n * MINUTE_MS
}

/// The router on a manual clock standing at [`t0`], and the store and
/// clock behind it.
struct TestApp {
    app: axum::Router,
    store: Arc<dyn Store>,
    clock: Clock,
    _dir: tempfile::TempDir,
}

/// A registered account: its owner's token and user id, and a second user.
struct Team {
    account_id: String,
    token: String,
    u1: String,
    u2: String,
}

/// A service whose policy walks `[u1, u2]`.
struct Service {
    key: String,
    rule_ids: Vec<String>,
}

/// `(kind, incident, due_at, fired_at, acted)`.
type Fired = (String, String, Millis, Millis, bool);

impl TestApp {
    async fn new(backend: Backend) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/klaxon.db", dir.path().display()),
            Backend::Postgres => tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
                .await
                .unwrap(),
        };
        let store = klaxon_store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let clock = Clock::manual(t0());
        let state = AppState::load(
            store.clone(),
            clock.clone(),
            Arc::new(ConfigArgs::default().load().unwrap()),
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

    /// One request; the body is JSON, or a form when `form` is given.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        form: Option<&[(&str, &str)]>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("Token token=\"{token}\""));
        let req = match (body, form) {
            (Some(b), _) => req
                .header("Content-Type", "application/json")
                .body(Body::from(b.to_string())),
            (None, Some(f)) => req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(Body::from(serde_urlencoded::to_string(f).unwrap())),
            (None, None) => req.body(Body::empty()),
        };
        let res = self.app.clone().oneshot(req.unwrap()).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, body) = self.send(Method::POST, path, token, Some(body), None).await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {body}");
        body
    }

    async fn put(&self, path: &str, token: &str, body: Option<Value>) -> StatusCode {
        self.send(Method::PUT, path, token, body, None).await.0
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.send(Method::GET, path, token, None, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// An account with two users.
    async fn team(&self) -> Team {
        let reg = self
            .post(
                "/registrations",
                "",
                json!({"account_name": "Alpha", "name": "One",
                       "email": "one@alpha.example.com", "password": "correct horse"}),
            )
            .await;
        let token = reg["token"].as_str().unwrap().to_owned();
        let u2 = self
            .post(
                "/users",
                &token,
                json!({"name": "Two", "email": "two@alpha.example.com"}),
            )
            .await;
        Team {
            account_id: reg["account_id"].as_str().unwrap().to_owned(),
            u1: reg["user_id"].as_str().unwrap().to_owned(),
            u2: u2["id"].as_str().unwrap().to_owned(),
            token,
        }
    }

    /// A policy with one rule per `(user, minutes)` and `loop_limit`, and a
    /// service on it with `service` merged into its body.
    async fn service(
        &self,
        team: &Team,
        name: &str,
        rules: &[(&str, i64)],
        loop_limit: i64,
        service: Value,
    ) -> Service {
        let token = &team.token;
        let policy = self
            .post(
                "/policies",
                token,
                json!({"name": format!("{name} policy"), "loop_limit": loop_limit}),
            )
            .await;
        let policy_id = policy["id"].as_str().unwrap();
        let mut rule_ids = Vec::new();
        for (user, minutes) in rules {
            let rule = self
                .post(
                    &format!("/policies/{policy_id}/rules"),
                    token,
                    json!({"escalation_timeout": minutes,
                           "assignment": {"type": "user", "id": user}}),
                )
                .await;
            rule_ids.push(rule["id"].as_str().unwrap().to_owned());
        }
        let mut body = json!({"name": name, "policy_id": policy_id});
        body.as_object_mut()
            .unwrap()
            .extend(service.as_object().unwrap().clone());
        let created = self.post("/services", token, body).await;
        Service {
            key: created["integration_key"].as_str().unwrap().to_owned(),
            rule_ids,
        }
    }

    /// `PUT /trigger` with the service's integration key; the incident id.
    async fn trigger(&self, service: &Service, message: &str) -> String {
        let (status, body) = self
            .send(
                Method::PUT,
                "/trigger",
                &service.key,
                None,
                Some(&[("message", message)]),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Sets the clock to `at` and runs the engine once.
    async fn tick_at(&self, at: Millis) -> Vec<Fired> {
        self.clock.set(at);
        self.tick().await
    }

    /// Runs the engine once at the clock's current instant.
    async fn tick(&self) -> Vec<Fired> {
        let fired = engine::run_due(&*self.store, &self.clock).await.unwrap();
        fired.into_iter().map(summary).collect()
    }

    /// The incident's audit trail, oldest first, as
    /// `(action, actor type, created_at)`.
    async fn trail(&self, team: &Team, id: &str) -> Vec<(String, String, String)> {
        self.events(team, id)
            .await
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["actor"]["type"].as_str().unwrap().to_owned(),
                    e["created_at"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The incident's events, oldest first.
    async fn events(&self, team: &Team, id: &str) -> Vec<Value> {
        let list = self
            .get(&format!("/incidents/{id}/events?per_page=100"), &team.token)
            .await;
        let mut list = list.as_array().unwrap().clone();
        list.reverse();
        list
    }

    /// The incident's pending timers as `(kind, due_at)`, soonest first.
    async fn pending(&self, team: &Team, id: &str) -> Vec<(String, Millis)> {
        self.store
            .list_timers(&team.account_id, id)
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.kind, t.due_at))
            .collect()
    }

    async fn incident(&self, team: &Team, id: &str) -> Value {
        self.get(&format!("/incidents/{id}"), &team.token).await
    }
}

/// No timer fired.
const NOTHING: [Fired; 0] = [];
/// No timer pending.
const NO_TIMERS: [(String, Millis); 0] = [];

fn timer(kind: &str, due: Millis) -> (String, Millis) {
    (kind.to_owned(), due)
}

fn summary(t: FiredTimer) -> Fired {
    (t.kind, t.incident_id, t.due_at, t.fired_at, t.acted)
}

fn fired(kind: &str, id: &str, due: Millis, at: Millis, acted: bool) -> Fired {
    (kind.to_owned(), id.to_owned(), due, at, acted)
}

fn ev(action: &str, actor: &str, at: Millis) -> (String, String, String) {
    (action.to_owned(), actor.to_owned(), format_ts(at))
}

/// Two rules (5 and 10 minutes), loop limit 2: the walk is rule 2, rule 1
/// of loop 2, rule 2 of loop 2, each exactly when the rule before it times
/// out, and then it stops with no timer left.
async fn walks_two_rules_and_stops_at_the_loop_limit(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team().await;
    let s = t
        .service(&team, "Web", &[(&team.u1, 5), (&team.u2, 10)], 2, json!({}))
        .await;
    let id = t.trigger(&s, "down").await;
    let t0 = t0();
    assert_eq!(
        t.pending(&team, &id).await,
        [timer("escalate", t0 + minutes(5))]
    );

    // Each step exactly when due, and not a millisecond before.
    let walk = [
        (t0 + minutes(5), &team.u2, 1, 1),
        (t0 + minutes(15), &team.u1, 0, 2),
        (t0 + minutes(20), &team.u2, 1, 2),
    ];
    for (due, user, rule, loop_count) in walk {
        assert_eq!(t.tick_at(due - 1).await, NOTHING, "nothing before {due}");
        assert_eq!(
            t.tick_at(due).await,
            [fired("escalate", &id, due, due, true)]
        );
        let inc = t.incident(&team, &id).await;
        assert_eq!(inc["current_user_id"], user.as_str());
        assert_eq!(inc["current_policy_rule_id"], s.rule_ids[rule].as_str());
        assert_eq!(inc["escalation_loop_count"], loop_count);
        assert_eq!(inc["updated_at"], format_ts(due));
    }
    // The last permitted step arms nothing; a day later nothing fires.
    assert_eq!(t.pending(&team, &id).await, NO_TIMERS);
    assert_eq!(t.tick_at(t0 + minutes(24 * 60)).await, NOTHING);

    assert_eq!(
        t.trail(&team, &id).await,
        [
            ev("incident.create", "service", t0),
            ev("incident.escalate", "system", t0 + minutes(5)),
            ev("incident.escalate", "system", t0 + minutes(15)),
            ev("incident.escalate", "system", t0 + minutes(20)),
        ]
    );
    let events = t.events(&team, &id).await;
    assert_eq!(
        events[1]["changeset"]["current_user_id"],
        json!([team.u1, team.u2])
    );
    assert_eq!(
        events[2]["changeset"]["current_policy_rule_id"],
        json!([s.rule_ids[1], s.rule_ids[0]])
    );
    assert_eq!(
        events[2]["changeset"]["escalation_loop_count"],
        json!([1, 2])
    );
    assert_eq!(
        events[3]["changeset"]["current_user_id"],
        json!([team.u1, team.u2])
    );
    let inc = t.incident(&team, &id).await;
    assert_eq!(inc["state"], "triggered");
}

/// Acknowledging cancels the escalation: its instant passes, and much
/// later ones, with nothing fired.
async fn acknowledge_stops_escalation(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team().await;
    let s = t
        .service(&team, "Web", &[(&team.u1, 5), (&team.u2, 5)], 3, json!({}))
        .await;
    let id = t.trigger(&s, "down").await;
    let t0 = t0();
    t.clock.set(t0 + minutes(2));
    let status = t
        .put(&format!("/incidents/{id}/acknowledge"), &team.token, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(t.pending(&team, &id).await, NO_TIMERS);
    for at in [t0 + minutes(5), t0 + minutes(10), t0 + minutes(24 * 60)] {
        assert_eq!(t.tick_at(at).await, NOTHING, "nothing at {at}");
    }
    let inc = t.incident(&team, &id).await;
    assert_eq!(inc["state"], "acknowledged");
    assert_eq!(inc["acknowledged_at"], format_ts(t0 + minutes(2)));
    assert_eq!(inc["current_user_id"], team.u1.as_str());
    assert_eq!(
        t.trail(&team, &id).await,
        [
            ev("incident.create", "service", t0),
            ev("incident.acknowledge", "user", t0 + minutes(2)),
        ]
    );
}

/// A 3-minute acknowledge timeout: acknowledged at minute 1, the system
/// triggers it again at exactly minute 4, and escalation restarts from the
/// current rule, its 5 minutes counted from then (minute 9). The original
/// escalation instant (minute 5) passes with nothing fired.
async fn acknowledge_timeout_retriggers_and_escalation_restarts(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team().await;
    let s = t
        .service(
            &team,
            "Web",
            &[(&team.u1, 5), (&team.u2, 5)],
            1,
            json!({"acknowledge_timeout": 3}),
        )
        .await;
    let id = t.trigger(&s, "down").await;
    let t0 = t0();
    t.clock.set(t0 + minutes(1));
    let status = t
        .put(&format!("/incidents/{id}/acknowledge"), &team.token, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        t.pending(&team, &id).await,
        [timer("acknowledge_timeout", t0 + minutes(4))]
    );

    let retrigger = t0 + minutes(4);
    assert_eq!(t.tick_at(retrigger - 1).await, NOTHING);
    assert_eq!(
        t.tick_at(retrigger).await,
        [fired(
            "acknowledge_timeout",
            &id,
            retrigger,
            retrigger,
            true
        )]
    );
    let inc = t.incident(&team, &id).await;
    assert_eq!(inc["state"], "triggered");
    assert_eq!(inc["current_user_id"], team.u1.as_str());
    assert_eq!(
        t.pending(&team, &id).await,
        [timer("escalate", retrigger + minutes(5))]
    );

    // Minute 5, when the first escalation was due before the acknowledge.
    assert_eq!(t.tick_at(t0 + minutes(5)).await, NOTHING);
    let escalation = retrigger + minutes(5);
    assert_eq!(t.tick_at(escalation - 1).await, NOTHING);
    assert_eq!(
        t.tick_at(escalation).await,
        [fired("escalate", &id, escalation, escalation, true)]
    );
    let inc = t.incident(&team, &id).await;
    assert_eq!(inc["current_user_id"], team.u2.as_str());
    // Loop limit 1: that was the last step.
    assert_eq!(t.pending(&team, &id).await, NO_TIMERS);

    assert_eq!(
        t.trail(&team, &id).await,
        [
            ev("incident.create", "service", t0),
            ev("incident.acknowledge", "user", t0 + minutes(1)),
            ev("incident.trigger", "system", retrigger),
            ev("incident.escalate", "system", escalation),
        ]
    );
}

/// A 30-minute auto-resolve fires at exactly minute 30 (escalations before
/// it carry on), resolves the incident and cancels what was pending.
async fn auto_resolve_resolves_at_its_minute(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team().await;
    let s = t
        .service(
            &team,
            "Web",
            &[(&team.u1, 20), (&team.u2, 20)],
            2,
            json!({"auto_resolve_timeout": 30}),
        )
        .await;
    let id = t.trigger(&s, "down").await;
    let t0 = t0();
    assert_eq!(
        t.pending(&team, &id).await,
        [
            timer("escalate", t0 + minutes(20)),
            timer("auto_resolve", t0 + minutes(30)),
        ]
    );
    let escalation = t0 + minutes(20);
    assert_eq!(
        t.tick_at(escalation).await,
        [fired("escalate", &id, escalation, escalation, true)]
    );
    let resolve = t0 + minutes(30);
    assert_eq!(t.tick_at(resolve - 1).await, NOTHING);
    assert_eq!(
        t.tick_at(resolve).await,
        [fired("auto_resolve", &id, resolve, resolve, true)]
    );
    let inc = t.incident(&team, &id).await;
    assert_eq!(inc["state"], "resolved");
    assert_eq!(inc["resolved_at"], format_ts(resolve));
    // The escalation due at minute 40 went with it.
    assert_eq!(t.pending(&team, &id).await, NO_TIMERS);
    assert_eq!(t.tick_at(t0 + minutes(24 * 60)).await, NOTHING);
    assert_eq!(
        t.trail(&team, &id).await,
        [
            ev("incident.create", "service", t0),
            ev("incident.escalate", "system", escalation),
            ev("incident.resolve", "system", resolve),
        ]
    );
}

/// A manual escalate at minute 3 moves to the next rule and re-arms the
/// timer with that rule's timeout from then: the old instant (minute 5)
/// passes with nothing fired, the new one (minute 13) fires.
async fn manual_escalate_rearms_the_timer(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team().await;
    let s = t
        .service(&team, "Web", &[(&team.u1, 5), (&team.u2, 10)], 2, json!({}))
        .await;
    let id = t.trigger(&s, "down").await;
    let t0 = t0();
    t.clock.set(t0 + minutes(3));
    let status = t
        .put(&format!("/incidents/{id}/escalate"), &team.token, None)
        .await;
    assert!(status.is_success(), "{status}");
    let inc = t.incident(&team, &id).await;
    assert_eq!(inc["current_user_id"], team.u2.as_str());
    assert_eq!(inc["current_policy_rule_id"], s.rule_ids[1].as_str());
    let due = t0 + minutes(13);
    assert_eq!(t.pending(&team, &id).await, [timer("escalate", due)]);

    assert_eq!(t.tick_at(t0 + minutes(5)).await, NOTHING);
    assert_eq!(t.tick_at(due - 1).await, NOTHING);
    assert_eq!(
        t.tick_at(due).await,
        [fired("escalate", &id, due, due, true)]
    );
    let inc = t.incident(&team, &id).await;
    assert_eq!(inc["current_user_id"], team.u1.as_str());
    assert_eq!(inc["escalation_loop_count"], 2);
    assert_eq!(
        t.pending(&team, &id).await,
        [timer("escalate", due + minutes(5))]
    );
    assert_eq!(
        t.trail(&team, &id).await,
        [
            ev("incident.create", "service", t0),
            ev("incident.escalate", "user", t0 + minutes(3)),
            ev("incident.escalate", "system", due),
        ]
    );
}

/// The boundary to the millisecond, for an instant off the whole second:
/// triggered at T0 + 1.234 s with a 1-minute rule, the timer is due at
/// T0 + 61.234 s; it does not fire at 61.233 s and fires at 61.234 s. Run
/// late, it fires once with its due time, and the next step counts from
/// when it fired.
async fn a_timer_fires_at_its_instant_and_not_a_millisecond_before(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team().await;
    let s = t
        .service(&team, "Web", &[(&team.u1, 1), (&team.u2, 1)], 1, json!({}))
        .await;
    let start = t0() + 1_234;
    t.clock.set(start);
    let id = t.trigger(&s, "down").await;
    let due = start + MINUTE_MS;
    assert_eq!(t.pending(&team, &id).await, [timer("escalate", due)]);
    assert_eq!(t.tick_at(due - 1).await, NOTHING);
    assert_eq!(t.tick().await, NOTHING, "running again changes nothing");
    t.clock.advance(Duration::from_millis(1));
    assert_eq!(t.tick().await, [fired("escalate", &id, due, due, true)]);
    assert_eq!(t.tick().await, NOTHING, "and only once");

    // Two incidents on a 1-minute rule, the engine run 90 s late: both
    // fire once at that instant.
    let s2 = t
        .service(&team, "Db", &[(&team.u1, 1), (&team.u2, 1)], 2, json!({}))
        .await;
    let from = t.clock.now_ms();
    let a = t.trigger(&s2, "a").await;
    let b = t.trigger(&s2, "b").await;
    let late = t.clock.advance(Duration::from_secs(90));
    let mut got = t.tick().await;
    got.sort_by(|x, y| x.1.cmp(&y.1));
    let mut want = vec![
        fired("escalate", &a, from + MINUTE_MS, late, true),
        fired("escalate", &b, from + MINUTE_MS, late, true),
    ];
    want.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(got, want);
    assert_eq!(
        t.pending(&team, &a).await,
        [timer("escalate", late + MINUTE_MS)]
    );
}

/// More timers due at once than one batch holds: one run fires them all.
async fn one_run_fires_every_due_batch(backend: Backend) {
    let t = TestApp::new(backend).await;
    let team = t.team().await;
    let s = t
        .service(&team, "Web", &[(&team.u1, 1), (&team.u2, 1)], 1, json!({}))
        .await;
    let n = engine::BATCH as usize + 4;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(t.trigger(&s, &format!("m{i}")).await);
    }
    let due = t0() + MINUTE_MS;
    let mut got = t.tick_at(due).await;
    got.sort_by(|x, y| x.1.cmp(&y.1));
    ids.sort();
    let want: Vec<Fired> = ids
        .iter()
        .map(|id| fired("escalate", id, due, due, true))
        .collect();
    assert_eq!(got, want);
    assert_eq!(t.tick().await, NOTHING);
}

/// Pages follow the escalation walk on the clock: the first assignee at
/// the trigger, the second when the timer fires (and the first's delayed
/// message is cancelled with the reassignment), each sent once.
async fn escalation_pages_the_next_assignee_and_stops_the_previous(backend: Backend) {
    let app = TestApp::new(backend).await;
    let team = app.team().await;
    let svc = app
        .service(
            &team,
            "Pages",
            &[(&team.u1, 10), (&team.u2, 10)],
            1,
            json!({}),
        )
        .await;
    // One: an SMS at once and an email 15 minutes later.
    let sms = app
        .post(
            &format!("/users/{}/contacts", team.u1),
            &team.token,
            json!({"type": "sms", "address": "+15550000001"}),
        )
        .await;
    let email = app
        .post(
            &format!("/users/{}/contacts", team.u1),
            &team.token,
            json!({"type": "email", "address": "one-pager@alpha.example.com"}),
        )
        .await;
    for (contact, delay) in [(&sms, 0), (&email, 15)] {
        app.post(
            &format!("/users/{}/notification_rules", team.u1),
            &team.token,
            json!({"contact_id": contact["id"], "start_delay": delay}),
        )
        .await;
    }
    let id = app.trigger(&svc, "paged").await;
    let sent = notify::run_due(&*app.store, &app.clock, &notify::DevNotifier)
        .await
        .unwrap();
    assert_eq!(sent, 1, "the SMS goes at once, the email waits");
    let summary = |rows: &Value| -> Vec<(String, String, String, String)> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["user_id"].as_str().unwrap().to_owned(),
                    r["channel"].as_str().unwrap().to_owned(),
                    r["reason"].as_str().unwrap().to_owned(),
                    r["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let path = format!("/incidents/{id}/notifications");
    let s = |u: &str, c: &str, r: &str, st: &str| {
        (u.to_owned(), c.to_owned(), r.to_owned(), st.to_owned())
    };
    assert_eq!(
        summary(&app.get(&path, &team.token).await),
        [
            s(&team.u1, "sms", "assigned", "delivered"),
            s(&team.u1, "email", "assigned", "queued"),
        ]
    );
    // Ten minutes on, the incident escalates to Two (no contacts: paged at
    // their sign-in address); One's email, not yet due, is cancelled, and
    // One hears of the escalation where they were paged.
    app.tick_at(t0() + minutes(10)).await;
    let sent = notify::run_due(&*app.store, &app.clock, &notify::DevNotifier)
        .await
        .unwrap();
    assert_eq!(sent, 2);
    let rows = app.get(&path, &team.token).await;
    let mut got = summary(&rows);
    got[2..].sort();
    let mut later = vec![
        s(&team.u1, "sms", "escalated_away", "delivered"),
        s(&team.u2, "email", "escalated", "delivered"),
    ];
    later.sort();
    let mut want = vec![
        s(&team.u1, "sms", "assigned", "delivered"),
        s(&team.u1, "email", "assigned", "cancelled"),
    ];
    want.extend(later);
    assert_eq!(got, want);
    let page = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user_id"] == json!(team.u2))
        .unwrap();
    assert_eq!(page["address"], "two@alpha.example.com");
    assert_eq!(page["sent_at"], json!(format_ts(t0() + minutes(10))));
    // Nothing is left to send, at any time.
    app.clock.set(t0() + minutes(60));
    let sent = notify::run_due(&*app.store, &app.clock, &notify::DevNotifier)
        .await
        .unwrap();
    assert_eq!(sent, 0);
}

/// Records what it is asked to send, and says delivered.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<klaxon_store::OutgoingMessage>>);

#[async_trait::async_trait]
impl notify::Notifier for Recorder {
    async fn send(
        &self,
        m: &klaxon_store::OutgoingMessage,
        _now: Millis,
    ) -> klaxon_store::SendOutcome {
        self.0.lock().unwrap().push(m.clone());
        klaxon_store::SendOutcome::Sent {
            provider_id: None,
            delivered: true,
        }
    }
}

/// A burst of pages to one number becomes one text: the first page goes
/// at once, those that follow within the bundle window wait for its end
/// and go out together.
async fn a_burst_of_sms_pages_is_bundled(backend: Backend) {
    let app = TestApp::new(backend).await;
    let team = app.team().await;
    let svc = app
        .service(&team, "Burst", &[(&team.u1, 30)], 1, json!({}))
        .await;
    app.post(
        &format!("/users/{}/contacts", team.u1),
        &team.token,
        json!({"type": "sms", "address": "+15550000009"}),
    )
    .await;
    let sender = Recorder::default();
    let first = app.trigger(&svc, "first").await;
    assert_eq!(
        notify::run_due(&*app.store, &app.clock, &sender)
            .await
            .unwrap(),
        1
    );
    // Three more within the window: held back, not sent one by one.
    let mut rest = Vec::new();
    for (i, key) in ["second", "third", "fourth"].iter().enumerate() {
        app.clock.set(t0() + 1_000 * (i as Millis + 1));
        rest.push(app.trigger(&svc, key).await);
        assert_eq!(
            notify::run_due(&*app.store, &app.clock, &sender)
                .await
                .unwrap(),
            0
        );
    }
    // The window ends 30 s after the first text: one text carries all three.
    app.clock.set(t0() + 30_000 - 1);
    assert_eq!(
        notify::run_due(&*app.store, &app.clock, &sender)
            .await
            .unwrap(),
        0
    );
    app.clock.set(t0() + 30_000);
    assert_eq!(
        notify::run_due(&*app.store, &app.clock, &sender)
            .await
            .unwrap(),
        3
    );
    let sent = sender.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "two texts: {sent:?}");
    assert_eq!(sent[0].incident_id, first);
    assert!(sent[0].bundle.is_empty());
    let mut carried: Vec<String> = std::iter::once(sent[1].incident_id.clone())
        .chain(sent[1].bundle.iter().map(|m| m.incident_id.clone()))
        .collect();
    carried.sort();
    rest.sort();
    assert_eq!(carried, rest);
    // Every row of the bundle is recorded delivered.
    for id in &rest {
        let rows = app
            .get(&format!("/incidents/{id}/notifications"), &team.token)
            .await;
        assert_eq!(rows[0]["status"], "delivered", "{rows:?}");
    }
}

/// A delayed notification rule fires at its minute if nobody acknowledged
/// meanwhile, and not at all if someone did.
async fn a_delayed_rule_fires_only_if_not_acknowledged(backend: Backend) {
    let app = TestApp::new(backend).await;
    let team = app.team().await;
    let svc = app
        .service(&team, "Delayed", &[(&team.u1, 60)], 1, json!({}))
        .await;
    let email = app
        .post(
            &format!("/users/{}/contacts", team.u1),
            &team.token,
            json!({"type": "email", "address": "late@alpha.example.com"}),
        )
        .await;
    app.post(
        &format!("/users/{}/notification_rules", team.u1),
        &team.token,
        json!({"contact_id": email["id"], "start_delay": 5}),
    )
    .await;
    let sender = Recorder::default();
    let ignored = app.trigger(&svc, "ignored").await;
    let answered = app.trigger(&svc, "answered").await;
    assert_eq!(
        notify::run_due(&*app.store, &app.clock, &sender)
            .await
            .unwrap(),
        0,
        "nothing before the delay"
    );
    app.clock.set(t0() + minutes(2));
    let ack = app
        .put(
            &format!("/incidents/{answered}/acknowledge"),
            &team.token,
            None,
        )
        .await;
    assert!(ack.is_success(), "{ack}");
    app.clock.set(t0() + minutes(5) - 1);
    assert_eq!(
        notify::run_due(&*app.store, &app.clock, &sender)
            .await
            .unwrap(),
        0
    );
    app.clock.set(t0() + minutes(5));
    assert_eq!(
        notify::run_due(&*app.store, &app.clock, &sender)
            .await
            .unwrap(),
        1
    );
    let sent = sender.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].incident_id, ignored);
    assert_eq!(sent[0].address, "late@alpha.example.com");
    let rows = app
        .get(&format!("/incidents/{answered}/notifications"), &team.token)
        .await;
    assert_eq!(rows[0]["status"], "cancelled", "{rows:?}");
}

both_backends!(
    a_delayed_rule_fires_only_if_not_acknowledged,
    a_burst_of_sms_pages_is_bundled,
    walks_two_rules_and_stops_at_the_loop_limit,
    acknowledge_stops_escalation,
    acknowledge_timeout_retriggers_and_escalation_restarts,
    auto_resolve_resolves_at_its_minute,
    manual_escalate_rearms_the_timer,
    a_timer_fires_at_its_instant_and_not_a_millisecond_before,
    one_run_fires_every_due_batch,
    escalation_pages_the_next_assignee_and_stops_the_previous,
);
