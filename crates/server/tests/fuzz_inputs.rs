//! Thousands of random, malformed and hostile requests against the router
//! in-process, on SQLite and on PostgreSQL: none may get a 5xx, and every
//! error must be JSON. The generator favours what one backend takes and the
//! other refuses, such as NUL and other control characters, raw and
//! percent-encoded, in paths, query strings, forms and JSON keys and
//! strings. Cases are generated from a fixed seed, so a failure reproduces.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use klaxon_server::app::{router, AppState};
use klaxon_server::clock::Clock;
use klaxon_server::config::ConfigArgs;
use klaxon_server::notify::links::LinkClaim;
use klaxon_server::notify::LinkAction;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tower::ServiceExt;

/// `None` when the request cannot exist on the wire (a header value or URI
/// that HTTP itself forbids).
async fn try_call(
    app: &axum::Router,
    method: Method,
    path: &str,
    token: &str,
    ct: Option<&str>,
    body: Vec<u8>,
) -> Option<(StatusCode, String, Value)> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("Authorization", format!("Token token=\"{token}\""));
    if let Some(ct) = ct {
        req = req.header("Content-Type", ct);
    }
    let req = req.body(Body::from(body)).ok()?;
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if ct.starts_with("text/event-stream") {
        // An event stream never ends by itself: its status is the answer.
        return Some((status, ct, Value::Null));
    }
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Some((
        status,
        ct,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    token: &str,
    ct: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String, Value) {
    try_call(app, method, path, token, ct, body)
        .await
        .expect("a valid request")
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e12),
        4 => json!(random_text(rng)),
        5 => json!(""),
        6 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.random_range(0..5) {
                // Now and then a key of random text (NUL and all), as a
                // `details` object may hold.
                let key = if rng.random_ratio(1, 6) {
                    random_text(rng)
                } else {
                    (*FIELDS.choose(rng).unwrap()).to_owned()
                };
                map.insert(key, random_value(rng, depth + 1));
            }
            Value::Object(map)
        }
    }
}

const FIELDS: &[&str] = &[
    "message",
    "key",
    "description",
    "details",
    "name",
    "email",
    "role",
    "time_zone",
    "password",
    "current_password",
    "invitation",
    "expires_in_days",
    "expires_at",
    "policy_id",
    "loop_limit",
    "escalation_timeout",
    "assignment",
    "type",
    "id",
    "rule_ids",
    "acknowledge_timeout",
    "auto_resolve_timeout",
    "rule",
    "count",
    "start_at",
    "end_at",
    "users",
    "restrictions",
    "label",
    "address",
    "contact_id",
    "start_delay",
    "days",
    "start",
    "end",
    "user_id",
    "account_name",
    "interval",
];

fn random_text(rng: &mut StdRng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "Z9",
        " ",
        "\u{0}",
        "\u{1}",
        "\t",
        "\n",
        "\r",
        "\u{1b}",
        "\u{1f}",
        "\u{7f}",
        "%00",
        "%01",
        "%0A",
        "%1F",
        "%7F",
        "é",
        "🔥",
        "%",
        "_",
        "\\",
        "'",
        "\"",
        "<script>",
        "../",
        "9999-12-31T23:59:59Z",
        "2026-01-05T09:00:00",
        "25:61",
        "mon",
        "weekly",
        "user",
        "schedule",
        "Europe/Berlin",
        "-1",
        "1e309",
    ];
    let n = rng.random_range(0..6);
    let mut s: String = (0..n).map(|_| *PIECES.choose(rng).unwrap()).collect();
    if rng.random_ratio(1, 20) {
        s.push_str(&"x".repeat(rng.random_range(1000..70_000)));
    }
    s
}

