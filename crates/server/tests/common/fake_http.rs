//! A local fake of an external HTTP service (Twilio, Slack, a webhook
//! receiver, an ntfy server): it records every request and answers with
//! what the test's responder says.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Recorded {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The body as `application/x-www-form-urlencoded` pairs, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// One form field (the first of that name).
    pub fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the fake answers: status, headers, body.
pub type Answer = (StatusCode, Vec<(&'static str, String)>, String);

/// Decides the answer to a request, given how many came before it.
pub type Responder = Arc<dyn Fn(&Recorded, usize) -> Answer + Send + Sync>;

#[derive(Clone)]
struct Shared {
    log: Arc<Mutex<Vec<Recorded>>>,
    responder: Responder,
    /// While it reads `false`, requests are recorded but not answered.
    gate: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Holds a gated fake's answers until opened (see [`FakeHttp::gated`]).
pub struct Gate(tokio::sync::watch::Sender<bool>);

impl Gate {
    /// Answers every request held so far, and every later one at once.
    pub fn open(&self) {
        let _ = self.0.send(true);
    }
}

/// A fake HTTP service on a random loopback port, stopped on drop.
pub struct FakeHttp {
    /// `http://127.0.0.1:port`.
    pub base: String,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHttp {
    /// Starts a fake answering every request with `responder`.
    pub async fn start(responder: Responder) -> FakeHttp {
        Self::serve(responder, None).await
    }

    /// A fake that records requests as they come but answers none until
    /// the gate is opened: a provider that is slow to answer, on cue.
    pub async fn gated(responder: Responder) -> (FakeHttp, Gate) {
        let (open, gate) = tokio::sync::watch::channel(false);
        (Self::serve(responder, Some(gate)).await, Gate(open))
    }

    async fn serve(
        responder: Responder,
        gate: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> FakeHttp {
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            log: log.clone(),
            responder,
            gate,
        };
        let app = axum::Router::new().fallback(handle).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeHttp { base, log, task }
    }

    /// A fake answering every request `200 {}`.
    pub async fn ok() -> FakeHttp {
        Self::start(Arc::new(|_, _| {
            (
                StatusCode::OK,
                vec![("content-type", "application/json".into())],
                "{}".into(),
            )
        }))
        .await
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests came (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} requests, got {}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded = Recorded {
        method,
        uri: uri.to_string(),
        headers,
        body,
        at: Instant::now(),
    };
    let (status, headers, body) = {
        let mut log = shared.log.lock().unwrap();
        let answer = (shared.responder)(&recorded, log.len());
        log.push(recorded);
        answer
    };
    if let Some(mut gate) = shared.gate.clone() {
        let _ = gate.wait_for(|open| *open).await;
    }
    let mut response = (status, body).into_response();
    for (name, value) in headers {
        if let Ok(v) = value.parse() {
            response.headers_mut().insert(name, v);
        }
    }
    response
}
