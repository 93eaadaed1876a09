//! Email pages against the real binary and a real SMTP server (the
//! in-process sink), on both backends: who is emailed, what the mail says,
//! the answer links in it (GET shows, POST acts, once), retries on 4xx
//! replies and failures on 5xx; and, in process on a manual clock, the
//! pages of links that cannot be used.
#![allow(clippy::unwrap_used)]

mod common;

use common::smtp_sink::{Auth, Mail, SmtpSink, Stage};
use common::{Account, Backend, Res, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// What links in mails start with; tests swap it for the server's base.
const PUBLIC_URL: &str = "http://klaxon.test";

async fn start(backend: Backend, smtp_url: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("KLAXON_SMTP_URL", smtp_url),
        ("KLAXON_SMTP_FROM", "Klaxon <pager@klaxon.test>"),
        ("KLAXON_PUBLIC_URL", PUBLIC_URL),
    ];
    env.extend_from_slice(extra);
    Server::start_with(backend, &env).await
}

async fn trigger(server: &Server, key: &str, body: Value) -> Res {
    let req = server
        .http
        .put(format!("{}/trigger", server.base))
        .header("Authorization", format!("Token token=\"{key}\""))
        .json(&body);
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    Res {
        status,
        headers: Default::default(),
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// An answer link from a mail, pointed at the server under test.
fn local(server: &Server, link: &str) -> String {
    link.replacen(PUBLIC_URL, &server.base, 1)
}

async fn open(server: &Server, method: Method, url: &str) -> Res {
    let res = server.http.request(method, url).send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    Res {
        status,
        headers,
        body: Value::Null,
        text,
    }
}

/// Asserts a browser page with the headers every link page carries.
fn assert_page(res: &Res, status: StatusCode, says: &str) {
    assert_eq!(res.status, status, "{}", res.text);
    assert!(
        res.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{:?}",
        res.headers
    );
    assert_eq!(res.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        res.header("referrer-policy").as_deref(),
        Some("no-referrer")
    );
    assert!(res
        .header("x-robots-tag")
        .unwrap_or_default()
        .contains("noindex"));
    assert!(res
        .header("content-security-policy")
        .unwrap_or_default()
        .starts_with("default-src 'none'"));
    assert!(res.text.contains(says), "{says:?} not in {}", res.text);
}

async fn incident_state(server: &Server, a: &Account, id: &str) -> String {
    let res = server.get(&format!("/incidents/{id}"), &a.token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    res.str("state")
}

/// The two links of a page, the same in both parts: (acknowledge, resolve).
fn answer_links(mail: &Mail) -> (String, String) {
    let text = Mail::links_in(&mail.text(), PUBLIC_URL);
    let html = Mail::links_in(&mail.html(), PUBLIC_URL);
    assert_eq!(text.len(), 2, "{}", mail.text());
    assert_eq!(text, html, "both parts carry the same links");
    (text[0].clone(), text[1].clone())
}

async fn a_page_is_emailed_once_and_its_links_answer_it(backend: Backend) {
    let sink = SmtpSink::start().await;
    let server = start(backend, &sink.url(), &[]).await;
    let a = server.register("Alpha").await;
    let s = server
        .setup_service(&a, "Disks", &[a.user_id.as_str()], 1)
        .await;
    let opened = trigger(
        &server,
        &s.integration_key,
        json!({
            "message": "disk full on db-1",
            "key": "disk-1",
            "description": "/var is at 99% <b>now</b>",
            "details": {"host": "db-1", "used": "99%"},
        }),
    )
    .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.text);
    let id = opened.str("id");

    // The user has no contacts: the page goes to their sign-in address.
    let mails = sink.wait_for(1).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.to, std::slice::from_ref(&a.email));
    assert_eq!(mail.from, "pager@klaxon.test");
    assert_eq!(mail.subject(), "ALERT [Disks] disk full on db-1");
    assert!(mail.text().contains("/var is at 99% <b>now</b>"));
    assert!(mail
        .html()
        .contains("/var is at 99% &lt;b&gt;now&lt;/b&gt;"));
    assert!(mail.text().contains("\"host\": \"db-1\""));
    assert!(mail
        .header("Content-Type")
        .unwrap_or_default()
        .starts_with("multipart/alternative"));
    let message_id = mail.header("Message-ID").unwrap();
    let (ack, resolve) = answer_links(mail);
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.first().is_some_and(|r| r["status"] == "sent")
        })
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["channel"], "email");
    assert_eq!(rows[0]["provider_id"], json!(message_id));

    // The same problem again pages nobody: no row, no mail (a later page
    // about another problem goes out after anything the repeat queued).
    let again = trigger(
        &server,
        &s.integration_key,
        json!({"message": "disk full on db-1", "key": "disk-1"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    let other = trigger(
        &server,
        &s.integration_key,
        json!({"message": "cpu hot", "key": "cpu-1"}),
    )
    .await;
    assert_eq!(other.status, StatusCode::CREATED);
    let mails = sink.wait_for(2).await;
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[1].subject(), "ALERT [Disks] cpu hot");
    let rows = server.notifications_when(&a.token, &id, |_| true).await;
    assert_eq!(rows.len(), 1, "still one page: {rows:?}");

    // GET shows the incident and a button, and changes nothing (mail
    // scanners follow links).
    let shown = open(&server, Method::GET, &local(&server, &ack)).await;
    assert_page(&shown, StatusCode::OK, "Acknowledge incident");
    assert!(shown.text.contains("disk full on db-1"));
    assert!(shown.text.contains("<form method=\"post\">"));
    assert_eq!(incident_state(&server, &a, &id).await, "triggered");

    // A forged or altered link is refused and changes nothing.
    let (payload, mac) = resolve.rsplit_once('.').unwrap();
    let flipped = if mac.starts_with('A') { "B" } else { "A" };
    let forged = format!("{payload}.{flipped}{}", &mac[1..]);
    for url in [
        forged,
        format!("{}/links/not-a-token", PUBLIC_URL),
        format!("{}/links/{}", PUBLIC_URL, "x".repeat(3000)),
    ] {
        for method in [Method::GET, Method::POST] {
            let res = open(&server, method, &local(&server, &url)).await;
            assert_page(&res, StatusCode::NOT_FOUND, "This link is not valid");
        }
    }
    assert_eq!(incident_state(&server, &a, &id).await, "triggered");

    // POST acknowledges, as the user the mail went to.
    let acked = open(&server, Method::POST, &local(&server, &ack)).await;
    assert_page(&acked, StatusCode::OK, "Incident acknowledged");
    assert_eq!(incident_state(&server, &a, &id).await, "acknowledged");
    let events = server
        .get(&format!("/incidents/{id}/events"), &a.token)
        .await;
    let ack_event = events
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "incident.acknowledge")
        .cloned()
        .unwrap_or_else(|| panic!("no acknowledge event in {}", events.text));
    assert_eq!(ack_event["actor"], json!({"type": "user", "id": a.user_id}));

    // A link works once.
    let reused = open(&server, Method::POST, &local(&server, &ack)).await;
    assert_page(&reused, StatusCode::GONE, "This link was already used");

    // The resolve link resolves; the acknowledge link's page then says so.
    let resolved = open(&server, Method::POST, &local(&server, &resolve)).await;
    assert_page(&resolved, StatusCode::OK, "Incident resolved");
    assert_eq!(incident_state(&server, &a, &id).await, "resolved");
    let shown = open(&server, Method::GET, &local(&server, &ack)).await;
    assert_page(&shown, StatusCode::OK, "Already resolved");
    assert!(!shown.text.contains("<form"));
}

