//! Load benchmark for the integration API: `PUT /trigger` with new keys
//! (every request opens an incident) and with one repeated key (every
//! request is deduplicated), against the release binary.
//!
//! ```text
//! cargo bench -p klaxon-server --bench trigger            # SQLite
//! KLAXON_BENCH_BACKEND=postgres cargo bench -p klaxon-server --bench trigger
//! KLAXON_BENCH_SECONDS=10 KLAXON_BENCH_CONNECTIONS=32 cargo bench …
//! ```
//!
//! The load generator runs in this process over HTTP/1.1 keep-alive
//! connections, so on a small machine it shares the CPU with the server:
//! the figures are a floor, not a ceiling.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; any other argument filters nothing here.
    let seconds = env_num("KLAXON_BENCH_SECONDS", 10);
    let connections = env_num("KLAXON_BENCH_CONNECTIONS", 32) as usize;
    let backend = std::env::var("KLAXON_BENCH_BACKEND").unwrap_or_else(|_| "sqlite".into());
    let dir = tempfile::tempdir().unwrap();
    let database_url = if backend == "postgres" {
        tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
            .await
            .unwrap()
    } else {
        format!("sqlite://{}/bench.db", dir.path().display())
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_klaxon"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &database_url,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("server output").unwrap();
        if let Some(url) = line.strip_prefix("Klaxon listening on ") {
            break url.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let reg: Value = http
        .post(format!("{base}/registrations"))
        .json(&json!({"account_name": "Bench", "name": "B", "email": "b@example.com", "password": "benchmark"}))
        .send().await.unwrap().json().await.unwrap();
    let token = reg["token"].as_str().unwrap().to_owned();
    let auth = format!("Token token=\"{token}\"");
    let policy: Value = http
        .post(format!("{base}/policies"))
        .header("Authorization", &auth)
        .json(&json!({"name": "P"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = policy["id"].as_str().unwrap();
    http.post(format!("{base}/policies/{pid}/rules"))
        .header("Authorization", &auth)
        .json(&json!({"assignment": {"type": "user", "id": reg["user_id"]}}))
        .send()
        .await
        .unwrap();
    let service: Value = http
        .post(format!("{base}/services"))
        .header("Authorization", &auth)
        .json(&json!({"name": "S", "policy_id": pid}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = service["integration_key"].as_str().unwrap().to_owned();

    println!(
        "backend: {backend}, {connections} connections, {seconds} s per scenario, release build"
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "scenario", "requests", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for scenario in ["new keys (201)", "repeated key (304)"] {
        let dedup = scenario.starts_with("repeated");
        if dedup {
            let r = http
                .put(format!("{base}/trigger"))
                .header("Authorization", format!("Token token=\"{key}\""))
                .form(&[("message", "same"), ("key", "same-key")])
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        let counter = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for c in 0..connections {
            let (http, base, key, counter) =
                (http.clone(), base.clone(), key.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(50_000);
                let mut errors = 0u64;
                let auth = format!("Token token=\"{key}\"");
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let k = if dedup {
                        "same-key".to_owned()
                    } else {
                        format!("k-{c}-{n}")
                    };
                    let t0 = Instant::now();
                    let res = http
                        .put(format!("{base}/trigger"))
                        .header("Authorization", &auth)
                        .form(&[("message", "load test"), ("key", k.as_str())])
                        .send()
                        .await;
                    let ok = match res {
                        Ok(r) => {
                            let want = if dedup { 304 } else { 201 };
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            status == want
                        }
                        Err(_) => false,
                    };
                    lat.push(t0.elapsed());
                    if !ok {
                        errors += 1;
                    }
                }
                (lat, errors)
            }));
        }
        let started = Instant::now();
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (lat, e) = t.await.unwrap();
            all.extend(lat);
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort();
        let pct = |p: f64| {
            all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0
        };
        println!(
            "{:<28} {:>10} {:>10.0} {:>10.2} {:>10.2} {:>8}",
            scenario,
            all.len(),
            all.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99),
            errors
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
