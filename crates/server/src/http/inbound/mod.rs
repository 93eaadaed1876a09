//! Inbound integrations: the APIs monitoring tools already page —
//! PagerDuty's Events API (v2 and v1), Opsgenie's Alert API and
//! Alertmanager's webhook — served on a service's integration key, so that
//! a tool pages Klaxon when one URL is changed. Each answers in its own
//! API's shapes, errors included. All of them open, acknowledge and
//! resolve incidents through the calls `PUT /trigger` uses
//! ([`open_incident`], [`act_on_open_incident`]): a repeated event costs
//! what a repeated `PUT /trigger` costs.
//!
//! What they share lives here: the per-key rate limit, reading the body,
//! refusing control characters, fitting other tools' keys, summaries and
//! details into Klaxon's limits.

pub mod alertmanager;
pub mod limit;
pub mod opsgenie;
pub mod pagerduty;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use klaxon_core::validate::TextKind;
use klaxon_store::{IntegrationTarget, StoreError};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::incidents::{DESCRIPTION_MAX, DETAILS_MAX, KEY_MAX, MESSAGE_MAX};
pub use super::integration::{act_on_open_incident, open_incident, Acted};
use crate::app::AppState;
pub use limit::RateLimiter;

/// Longest integration key worth looking up.
const CREDENTIAL_MAX: usize = 256;
/// Past this many remembered incidents, the alert counts start afresh.
const ALERT_COUNTS_MAX: usize = 65_536;

/// What the inbound integrations keep in this process.
#[derive(Debug)]
pub struct Inbound {
    /// Events per minute per integration key.
    pub limiter: RateLimiter,
    /// Incident id → alerts it is known to record (a lower bound), so that
    /// a repeated Alertmanager notification of a group that did not grow
    /// costs no query.
    alert_counts: Mutex<HashMap<String, i64>>,
}

impl Inbound {
    /// Limits each key to `rate_per_minute` events (0: no limit).
    pub fn new(rate_per_minute: u32) -> Self {
        Self {
            limiter: RateLimiter::new(rate_per_minute),
            alert_counts: Mutex::new(HashMap::new()),
        }
    }

    /// The alerts incident `id` is known to record (0 when unknown).
    fn known_alerts(&self, id: &str) -> i64 {
        let counts = self
            .alert_counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.get(id).copied().unwrap_or(0)
    }

    /// Incident `id` records at least `alerts` alerts.
    fn note_alerts(&self, id: &str, alerts: i64) {
        let mut counts = self
            .alert_counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= ALERT_COUNTS_MAX && !counts.contains_key(id) {
            counts.clear();
        }
        let known = counts.entry(id.to_owned()).or_insert(0);
        *known = (*known).max(alerts);
    }
}

/// The service an integration key belongs to, if any. A key that cannot
/// be one is not looked up.
async fn service_for(state: &AppState, key: &str) -> Result<Option<IntegrationTarget>, Failure> {
    if key.is_empty() || key.len() > CREDENTIAL_MAX || TextKind::Line.refuses(key) {
        return Ok(None);
    }
    state
        .store
        .service_by_integration_key(key)
        .await
        .map_err(Failure::from)
}

/// Why an event that was well-formed and authenticated could not be
/// processed, for each API to say in its own shape.
#[derive(Debug)]
enum Failure {
    /// The service is disabled (maintenance): `409`.
    Disabled(String),
    /// The key's service was deleted while the event was processed.
    Gone,
    /// The database cannot be reached: `503`, worth a retry.
    Unavailable,
    /// A bug: `500`, logged.
    Internal,
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(message) => Failure::Disabled(message),
            StoreError::NotFound => Failure::Gone,
            err if err.is_unavailable() => Failure::Unavailable,
            err => {
                tracing::error!(error = ?err, "inbound integration failed");
                Failure::Internal
            }
        }
    }
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Failure::Disabled(_) => StatusCode::CONFLICT,
            Failure::Gone => StatusCode::NOT_FOUND,
            Failure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Disabled(message) => message.clone(),
            Failure::Gone => "the integration key's service no longer exists".into(),
            Failure::Unavailable => "the database is unavailable; retry later".into(),
            Failure::Internal => "internal error".into(),
        }
    }
}

/// Why a request body could not be read.
enum BodyError {
    /// Over the route's limit.
    TooLarge,
    /// The client failed to send it (or took too long).
    Unreadable,
}

/// The whole body, within the route's `DefaultBodyLimit`.
async fn read_body(request: Request) -> Result<Bytes, BodyError> {
    Bytes::from_request(request, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            BodyError::TooLarge
        } else {
            BodyError::Unreadable
        }
    })
}

/// A JSON document, or what is wrong with it (without serde's position
/// suffix). A body that is not UTF-8, or a lone surrogate escape, is not
/// JSON either.
fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|err| {
        let text = err.to_string();
        let text = text.split(" at line ").next().unwrap_or(&text);
        format!("malformed JSON: {text}")
    })
}

