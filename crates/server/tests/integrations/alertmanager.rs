//! Alertmanager's webhook receiver, `POST /integrations/alertmanager`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::common::{Backend, Server};
use super::{
    account_with_service, incident_actions, incidents, only_incident, post_json, post_raw,
};

/// An alert as Alertmanager's webhook lists it.
fn alert(instance: &str, status: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": "HighLatency", "instance": instance, "job": "api", "severity": "page"},
        "annotations": {"summary": "API latency is high", "description": format!("p99 over 1s on {instance}\nsince 09:00")},
        "startsAt": "2026-01-05T09:00:00.000Z",
        "endsAt": if status == "resolved" { "2026-01-05T09:30:00.000Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus:9090/graph?g0.expr=latency%3E1&g0.tab=1",
        "fingerprint": format!("fp-{instance}"),
    })
}

/// Alertmanager's webhook body (version 4) for a group of alerts.
fn notification(group_key: &str, status: &str, alerts: Vec<Value>) -> Value {
    json!({
        "receiver": "klaxon",
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency", "job": "api", "severity": "page"},
        "commonAnnotations": {"summary": "API latency is high"},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
    })
}

const GROUP: &str = "{}/{severity=\"page\"}:{alertname=\"HighLatency\"}";

async fn firing_groups_open_grow_and_resolve(backend: Backend) {
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    let bearer = format!("Bearer {}", s.integration_key);
    let h = [("Authorization", bearer.as_str())];

    let one = notification(GROUP, "firing", vec![alert("web1", "firing")]);
    let res = post_json(&server, "/integrations/alertmanager", &h, &one).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["status"], "success");
    assert_eq!(res.body["outcome"], "opened");
    let incident = only_incident(&server, &acct.token, &s.service_id).await;
    let id = incident["id"].as_str().unwrap().to_owned();
    assert_eq!(res.body["incident_id"], id.as_str());
    assert_eq!(incident["message"], "API latency is high");
    assert_eq!(incident["key"], GROUP);
    let details = &incident["details"];
    assert_eq!(details["alert_count"], 1);
    assert_eq!(details["groupKey"], GROUP);
    assert_eq!(details["externalURL"], "http://alertmanager:9093");
    assert_eq!(details["commonLabels"], one["commonLabels"]);
    assert_eq!(details["commonAnnotations"], one["commonAnnotations"]);
    assert_eq!(details["groupLabels"], one["groupLabels"]);
    assert_eq!(details["alerts"], one["alerts"]);

    // The same group again (Alertmanager repeats it): nothing new.
    let res = post_json(&server, "/integrations/alertmanager", &h, &one).await;
    assert_eq!(res.body["outcome"], "deduplicated", "{}", res.text);
    assert_eq!(
        incident_actions(&server, &acct.token, &id).await,
        ["incident.create"]
    );

    // The group grows: the details follow and the timeline says so, once.
    let two = notification(
        GROUP,
        "firing",
        vec![alert("web1", "firing"), alert("web2", "firing")],
    );
    let res = post_json(&server, "/integrations/alertmanager", &h, &two).await;
    assert_eq!(res.body["outcome"], "updated", "{}", res.text);
    let res = post_json(&server, "/integrations/alertmanager", &h, &two).await;
    assert_eq!(res.body["outcome"], "deduplicated", "{}", res.text);
    let got = server.get(&format!("/incidents/{id}"), &acct.token).await;
    assert_eq!(got.body["details"]["alert_count"], 2);
    assert_eq!(got.body["details"]["alerts"], two["alerts"]);
    assert_eq!(got.body["state"], "triggered");
    let events = server
        .get(&format!("/incidents/{id}/events"), &acct.token)
        .await;
    assert_eq!(events.body[0]["action"], "incident.update");
    assert_eq!(events.body[0]["changeset"], json!({"alert_count": [1, 2]}));
    assert_eq!(
        events.body[0]["actor"],
        json!({"type": "service", "id": s.service_id})
    );
    assert_eq!(events.body.as_array().unwrap().len(), 2);
    // One of them resolves while the group still fires: not growth.
    let shrunk = notification(
        GROUP,
        "firing",
        vec![alert("web1", "firing"), alert("web2", "resolved")],
    );
    let res = post_json(&server, "/integrations/alertmanager", &h, &shrunk).await;
    assert_eq!(res.body["outcome"], "deduplicated", "{}", res.text);

    // The key may come in the query string instead.
    let resolved = notification(GROUP, "resolved", vec![alert("web1", "resolved")]);
    let path = format!("/integrations/alertmanager?key={}", s.integration_key);
    let res = post_json(&server, &path, &[], &resolved).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.body["outcome"], "resolved");
    let got = server.get(&format!("/incidents/{id}"), &acct.token).await;
    assert_eq!(got.body["state"], "resolved");
    // Resolved again, or a group never seen: fine, nothing happens.
    let res = post_json(&server, &path, &[], &resolved).await;
    assert_eq!(res.body["outcome"], "not_open", "{}", res.text);
    let unknown = notification("{}:{alertname=\"Other\"}", "resolved", vec![]);
    let res = post_json(&server, &path, &[], &unknown).await;
    assert_eq!(res.body["outcome"], "not_open", "{}", res.text);
    assert_eq!(incident_actions(&server, &acct.token, &id).await.len(), 3);

    // A group key too long for a key is hashed, the same way each time.
    let long_group = format!("{{}}:{{{}}}", "cluster=\"eu-west-1\",".repeat(30));
    let mut long = notification(&long_group, "firing", vec![alert("db1", "firing")]);
    long["commonAnnotations"] = json!({});
    long["groupLabels"] = json!({"alertname": "HighLatency", "cluster": "eu-west-1"});
    let res = post_json(&server, "/integrations/alertmanager", &h, &long).await;
    assert_eq!(res.body["outcome"], "opened", "{}", res.text);
    let key = res.body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sha256:") && key.len() == 71, "{key}");
    let long_id = res.body["incident_id"].as_str().unwrap().to_owned();
    let got = server
        .get(&format!("/incidents/{long_id}"), &acct.token)
        .await;
    assert_eq!(got.body["message"], "HighLatency (cluster=eu-west-1)");
    assert_eq!(got.body["details"]["groupKey"], long_group.as_str());
    let res = post_json(
        &server,
        "/integrations/alertmanager",
        &h,
        &notification(&long_group, "resolved", vec![]),
    )
    .await;
    assert_eq!(res.body["outcome"], "resolved", "{}", res.text);
    assert_eq!(
        incidents(&server, &acct.token, &s.service_id).await.len(),
        2
    );
}

