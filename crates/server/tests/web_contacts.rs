//! Webhook, Slack and ntfy contacts against the real binary, with fake
//! receivers on loopback (plain http to loopback is a valid contact URL):
//! what each is sent, signatures, retries, refusals and redirects.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode as FakeStatus;
use common::fake_http::{FakeHttp, Recorded};
use common::{Backend, Server};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

const PUBLIC_URL: &str = "https://klaxon.test";
const WAIT: Duration = Duration::from_secs(20);

async fn start(backend: Backend, env: &[(&str, &str)]) -> Server {
    let mut all = vec![("KLAXON_PUBLIC_URL", PUBLIC_URL)];
    all.extend_from_slice(env);
    Server::start_with(backend, &all).await
}

/// Triggers with a JSON body through the integration API.
async fn trigger(server: &Server, key: &str, body: Value) -> common::Res {
    server
        .call(Method::PUT, "/trigger", Some(key), Some(body))
        .await
}

fn row<'a>(rows: &'a [Value], channel: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["channel"] == channel)
        .unwrap_or_else(|| panic!("no {channel} message in {rows:?}"))
}

/// A fake answering every request with `status`, `headers` and `body`.
async fn answering(status: u16, headers: Vec<(&'static str, String)>, body: &str) -> FakeHttp {
    let status = FakeStatus::from_u16(status).unwrap();
    let body = body.to_owned();
    FakeHttp::start(Arc::new(move |_, _| {
        (status, headers.clone(), body.clone())
    }))
    .await
}

fn hmac_hex(key: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks `X-Klaxon-Signature` the way a receiver would.
fn signature_verifies(request: &Recorded, secret: &str) -> bool {
    let header = request.header("x-klaxon-signature").unwrap_or_default();
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_owned()),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&request.body);
    t.parse::<i64>().is_ok() && hmac_hex(secret, &signed) == v1
}

/// The answer links' path (`/links/<token>`), checked to be under the
/// public URL.
fn link_path(url: &str) -> String {
    let path = url
        .strip_prefix(PUBLIC_URL)
        .unwrap_or_else(|| panic!("{url} is not under {PUBLIC_URL}"));
    let token = path.strip_prefix("/links/").unwrap();
    assert!(
        token.len() > 20
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "{token}"
    );
    path.to_owned()
}

