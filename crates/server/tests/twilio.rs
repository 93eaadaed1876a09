//! SMS and voice pages through Twilio, and the answers that come back,
//! against the real binary with a fake Twilio: what is sent (once), how
//! provider failures are retried or recorded, signed SMS replies and key
//! presses acting as the user, delivery reports, and SMS bundles.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::fake_http::{Answer, FakeHttp, Recorded, Responder};
use common::{Account, Backend, Res, Server, Setup};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha1::Sha1;

const SID: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "twilio-test-auth-token";
const FROM: &str = "+15550000000";
const PUBLIC: &str = "http://klaxon.test";
const NUMBER: &str = "+15551110001";
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// The fake Twilio

/// Checks a request as Twilio would: the account's resource path, HTTP
/// Basic auth with the account SID and auth token, the fields each
/// resource needs. Returns the resource (`Messages` or `Calls`).
fn check(req: &Recorded) -> Result<&'static str, String> {
    let resource = match req.uri.as_str() {
        u if u == format!("/2010-04-01/Accounts/{SID}/Messages.json") => "Messages",
        u if u == format!("/2010-04-01/Accounts/{SID}/Calls.json") => "Calls",
        other => return Err(format!("no such resource {other}")),
    };
    let auth = format!("Basic {}", BASE64.encode(format!("{SID}:{TOKEN}")));
    if req.header("authorization").as_deref() != Some(auth.as_str()) {
        return Err("authenticate".into());
    }
    if req.method != "POST" {
        return Err("method".into());
    }
    let field = |name: &str| req.field(name).filter(|v| !v.is_empty());
    if field("From").as_deref() != Some(FROM) {
        return Err("From must be the account's number".into());
    }
    if field("To").is_none() {
        return Err("A 'To' phone number is required.".into());
    }
    if field("StatusCallback").as_deref() != Some(&format!("{PUBLIC}/twilio/status")) {
        return Err("StatusCallback".into());
    }
    match resource {
        "Messages" if field("Body").is_none() => Err("A text message body is required.".into()),
        "Calls"
            if !field("Url")
                .unwrap_or_default()
                .starts_with(&format!("{PUBLIC}/voice?message=")) =>
        {
            Err("Url".into())
        }
        _ => Ok(resource),
    }
}

fn json_answer(status: StatusCode, body: Value) -> Answer {
    (
        status,
        vec![("content-type", "application/json".into())],
        body.to_string(),
    )
}

/// Twilio's answer to a good request (`201` with a fresh `sid`), or its
/// `400` to a bad one.
fn twilio_answer(req: &Recorded, n: usize) -> Answer {
    match check(req) {
        Ok("Messages") => json_answer(
            StatusCode::CREATED,
            json!({"sid": format!("SM{n:032}"), "status": "queued"}),
        ),
        Ok(_) => json_answer(
            StatusCode::CREATED,
            json!({"sid": format!("CA{n:032}"), "status": "queued"}),
        ),
        Err(message) => json_answer(
            StatusCode::BAD_REQUEST,
            json!({"code": 21000, "message": message, "status": 400}),
        ),
    }
}

fn twilio() -> Responder {
    Arc::new(twilio_answer)
}

/// The requests for one resource.
fn of(requests: &[Recorded], resource: &str) -> Vec<Recorded> {
    requests
        .iter()
        .filter(|r| r.uri.ends_with(&format!("/{resource}.json")))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// The server, its account, and signed webhooks

async fn start(backend: Backend, fake: &FakeHttp, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("KLAXON_TWILIO_ACCOUNT_SID", SID),
        ("KLAXON_TWILIO_AUTH_TOKEN", TOKEN),
        ("KLAXON_TWILIO_FROM_NUMBER", FROM),
        ("KLAXON_TWILIO_API_URL", fake.base.as_str()),
        ("KLAXON_PUBLIC_URL", PUBLIC),
    ];
    env.extend_from_slice(extra);
    Server::start_with(backend, &env).await
}

