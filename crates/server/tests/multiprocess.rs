//! Several `klaxon serve` processes on one PostgreSQL database behave as
//! one sender: each message goes out once, and one process killed mid-run
//! (SIGKILL) loses none — the others take over its claimed messages when
//! their lease runs out.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fake_http::FakeHttp;
use common::{Backend, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Triggers `keys` spread over `servers` concurrently; returns the
/// incident ids.
async fn trigger_all(servers: &[&Server], key: &str, keys: &[String]) -> Vec<String> {
    let mut tasks = Vec::new();
    for (i, dedup) in keys.iter().enumerate() {
        let server = servers[i % servers.len()];
        let (http, url, key, dedup) = (
            server.http.clone(),
            format!("{}/trigger", server.base),
            key.to_owned(),
            dedup.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let res = http
                .put(&url)
                .header("Authorization", format!("Token token=\"{key}\""))
                .form(&[("message", "shared"), ("key", dedup.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids
}

/// Waits until every incident's messages are delivered; returns the
/// outbox ids.
async fn delivered(server: &Server, token: &str, incidents: &[String]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ids = Vec::new();
    for incident in incidents {
        loop {
            let rows = server
                .get(&format!("/incidents/{incident}/notifications"), token)
                .await;
            assert_eq!(rows.status, StatusCode::OK, "{}", rows.text);
            let rows = rows.body.as_array().unwrap().clone();
            if !rows.is_empty() && rows.iter().all(|r| r["status"] == "delivered") {
                ids.extend(rows.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "incident {incident} not delivered: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ids
}

/// How many times the receiver got each delivery id.
fn received(fake: &FakeHttp) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in fake.requests() {
        let id = r
            .header("x-klaxon-delivery")
            .expect("every webhook carries its delivery id");
        *seen.entry(id).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_send_each_message_once_and_lose_none_when_one_is_killed() {
    let receiver = FakeHttp::ok().await;
    // One clock for all three (leases are compared across processes);
    // fast enough that a dead process's lease (2 virtual minutes) runs
    // out in six real seconds, slow enough that a send on a loaded
    // machine finishes well within its lease and no 30-minute escalation
    // fires during the test.
    let origin = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let env = [
        ("KLAXON_CLOCK_SPEED", "20"),
        ("KLAXON_CLOCK_ORIGIN", origin.as_str()),
    ];
    let first = Server::start_with(Backend::Postgres, &env).await;
    let mut second = first.sibling();
    let third = first.sibling();
    let a = first.register("Shared").await;
    let hook = first
        .post(
            &format!("/users/{}/contacts", a.user_id),
            &a.token,
            json!({"type": "webhook", "label": "hook", "address": format!("{}/hook", receiver.base)}),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.text);
    let s = first
        .setup_service(&a, "Shared", &[a.user_id.as_str()], 1)
        .await;

    // All three alive: every message exactly once.
    let keys: Vec<String> = (0..45).map(|n| format!("calm-{n}")).collect();
    let incidents = trigger_all(&[&first, &second, &third], &s.integration_key, &keys).await;
    let messages = delivered(&first, &a.token, &incidents).await;
    assert_eq!(messages.len(), keys.len());
    let seen = received(&receiver);
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        messages.iter().cloned().collect::<HashSet<_>>()
    );
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");

    // One killed in the middle of a burst: nothing is lost; a message it
    // was sending when it died may go out twice (the receiver sees the
    // same delivery id), nothing else does.
    let keys: Vec<String> = (0..90).map(|n| format!("storm-{n}")).collect();
    let (before, after) = keys.split_at(45);
    let mut incidents = trigger_all(&[&first, &second, &third], &s.integration_key, before).await;
    second.kill();
    let killed_at = Instant::now();
    incidents.extend(trigger_all(&[&first, &third], &s.integration_key, after).await);
    let messages = delivered(&third, &a.token, &incidents).await;
    assert_eq!(messages.len(), keys.len());
    let seen = received(&receiver);
    for id in &messages {
        assert!(
            seen.contains_key(id),
            "message {id} never reached the receiver"
        );
    }
    // A repeat is a message the killed process had sent (reached the
    // receiver before the kill) without recording it: its lease ran out
    // and a survivor sent it again, once.
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
    for r in receiver.requests() {
        let id = r.header("x-klaxon-delivery").unwrap();
        first_seen.entry(id).or_insert(r.at);
    }
    for (id, &n) in &seen {
        if n > 1 {
            assert_eq!(n, 2, "message {id} sent {n} times");
            assert!(
                first_seen[id] < killed_at,
                "message {id} repeated though nobody died sending it"
            );
        }
    }
}
