//! Timer engine benchmark: with 100,000 pending escalation timers, how late
//! do they fire (p50/p99/max, from due time to committed effect), and how
//! many timers per second does the engine process when a backlog is due.
//!
//! ```text
//! cargo bench -p klaxon-server --bench timers                                # SQLite
//! KLAXON_BENCH_BACKEND=postgres cargo bench -p klaxon-server --bench timers
//! KLAXON_BENCH_TIMERS=100000 KLAXON_BENCH_SPREAD_SECONDS=60 cargo bench …
//! ```
//!
//! Incidents are opened through the store with chosen `now`s so that their
//! escalation timers come due where the scenario wants them; the real
//! engine loop (`engine::run_observed`) then fires them on the real clock
//! shifted into that future.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use klaxon_core::time::Millis;
use klaxon_server::clock::Clock;
use klaxon_server::engine;
use klaxon_store::{Actor, NewIncident, RuleInput, ServiceInput, Store, UserInput};

const MINUTE: Millis = 60_000;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Fixture {
    account: String,
    services: Vec<String>,
}

async fn fixture(store: &dyn Store, name: &str, services: usize) -> Fixture {
    let user = UserInput {
        name: "Bench".into(),
        email: format!("{name}@bench.example.com"),
        role: "admin".into(),
        time_zone: "UTC".into(),
        password_hash: None,
    };
    let (account, admin, _) = store
        .create_account(name, &user, &format!("hash-{name}"), 0)
        .await
        .unwrap();
    let actor = Actor::User(admin.id.clone());
    // Two rules, one walk: every incident gets exactly one escalation timer.
    let policy = store
        .create_policy(&account.id, "P", 1, &actor, 0)
        .await
        .unwrap();
    for _ in 0..2 {
        let rule = RuleInput {
            escalation_timeout: 1,
            assignment_type: "user".into(),
            assignee_id: admin.id.clone(),
        };
        store
            .create_rule(&account.id, &policy.id, &rule, &actor, 0)
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for n in 0..services {
        let input = ServiceInput {
            name: format!("S{n}"),
            description: None,
            policy_id: policy.id.clone(),
            acknowledge_timeout: None,
            auto_resolve_timeout: None,
        };
        ids.push(
            store
                .create_service(&account.id, &input, &format!("{name}-key-{n}"), &actor, 0)
                .await
                .unwrap()
                .id,
        );
    }
    Fixture {
        account: account.id,
        services: ids,
    }
}

/// Opens `n` incidents whose timers come due at `due(i)`.
async fn open(
    store: &Arc<dyn Store>,
    f: &Fixture,
    n: usize,
    due: impl Fn(usize) -> Millis + Send + Sync + 'static,
) {
    let due = Arc::new(due);
    let workers = f.services.len();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (store, account, service, due) = (
            store.clone(),
            f.account.clone(),
            f.services[w].clone(),
            due.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let actor = Actor::Service(service.clone());
            for i in (w..n).step_by(workers) {
                let new = NewIncident {
                    message: format!("incident {i}"),
                    description: None,
                    details: None,
                    key: Some(format!("k{i}")),
                };
                store
                    .trigger_incident(&account, &service, &new, false, &actor, due(i) - MINUTE)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Runs the engine until `n` timers have fired; returns lateness per timer
/// (committed − due, ms) and the wall time it took.
async fn run_engine(store: &Arc<dyn Store>, clock: Clock, n: usize) -> (Vec<Millis>, f64) {
    let late = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sink = late.clone();
    let started = Instant::now();
    let handle = tokio::spawn(engine::run_observed(
        store.clone(),
        clock,
        stopped,
        move |fired, at| {
            let mut sink = sink.lock().unwrap();
            sink.extend(fired.iter().filter(|t| t.acted).map(|t| at - t.due_at));
        },
    ));
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if late.lock().unwrap().len() >= n {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.send(true).unwrap();
    handle.await.unwrap();
    let mut late = late.lock().unwrap().clone();
    late.sort_unstable();
    (late, elapsed)
}

fn pct(v: &[Millis], p: f64) -> Millis {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

#[tokio::main]
async fn main() {
    let n = env_num("KLAXON_BENCH_TIMERS", 100_000) as usize;
    let spread = env_num("KLAXON_BENCH_SPREAD_SECONDS", 60) as Millis * 1000;
    let backend = std::env::var("KLAXON_BENCH_BACKEND").unwrap_or_else(|_| "sqlite".into());
    let dir = tempfile::tempdir().unwrap();
    let url = if backend == "postgres" {
        tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
            .await
            .unwrap()
    } else {
        format!("sqlite://{}/timers.db", dir.path().display())
    };
    let store = klaxon_store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    // Concurrent openers: PostgreSQL runs them in parallel, SQLite group-commits them.
    let workers = 16;
    println!("backend: {backend}, {n} timers, release build");

    // Scenario 1: n timers due over `spread` ms, far in the (virtual) future.
    let f = fixture(&*store, "lateness", workers).await;
    let base: Millis = 4_000_000_000_000; // year 2096: nothing else is due then
    let t0 = Instant::now();
    open(&store, &f, n, move |i| {
        base + (i as Millis * spread) / n as Millis
    })
    .await;
    println!(
        "opened {n} incidents with pending timers in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // Shift the engine's clock so that `base` is two seconds from now.
    let real_now = Clock::new(1.0, None).now_ms();
    let clock = Clock::new(1.0, None).shifted(base - real_now - 2000);
    let (late, elapsed) = run_engine(&store, clock, n).await;
    println!(
        "spread over {} s: fired {} in {:.1} s; lateness p50 {} ms, p99 {} ms, max {} ms",
        spread / 1000,
        late.len(),
        elapsed,
        pct(&late, 0.5),
        pct(&late, 0.99),
        late[late.len() - 1]
    );

    // Scenario 2: a backlog of n timers all due at once.
    let f = fixture(&*store, "backlog", workers).await;
    let due: Millis = 4_100_000_000_000;
    open(&store, &f, n, move |_| due).await;
    let real_now = Clock::new(1.0, None).now_ms();
    let clock = Clock::new(1.0, None).shifted(due - real_now);
    let (late, elapsed) = run_engine(&store, clock, n).await;
    println!(
        "backlog: {} timers due at once drained in {:.1} s = {:.0} timers/s (last fired {} ms late)",
        late.len(), elapsed, late.len() as f64 / elapsed, late[late.len() - 1]
    );
    store.close().await;
}
