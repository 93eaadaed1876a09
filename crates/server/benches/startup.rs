//! Start-up and idle cost of the release binary: the time from spawning
//! `klaxon serve` on a new database to its first `GET /readyz` 200, and
//! its resident memory once idle.
//!
//! ```text
//! cargo bench -p klaxon-server --bench startup                 # SQLite, SQLite with TLS, PostgreSQL
//! KLAXON_BENCH_BACKEND=sqlite KLAXON_BENCH_RUNS=20 cargo bench -p klaxon-server --bench startup
//! ```
//!
//! Each run gets a new database (a SQLite file in a new directory, or a
//! new PostgreSQL database on the throwaway server `klaxon-testkit`
//! starts once), so every start migrates from nothing. `/readyz` is asked
//! every millisecond from the moment of the spawn (the port is chosen
//! beforehand). RSS is read from `/proc/<pid>/status` after two idle
//! seconds.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A certificate for 127.0.0.1 and the client that trusts it.
fn tls_files(dir: &std::path::Path) -> (Vec<(String, String)>, reqwest::Client) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let env = vec![
        (
            "KLAXON_TLS_CERT".to_owned(),
            cert_path.display().to_string(),
        ),
        ("KLAXON_TLS_KEY".to_owned(), key_path.display().to_string()),
    ];
    (env, client)
}

struct Run {
    ready: Duration,
    rss_kib: u64,
    peak_kib: u64,
}

async fn run_once(
    database_url: &str,
    env: &[(String, String)],
    client: &reqwest::Client,
    scheme: &str,
) -> Run {
    let port = free_port();
    let ready_url = format!("{scheme}://127.0.0.1:{port}/readyz");
    let started = Instant::now();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_klaxon"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            database_url,
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let ready = loop {
        if let Ok(res) = client.get(&ready_url).send().await {
            if res.status().is_success() {
                break started.elapsed();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not ready");
        assert!(child.try_wait().unwrap().is_none(), "exited");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_kib, peak_kib) = memory_kib(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    Run {
        ready,
        rss_kib,
        peak_kib,
    }
}

fn report(name: &str, runs: &mut [Run]) {
    runs.sort_by_key(|r| r.ready);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = &runs[runs.len() / 2];
    let mut rss: Vec<u64> = runs.iter().map(|r| r.rss_kib).collect();
    rss.sort_unstable();
    let peak = runs.iter().map(|r| r.peak_kib).max().unwrap_or(0);
    println!(
        "{name:<18} ready: median {:.1} ms, min {:.1}, max {:.1} | idle RSS: median {:.1} MiB (min {:.1}, max {:.1}), peak {:.1} MiB | {} runs",
        ms(median.ready),
        ms(runs[0].ready),
        ms(runs[runs.len() - 1].ready),
        rss[rss.len() / 2] as f64 / 1024.0,
        rss[0] as f64 / 1024.0,
        rss[rss.len() - 1] as f64 / 1024.0,
        peak as f64 / 1024.0,
        runs.len()
    );
}

#[tokio::main]
async fn main() {
    let runs = env_num("KLAXON_BENCH_RUNS", 10).max(1);
    let backend = std::env::var("KLAXON_BENCH_BACKEND").unwrap_or_else(|_| "both".into());
    let plain = reqwest::Client::new();

    if backend != "postgres" {
        let mut results = Vec::new();
        for _ in 0..runs {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}/klaxon.db", dir.path().display());
            results.push(run_once(&url, &[], &plain, "http").await);
        }
        report("SQLite", &mut results);

        let mut results = Vec::new();
        for _ in 0..runs {
            let dir = tempfile::tempdir().unwrap();
            let (env, client) = tls_files(dir.path());
            let url = format!("sqlite://{}/klaxon.db", dir.path().display());
            results.push(run_once(&url, &env, &client, "https").await);
        }
        report("SQLite, TLS", &mut results);
    }
    if backend != "sqlite" {
        let mut results = Vec::new();
        for _ in 0..runs {
            let url = tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
                .await
                .unwrap();
            results.push(run_once(&url, &[], &plain, "http").await);
        }
        report("PostgreSQL", &mut results);
    }
}
