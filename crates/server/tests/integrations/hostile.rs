//! What the integration endpoints must withstand: alert storms over a key's
//! rate, keys of another account, and hostile bodies.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::common::{Backend, Server};
use super::opsgenie::assert_og_error;
use super::pagerduty::assert_invalid;
use super::{
    account_with_service, another_service, assert_json_keys, incident_actions, incidents,
    only_incident, post_json, post_raw,
};

fn pd_trigger(key: &str, dedup: &str) -> Value {
    json!({
        "routing_key": key, "event_action": "trigger", "dedup_key": dedup,
        "payload": {"summary": "s", "source": "h", "severity": "info"},
    })
}

async fn over_the_rate_is_429_in_each_shape(backend: Backend) {
    // Three events per minute per key, with a burst of three.
    let server = Server::start_with(backend, &[("KLAXON_INTEGRATION_RATE", "3")]).await;
    let (acct, pd) = account_with_service(&server, "Acme").await;
    let og = another_service(&server, &acct, "Opsgenie").await;
    let am = another_service(&server, &acct, "Alertmanager").await;

    for i in 0..3 {
        let res = post_json(
            &server,
            "/v2/enqueue",
            &[],
            &pd_trigger(&pd.integration_key, "k"),
        )
        .await;
        assert_eq!(res.status, StatusCode::ACCEPTED, "event {i}: {}", res.text);
    }
    let res = post_json(
        &server,
        "/v2/enqueue",
        &[],
        &pd_trigger(&pd.integration_key, "k"),
    )
    .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.text);
    assert_json_keys(&res, &["status", "message", "errors"]);
    assert_eq!(res.body["status"], "throttle exceeded");
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    // Every API on that key shares its bucket; other keys have their own.
    let res = post_json(
        &server,
        "/v2/change/enqueue",
        &[],
        &json!({"routing_key": pd.integration_key, "payload": {"summary": "deploy"}}),
    )
    .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.text);
    // A malformed event is refused before it counts.
    let res = post_json(
        &server,
        "/v2/enqueue",
        &[],
        &json!({"routing_key": pd.integration_key}),
    )
    .await;
    assert_invalid(&res, StatusCode::BAD_REQUEST, "event_action");

    let genie = format!("GenieKey {}", og.integration_key);
    for i in 0..3 {
        let res = post_json(
            &server,
            "/v2/alerts",
            &[("Authorization", &genie)],
            &json!({"message": format!("m{i}")}),
        )
        .await;
        assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
    }
    let res = post_json(
        &server,
        "/v2/alerts",
        &[("Authorization", &genie)],
        &json!({"message": "m"}),
    )
    .await;
    assert_og_error(&res, StatusCode::TOO_MANY_REQUESTS, None);
    assert!(res.header("retry-after").is_some());

    let bearer = format!("Bearer {}", am.integration_key);
    let group = |n: usize| {
        json!({
            "version": "4", "groupKey": format!("g{n}"), "status": "firing", "receiver": "r",
            "alerts": [], "commonLabels": {"alertname": "A"},
        })
    };
    for n in 0..3 {
        let res = post_json(
            &server,
            "/integrations/alertmanager",
            &[("Authorization", &bearer)],
            &group(n),
        )
        .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    }
    let res = post_json(
        &server,
        "/integrations/alertmanager",
        &[("Authorization", &bearer)],
        &group(9),
    )
    .await;
    res.assert_error(StatusCode::TOO_MANY_REQUESTS);
    assert!(res.header("retry-after").is_some());

    // What was let through was processed; what was refused was not.
    assert_eq!(
        incidents(&server, &acct.token, &pd.service_id).await.len(),
        1
    );
    assert_eq!(
        incidents(&server, &acct.token, &og.service_id).await.len(),
        3
    );
    assert_eq!(
        incidents(&server, &acct.token, &am.service_id).await.len(),
        3
    );
    let events = server
        .get(&format!("/services/{}/events", pd.service_id), &acct.token)
        .await;
    assert!(
        events
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "service.change_event"),
        "{}",
        events.text
    );
    // The native API has no such limit.
    let res = server
        .integration("trigger", &pd.integration_key, &[("message", "native")])
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
}

