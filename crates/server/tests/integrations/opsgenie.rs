//! Opsgenie's alert API subset: `POST /v2/alerts`, `…/{identifier}/close`
//! and `…/acknowledge`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::common::{Backend, Res, Server};
use super::{
    account_with_service, another_service, assert_json_keys, incident_actions, incidents,
    only_incident, post_json, post_raw,
};

/// What Alertmanager's `opsgenie_configs` sends for a firing group: the
/// alias is the SHA-256 of the group key, the details the common labels.
fn alertmanager_create() -> Value {
    json!({
        "alias": "9f2c8c1b0e1d4a7f8b6e5d4c3b2a19080706050403020100a1b2c3d4e5f60718",
        "message": "[FIRING:1] HighLatency (api page)",
        "description": "Alerts Firing:\nLabels:\n - alertname = HighLatency\n - instance = web1\n - job = api\n - severity = page\nAnnotations:\n - summary = API latency is high\nSource: http://prometheus:9090/graph?g0.expr=latency\n",
        "details": {"alertname": "HighLatency", "job": "api", "severity": "page"},
        "source": "http://alertmanager:9093/#/alerts?receiver=opsgenie",
        "tags": ["api", "prod"],
        "priority": "P1",
    })
}

fn genie(key: &str) -> String {
    format!("GenieKey {key}")
}

/// Opsgenie's `202`.
#[track_caller]
fn assert_accepted(res: &Res) {
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
    assert_json_keys(res, &["result", "took", "requestId"]);
    assert_eq!(res.body["result"], "Request will be processed");
    assert!(res.body["took"].as_f64().unwrap() >= 0.0);
    assert_request_id(res);
}

#[track_caller]
fn assert_request_id(res: &Res) {
    let id = res.body["requestId"].as_str().unwrap();
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "uuid-shaped: {id}");
}

/// An Opsgenie error: status, `message`, `took`, `requestId` (and
/// `errors` on a 422) with `field` named in them.
#[track_caller]
pub(crate) fn assert_og_error(res: &Res, status: StatusCode, field: Option<&str>) {
    assert_eq!(res.status, status, "{}", res.text);
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        assert_json_keys(res, &["message", "errors", "took", "requestId"]);
        if let Some(field) = field {
            assert!(
                res.body["errors"].get(field).is_some_and(Value::is_string),
                "{field} named: {}",
                res.text
            );
        }
    } else {
        assert_json_keys(res, &["message", "took", "requestId"]);
    }
    assert!(res.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_request_id(res);
}

