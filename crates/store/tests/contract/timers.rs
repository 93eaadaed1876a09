//! Durable timers: escalation, acknowledge timeout, auto-resolve, and
//! exactly-once firing under concurrency.

use super::*;

async fn timers_of(store: &dyn Store, w: &World, id: &str) -> Vec<(String, Millis)> {
    store
        .list_timers(&w.t.account, id)
        .await
        .expect("list_timers")
        .into_iter()
        .map(|t| (t.kind, t.due_at))
        .collect()
}

/// Fires everything due at `now`, in batches, until nothing is left. A
/// batch may skip a timer whose incident another transaction still holds
/// (on PostgreSQL the engine never waits for a lock), so keep going while
/// anything due remains.
async fn fire_all(store: &dyn Store, now: Millis) -> Vec<klaxon_store::FiredTimer> {
    let mut all = Vec::new();
    for _ in 0..1000 {
        let fired = store
            .fire_due_timers(now, 100)
            .await
            .expect("fire_due_timers");
        if fired.is_empty() {
            let next = store.next_timer_due().await.expect("next_timer_due");
            if next.is_none_or(|due| due > now) {
                return all;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        all.extend(fired);
    }
    panic!("timers due at {now} never drained");
}

pub(crate) async fn timers_walk_the_policy_and_stop_at_the_loop_limit(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let i = w.trigger(store, "down", None, NOW).await;
    assert_eq!(
        timers_of(store, &w, &i.id).await,
        [("escalate".to_owned(), NOW + 30 * MINUTE)]
    );
    assert_eq!(
        store.next_timer_due().await.expect("next"),
        Some(NOW + 30 * MINUTE)
    );
    assert!(
        fire_all(store, NOW + 30 * MINUTE - 1).await.is_empty(),
        "nothing before its delay"
    );
    // rule 2 (loop 1), rule 1 (loop 2), rule 2 (loop 2): three escalations.
    let expected = [(1usize, 1i64), (0, 2), (1, 2)];
    for (n, (rule, loop_count)) in expected.into_iter().enumerate() {
        let at = NOW + (n as Millis + 1) * 30 * MINUTE;
        let fired = fire_all(store, at).await;
        assert_eq!(fired.len(), 1);
        assert!(fired[0].acted);
        assert_eq!((fired[0].due_at, fired[0].fired_at), (at, at));
        let now = store.get_incident(&w.t.account, &i.id).await.expect("get");
        assert_eq!(
            now.current_policy_rule_id.as_deref(),
            Some(w.rules[rule].id.as_str())
        );
        assert_eq!(now.current_user_id.as_deref(), Some(w.users[rule].as_str()));
        assert_eq!(now.escalation_loop_count, loop_count);
        assert_eq!(now.state, "triggered");
    }
    assert!(
        timers_of(store, &w, &i.id).await.is_empty(),
        "the walk is over"
    );
    assert_eq!(store.next_timer_due().await.expect("next"), None);
    let events = events_of(store, &w.t.account, "incident", &i.id).await;
    let escalations: Vec<&Event> = events
        .iter()
        .filter(|e| e.action == "incident.escalate")
        .collect();
    assert_eq!(escalations.len(), 3);
    assert!(escalations
        .iter()
        .all(|e| e.actor_type == "system" && e.actor_id.is_none()));
}

pub(crate) async fn acknowledge_cancels_and_ack_timeout_retriggers(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let i = w.trigger(store, "down", None, NOW).await;
    w.act(store, &i.id, IncidentAction::Acknowledge, NOW + MINUTE)
        .await;
    // The service's acknowledge timeout is 30 minutes.
    assert_eq!(
        timers_of(store, &w, &i.id).await,
        [("acknowledge_timeout".to_owned(), NOW + 31 * MINUTE)]
    );
    assert!(
        fire_all(store, NOW + 30 * MINUTE).await.is_empty(),
        "the escalation was cancelled"
    );
    let fired = fire_all(store, NOW + 31 * MINUTE).await;
    assert_eq!(fired.len(), 1);
    let again = store.get_incident(&w.t.account, &i.id).await.expect("get");
    assert_eq!(again.state, "triggered");
    assert_eq!(again.acknowledged_at, None);
    assert_eq!(
        again.current_policy_rule_id.as_deref(),
        Some(w.rules[0].id.as_str()),
        "same rule"
    );
    assert_eq!(
        timers_of(store, &w, &i.id).await,
        [("escalate".to_owned(), NOW + 61 * MINUTE)],
        "paging starts again for the current rule"
    );
    let events = events_of(store, &w.t.account, "incident", &i.id).await;
    assert_eq!(events[0].action, "incident.trigger");
    assert_eq!(events[0].actor_type, "system");
}

pub(crate) async fn manual_escalation_rearms_and_resolve_cancels(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let mut input = service_input("web", &w.policy.id);
    input.auto_resolve_timeout = Some(240);
    store
        .update_service(
            &w.t.account,
            &w.service.id,
            &input,
            &json!({}),
            &w.t.actor(),
            NOW,
        )
        .await
        .expect("update_service");
    let i = w.trigger(store, "down", None, NOW).await;
    let mut timers = timers_of(store, &w, &i.id).await;
    timers.sort();
    assert_eq!(
        timers,
        [
            ("auto_resolve".to_owned(), NOW + 240 * MINUTE),
            ("escalate".to_owned(), NOW + 30 * MINUTE)
        ]
    );
    w.act(store, &i.id, IncidentAction::Escalate, NOW + 5 * MINUTE)
        .await;
    let mut timers = timers_of(store, &w, &i.id).await;
    timers.sort();
    assert_eq!(
        timers,
        [
            ("auto_resolve".to_owned(), NOW + 240 * MINUTE),
            ("escalate".to_owned(), NOW + 35 * MINUTE)
        ],
        "the new rule's clock starts at the manual escalation"
    );
    w.act(store, &i.id, IncidentAction::Resolve, NOW + 6 * MINUTE)
        .await;
    assert!(timers_of(store, &w, &i.id).await.is_empty());
    // Another incident is resolved by the system after four hours.
    let j = w.trigger(store, "flapping", None, NOW).await;
    w.act(store, &j.id, IncidentAction::Acknowledge, NOW + MINUTE)
        .await;
    store
        .act_on_incident(
            &w.t.account,
            &j.id,
            IncidentAction::Acknowledge,
            &w.t.actor(),
            NOW + 2 * MINUTE,
        )
        .await
        .expect("repeat");
    // Keep it acknowledged past its acknowledge timeout with repeated acks? No:
    // let the ack timeout re-trigger it, then auto-resolve wins at 240 min.
    let fired = fire_all(store, NOW + 240 * MINUTE).await;
    assert!(fired.iter().any(|f| f.kind == "auto_resolve" && f.acted));
    let j = store.get_incident(&w.t.account, &j.id).await.expect("get");
    assert_eq!(j.state, "resolved");
    assert!(timers_of(store, &w, &j.id).await.is_empty());
    let events = events_of(store, &w.t.account, "incident", &j.id).await;
    assert_eq!(events[0].action, "incident.resolve");
    assert_eq!(events[0].actor_type, "system");
}

pub(crate) async fn concurrent_engines_fire_each_timer_once(store: Arc<dyn Store>) {
    let w = world(&*store, "acme").await;
    let mut ids = Vec::new();
    for n in 0..120 {
        ids.push(
            w.trigger(&*store, &format!("incident {n}"), None, NOW + n)
                .await
                .id,
        );
    }
    let at = NOW + 30 * MINUTE + 200;
    let mut engines = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        engines.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..1000 {
                let fired = store.fire_due_timers(at, 7).await.expect("fire");
                if fired.is_empty()
                    && store
                        .next_timer_due()
                        .await
                        .expect("next")
                        .is_none_or(|d| d > at)
                {
                    break;
                }
                mine.extend(fired.into_iter().map(|f| f.incident_id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for e in engines {
        all.extend(e.await.expect("engine task"));
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 120, "every due timer fired exactly once");
    assert_eq!(unique.len(), 120);
    for id in &ids {
        let events = events_of(&*store, &w.t.account, "incident", id).await;
        let escalations = events
            .iter()
            .filter(|e| e.action == "incident.escalate")
            .count();
        assert_eq!(escalations, 1, "incident {id}");
        let timers = timers_of(&*store, &w, id).await;
        assert_eq!(timers.len(), 1, "the next escalation is armed once");
    }
}

pub(crate) async fn actions_race_with_the_engine(store: Arc<dyn Store>) {
    // Requests acknowledging incidents while engines fire their timers:
    // every incident ends acknowledged or escalated-then-acknowledged, never
    // with an escalation timer left behind, and nothing errors.
    let w = Arc::new(world(&*store, "acme").await);
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(
            w.trigger(&*store, &format!("incident {n}"), None, NOW)
                .await
                .id,
        );
    }
    let at = NOW + 30 * MINUTE;
    let engine = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                store.fire_due_timers(at, 5).await.expect("fire");
            }
        })
    };
    let mut acks = Vec::new();
    for id in ids.clone() {
        let (store, w) = (store.clone(), w.clone());
        acks.push(tokio::spawn(async move {
            store
                .act_on_incident(
                    &w.t.account,
                    &id,
                    IncidentAction::Acknowledge,
                    &w.t.actor(),
                    at,
                )
                .await
                .expect("acknowledge");
        }));
    }
    for a in acks {
        a.await.expect("ack task");
    }
    engine.await.expect("engine");
    for id in &ids {
        let i = store.get_incident(&w.t.account, id).await.expect("get");
        assert_eq!(i.state, "acknowledged");
        let kinds: Vec<String> = timers_of(&*store, &w, id)
            .await
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(kinds, ["acknowledge_timeout"], "incident {id}");
    }
}

