//! Ingest benchmark: one alert per request into Klaxon (`PUT /trigger`) on
//! SQLite and PostgreSQL and, when it is installed, into Prometheus
//! Alertmanager (`POST /api/v2/alerts`), with the same load generator
//! (`wrk` and `load.lua`) and the same load on both sides.
//!
//! ```text
//! cargo bench -p klaxon-server --bench ingest
//! KLAXON_BENCH_BACKEND=sqlite|postgres|both    (default both)
//! KLAXON_BENCH_SECONDS=10 KLAXON_BENCH_CONNECTIONS=32 KLAXON_BENCH_THREADS=2
//! ```
//!
//! Scenarios: `new` sends a new key (Alertmanager: a new `instance` label)
//! with every request, so Klaxon opens an incident each time; `dedup` cycles
//! through 100 keys sent once beforehand, so Klaxon answers 304 to each.
//! Nothing is installed here: without `wrk` the benchmark stops with a hint,
//! without Alertmanager it skips the comparison, and with
//! `KLAXON_BENCH_BACKEND=both` it skips PostgreSQL when no server can be
//! started. Every process it starts is stopped when it ends, also on error;
//! the PostgreSQL server is stopped by the test kit's watchdog.
//! Documented with figures in docs/BENCHMARKS.md.

mod servers;
mod wrk;

use std::process::ExitCode;

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};

use servers::{alertmanager_version, find_alertmanager, start_alertmanager, start_klaxon};
use wrk::{Figures, Load, Wrk};

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    New,
    Dedup,
}

impl Scenario {
    const ALL: [Scenario; 2] = [Scenario::New, Scenario::Dedup];

    fn name(self) -> &'static str {
        match self {
            Scenario::New => "new",
            Scenario::Dedup => "dedup",
        }
    }
}