async fn an_email_contact_gets_the_page_through_an_authenticated_relay(backend: Backend) {
    let sink = SmtpSink::start().await;
    let server = start(backend, &sink.url_with_auth("pager", "s3cret"), &[]).await;
    let a = server.register("Alpha").await;
    let contact = server
        .post(
            &format!("/users/{}/contacts", a.user_id),
            &a.token,
            json!({"type": "email", "label": "pager", "address": "oncall@example.com"}),
        )
        .await;
    assert_eq!(contact.status, StatusCode::CREATED, "{}", contact.text);
    let rule = server
        .post(
            &format!("/users/{}/notification_rules", a.user_id),
            &a.token,
            json!({"contact_id": contact.str("id"), "start_delay": 0}),
        )
        .await;
    assert_eq!(rule.status, StatusCode::CREATED, "{}", rule.text);
    let s = server
        .setup_service(&a, "Web", &[a.user_id.as_str()], 1)
        .await;
    let opened = trigger(
        &server,
        &s.integration_key,
        json!({"message": "5xx rate über 5%\r\nBcc: x@example.com", "key": "web-1"}),
    )
    .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.text);
    let mails = sink.wait_for(1).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.to, ["oncall@example.com"]);
    assert_eq!(mail.header("Bcc"), None, "no header injection");
    assert_eq!(
        mail.subject(),
        "ALERT [Web] 5xx rate über 5% Bcc: x@example.com"
    );
    let auth = Auth {
        mechanism: "PLAIN".into(),
        username: "pager".into(),
        password: "s3cret".into(),
    };
    assert_eq!(sink.auths(), std::slice::from_ref(&auth));
    assert_eq!(mail.auth, Some(auth));
    answer_links(mail);
}