// ---------------------------------------------------------------------------
// Tests that break rows on purpose, with raw SQL on the store's own
// database: the store's API refuses to write such data, but a database
// edited by hand, restored from an old backup or written by a buggy
// release can hold it.

/// Generates `timers::sqlite::NAME` and `timers::postgres::NAME` for each
/// `NAME(store, db)`, like `contract_tests!`, with a raw connection to the
/// same fresh database.
macro_rules! contract_tests_with_db {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (store, dir) = crate::sqlite_store().await;
                    let conn = rusqlite::Connection::open(dir.path().join("klaxon.db"))
                        .expect("raw sqlite connection");
                    conn.busy_timeout(std::time::Duration::from_secs(10)).expect("busy timeout");
                    let keep = store.clone();
                    super::$name(store, super::Db::Sqlite(std::sync::Mutex::new(conn))).await;
                    keep.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let url = tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
                        .await
                        .expect("testkit database");
                    let store = klaxon_store::connect(&url).await.expect("connect postgres");
                    store.migrate().await.expect("migrate postgres");
                    let pool = sqlx::PgPool::connect(&url).await.expect("raw postgres connection");
                    let keep = store.clone();
                    super::$name(store, super::Db::Postgres(pool)).await;
                    keep.close().await;
                }
            )*
        }
    };
}

