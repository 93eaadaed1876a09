//! Abuse against the real binary, on both backends: a flood of sign-ins
//! stays within a bounded amount of memory and answers no 5xx; password
//! guessing is rate-limited; logs never carry the secrets in URLs.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The process's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Peak memory the server may reach while 200 sign-ins arrive at once.
/// Each Argon2 check takes 19 MiB: run side by side they would take
/// gigabytes; through the bounded pool a few of them at a time.
const PEAK_LIMIT_MIB: u64 = 400;

async fn parallel_sign_ins_stay_within_memory(backend: Backend) {
    // Rate limits off: every request reaches the password check.
    let server = Server::start_with(
        backend,
        &[
            ("KLAXON_AUTH_RATE_EMAIL", "0"),
            ("KLAXON_AUTH_RATE_IP", "0"),
        ],
    )
    .await;
    let a = server.register("Alpha").await;
    let pid = server.pid().unwrap();
    let before = peak_rss_kib(pid);
    let mut requests = Vec::new();
    for i in 0..200 {
        let password = if i % 2 == 0 {
            "correct horse"
        } else {
            "wrong horse"
        };
        let req = server
            .http
            .post(format!("{}/sessions", server.base))
            .json(&json!({"email": a.email, "password": password}))
            .send();
        requests.push(tokio::spawn(req));
    }
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for r in requests {
        let res = r.await.unwrap().expect("an answer");
        let status = res.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let after = res.headers().get("retry-after").unwrap();
            assert!(after.to_str().unwrap().parse::<u64>().unwrap() >= 1);
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["error"], "too_many_requests", "{body}");
        }
        *counts.entry(status.as_u16()).or_default() += 1;
    }
    let peak = peak_rss_kib(pid);
    println!(
        "{backend:?}: 200 parallel sign-ins: {counts:?}; server peak RSS {} MiB (before the flood {} MiB)",
        peak / 1024,
        before / 1024
    );
    assert!(
        counts.keys().all(|s| [201, 401, 429].contains(s)),
        "only 201, 401 and 429: {counts:?}"
    );
    assert!(counts.get(&201).is_some_and(|n| *n > 0), "{counts:?}");
    assert!(
        peak < PEAK_LIMIT_MIB * 1024,
        "peak RSS {} MiB over {PEAK_LIMIT_MIB} MiB",
        peak / 1024
    );
    // Still serving, and signing in once the flood has passed.
    let res = server
        .call(
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": a.email, "password": "correct horse"})),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
}

async fn password_guessing_is_rate_limited(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let attempt = |email: &str, password: &str| {
        server.call(
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": email, "password": password})),
        )
    };
    for i in 1..=10 {
        let res = attempt(&a.email, "wrong horse").await;
        assert_eq!(
            res.status,
            StatusCode::UNAUTHORIZED,
            "attempt {i}: {}",
            res.text
        );
    }
    let res = attempt(&a.email, "wrong horse").await;
    res.assert_error(StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    // The right password waits too (in any letter case), and so do the
    // checks of the current password that changes it.
    attempt(&a.email.to_uppercase(), "correct horse")
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS);
    server
        .put(
            &format!("/users/{}", a.user_id),
            &a.token,
            json!({"password": "new password", "current_password": "guess"}),
        )
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS);
    // Other addresses are not held up by it, until the client's own limit
    // (30 a minute, so a handful more at most while this runs).
    let res = attempt("someone@example.com", "wrong horse").await;
    res.assert_error(StatusCode::UNAUTHORIZED);
    let mut limited = None;
    for i in 0..40 {
        let res = attempt(&format!("nobody{i}@example.com"), "x").await;
        if res.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.header("retry-after").is_some());
            limited = Some(i);
            break;
        }
        res.assert_error(StatusCode::UNAUTHORIZED);
    }
    assert!(limited.is_some(), "the client's limit holds");
    // Registration has its own buckets, and the same limit per client.
    let mut limited = false;
    for i in 0..40 {
        let res = server
            .call(
                Method::POST,
                "/registrations",
                None,
                Some(json!({"account_name": "X", "name": "X", "email": a.email,
                            "password": format!("long enough {i}")})),
            )
            .await;
        match res.status {
            StatusCode::UNPROCESSABLE_ENTITY => {}
            StatusCode::TOO_MANY_REQUESTS => {
                // Ten a minute for the address, its own registration
                // among them (and perhaps one refilled meanwhile).
                assert!(
                    (9..=10).contains(&i),
                    "registration counted apart from sign-in ({i})"
                );
                limited = true;
                break;
            }
            other => panic!("{other}: {}", res.text),
        }
    }
    assert!(limited, "registering the same email is limited too");
}

