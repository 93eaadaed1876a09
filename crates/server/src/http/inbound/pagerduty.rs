//! PagerDuty's Events API, so that anything that pages PagerDuty pages
//! Klaxon: v2 (`POST /v2/enqueue`, `POST /v2/change/enqueue`) and v1
//! (`POST /generic/2010-04-15/create_event.json`). The routing (v1:
//! service) key is a service's integration key.
//!
//! Answers are PagerDuty's: `202 {"status":"success","message":"Event
//! processed","dedup_key":…}` for every accepted event (acknowledge and
//! resolve included: the official clients read `dedup_key`), `400
//! {"status":"invalid event","message":"Event object is invalid",
//! "errors":[…]}` for every problem with the event — malformed JSON and an
//! unknown routing key ("Invalid routing key") included — `413` over
//! 512 KiB and `429` with `Retry-After` when the key is over its rate, in
//! the same shape. Klaxon adds `409` (same shape) for a trigger on a
//! disabled service: PagerDuty has no maintenance refusal to copy, and a
//! 4xx tells the sender not to retry.
//!
//! Deduplication is PagerDuty's: a trigger whose `dedup_key` belongs to an
//! unresolved incident adds nothing and pages no one; acknowledge and
//! resolve of an unknown or resolved key are accepted and change nothing;
//! a trigger without a key gets a new one.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use klaxon_core::incident::IncidentAction;
use klaxon_core::validate::TextKind;
use klaxon_store::{Actor, NewIncident};
use serde_json::{json, Map, Value};

use super::{
    act_on_open_incident, control_character, fit_details, message_and_description, open_incident,
    parse_json, read_body, service_for, with_retry_after, BodyError, Failure,
};
use crate::app::AppState;
use crate::http::incidents::KEY_MAX;
use crate::metrics::Source;

/// PagerDuty's limit on one event.
pub const BODY_LIMIT: usize = 512 * 1024;
/// Longest summary (v2) or description (v1), in characters as PagerDuty
/// counts them.
const SUMMARY_MAX: usize = 1024;
/// `payload.severity` values.
const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

/// A PagerDuty error answer.
#[derive(Debug)]
enum PdError {
    /// 400: what is wrong with the event.
    Invalid(Vec<String>),
    /// 413: over [`BODY_LIMIT`].
    TooLarge,
    /// 429: the key is over its rate; retry after this long.
    Throttled(std::time::Duration),
    /// 409, 503 or 500.
    Failed(Failure),
}

impl PdError {
    fn invalid(error: impl Into<String>) -> Self {
        PdError::Invalid(vec![error.into()])
    }
}

impl From<Failure> for PdError {
    fn from(failure: Failure) -> Self {
        match failure {
            // The key's service went away under the event: the key is no
            // longer a routing key.
            Failure::Gone => PdError::invalid("Invalid routing key"),
            other => PdError::Failed(other),
        }
    }
}

impl IntoResponse for PdError {
    fn into_response(self) -> Response {
        let (status, state, message, errors) = match self {
            PdError::Invalid(errors) => (
                StatusCode::BAD_REQUEST,
                "invalid event",
                "Event object is invalid",
                errors,
            ),
            PdError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid event",
                "Event object is invalid",
                vec![format!("Request body is over the {BODY_LIMIT}-byte limit")],
            ),
            PdError::Throttled(wait) => {
                let body = json!({
                    "status": "throttle exceeded",
                    "message": "Requests for this service are arriving too quickly. Please retry later.",
                    "errors": ["Rate limit of the routing key exceeded"],
                });
                let response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                return with_retry_after(response, wait);
            }
            PdError::Failed(failure) => {
                let (state, message) = match &failure {
                    Failure::Disabled(_) => ("service disabled", "Service is disabled"),
                    Failure::Unavailable => ("unavailable", "Please retry later"),
                    _ => ("error", "Internal error"),
                };
                (failure.status(), state, message, vec![failure.message()])
            }
        };
        let body = json!({ "status": state, "message": message, "errors": errors });
        (status, Json(body)).into_response()
    }
}

/// What an event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Trigger,
    Acknowledge,
    Resolve,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "trigger" => Some(Action::Trigger),
            "acknowledge" => Some(Action::Acknowledge),
            "resolve" => Some(Action::Resolve),
            _ => None,
        }
    }
}

/// An event of either version, validated.
#[derive(Debug)]
struct Event {
    routing_key: String,
    action: Action,
    dedup_key: Option<String>,
    /// Trigger only: the summary and what goes into the details.
    summary: String,
    details: Map<String, Value>,
}

