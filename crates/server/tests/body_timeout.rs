//! A request body that stops arriving is answered 408 once
//! `app::BODY_TIMEOUT` has passed (on a paused clock: no real waiting),
//! not taken for a malformed request.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use klaxon_server::app::{router, AppState, BODY_TIMEOUT};
use klaxon_server::clock::Clock;
use klaxon_server::config::ConfigArgs;
use tower::ServiceExt;

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_is_a_408() {
    let dir = tempfile::tempdir().unwrap();
    let store = klaxon_store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let config = Arc::new(ConfigArgs::default().load().unwrap());
    let state = AppState::load(store, Clock::new(1.0, None), config)
        .await
        .unwrap();
    let app = router(state);
    // Half a form, then nothing more, ever.
    let body = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(Bytes::from_static(b"email=a%40example.com&pass"))
    })
    .chain(futures_util::stream::pending());
    let request = Request::post("/sessions")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from_stream(body))
        .unwrap();
    let started = tokio::time::Instant::now();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() >= BODY_TIMEOUT);
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "request_timeout", "{json}");
}