/// The keys `load.lua` cycles through in the `dedup` scenario.
fn dedup_keys() -> impl Iterator<Item = String> {
    (0..100).map(|n| format!("k{n}"))
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ingest benchmark failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let load = Load {
        threads: env_num("KLAXON_BENCH_THREADS", 2),
        connections: env_num("KLAXON_BENCH_CONNECTIONS", 32),
        seconds: env_num("KLAXON_BENCH_SECONDS", 10),
    };
    let backends: &[&str] = match std::env::var("KLAXON_BENCH_BACKEND").as_deref() {
        Ok("sqlite") => &["sqlite"],
        Ok("postgres") => &["postgres"],
        Ok("both") | Err(_) => &["sqlite", "postgres"],
        Ok(other) => bail!("KLAXON_BENCH_BACKEND={other}: expected sqlite, postgres or both"),
    };
    let dir = tempfile::tempdir()?;
    let Some(wrk) = Wrk::new(dir.path())? else {
        bail!(
            "wrk not found on PATH; this benchmark drives Klaxon and Alertmanager with it \
             (Debian: apt-get install wrk). `cargo bench -p klaxon-server --bench trigger` \
             measures Klaxon alone without it"
        );
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    println!(
        "ingest: wrk, {} threads, {} connections, {} s per scenario, one alert per request, \
         loopback, release build, {cores} cores",
        load.threads, load.connections, load.seconds
    );
    println!("  new   = a new key per request (Klaxon answers 201, Alertmanager 200)");
    println!("  dedup = one of 100 keys already open (Klaxon answers 304, Alertmanager 200)");
    println!(
        "{:<22} {:<6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8}",
        "server", "load", "requests", "req/s", "p50 ms", "p99 ms", "p99.9 ms", ">=400", "sock err"
    );

    let mut klaxon_rows = Vec::new();
    for &backend in backends {
        let database_url = match backend {
            "sqlite" => format!("sqlite://{}/ingest.db", dir.path().display()),
            _ => match postgres_url(backends.len() == 1)? {
                Some(url) => url,
                None => continue,
            },
        };
        let klaxon = start_klaxon(&database_url)?;
        let key = rt.block_on(create_service(&klaxon.base))?;
        for scenario in Scenario::ALL {
            rt.block_on(prime_klaxon(&klaxon.base, &key, scenario))?;
            let url = format!("{}/trigger", klaxon.base);
            let figures = wrk.run(load, &url, &["klaxon", scenario.name(), &key])?;
            print_row(&format!("klaxon {backend}"), scenario, &figures);
            klaxon_rows.push((backend, scenario, figures));
        }
    }

    let Some(binary) = find_alertmanager() else {
        println!(
            "alertmanager: skipped, not installed \
             (Debian: apt-get install prometheus-alertmanager)"
        );
        return Ok(());
    };
    let version = alertmanager_version(&binary);
    let am_dir = tempfile::tempdir()?;
    let alertmanager = start_alertmanager(&binary, am_dir.path())?;
    let mut am_rows = Vec::new();
    for scenario in Scenario::ALL {
        rt.block_on(prime_alertmanager(&alertmanager.base, scenario))?;
        let url = format!("{}/api/v2/alerts", alertmanager.base);
        let figures = wrk.run(load, &url, &["alertmanager", scenario.name()])?;
        print_row(&version.replace(", version", ""), scenario, &figures);
        am_rows.push((scenario, figures));
    }
    drop(alertmanager);

    println!("requests per second, Klaxon / Alertmanager:");
    for (backend, scenario, figures) in &klaxon_rows {
        if let Some((_, am)) = am_rows.iter().find(|(s, _)| s == scenario) {
            println!(
                "  {backend:<8} {:<6} {:.2}",
                scenario.name(),
                figures.per_second / am.per_second
            );
        }
    }
    Ok(())
}

fn print_row(server: &str, scenario: Scenario, f: &Figures) {
    println!(
        "{:<22} {:<6} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>9.2} {:>8} {:>8}",
        server,
        scenario.name(),
        f.requests,
        f.per_second,
        f.p50_ms,
        f.p99_ms,
        f.p999_ms,
        f.status_errors,
        f.socket_errors
    );
}

/// A fresh PostgreSQL database; when PostgreSQL was not asked for alone, a
/// missing server skips it instead of failing the run.
fn postgres_url(required: bool) -> anyhow::Result<Option<String>> {
    match std::panic::catch_unwind(klaxon_testkit::fresh_postgres_url) {
        Ok(url) => Ok(Some(url)),
        Err(_) if !required => {
            println!("klaxon postgres: skipped, no PostgreSQL server could be started (above)");
            Ok(None)
        }
        Err(_) => bail!("no PostgreSQL server could be started (see above)"),
    }
}

/// Registers an account and creates a policy and a service as
/// benches/trigger.rs does; returns the service's integration key.
async fn create_service(base: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let reg: Value = http
        .post(format!("{base}/registrations"))
        .json(&json!({"account_name": "Bench", "name": "B", "email": "b@example.com", "password": "benchmark"}))
        .send().await?.error_for_status()?.json().await?;
    let token = reg["token"].as_str().context("registration token")?;
    let auth = format!("Token token=\"{token}\"");
    let policy: Value = http
        .post(format!("{base}/policies"))
        .header("Authorization", &auth)
        .json(&json!({"name": "P"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let pid = policy["id"].as_str().context("policy id")?;
    http.post(format!("{base}/policies/{pid}/rules"))
        .header("Authorization", &auth)
        .json(&json!({"assignment": {"type": "user", "id": reg["user_id"]}}))
        .send()
        .await?
        .error_for_status()?;
    let service: Value = http
        .post(format!("{base}/services"))
        .header("Authorization", &auth)
        .json(&json!({"name": "S", "policy_id": pid}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(service["integration_key"]
        .as_str()
        .context("integration key")?
        .to_owned())
}

/// Checks that the scenario gets the answer it is meant to measure and,
/// for `dedup`, opens the 100 incidents the load then hits.
async fn prime_klaxon(base: &str, key: &str, scenario: Scenario) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let trigger = |alert_key: String| {
        http.put(format!("{base}/trigger"))
            .header("Authorization", format!("Token token=\"{key}\""))
            .form(&[("message", "load test"), ("key", alert_key.as_str())])
            .send()
    };
    let expect = |status: StatusCode, want: StatusCode| {
        if status == want {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "PUT /trigger answered {status}, expected {want}"
            ))
        }
    };
    match scenario {
        Scenario::New => expect(trigger("probe".into()).await?.status(), StatusCode::CREATED),
        Scenario::Dedup => {
            for alert_key in dedup_keys() {
                expect(trigger(alert_key).await?.status(), StatusCode::CREATED)?;
            }
            expect(
                trigger("k0".into()).await?.status(),
                StatusCode::NOT_MODIFIED,
            )
        }
    }
}

/// The same for Alertmanager, which answers 200 either way.
async fn prime_alertmanager(base: &str, scenario: Scenario) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let keys: Vec<String> = match scenario {
        Scenario::New => vec!["probe".into()],
        Scenario::Dedup => dedup_keys().collect(),
    };
    for key in keys {
        http.post(format!("{base}/api/v2/alerts"))
            .json(&json!([{
                "labels": {"alertname": "LoadTest", "instance": key},
                "annotations": {"summary": "load test"},
            }]))
            .send()
            .await?
            .error_for_status()?;
    }
    Ok(())
}