/// Percent-encodes every byte that needs it, so control characters reach
/// the server encoded rather than making the request unsendable.
fn encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_get_a_5xx_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/fuzz.db", dir.path().display());
    random_requests_never_get_a_5xx(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_get_a_5xx_on_postgres() {
    let url = tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
        .await
        .unwrap();
    random_requests_never_get_a_5xx(&url).await;
}

async fn random_requests_never_get_a_5xx(url: &str) {
    let store = klaxon_store::connect(url).await.unwrap();
    store.migrate().await.unwrap();
    let state = AppState::load(
        store,
        Clock::new(1.0, None),
        Arc::new(ConfigArgs::default().load().unwrap()),
    )
    .await
    .unwrap();
    let links = state.links.clone();
    let app = router(state);
    let (_, _, reg) = call(&app, Method::POST, "/registrations", "", Some("application/json"),
        json!({"account_name": "Fuzz", "name": "F", "email": "f@example.com", "password": "fuzzing!"}).to_string().into_bytes()).await;
    let token = reg["token"].as_str().unwrap().to_owned();
    let user = reg["user_id"].as_str().unwrap().to_owned();
    let (_, _, policy) = call(
        &app,
        Method::POST,
        "/policies",
        &token,
        Some("application/json"),
        json!({"name": "P"}).to_string().into_bytes(),
    )
    .await;
    let pid = policy["id"].as_str().unwrap().to_owned();
    call(
        &app,
        Method::POST,
        &format!("/policies/{pid}/rules"),
        &token,
        Some("application/json"),
        json!({"assignment": {"type": "user", "id": user}})
            .to_string()
            .into_bytes(),
    )
    .await;
    let (_, _, service) = call(
        &app,
        Method::POST,
        "/services",
        &token,
        Some("application/json"),
        json!({"name": "S", "policy_id": pid})
            .to_string()
            .into_bytes(),
    )
    .await;
    let sid = service["id"].as_str().unwrap().to_owned();
    let (_, _, schedule) = call(
        &app,
        Method::POST,
        "/schedules",
        &token,
        Some("application/json"),
        json!({"name": "Sch"}).to_string().into_bytes(),
    )
    .await;
    let sch = schedule["id"].as_str().unwrap().to_owned();
    let (_, _, inc) = call(
        &app,
        Method::POST,
        &format!("/services/{sid}/incidents"),
        &token,
        Some("application/json"),
        json!({"message": "m"}).to_string().into_bytes(),
    )
    .await;
    let iid = inc["id"].as_str().unwrap().to_owned();
    // A working answer link (used at most once by the fuzzer), and the
    // same link altered.
    let link = links.token(&LinkClaim {
        account_id: reg["account_id"].as_str().unwrap().to_owned(),
        incident_id: iid.clone(),
        user_id: user.clone(),
        message_id: "fuzz0001".into(),
        action: LinkAction::Acknowledge,
        expires_at: i64::MAX,
    });
    let altered = link.replacen('.', ".A", 1);
    let (_, _, contact) = call(
        &app,
        Method::POST,
        &format!("/users/{user}/contacts"),
        &token,
        Some("application/json"),
        json!({"type": "sms", "address": "+15551234567"})
            .to_string()
            .into_bytes(),
    )
    .await;
    let cid = contact["id"].as_str().unwrap().to_owned();
    let (_, _, heartbeat) = call(
        &app,
        Method::POST,
        &format!("/services/{sid}/heartbeats"),
        &token,
        Some("application/json"),
        json!({"name": "H", "interval": 5}).to_string().into_bytes(),
    )
    .await;
    let hid = heartbeat["id"].as_str().unwrap().to_owned();
    let ping = heartbeat["ping_url"].as_str().unwrap();
    let ping_token = ping.rsplit('/').next().unwrap().to_owned();

    let ids = [
        sid.as_str(),
        pid.as_str(),
        user.as_str(),
        sch.as_str(),
        iid.as_str(),
        cid.as_str(),
        hid.as_str(),
        ping_token.as_str(),
        link.as_str(),
        altered.as_str(),
        "AAAAAAAA",
        "short",
        "%FF%FE",
        "..%2F..",
        "🔥🔥",
        "%00",
        "AAAA%00AAA",
        "%01%1F%7F",
        "a\u{0}b",
        "a%0Ab",
    ];
    use Method as M;
    // Each path with the methods it serves (a random method would mostly
    // test the router's 405).
    let templates: &[(&str, &[Method])] = &[
        ("/incidents", &[M::GET]),
        ("/incidents/{}", &[M::GET, M::PUT, M::DELETE]),
        ("/incidents/{}/acknowledge", &[M::PUT]),
        ("/incidents/{}/escalate", &[M::PUT]),
        ("/incidents/{}/events", &[M::GET]),
        ("/services", &[M::GET, M::POST]),
        ("/services/{}", &[M::GET, M::PUT, M::PATCH]),
        ("/services/{}/incidents", &[M::GET, M::POST]),
        ("/services/{}/disable", &[M::PUT]),
        ("/services/{}/escalation_preview", &[M::GET]),
        ("/policies", &[M::GET, M::POST]),
        ("/policies/{}", &[M::GET, M::PUT]),
        ("/policies/{}/rules", &[M::GET, M::POST]),
        ("/policies/{}/rules/sort", &[M::POST]),
        ("/policies/{}/rules/{}", &[M::GET, M::PUT]),
        ("/users", &[M::GET, M::POST]),
        ("/users/{}", &[M::GET, M::PUT]),
        ("/users/{}/contacts", &[M::GET, M::POST]),
        ("/users/{}/contacts/{}", &[M::GET, M::PUT, M::DELETE]),
        ("/users/{}/notification_rules", &[M::GET, M::POST]),
        (
            "/users/{}/notification_rules/{}",
            &[M::GET, M::PUT, M::DELETE],
        ),
        ("/tokens", &[M::GET, M::POST]),
        ("/users/{}/tokens", &[M::GET]),
        ("/invitations", &[M::GET, M::POST]),
        ("/schedules/{}/feed_token", &[M::POST, M::DELETE]),
        ("/me", &[M::GET]),
        ("/events", &[M::GET]),
        ("/sessions", &[M::POST]),
        ("/registrations", &[M::POST]),
        ("/schedules", &[M::GET, M::POST]),
        ("/schedules/{}", &[M::GET, M::PUT]),
        ("/schedules/{}/layers", &[M::GET, M::POST]),
        ("/schedules/{}/overrides", &[M::GET, M::POST]),
        ("/schedules/{}/on_call", &[M::GET]),
        ("/schedules/{}/shifts", &[M::GET]),
        ("/schedules/{}.ics", &[M::GET]),
        ("/oncalls", &[M::GET]),
        ("/trigger", &[M::PUT, M::POST]),
        ("/acknowledge", &[M::PUT]),
        ("/resolve", &[M::PUT]),
        ("/links/{}", &[M::GET, M::POST]),
        ("/v2/enqueue", &[M::POST]),
        ("/v2/alerts", &[M::POST]),
        ("/v2/alerts/{}/close", &[M::POST]),
        ("/integrations/alertmanager", &[M::POST]),
        ("/services/{}/heartbeats", &[M::GET, M::POST]),
        (
            "/services/{}/heartbeats/{}",
            &[M::GET, M::PUT, M::PATCH, M::DELETE],
        ),
        ("/heartbeats/{}", &[M::GET, M::POST]),
        ("/events/stream", &[M::GET]),
        ("/nowhere", &[M::GET, M::PATCH]),
    ];
    let queries = [
        "",
        "?state=triggered,bogus",
        "?page=-1&per_page=abc",
        "?since=2026-01-01T00:00:00Z&until=1999",
        "?q=%25_%5C",
        "?at=%FF",
        "?at=9999-12-31T23:59:59Z",
        "?since=-9999-01-01T00:00:00Z",
        "?token=x",
        "?per_page=100000000000000000000",
        "?q=%00",
        "?q=a%00b&state=%01",
        "?since=%00&until=%7F",
        "?at=%00",
        "?page=%00&per_page=%1F",
        "?service_id=%00",
        "?token=%00",
        "?%00=x",
        "?q=\u{0}",
    ];
    const PARAMS: &[&str] = &[
        "q",
        "state",
        "service_id",
        "current_user_id",
        "since",
        "until",
        "at",
        "page",
        "per_page",
        "token",
    ];
    let content_types = [
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        None,
        Some("application/json; charset=utf-8"),
        Some("multipart/form-data"),
    ];
    let mut rng = StdRng::seed_from_u64(0x6b6c61786f6e);
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..3000 {
        let (template, methods) = templates.choose(&mut rng).unwrap();
        let mut path = (*template).to_owned();
        while path.contains("{}") {
            path = path.replacen("{}", ids.choose(&mut rng).unwrap(), 1);
        }
        if rng.random_ratio(1, 3) {
            // A random parameter, its value mostly percent-encoded, now and
            // then raw (which HTTP may refuse to carry).
            let text = random_text(&mut rng);
            let value = if rng.random_ratio(4, 5) {
                encoded(&text)
            } else {
                text
            };
            path.push_str(&format!("?{}={value}", PARAMS.choose(&mut rng).unwrap()));
        } else {
            path.push_str(queries.choose(&mut rng).unwrap());
        }
        let method = methods.choose(&mut rng).unwrap().clone();
        let ct = *content_types.choose(&mut rng).unwrap();
        let body = match rng.random_range(0..6) {
            0 => Vec::new(),
            1 => random_value(&mut rng, 0).to_string().into_bytes(),
            2 => (0..rng.random_range(0..64))
                .map(|_| rng.random::<u8>())
                .collect(),
            3 => format!(
                "message={}&key={}&details={}",
                random_text(&mut rng),
                random_text(&mut rng),
                random_text(&mut rng)
            )
            .into_bytes(),
            4 => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for _ in 0..rng.random_range(1..4) {
                    let name = if rng.random_ratio(1, 8) {
                        random_text(&mut rng)
                    } else {
                        (*FIELDS.choose(&mut rng).unwrap()).to_owned()
                    };
                    form.append_pair(&name, &random_text(&mut rng));
                }
                form.finish().into_bytes()
            }
            // An incident-shaped body whose details hold anything.
            _ => json!({
                "message": random_text(&mut rng),
                "details": random_value(&mut rng, 1),
            })
            .to_string()
            .into_bytes(),
        };
        // Sometimes the integration key, sometimes garbage, mostly the user token.
        let auth = match rng.random_range(0..10) {
            0 => service["integration_key"].as_str().unwrap().to_owned(),
            1 => random_text(&mut rng),
            _ => token.clone(),
        };
        let shown_body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let Some((status, got_ct, _)) =
            try_call(&app, method.clone(), &path, &auth, ct, body).await
        else {
            continue;
        };
        *seen.entry(status.as_u16()).or_default() += 1;
        assert!(
            !status.is_server_error(),
            "case {case}: {method} {path} ({ct:?}) {shown_body:?} -> {status}"
        );
        // Answer-link pages are for browsers: their errors are HTML pages.
        let wants = if path.starts_with("/links/") {
            "text/html"
        } else {
            "application/json"
        };
        if status.is_client_error() {
            assert!(
                got_ct.starts_with(wants),
                "case {case}: {method} {path} -> {status} with {got_ct:?}"
            );
        }
    }
    // The generator must reach handlers, not only the router's edges.
    let sent: usize = seen.values().sum();
    println!("statuses: {seen:?}");
    assert!(sent > 2500, "{sent} requests sent");
    for status in [200, 201, 204, 400, 401, 404, 415, 422] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }
}
