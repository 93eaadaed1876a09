//! The escalation engine through the real binary, on an accelerated clock
//! (`KLAXON_CLOCK_SPEED`): a SIGKILL and restart in the middle losing
//! nothing, several processes sharing one PostgreSQL database firing each
//! timer once, and one incident's broken data not holding up the others.
//! What a timer does, and exactly when, is tested in-process on a manual
//! clock (`engine_clock.rs`).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Account, Backend, Server, Setup};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// One virtual minute is 50 ms of real time.
const SPEED: &str = "1200";
const MINUTE_REAL: Duration = Duration::from_millis(50);

fn origin() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

async fn fast_server(backend: Backend) -> Server {
    Server::start_with(
        backend,
        &[
            ("KLAXON_CLOCK_SPEED", SPEED),
            ("KLAXON_CLOCK_ORIGIN", &origin()),
        ],
    )
    .await
}

/// A policy walking `users` with 1-minute rules and `loop_limit`.
async fn setup(server: &Server, acct: &Account, users: &[&str], loop_limit: i64) -> Setup {
    setup_with_timeout(server, acct, users, loop_limit, 1).await
}

/// A policy walking `users` with `minutes`-long rules.
async fn setup_with_timeout(
    server: &Server,
    acct: &Account,
    users: &[&str],
    loop_limit: i64,
    minutes: i64,
) -> Setup {
    let s = server.setup_service(acct, "Web", users, loop_limit).await;
    for rule in &s.rule_ids {
        let res = server
            .put(
                &format!("/policies/{}/rules/{rule}", s.policy_id),
                &acct.token,
                json!({"escalation_timeout": minutes}),
            )
            .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
    }
    s
}

async fn escalations(server: &Server, token: &str, id: &str) -> Vec<Value> {
    let events = server
        .get(&format!("/incidents/{id}/events?per_page=100"), token)
        .await;
    let mut list: Vec<Value> = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "incident.escalate")
        .cloned()
        .collect();
    list.reverse();
    list
}

/// Polls until `n` escalations are recorded (or panics after `limit`).
async fn wait_for_escalations(
    server: &Server,
    token: &str,
    id: &str,
    n: usize,
    limit: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let got = escalations(server, token, id).await;
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens `count` incidents (messages `m0`, `m1`, …) through the
/// integration API and returns their ids.
async fn open_incidents(server: &Server, integration_key: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let message = format!("m{n}");
        let res = server
            .integration("trigger", integration_key, &[("message", &message)])
            .await;
        ids.push(res.str("id"));
    }
    ids
}

async fn two_users(server: &Server, acct: &Account) -> String {
    server
        .post(
            "/users",
            &acct.token,
            json!({"name": "Two", "email": format!("two-{}@example.com", acct.id)}),
        )
        .await
        .str("id")
}

async fn sigkill_mid_escalation_loses_nothing(backend: Backend) {
    let mut server = fast_server(backend).await;
    let a = server.register("Alpha").await;
    let u2 = two_users(&server, &a).await;
    let s = setup(&server, &a, &[&a.user_id, &u2], 2).await;
    let ids = open_incidents(&server, &s.integration_key, 5).await;
    // After the first escalation, kill the process without warning, and
    // stay down for longer than the rest of the walk.
    let first = wait_for_escalations(&server, &a.token, &ids[0], 1, Duration::from_secs(30)).await;
    assert!(!first.is_empty());
    server.kill();
    tokio::time::sleep(MINUTE_REAL * 5).await;
    server.spawn();
    for id in &ids {
        let got = wait_for_escalations(&server, &a.token, id, 3, Duration::from_secs(30)).await;
        assert_eq!(
            got.len(),
            3,
            "incident {id}: every timer that came due fired once"
        );
        let loops: Vec<Value> = got
            .iter()
            .map(|e| e["changeset"]["current_policy_rule_id"][1].clone())
            .collect();
        assert_eq!(
            loops,
            [
                json!(s.rule_ids[1]),
                json!(s.rule_ids[0]),
                json!(s.rule_ids[1])
            ],
            "in order"
        );
    }
    tokio::time::sleep(MINUTE_REAL * 3).await;
    for id in &ids {
        assert_eq!(
            escalations(&server, &a.token, id).await.len(),
            3,
            "and none twice"
        );
    }
}