/// Reads one JSON object's fields, collecting PagerDuty-style errors.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    /// What every event starts with, under its version's names: the
    /// integration key, the action, and the deduplication key (required
    /// unless the action is a trigger).
    fn head(&self, [key, action, dedup]: [&str; 3], errors: &mut Vec<String>) -> Head<'a> {
        let routing_key = self.line(key, true, errors);
        let parsed = self.line(action, true, errors).and_then(|a| {
            Action::parse(a).or_else(|| {
                errors.push(format!(
                    "'{action}' is invalid (must be one of: trigger, acknowledge, resolve)"
                ));
                None
            })
        });
        let dedup_key = self.line(dedup, parsed.is_some_and(|a| a != Action::Trigger), errors);
        check_key(dedup, dedup_key, errors);
        (routing_key, parsed, dedup_key)
    }

    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// A string field; `None` when absent, null or blank.
    fn text(&self, field: &str, errors: &mut Vec<String>) -> Option<&'a str> {
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                errors.push(format!("'{}' must be a string", self.name(field)));
                None
            }
        }
    }

    /// A required string field.
    fn required(&self, field: &str, errors: &mut Vec<String>) -> Option<&'a str> {
        let missing = !matches!(self.object.get(field), Some(v) if !v.is_string());
        let value = self.text(field, errors);
        if value.is_none() && missing {
            errors.push(format!("'{}' is missing or blank", self.name(field)));
        }
        value
    }

    /// A single-line string field (a key, an enumeration).
    fn line(&self, field: &str, required: bool, errors: &mut Vec<String>) -> Option<&'a str> {
        let value = if required {
            self.required(field, errors)
        } else {
            self.text(field, errors)
        };
        match value {
            Some(v) if TextKind::Line.refuses(v) => {
                errors.push(format!(
                    "'{}' must not contain control characters",
                    self.name(field)
                ));
                None
            }
            v => v,
        }
    }

    /// Copies a field into the details as it is, when present.
    fn keep(&self, field: &str, details: &mut Map<String, Value>) {
        if let Some(v) = self.object.get(field).filter(|v| !v.is_null()) {
            details.insert(field.to_owned(), v.clone());
        }
    }

    /// Copies a string field into the details.
    fn keep_text(&self, field: &str, details: &mut Map<String, Value>, errors: &mut Vec<String>) {
        if let Some(v) = self.text(field, errors) {
            details.insert(field.to_owned(), Value::String(v.to_owned()));
        }
    }

    /// Copies an array field into the details.
    fn keep_array(&self, field: &str, details: &mut Map<String, Value>, errors: &mut Vec<String>) {
        match self.object.get(field) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Array(_)) => {
                details.insert(field.to_owned(), v.clone());
            }
            Some(_) => errors.push(format!("'{}' must be an array", self.name(field))),
        }
    }
}

/// The top-level object of an event, with control characters refused.
fn event_object(document: &Value) -> Result<&Map<String, Value>, PdError> {
    let object = document
        .as_object()
        .ok_or_else(|| PdError::invalid("Event must be a JSON object"))?;
    if let Some(path) = control_character(document) {
        return Err(PdError::invalid(format!(
            "'{path}' must not contain control characters (other than tab, newline and carriage return)"
        )));
    }
    Ok(object)
}

/// Checks a summary's length the way PagerDuty counts it.
fn check_summary(name: &str, summary: Option<&str>, errors: &mut Vec<String>) {
    if summary.is_some_and(|s| s.chars().count() > SUMMARY_MAX) {
        errors.push(format!(
            "'{name}' is too long (maximum is {SUMMARY_MAX} characters)"
        ));
    }
}

/// Checks a deduplication key's length.
fn check_key(name: &str, key: Option<&str>, errors: &mut Vec<String>) {
    if key.is_some_and(|k| k.len() > KEY_MAX) {
        errors.push(format!("'{name}' is too long (maximum is {KEY_MAX} bytes)"));
    }
}

/// The head of an event as [`Fields::head`] reads it.
type Head<'a> = (Option<&'a str>, Option<Action>, Option<&'a str>);

