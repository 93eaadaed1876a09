//! Page latency: from sending `PUT /trigger` to the provider receiving the
//! page, against the release binary, with a webhook contact pointing at a
//! receiver on loopback in this process.
//!
//! ```text
//! cargo bench -p klaxon-server --bench page_latency            # SQLite
//! KLAXON_BENCH_BACKEND=postgres cargo bench -p klaxon-server --bench page_latency
//! KLAXON_BENCH_SLOW=60 KLAXON_BENCH_FAST_SECONDS=10 cargo bench …
//! ```
//!
//! Two rates: one incident per second (`KLAXON_BENCH_SLOW` of them,
//! default 30), and 1,000 per second for `KLAXON_BENCH_FAST_SECONDS`
//! (default 5). Every trigger opens a new incident; the receiver notes when
//! each incident's page arrives. On a small machine the load generator and
//! the receiver share the CPU with the server: the figures are a ceiling
//! on latency, not a floor.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use serde_json::{json, Value};

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The receiving end: notes when each incident's first page arrives.
async fn receive(State(arrivals): State<Arrivals>, body: Bytes) -> &'static str {
    let at = Instant::now();
    if let Ok(page) = serde_json::from_slice::<Value>(&body) {
        if let Some(id) = page["incident"]["id"].as_str() {
            arrivals.lock().unwrap().entry(id.to_owned()).or_insert(at);
        }
    }
    "ok"
}

#[tokio::main]
async fn main() {
    let slow = env_num("KLAXON_BENCH_SLOW", 30);
    let fast_seconds = env_num("KLAXON_BENCH_FAST_SECONDS", 5);
    let backend = std::env::var("KLAXON_BENCH_BACKEND").unwrap_or_else(|_| "sqlite".into());

    let arrivals: Arrivals = Arc::default();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", receiver.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(receiver, app).await.unwrap() });

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
        .env("RUST_LOG", "error")
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
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let reg: Value = http
        .post(format!("{base}/registrations"))
        .json(&json!({"account_name": "Bench", "name": "B", "email": "b@example.com", "password": "benchmark"}))
        .send().await.unwrap().json().await.unwrap();
    let auth = format!("Token token=\"{}\"", reg["token"].as_str().unwrap());
    let user = reg["user_id"].as_str().unwrap();
    let post = |path: String, body: Value| {
        let req = http
            .post(format!("{base}{path}"))
            .header("Authorization", &auth)
            .json(&body);
        async move {
            let res = req.send().await.unwrap();
            assert!(res.status().is_success(), "{}", res.status());
            res.json::<Value>().await.unwrap()
        }
    };
    post(
        format!("/users/{user}/contacts"),
        json!({"type": "webhook", "label": "bench", "address": hook}),
    )
    .await;
    let policy = post("/policies".into(), json!({"name": "P"})).await;
    let pid = policy["id"].as_str().unwrap();
    post(
        format!("/policies/{pid}/rules"),
        json!({"assignment": {"type": "user", "id": user}}),
    )
    .await;
    let service = post("/services".into(), json!({"name": "S", "policy_id": pid})).await;
    let key = Arc::new(format!(
        "Token token=\"{}\"",
        service["integration_key"].as_str().unwrap()
    ));

    println!("backend: {backend}, webhook receiver on loopback, release build");
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "rate", "incidents", "p50 ms", "p99 ms", "max ms", "missing"
    );
    let scenarios = [
        ("1 incident/s", slow, Duration::from_secs(1)),
        (
            "1,000 incidents/s",
            fast_seconds * 1000,
            Duration::from_millis(1),
        ),
    ];
    for (name, count, every) in scenarios {
        let sent: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::with_capacity(count as usize);
        for n in 0..count {
            ticker.tick().await;
            let (http, base, key, sent) = (http.clone(), base.clone(), key.clone(), sent.clone());
            let dedup = format!("{name}-{n}");
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let res = http
                    .put(format!("{base}/trigger"))
                    .header("Authorization", key.as_str())
                    .form(&[("message", "latency"), ("key", dedup.as_str())])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 201);
                let body: Value = res.json().await.unwrap();
                sent.lock()
                    .unwrap()
                    .push((body["id"].as_str().unwrap().to_owned(), t0));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Give the last pages time to arrive.
        let deadline = Instant::now() + Duration::from_secs(30);
        let sent = sent.lock().unwrap().clone();
        loop {
            let arrived = {
                let got = arrivals.lock().unwrap();
                sent.iter().all(|(id, _)| got.contains_key(id))
            };
            if arrived || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = arrivals.lock().unwrap().clone();
        let mut lat: Vec<f64> = sent
            .iter()
            .filter_map(|(id, t0)| Some(got.get(id)?.duration_since(*t0).as_secs_f64() * 1000.0))
            .collect();
        let missing = sent.len() - lat.len();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if lat.is_empty() {
                f64::NAN
            } else {
                lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
            }
        };
        println!(
            "{:<24} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9}",
            name,
            sent.len(),
            pct(0.50),
            pct(0.99),
            lat.last().copied().unwrap_or(f64::NAN),
            missing
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