async fn a_page_goes_once_to_each_web_contact(backend: Backend) {
    let server = start(backend, &[]).await;
    let a = server.register("Alpha").await;
    let s = server
        .setup_service(&a, "Disks", &[a.user_id.as_str()], 1)
        .await;
    let hook = FakeHttp::ok().await;
    let slack = answering(200, vec![("content-type", "text/plain".into())], "ok").await;
    let ntfy = answering(
        200,
        vec![("content-type", "application/json".into())],
        r#"{"id":"sPs71M8A2T","time":1700000000,"event":"message","topic":"alerts"}"#,
    )
    .await;
    let ntfy_port = ntfy.base.rsplit(':').next().unwrap().to_owned();
    server
        .contact(&a, "webhook", &format!("{}/hooks/in?src=klaxon", hook.base))
        .await;
    server
        .contact(&a, "slack", &format!("{}/services/T0/B0/xyz", slack.base))
        .await;
    server
        .contact(
            &a,
            "ntfy",
            &format!("http://:tk_secret123@127.0.0.1:{ntfy_port}/alerts"),
        )
        .await;

    let opened = trigger(
        &server,
        &s.integration_key,
        json!({
            "message": "disk full", "key": "disk-1",
            "description": "/var is at 100% on db-1",
            "details": {"host": "db-1", "used": 100},
        }),
    )
    .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.text);
    let id = opened.str("id");

    // The webhook: signed JSON.
    let got = hook.wait_for(1, WAIT).await;
    let req = &got[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.uri, "/hooks/in?src=klaxon");
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(req
        .header("user-agent")
        .unwrap_or_default()
        .starts_with("Klaxon/"));
    let body = req.json();
    assert_eq!(body["event"], "incident.page");
    assert_eq!(
        req.header("x-klaxon-event").as_deref(),
        Some("incident.page")
    );
    assert_eq!(
        req.header("x-klaxon-delivery").as_deref(),
        body["message_id"].as_str()
    );
    assert_eq!(body["reason"], "assigned");
    assert_eq!(body["user_id"], json!(a.user_id));
    assert_eq!(body["account_id"], json!(a.id));
    assert_eq!(body["attempt"], 1);
    assert!(body["sent_at"].is_string());
    assert_eq!(
        body["incident"],
        json!({
            "id": id, "service": "Disks", "message": "disk full",
            "description": "/var is at 100% on db-1",
            "details": {"host": "db-1", "used": 100},
            "state": "triggered",
            "url": format!("{PUBLIC_URL}/incidents/{id}"),
        })
    );
    let ack = link_path(body["links"]["acknowledge"].as_str().unwrap());
    let resolve = link_path(body["links"]["resolve"].as_str().unwrap());
    assert_ne!(ack, resolve);
    // It verifies with the secret an admin reads, and not with another's.
    let secret = server.get("/webhook_signing_secret", &a.token).await;
    assert_eq!(secret.status, StatusCode::OK, "{}", secret.text);
    assert_eq!(secret.header("cache-control").as_deref(), Some("no-store"));
    let secret = secret.str("secret");
    assert!(signature_verifies(req, &secret), "{:?}", req.headers);
    assert!(!signature_verifies(req, "not the secret"));
    let mut tampered = req.clone();
    tampered.body = req.text().replace("disk full", "disk fine").into();
    assert!(!signature_verifies(&tampered, &secret));

    // Slack: blocks with URL buttons.
    let got = slack.wait_for(1, WAIT).await;
    let body = got[0].json();
    assert_eq!(got[0].uri, "/services/T0/B0/xyz");
    assert_eq!(body["text"], "ALERT [Disks] disk full");
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "ALERT [Disks] disk full");
    assert_eq!(blocks[1]["text"]["text"], "/var is at 100% on db-1");
    assert!(blocks[2]["elements"][0]["text"]
        .as_str()
        .unwrap()
        .contains(&id));
    let buttons = blocks[3]["elements"].as_array().unwrap();
    assert_eq!(buttons[0]["text"]["text"], "Acknowledge");
    assert_eq!(buttons[0]["style"], "primary");
    assert_eq!(buttons[1]["text"]["text"], "Resolve");
    assert_eq!(buttons[1]["style"], "danger");
    link_path(buttons[0]["url"].as_str().unwrap());
    link_path(buttons[1]["url"].as_str().unwrap());

    // ntfy: headers, the token as Bearer and out of the URL.
    let got = ntfy.wait_for(1, WAIT).await;
    let req = &got[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.uri, "/alerts");
    assert_eq!(
        req.header("authorization").as_deref(),
        Some("Bearer tk_secret123")
    );
    assert_eq!(
        req.header("title").as_deref(),
        Some("ALERT [Disks] disk full")
    );
    assert_eq!(req.header("priority").as_deref(), Some("urgent"));
    assert_eq!(req.header("tags").as_deref(), Some("rotating_light"));
    assert_eq!(req.text(), "/var is at 100% on db-1");
    let actions = req.header("actions").unwrap();
    let parts: Vec<Vec<&str>> = actions
        .split(';')
        .map(|a| a.split(',').map(str::trim).collect())
        .collect();
    assert_eq!(parts.len(), 2, "{actions}");
    for (action, label) in parts.iter().zip(["Acknowledge", "Resolve"]) {
        assert_eq!(action[..2], ["http", label], "{actions}");
        link_path(action[2]);
        assert_eq!(action[3..], ["method=POST", "clear=true"], "{actions}");
    }

    // Recorded as delivered, the ntfy message id kept.
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.len() == 3 && rows.iter().all(|r| r["status"] == "delivered")
        })
        .await;
    assert!(rows.iter().all(|r| r["status"] == "delivered"), "{rows:?}");
    assert_eq!(row(&rows, "ntfy")["provider_id"], "sPs71M8A2T");
    assert_eq!(row(&rows, "webhook")["provider_id"], Value::Null);

    // The same problem again sends nothing more: a second incident's
    // pages, queued after it, are the only new requests.
    let again = trigger(
        &server,
        &s.integration_key,
        json!({"message": "disk full", "key": "disk-1"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    let other = trigger(
        &server,
        &s.integration_key,
        json!({"message": "cpu hot", "key": "cpu-1"}),
    )
    .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.text);
    let other_id = other.str("id");
    server
        .notifications_when(&a.token, &other_id, |rows| {
            rows.len() == 3 && rows.iter().all(|r| r["status"] == "delivered")
        })
        .await;
    let got = hook.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[1].json()["incident"]["id"], json!(other_id));
    assert_eq!(slack.requests().len(), 2);
    assert_eq!(ntfy.requests().len(), 2);
    assert_eq!(
        ntfy.requests()[1].header("title").as_deref(),
        Some("ALERT [Disks] cpu hot")
    );
}

