//! PagerDuty's Events API v2 (`/v2/enqueue`, `/v2/change/enqueue`) and v1
//! (`/generic/2010-04-15/create_event.json`).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::common::{Backend, Res, Server};
use super::{
    account_with_service, assert_json_keys, incident_actions, incidents, only_incident, post_json,
    post_raw,
};

/// What Alertmanager's `pagerduty_configs` (v2, `routing_key`) sends for a
/// firing group: `dedup_key` is the SHA-256 of the group key, the details
/// are its default `firing`/`resolved`/`num_*` texts, and `images` and
/// `links` come from the receiver's configuration.
fn alertmanager_trigger(routing_key: &str) -> Value {
    json!({
        "routing_key": routing_key,
        "dedup_key": "4f1ed5d5d1f1c2fa3bc0d9a6ad0a13bb8b2c28d23a0d1b6c2fdd7a2f0a9a1b3c",
        "event_action": "trigger",
        "payload": {
            "summary": "[FIRING:1] HighLatency (api page)",
            "source": "Alertmanager",
            "severity": "critical",
            "custom_details": {
                "firing": "Labels:\n - alertname = HighLatency\n - instance = web1\n - job = api\nAnnotations:\n - summary = API latency is high\nSource: http://prometheus:9090/graph?g0.expr=latency\n",
                "num_firing": "1",
                "num_resolved": "0",
                "resolved": "",
            },
        },
        "client": "Alertmanager",
        "client_url": "http://alertmanager:9093/#/alerts?receiver=pagerduty",
        "images": [{"src": "https://grafana.example.com/render/latency.png", "alt": "latency", "href": "https://grafana.example.com/d/latency"}],
        "links": [{"href": "https://runbooks.example.com/latency", "text": "Runbook"}],
    })
}

/// What Alertmanager sends when that group resolves: no payload.
fn alertmanager_resolve(routing_key: &str, dedup_key: &str) -> Value {
    json!({
        "routing_key": routing_key,
        "dedup_key": dedup_key,
        "event_action": "resolve",
        "payload": null,
        "client": "Alertmanager",
        "client_url": "http://alertmanager:9093/#/alerts?receiver=pagerduty",
    })
}

