//! The inbound integrations, black-box on both backends: PagerDuty's
//! Events API (v2, change events, v1), Opsgenie's alert API and
//! Alertmanager's webhook, fed the bodies the real tools send (written from
//! their documentation and source), every error shape, rate limiting,
//! tenant isolation and hostile input; then the real tools themselves —
//! the `pdpyras` PagerDuty client and a Prometheus Alertmanager paging
//! Klaxon through all three of its receivers.
#![allow(clippy::unwrap_used)]

mod common;

#[path = "integrations/alertmanager.rs"]
mod alertmanager;
#[path = "integrations/hostile.rs"]
mod hostile;
#[path = "integrations/opsgenie.rs"]
mod opsgenie;
#[path = "integrations/pagerduty.rs"]
mod pagerduty;
#[path = "integrations/tools.rs"]
mod tools;

use common::{Account, Res, Server, Setup};
use reqwest::StatusCode;
use serde_json::Value;

/// POSTs a JSON body with extra headers.
async fn post_json(server: &Server, path: &str, headers: &[(&str, &str)], body: &Value) -> Res {
    post_raw(
        server,
        path,
        headers,
        "application/json",
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// POSTs raw bytes with a content type and extra headers.
async fn post_raw(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: Vec<u8>,
) -> Res {
    let mut req = server
        .http
        .post(format!("{}{}", server.base, path))
        .header("Content-Type", content_type)
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    read(req.send().await.expect("request sent")).await
}

async fn read(r: reqwest::Response) -> Res {
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Res {
        status,
        headers,
        text,
        body,
    }
}

/// An account with one service paging its owner.
async fn account_with_service(server: &Server, name: &str) -> (Account, Setup) {
    let acct = server.register(name).await;
    let s = server
        .setup_service(&acct, &format!("{name} web"), &[&acct.user_id], 1)
        .await;
    (acct, s)
}

/// Another service of the account (same policy as `s`).
async fn another_service(server: &Server, acct: &Account, name: &str) -> Setup {
    server.setup_service(acct, name, &[&acct.user_id], 1).await
}

/// The service's incidents, newest first.
async fn incidents(server: &Server, token: &str, service_id: &str) -> Vec<Value> {
    let res = server
        .get(
            &format!("/services/{service_id}/incidents?per_page=100"),
            token,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    res.body.as_array().unwrap().clone()
}

/// The one incident of a service.
async fn only_incident(server: &Server, token: &str, service_id: &str) -> Value {
    let all = incidents(server, token, service_id).await;
    assert_eq!(all.len(), 1, "one incident: {all:?}");
    all[0].clone()
}

/// An incident's audit actions, newest first.
async fn incident_actions(server: &Server, token: &str, id: &str) -> Vec<String> {
    let res = server.get(&format!("/incidents/{id}/events"), token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    res.body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// The body is JSON (by content type and parse) and has exactly these keys.
#[track_caller]
fn assert_json_keys(res: &Res, keys: &[&str]) {
    assert!(
        res.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "JSON answer: {:?} {}",
        res.headers,
        res.text
    );
    let mut got: Vec<&str> = res
        .body
        .as_object()
        .unwrap_or_else(|| panic!("an object: {}", res.text))
        .keys()
        .map(String::as_str)
        .collect();
    got.sort_unstable();
    let mut want = keys.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{}", res.text);
}
