//! `GET /metrics` of the real binary, on both backends: counters after
//! triggers, acknowledgements and resolutions, route templates (never raw
//! paths) as labels, the database's queues, fired timers and deliveries,
//! and the bearer token it asks for when one is configured.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Backend, Server};
use reqwest::StatusCode;
use serde_json::json;

const TOKEN: &str = "scrape-me-7Hq2";

/// The samples of an exposition: series (name and labels, as written) →
/// value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

async fn scrape(server: &Server) -> (String, HashMap<String, f64>) {
    let res = server
        .http
        .get(format!("{}/metrics", server.base))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = res.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let parsed = samples(&text);
    (text, parsed)
}

/// Scrapes until `done` holds (or 20 s pass, for the caller's assertion).
async fn scrape_until(
    server: &Server,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> (String, HashMap<String, f64>) {
    let started = Instant::now();
    loop {
        let (text, m) = scrape(server).await;
        if done(&m) || started.elapsed() > Duration::from_secs(20) {
            return (text, m);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no sample {series} in {:#?}", sorted(m)))
}

fn sorted(m: &HashMap<String, f64>) -> Vec<(&String, &f64)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

async fn counts_what_happens(backend: Backend) {
    // 1200 times real time: the 30-minute escalation fires after 1.5 s.
    let server = Server::start_with(
        backend,
        &[
            ("KLAXON_METRICS_TOKEN", TOKEN),
            ("KLAXON_CLOCK_SPEED", "1200"),
        ],
    )
    .await;
    let acct = server.register("Acme").await;
    let s = server
        .setup_service(&acct, "Web", &[acct.user_id.as_str()], 2)
        .await;
    let key = s.integration_key.as_str();

    // The token is required, and only the exact one will do.
    let res = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    for wrong in [
        format!("Bearer {TOKEN}x"),
        format!("Token token=\"{TOKEN}\""),
        format!("Bearer {}", acct.token),
    ] {
        let res = server
            .http
            .get(format!("{}/metrics", server.base))
            .header("Authorization", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    // Three incidents through PUT /trigger, a repeat of one, a fourth
    // through the PagerDuty Events API.
    let mut ids = Vec::new();
    for n in 0..3 {
        let res = server
            .integration(
                "trigger",
                key,
                &[("message", "disk full"), ("key", &format!("db{n}/disk"))],
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
        ids.push(res.str("id"));
    }
    let res = server
        .integration(
            "trigger",
            key,
            &[("message", "disk full"), ("key", "db0/disk")],
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_MODIFIED);
    let res = server
        .http
        .post(format!("{}/v2/enqueue", server.base))
        .json(&json!({
            "routing_key": key, "event_action": "trigger", "dedup_key": "pd/1",
            "payload": {"summary": "Disk full on db9", "source": "db9", "severity": "critical"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    // One acknowledged, one resolved, one looked at.
    let res = server
        .put(
            &format!("/incidents/{}/acknowledge", ids[0]),
            &acct.token,
            json!({}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = server
        .put(
            &format!("/incidents/{}/resolve", ids[1]),
            &acct.token,
            json!({}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = server
        .get(&format!("/incidents/{}", ids[2]), &acct.token)
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let res = server.get("/incidents/NoSuch12", &acct.token).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let res = server
        .get(&format!("/no/such/path/{}", ids[2]), &acct.token)
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);

    // The two still triggered escalate (one rule, loop limit 2: once) and
    // everyone paged is paged at the sign-in address, by the dev outbox.
    let (text, m) = scrape_until(&server, |m| {
        m.get(r#"klaxon_timers_fired_total{kind="escalate"}"#) == Some(&2.0)
            && m.get(r#"klaxon_notifications_total{provider="dev",channel="email",outcome="sent"}"#)
                .is_some_and(|n| *n >= 2.0)
    })
    .await;

    assert_eq!(value(&m, "klaxon_incidents_opened_total"), 4.0);
    assert_eq!(value(&m, "klaxon_incidents_acknowledged_total"), 1.0);
    assert_eq!(value(&m, "klaxon_incidents_resolved_total"), 1.0);
    assert_eq!(
        value(&m, r#"klaxon_open_incidents{state="triggered"}"#),
        2.0
    );
    assert_eq!(
        value(&m, r#"klaxon_open_incidents{state="acknowledged"}"#),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"klaxon_http_requests_total{method="PUT",route="/trigger",status="201"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            r#"klaxon_http_requests_total{method="PUT",route="/trigger",status="304"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"klaxon_http_requests_total{method="POST",route="/v2/enqueue",status="202"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"klaxon_http_requests_total{method="PUT",route="/incidents/{id}/acknowledge",status="204"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"klaxon_http_requests_total{method="GET",route="/incidents/{id}",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"klaxon_http_requests_total{method="GET",route="/incidents/{id}",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"klaxon_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        1.0
    );
    // Scrapes without the token were answered and counted too.
    assert!(
        value(
            &m,
            r#"klaxon_http_requests_total{method="GET",route="/metrics",status="401"}"#
        ) >= 4.0
    );
    assert_eq!(
        value(
            &m,
            r#"klaxon_http_request_duration_seconds_count{method="PUT",route="/trigger"}"#
        ),
        4.0
    );
    assert_eq!(
        value(&m, r#"klaxon_integration_events_total{source="klaxon"}"#),
        4.0
    );
    assert_eq!(
        value(&m, r#"klaxon_integration_events_total{source="pagerduty"}"#),
        1.0
    );
    assert_eq!(
        value(&m, r#"klaxon_timers_fired_total{kind="escalate"}"#),
        2.0
    );
    assert_eq!(value(&m, "klaxon_timer_lateness_seconds_count"), 2.0);
    // Nothing is armed after the last escalation of a loop limit of 2.
    assert_eq!(value(&m, "klaxon_timers_pending"), 0.0);
    assert_eq!(value(&m, "klaxon_timers_overdue_seconds"), 0.0);
    assert!(
        value(
            &m,
            r#"klaxon_notifications_total{provider="dev",channel="email",outcome="sent"}"#
        ) >= 2.0,
        "{text}"
    );
    assert!(m.contains_key(r#"klaxon_outbox_messages{status="queued"}"#));
    assert!(m.contains_key(r#"klaxon_outbox_messages{status="sending"}"#));
    match backend {
        Backend::Sqlite => {
            // Every new incident went through the group commit, in as many
            // commits as it took.
            assert_eq!(value(&m, "klaxon_trigger_batch_size_sum"), 4.0, "{text}");
            let commits = value(&m, "klaxon_trigger_batch_size_count");
            assert!((1.0..=4.0).contains(&commits), "{commits}");
            assert_eq!(
                value(&m, r#"klaxon_trigger_batch_size_bucket{le="+Inf"}"#),
                commits
            );
        }
        Backend::Postgres => {
            assert!(!text.contains("klaxon_trigger_batch_size"), "{text}");
        }
    }

    // No label carries an id, a key or a token: only templates.
    for secret in ids.iter().chain([
        &s.service_id,
        &acct.id,
        &acct.user_id,
        &acct.token,
        &s.integration_key,
    ]) {
        assert!(!text.contains(secret.as_str()), "{secret} in\n{text}");
    }
    assert!(!text.contains("/no/such/path"), "{text}");
    assert!(!text.contains("NoSuch12"), "{text}");
}

async fn open_without_a_token(backend: Backend) {
    let server = Server::start(backend).await;
    let res = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    let m = samples(&text);
    assert_eq!(value(&m, "klaxon_incidents_opened_total"), 0.0);
    assert_eq!(
        value(&m, r#"klaxon_open_incidents{state="triggered"}"#),
        0.0
    );
}

both_backends!(counts_what_happens, open_without_a_token);