#[track_caller]
fn assert_processed(res: &Res, dedup_key: &str) {
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
    assert_json_keys(res, &["status", "message", "dedup_key"]);
    assert_eq!(
        res.body,
        json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key})
    );
    // PagerDuty's key order, which some clients' fixtures compare as text.
    assert!(res
        .text
        .starts_with(r#"{"status":"success","message":"Event processed","dedup_key":"#));
}

/// A PagerDuty error: this status, the `invalid event` shape, and an error
/// containing `needle`.
#[track_caller]
pub(crate) fn assert_invalid(res: &Res, status: StatusCode, needle: &str) {
    assert_eq!(res.status, status, "{}", res.text);
    assert_json_keys(res, &["status", "message", "errors"]);
    assert_eq!(
        res.body["message"], "Event object is invalid",
        "{}",
        res.text
    );
    assert_eq!(res.body["status"], "invalid event", "{}", res.text);
    let errors = res.body["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e.as_str().unwrap().contains(needle)),
        "an error mentions {needle:?}: {}",
        res.text
    );
}

async fn v2_trigger_dedup_acknowledge_resolve(backend: Backend) {
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    let body = alertmanager_trigger(&s.integration_key);
    let dedup = body["dedup_key"].as_str().unwrap().to_owned();

    let res = post_json(&server, "/v2/enqueue", &[], &body).await;
    assert_processed(&res, &dedup);
    let incident = only_incident(&server, &acct.token, &s.service_id).await;
    assert_eq!(incident["state"], "triggered");
    assert_eq!(incident["message"], "[FIRING:1] HighLatency (api page)");
    assert_eq!(incident["key"], dedup.as_str());
    assert_eq!(incident["current_user_id"], acct.user_id.as_str());
    let details = &incident["details"];
    assert_eq!(details["source"], "Alertmanager");
    assert_eq!(details["severity"], "critical");
    assert_eq!(details["custom_details"], body["payload"]["custom_details"]);
    assert_eq!(details["client"], "Alertmanager");
    assert_eq!(details["client_url"], body["client_url"]);
    assert_eq!(details["links"], body["links"]);
    assert_eq!(details["images"], body["images"]);
    let id = incident["id"].as_str().unwrap().to_owned();

    // The same key again: accepted, same key, nothing new, nobody paged.
    let res = post_json(&server, "/v2/enqueue", &[], &body).await;
    assert_processed(&res, &dedup);
    assert_eq!(
        incidents(&server, &acct.token, &s.service_id).await.len(),
        1
    );
    assert_eq!(
        incident_actions(&server, &acct.token, &id).await,
        ["incident.create"]
    );

    // Acknowledge: the answer carries the key (the official clients read it).
    let ack = json!({"routing_key": s.integration_key, "dedup_key": dedup, "event_action": "acknowledge"});
    let res = post_json(&server, "/v2/enqueue", &[], &ack).await;
    assert_processed(&res, &dedup);
    let got = server.get(&format!("/incidents/{id}"), &acct.token).await;
    assert_eq!(got.body["state"], "acknowledged");
    // Again: accepted, nothing changes.
    let res = post_json(&server, "/v2/enqueue", &[], &ack).await;
    assert_processed(&res, &dedup);
    // A trigger on the acknowledged incident adds nothing either.
    let res = post_json(&server, "/v2/enqueue", &[], &body).await;
    assert_processed(&res, &dedup);
    let got = server.get(&format!("/incidents/{id}"), &acct.token).await;
    assert_eq!(got.body["state"], "acknowledged");

    // Resolve as Alertmanager sends it.
    let res = post_json(
        &server,
        "/v2/enqueue",
        &[],
        &alertmanager_resolve(&s.integration_key, &dedup),
    )
    .await;
    assert_processed(&res, &dedup);
    let got = server.get(&format!("/incidents/{id}"), &acct.token).await;
    assert_eq!(got.body["state"], "resolved");
    assert_eq!(
        incident_actions(&server, &acct.token, &id).await,
        [
            "incident.resolve",
            "incident.acknowledge",
            "incident.create"
        ]
    );
    let actor = server
        .get(&format!("/incidents/{id}/events"), &acct.token)
        .await;
    assert_eq!(
        actor.body[0]["actor"],
        json!({"type": "service", "id": s.service_id})
    );

    // Acknowledge or resolve a resolved or unknown key: accepted, nothing.
    for (action, key) in [
        ("acknowledge", dedup.as_str()),
        ("resolve", dedup.as_str()),
        ("acknowledge", "never-seen"),
        ("resolve", "never-seen"),
    ] {
        let res = post_json(
            &server,
            "/v2/enqueue",
            &[],
            &json!({"routing_key": s.integration_key, "dedup_key": key, "event_action": action}),
        )
        .await;
        assert_processed(&res, key);
    }
    assert_eq!(
        incident_actions(&server, &acct.token, &id).await.len(),
        3,
        "nothing written"
    );

    // After resolution the key opens a new incident.
    let res = post_json(&server, "/v2/enqueue", &[], &body).await;
    assert_processed(&res, &dedup);
    assert_eq!(
        incidents(&server, &acct.token, &s.service_id).await.len(),
        2
    );
}

async fn v2_triggers_without_a_key_get_one(backend: Backend) {
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    // The minimal event of PagerDuty's documentation.
    let body = json!({
        "routing_key": s.integration_key,
        "event_action": "trigger",
        "payload": {"summary": "Example alert on host1.example.com", "source": "monitoringtool:cloudvendor:central-region-dc-01:852559987:cluster/api-stats-prod-003", "severity": "info"},
    });
    let first = post_json(&server, "/v2/enqueue", &[], &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let key = first.str("dedup_key");
    assert_eq!(key.len(), 32);
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    // Without a key, the same summary is a new alert (PagerDuty does not
    // deduplicate on the summary).
    let second = post_json(&server, "/v2/enqueue", &[], &body).await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.text);
    assert_ne!(second.str("dedup_key"), key);
    let all = incidents(&server, &acct.token, &s.service_id).await;
    assert_eq!(all.len(), 2);
    // The generated key works for acknowledge.
    let res = post_json(
        &server,
        "/v2/enqueue",
        &[],
        &json!({"routing_key": s.integration_key, "dedup_key": key, "event_action": "acknowledge"}),
    )
    .await;
    assert_processed(&res, &key);
    let states: Vec<(String, String)> = incidents(&server, &acct.token, &s.service_id)
        .await
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().into(),
                i["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(states.contains(&(key, "acknowledged".into())), "{states:?}");

    // A summary of 1024 characters, longer than a message in bytes: the
    // message is cut on a character boundary and the whole summary kept
    // as the description.
    let summary = "é".repeat(1024);
    let res = post_json(
        &server,
        "/v2/enqueue",
        &[],
        &json!({
            "routing_key": s.integration_key, "event_action": "trigger", "dedup_key": "long",
            "payload": {"summary": summary, "source": "s", "severity": "error"},
        }),
    )
    .await;
    assert_processed(&res, "long");
    let long = incidents(&server, &acct.token, &s.service_id)
        .await
        .into_iter()
        .find(|i| i["key"] == "long")
        .unwrap();
    assert_eq!(long["message"].as_str().unwrap(), "é".repeat(512));
    assert_eq!(long["description"].as_str().unwrap(), summary);
}

async fn v2_errors_in_pagerdutys_shape(backend: Backend) {
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    let key = s.integration_key.as_str();
    let trigger = |payload: Value| json!({"routing_key": key, "event_action": "trigger", "dedup_key": "k", "payload": payload});
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "'routing_key' is missing or blank"),
        (
            json!({"routing_key": key}),
            "'event_action' is missing or blank",
        ),
        (
            json!({"routing_key": key, "event_action": "explode"}),
            "'event_action' is invalid",
        ),
        (
            json!({"routing_key": key, "event_action": "trigger"}),
            "'payload' is missing or blank",
        ),
        (trigger(json!({})), "'payload.summary' is missing or blank"),
        (
            trigger(json!({"summary": "s", "severity": "info"})),
            "'payload.source' is missing or blank",
        ),
        (
            trigger(json!({"summary": "s", "source": "h", "severity": "fatal"})),
            "'payload.severity' is invalid",
        ),
        (
            trigger(json!({"summary": "x".repeat(1025), "source": "h", "severity": "info"})),
            "'payload.summary' is too long",
        ),
        (trigger(json!("text")), "'payload' must be an object"),
        (
            trigger(json!({"summary": 5, "source": "h", "severity": "info"})),
            "'payload.summary' must be a string",
        ),
        (
            json!({"routing_key": key, "event_action": "resolve"}),
            "'dedup_key' is missing or blank",
        ),
        (
            json!({"routing_key": key, "event_action": "resolve", "dedup_key": "k".repeat(256)}),
            "'dedup_key' is too long",
        ),
        (
            json!({"routing_key": key, "event_action": "resolve", "dedup_key": ["k"]}),
            "'dedup_key' must be a string",
        ),
        (
            trigger(json!({"summary": "a\u{0}b", "source": "h", "severity": "info"})),
            "'payload.summary' must not contain control characters",
        ),
        (
            json!({"routing_key": "not-a-key-of-any-service-000000", "event_action": "resolve", "dedup_key": "k"}),
            "Invalid routing key",
        ),
        (
            json!({"routing_key": "k".repeat(10_000), "event_action": "resolve", "dedup_key": "k"}),
            "Invalid routing key",
        ),
        (json!([1, 2]), "Event must be a JSON object"),
        (json!(null), "Event must be a JSON object"),
    ];
    for (body, needle) in cases {
        let res = post_json(&server, "/v2/enqueue", &[], &body).await;
        assert_invalid(&res, StatusCode::BAD_REQUEST, needle);
    }
    for raw in [
        &b"{"[..],
        b"",
        b"routing_key=abc",
        b"\xff\xfe",
        br#"{"a":"\ud800"}"#,
    ] {
        let res = post_raw(
            &server,
            "/v2/enqueue",
            &[],
            "application/json",
            raw.to_vec(),
        )
        .await;
        assert_invalid(&res, StatusCode::BAD_REQUEST, "malformed JSON");
    }
    // Over PagerDuty's 512 KiB: 413 in the same shape.
    let mut big = trigger(json!({"summary": "s", "source": "h", "severity": "info"}));
    big["payload"]["custom_details"] = json!({"blob": "x".repeat(520 * 1024)});
    let res = post_json(&server, "/v2/enqueue", &[], &big).await;
    assert_invalid(&res, StatusCode::PAYLOAD_TOO_LARGE, "limit");
    // Just under it is accepted; the details are cut to fit, not refused.
    big["payload"]["custom_details"] = json!({"blob": "x".repeat(500 * 1024)});
    let res = post_json(&server, "/v2/enqueue", &[], &big).await;
    assert_processed(&res, "k");
    let incident = only_incident(&server, &acct.token, &s.service_id).await;
    assert_eq!(incident["details"]["truncated"], json!(["custom_details"]));
    assert!(serde_json::to_vec(&incident["details"]).unwrap().len() <= 64 * 1024);
    // JSON whatever the content type says (`curl -d` says form).
    let body = trigger(json!({"summary": "curl", "source": "h", "severity": "info"}));
    let mut body = body;
    body["dedup_key"] = json!("curl");
    let res = post_raw(
        &server,
        "/v2/enqueue",
        &[],
        "application/x-www-form-urlencoded",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_processed(&res, "curl");
    assert_eq!(
        incidents(&server, &acct.token, &s.service_id).await.len(),
        2
    );
    // GET is not the Events API.
    let res = server.call(Method::GET, "/v2/enqueue", None, None).await;
    res.assert_error(StatusCode::METHOD_NOT_ALLOWED);
}

async fn v2_disabled_services_and_change_events(backend: Backend) {
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    let res = server
        .call(
            Method::PUT,
            &format!("/services/{}/disable", s.service_id),
            Some(&acct.token),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = post_json(
        &server,
        "/v2/enqueue",
        &[],
        &alertmanager_trigger(&s.integration_key),
    )
    .await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.text);
    assert_json_keys(&res, &["status", "message", "errors"]);
    assert_eq!(res.body["status"], "service disabled");
    assert!(res.body["errors"][0].as_str().unwrap().contains("disabled"));
    assert!(incidents(&server, &acct.token, &s.service_id)
        .await
        .is_empty());

    // A change event is recorded on the service, pages nobody, and is
    // accepted on a disabled service too (it opens nothing). The body of
    // PagerDuty's documentation.
    let change = json!({
        "routing_key": s.integration_key,
        "payload": {
            "summary": "Build Success: Increase snapshot create timeout to 30 seconds",
            "timestamp": "2020-07-17T08:42:58.315+0000",
            "source": "acme-build-pipeline-tool-default-i-9999",
            "custom_details": {"build_state": "passed", "build_number": "2", "run_time": "1236s"},
        },
        "links": [{"href": "https://acme.pagerduty.dev/build/2", "text": "View more details in Acme!"}],
    });
    let res = post_json(&server, "/v2/change/enqueue", &[], &change).await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
    assert_eq!(
        res.body,
        json!({"status": "success", "message": "Change event processed"})
    );
    let events = server
        .get(&format!("/services/{}/events", s.service_id), &acct.token)
        .await;
    let recorded = &events.body[0];
    assert_eq!(
        recorded["action"], "service.change_event",
        "{}",
        events.text
    );
    assert_eq!(
        recorded["actor"],
        json!({"type": "service", "id": s.service_id})
    );
    assert_eq!(
        recorded["changeset"]["summary"],
        change["payload"]["summary"]
    );
    assert_eq!(recorded["changeset"]["source"], change["payload"]["source"]);
    assert_eq!(
        recorded["changeset"]["custom_details"],
        change["payload"]["custom_details"]
    );
    assert_eq!(recorded["changeset"]["links"], change["links"]);
    assert!(incidents(&server, &acct.token, &s.service_id)
        .await
        .is_empty());
    // Change event errors.
    for (body, needle) in [
        (
            json!({"routing_key": s.integration_key}),
            "'payload' is missing or blank",
        ),
        (
            json!({"routing_key": s.integration_key, "payload": {}}),
            "'payload.summary' is missing or blank",
        ),
        (
            json!({"routing_key": "nobody", "payload": {"summary": "x"}}),
            "Invalid routing key",
        ),
        (
            json!({"payload": {"summary": "x"}}),
            "'routing_key' is missing or blank",
        ),
    ] {
        let res = post_json(&server, "/v2/change/enqueue", &[], &body).await;
        assert_invalid(&res, StatusCode::BAD_REQUEST, needle);
    }
    let res = post_raw(
        &server,
        "/v2/change/enqueue",
        &[],
        "application/json",
        b"[".to_vec(),
    )
    .await;
    assert_invalid(&res, StatusCode::BAD_REQUEST, "malformed JSON");
}

async fn v1_create_event(backend: Backend) {
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    let path = "/generic/2010-04-15/create_event.json";
    // The trigger of PagerDuty's v1 documentation.
    let trigger = json!({
        "service_key": s.integration_key,
        "event_type": "trigger",
        "incident_key": "srv01/HTTP",
        "description": "FAILURE for production/HTTP on machine srv01.acme.com",
        "client": "Sample Monitoring Service",
        "client_url": "https://monitoring.service.com",
        "details": {"ping time": "1500ms", "load avg": 0.75},
    });
    for _ in 0..2 {
        let res = post_json(&server, path, &[], &trigger).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        assert_eq!(
            res.body,
            json!({"status": "success", "message": "Event processed", "incident_key": "srv01/HTTP"})
        );
    }
    let incident = only_incident(&server, &acct.token, &s.service_id).await;
    assert_eq!(
        incident["message"],
        "FAILURE for production/HTTP on machine srv01.acme.com"
    );
    assert_eq!(incident["key"], "srv01/HTTP");
    assert_eq!(
        incident["details"],
        json!({
            "details": {"ping time": "1500ms", "load avg": 0.75},
            "client": "Sample Monitoring Service",
            "client_url": "https://monitoring.service.com",
        })
    );
    let id = incident["id"].as_str().unwrap().to_owned();
    for (event_type, state) in [("acknowledge", "acknowledged"), ("resolve", "resolved")] {
        let res = post_json(
            &server,
            path,
            &[],
            &json!({"service_key": s.integration_key, "event_type": event_type, "incident_key": "srv01/HTTP"}),
        )
        .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        assert_eq!(res.body["incident_key"], "srv01/HTTP");
        let got = server.get(&format!("/incidents/{id}"), &acct.token).await;
        assert_eq!(got.body["state"], state);
    }
    // Without an incident key a trigger gets one.
    let res = post_json(
        &server,
        path,
        &[],
        &json!({"service_key": s.integration_key, "event_type": "trigger", "description": "no key"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.str("incident_key").len(), 32);
    for (body, needle) in [
        (
            json!({"service_key": s.integration_key, "event_type": "trigger"}),
            "'description' is missing or blank",
        ),
        (
            json!({"service_key": s.integration_key, "event_type": "resolve"}),
            "'incident_key' is missing or blank",
        ),
        (
            json!({"service_key": s.integration_key, "event_type": "page"}),
            "'event_type' is invalid",
        ),
        (
            json!({"service_key": "wrong", "event_type": "trigger", "description": "x"}),
            "Invalid routing key",
        ),
    ] {
        let res = post_json(&server, path, &[], &body).await;
        assert_invalid(&res, StatusCode::BAD_REQUEST, needle);
    }
}

crate::both_backends!(
    v2_trigger_dedup_acknowledge_resolve,
    v2_triggers_without_a_key_get_one,
    v2_errors_in_pagerdutys_shape,
    v2_disabled_services_and_change_events,
    v1_create_event,
);