async fn another_accounts_incidents_stay_out_of_reach(backend: Backend) {
    let server = Server::start(backend).await;
    let (a, a_svc) = account_with_service(&server, "Acme").await;
    let (b, b_svc) = account_with_service(&server, "Globex").await;
    let key_a = a_svc.integration_key.as_str();

    // B's incidents, one through each API.
    let res = post_json(
        &server,
        "/v2/enqueue",
        &[],
        &pd_trigger(&b_svc.integration_key, "shared"),
    )
    .await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
    let res = post_json(
        &server,
        "/v2/alerts",
        &[(
            "Authorization",
            &format!("GenieKey {}", b_svc.integration_key),
        )],
        &json!({"message": "b alert", "alias": "b-alias"}),
    )
    .await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
    let b_group = json!({"version": "4", "groupKey": "b-group", "status": "firing", "alerts": [], "commonLabels": {"alertname": "B"}});
    let res = post_json(
        &server,
        &format!("/integrations/alertmanager?key={}", b_svc.integration_key),
        &[],
        &b_group,
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let b_incidents = incidents(&server, &b.token, &b_svc.service_id).await;
    assert_eq!(b_incidents.len(), 3);

    // A's key, B's keys, aliases, ids and groups: accepted, and nothing
    // of B's moves.
    for action in ["acknowledge", "resolve"] {
        let res = post_json(
            &server,
            "/v2/enqueue",
            &[],
            &json!({"routing_key": key_a, "dedup_key": "shared", "event_action": action}),
        )
        .await;
        assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text);
    }
    let genie_a = format!("GenieKey {key_a}");
    for path in [
        "/v2/alerts/b-alias/close?identifierType=alias".to_owned(),
        "/v2/alerts/b-alias/acknowledge?identifierType=alias".to_owned(),
    ]
    .into_iter()
    .chain(
        b_incidents
            .iter()
            .map(|i| format!("/v2/alerts/{}/close", i["id"].as_str().unwrap())),
    ) {
        let res = post_json(&server, &path, &[("Authorization", &genie_a)], &json!({})).await;
        assert_eq!(res.status, StatusCode::ACCEPTED, "{path}: {}", res.text);
    }
    let mut resolved = b_group.clone();
    resolved["status"] = json!("resolved");
    let res = post_json(
        &server,
        &format!("/integrations/alertmanager?key={key_a}"),
        &[],
        &resolved,
    )
    .await;
    assert_eq!(res.body["outcome"], "not_open", "{}", res.text);
    for incident in incidents(&server, &b.token, &b_svc.service_id).await {
        assert_eq!(incident["state"], "triggered", "{incident}");
        let id = incident["id"].as_str().unwrap();
        assert_eq!(
            incident_actions(&server, &b.token, id).await,
            ["incident.create"]
        );
        // Nor can A's user see it.
        server
            .get(&format!("/incidents/{id}"), &a.token)
            .await
            .assert_error(StatusCode::NOT_FOUND);
    }
    // A trigger with B's dedup key opens A's own incident.
    let res = post_json(&server, "/v2/enqueue", &[], &pd_trigger(key_a, "shared")).await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let mine = only_incident(&server, &a.token, &a_svc.service_id).await;
    assert_eq!(mine["key"], "shared");
    assert_eq!(
        incidents(&server, &b.token, &b_svc.service_id).await.len(),
        3
    );
}

async fn hostile_bodies_get_4xx(backend: Backend) {
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    let key = s.integration_key.as_str();
    let genie = format!("GenieKey {key}");
    let bearer = format!("Bearer {key}");
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!(
        "{{\"routing_key\":\"{key}\",\"event_action\":\"trigger\",\"payload\":{}}}",
        format_args!("{}{{}}{}", "{\"a\":".repeat(200), "}".repeat(200))
    );
    let bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\0\0\0\0".to_vec(),
        b"null".to_vec(),
        b"17".to_vec(),
        b"\"text\"".to_vec(),
        b"[]".to_vec(),
        b"{\"a\":1,}".to_vec(),
        deep.into_bytes(),
        deep_object.into_bytes(),
        br#"{"routing_key":"\u0000","event_action":"trigger"}"#.to_vec(),
        format!(r#"{{"routing_key":"{key}","event_action":"trigger","dedup_key":"a\u0000b","payload":{{"summary":"s","source":"h","severity":"info"}}}}"#).into_bytes(),
        format!(r#"{{"routing_key":"{key}","event_action":"trigger","payload":{{"summary":"s","source":"h","severity":"info","custom_details":{{"\u0000":1}}}}}}"#).into_bytes(),
        format!(r#"{{"routing_key":"{key}","event_action":["trigger"],"payload":1}}"#).into_bytes(),
        format!(r#"{{"routing_key":"{key}","event_action":"trigger","payload":{{"summary":{{}},"source":[],"severity":7}}}}"#).into_bytes(),
        format!(r#"{{"routing_key":"{key}","event_action":"trigger","payload":{{"summary":"{}","source":"h","severity":"info"}}}}"#, "s".repeat(100_000)).into_bytes(),
        format!(r#"{{"routing_key":"{key}","event_action":"resolve","dedup_key":"{}"}}"#, "d".repeat(100_000)).into_bytes(),
        format!(r#"{{"message":"\ud800","groupKey":"g","status":"firing","routing_key":"{key}"}}"#).into_bytes(),
        br#"{"message":{},"alias":[],"groupKey":5,"status":true,"alerts":"x"}"#.to_vec(),
        br#"{"message":"m\u001b","groupKey":"g\u0000","status":"firing","alerts":[{"labels":{"\u0000":"x"}}]}"#.to_vec(),
        format!(r#"{{"message":"{}","groupKey":"g","status":"firing","alerts":{{}}}}"#, "m".repeat(200_000)).into_bytes(),
        vec![0xff; 64],
    ];
    let paths: [(&str, Vec<(&str, &str)>); 6] = [
        ("/v2/enqueue", vec![]),
        ("/v2/change/enqueue", vec![]),
        ("/generic/2010-04-15/create_event.json", vec![]),
        ("/v2/alerts", vec![("Authorization", genie.as_str())]),
        (
            "/v2/alerts/x/close?identifierType=alias",
            vec![("Authorization", genie.as_str())],
        ),
        (
            "/integrations/alertmanager",
            vec![("Authorization", bearer.as_str())],
        ),
    ];
    for (path, headers) in &paths {
        for body in &bodies {
            for content_type in ["application/json", "text/plain"] {
                let res = post_raw(&server, path, headers, content_type, body.clone()).await;
                let what = format!(
                    "{path} {content_type} {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(80)])
                );
                // Some are valid for some endpoints (an empty close body).
                assert!(
                    res.status.is_client_error() || res.status.is_success(),
                    "{what}: {} {}",
                    res.status,
                    res.text
                );
                assert!(
                    res.body.is_object(),
                    "{what}: JSON object answer: {}",
                    res.text
                );
            }
        }
    }
    // Nothing hostile opened anything.
    assert!(incidents(&server, &acct.token, &s.service_id)
        .await
        .is_empty());
}

crate::both_backends!(
    over_the_rate_is_429_in_each_shape,
    another_accounts_incidents_stay_out_of_reach,
    hostile_bodies_get_4xx,
);