/// Three processes on one PostgreSQL database behave as one: each timer
/// fires exactly once, and killing one mid-run loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_processes_share_the_work() {
    let mut first = fast_server(Backend::Postgres).await;
    let a = first.register("Alpha").await;
    let u2 = two_users(&first, &a).await;
    let s = setup(&first, &a, &[&a.user_id, &u2], 2).await;
    let second = first.sibling();
    let third = first.sibling();
    let servers = [&first, &second, &third];
    let mut ids = Vec::new();
    for n in 0..30 {
        let server = servers[n % 3];
        ids.push(
            server
                .integration(
                    "trigger",
                    &s.integration_key,
                    &[("message", &format!("m{n}"))],
                )
                .await
                .str("id"),
        );
    }
    tokio::time::sleep(MINUTE_REAL + MINUTE_REAL / 2).await;
    first.kill();
    for id in &ids {
        let got = wait_for_escalations(&second, &a.token, id, 3, Duration::from_secs(60)).await;
        assert_eq!(got.len(), 3, "incident {id}");
    }
    tokio::time::sleep(MINUTE_REAL * 3).await;
    let all = third.get("/events?per_page=100&page=1", &a.token).await;
    let total: usize = all.header("x-total-count").unwrap().parse().unwrap();
    let mut escalations_total = 0;
    for page in 1..=total.div_ceil(100) {
        let res = third
            .get(&format!("/events?per_page=100&page={page}"), &a.token)
            .await;
        escalations_total += res
            .body
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "incident.escalate")
            .count();
    }
    assert_eq!(
        escalations_total,
        30 * 3,
        "each timer fired by exactly one process"
    );
}

/// Runs SQL on a PostgreSQL database with `psql` (which the test kit
/// needs anyway) and returns its unaligned output.
fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One incident whose service's policy is gone (a row broken behind the
/// API's back): its timer is retried with a backoff, never dropped, while
/// every other incident keeps escalating on time; once the row is fixed,
/// it escalates too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_broken_timer_does_not_stop_the_others() {
    let server = fast_server(Backend::Postgres).await;
    let url = server.database_url.clone();
    let a = server.register("Alpha").await;
    let u2 = two_users(&server, &a).await;
    let web = setup(&server, &a, &[&a.user_id, &u2], 2).await;
    // 30-minute rules (1.5 s of real time): time to break the row first.
    let db = server.setup_service(&a, "Db", &[&a.user_id, &u2], 2).await;
    let broken = server
        .integration("trigger", &db.integration_key, &[("message", "db down")])
        .await
        .str("id");
    psql(
        &url,
        &format!(
            "BEGIN; SET LOCAL session_replication_role = replica;
             UPDATE services SET policy_id = 'no-such-policy' WHERE id = '{}'; COMMIT;",
            db.service_id
        ),
    );
    let attempts = || {
        psql(
            &url,
            &format!("SELECT attempts FROM timers WHERE incident_id = '{broken}'"),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while attempts().parse::<i64>().unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "the broken timer was never tried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ids = open_incidents(&server, &web.integration_key, 5).await;
    for id in &ids {
        let got = wait_for_escalations(&server, &a.token, id, 3, Duration::from_secs(30)).await;
        assert_eq!(
            got.len(),
            3,
            "incident {id} escalates despite the broken one"
        );
    }
    assert!(escalations(&server, &a.token, &broken).await.is_empty());
    let tries: i64 = attempts().parse().expect("the broken timer is kept");
    assert!(tries >= 2, "retried with a backoff: {tries} attempts");

    psql(
        &url,
        &format!(
            "UPDATE services SET policy_id = '{}' WHERE id = '{}'",
            db.policy_id, db.service_id
        ),
    );
    let got = wait_for_escalations(&server, &a.token, &broken, 1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "fixed, it escalates");
    assert_eq!(got[0]["changeset"]["current_user_id"][1], u2.as_str());
}

both_backends!(sigkill_mid_escalation_loses_nothing);