async fn a_transient_failure_is_retried_until_delivered(backend: Backend) {
    let sink = SmtpSink::start().await;
    sink.fail(Stage::Data, "451 4.3.0 Try again later", 2);
    // Fast virtual time: the 5 s and 10 s backoffs pass in 50 and 100 ms.
    let server = start(backend, &sink.url(), &[("KLAXON_CLOCK_SPEED", "100")]).await;
    let a = server.register("Alpha").await;
    let s = server
        .setup_service(&a, "Disks", &[a.user_id.as_str()], 1)
        .await;
    let id = trigger(
        &server,
        &s.integration_key,
        json!({"message": "disk full", "key": "disk-1"}),
    )
    .await
    .str("id");
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.first().is_some_and(|r| r["status"] == "sent")
        })
        .await;
    let page = &rows[0];
    assert_eq!(page["status"], "sent", "{rows:?}");
    assert_eq!(page["attempts"], 3, "{rows:?}");
    let mails = sink.wait_for(1).await;
    assert_eq!(mails[0].subject(), "ALERT [Disks] disk full");
    assert_eq!(
        page["provider_id"],
        json!(mails[0].header("Message-ID").unwrap())
    );
    let data_commands = sink
        .commands()
        .iter()
        .filter(|c| c.eq_ignore_ascii_case("DATA"))
        .count();
    assert_eq!(data_commands, 3, "{:?}", sink.commands());
}

async fn a_permanent_failure_is_recorded_with_the_reply(backend: Backend) {
    let sink = SmtpSink::start().await;
    sink.fail(
        Stage::Rcpt,
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown",
        1,
    );
    let server = start(backend, &sink.url(), &[]).await;
    let a = server.register("Alpha").await;
    let s = server
        .setup_service(&a, "Disks", &[a.user_id.as_str()], 1)
        .await;
    let id = trigger(
        &server,
        &s.integration_key,
        json!({"message": "disk full", "key": "disk-1"}),
    )
    .await
    .str("id");
    let rows = server
        .notifications_when(&a.token, &id, |rows| {
            rows.first().is_some_and(|r| r["status"] == "failed")
        })
        .await;
    let page = &rows[0];
    assert_eq!(page["status"], "failed", "{rows:?}");
    assert_eq!(page["attempts"], 1);
    let error = page["error"].as_str().unwrap_or_default();
    assert!(error.contains("550"), "{error}");
    assert!(error.contains("User unknown"), "{error}");
    assert!(sink.mails().is_empty());
}

both_backends!(
    a_page_is_emailed_once_and_its_links_answer_it,
    an_email_contact_gets_the_page_through_an_authenticated_relay,
    a_transient_failure_is_retried_until_delivered,
    a_permanent_failure_is_recorded_with_the_reply,
);