async fn alerts_open_deduplicate_acknowledge_and_close(backend: Backend) {
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    let auth = genie(&s.integration_key);
    let h = [("Authorization", auth.as_str())];
    let body = alertmanager_create();
    let alias = body["alias"].as_str().unwrap().to_owned();

    let res = post_json(&server, "/v2/alerts", &h, &body).await;
    assert_accepted(&res);
    let incident = only_incident(&server, &acct.token, &s.service_id).await;
    assert_eq!(incident["message"], "[FIRING:1] HighLatency (api page)");
    assert_eq!(incident["key"], alias.as_str());
    assert_eq!(incident["description"], body["description"]);
    assert_eq!(
        incident["details"],
        json!({
            "priority": "P1", "source": body["source"], "details": body["details"], "tags": ["api", "prod"],
        })
    );
    let id = incident["id"].as_str().unwrap().to_owned();
    // The alias deduplicates.
    let res = post_json(&server, "/v2/alerts", &h, &body).await;
    assert_accepted(&res);
    assert_eq!(
        incidents(&server, &acct.token, &s.service_id).await.len(),
        1
    );
    assert_eq!(
        incident_actions(&server, &acct.token, &id).await,
        ["incident.create"]
    );

    // Acknowledge, then close, by alias (Alertmanager's close body).
    let ack = format!("/v2/alerts/{alias}/acknowledge?identifierType=alias");
    let res = post_json(
        &server,
        &ack,
        &h,
        &json!({"user": "ann", "note": "looking"}),
    )
    .await;
    assert_accepted(&res);
    let got = server.get(&format!("/incidents/{id}"), &acct.token).await;
    assert_eq!(got.body["state"], "acknowledged");
    let close = format!("/v2/alerts/{alias}/close?identifierType=alias");
    let res = post_json(
        &server,
        &close,
        &h,
        &json!({"source": "http://alertmanager:9093/#/alerts?receiver=opsgenie"}),
    )
    .await;
    assert_accepted(&res);
    let got = server.get(&format!("/incidents/{id}"), &acct.token).await;
    assert_eq!(got.body["state"], "resolved");
    // Closing again, or an unknown alias, is accepted and does nothing.
    for path in [
        close.clone(),
        "/v2/alerts/never-seen/close?identifierType=alias".into(),
        "/v2/alerts/never-seen/acknowledge?identifierType=alias".into(),
    ] {
        let res = post_raw(&server, &path, &h, "application/json", Vec::new()).await;
        assert_accepted(&res);
    }
    assert_eq!(incident_actions(&server, &acct.token, &id).await.len(), 3);

    // Without an alias, the message deduplicates.
    let plain = json!({"message": "disk full on db1"});
    for _ in 0..2 {
        assert_accepted(&post_json(&server, "/v2/alerts", &h, &plain).await);
    }
    let open: Vec<Value> = incidents(&server, &acct.token, &s.service_id)
        .await
        .into_iter()
        .filter(|i| i["message"] == "disk full on db1")
        .collect();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["details"], json!({"priority": "P3"}));
    // By Klaxon's incident id (Opsgenie's default identifier type): only
    // the incident's own service's key reaches it.
    let plain_id = open[0]["id"].as_str().unwrap();
    let other = another_service(&server, &acct, "Other").await;
    let res = post_raw(
        &server,
        &format!("/v2/alerts/{plain_id}/close"),
        &[("Authorization", &genie(&other.integration_key))],
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_accepted(&res);
    let got = server
        .get(&format!("/incidents/{plain_id}"), &acct.token)
        .await;
    assert_eq!(got.body["state"], "triggered");
    let res = post_raw(
        &server,
        &format!("/v2/alerts/{plain_id}/close"),
        &h,
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_accepted(&res);
    let got = server
        .get(&format!("/incidents/{plain_id}"), &acct.token)
        .await;
    assert_eq!(got.body["state"], "resolved");

    // A long alias (Opsgenie allows 512 characters) deduplicates and closes.
    let long_alias = "a".repeat(400);
    let long = json!({"message": "long alias", "alias": long_alias});
    for _ in 0..2 {
        assert_accepted(&post_json(&server, "/v2/alerts", &h, &long).await);
    }
    let open = incidents(&server, &acct.token, &s.service_id).await;
    let long_incident = open.iter().find(|i| i["message"] == "long alias").unwrap();
    assert!(long_incident["key"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let res = post_raw(
        &server,
        &format!("/v2/alerts/{long_alias}/close?identifierType=alias"),
        &h,
        "application/json",
        Vec::new(),
    )
    .await;
    assert_accepted(&res);
    let got = server
        .get(
            &format!("/incidents/{}", long_incident["id"].as_str().unwrap()),
            &acct.token,
        )
        .await;
    assert_eq!(got.body["state"], "resolved");
}

async fn alert_errors_in_opsgenies_shape(backend: Backend) {
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    let auth = genie(&s.integration_key);
    let h = [("Authorization", auth.as_str())];
    let ok = json!({"message": "m"});

    // Authentication.
    for header in [
        None,
        Some("GenieKey wrong-key".to_owned()),
        Some(format!("Basic {}", s.integration_key)),
        Some(format!("Token token=\"{}\"", acct.token)),
        Some("GenieKey".to_owned()),
    ] {
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|v| vec![("Authorization", v)])
            .unwrap_or_default();
        let res = post_json(&server, "/v2/alerts", &headers, &ok).await;
        assert_og_error(&res, StatusCode::UNAUTHORIZED, None);
        let res = post_json(
            &server,
            "/v2/alerts/x/close?identifierType=alias",
            &headers,
            &json!({}),
        )
        .await;
        assert_og_error(&res, StatusCode::UNAUTHORIZED, None);
    }

    // Validation: 422 naming the field.
    for (body, field) in [
        (json!({}), "message"),
        (json!({"message": "  "}), "message"),
        (json!({"message": "x".repeat(1025)}), "message"),
        (json!({"message": 5}), "message"),
        (json!({"message": "m", "priority": "P0"}), "priority"),
        (json!({"message": "m", "tags": "a,b"}), "tags"),
        (json!({"message": "m", "tags": [1]}), "tags"),
        (json!({"message": "m", "details": ["a"]}), "details"),
        (json!({"message": "m", "alias": "a".repeat(513)}), "alias"),
        (
            json!({"message": "m", "description": "d".repeat(17 * 1024)}),
            "description",
        ),
        (json!({"message": "a\u{0}b"}), "message"),
        (
            json!({"message": "m", "details": {"k": "\u{1b}[31m"}}),
            "details.k",
        ),
        (json!([1]), "body"),
    ] {
        let res = post_json(&server, "/v2/alerts", &h, &body).await;
        assert_og_error(&res, StatusCode::UNPROCESSABLE_ENTITY, Some(field));
    }
    for raw in [&b"{"[..], b"message=m", b"\xff"] {
        let res = post_raw(&server, "/v2/alerts", &h, "application/json", raw.to_vec()).await;
        assert_og_error(&res, StatusCode::UNPROCESSABLE_ENTITY, Some("body"));
    }
    let res = post_raw(
        &server,
        "/v2/alerts",
        &h,
        "application/json",
        format!("{{\"message\":\"{}\"}}", "x".repeat(1024 * 1024 + 10)).into_bytes(),
    )
    .await;
    assert_og_error(&res, StatusCode::PAYLOAD_TOO_LARGE, None);

    // Identifier types and actions.
    let res = post_json(
        &server,
        "/v2/alerts/abc/close?identifierType=tiny",
        &h,
        &json!({}),
    )
    .await;
    assert_og_error(
        &res,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("identifierType"),
    );
    let res = post_json(
        &server,
        "/v2/alerts/abc/close?identifierType=name",
        &h,
        &json!({}),
    )
    .await;
    assert_og_error(
        &res,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("identifierType"),
    );
    let res = post_json(
        &server,
        "/v2/alerts/abc/snooze?identifierType=alias",
        &h,
        &json!({}),
    )
    .await;
    assert_og_error(&res, StatusCode::NOT_FOUND, None);
    let res = post_raw(
        &server,
        "/v2/alerts/abc/close?identifierType=alias",
        &h,
        "application/json",
        b"[oops".to_vec(),
    )
    .await;
    assert_og_error(&res, StatusCode::UNPROCESSABLE_ENTITY, Some("body"));
    // An id that cannot be one, percent-encoded NULs, an alias too long.
    for path in [
        "/v2/alerts/short/close".to_owned(),
        "/v2/alerts/%00%00%00%00%00%00%00%00/close".to_owned(),
        "/v2/alerts/%00/close?identifierType=alias".to_owned(),
    ] {
        let res = post_json(&server, &path, &h, &json!({})).await;
        assert_accepted(&res);
    }
    let res = post_json(
        &server,
        &format!("/v2/alerts/{}/close?identifierType=alias", "a".repeat(600)),
        &h,
        &json!({}),
    )
    .await;
    assert_og_error(&res, StatusCode::UNPROCESSABLE_ENTITY, Some("identifier"));
    assert!(incidents(&server, &acct.token, &s.service_id)
        .await
        .is_empty());

    // A disabled service refuses new alerts with 409, in Opsgenie's shape.
    let other = another_service(&server, &acct, "Maintenance").await;
    let res = server
        .call(
            reqwest::Method::PUT,
            &format!("/services/{}/disable", other.service_id),
            Some(&acct.token),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = post_json(
        &server,
        "/v2/alerts",
        &[("Authorization", &genie(&other.integration_key))],
        &ok,
    )
    .await;
    assert_og_error(&res, StatusCode::CONFLICT, None);
    assert!(res.body["message"].as_str().unwrap().contains("disabled"));
}

crate::both_backends!(
    alerts_open_deduplicate_acknowledge_and_close,
    alert_errors_in_opsgenies_shape,
);
