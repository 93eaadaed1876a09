//! `GET /events/stream` against the real binary, on SQLite and on
//! PostgreSQL: live events within a deadline, resuming with
//! `Last-Event-ID` (or `?since=`), tenant isolation, authentication, and a
//! server that shuts down promptly with a stream open.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Account, Backend, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// How long an event may take to arrive (the stream polls every 250 ms).
const DEADLINE: Duration = Duration::from_secs(5);

/// An open event stream, read frame by frame.
struct Stream {
    res: reqwest::Response,
    buf: String,
}

/// One event: its SSE id and its JSON.
type Frame = (i64, Value);

impl Stream {
    /// Opens the account's stream, resuming after `last_id` if given, and
    /// waits for its first frame (the stream is then live).
    async fn open(server: &Server, token: &str, last_id: Option<i64>, query: &str) -> Stream {
        let mut req = server
            .http
            .get(format!("{}/events/stream{query}", server.base))
            .header("Authorization", format!("Bearer {token}"));
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        assert_eq!(res.headers()["cache-control"], "no-cache");
        assert_eq!(res.headers()["x-accel-buffering"], "no");
        let mut stream = Stream {
            res,
            buf: String::new(),
        };
        let greeting = stream.frame(DEADLINE).await.expect("a first frame");
        assert!(greeting.contains("retry:"), "{greeting:?}");
        stream
    }

    /// The next raw frame, or `None` when the stream ended (or nothing
    /// came within `within`).
    async fn frame(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame = self.buf[..end].to_owned();
                self.buf.drain(..end + 2);
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }

    /// The next event, skipping comments; `None` if none came in time.
    async fn event(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.frame(left).await?;
            let (mut id, mut data) = (None, Vec::new());
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<i64>().unwrap());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                }
            }
            if let Some(id) = id {
                return Some((id, serde_json::from_str(&data.join("\n")).unwrap()));
            }
        }
    }

    /// Events until one satisfies `stop` (included).
    async fn until(&mut self, stop: impl Fn(&Value) -> bool) -> Vec<Frame> {
        let mut got = Vec::new();
        loop {
            let frame = self
                .event(DEADLINE)
                .await
                .unwrap_or_else(|| panic!("no awaited event within {DEADLINE:?}; got {got:?}"));
            let done = stop(&frame.1);
            got.push(frame);
            if done {
                return got;
            }
        }
    }
}

