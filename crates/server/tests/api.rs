//! Accounts, auth, roles, tenant isolation, configuration resources and
//! bad input, against the real binary on both backends.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn tenants_are_isolated(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let b = server.register("Beta").await;
    let s = server.setup_service(&a, "Web", &[&a.user_id], 1).await;
    let inc = server
        .integration("trigger", &s.integration_key, &[("message", "boom")])
        .await
        .str("id");
    let rule = &s.rule_ids[0];
    let (svc, pol, user) = (&s.service_id, &s.policy_id, &a.user_id);

    // Every read of A's resources with B's token is a 404.
    for path in [
        format!("/incidents/{inc}"),
        format!("/incidents/{inc}/events"),
        format!("/services/{svc}"),
        format!("/services/{svc}/incidents"),
        format!("/services/{svc}/events"),
        format!("/policies/{pol}"),
        format!("/policies/{pol}/rules"),
        format!("/policies/{pol}/rules/{rule}"),
        format!("/policies/{pol}/events"),
        format!("/users/{user}"),
        format!("/users/{user}/events"),
    ] {
        server
            .get(&path, &b.token)
            .await
            .assert_error(StatusCode::NOT_FOUND);
    }
    // Every change is a 404 too, and changes nothing.
    let writes: Vec<(Method, String, Value)> = vec![
        (
            Method::PUT,
            format!("/incidents/{inc}/acknowledge"),
            json!({}),
        ),
        (Method::PUT, format!("/incidents/{inc}/resolve"), json!({})),
        (Method::PUT, format!("/incidents/{inc}/escalate"), json!({})),
        (Method::PUT, format!("/incidents/{inc}/trigger"), json!({})),
        (
            Method::PUT,
            format!("/incidents/{inc}"),
            json!({"message": "pwned"}),
        ),
        (Method::DELETE, format!("/incidents/{inc}"), Value::Null),
        (
            Method::POST,
            format!("/services/{svc}/incidents"),
            json!({"message": "x"}),
        ),
        (
            Method::PUT,
            format!("/services/{svc}"),
            json!({"name": "pwned"}),
        ),
        (Method::PUT, format!("/services/{svc}/disable"), json!({})),
        (
            Method::POST,
            format!("/services/{svc}/integration_key"),
            json!({}),
        ),
        (Method::DELETE, format!("/services/{svc}"), Value::Null),
        (
            Method::PUT,
            format!("/policies/{pol}"),
            json!({"name": "pwned"}),
        ),
        (
            Method::POST,
            format!("/policies/{pol}/rules"),
            json!({"assignment": {"type": "user", "id": b.user_id}}),
        ),
        (
            Method::POST,
            format!("/policies/{pol}/rules/sort"),
            json!({"rule_ids": [rule]}),
        ),
        (
            Method::PUT,
            format!("/policies/{pol}/rules/{rule}"),
            json!({"escalation_timeout": 5}),
        ),
        (
            Method::DELETE,
            format!("/policies/{pol}/rules/{rule}"),
            Value::Null,
        ),
        (Method::DELETE, format!("/policies/{pol}"), Value::Null),
        (
            Method::PUT,
            format!("/users/{user}"),
            json!({"name": "pwned"}),
        ),
        (Method::DELETE, format!("/users/{user}"), Value::Null),
    ];
    for (method, path, body) in writes {
        let body = (!body.is_null()).then_some(body);
        let res = server
            .call(method.clone(), &path, Some(&b.token), body)
            .await;
        res.assert_error(StatusCode::NOT_FOUND);
    }
    // B cannot use A's ids in its own resources either.
    let res = server
        .post(
            "/services",
            &b.token,
            json!({"name": "x", "policy_id": pol}),
        )
        .await;
    assert_eq!(
        res.body,
        json!({"errors": {"policy_id": ["does not exist"]}})
    );
    let bp = server
        .post("/policies", &b.token, json!({"name": "p"}))
        .await
        .str("id");
    let res = server
        .post(
            &format!("/policies/{bp}/rules"),
            &b.token,
            json!({"assignment": {"type": "user", "id": user}}),
        )
        .await;
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    let res = server
        .get(&format!("/incidents?service_id={svc}"), &b.token)
        .await;
    assert_eq!(res.body, json!([]));
    // B's lists are empty of A's data.
    for path in [
        "/incidents",
        "/services",
        "/events?per_page=100",
        "/users",
        "/policies",
    ] {
        let body = server.get(path, &b.token).await.body;
        let text = body.to_string();
        for id in [&inc, svc, pol, user] {
            assert!(!text.contains(id.as_str()), "{path} leaks {id}: {text}");
        }
    }
    // A's data is unchanged.
    let got = server.get(&format!("/incidents/{inc}"), &a.token).await;
    assert_eq!(got.body["state"], "triggered");
    assert_eq!(got.body["message"], "boom");
    let got = server.get(&format!("/services/{svc}"), &a.token).await;
    assert_eq!(got.body["name"], "Web");
    assert_eq!(got.body["state"], "enabled");
    assert_eq!(got.body["integration_key"], s.integration_key.as_str());
    assert_eq!(
        server
            .get(&format!("/policies/{pol}/rules"), &a.token)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn registration_sessions_tokens_and_me(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let me = server.get("/me", &a.token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], a.user_id.as_str());
    assert_eq!(me.body["role"], "admin");
    assert_eq!(me.body["account_id"], a.id.as_str());
    assert!(me.body.get("password_hash").is_none());

    // Sign in with email and password (email case does not matter).
    let res = server
        .call(
            Method::POST,
            "/sessions",
            None,
            Some(json!({"email": a.email.to_uppercase(), "password": "correct horse"})),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    assert_eq!(res.body["user_id"], a.user_id.as_str());
    let session = res.str("token");
    assert_eq!(server.get("/me", &session).await.status, StatusCode::OK);
    for body in [
        json!({"email": a.email, "password": "wrong horse"}),
        json!({"email": "nobody@example.com", "password": "correct horse"}),
    ] {
        server
            .call(Method::POST, "/sessions", None, Some(body))
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
    server
        .call(Method::POST, "/sessions", None, Some(json!({})))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);

    // Tokens: listed without secrets, revocable.
    let res = server
        .post("/tokens", &a.token, json!({"name": "ci"}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    let (tid, secret) = (res.str("id"), res.str("token"));
    assert_eq!(server.get("/me", &secret).await.status, StatusCode::OK);
    let list = server.get("/tokens", &a.token).await;
    let tokens = list.body.as_array().unwrap();
    assert_eq!(tokens.len(), 3);
    assert!(tokens.iter().all(|t| t.get("token").is_none()));
    assert!(tokens
        .iter()
        .any(|t| t["id"] == tid.as_str() && !t["last_used_at"].is_null()));
    assert_eq!(
        server
            .delete(&format!("/tokens/{tid}"), &a.token)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    server
        .get("/me", &secret)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    server
        .delete(&format!("/tokens/{tid}"), &a.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);

    // Registration validation: duplicate email, bad email, short password.
    let res = server.call(Method::POST, "/registrations", None, Some(json!({"account_name": "X", "name": "Y", "email": a.email, "password": "long enough"}))).await;
    assert_eq!(
        res.body,
        json!({"errors": {"email": ["has already been taken"]}})
    );
    let res = server
        .call(
            Method::POST,
            "/registrations",
            None,
            Some(json!({"account_name": "", "name": "Y", "email": "nope", "password": "short"})),
        )
        .await;
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["account_name", "email", "password"] {
        assert!(
            res.body["errors"].get(field).is_some(),
            "{field}: {}",
            res.body
        );
    }
}

async fn registrations_can_be_closed(backend: Backend) {
    let server = Server::start_with(backend, &[("KLAXON_REGISTRATIONS", "closed")]).await;
    let res = server.call(Method::POST, "/registrations", None, Some(json!({"account_name": "X", "name": "Y", "email": "y@example.com", "password": "long enough"}))).await;
    res.assert_error(StatusCode::FORBIDDEN);
}

async fn bootstrap_prints_credentials(backend: Backend) {
    let server = Server::start(backend).await;
    let (ok, stdout, stderr) = server.run_cli(&[
        "bootstrap",
        "--account",
        "Ops",
        "--name",
        "Olga",
        "--email",
        "olga@example.com",
    ]);
    assert!(ok, "{stderr}");
    let out: Value = serde_json::from_str(stdout.trim()).expect("one JSON object on stdout");
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["account_id", "user_id", "token"]);
    let token = out["token"].as_str().unwrap();
    let me = server.get("/me", token).await;
    assert_eq!(me.body["email"], "olga@example.com");
    assert_eq!(me.body["role"], "admin");
    // A second bootstrap with the same email fails clearly.
    let (ok, _, stderr) = server.run_cli(&[
        "bootstrap",
        "--account",
        "Ops",
        "--name",
        "Olga",
        "--email",
        "olga@example.com",
    ]);
    assert!(!ok);
    assert!(stderr.contains("email has already been taken"), "{stderr}");
    let (ok, stdout, _) = server.run_cli(&["migrate"]);
    assert!(ok && stdout.contains("migrations applied"));
}

async fn roles_are_enforced(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let s = server.setup_service(&a, "Web", &[&a.user_id], 1).await;
    let mut tokens = Vec::new();
    for role in ["responder", "observer"] {
        let email = format!("{role}@alpha.example.com");
        let res = server.post("/users", &a.token, json!({"name": role, "email": email, "role": role, "password": "long enough", "time_zone": "Europe/Berlin"})).await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
        assert_eq!(res.body["time_zone"], "Europe/Berlin");
        assert_eq!(
            res.header("location").unwrap(),
            format!("/users/{}", res.str("id"))
        );
        let session = server
            .call(
                Method::POST,
                "/sessions",
                None,
                Some(json!({"email": email, "password": "long enough"})),
            )
            .await;
        tokens.push((role, session.str("token"), res.str("id")));
    }
    let (_, responder, responder_id) = &tokens[0];
    let (_, observer, _) = &tokens[1];
    let inc_path = format!("/services/{}/incidents", s.service_id);

    // Everyone reads; the integration key is admins' only.
    for t in [responder, observer] {
        assert_eq!(server.get("/incidents", t).await.status, StatusCode::OK);
        let svc = server.get(&format!("/services/{}", s.service_id), t).await;
        assert!(svc.body.get("integration_key").is_none());
    }
    // Responders act on incidents; observers may not.
    let inc = server
        .post(&inc_path, responder, json!({"message": "by responder"}))
        .await;
    assert_eq!(inc.status, StatusCode::CREATED);
    let id = inc.str("id");
    server
        .post(&inc_path, observer, json!({"message": "x"}))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    server
        .call(
            Method::PUT,
            &format!("/incidents/{id}/acknowledge"),
            Some(observer),
            None,
        )
        .await
        .assert_error(StatusCode::FORBIDDEN);
    assert_eq!(
        server
            .call(
                Method::PUT,
                &format!("/incidents/{id}/acknowledge"),
                Some(responder),
                None
            )
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Only admins change configuration or delete incidents.
    for t in [responder, observer] {
        server
            .post(
                "/services",
                t,
                json!({"name": "x", "policy_id": s.policy_id}),
            )
            .await
            .assert_error(StatusCode::FORBIDDEN);
        server
            .post("/policies", t, json!({"name": "x"}))
            .await
            .assert_error(StatusCode::FORBIDDEN);
        server
            .post("/users", t, json!({"name": "x", "email": "x@example.com"}))
            .await
            .assert_error(StatusCode::FORBIDDEN);
        server
            .delete(&format!("/incidents/{id}"), t)
            .await
            .assert_error(StatusCode::FORBIDDEN);
        server
            .put(&format!("/users/{}", a.user_id), t, json!({"name": "x"}))
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
    // Users change themselves, but not their role.
    assert_eq!(
        server
            .put(
                &format!("/users/{responder_id}"),
                responder,
                json!({"name": "Rita"})
            )
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    server
        .put(
            &format!("/users/{responder_id}"),
            responder,
            json!({"role": "admin"}),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN);
    assert_eq!(
        server
            .get(&format!("/users/{responder_id}"), &a.token)
            .await
            .body["name"],
        "Rita"
    );
}

async fn users_crud_and_guards(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let res = server
        .post(
            "/users",
            &a.token,
            json!({"name": "Bo", "email": "bo@example.com"}),
        )
        .await;
    assert_eq!(res.body["role"], "responder");
    assert_eq!(res.body["time_zone"], "UTC");
    let bo = res.str("id");
    // Email unique, validated; role and zone validated.
    let res = server
        .post(
            "/users",
            &a.token,
            json!({"name": "Bo2", "email": "BO@example.com"}),
        )
        .await;
    assert_eq!(
        res.body,
        json!({"errors": {"email": ["has already been taken"]}})
    );
    let res = server
        .post(
            "/users",
            &a.token,
            json!({"name": "", "email": "x", "role": "boss", "time_zone": "Mars/Base"}),
        )
        .await;
    let errors = res.body["errors"].as_object().unwrap();
    assert_eq!(
        errors.keys().collect::<Vec<_>>(),
        ["email", "name", "role", "time_zone"]
    );
    // The last admin can be neither demoted nor deleted.
    server
        .put(
            &format!("/users/{}", a.user_id),
            &a.token,
            json!({"role": "responder"}),
        )
        .await
        .assert_error(StatusCode::CONFLICT);
    server
        .delete(&format!("/users/{}", a.user_id), &a.token)
        .await
        .assert_error(StatusCode::CONFLICT);
    // A user named by an escalation rule cannot be deleted until reassigned.
    let s = server.setup_service(&a, "Web", &[&bo], 1).await;
    server
        .delete(&format!("/users/{bo}"), &a.token)
        .await
        .assert_error(StatusCode::CONFLICT);
    let res = server
        .put(
            &format!("/policies/{}/rules/{}", s.policy_id, s.rule_ids[0]),
            &a.token,
            json!({"assignment": {"type": "user", "id": a.user_id}}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server
            .delete(&format!("/users/{bo}"), &a.token)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    server
        .get(&format!("/users/{bo}"), &a.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    let events = server.get("/events?per_page=100", &a.token).await;
    let actions: Vec<&str> = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"user.delete") && actions.contains(&"user.create"),
        "{actions:?}"
    );
}

async fn services_and_policies(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let u2 = server
        .post(
            "/users",
            &a.token,
            json!({"name": "Two", "email": "two@example.com"}),
        )
        .await
        .str("id");
    let s = server.setup_service(&a, "Web", &[&a.user_id, &u2], 2).await;
    let svc_path = format!("/services/{}", s.service_id);
    let svc = server.get(&svc_path, &a.token).await.body;
    assert_eq!(svc["health"], "ok");
    assert_eq!(
        svc["incident_counts"],
        json!({"triggered": 0, "acknowledged": 0, "resolved": 0})
    );
    assert_eq!(
        svc["_links"]["policy"]["href"],
        format!("/policies/{}", s.policy_id)
    );
    assert_eq!(svc["acknowledge_timeout"], Value::Null);

    // Health follows the incidents.
    let id = server
        .integration("trigger", &s.integration_key, &[("message", "m")])
        .await
        .str("id");
    assert_eq!(
        server.get(&svc_path, &a.token).await.body["health"],
        "critical"
    );
    server
        .call(
            Method::PUT,
            &format!("/incidents/{id}/acknowledge"),
            Some(&a.token),
            None,
        )
        .await;
    let svc = server.get(&svc_path, &a.token).await.body;
    assert_eq!(svc["health"], "warning");
    assert_eq!(svc["incident_counts"]["acknowledged"], 1);

    // Update: partial, null turns a timeout off, names unique per account.
    let res = server
        .put(
            &svc_path,
            &a.token,
            json!({"acknowledge_timeout": 15, "description": "frontend"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let svc = server.get(&svc_path, &a.token).await.body;
    assert_eq!(
        (
            svc["acknowledge_timeout"].clone(),
            svc["description"].clone(),
            svc["name"].clone()
        ),
        (json!(15), json!("frontend"), json!("Web"))
    );
    server
        .put(&svc_path, &a.token, json!({"acknowledge_timeout": null}))
        .await;
    assert_eq!(
        server.get(&svc_path, &a.token).await.body["acknowledge_timeout"],
        Value::Null
    );
    let other = server
        .post(
            "/services",
            &a.token,
            json!({"name": "Web", "policy_id": s.policy_id}),
        )
        .await;
    assert_eq!(
        other.body,
        json!({"errors": {"name": ["has already been taken"]}})
    );
    let res = server
        .post(
            "/services",
            &a.token,
            json!({"name": "Bad", "policy_id": s.policy_id, "acknowledge_timeout": 0}),
        )
        .await;
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    let res = server
        .post("/services", &a.token, json!({"name": "Bad"}))
        .await;
    assert_eq!(
        res.body,
        json!({"errors": {"policy_id": ["can't be blank"]}})
    );

    // Rules: ordered, sortable, deletable with renumbering.
    let rules_path = format!("/policies/{}/rules", s.policy_id);
    let third = server
        .post(
            &rules_path,
            &a.token,
            json!({"assignment": {"type": "user", "id": a.user_id}}),
        )
        .await;
    assert_eq!(third.body["position"], 2);
    assert_eq!(third.body["escalation_timeout"], 30);
    let third = third.str("id");
    let order = json!({"rule_ids": [third, s.rule_ids[0], s.rule_ids[1]]});
    let sorted = server
        .post(&format!("{rules_path}/sort"), &a.token, order)
        .await;
    assert_eq!(sorted.status, StatusCode::OK, "{}", sorted.text);
    let ids: Vec<&str> = sorted
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [third.as_str(), &s.rule_ids[0], &s.rule_ids[1]]);
    let bad = server
        .post(
            &format!("{rules_path}/sort"),
            &a.token,
            json!({"rule_ids": [third]}),
        )
        .await;
    bad.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        server
            .delete(&format!("{rules_path}/{third}"), &a.token)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let rules = server.get(&rules_path, &a.token).await.body;
    let positions: Vec<i64> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1]);
    let policy = server
        .get(&format!("/policies/{}", s.policy_id), &a.token)
        .await
        .body;
    assert_eq!(policy["loop_limit"], 2);
    assert_eq!(policy["rules"].as_array().unwrap().len(), 2);
    for bad in [
        json!({"escalation_timeout": 0, "assignment": {"type": "user", "id": a.user_id}}),
        json!({"assignment": {"type": "robot", "id": a.user_id}}),
        json!({}),
    ] {
        server
            .post(&rules_path, &a.token, bad)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    }
    server
        .post("/policies", &a.token, json!({"name": "P", "loop_limit": 0}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);

    // A policy in use cannot be deleted; after the service goes, it can.
    server
        .delete(&format!("/policies/{}", s.policy_id), &a.token)
        .await
        .assert_error(StatusCode::CONFLICT);
    assert_eq!(
        server.delete(&svc_path, &a.token).await.status,
        StatusCode::NO_CONTENT
    );
    server
        .get(&format!("/incidents/{id}"), &a.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    assert_eq!(
        server
            .delete(&format!("/policies/{}", s.policy_id), &a.token)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let events = server
        .get(&format!("/policies/{}/events", s.policy_id), &a.token)
        .await;
    events.assert_error(StatusCode::NOT_FOUND);
}

async fn bad_input_gets_clear_4xx_json(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let s = server.setup_service(&a, "Web", &[&a.user_id], 1).await;
    let path = format!("/services/{}/incidents", s.service_id);
    let t = a.token.as_str();
    let raw = |ct: &'static str, body: &'static [u8]| {
        server.raw(Method::POST, &path, t, ct, body.to_vec())
    };
    // Malformed JSON → 400.
    for body in [&b"{"[..], b"{\"message\": }", b"[1,2", b"\xff\xfe"] {
        raw("application/json", body)
            .await
            .assert_error(StatusCode::BAD_REQUEST);
    }
    // Wrong types → 422 naming the field.
    let res = raw("application/json", b"{\"message\": 42}").await;
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.body["errors"]["message"].is_array(), "{}", res.text);
    raw("application/json", b"[\"message\"]")
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    raw(
        "application/json",
        b"{\"message\": \"m\", \"details\": [1]}",
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    // Unsupported content type → 415.
    raw("text/plain", b"message=hi")
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    raw("application/xml", b"<message/>")
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Overlong fields → 422; a body over 1 MiB → 413.
    let long = "x".repeat(1025);
    let res = server.post(&path, t, json!({"message": long})).await;
    res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.body["errors"]["message"][0]
        .as_str()
        .unwrap()
        .contains("too long"));
    let res = server
        .post(
            &path,
            t,
            json!({"message": "m", "description": "d".repeat(16 * 1024 + 1)}),
        )
        .await;
    assert!(res.body["errors"]["description"].is_array());
    let res = server
        .post(
            &path,
            t,
            json!({"message": "m", "details": {"blob": "b".repeat(64 * 1024)}}),
        )
        .await;
    assert!(res.body["errors"]["details"].is_array());
    let res = server
        .post(&path, t, json!({"message": "m", "key": "k".repeat(256)}))
        .await;
    assert!(res.body["errors"]["key"].is_array());
    let huge = format!("{{\"message\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    server
        .raw(
            Method::POST,
            &path,
            t,
            "application/json",
            huge.into_bytes(),
        )
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    // Bad ids → 404, never 5xx.
    for p in [
        "/incidents/short",
        "/incidents/toolongid1",
        "/incidents/%00%00%00%00%00%00%00%00",
        "/incidents/ZZZZZZZZ",
        "/services/..%2F..%2F/incidents",
        "/policies/AAAAAAAA/rules/BBBBBBBB",
    ] {
        server.get(p, t).await.assert_error(StatusCode::NOT_FOUND);
    }
    // Path segments that are not UTF-8 → 400, still JSON.
    for p in [
        "/incidents/%FF%FE%FD%FC%FB%FA%F9%F8",
        "/policies/AAAAAAAA/rules/%FF",
    ] {
        server.get(p, t).await.assert_error(StatusCode::BAD_REQUEST);
    }
    // Bad query parameters → 422 naming them.
    for (q, field) in [
        ("state=open", "state"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("page=0", "page"),
        ("per_page=-1", "per_page"),
        ("service_id=x", "service_id"),
    ] {
        let res = server.get(&format!("/incidents?{q}"), t).await;
        res.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(res.body["errors"][field].is_array(), "{q}: {}", res.text);
    }
    // Unknown routes and methods.
    server
        .get("/nope", t)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    server
        .call(Method::PATCH, "/incidents", Some(t), None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED);
    // Enum values are checked.
    let res = server
        .post(
            "/users",
            t,
            json!({"name": "n", "email": "n@example.com", "role": "root"}),
        )
        .await;
    assert_eq!(
        res.body,
        json!({"errors": {"role": ["must be one of admin, responder, observer"]}})
    );
    // Health endpoints.
    assert_eq!(
        server
            .call(Method::GET, "/healthz", None, None)
            .await
            .status,
        StatusCode::OK
    );
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        ready.body["database"],
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
}

async fn sigterm_shuts_down_cleanly_and_keeps_data(backend: Backend) {
    let mut server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let s = server.setup_service(&a, "Web", &[&a.user_id], 1).await;
    let id = server
        .integration("trigger", &s.integration_key, &[("message", "m")])
        .await
        .str("id");
    assert!(server.terminate(), "exit status 0 after SIGTERM");
    server.spawn();
    let inc = server.get(&format!("/incidents/{id}"), &a.token).await;
    assert_eq!(inc.status, StatusCode::OK, "a 2xx means committed");
}

both_backends!(
    sigterm_shuts_down_cleanly_and_keeps_data,
    tenants_are_isolated,
    registration_sessions_tokens_and_me,
    registrations_can_be_closed,
    bootstrap_prints_credentials,
    roles_are_enforced,
    users_crud_and_guards,
    services_and_policies,
    bad_input_gets_clear_4xx_json,
);

/// One process serves a SQLite file: a second `klaxon serve` on it exits
/// at once with a clear message, and the first keeps serving; admin
/// commands still work beside it (see `bootstrap_prints_credentials`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_sqlite_file_exits_at_once() {
    let server = Server::start(Backend::Sqlite).await;
    let mut second = server
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second server on the same SQLite file kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("already serving"), "{stderr}");
    let a = server.register("Alpha").await;
    assert_eq!(server.get("/me", &a.token).await.status, StatusCode::OK);
}