async fn only_admins_read_the_signing_secret(backend: Backend) {
    let server = start(backend, &[]).await;
    let a = server.register("Alpha").await;
    let b = server.register("Beta").await;
    let email = format!("responder-{}@alpha.example.com", a.id.to_lowercase());
    let res = server
        .post(
            "/users",
            &a.token,
            json!({"name": "R", "email": email, "role": "responder", "password": "long enough"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let session = server
        .call(
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": email, "password": "long enough"})),
        )
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{}", session.text);
    let responder = session.str("token");

    server
        .get("/webhook_signing_secret", &responder)
        .await
        .assert_error(StatusCode::FORBIDDEN);
    server
        .call(Method::GET, "/webhook_signing_secret", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    let mine = server
        .get("/webhook_signing_secret", &a.token)
        .await
        .str("secret");
    let theirs = server
        .get("/webhook_signing_secret", &b.token)
        .await
        .str("secret");
    assert_eq!(mine.len(), 64);
    assert_ne!(mine, theirs, "each account signs with its own secret");
    // Stable across restarts: the key lives in the database.
    let mut server = server;
    server.kill();
    server.spawn();
    let again = server
        .get("/webhook_signing_secret", &a.token)
        .await
        .str("secret");
    assert_eq!(again, mine);
}

async fn a_failing_receiver_is_retried_until_it_takes_the_page(backend: Backend) {
    let server = start(backend, &[("KLAXON_CLOCK_SPEED", "100")]).await;
    let a = server.register("Alpha").await;
    let s = server
        .setup_service(&a, "Disks", &[a.user_id.as_str()], 1)
        .await;
    let hook = FakeHttp::start(Arc::new(|_, n| match n {
        0 => (FakeStatus::INTERNAL_SERVER_ERROR, vec![], "boom".into()),
        1 => (
            FakeStatus::TOO_MANY_REQUESTS,
            vec![("retry-after", "1".into())],
            "slow down".into(),
        ),
        _ => (FakeStatus::NO_CONTENT, vec![], String::new()),
    }))
    .await;
    server
        .contact(&a, "webhook", &format!("{}/in", hook.base))
        .await;
    let id = trigger(
        &server,
        &s.integration_key,
        json!({"message": "disk full", "key": "disk-2"}),
    )
    .await
    .str("id");
    let got = hook.wait_for(3, WAIT).await;
    let delivery = got[0].header("x-klaxon-delivery").unwrap();
    for (n, req) in got.iter().take(3).enumerate() {
        assert_eq!(
            req.header("x-klaxon-delivery").as_deref(),
            Some(delivery.as_str()),
            "every attempt carries the same delivery id"
        );
        assert_eq!(req.json()["attempt"], json!(n + 1));
        assert_eq!(req.json()["message_id"], json!(delivery));
    }
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.first().is_some_and(|r| r["status"] == "delivered")
        })
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "delivered", "{rows:?}");
    assert_eq!(rows[0]["attempts"], 3);
}

async fn refusals_and_redirects_fail_for_good(backend: Backend) {
    let server = start(backend, &[]).await;
    let a = server.register("Alpha").await;
    let s = server
        .setup_service(&a, "Disks", &[a.user_id.as_str()], 1)
        .await;
    let gone = answering(
        404,
        vec![("content-type", "text/plain".into())],
        "no_service",
    )
    .await;
    let elsewhere = FakeHttp::ok().await;
    let bouncer = answering(
        302,
        vec![("location", format!("{}/stolen", elsewhere.base))],
        "",
    )
    .await;
    server
        .contact(&a, "slack", &format!("{}/services/T0/B0/old", gone.base))
        .await;
    server
        .contact(&a, "webhook", &format!("{}/in", bouncer.base))
        .await;
    let id = trigger(
        &server,
        &s.integration_key,
        json!({"message": "disk full", "key": "disk-3"}),
    )
    .await
    .str("id");
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.len() == 2 && rows.iter().all(|r| r["status"] == "failed")
        })
        .await;
    let slack = row(&rows, "slack");
    assert_eq!(slack["status"], "failed", "{rows:?}");
    assert_eq!(slack["attempts"], 1);
    let error = slack["error"].as_str().unwrap();
    assert!(
        error.contains("404") && error.contains("no_service"),
        "{error}"
    );
    assert!(!error.contains("/services/"), "the URL stays out: {error}");
    let webhook = row(&rows, "webhook");
    assert_eq!(webhook["status"], "failed", "{rows:?}");
    assert!(
        webhook["error"].as_str().unwrap().contains("302"),
        "{rows:?}"
    );
    assert_eq!(gone.requests().len(), 1);
    assert_eq!(bouncer.requests().len(), 1);
    assert!(
        elsewhere.requests().is_empty(),
        "redirects are not followed"
    );
}

both_backends!(
    a_page_goes_once_to_each_web_contact,
    only_admins_read_the_signing_secret,
    a_failing_receiver_is_retried_until_it_takes_the_page,
    refusals_and_redirects_fail_for_good,
);
