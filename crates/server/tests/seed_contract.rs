//! The seed documents' requests, replayed against the real binary: every
//! endpoint, status code, header and JSON field must hold to the letter.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SEED_FIELDS: [&str; 10] = [
    "id",
    "state",
    "triggered_at",
    "acknowledged_at",
    "resolved_at",
    "message",
    "description",
    "key",
    "service_id",
    "_links",
];

fn is_id(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 8 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn is_ts(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    s.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
}

/// Checks one incident object against the seed documents' shape.
fn assert_seed_shape(inc: &Value, service_id: &str, user_id: &str, policy_id: &str, rule_id: &str) {
    for f in SEED_FIELDS {
        assert!(inc.get(f).is_some(), "missing {f} in {inc}");
    }
    let id = inc["id"].as_str().unwrap();
    assert!(is_id(&inc["id"]));
    assert!(is_ts(&inc["triggered_at"]), "{}", inc["triggered_at"]);
    assert_eq!(inc["service_id"], service_id);
    assert_eq!(inc["current_user_id"], user_id);
    assert_eq!(inc["current_policy_rule_id"], rule_id);
    assert_eq!(inc["escalation_loop_count"], 1);
    assert_eq!(
        inc["_links"],
        json!({
            "self": {"href": format!("/incidents/{id}")},
            "service": {"href": format!("/services/{service_id}")},
            "current_user": {"href": format!("/users/{user_id}")},
            "current_policy_rule": {"href": format!("/policies/{policy_id}/rules/{rule_id}")},
        })
    );
    // Field order follows the documents.
    let keys: Vec<&String> = inc.as_object().unwrap().keys().collect();
    let seed_order: Vec<&String> = keys
        .iter()
        .copied()
        .filter(|k| SEED_FIELDS.contains(&k.as_str()))
        .collect();
    let expected: Vec<String> = [
        "id",
        "state",
        "triggered_at",
        "acknowledged_at",
        "resolved_at",
        "message",
        "description",
        "key",
        "service_id",
        "_links",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        seed_order.into_iter().cloned().collect::<Vec<_>>(),
        expected
    );
}

async fn documented_requests(backend: Backend) {
    let server = Server::start(backend).await;
    let acct = server.register("Acme").await;
    let setup = server
        .setup_service(&acct, "Web", &[&acct.user_id], 1)
        .await;
    let svc = &setup.service_id;

    // POST /services/:id/incidents with curl -d fields, as documented.
    let res = server
        .form(
            Method::POST,
            &format!("/services/{svc}/incidents"),
            &acct.token,
            &[
                ("message", "load average alert on host.example.com"),
                ("key", "host.example.com/load_average"),
                (
                    "description",
                    "The load average on host.example.com is over 9000!",
                ),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert!(res
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let inc = res.body.clone();
    let id = inc["id"].as_str().unwrap().to_owned();
    assert_eq!(res.header("location").unwrap(), format!("/incidents/{id}"));
    assert_seed_shape(
        &inc,
        svc,
        &acct.user_id,
        &setup.policy_id,
        &setup.rule_ids[0],
    );
    assert_eq!(inc["state"], "triggered");
    assert_eq!(inc["acknowledged_at"], Value::Null);
    assert_eq!(inc["resolved_at"], Value::Null);
    assert_eq!(inc["message"], "load average alert on host.example.com");
    assert_eq!(
        inc["description"],
        "The load average on host.example.com is over 9000!"
    );
    assert_eq!(inc["key"], "host.example.com/load_average");

    // Without key and description: generated 32-hex key, null description.
    let res = server
        .form(
            Method::POST,
            &format!("/services/{svc}/incidents"),
            &acct.token,
            &[("message", "wat!")],
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    let key = res.str("key");
    assert_eq!(key.len(), 32);
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{key}"
    );
    assert_eq!(res.body["description"], Value::Null);
    let second = res.str("id");

    // GET /incidents and GET /services/:id/incidents: bare arrays, newest first.
    for path in [
        "/incidents".to_owned(),
        format!("/services/{svc}/incidents"),
    ] {
        let res = server.get(&path, &acct.token).await;
        assert_eq!(res.status, StatusCode::OK);
        assert!(res
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        let list = res.body.as_array().expect("bare array");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["id"], second.as_str());
        assert_eq!(list[1]["id"], id.as_str());
        assert_seed_shape(
            &list[1],
            svc,
            &acct.user_id,
            &setup.policy_id,
            &setup.rule_ids[0],
        );
    }

    // GET /incidents/:id
    let res = server.get(&format!("/incidents/{id}"), &acct.token).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, inc);

    // PUT acknowledge / resolve, DELETE: 204 with an empty body.
    for (action, state, field) in [
        ("acknowledge", "acknowledged", "acknowledged_at"),
        ("resolve", "resolved", "resolved_at"),
    ] {
        let res = server
            .call(
                Method::PUT,
                &format!("/incidents/{id}/{action}"),
                Some(&acct.token),
                None,
            )
            .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
        assert!(res.text.is_empty());
        let got = server.get(&format!("/incidents/{id}"), &acct.token).await;
        assert_eq!(got.body["state"], state);
        assert!(is_ts(&got.body[field]));
    }
    let res = server
        .delete(&format!("/incidents/{id}"), &acct.token)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert!(res.text.is_empty());
    server
        .get(&format!("/incidents/{id}"), &acct.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);

    // Auth header forms: Token token="…" (above), Bearer, and bad ones → 401 JSON.
    let res = server
        .http
        .get(format!("{}/incidents", server.base))
        .header("Authorization", format!("Bearer {}", acct.token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    server
        .call(Method::GET, "/incidents", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    server
        .get("/incidents", "dGpYyvbApYxXGAvPkQjt")
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

async fn validation_errors_are_rails_shaped(backend: Backend) {
    let server = Server::start(backend).await;
    let acct = server.register("Acme").await;
    let setup = server
        .setup_service(&acct, "Web", &[&acct.user_id], 1)
        .await;
    let path = format!("/services/{}/incidents", setup.service_id);
    for fields in [
        vec![],
        vec![("message", "")],
        vec![("message", "   "), ("key", "k")],
    ] {
        let res = server.form(Method::POST, &path, &acct.token, &fields).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(res.body, json!({"errors": {"message": ["can't be blank"]}}));
    }
    let res = server
        .post(&path, &acct.token, json!({"description": "no message"}))
        .await;
    assert_eq!(res.body, json!({"errors": {"message": ["can't be blank"]}}));
    // Unknown service → 404.
    let res = server
        .form(
            Method::POST,
            "/services/AAAAAAAA/incidents",
            &acct.token,
            &[("message", "x")],
        )
        .await;
    res.assert_error(StatusCode::NOT_FOUND);
}

/// Runs the shared conformance script against a live server.
async fn conformance_script(backend: Backend) {
    let script = find_script()
        .expect("seed_conformance.py is found in a shared/tools folder beside the checkout");
    let server = Server::start(backend).await;
    let acct = server.register("Acme").await;
    let setup = server
        .setup_service(&acct, "Web", &[&acct.user_id], 1)
        .await;
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args([
            "--base",
            &server.base,
            "--token",
            &acct.token,
            "--service",
            &setup.service_id,
        ])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "conformance failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
}

fn find_script() -> Option<std::path::PathBuf> {
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for _ in 0..5 {
        let candidate = dir.join("shared/tools/seed_conformance.py");
        if candidate.exists() {
            return Some(candidate);
        }
        dir = dir.parent()?.to_path_buf();
    }
    None
}

both_backends!(
    documented_requests,
    validation_errors_are_rails_shaped,
    conformance_script
);