contract_tests_with_db!(
    a_failing_timer_is_set_aside,
    an_unreadable_incident_is_set_aside,
    one_pending_timer_per_kind,
);

/// A raw connection to the store's database.
enum Db {
    Sqlite(std::sync::Mutex<rusqlite::Connection>),
    Postgres(sqlx::PgPool),
}

impl Db {
    /// Runs one statement.
    async fn run(&self, sql: &str) -> std::result::Result<u64, String> {
        match self {
            Db::Sqlite(conn) => conn
                .lock()
                .unwrap()
                .execute(sql, [])
                .map(|n| n as u64)
                .map_err(|e| e.to_string()),
            Db::Postgres(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(|e| e.to_string()),
        }
    }

    /// Runs statements in one transaction with foreign-key checks off.
    async fn run_unchecked(&self, statements: &[String]) {
        match self {
            Db::Sqlite(conn) => {
                // The pragma is a no-op inside a transaction: set it first.
                let mut conn = conn.lock().unwrap();
                conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
                let tx = conn.transaction().unwrap();
                for sql in statements {
                    tx.execute(sql, []).expect(sql);
                }
                tx.commit().unwrap();
                conn.pragma_update(None, "foreign_keys", "ON").unwrap();
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("SET LOCAL session_replication_role = replica")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                for sql in statements {
                    sqlx::query(sql).execute(&mut *tx).await.expect(sql);
                }
                tx.commit().await.unwrap();
            }
        }
    }
}

/// An incident's pending timers with their failure counts.
async fn attempts_of(store: &dyn Store, w: &World, id: &str) -> Vec<(String, Millis, i64)> {
    store
        .list_timers(&w.t.account, id)
        .await
        .expect("list_timers")
        .into_iter()
        .map(|t| (t.kind, t.due_at, t.attempts))
        .collect()
}

/// A service of `w`'s tenant on a new policy (loop limit 2) with `rules`.
async fn service_with(store: &dyn Store, w: &World, name: &str, rules: &[RuleInput]) -> Service {
    let policy = store
        .create_policy(&w.t.account, name, 2, &w.t.actor(), NOW)
        .await
        .expect("create_policy");
    for input in rules {
        store
            .create_rule(&w.t.account, &policy.id, input, &w.t.actor(), NOW)
            .await
            .expect("create_rule");
    }
    store
        .create_service(
            &w.t.account,
            &service_input(name, &policy.id),
            &format!("integration-key-{name}"),
            &w.t.actor(),
            NOW,
        )
        .await
        .expect("create_service")
}

async fn a_failing_timer_is_set_aside(store: Arc<dyn Store>, db: Db) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = world(store, "globex").await;
    let healthy = [
        w.trigger(store, "web down", None, NOW).await,
        w.trigger(store, "web slow", None, NOW).await,
        other.trigger(store, "api down", None, NOW).await,
    ];
    // One incident whose schedule will not parse…
    let schedule = store
        .create_schedule(&w.t.account, "Primary", "Europe/Berlin", &w.t.actor(), NOW)
        .await
        .expect("create_schedule");
    let layer = klaxon_store::LayerInput {
        rotation: "daily".into(),
        count: 1,
        start_at: "2023-11-01T09:00:00".into(),
        users: vec![w.users[0].clone()],
        restrictions: Vec::new(),
    };
    store
        .create_layer(&w.t.account, &schedule.id, &layer, &w.t.actor(), NOW)
        .await
        .expect("create_layer");
    let rule = RuleInput {
        escalation_timeout: 30,
        assignment_type: "schedule".into(),
        assignee_id: schedule.id.clone(),
    };
    let db_service = service_with(store, &w, "db", &[rule]).await;
    let by_schedule = w
        .trigger_on(store, &db_service.id, "db down", None, NOW)
        .await;
    // …and one whose service's policy is gone.
    let queue = service_with(store, &w, "queue", &[rule_input(&w.users[1])]).await;
    let by_policy = w
        .trigger_on(store, &queue.id, "queue down", None, NOW)
        .await;
    db.run_unchecked(&[
        format!(
            r#"UPDATE schedule_layers SET users = '{{"not": "a list"}}' WHERE schedule_id = '{}'"#,
            schedule.id
        ),
        format!(
            "UPDATE services SET policy_id = 'no-such-policy' WHERE id = '{}'",
            queue.id
        ),
    ])
    .await;
    let broken = [&by_schedule, &by_policy];