impl Event {
    /// The event, if validation found nothing wrong.
    fn checked(
        errors: Vec<String>,
        (key, action, dedup_key): Head<'_>,
        summary: Option<&str>,
        details: Map<String, Value>,
    ) -> Result<Event, PdError> {
        match (errors.is_empty(), key, action) {
            (true, Some(key), Some(action)) => Ok(Event {
                routing_key: key.to_owned(),
                action,
                dedup_key: dedup_key.map(|k| k.trim().to_owned()),
                summary: summary.unwrap_or_default().to_owned(),
                details,
            }),
            _ => Err(PdError::Invalid(errors)),
        }
    }
}

/// Validates an Events API v2 event.
fn parse_v2(document: &Value) -> Result<Event, PdError> {
    let object = event_object(document)?;
    let event = Fields { object, prefix: "" };
    let mut errors = Vec::new();
    let (routing_key, action, dedup_key) =
        event.head(["routing_key", "event_action", "dedup_key"], &mut errors);
    let mut summary = None;
    let mut details = Map::new();
    if action == Some(Action::Trigger) {
        match object.get("payload") {
            Some(Value::Object(payload)) => {
                let payload = Fields {
                    object: payload,
                    prefix: "payload.",
                };
                summary = payload.required("summary", &mut errors);
                check_summary("payload.summary", summary, &mut errors);
                let source = payload.required("source", &mut errors);
                if let Some(severity) = payload.line("severity", true, &mut errors) {
                    if !SEVERITIES.contains(&severity) {
                        errors.push(
                            "'payload.severity' is invalid (must be one of: critical, error, warning, info)"
                                .into(),
                        );
                    }
                }
                if let Some(source) = source {
                    details.insert("source".into(), Value::String(source.to_owned()));
                }
                payload.keep("severity", &mut details);
                for field in ["timestamp", "component", "group", "class"] {
                    payload.keep_text(field, &mut details, &mut errors);
                }
                payload.keep("custom_details", &mut details);
            }
            None | Some(Value::Null) => errors.push("'payload' is missing or blank".into()),
            Some(_) => errors.push("'payload' must be an object".into()),
        }
        for field in ["client", "client_url"] {
            event.keep_text(field, &mut details, &mut errors);
        }
        for field in ["links", "images"] {
            event.keep_array(field, &mut details, &mut errors);
        }
    }
    Event::checked(errors, (routing_key, action, dedup_key), summary, details)
}

/// Validates a v1 event (`service_key`, `event_type`, `incident_key`,
/// `description`, `details`, `client`, `client_url`).
fn parse_v1(document: &Value) -> Result<Event, PdError> {
    let object = event_object(document)?;
    let event = Fields { object, prefix: "" };
    let mut errors = Vec::new();
    let (service_key, action, incident_key) =
        event.head(["service_key", "event_type", "incident_key"], &mut errors);
    let mut summary = None;
    let mut details = Map::new();
    if action == Some(Action::Trigger) {
        summary = event.required("description", &mut errors);
        check_summary("description", summary, &mut errors);
        event.keep("details", &mut details);
        for field in ["client", "client_url"] {
            event.keep_text(field, &mut details, &mut errors);
        }
    }
    Event::checked(
        errors,
        (service_key, action, incident_key),
        summary,
        details,
    )
}

/// The request's JSON document. The content type is not looked at: the
/// Events API reads JSON whatever a client calls it (`curl -d` says form).
async fn read_document(request: Request) -> Result<Value, PdError> {
    let bytes = read_body(request).await.map_err(|e| match e {
        BodyError::TooLarge => PdError::TooLarge,
        BodyError::Unreadable => PdError::invalid("The request body could not be read"),
    })?;
    parse_json(&bytes).map_err(PdError::invalid)
}

/// Processes a validated event; the deduplication key it concerns.
async fn process(state: &AppState, event: Event) -> Result<String, PdError> {
    let service = service_for(state, &event.routing_key)
        .await?
        .ok_or_else(|| PdError::invalid("Invalid routing key"))?;
    state
        .inbound
        .limiter
        .take(&service.id)
        .map_err(PdError::Throttled)?;
    state.metrics.integration_event(Source::PagerDuty);
    let action = match event.action {
        Action::Trigger => {
            let key = event.dedup_key.unwrap_or_else(new_dedup_key);
            let (message, description) = message_and_description(&event.summary);
            let new = NewIncident {
                message,
                description,
                details: Some(fit_details(event.details)),
                key: Some(key),
            };
            // Created or deduplicated, the answer is the same.
            open_incident(state, &service, &new)
                .await
                .map_err(Failure::from)?;
            return Ok(new.key.unwrap_or_default());
        }
        Action::Acknowledge => IncidentAction::Acknowledge,
        Action::Resolve => IncidentAction::Resolve,
    };
    let key = event.dedup_key.unwrap_or_default();
    // Whether it moved, already was there, or is not open: accepted.
    act_on_open_incident(state, &service, Some(&key), None, action)
        .await
        .map_err(Failure::from)?;
    Ok(key)
}