/// The path (`payload.summary`, `alerts[2].labels.job`) of the first key
/// or string of a document holding a control character other than tab,
/// newline and carriage return: PostgreSQL cannot store NUL, and both
/// backends store the same strings.
fn control_character(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut String) -> bool {
        match value {
            Value::String(s) => TextKind::Text.refuses(s),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(key, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                if TextKind::Text.refuses(key) {
                    // Name the parent: the key itself is not printable.
                    path.truncate(len);
                    return true;
                }
                path.push_str(key);
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then(|| {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path
        }
    })
}

/// A deduplication key for another tool's identifier (an Opsgenie alias,
/// an Alertmanager group key): the identifier itself when it fits a key
/// (at most 255 bytes, one line), else `sha256:` and its digest, so that
/// the same identifier always finds the same incident.
fn fitting_key(identifier: &str) -> String {
    if identifier.len() <= KEY_MAX && !TextKind::Line.refuses(identifier) {
        identifier.to_owned()
    } else {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(identifier.as_bytes()))
        )
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// An incident's message from another tool's summary: trimmed and cut to
/// Klaxon's message limit; a summary that had to be cut is kept whole (up
/// to the description limit) as the description.
fn message_and_description(summary: &str) -> (String, Option<String>) {
    let summary = summary.trim();
    let message = cut(summary, MESSAGE_MAX);
    let description =
        (message.len() < summary.len()).then(|| cut(summary, DESCRIPTION_MAX).to_owned());
    (message.to_owned(), description)
}

/// Other tools' details fitted into Klaxon's details limit, never refused:
/// an event the original tool would accept must page. While the whole is
/// too large, its largest field is shortened — an array to its first half,
/// a string cut, anything else turned into its JSON text (then cut) — and
/// `truncated` lists the fields that were.
fn fit_details(mut details: Map<String, Value>) -> Value {
    const ROOM: usize = 256;
    fn size(v: &impl serde::Serialize) -> usize {
        serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
    }
    let mut truncated: Vec<String> = Vec::new();
    for _ in 0..64 {
        let total = size(&details);
        if total.saturating_add(ROOM) <= DETAILS_MAX {
            break;
        }
        let Some((name, largest)) = details
            .iter_mut()
            .max_by_key(|(_, v)| size(v))
            .map(|(k, v)| (k.clone(), v))
        else {
            break;
        };
        let excess = total + ROOM - DETAILS_MAX;
        match largest {
            Value::Array(items) if items.len() > 1 => items.truncate(items.len() / 2),
            Value::String(s) => {
                let keep = s.len().saturating_sub(excess + ROOM);
                let shorter = format!("{}… (truncated)", cut(s, keep));
                *s = shorter;
            }
            other => *other = Value::String(other.to_string()),
        }
        if !truncated.contains(&name) {
            truncated.push(name);
        }
    }
    if size(&details).saturating_add(ROOM) > DETAILS_MAX {
        // Unreachable for the maps built here (their keys are short), but
        // a page must never be lost to its details.
        details = Map::new();
        truncated = vec!["details".into()];
    }
    if !truncated.is_empty() {
        details.insert("truncated".into(), Value::from(truncated));
    }
    Value::Object(details)
}

/// Adds `Retry-After` to a rate-limited answer.
fn with_retry_after(mut response: Response, wait: std::time::Duration) -> Response {
    let secs = limit::retry_after_secs(wait);
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_characters_are_found_with_their_path() {
        assert_eq!(
            control_character(&json!({"a": "b\tc\r\n", "n": [1, null]})),
            None
        );
        assert_eq!(
            control_character(&json!({"payload": {"summary": "a\u{0}b"}})),
            Some("payload.summary".into())
        );
        assert_eq!(
            control_character(&json!({"alerts": [{}, {"labels": {"job": "\u{1b}[31m"}}]})),
            Some("alerts[1].labels.job".into())
        );
        assert_eq!(
            control_character(&json!({"details": {"bad\u{7f}key": 1}})),
            Some("details".into())
        );
        assert_eq!(control_character(&json!("\u{0}")), Some("body".into()));
    }

    #[test]
    fn keys_that_do_not_fit_are_hashed() {
        assert_eq!(fitting_key("group/1"), "group/1");
        let long = "x".repeat(300);
        let hashed = fitting_key(&long);
        assert!(
            hashed.starts_with("sha256:") && hashed.len() == 71,
            "{hashed}"
        );
        assert_eq!(hashed, fitting_key(&long), "stable");
        assert_ne!(fitting_key("a\nb"), "a\nb");
        assert_eq!(fitting_key(&"k".repeat(255)), "k".repeat(255));
    }

    #[test]
    fn summaries_are_cut_on_character_boundaries() {
        let (m, d) = message_and_description("  disk full  ");
        assert_eq!((m.as_str(), d), ("disk full", None));
        let long = "é".repeat(1000); // 2000 bytes
        let (m, d) = message_and_description(&long);
        assert_eq!(m.len(), 1024);
        assert!(m.chars().all(|c| c == 'é'));
        assert_eq!(d.as_deref(), Some(long.as_str()));
    }

    #[test]
    fn details_are_fitted_not_refused() {
        let small = json!({"source": "db1", "custom_details": {"a": 1}});
        let Value::Object(map) = small.clone() else {
            unreachable!()
        };
        assert_eq!(fit_details(map), small);

        let mut map = Map::new();
        map.insert("source".into(), json!("db1"));
        map.insert(
            "alerts".into(),
            Value::Array(
                (0..5000)
                    .map(|i| json!({"n": i, "pad": "x".repeat(40)}))
                    .collect(),
            ),
        );
        map.insert("note".into(), json!("y".repeat(200_000)));
        map.insert("blob".into(), json!({"z": "z".repeat(100_000)}));
        let fitted = fit_details(map);
        let size = serde_json::to_vec(&fitted).expect("serialises").len();
        assert!(size <= DETAILS_MAX, "{size}");
        assert_eq!(fitted["source"], "db1");
        assert!(!fitted["alerts"]
            .as_array()
            .expect("still an array")
            .is_empty());
        assert!(fitted["note"]
            .as_str()
            .expect("a string")
            .ends_with("(truncated)"));
        let truncated = fitted["truncated"].as_array().expect("listed");
        for name in ["note", "blob"] {
            assert!(truncated.contains(&json!(name)), "{truncated:?}");
        }
    }
}