/// In process, on a manual clock: the pages for links that cannot be used
/// (expired, sent to someone who may no longer act, about an incident
/// since deleted), none of which changes anything.
mod link_pages {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use klaxon_server::app::{router, AppState};
    use klaxon_server::clock::Clock;
    use klaxon_server::config::ConfigArgs;
    use klaxon_server::notify::links::LinkClaim;
    use klaxon_server::notify::LinkAction;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    const NOW: i64 = 1_800_000_000_000;

    async fn call(
        app: &axum::Router,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("Token token=\"{token}\""));
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_default();
        let res = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = res.status();
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if path.starts_with("/links/") {
            assert!(ct.starts_with("text/html"), "{path}: {ct} {text}");
        }
        (status, text)
    }

    async fn json_call(
        app: &axum::Router,
        method: Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> Value {
        let (status, text) = call(app, method, path, token, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unusable_links_get_their_pages_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = klaxon_store::connect(&format!("sqlite://{}/k.db", dir.path().display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let state = AppState::load(
            store,
            Clock::manual(NOW),
            Arc::new(ConfigArgs::default().load().unwrap()),
        )
        .await
        .unwrap();
        let links = state.links.clone();
        let app = router(state);
        let reg = json_call(&app, Method::POST, "/registrations", "", json!({
            "account_name": "Alpha", "name": "Ann", "email": "ann@example.com", "password": "correct horse",
        }))
        .await;
        let token = reg["token"].as_str().unwrap();
        let account = reg["account_id"].as_str().unwrap();
        let ann = reg["user_id"].as_str().unwrap();
        let observer = json_call(
            &app,
            Method::POST,
            "/users",
            token,
            json!({
                "name": "Olga", "email": "olga@example.com", "role": "observer",
            }),
        )
        .await;
        let policy = json_call(&app, Method::POST, "/policies", token, json!({"name": "P"})).await;
        let pid = policy["id"].as_str().unwrap();
        json_call(
            &app,
            Method::POST,
            &format!("/policies/{pid}/rules"),
            token,
            json!({"escalation_timeout": 30, "assignment": {"type": "user", "id": ann}}),
        )
        .await;
        let service = json_call(
            &app,
            Method::POST,
            "/services",
            token,
            json!({"name": "Disks", "policy_id": pid}),
        )
        .await;
        let sid = service["id"].as_str().unwrap();
        let incident = json_call(
            &app,
            Method::POST,
            &format!("/services/{sid}/incidents"),
            token,
            json!({"message": "disk full"}),
        )
        .await;
        let iid = incident["id"].as_str().unwrap();
        let link = |user: &str, expires_at: i64| {
            format!(
                "/links/{}",
                links.token(&LinkClaim {
                    account_id: account.to_owned(),
                    incident_id: iid.to_owned(),
                    user_id: user.to_owned(),
                    message_id: format!("msg-{user}-{expires_at}"),
                    action: LinkAction::Resolve,
                    expires_at,
                })
            )
        };
        let state_now = || async {
            let (_, text) =
                call(&app, Method::GET, &format!("/incidents/{iid}"), token, None).await;
            serde_json::from_str::<Value>(&text).unwrap()["state"].clone()
        };

        // Expired.
        let expired = link(ann, NOW);
        for method in [Method::GET, Method::POST] {
            let (status, text) = call(&app, method, &expired, "", None).await;
            assert_eq!(status, StatusCode::GONE, "{text}");
            assert!(text.contains("This link has expired"), "{text}");
        }
        // Sent to an observer (someone whose role changed since).
        let olga = link(observer["id"].as_str().unwrap(), NOW + 60_000);
        let (status, text) = call(&app, Method::POST, &olga, "", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
        assert!(text.contains("You cannot act on incidents"), "{text}");
        assert_eq!(state_now().await, "triggered");
        // The incident deleted since.
        let valid = link(ann, NOW + 60_000);
        let (status, text) = call(&app, Method::GET, &valid, "", None).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("Resolve incident"), "{text}");
        let (status, _) = call(
            &app,
            Method::DELETE,
            &format!("/incidents/{iid}"),
            token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        for method in [Method::GET, Method::POST] {
            let (status, text) = call(&app, method, &valid, "", None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
            assert!(text.contains("Incident not found"), "{text}");
        }
    }
}