    // The batch succeeds: every other timer fires, the broken ones stay
    // with one failure and a retry a second later.
    let at = NOW + 30 * MINUTE;
    let fired = store
        .fire_due_timers(at, 100)
        .await
        .expect("a broken timer must not fail the batch");
    let mut fired_ids: Vec<&str> = fired.iter().map(|f| f.incident_id.as_str()).collect();
    fired_ids.sort_unstable();
    let mut healthy_ids: Vec<&str> = healthy.iter().map(|i| i.id.as_str()).collect();
    healthy_ids.sort_unstable();
    assert_eq!(fired_ids, healthy_ids);
    assert!(fired.iter().all(|f| f.acted));
    for i in &healthy {
        let now = store.get_incident(&i.account_id, &i.id).await.expect("get");
        assert_ne!(
            now.current_policy_rule_id, i.current_policy_rule_id,
            "escalated"
        );
    }
    for i in broken {
        assert_eq!(
            attempts_of(store, &w, &i.id).await,
            [("escalate".to_owned(), at + 1_000, 1)],
            "incident {}",
            i.message
        );
        let now = store.get_incident(&w.t.account, &i.id).await.expect("get");
        assert_eq!(now.current_policy_rule_id, i.current_policy_rule_id);
        assert_eq!(now.escalation_loop_count, 1);
        let events = events_of(store, &w.t.account, "incident", &i.id).await;
        assert_eq!(actions(&events), ["incident.create"]);
    }
    assert_eq!(
        store.next_timer_due().await.expect("next"),
        Some(at + 1_000),
        "the engine sleeps until the retry, it does not spin"
    );