/// A deduplication key for a trigger that brought none, shaped like
/// PagerDuty's (32 hex digits).
fn new_dedup_key() -> String {
    klaxon_core::id::random_hex(&mut rand::rng(), 32)
}

/// `POST /v2/enqueue`: an alert event (trigger, acknowledge, resolve).
pub async fn enqueue_event(State(state): State<AppState>, request: Request) -> Response {
    let outcome = async {
        let event = parse_v2(&read_document(request).await?)?;
        process(&state, event).await
    }
    .await;
    match outcome {
        Ok(key) => (
            StatusCode::ACCEPTED,
            Json(json!({"status": "success", "message": "Event processed", "dedup_key": key})),
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}

/// `POST /generic/2010-04-15/create_event.json`: a v1 event, answered
/// `200 {"status":"success","message":"Event processed","incident_key":…}`.
pub async fn create_event_v1(State(state): State<AppState>, request: Request) -> Response {
    let outcome = async {
        let event = parse_v1(&read_document(request).await?)?;
        process(&state, event).await
    }
    .await;
    match outcome {
        Ok(key) => (
            StatusCode::OK,
            Json(json!({"status": "success", "message": "Event processed", "incident_key": key})),
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}

/// Validates a change event: the routing key and the changeset recorded.
fn parse_change(document: &Value) -> Result<(String, Value), PdError> {
    let object = event_object(document)?;
    let event = Fields { object, prefix: "" };
    let mut errors = Vec::new();
    let routing_key = event.line("routing_key", true, &mut errors);
    let mut changeset = Map::new();
    match object.get("payload") {
        Some(Value::Object(payload)) => {
            let payload = Fields {
                object: payload,
                prefix: "payload.",
            };
            let summary = payload.required("summary", &mut errors);
            check_summary("payload.summary", summary, &mut errors);
            for field in ["summary", "source", "timestamp"] {
                payload.keep_text(field, &mut changeset, &mut errors);
            }
            payload.keep("custom_details", &mut changeset);
        }
        None | Some(Value::Null) => errors.push("'payload' is missing or blank".into()),
        Some(_) => errors.push("'payload' must be an object".into()),
    }
    for field in ["links", "images"] {
        event.keep_array(field, &mut changeset, &mut errors);
    }
    match (errors.is_empty(), routing_key) {
        (true, Some(key)) => Ok((key.to_owned(), fit_details(changeset))),
        _ => Err(PdError::Invalid(errors)),
    }
}

/// `POST /v2/change/enqueue`: a change event (a deploy, a configuration
/// change), recorded on the service's timeline as `service.change_event`;
/// it opens nothing and pages nobody, on a disabled service too.
pub async fn enqueue_change_event(State(state): State<AppState>, request: Request) -> Response {
    let outcome = async {
        let (routing_key, changeset) = parse_change(&read_document(request).await?)?;
        let service = service_for(&state, &routing_key)
            .await?
            .ok_or_else(|| PdError::invalid("Invalid routing key"))?;
        state
            .inbound
            .limiter
            .take(&service.id)
            .map_err(PdError::Throttled)?;
        state.metrics.integration_event(Source::PagerDuty);
        state
            .store
            .record_change_event(
                &service.account_id,
                &service.id,
                &changeset,
                &Actor::Service(service.id.clone()),
                state.clock.now_ms(),
            )
            .await
            .map_err(Failure::from)?;
        Ok::<_, PdError>(())
    }
    .await;
    match outcome {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"status": "success", "message": "Change event processed"})),
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(document: Value) -> Vec<String> {
        match parse_v2(&document) {
            Err(PdError::Invalid(errors)) => errors,
            other => panic!("expected errors for {document}, got {other:?}"),
        }
    }

    #[test]
    fn a_full_trigger_keeps_everything_in_the_details() {
        let event = parse_v2(&json!({
            "routing_key": "k", "event_action": "trigger", "dedup_key": " d1 ",
            "payload": {
                "summary": "CPU high", "source": "web1", "severity": "warning",
                "timestamp": "2026-01-05T09:00:00Z", "component": "nginx", "group": "prod",
                "class": "cpu", "custom_details": {"load": 9.5},
            },
            "client": "Monitor", "client_url": "https://monitor.example.com",
            "links": [{"href": "https://example.com", "text": "runbook"}],
            "images": [{"src": "https://example.com/graph.png"}],
        }))
        .expect("valid");
        assert_eq!(event.dedup_key.as_deref(), Some("d1"));
        assert_eq!(event.summary, "CPU high");
        assert_eq!(
            Value::Object(event.details),
            json!({
                "source": "web1", "severity": "warning", "timestamp": "2026-01-05T09:00:00Z",
                "component": "nginx", "group": "prod", "class": "cpu",
                "custom_details": {"load": 9.5}, "client": "Monitor",
                "client_url": "https://monitor.example.com",
                "links": [{"href": "https://example.com", "text": "runbook"}],
                "images": [{"src": "https://example.com/graph.png"}],
            })
        );
    }

    #[test]
    fn acknowledge_and_resolve_need_only_a_key() {
        for action in ["acknowledge", "resolve"] {
            // Alertmanager sends `"payload": null` with a resolve.
            let event = parse_v2(
                &json!({"routing_key": "k", "event_action": action, "dedup_key": "d", "payload": null}),
            )
            .expect("valid");
            assert_eq!(event.dedup_key.as_deref(), Some("d"));
            assert_eq!(
                errors(json!({"routing_key": "k", "event_action": action})),
                ["'dedup_key' is missing or blank"]
            );
        }
    }

    #[test]
    fn every_problem_is_listed() {
        assert_eq!(
            errors(json!({})),
            [
                "'routing_key' is missing or blank",
                "'event_action' is missing or blank"
            ]
        );
        assert_eq!(
            errors(json!({"routing_key": "k", "event_action": "trigger"})),
            ["'payload' is missing or blank"]
        );
        assert_eq!(
            errors(json!({"routing_key": "k", "event_action": "trigger", "payload": {}})),
            [
                "'payload.summary' is missing or blank",
                "'payload.source' is missing or blank",
                "'payload.severity' is missing or blank"
            ]
        );
        assert_eq!(
            errors(json!({
                "routing_key": 5, "event_action": "explode", "dedup_key": "x".repeat(256),
                "payload": {"summary": "é".repeat(1025), "source": ["a"], "severity": "fatal"},
            })),
            [
                "'routing_key' must be a string",
                "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)",
                "'dedup_key' is too long (maximum is 255 bytes)",
            ]
        );
        assert_eq!(
            errors(json!({
                "routing_key": "k", "event_action": "trigger",
                "payload": {"summary": "é".repeat(1025), "source": ["a"], "severity": "fatal", "group": 1},
                "links": "x",
            })),
            [
                "'payload.summary' is too long (maximum is 1024 characters)",
                "'payload.source' must be a string",
                "'payload.severity' is invalid (must be one of: critical, error, warning, info)",
                "'payload.group' must be a string",
                "'links' must be an array",
            ]
        );
        // 1024 characters of two bytes each are within PagerDuty's limit.
        parse_v2(&json!({
            "routing_key": "k", "event_action": "trigger",
            "payload": {"summary": "é".repeat(1024), "source": "s", "severity": "info"},
        }))
        .expect("valid");
        assert_eq!(errors(json!([1])), ["Event must be a JSON object"]);
        assert_eq!(
            errors(json!({"routing_key": "k\u{0}", "event_action": "trigger"})),
            ["'routing_key' must not contain control characters (other than tab, newline and carriage return)"]
        );
        assert_eq!(
            errors(json!({"routing_key": "k", "event_action": "resolve", "dedup_key": "a\tb"})),
            ["'dedup_key' must not contain control characters"]
        );
    }

    #[test]
    fn v1_events() {
        let event = parse_v1(&json!({
            "service_key": "k", "event_type": "trigger", "description": "down",
            "details": {"a": 1}, "client": "Nagios",
        }))
        .expect("valid");
        assert_eq!(
            (event.action, event.dedup_key, event.summary.as_str()),
            (Action::Trigger, None, "down")
        );
        assert_eq!(
            Value::Object(event.details),
            json!({"details": {"a": 1}, "client": "Nagios"})
        );
        match parse_v1(&json!({"service_key": "k", "event_type": "resolve"})) {
            Err(PdError::Invalid(errors)) => {
                assert_eq!(errors, ["'incident_key' is missing or blank"])
            }
            other => panic!("{other:?}"),
        }
    }
}
