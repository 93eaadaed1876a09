//! NUL and other control characters are refused at the input boundary with
//! a 422 naming the field or parameter, the same on both backends
//! (PostgreSQL text cannot hold NUL), so the store never sees them. Free
//! text keeps its tabs and newlines.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Res, Server};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Asserts a 422 whose errors name `field`.
fn assert_refused(res: &Res, field: &str) {
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    let messages = &res.body["errors"][field];
    assert!(
        messages
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m.as_str().unwrap().contains("control"))),
        "errors name {field}: {}",
        res.text
    );
}

async fn incident_count(server: &Server, token: &str) -> usize {
    let res = server.get("/incidents?per_page=100", token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    res.body.as_array().unwrap().len()
}

async fn nul_bytes_are_refused(backend: Backend) {
    let server = Server::start(backend).await;
    let acct = server.register("Acme").await;
    let s = server
        .setup_service(&acct, "Web", &[&acct.user_id], 1)
        .await;
    let key = s.integration_key.as_str();
    let token = acct.token.as_str();
    let incidents = format!("/services/{}/incidents", s.service_id);

    // 1. PUT /trigger, form-encoded.
    let res = server
        .raw(
            Method::PUT,
            "/trigger",
            key,
            "application/x-www-form-urlencoded",
            b"message=a%00b".to_vec(),
        )
        .await;
    assert_refused(&res, "message");
    let res = server
        .integration("trigger", key, &[("message", "ok"), ("key", "k\0")])
        .await;
    assert_refused(&res, "key");

    // 2. POST /services/:id/incidents, form and JSON.
    let res = server
        .form(Method::POST, &incidents, token, &[("message", "a\0b")])
        .await;
    assert_refused(&res, "message");
    let res = server
        .post(
            &incidents,
            token,
            json!({"message": "m", "description": "\0"}),
        )
        .await;
    assert_refused(&res, "description");

    // 3. `details` holding "\u0000" anywhere: value, nested value, key,
    // array, and a form string that holds JSON.
    for details in [
        json!({"a": "\u{0}"}),
        json!({"a": {"b": ["x", "y\u{0}z"]}}),
        json!({"a\u{0}": 1}),
        json!({"a": {"\u{0}": null}}),
        json!({"a": "\u{1b}[31m"}),
        json!("plain \u{0} string"),
    ] {
        let res = server
            .post(
                &incidents,
                token,
                json!({"message": "m", "details": details}),
            )
            .await;
        assert_refused(&res, "details");
    }
    let res = server
        .form(
            Method::POST,
            &incidents,
            token,
            &[("message", "m"), ("details", r#"{"a": "\u0000"}"#)],
        )
        .await;
    assert_refused(&res, "details");
    let res = server
        .integration(
            "trigger",
            key,
            &[("message", "m"), ("details", r#"{"\u0000": 1}"#)],
        )
        .await;
    assert_refused(&res, "details");

    // 4. GET /incidents?q=%00, and other parameters.
    for (query, param) in [
        ("q=%00", "q"),
        ("q=a%00b", "q"),
        ("since=%00", "since"),
        ("state=triggered%01", "state"),
        ("service_id=%7F", "service_id"),
        ("q=a%09b", "q"),
    ] {
        let res = server.get(&format!("/incidents?{query}"), token).await;
        assert_refused(&res, param);
    }
    let res = server.get("/incidents?q%00=x", token).await;
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    let res = server
        .get("/schedules/x/shifts?at=%00&since=ok", token)
        .await;
    assert_refused(&res, "at");

    // 5. POST /sessions with a NUL in the email, JSON and form.
    let res = server
        .call(
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": format!("{}\u{0}", acct.email), "password": "x"})),
        )
        .await;
    assert_refused(&res, "email");
    let res = server
        .raw(
            Method::POST,
            "/sessions",
            "",
            "application/x-www-form-urlencoded",
            b"email=a%00%40example.com&password=x".to_vec(),
        )
        .await;
    assert_refused(&res, "email");

    // 6. POST /services with a NUL in the name; single-line fields refuse
    // tabs and newlines too.
    for name in ["a\0b", "a\tb", "a\nb", "\u{7f}"] {
        let res = server
            .post(
                "/services",
                token,
                json!({"name": name, "policy_id": s.policy_id}),
            )
            .await;
        assert_refused(&res, "name");
    }
    let res = server
        .post(
            &format!("/policies/{}/rules", s.policy_id),
            token,
            json!({"assignment": {"type": "user", "id": "a\u{0}"}}),
        )
        .await;
    assert_refused(&res, "assignment.id");

    // Path segments that cannot be ids are a 404, in JSON.
    for path in [
        "/incidents/%00".to_owned(),
        "/incidents/AAAA%00AAAA/acknowledge".to_owned(),
        format!("/services/{}%00/incidents", s.service_id),
        "/schedules/%00.ics".to_owned(),
    ] {
        let res = server.get(&path, token).await;
        assert!(res.status.is_client_error(), "{path}: {}", res.text);
        res.assert_error(res.status);
    }

    // Nothing refused reached the store.
    assert_eq!(incident_count(&server, token).await, 0);

    // Free text keeps its tabs, newlines and carriage returns.
    let res = server
        .post(
            &incidents,
            token,
            json!({
                "message": "disk\tfull\r\non db1",
                "description": "line 1\nline 2",
                "details": {"log\tline": "a\nb"},
            }),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.body["message"], "disk\tfull\r\non db1");
    assert_eq!(res.body["description"], "line 1\nline 2");
    assert_eq!(res.body["details"], json!({"log\tline": "a\nb"}));
    let res = server.get("/incidents?q=disk%09full", token).await;
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    let res = server.get("/incidents?q=full", token).await;
    assert_eq!(res.body.as_array().map(Vec::len), Some(1), "{}", res.text);
    assert_eq!(res.body[0]["details"], json!({"log\tline": "a\nb"}));
}

both_backends!(nul_bytes_are_refused);