async fn logs_never_carry_url_secrets(backend: Backend) {
    let server = Server::start_logging(backend, &[("RUST_LOG", "debug")]).await;
    let a = server.register("Alpha").await;
    let s = server.setup_service(&a, "Web", &[&a.user_id], 1).await;
    let hb = server
        .post(
            &format!("/services/{}/heartbeats", s.service_id),
            &a.token,
            json!({"name": "backup", "interval": 60}),
        )
        .await;
    assert_eq!(hb.status, StatusCode::CREATED, "{}", hb.text);
    let ping_token = hb.str("ping_url").rsplit('/').next().unwrap().to_owned();
    let schedule = server
        .post("/schedules", &a.token, json!({"name": "Primary"}))
        .await
        .str("id");
    let feed = server
        .post(
            &format!("/schedules/{schedule}/feed_token"),
            &a.token,
            json!({}),
        )
        .await
        .str("token");
    let query_secret = "QuerySecret9zY8xW7v";
    let link_secret = "LinkSecret5tU4sR3q";
    let stray_secret = "StraySecret1pO2nM3l";
    let urls = [
        format!("/heartbeats/{ping_token}?token={query_secret}"),
        format!("/schedules/{schedule}.ics?token={feed}"),
        format!("/links/{link_secret}?token={query_secret}"),
        format!("/heartbeat/{stray_secret}?token={query_secret}"),
        format!("/integrations/alertmanager?key={}", s.integration_key),
    ];
    for url in &urls {
        let res = server
            .http
            .get(format!("{}{url}", server.base))
            .send()
            .await
            .unwrap();
        assert!(!res.status().is_server_error(), "{url}: {}", res.status());
    }
    let ping = server
        .http
        .post(format!("{}/heartbeats/{ping_token}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), StatusCode::OK);
    // Debug logging is on and the requests were traced: wait for the last
    // one's line, then read everything.
    let started = Instant::now();
    while !server.logs().contains("/integrations/alertmanager") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no request lines in the debug log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = server.logs();
    assert!(logs.contains("/heartbeats/{token}"), "{logs}");
    for secret in [
        ping_token.as_str(),
        feed.as_str(),
        query_secret,
        link_secret,
        stray_secret,
        s.integration_key.as_str(),
        a.token.as_str(),
    ] {
        assert!(
            !logs.contains(secret),
            "the log holds the secret {secret}:\n{logs}"
        );
    }
}

/// Sign-in attempts with `X-Forwarded-For`; the statuses.
async fn attempts_from(server: &Server, forwarded: &[String]) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for (i, ip) in forwarded.iter().enumerate() {
        let res = server
            .http
            .post(format!("{}/sessions", server.base))
            .header("X-Forwarded-For", format!("6.6.6.6, {ip}"))
            .json(&json!({"email": format!("nobody{i}@example.com"), "password": "x"}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status());
    }
    statuses
}

/// The per-address limit counts the connection's peer; `X-Forwarded-For`
/// only from a trusted proxy, and then its last hop, not what the client
/// wrote first.
async fn forwarded_for_counts_only_behind_a_trusted_proxy(backend: Backend) {
    let limit = [("KLAXON_AUTH_RATE_IP", "5")];
    let distinct: Vec<String> = (1..=8).map(|i| format!("198.51.100.{i}")).collect();
    let same: Vec<String> = (1..=6).map(|_| "203.0.113.7".to_owned()).collect();
    let behind = Server::start_with(
        backend,
        &[limit[0], ("KLAXON_TRUSTED_PROXY", "127.0.0.1, ::1")],
    )
    .await;
    let statuses = attempts_from(&behind, &distinct).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "a client each: {statuses:?}"
    );
    let statuses = attempts_from(&behind, &same).await;
    assert_eq!(statuses[4], StatusCode::UNAUTHORIZED, "{statuses:?}");
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // Not behind a trusted proxy: the header changes nothing.
    let direct =
        Server::start_with(backend, &[limit[0], ("KLAXON_TRUSTED_PROXY", "10.0.0.1")]).await;
    let statuses = attempts_from(&direct, &distinct).await;
    assert_eq!(statuses[4], StatusCode::UNAUTHORIZED, "{statuses:?}");
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
}

both_backends!(
    forwarded_for_counts_only_behind_a_trusted_proxy,
    parallel_sign_ins_stay_within_memory,
    password_guessing_is_rate_limited,
    logs_never_carry_url_secrets,
);