    // Retried with a doubling delay, never dropped.
    let mut now = at + 1_000;
    for attempts in 2..=4 {
        let fired = store.fire_due_timers(now, 100).await.expect("fire");
        assert!(fired.is_empty());
        let retry = now + (1_000 << (attempts - 1));
        for i in broken {
            assert_eq!(
                attempts_of(store, &w, &i.id).await,
                [("escalate".to_owned(), retry, attempts)]
            );
        }
        now = retry;
    }

    // A later batch: the healthy incidents escalate on time again, the
    // broken ones fail once more.
    let later = NOW + 60 * MINUTE;
    let fired = store.fire_due_timers(later, 100).await.expect("fire");
    let mut fired_ids: Vec<&str> = fired.iter().map(|f| f.incident_id.as_str()).collect();
    fired_ids.sort_unstable();
    assert_eq!(fired_ids, healthy_ids);
    for i in broken {
        assert_eq!(
            attempts_of(store, &w, &i.id).await,
            [("escalate".to_owned(), later + 16_000, 5)]
        );
    }

    // Once the data is fixed, they fire.
    db.run_unchecked(&[
        format!(
            r#"UPDATE schedule_layers SET users = '["{}"]' WHERE schedule_id = '{}'"#,
            w.users[0], schedule.id
        ),
        format!(
            "UPDATE services SET policy_id = (SELECT policy_id FROM policy_rules WHERE id = '{}') WHERE id = '{}'",
            by_policy.current_policy_rule_id.as_deref().unwrap(),
            queue.id
        ),
    ])
    .await;
    let fired = fire_all(store, later + 16_000).await;
    assert_eq!(fired.len(), 2);
    assert!(fired.iter().all(|f| f.acted));
    for (i, user) in [(&by_schedule, &w.users[0]), (&by_policy, &w.users[1])] {
        let now = store.get_incident(&w.t.account, &i.id).await.expect("get");
        assert_eq!(now.escalation_loop_count, 2, "incident {}", i.message);
        assert_eq!(now.current_user_id.as_ref(), Some(user));
        assert!(
            attempts_of(store, &w, &i.id).await.is_empty(),
            "the end of the walk"
        );
        let events = events_of(store, &w.t.account, "incident", &i.id).await;
        assert_eq!(actions(&events), ["incident.escalate", "incident.create"]);
    }
}

