//! The integration API (`PUT /trigger|/acknowledge|/resolve` with a
//! service's integration key): every row of the specification's table,
//! deduplication under concurrency, and what the key may not do.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn every_row_of_the_table(backend: Backend) {
    let server = Server::start(backend).await;
    let acct = server.register("Acme").await;
    let s = server
        .setup_service(&acct, "Web", &[&acct.user_id], 1)
        .await;
    let key = s.integration_key.as_str();

    // New message, no key → 201 with the incident.
    let res = server
        .integration("trigger", key, &[("message", "disk full")])
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.body["message"], "disk full");
    assert_eq!(res.body["service_id"], s.service_id.as_str());
    assert!(res.header("location").unwrap().starts_with("/incidents/"));
    // No key, message of an unresolved incident → 304, nothing new.
    let res = server
        .integration("trigger", key, &[("message", "disk full")])
        .await;
    assert_eq!(res.status, StatusCode::NOT_MODIFIED);
    assert!(res.text.is_empty());
    assert_eq!(count(&server, &acct.token, &s.service_id).await, 1);
    // New key → 201.
    let res = server
        .integration(
            "trigger",
            key,
            &[("message", "cpu hot"), ("key", "host1/cpu")],
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(res.body["key"], "host1/cpu");
    // Key of an unresolved incident → 304 (even with another message).
    let res = server
        .integration(
            "trigger",
            key,
            &[("message", "cpu still hot"), ("key", "host1/cpu")],
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_MODIFIED);
    // Existing message but new key → 201.
    let res = server
        .integration(
            "trigger",
            key,
            &[("message", "disk full"), ("key", "host2/disk")],
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(count(&server, &acct.token, &s.service_id).await, 3);
    // Without message → 422.
    let res = server.integration("trigger", key, &[("key", "k")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.body, json!({"errors": {"message": ["can't be blank"]}}));

    // Acknowledge by key, triggered → 204; again → 304.
    let res = server
        .integration("acknowledge", key, &[("key", "host1/cpu")])
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = server
        .integration("acknowledge", key, &[("key", "host1/cpu")])
        .await;
    assert_eq!(res.status, StatusCode::NOT_MODIFIED);
    // Acknowledge by message → 204.
    let res = server
        .integration("acknowledge", key, &[("message", "cpu hot")])
        .await;
    assert_eq!(
        res.status,
        StatusCode::NOT_MODIFIED,
        "by message finds the acknowledged one"
    );
    let res = server
        .integration("acknowledge", key, &[("message", "disk full")])
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    // Resolve triggered (host2/disk) and acknowledged (host1/cpu) → 204.
    let res = server
        .integration("resolve", key, &[("key", "host2/disk")])
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = server
        .integration("resolve", key, &[("key", "host1/cpu")])
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    // Acknowledge or resolve a resolved or unknown incident → 404.
    for action in ["acknowledge", "resolve"] {
        for fields in [[("key", "host1/cpu")], [("key", "never-seen")]] {
            let res = server.integration(action, key, &fields).await;
            res.assert_error(StatusCode::NOT_FOUND);
        }
    }
    // After resolution the same key opens a new incident.
    let res = server
        .integration(
            "trigger",
            key,
            &[("message", "cpu hot again"), ("key", "host1/cpu")],
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    // Neither key nor message → 422.
    let res = server.integration("resolve", key, &[]).await;
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);

    // Events name the service as the actor.
    let id = res_id(&server, &acct.token, &s.service_id, "host1/cpu").await;
    let events = server
        .get(&format!("/incidents/{id}/events"), &acct.token)
        .await;
    assert_eq!(
        events.body[0]["actor"],
        json!({"type": "service", "id": s.service_id})
    );
    assert_eq!(events.body[0]["action"], "incident.create");
}

async fn count(server: &Server, token: &str, service_id: &str) -> usize {
    let path = format!("/services/{service_id}/incidents?per_page=100");
    server
        .get(&path, token)
        .await
        .body
        .as_array()
        .unwrap()
        .len()
}

async fn res_id(server: &Server, token: &str, service_id: &str, key: &str) -> String {
    let list = server
        .get(
            &format!("/services/{service_id}/incidents?state=triggered"),
            token,
        )
        .await;
    list.body
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == key)
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .unwrap()
}

async fn json_bodies_work_too(backend: Backend) {
    let server = Server::start(backend).await;
    let acct = server.register("Acme").await;
    let s = server
        .setup_service(&acct, "Web", &[&acct.user_id], 1)
        .await;
    let res = server
        .http
        .put(format!("{}/trigger", server.base))
        .header("Authorization", format!("Bearer {}", s.integration_key))
        .json(&json!({"message": "m", "key": "k", "details": {"host": "db1", "value": 97}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["details"], json!({"host": "db1", "value": 97}));
}

async fn concurrent_triggers_open_one_incident(backend: Backend) {
    let server = Server::start(backend).await;
    let acct = server.register("Acme").await;
    let s = server
        .setup_service(&acct, "Web", &[&acct.user_id], 1)
        .await;
    for fields in [
        vec![("message", "flapping"), ("key", "same-key")],
        vec![("message", "same message")],
    ] {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let http = server.http.clone();
            let url = format!("{}/trigger", server.base);
            let key = s.integration_key.clone();
            let fields: Vec<(String, String)> = fields
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            tasks.push(tokio::spawn(async move {
                http.put(url)
                    .header("Authorization", format!("Token token=\"{key}\""))
                    .form(&fields)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }));
        }
        let mut created = 0;
        let mut not_modified = 0;
        for t in tasks {
            match t.await.unwrap() {
                StatusCode::CREATED => created += 1,
                StatusCode::NOT_MODIFIED => not_modified += 1,
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!((created, not_modified), (1, 49), "{fields:?}");
    }
    let list = server
        .get(
            &format!("/services/{}/incidents", s.service_id),
            &acct.token,
        )
        .await;
    assert_eq!(list.body.as_array().unwrap().len(), 2);
    let events = server.get("/events?per_page=100", &acct.token).await;
    let creates = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "incident.create")
        .count();
    assert_eq!(creates, 2, "one create event per incident");
}

async fn disabled_service_refuses_triggers(backend: Backend) {
    let server = Server::start(backend).await;
    let acct = server.register("Acme").await;
    let s = server
        .setup_service(&acct, "Web", &[&acct.user_id], 1)
        .await;
    let res = server
        .call(
            Method::PUT,
            &format!("/services/{}/disable", s.service_id),
            Some(&acct.token),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = server
        .integration("trigger", &s.integration_key, &[("message", "down")])
        .await;
    res.assert_error(StatusCode::CONFLICT);
    assert!(res.body["message"].as_str().unwrap().contains("disabled"));
    let list = server.get("/incidents", &acct.token).await;
    assert_eq!(list.body.as_array().unwrap().len(), 0);
    let svc = server
        .get(&format!("/services/{}", s.service_id), &acct.token)
        .await;
    assert_eq!(svc.body["health"], "disabled");
    let res = server
        .call(
            Method::PUT,
            &format!("/services/{}/enable", s.service_id),
            Some(&acct.token),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = server
        .integration("trigger", &s.integration_key, &[("message", "down")])
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
}

async fn keys_authorize_only_their_endpoints(backend: Backend) {
    let server = Server::start(backend).await;
    let acct = server.register("Acme").await;
    let s = server
        .setup_service(&acct, "Web", &[&acct.user_id], 1)
        .await;
    // An integration key is not a user token.
    for path in ["/incidents", "/services", "/me", "/events"] {
        server
            .get(path, &s.integration_key)
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
    // A user token is not an integration key.
    server
        .integration("trigger", &acct.token, &[("message", "x")])
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    server
        .integration("trigger", "nonsense", &[("message", "x")])
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    let res = server
        .http
        .put(format!("{}/trigger", server.base))
        .form(&[("message", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A regenerated key replaces the old one at once.
    let res = server
        .post(
            &format!("/services/{}/integration_key", s.service_id),
            &acct.token,
            json!({}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let new_key = res.str("integration_key");
    assert_ne!(new_key, s.integration_key);
    server
        .integration("trigger", &s.integration_key, &[("message", "x")])
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    assert_eq!(
        server
            .integration("trigger", &new_key, &[("message", "x")])
            .await
            .status,
        StatusCode::CREATED
    );
}

both_backends!(
    every_row_of_the_table,
    json_bodies_work_too,
    concurrent_triggers_open_one_incident,
    disabled_service_refuses_triggers,
    keys_authorize_only_their_endpoints,
);