/// An account whose owner is paged by the Disks service, with the given
/// contacts (type, number).
async fn paged_owner(server: &Server, contacts: &[(&str, &str)]) -> (Account, Setup) {
    let a = server.register("Alpha").await;
    for (kind, address) in contacts {
        add_contact(server, &a, &a.user_id, kind, address).await;
    }
    let s = server
        .setup_service(&a, "Disks", &[a.user_id.as_str()], 1)
        .await;
    (a, s)
}

async fn add_contact(server: &Server, a: &Account, user: &str, kind: &str, address: &str) {
    let res = server
        .post(
            &format!("/users/{user}/contacts"),
            &a.token,
            json!({"type": kind, "label": kind, "address": address}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
}

async fn trigger(server: &Server, s: &Setup, message: &str, key: &str) -> Res {
    server
        .integration(
            "trigger",
            &s.integration_key,
            &[("message", message), ("key", key)],
        )
        .await
}

async fn open(server: &Server, s: &Setup, message: &str, key: &str) -> String {
    let res = trigger(server, s, message, key).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    res.str("id")
}

/// Twilio's signature of a request to `PUBLIC + path` with `fields`,
/// computed here independently of the server's code.
fn sign(path: &str, fields: &[(&str, &str)]) -> String {
    let mut sorted = fields.to_vec();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(TOKEN.as_bytes()).unwrap();
    mac.update(format!("{PUBLIC}{path}").as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    BASE64.encode(mac.finalize().into_bytes())
}

/// How a webhook is signed.
enum Signature<'a> {
    Valid,
    /// Signed for other fields than those sent.
    For(&'a [(&'a str, &'a str)]),
    Missing,
}

/// A webhook as Twilio sends it: a form POST to `path` (path and query).
async fn webhook(server: &Server, path: &str, fields: &[(&str, &str)], sig: Signature<'_>) -> Res {
    let mut req = server
        .http
        .post(format!("{}{path}", server.base))
        .form(fields);
    match sig {
        Signature::Valid => req = req.header("X-Twilio-Signature", sign(path, fields)),
        Signature::For(other) => req = req.header("X-Twilio-Signature", sign(path, other)),
        Signature::Missing => {}
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Res {
        status,
        headers,
        text,
        body,
    }
}

/// An SMS from `from` saying `body`; the text of the reply.
async fn sms(server: &Server, from: &str, body: &str) -> String {
    let fields = [
        ("MessageSid", "SMinbound0000000000000000000000001"),
        ("AccountSid", SID),
        ("From", from),
        ("To", FROM),
        ("Body", body),
    ];
    let res = webhook(server, "/sms", &fields, Signature::Valid).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert!(res
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/xml"));
    between(&res.text, "<Response><Message>", "</Message></Response>")
}

fn between(text: &str, start: &str, end: &str) -> String {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start} in {text}"))
        + start.len();
    let to = text[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end} in {text}"))
        + from;
    text[from..to].to_owned()
}

// ---------------------------------------------------------------------------
// Reading the server's state

/// The rows of `path` (a notifications list) once `done` holds for them.
async fn rows_when(
    server: &Server,
    token: &str,
    path: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let res = server.get(path, token).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        let rows = res.body.as_array().unwrap().clone();
        if done(&rows) {
            return rows;
        }
        assert!(started.elapsed() < WAIT, "gave up waiting: {rows:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An incident's messages once none is queued or being sent.
async fn settled(server: &Server, token: &str, incident: &str) -> Vec<Value> {
    rows_when(
        server,
        token,
        &format!("/incidents/{incident}/notifications"),
        |rows| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| r["status"] != "queued" && r["status"] != "sending")
        },
    )
    .await
}

fn channel<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<&Value> = rows.iter().filter(|r| r["channel"] == name).collect();
    assert_eq!(found.len(), 1, "one {name} message: {rows:#?}");
    found[0]
}

async fn state(server: &Server, token: &str, id: &str) -> String {
    let res = server.get(&format!("/incidents/{id}"), token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    res.str("state")
}

/// The incident's audit events, oldest first.
async fn events(server: &Server, token: &str, id: &str) -> Vec<Value> {
    let res = server
        .get(&format!("/incidents/{id}/events?per_page=100"), token)
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let mut list = res.body.as_array().unwrap().clone();
    list.reverse();
    list
}

/// The one event with `action`, which `user` must have done.
async fn assert_done_by(server: &Server, token: &str, id: &str, action: &str, user: &str) {
    let done: Vec<Value> = events(server, token, id)
        .await
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect();
    assert_eq!(done.len(), 1, "{done:#?}");
    assert_eq!(done[0]["actor"], json!({"type": "user", "id": user}));
}

// ---------------------------------------------------------------------------
// Sending

async fn a_trigger_texts_and_calls_once(backend: Backend) {
    let fake = FakeHttp::start(twilio()).await;
    // A hundredfold clock: the fence's text, held for the 30 s bundle
    // window after the first, goes 0.3 s later.
    let server = start(backend, &fake, &[("KLAXON_CLOCK_SPEED", "100")]).await;
    let (a, s) = paged_owner(&server, &[("sms", NUMBER), ("phone", NUMBER)]).await;
    let id = open(&server, &s, "disk full", "disk-1").await;
    let rows = settled(&server, &a.token, &id).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");

    let text = &of(&requests, "Messages")[0];
    assert_eq!(text.field("To").as_deref(), Some(NUMBER));
    assert_eq!(
        text.field("Body").as_deref(),
        Some("ALERT [Disks] disk full")
    );
    let sms_row = channel(&rows, "sms");
    assert_eq!(sms_row["status"], "sent");
    assert!(sms_row["provider_id"].as_str().unwrap().starts_with("SM"));

    let call = &of(&requests, "Calls")[0];
    assert_eq!(call.field("To").as_deref(), Some(NUMBER));
    let call_row = channel(&rows, "phone");
    assert_eq!(
        call.field("Url"),
        Some(format!(
            "{PUBLIC}/voice?message={}",
            call_row["id"].as_str().unwrap()
        ))
    );
    assert_eq!(call_row["status"], "sent");
    assert!(call_row["provider_id"].as_str().unwrap().starts_with("CA"));

    // The same problem again pages nobody: behind a second incident's
    // pages (a fence), still only the first incident's two.
    let again = trigger(&server, &s, "disk full", "disk-1").await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{}", again.text);
    let fence = open(&server, &s, "fence", "fence-1").await;
    settled(&server, &a.token, &fence).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    let texts: Vec<String> = of(&requests, "Messages")
        .iter()
        .map(|r| r.field("Body").unwrap())
        .collect();
    assert_eq!(texts, ["ALERT [Disks] disk full", "ALERT [Disks] fence"]);
    assert_eq!(settled(&server, &a.token, &id).await.len(), 2);
}

async fn a_failing_provider_is_retried_until_it_takes_the_message(backend: Backend) {
    let fake = FakeHttp::start(Arc::new(|req, n| {
        if n < 2 {
            json_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
            )
        } else {
            twilio_answer(req, n)
        }
    }))
    .await;
    // A hundredfold clock: the 5 s and 10 s backoffs take 50 and 100 ms.
    let server = start(backend, &fake, &[("KLAXON_CLOCK_SPEED", "100")]).await;
    let (a, s) = paged_owner(&server, &[("sms", NUMBER)]).await;
    let id = open(&server, &s, "disk full", "disk-1").await;
    let rows = settled(&server, &a.token, &id).await;
    let row = channel(&rows, "sms");
    assert_eq!(row["status"], "sent", "{row:#?}");
    assert_eq!(row["attempts"], 3);
    assert_eq!(row["error"], Value::Null);
    assert_eq!(row["provider_id"], json!(format!("SM{:032}", 2)));
    let texts = of(&fake.requests(), "Messages");
    assert_eq!(texts.len(), 3);
    assert!(texts
        .iter()
        .all(|t| t.field("Body").as_deref() == Some("ALERT [Disks] disk full")));
}

async fn a_refused_number_is_recorded_as_failed(backend: Backend) {
    let fake = FakeHttp::start(Arc::new(|_, _| {
        json_answer(
            StatusCode::BAD_REQUEST,
            json!({"code": 21211, "message": "The 'To' number +15551110001 is not a valid phone number.", "status": 400}),
        )
    }))
    .await;
    let server = start(backend, &fake, &[]).await;
    let (a, s) = paged_owner(&server, &[("sms", NUMBER)]).await;
    let id = open(&server, &s, "disk full", "disk-1").await;
    let rows = settled(&server, &a.token, &id).await;
    let row = channel(&rows, "sms");
    assert_eq!(row["status"], "failed", "{row:#?}");
    assert_eq!(row["attempts"], 1);
    assert_eq!(
        row["error"],
        "Twilio answered 400: The 'To' number +15551110001 is not a valid phone number. (error 21211)"
    );
    assert_eq!(row["provider_id"], Value::Null);
    assert_eq!(fake.requests().len(), 1, "not retried");
}

/// Texts to one number that queue up while the sender is busy go out as
/// one. The sender is kept busy deterministically: the fake holds its
/// answers, and another user's calls (one more than the sender sends at
/// once) fill every sending slot, so the sender has claimed the last call
/// and waits for a slot before the texts are even queued. Once the fake
/// answers, the sender's next claim takes every text at once.
async fn texts_queued_together_go_out_as_one(backend: Backend) {
    let (fake, gate) = FakeHttp::gated(twilio()).await;
    let server = start(backend, &fake, &[]).await;
    let (a, disks) = paged_owner(&server, &[("sms", NUMBER)]).await;
    let blocker = server
        .post(
            "/users",
            &a.token,
            json!({"name": "Blocker", "email": "blocker@alpha.example.com", "role": "responder"}),
        )
        .await;
    assert_eq!(blocker.status, StatusCode::CREATED, "{}", blocker.text);
    let blocker = blocker.str("id");
    add_contact(&server, &a, &blocker, "phone", "+15552220002").await;
    let calls = server
        .setup_service(&a, "Calls", &[blocker.as_str()], 1)
        .await;

    let slots = klaxon_server::notify::CONCURRENCY;
    for n in 0..=slots {
        open(&server, &calls, "busy", &format!("busy-{n}")).await;
    }
    fake.wait_for(slots, WAIT).await;
    rows_when(
        &server,
        &a.token,
        &format!("/users/{blocker}/notifications"),
        |rows| rows.len() == slots + 1 && rows.iter().all(|r| r["status"] == "sending"),
    )
    .await;

    let names = ["alpha", "bravo", "charlie", "delta", "echo"];
    let mut ids = Vec::new();
    for name in names {
        ids.push(open(&server, &disks, name, name).await);
    }
    gate.open();
    let mine = rows_when(
        &server,
        &a.token,
        &format!("/users/{}/notifications", a.user_id),
        |rows| rows.len() == names.len() && rows.iter().all(|r| r["status"] == "sent"),
    )
    .await;
    let texts: Vec<String> = of(&fake.requests(), "Messages")
        .iter()
        .map(|r| r.field("Body").unwrap())
        .collect();
    assert_eq!(texts.len(), 1, "{texts:#?}");
    assert!(texts[0].starts_with("5 ALERTS: "), "{texts:?}");
    for name in names {
        let mentions: usize = texts
            .iter()
            .map(|t| t.matches(&format!("[Disks] {name}")).count())
            .sum();
        assert_eq!(mentions, 1, "{name} in {texts:?}");
    }
    // One text, one provider id for every incident it carried.
    let sids: Vec<&Value> = mine.iter().map(|r| &r["provider_id"]).collect();
    assert!(
        sids.iter().all(|s| *s == sids[0] && s.is_string()),
        "{mine:#?}"
    );
    let incidents: Vec<&str> = mine
        .iter()
        .map(|r| r["incident_id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(incidents.contains(&id.as_str()));
    }
}

// ---------------------------------------------------------------------------
// Answers

async fn an_sms_reply_acknowledges_as_the_user(backend: Backend) {
    let fake = FakeHttp::start(twilio()).await;
    let server = start(backend, &fake, &[]).await;
    let (a, s) = paged_owner(&server, &[("sms", NUMBER)]).await;
    let id = open(&server, &s, "disk full", "disk-1").await;
    settled(&server, &a.token, &id).await;

    // Forged and unsigned replies are refused and change nothing.
    let fields = [("From", NUMBER), ("To", FROM), ("Body", "4")];
    let forged = webhook(
        &server,
        "/sms",
        &fields,
        Signature::For(&[("From", NUMBER), ("To", FROM), ("Body", "help")]),
    )
    .await;
    forged.assert_error(StatusCode::FORBIDDEN);
    let unsigned = webhook(&server, "/sms", &fields, Signature::Missing).await;
    unsigned.assert_error(StatusCode::FORBIDDEN);
    // Signed for another URL (the signature covers the path).
    let mut req = server
        .http
        .post(format!("{}/sms", server.base))
        .form(&fields);
    req = req.header("X-Twilio-Signature", sign("/voice", &fields));
    assert_eq!(req.send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(state(&server, &a.token, &id).await, "triggered");

    // Unknown numbers and other words get help, and change nothing.
    let reply = sms(&server, "+15559998888", "4").await;
    assert!(reply.contains("does not know this number"), "{reply}");
    let reply = sms(&server, NUMBER, "ack please").await;
    assert!(reply.contains("reply 4 to acknowledge"), "{reply}");
    assert_eq!(state(&server, &a.token, &id).await, "triggered");

    let reply = sms(&server, NUMBER, "4").await;
    assert_eq!(reply, "Acknowledged 1 incident");
    assert_eq!(state(&server, &a.token, &id).await, "acknowledged");
    assert_done_by(&server, &a.token, &id, "incident.acknowledge", &a.user_id).await;
    let reply = sms(&server, NUMBER, "4").await;
    assert_eq!(reply, "Klaxon: no incidents to acknowledge.");
}

async fn replies_target_one_incident_or_resolve_them_all(backend: Backend) {
    let fake = FakeHttp::start(twilio()).await;
    let server = start(backend, &fake, &[]).await;
    let (a, s) = paged_owner(&server, &[("sms", NUMBER)]).await;
    let one = open(&server, &s, "disk full", "disk-1").await;
    let two = open(&server, &s, "cpu hot", "cpu-1").await;

    let reply = sms(&server, NUMBER, &format!("4 {two}")).await;
    assert_eq!(reply, format!("Acknowledged incident {two}: cpu hot"));
    assert_eq!(state(&server, &a.token, &one).await, "triggered");
    assert_eq!(state(&server, &a.token, &two).await, "acknowledged");
    let reply = sms(&server, NUMBER, &format!("4 {two}")).await;
    assert_eq!(reply, format!("Incident {two} is acknowledged already."));
    let reply = sms(&server, NUMBER, "4 Zz9Zz9Zz").await;
    assert_eq!(reply, "Klaxon: no incident Zz9Zz9Zz.");

    let reply = sms(&server, NUMBER, "6").await;
    assert_eq!(reply, "Resolved 2 incidents");
    for id in [&one, &two] {
        assert_eq!(state(&server, &a.token, id).await, "resolved");
        assert_done_by(&server, &a.token, id, "incident.resolve", &a.user_id).await;
    }
    let reply = sms(&server, NUMBER, &format!("8 {one}")).await;
    assert_eq!(
        reply,
        format!("Cannot escalate incident {one}: it is resolved.")
    );
}

async fn a_call_reads_the_alert_and_a_key_acknowledges(backend: Backend) {
    let fake = FakeHttp::start(twilio()).await;
    let server = start(backend, &fake, &[]).await;
    let (a, s) = paged_owner(&server, &[("phone", NUMBER)]).await;
    let id = open(&server, &s, "disk <sda> & \"full\"", "disk-1").await;
    let rows = settled(&server, &a.token, &id).await;
    let message = channel(&rows, "phone")["id"].as_str().unwrap().to_owned();
    let url = of(&fake.requests(), "Calls")[0].field("Url").unwrap();
    let path = url.strip_prefix(PUBLIC).unwrap().to_owned();
    assert_eq!(path, format!("/voice?message={message}"));

    let call = [
        ("CallSid", "CA00000000000000000000000000000000"),
        ("AccountSid", SID),
        ("From", FROM),
        ("To", NUMBER),
        ("CallStatus", "in-progress"),
    ];
    let twiml = webhook(&server, &path, &call, Signature::Valid).await;
    assert_eq!(twiml.status, StatusCode::OK, "{}", twiml.text);
    assert!(twiml
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/xml"));
    let receive = format!("{PUBLIC}/voice/receive?message={message}");
    assert!(
        twiml.text.contains(&format!(
            "<Gather numDigits=\"1\" method=\"POST\" action=\"{receive}\">"
        )),
        "{}",
        twiml.text
    );
    assert!(
        twiml.text.contains(
            "<Say>Klaxon alert. Service Disks. disk &lt;sda&gt; &amp; &quot;full&quot;.</Say>"
        ),
        "{}",
        twiml.text
    );
    assert!(twiml
        .text
        .contains("Press 4 to acknowledge, 6 to resolve, 8 to escalate."));
    webhook(&server, &path, &call, Signature::Missing)
        .await
        .assert_error(StatusCode::FORBIDDEN);

    let key = |digits: &'static str| {
        let mut fields = call.to_vec();
        fields.push(("Digits", digits));
        fields
    };
    let receive_path = format!("/voice/receive?message={message}");
    // A key that does nothing asks again.
    let again = webhook(&server, &receive_path, &key("5"), Signature::Valid).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(
        again.text.contains("that key does nothing"),
        "{}",
        again.text
    );
    assert!(again.text.contains("<Gather"), "{}", again.text);
    // A forged key press does nothing.
    webhook(&server, &receive_path, &key("4"), Signature::For(&key("5")))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    assert_eq!(state(&server, &a.token, &id).await, "triggered");

    let done = webhook(&server, &receive_path, &key("4"), Signature::Valid).await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(
        done.text
            .contains("<Say>Acknowledged. Goodbye.</Say><Hangup/>"),
        "{}",
        done.text
    );
    assert_eq!(state(&server, &a.token, &id).await, "acknowledged");
    assert_done_by(&server, &a.token, &id, "incident.acknowledge", &a.user_id).await;
    // An unknown message is no alert.
    let gone = webhook(&server, "/voice?message=Zz9Zz9Zz", &call, Signature::Valid).await;
    assert!(gone.text.contains("no longer available"), "{}", gone.text);
}

async fn status_callbacks_record_delivery(backend: Backend) {
    let fake = FakeHttp::start(twilio()).await;
    let server = start(backend, &fake, &[]).await;
    let (a, s) = paged_owner(&server, &[("sms", NUMBER), ("phone", "+15553330003")]).await;
    let id = open(&server, &s, "disk full", "disk-1").await;
    let rows = settled(&server, &a.token, &id).await;
    let sms_sid = channel(&rows, "sms")["provider_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let call_sid = channel(&rows, "phone")["provider_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let delivered = [
        ("MessageSid", sms_sid.as_str()),
        ("MessageStatus", "delivered"),
        ("AccountSid", SID),
    ];
    // Forged first: nothing changes.
    webhook(
        &server,
        "/twilio/status",
        &delivered,
        Signature::For(&[("MessageSid", &sms_sid), ("MessageStatus", "sent")]),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN);
    // An unknown sid is acknowledged and changes nothing.
    let unknown = [
        ("MessageSid", "SM99999999999999999999999999999999"),
        ("MessageStatus", "delivered"),
    ];
    let res = webhook(&server, "/twilio/status", &unknown, Signature::Valid).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let rows = settled(&server, &a.token, &id).await;
    assert_eq!(channel(&rows, "sms")["status"], "sent");

    let res = webhook(&server, "/twilio/status", &delivered, Signature::Valid).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let busy = [
        ("CallSid", call_sid.as_str()),
        ("CallStatus", "busy"),
        ("AccountSid", SID),
    ];
    let res = webhook(&server, "/twilio/status", &busy, Signature::Valid).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let rows = settled(&server, &a.token, &id).await;
    assert_eq!(channel(&rows, "sms")["status"], "delivered");
    assert_eq!(channel(&rows, "sms")["error"], Value::Null);
    assert_eq!(channel(&rows, "phone")["status"], "failed");
    assert_eq!(channel(&rows, "phone")["error"], "Twilio reported busy");
}

async fn webhooks_do_not_exist_without_twilio(backend: Backend) {
    let server = Server::start_with(backend, &[("KLAXON_PUBLIC_URL", PUBLIC)]).await;
    let fields = [("From", NUMBER), ("Body", "4")];
    for path in [
        "/sms",
        "/voice?message=Zz9Zz9Zz",
        "/voice/receive",
        "/twilio/status",
    ] {
        webhook(&server, path, &fields, Signature::Valid)
            .await
            .assert_error(StatusCode::NOT_FOUND);
    }
}

// ---------------------------------------------------------------------------
// Hostile input

/// One in-process request: status, content type, body.
async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (StatusCode, String, String) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let res = app
        .clone()
        .oneshot(req.body(axum::body::Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, ct, String::from_utf8_lossy(&bytes).into_owned())
}

/// Webhooks Twilio signed but whose fields are hostile (control
/// characters, junk ids, overlong text, other people's numbers) never get a
/// 5xx, and every answer is TwiML or a JSON error.
async fn signed_hostile_webhooks_never_get_a_5xx(backend: Backend) {
    use klaxon_server::app::{router, AppState};
    use klaxon_server::clock::Clock;
    use klaxon_server::config::ConfigArgs;
    use rand::rngs::StdRng;
    use rand::seq::IndexedRandom;
    use rand::{Rng, SeedableRng};

    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/hostile.db", dir.path().display()),
        Backend::Postgres => tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
            .await
            .unwrap(),
    };
    let store = klaxon_store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let config = ConfigArgs {
        public_url: Some(PUBLIC.into()),
        twilio_account_sid: Some(SID.into()),
        twilio_auth_token: Some(TOKEN.into()),
        twilio_from_number: Some(FROM.into()),
        ..ConfigArgs::default()
    };
    let state = AppState::load(
        store,
        Clock::new(1.0, None),
        Arc::new(config.load().unwrap()),
    )
    .await
    .unwrap();
    let app = router(state);
    let json_call = |method: &'static str, path: String, token: String, body: Value| {
        let app = app.clone();
        async move {
            let (status, _, text) = call(
                &app,
                method,
                &path,
                &[
                    ("authorization", format!("Token token=\"{token}\"")),
                    ("content-type", "application/json".into()),
                ],
                body.to_string().into_bytes(),
            )
            .await;
            assert!(status.is_success(), "{path}: {status} {text}");
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
        }
    };
    // An account whose owner has the number as a contact and one incident.
    let reg = json_call(
        "POST",
        "/registrations".into(),
        String::new(),
        json!({"account_name": "Hostile", "name": "H", "email": "h@example.com", "password": "long enough"}),
    )
    .await;
    let (token, user) = (
        reg["token"].as_str().unwrap().to_owned(),
        reg["user_id"].as_str().unwrap().to_owned(),
    );
    json_call(
        "POST",
        format!("/users/{user}/contacts"),
        token.clone(),
        json!({"type": "phone", "label": "p", "address": NUMBER}),
    )
    .await;
    let policy = json_call(
        "POST",
        "/policies".into(),
        token.clone(),
        json!({"name": "p"}),
    )
    .await;
    let policy = policy["id"].as_str().unwrap().to_owned();
    json_call(
        "POST",
        format!("/policies/{policy}/rules"),
        token.clone(),
        json!({"escalation_timeout": 30, "assignment": {"type": "user", "id": user}}),
    )
    .await;
    let service = json_call(
        "POST",
        "/services".into(),
        token.clone(),
        json!({"name": "s", "policy_id": policy}),
    )
    .await;
    let service = service["id"].as_str().unwrap().to_owned();
    let incident = json_call(
        "POST",
        format!("/services/{service}/incidents"),
        token.clone(),
        json!({"message": "m"}),
    )
    .await;
    let incident = incident["id"].as_str().unwrap().to_owned();
    let messages = json_call(
        "GET",
        format!("/incidents/{incident}/notifications"),
        token.clone(),
        json!({}),
    )
    .await;
    let message = messages[0]["id"].as_str().unwrap().to_owned();

    let long = "9".repeat(5000);
    let texts: Vec<String> = [
        "4",
        "6",
        "8",
        "4 \u{0}",
        "\u{0}",
        "4 Zz9Zz9Zz",
        "8 #",
        "6 \u{1b}[31m",
        "☃",
        "+1555\u{0}1234",
        NUMBER,
        "'; DROP TABLE users; --",
        "",
        "4 \u{FFFF}",
        long.as_str(),
        "SM\u{0}",
        "delivered",
        "busy",
        "completed",
        "\u{7f}",
        "CA00000000000000000000000000000000",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("4 {incident}"),
        format!("8 #{incident}"),
        format!("6 {incident}\u{0}"),
    ])
    .collect();
    let targets = [
        message.as_str(),
        "Zz9Zz9Zz",
        "%00",
        "%FF%FE",
        "",
        "a%20b",
        "%E2%98%83",
    ];
    let fields = [
        "From",
        "Body",
        "Digits",
        "MessageSid",
        "MessageStatus",
        "CallSid",
        "CallStatus",
        "ErrorCode",
        "SmsSid",
        "To",
    ];
    let mut rng = StdRng::seed_from_u64(0x7477696c696f);
    for case in 0..400 {
        let path = match rng.random_range(0..4) {
            0 => "/sms".to_owned(),
            1 => format!("/voice?message={}", targets.choose(&mut rng).unwrap()),
            2 => format!(
                "/voice/receive?message={}",
                targets.choose(&mut rng).unwrap()
            ),
            _ => "/twilio/status".to_owned(),
        };
        let mut form: Vec<(&str, String)> = Vec::new();
        for _ in 0..rng.random_range(0..6) {
            form.push((
                fields.choose(&mut rng).unwrap(),
                texts.choose(&mut rng).unwrap().clone(),
            ));
        }
        // What each webhook reads, mostly present.
        if rng.random_ratio(1, 2) {
            form.push(("From", NUMBER.into()));
        }
        if path.starts_with("/voice/receive") {
            let digits = ["4", "6", "8", "5", "", "\u{0}", "44"];
            form.push(("Digits", digits.choose(&mut rng).unwrap().to_string()));
        }
        if path == "/twilio/status" {
            let (sid, status) = *[("MessageSid", "MessageStatus"), ("CallSid", "CallStatus")]
                .choose(&mut rng)
                .unwrap();
            let statuses = [
                "delivered",
                "completed",
                "busy",
                "undelivered",
                "sent",
                "\u{0}",
            ];
            form.push((sid, texts.choose(&mut rng).unwrap().clone()));
            form.push((status, statuses.choose(&mut rng).unwrap().to_string()));
        }
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let headers = vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("x-twilio-signature", sign(&path, &pairs)),
        ];
        let (status, ct, text) = call(&app, "POST", &path, &headers, body.into_bytes()).await;
        assert!(
            status.is_success(),
            "case {case}: {path} {pairs:?}: {status} {text}"
        );
        assert!(ct.starts_with("text/xml"), "case {case}: {ct} {text}");
    }
}

both_backends!(
    signed_hostile_webhooks_never_get_a_5xx,
    a_trigger_texts_and_calls_once,
    a_failing_provider_is_retried_until_it_takes_the_message,
    a_refused_number_is_recorded_as_failed,
    texts_queued_together_go_out_as_one,
    an_sms_reply_acknowledges_as_the_user,
    replies_target_one_incident_or_resolve_them_all,
    a_call_reads_the_alert_and_a_key_acknowledges,
    status_callbacks_record_delivery,
);

mod without_twilio {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn webhooks_do_not_exist() {
        super::webhooks_do_not_exist_without_twilio(super::Backend::Sqlite).await
    }
}