async fn webhook_errors(backend: Backend) {
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    let bearer = format!("Bearer {}", s.integration_key);
    let h = [("Authorization", bearer.as_str())];
    let ok = notification(GROUP, "firing", vec![alert("web1", "firing")]);

    for (path, headers) in [
        ("/integrations/alertmanager", vec![]),
        ("/integrations/alertmanager?key=wrong", vec![]),
        (
            "/integrations/alertmanager",
            vec![("Authorization", "Bearer wrong")],
        ),
        ("/integrations/alertmanager?key=%00", vec![]),
    ] {
        let res = post_json(&server, path, &headers, &ok).await;
        res.assert_error(StatusCode::UNAUTHORIZED);
    }
    // A user token is not an integration key.
    let token = format!("Bearer {}", acct.token);
    let res = post_json(
        &server,
        "/integrations/alertmanager",
        &[("Authorization", &token)],
        &ok,
    )
    .await;
    res.assert_error(StatusCode::UNAUTHORIZED);

    for raw in [&b"{"[..], b"", b"\xff", b"status=firing"] {
        let res = post_raw(
            &server,
            "/integrations/alertmanager",
            &h,
            "application/json",
            raw.to_vec(),
        )
        .await;
        res.assert_error(StatusCode::BAD_REQUEST);
    }
    let mut bad_version = ok.clone();
    bad_version["version"] = json!("3");
    let mut nul = ok.clone();
    nul["alerts"][0]["annotations"]["summary"] = json!("a\u{0}b");
    let mut no_key = ok.clone();
    no_key["groupKey"] = json!("");
    let mut bad_alerts = ok.clone();
    bad_alerts["alerts"] = json!([1, 2]);
    for (body, field) in [
        (bad_version, "version"),
        (nul, "alerts[0].annotations.summary"),
        (no_key, "groupKey"),
        (bad_alerts, "alerts"),
        (json!({"groupKey": "g", "status": "pending"}), "status"),
        (
            json!({"groupKey": "g", "status": "firing", "commonLabels": []}),
            "commonLabels",
        ),
        (json!("firing"), "base"),
    ] {
        let res = post_json(&server, "/integrations/alertmanager", &h, &body).await;
        res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            res.body["errors"].get(field).is_some(),
            "{field} named: {}",
            res.text
        );
    }
    let huge = format!(
        "{{\"groupKey\":\"g\",\"status\":\"firing\",\"x\":\"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    let res = post_raw(
        &server,
        "/integrations/alertmanager",
        &h,
        "application/json",
        huge.into_bytes(),
    )
    .await;
    res.assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(incidents(&server, &acct.token, &s.service_id)
        .await
        .is_empty());

    // A group of many alerts, over the details limit: opened, details cut.
    let many: Vec<Value> = (0..1000)
        .map(|i| alert(&format!("web{i}"), "firing"))
        .collect();
    let res = post_json(
        &server,
        "/integrations/alertmanager",
        &h,
        &notification("{}:{alertname=\"Many\"}", "firing", many),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let incident = only_incident(&server, &acct.token, &s.service_id).await;
    assert_eq!(incident["details"]["alert_count"], 1000);
    assert_eq!(incident["details"]["truncated"], json!(["alerts"]));
    let kept = incident["details"]["alerts"].as_array().unwrap().len();
    assert!((1..1000).contains(&kept), "{kept}");

    // A disabled service: 409, nothing opened.
    let res = server
        .call(
            reqwest::Method::PUT,
            &format!("/services/{}/disable", s.service_id),
            Some(&acct.token),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = post_json(&server, "/integrations/alertmanager", &h, &ok).await;
    res.assert_error(StatusCode::CONFLICT);
    assert_eq!(
        incidents(&server, &acct.token, &s.service_id).await.len(),
        1
    );
}

crate::both_backends!(firing_groups_open_grow_and_resolve, webhook_errors);
