//! Users' contacts and notification rules, against the real binary on
//! both backends: shapes, validation, roles, tenant isolation and the
//! audit log.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Account, Backend, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A user of `acct` with `role` and a token of their own: (id, token).
async fn member(server: &Server, acct: &Account, role: &str) -> (String, String) {
    let email = format!(
        "{role}-{}@{}.example.com",
        acct.id.to_lowercase(),
        "contacts"
    );
    let res = server
        .post(
            "/users",
            &acct.token,
            json!({"name": role, "email": email, "role": role, "password": "long enough"}),
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
    (res.str("id"), session.str("token"))
}

/// The account's audit events with this action, newest first.
async fn events(server: &Server, token: &str, action: &str) -> Vec<Value> {
    let res = server.get("/events?per_page=100", token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    res.body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

#[track_caller]
fn assert_errors(res: &common::Res, errors: Value) {
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    assert_eq!(res.body, json!({ "errors": errors }));
}

async fn contacts_and_rules_round_trip(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let (u, t) = (&a.user_id, &a.token);
    let base = format!("/users/{u}/contacts");

    // JSON body.
    let sms = server
        .post(
            &base,
            t,
            json!({"type": "sms", "label": "mobile", "address": "+15551234567"}),
        )
        .await;
    assert_eq!(sms.status, StatusCode::CREATED, "{}", sms.text);
    let sms_id = sms.str("id");
    assert_eq!(sms.header("location").unwrap(), format!("{base}/{sms_id}"));
    let keys: Vec<&str> = sms
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "type",
            "label",
            "address",
            "created_at",
            "updated_at",
            "_links"
        ]
    );
    assert_eq!(
        (&sms.body["type"], &sms.body["label"], &sms.body["address"]),
        (&json!("sms"), &json!("mobile"), &json!("+15551234567"))
    );
    assert_eq!(
        sms.body["_links"]["self"]["href"],
        format!("{base}/{sms_id}")
    );
    assert_eq!(sms.body["_links"]["user"]["href"], format!("/users/{u}"));

    // Form body (what `curl -d` sends); the address is normalised and a
    // missing label is the type's name.
    let hook = server
        .form(
            Method::POST,
            &base,
            t,
            &[
                ("type", "webhook"),
                ("address", "HTTPS://Hooks.Example.com/klaxon"),
            ],
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.text);
    assert_eq!(hook.body["address"], "https://hooks.example.com/klaxon");
    assert_eq!(hook.body["label"], "webhook");
    let hook_id = hook.str("id");
    // Plain http to a loopback host is allowed, for local tools.
    let local = server
        .post(
            &base,
            t,
            json!({"type": "ntfy", "label": "local", "address": "http://127.0.0.1:8090/alerts"}),
        )
        .await;
    assert_eq!(local.status, StatusCode::CREATED, "{}", local.text);

    let list = server.get(&base, t).await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [sms_id.as_str(), hook_id.as_str(), &local.str("id")]);
    let one = server.get(&format!("{base}/{sms_id}"), t).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body, sms.body);

    // Update: 204, partial, checked against the (possibly new) type.
    let res = server
        .put(
            &format!("{base}/{hook_id}"),
            t,
            json!({"type": "slack", "label": "ops channel"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert!(res.text.is_empty());
    let got = server.get(&format!("{base}/{hook_id}"), t).await;
    assert_eq!(
        (&got.body["type"], &got.body["label"], &got.body["address"]),
        (
            &json!("slack"),
            &json!("ops channel"),
            &json!("https://hooks.example.com/klaxon")
        )
    );
    let res = server
        .form(
            Method::PUT,
            &format!("{base}/{sms_id}"),
            t,
            &[("address", "+4930123456")],
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(
        server.get(&format!("{base}/{sms_id}"), t).await.body["address"],
        "+4930123456"
    );

    // Notification rules.
    let rules = format!("/users/{u}/notification_rules");
    let later = server
        .post(&rules, t, json!({"contact_id": sms_id, "start_delay": 5}))
        .await;
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.text);
    let later_id = later.str("id");
    assert_eq!(
        later.header("location").unwrap(),
        format!("{rules}/{later_id}")
    );
    let keys: Vec<&str> = later
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "contact_id",
            "start_delay",
            "created_at",
            "updated_at",
            "_links"
        ]
    );
    assert_eq!(later.body["start_delay"], 5);
    assert_eq!(
        later.body["_links"]["contact"]["href"],
        format!("{base}/{sms_id}")
    );
    let first = server
        .form(Method::POST, &rules, t, &[("contact_id", &hook_id)])
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.body["start_delay"], 0, "defaults to at once");
    let listed: Vec<i64> = server
        .get(&rules, t)
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["start_delay"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [0, 5], "by start delay");
    let res = server
        .put(
            &format!("{rules}/{later_id}"),
            t,
            json!({"start_delay": 15}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    let got = server.get(&format!("{rules}/{later_id}"), t).await;
    assert_eq!(
        (&got.body["start_delay"], &got.body["contact_id"]),
        (&json!(15), &json!(sms_id))
    );
    let res = server
        .delete(&format!("{rules}/{}", first.str("id")), t)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    server
        .get(&format!("{rules}/{}", first.str("id")), t)
        .await
        .assert_error(StatusCode::NOT_FOUND);

    // Every change is in the audit log with its actor.
    let created = events(&server, t, "contact.create").await;
    assert_eq!(created.len(), 3);
    assert_eq!(
        created[2]["changeset"],
        json!({"user_id": u, "type": "sms", "label": "mobile", "address": "+15551234567"})
    );
    assert_eq!(created[2]["actor"], json!({"type": "user", "id": u}));
    assert_eq!(
        created[2]["source"],
        json!({"type": "contact", "id": sms_id})
    );
    let updated = events(&server, t, "contact.update").await;
    assert_eq!(
        updated[1]["changeset"],
        json!({"type": ["webhook", "slack"], "label": ["webhook", "ops channel"]})
    );
    let rule_updates = events(&server, t, "notification_rule.update").await;
    assert_eq!(
        rule_updates[0]["changeset"],
        json!({"start_delay": [5, 15]})
    );
    assert_eq!(
        events(&server, t, "notification_rule.create").await.len(),
        2
    );
    assert_eq!(
        events(&server, t, "notification_rule.delete").await.len(),
        1
    );

    // An update that changes nothing writes nothing.
    let res = server
        .put(
            &format!("{base}/{sms_id}"),
            t,
            json!({"address": " +4930123456 "}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_eq!(events(&server, t, "contact.update").await.len(), 2);

    // Deleting a contact deletes its rules.
    let res = server.delete(&format!("{base}/{sms_id}"), t).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    server
        .get(&format!("{base}/{sms_id}"), t)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    server
        .get(&format!("{rules}/{later_id}"), t)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    assert_eq!(server.get(&rules, t).await.body, json!([]));
    let deleted = events(&server, t, "notification_rule.delete").await;
    assert_eq!(deleted.len(), 2);
    assert_eq!(deleted[0]["source"]["id"], later_id.as_str());
    assert_eq!(events(&server, t, "contact.delete").await.len(), 1);
}

async fn bad_fields_are_422(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let t = &a.token;
    let base = format!("/users/{}/contacts", a.user_id);
    let e164 = "must be an E.164 phone number like +15551234567";
    let https = "must use https (plain http only for localhost, 127.0.0.0/8 or ::1)";
    for (body, errors) in [
        (
            json!({"type": "sms", "address": "555-1234"}),
            json!({"address": [e164]}),
        ),
        (
            json!({"type": "phone", "address": "+05551234567"}),
            json!({"address": [e164]}),
        ),
        (
            json!({"type": "sms", "address": "+1234567890123456"}),
            json!({"address": [e164]}),
        ),
        (
            json!({"type": "webhook", "address": "http://hooks.example.com/x"}),
            json!({"address": [https]}),
        ),
        (
            json!({"type": "slack", "address": "http://10.0.0.1/x"}),
            json!({"address": [https]}),
        ),
        (
            json!({"type": "ntfy", "address": "ntfy.sh/topic"}),
            json!({"address": ["must be a URL like https://example.com/hook (at most 2048 bytes)"]}),
        ),
        (
            json!({"type": "email", "address": "not-an-email"}),
            json!({"address": ["is not a valid email address"]}),
        ),
        (
            json!({"type": "pager", "address": "+15551234567"}),
            json!({"type": ["must be one of email, sms, phone, webhook, slack, ntfy"]}),
        ),
        (
            json!({}),
            json!({"type": ["can't be blank"], "address": ["can't be blank"]}),
        ),
        (
            json!({"type": "sms", "address": "+15551234567", "label": "x".repeat(256)}),
            json!({"label": ["is too long (maximum is 255 bytes)"]}),
        ),
    ] {
        let res = server.post(&base, t, body.clone()).await;
        assert_errors(&res, errors);
    }
    let res = server
        .form(
            Method::POST,
            &base,
            t,
            &[("type", "sms"), ("address", "12345")],
        )
        .await;
    assert_errors(&res, json!({"address": [e164]}));
    assert_eq!(server.get(&base, t).await.body, json!([]), "nothing stored");

    // A new type must fit the address the contact keeps.
    let c = server
        .post(&base, t, json!({"type": "sms", "address": "+15551234567"}))
        .await
        .str("id");
    let res = server
        .put(&format!("{base}/{c}"), t, json!({"type": "webhook"}))
        .await;
    assert_errors(
        &res,
        json!({"address": ["must be a URL like https://example.com/hook (at most 2048 bytes)"]}),
    );
    let res = server
        .put(
            &format!("{base}/{c}"),
            t,
            json!({"address": "+1 555 123 4567"}),
        )
        .await;
    assert_errors(&res, json!({"address": [e164]}));

    // Rules.
    let rules = format!("/users/{}/notification_rules", a.user_id);
    let (other_user, _) = member(&server, &a, "responder").await;
    let others = server
        .post(
            &format!("/users/{other_user}/contacts"),
            t,
            json!({"type": "sms", "address": "+15557654321"}),
        )
        .await;
    assert_eq!(others.status, StatusCode::CREATED, "{}", others.text);
    for (body, errors) in [
        (
            json!({"contact_id": c, "start_delay": -1}),
            json!({"start_delay": ["must be between 0 and 10080"]}),
        ),
        (
            json!({"contact_id": c, "start_delay": 10081}),
            json!({"start_delay": ["must be between 0 and 10080"]}),
        ),
        (
            json!({"contact_id": others.str("id")}),
            json!({"contact_id": ["does not exist"]}),
        ),
        (
            json!({"contact_id": "AAAAAAAA"}),
            json!({"contact_id": ["does not exist"]}),
        ),
        (
            json!({"contact_id": "nope"}),
            json!({"contact_id": ["does not exist"]}),
        ),
        (json!({}), json!({"contact_id": ["can't be blank"]})),
    ] {
        let res = server.post(&rules, t, body.clone()).await;
        assert_errors(&res, errors);
    }
    let res = server
        .form(
            Method::POST,
            &rules,
            t,
            &[("contact_id", &c), ("start_delay", "soon")],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.text);
    assert!(res.body["errors"]["start_delay"].is_array(), "{}", res.text);
    let r = server
        .post(&rules, t, json!({"contact_id": c}))
        .await
        .str("id");
    let res = server
        .put(
            &format!("{rules}/{r}"),
            t,
            json!({"contact_id": others.str("id")}),
        )
        .await;
    assert_errors(&res, json!({"contact_id": ["does not exist"]}));
    let res = server
        .put(&format!("{rules}/{r}"), t, json!({"start_delay": -5}))
        .await;
    assert_errors(
        &res,
        json!({"start_delay": ["must be between 0 and 10080"]}),
    );
}

async fn tenants_are_isolated(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let b = server.register("Beta").await;
    let c = server
        .post(
            &format!("/users/{}/contacts", a.user_id),
            &a.token,
            json!({"type": "email", "address": "ann@example.com"}),
        )
        .await
        .str("id");
    let r = server
        .post(
            &format!("/users/{}/notification_rules", a.user_id),
            &a.token,
            json!({"contact_id": c}),
        )
        .await
        .str("id");
    let bc = server
        .post(
            &format!("/users/{}/contacts", b.user_id),
            &b.token,
            json!({"type": "email", "address": "bob@example.com"}),
        )
        .await
        .str("id");
    let u = &a.user_id;
    let contact = json!({"type": "sms", "address": "+15551234567"});
    let requests: Vec<(Method, String, Value)> = vec![
        (Method::GET, format!("/users/{u}/contacts"), Value::Null),
        (
            Method::POST,
            format!("/users/{u}/contacts"),
            contact.clone(),
        ),
        (Method::GET, format!("/users/{u}/contacts/{c}"), Value::Null),
        (
            Method::PUT,
            format!("/users/{u}/contacts/{c}"),
            contact.clone(),
        ),
        (
            Method::DELETE,
            format!("/users/{u}/contacts/{c}"),
            Value::Null,
        ),
        (
            Method::GET,
            format!("/users/{u}/notification_rules"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/users/{u}/notification_rules"),
            json!({"contact_id": c}),
        ),
        (
            Method::GET,
            format!("/users/{u}/notification_rules/{r}"),
            Value::Null,
        ),
        (
            Method::PUT,
            format!("/users/{u}/notification_rules/{r}"),
            json!({"start_delay": 9}),
        ),
        (
            Method::DELETE,
            format!("/users/{u}/notification_rules/{r}"),
            Value::Null,
        ),
    ];
    // B's admin cannot reach A's user, contacts or rules.
    for (method, path, body) in &requests {
        let body = (!body.is_null()).then(|| body.clone());
        server
            .call(method.clone(), path, Some(&b.token), body)
            .await
            .assert_error(StatusCode::NOT_FOUND);
    }
    // Nor through their own user: B's contact under B's user is fine, A's
    // is not; and B's contact under A's user is not found by A either.
    server
        .get(&format!("/users/{}/contacts/{c}", b.user_id), &b.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    server
        .get(&format!("/users/{u}/contacts/{bc}"), &a.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    let res = server
        .post(
            &format!("/users/{u}/notification_rules"),
            &a.token,
            json!({"contact_id": bc}),
        )
        .await;
    assert_errors(&res, json!({"contact_id": ["does not exist"]}));
    // Nothing changed.
    let got = server
        .get(&format!("/users/{u}/contacts/{c}"), &a.token)
        .await;
    assert_eq!(got.body["address"], "ann@example.com");
    let rules = server
        .get(&format!("/users/{u}/notification_rules"), &a.token)
        .await;
    assert_eq!(rules.body.as_array().unwrap().len(), 1);
    assert_eq!(rules.body[0]["start_delay"], 0);
    assert!(events(&server, &b.token, "contact.create").await.len() == 1);
    // Ids of the wrong shape are a 404 too.
    server
        .get("/users/short/contacts", &a.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    server
        .get(&format!("/users/{u}/notification_rules/%00"), &a.token)
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

async fn roles_are_enforced(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let (responder, rt) = member(&server, &a, "responder").await;
    let (observer, ot) = member(&server, &a, "observer").await;
    let sms = json!({"type": "sms", "address": "+15551234567"});

    // A responder manages their own contacts and rules.
    let own = format!("/users/{responder}/contacts");
    let c = server.post(&own, &rt, sms.clone()).await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.text);
    let c = c.str("id");
    let res = server
        .put(&format!("{own}/{c}"), &rt, json!({"label": "mine"}))
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    let rules = format!("/users/{responder}/notification_rules");
    let r = server.post(&rules, &rt, json!({"contact_id": c})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = r.str("id");
    assert_eq!(
        server
            .put(&format!("{rules}/{r}"), &rt, json!({"start_delay": 3}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // The event names the responder as the actor.
    let ev = events(&server, &a.token, "notification_rule.update").await;
    assert_eq!(ev[0]["actor"], json!({"type": "user", "id": responder}));

    // An admin manages anyone's.
    let admin_made = server.post(&own, &a.token, sms.clone()).await;
    assert_eq!(
        admin_made.status,
        StatusCode::CREATED,
        "{}",
        admin_made.text
    );
    let admin_made = admin_made.str("id");
    let admins = format!("/users/{}/contacts", a.user_id);
    let admin_contact = server.post(&admins, &a.token, sms.clone()).await.str("id");

    // A responder may not touch someone else's; an observer not even their own.
    let obs = format!("/users/{observer}/contacts");
    let forbidden: Vec<(&str, Method, String, Value)> = vec![
        (&rt, Method::POST, admins.clone(), sms.clone()),
        (
            &rt,
            Method::PUT,
            format!("{admins}/{admin_contact}"),
            json!({"label": "x"}),
        ),
        (
            &rt,
            Method::DELETE,
            format!("{admins}/{admin_contact}"),
            Value::Null,
        ),
        (
            &rt,
            Method::POST,
            format!("/users/{}/notification_rules", a.user_id),
            json!({"contact_id": admin_contact}),
        ),
        (&ot, Method::POST, obs.clone(), sms.clone()),
        (&ot, Method::POST, own.clone(), sms.clone()),
        (
            &ot,
            Method::PUT,
            format!("{own}/{c}"),
            json!({"label": "x"}),
        ),
        (&ot, Method::DELETE, format!("{own}/{c}"), Value::Null),
        (&ot, Method::POST, rules.clone(), json!({"contact_id": c})),
        (
            &ot,
            Method::PUT,
            format!("{rules}/{r}"),
            json!({"start_delay": 1}),
        ),
        (&ot, Method::DELETE, format!("{rules}/{r}"), Value::Null),
    ];
    for (token, method, path, body) in forbidden {
        let body = (!body.is_null()).then_some(body);
        let res = server.call(method.clone(), &path, Some(token), body).await;
        res.assert_error(StatusCode::FORBIDDEN);
        assert_eq!(res.body["error"], "forbidden", "{method} {path}");
    }
    // Everyone in the account reads.
    for token in [&rt, &ot] {
        for path in [
            own.clone(),
            format!("{own}/{c}"),
            rules.clone(),
            format!("{rules}/{r}"),
            admins.clone(),
        ] {
            assert_eq!(
                server.get(&path, token).await.status,
                StatusCode::OK,
                "{path}"
            );
        }
    }
    // Nothing forbidden was written.
    let mine = server.get(&own, &rt).await;
    assert_eq!(mine.body.as_array().unwrap().len(), 2);
    assert_eq!(mine.body[0]["label"], "mine");
    assert_eq!(server.get(&obs, &ot).await.body, json!([]));
    assert_eq!(
        server.get(&format!("{rules}/{r}"), &ot).await.body["start_delay"],
        3
    );
    // The responder deletes their own.
    assert_eq!(
        server
            .delete(&format!("{own}/{admin_made}"), &rt)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.delete(&format!("{rules}/{r}"), &rt).await.status,
        StatusCode::NO_CONTENT
    );
}

both_backends!(
    contacts_and_rules_round_trip,
    bad_fields_are_422,
    tenants_are_isolated,
    roles_are_enforced,
);