async fn one_pending_timer_per_kind(store: Arc<dyn Store>, db: Db) {
    let store = &*store;
    let w = world(store, "acme").await;
    let i = w.trigger(store, "down", None, NOW).await;
    // Arming a kind again replaces the pending timer.
    w.act(store, &i.id, IncidentAction::Escalate, NOW + MINUTE)
        .await;
    w.act(store, &i.id, IncidentAction::Escalate, NOW + 2 * MINUTE)
        .await;
    assert_eq!(
        attempts_of(store, &w, &i.id).await,
        [("escalate".to_owned(), NOW + 32 * MINUTE, 0)]
    );
    let insert = |id: &str, kind: &str, due: Millis| {
        format!(
            "INSERT INTO timers (id, account_id, incident_id, kind, due_at, created_at)
             VALUES ('{id}', '{}', '{}', '{kind}', {due}, {NOW})",
            w.t.account, i.id
        )
    };
    assert!(
        db.run(&insert("second", "escalate", NOW + 5 * MINUTE))
            .await
            .is_err(),
        "the database refuses a second pending timer of a kind"
    );
    db.run(&insert("ack", "acknowledge_timeout", NOW + 40 * MINUTE))
        .await
        .expect("another kind is fine");

    // A database from before the constraint may hold duplicates: the
    // migration keeps the earliest of each kind.
    db.run_unchecked(&[
        "DROP INDEX timers_incident_kind".to_owned(),
        "CREATE INDEX timers_incident ON timers (incident_id)".to_owned(),
        "DELETE FROM _sqlx_migrations WHERE version = 3".to_owned(),
        insert("early", "escalate", NOW + 10 * MINUTE),
        insert("late", "escalate", NOW + 50 * MINUTE),
        insert("ack-early", "acknowledge_timeout", NOW + 20 * MINUTE),
    ])
    .await;
    assert_eq!(attempts_of(store, &w, &i.id).await.len(), 5);
    store.migrate().await.expect("migrate again");
    let ids: Vec<String> = store
        .list_timers(&w.t.account, &i.id)
        .await
        .expect("list_timers")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["early", "ack-early"]);
    assert!(
        db.run(&insert("again", "escalate", NOW)).await.is_err(),
        "the constraint holds after the migration"
    );
    let fired = fire_all(store, NOW + 10 * MINUTE).await;
    assert_eq!(fired.len(), 1, "one escalation, not one per duplicate");
}

async fn an_unreadable_incident_is_set_aside(store: Arc<dyn Store>, db: Db) {
    if let Db::Postgres(_) = db {
        // Its column types (JSONB details) make every incident row
        // readable; only SQLite can hold one that is not.
        return;
    }
    let store = &*store;
    let w = world(store, "acme").await;
    let ok = w.trigger(store, "web down", None, NOW).await;
    let bad = w.trigger(store, "web slow", None, NOW).await;
    db.run(&format!(
        "UPDATE incidents SET details = 'not json' WHERE id = '{}'",
        bad.id
    ))
    .await
    .expect("break the row");
    let at = NOW + 30 * MINUTE;
    let fired = store.fire_due_timers(at, 100).await.expect("fire");
    let fired: Vec<&str> = fired.iter().map(|f| f.incident_id.as_str()).collect();
    assert_eq!(fired, [ok.id.as_str()], "its neighbour in the batch fires");
    assert_eq!(
        attempts_of(store, &w, &bad.id).await,
        [("escalate".to_owned(), at + 1_000, 1)]
    );
    db.run(&format!(
        "UPDATE incidents SET details = NULL WHERE id = '{}'",
        bad.id
    ))
    .await
    .expect("fix the row");
    let fired = fire_all(store, at + 1_000).await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].incident_id, bad.id);
    let now = store
        .get_incident(&w.t.account, &bad.id)
        .await
        .expect("get");
    assert_eq!(now.current_user_id.as_deref(), Some(w.users[1].as_str()));
}
