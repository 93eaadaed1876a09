//! A 2xx means committed: killing the server (SIGKILL) in the middle of a
//! trigger storm loses no incident it answered 201 for, and after the
//! restart every one of them still deduplicates its key.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, Server};
use reqwest::StatusCode;

/// Concurrent clients sending triggers with new keys.
const CLIENTS: usize = 16;

async fn sigkill_mid_storm_keeps_every_answered_incident(backend: Backend) {
    let mut server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let s = server
        .setup_service(&a, "Storm", &[a.user_id.as_str()], 1)
        .await;
    let answered: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, url, key) = (
            server.http.clone(),
            format!("{}/trigger", server.base),
            s.integration_key.clone(),
        );
        let answered = answered.clone();
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let dedup_key = format!("k{c}-{n}");
                let sent = http
                    .put(&url)
                    .header("Authorization", format!("Token token=\"{key}\""))
                    .form(&[("message", "storm"), ("key", dedup_key.as_str())])
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                // The server is gone: whatever was not answered may or may
                // not have been written; nothing more is sent.
                let Ok(res) = sent else { break };
                if res.status() != StatusCode::CREATED {
                    break;
                }
                let Ok(body) = res.json::<serde_json::Value>().await else {
                    break;
                };
                let id = body["id"].as_str().expect("an id").to_owned();
                answered.lock().expect("not poisoned").push((dedup_key, id));
            }
        }));
    }
    // Let the storm run (every client answered at least once, however
    // slow the machine), then kill the process without warning.
    let started = std::time::Instant::now();
    while answered.lock().expect("not poisoned").len() < 4 * CLIENTS
        && started.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    for client in clients {
        client.await.expect("client task");
    }
    let answered = std::mem::take(&mut *answered.lock().expect("not poisoned"));
    assert!(
        answered.len() >= CLIENTS,
        "the storm got going ({} answered)",
        answered.len()
    );
    server.spawn();
    for (key, id) in &answered {
        let got = server.get(&format!("/incidents/{id}"), &a.token).await;
        assert_eq!(got.status, StatusCode::OK, "incident {id} ({key}) survived");
        assert_eq!(got.str("key"), *key);
    }
    // Every answered key is still open and still deduplicates.
    for (key, _) in answered.iter().step_by(answered.len().div_ceil(50)) {
        let again = server
            .integration(
                "trigger",
                &s.integration_key,
                &[("message", "storm"), ("key", key)],
            )
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{key} deduplicated");
    }
}

both_backends!(sigkill_mid_storm_keeps_every_answered_incident);
