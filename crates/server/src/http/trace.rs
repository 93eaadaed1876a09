//! The request span every log line of a request is recorded in.
//!
//! URLs carry secrets: a heartbeat's ping token and an answer link's token
//! are path segments, a calendar feed's token is in the query string, and
//! so is the Alertmanager receiver's `?key=`. So the span records the
//! method and the route's template (`/heartbeats/{token}`), never the
//! request's own path or query. A request that matched no route records
//! only its first path segment.

use axum::extract::MatchedPath;
use axum::http::Request;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, TraceLayer};
use tracing::Span;

/// Makes the request span.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let route = match request.extensions().get::<MatchedPath>() {
            Some(matched) => matched.as_str().to_owned(),
            None => unmatched(request.uri().path()),
        };
        tracing::debug_span!(
            "request",
            method = %request.method(),
            route = %route,
            version = ?request.version(),
        )
    }
}

/// The trace layer of the router.
pub fn layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan> {
    TraceLayer::new_for_http().make_span_with(RequestSpan)
}

/// What is logged of a path no route matched: its first segment (a
/// mistyped ping URL must not log the token it carries).
fn unmatched(path: &str) -> String {
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let first: String = segments
        .next()
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect();
    match segments.next() {
        Some(_) => format!("/{first}/… (no route)"),
        None => format!("/{first} (no route)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_paths_keep_their_first_segment() {
        assert_eq!(unmatched("/nowhere"), "/nowhere (no route)");
        assert_eq!(
            unmatched("/heartbeat/s3cretT0ken"),
            "/heartbeat/… (no route)"
        );
        assert_eq!(unmatched("/"), "/ (no route)");
    }
}