/// Opens an incident through the API; its id.
async fn open_incident(server: &Server, a: &Account, service: &str, message: &str) -> String {
    let res = server
        .post(
            &format!("/services/{service}/incidents"),
            &a.token,
            json!({"message": message}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    res.str("id")
}

/// `PUT /incidents/:id/<action>`.
async fn act(server: &Server, a: &Account, id: &str, action: &str) {
    let res = server
        .call(
            reqwest::Method::PUT,
            &format!("/incidents/{id}/{action}"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{action}: {}", res.text);
}

fn created(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["action"] == "incident.create" && e["source"]["id"] == id
}

fn summary(frames: &[Frame]) -> Vec<(String, String)> {
    frames
        .iter()
        .map(|(_, e)| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["source"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A new incident's `incident.create` arrives within the deadline, as the
/// same JSON `GET /events` lists; another account's stream never shows it.
async fn streams_the_accounts_new_events(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let b = server.register("Bravo").await;
    let sa = server.setup_service(&a, "Web", &[&a.user_id], 1).await;
    let sb = server.setup_service(&b, "Db", &[&b.user_id], 1).await;
    let mut alpha = Stream::open(&server, &a.token, None, "").await;
    let mut bravo = Stream::open(&server, &b.token, None, "").await;

    let started = Instant::now();
    let id = open_incident(&server, &a, &sa.service_id, "disk full").await;
    let frames = alpha.until(created(&id)).await;
    assert!(started.elapsed() < DEADLINE);
    assert_eq!(summary(&frames), [("incident.create".into(), id.clone())]);
    let (seq, event) = &frames[0];
    let listed = server.get("/events?per_page=1", &a.token).await;
    assert_eq!(event, &listed.body[0], "the JSON of GET /events");
    assert!(*seq > 0);

    // Bravo's stream carries Bravo's own event and nothing of Alpha's.
    let marker = open_incident(&server, &b, &sb.service_id, "marker").await;
    let theirs = bravo.until(created(&marker)).await;
    assert_eq!(summary(&theirs), [("incident.create".into(), marker)]);
    assert!(theirs[0].0 > *seq, "numbers are the log's, across accounts");
    let text = format!("{theirs:?}");
    assert!(!text.contains(&id) && !text.contains(&sa.service_id));
}

/// Reconnecting with the last id seen replays exactly the events missed,
/// in order, and goes on live; `?since=` does the same.
async fn last_event_id_replays_what_was_missed(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let b = server.register("Bravo").await;
    let sa = server.setup_service(&a, "Web", &[&a.user_id], 1).await;
    let sb = server.setup_service(&b, "Db", &[&b.user_id], 1).await;
    let mut stream = Stream::open(&server, &a.token, None, "").await;
    let first = open_incident(&server, &a, &sa.service_id, "first").await;
    let seen = stream.until(created(&first)).await;
    let last_id = seen.last().unwrap().0;
    drop(stream);

    // Missed while disconnected (with another account's events between).
    act(&server, &a, &first, "acknowledge").await;
    open_incident(&server, &b, &sb.service_id, "elsewhere").await;
    let second = open_incident(&server, &a, &sa.service_id, "second").await;
    act(&server, &a, &first, "resolve").await;
    let mut missed = vec![
        ("incident.acknowledge".to_owned(), first.clone()),
        ("incident.create".to_owned(), second.clone()),
        ("incident.resolve".to_owned(), first.clone()),
    ];

    for (last, query) in [
        (Some(last_id), String::new()),
        (None, format!("?since={last_id}")),
    ] {
        let mut stream = Stream::open(&server, &a.token, last, &query).await;
        let mut replay = Vec::new();
        for _ in 0..missed.len() {
            replay.push(stream.event(DEADLINE).await.expect("a missed event"));
        }
        assert_eq!(summary(&replay), missed, "{query}");
        let ids: Vec<i64> = replay.iter().map(|(id, _)| *id).collect();
        assert!(
            ids[0] > last_id && ids.windows(2).all(|w| w[0] < w[1]),
            "{ids:?}"
        );
        // Then live, with nothing in between.
        let live = open_incident(&server, &a, &sa.service_id, &format!("live {query}")).await;
        let next = stream.event(DEADLINE).await.expect("the live event");
        assert_eq!(
            summary(&[next]),
            [("incident.create".to_owned(), live.clone())]
        );
        // Missed by the next reader, resuming from the same place.
        missed.push(("incident.create".to_owned(), live));
    }
}

/// Without a valid token: 401 JSON. A bad resume point: 422.
async fn needs_a_token(backend: Backend) {
    let server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    for auth in [None, Some("Bearer nosuchtoken"), Some("Basic YTpi")] {
        let mut req = server.http.get(format!("{}/events/stream", server.base));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    for (header, query, field) in [
        (Some("abc"), "", "Last-Event-ID"),
        (Some("-1"), "", "Last-Event-ID"),
        (None, "?since=yesterday", "since"),
    ] {
        let mut req = server
            .http
            .get(format!("{}/events/stream{query}", server.base))
            .header("Authorization", format!("Bearer {}", a.token));
        if let Some(h) = header {
            req = req.header("Last-Event-ID", h);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = res.json().await.unwrap();
        assert!(body["errors"][field].is_array(), "{body}");
    }
}

/// SIGTERM with a stream open: the stream ends and the server exits
/// promptly and cleanly.
async fn shutdown_ends_open_streams(backend: Backend) {
    let mut server = Server::start(backend).await;
    let a = server.register("Alpha").await;
    let mut stream = Stream::open(&server, &a.token, None, "").await;
    let started = Instant::now();
    let exited = tokio::task::spawn_blocking(move || {
        let clean = server.terminate();
        (clean, server)
    });
    // The stream ends (rather than idling until a keep-alive).
    assert_eq!(stream.frame(Duration::from_secs(10)).await, None);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the stream ended"
    );
    let (clean, _server) = exited.await.unwrap();
    assert!(clean, "the server exits successfully");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

both_backends!(
    streams_the_accounts_new_events,
    last_event_id_replays_what_was_missed,
    needs_a_token,
    shutdown_ends_open_streams,
);
