//! The subset of Opsgenie's Alert API that Alertmanager's
//! `opsgenie_configs` and alerting scripts use, authenticated with
//! `Authorization: GenieKey <integration key>`:
//!
//! - `POST /v2/alerts` opens an incident: `message` (required, up to
//!   Klaxon's 1 KiB message limit rather than Opsgenie's 130 characters),
//!   `alias` deduplicates (without one, the message does, as in `PUT
//!   /trigger`); `description`, `details`, `priority` (P1–P5, default P3),
//!   `tags`, `entity`, `source`, `note`, `user`, `responders`, `actions`
//!   are kept in the incident's details.
//! - `POST /v2/alerts/{identifier}/close` and `…/acknowledge`, with
//!   `identifierType=alias` (what Alertmanager sends) or `id` (Opsgenie's
//!   default: a Klaxon incident id of the key's service). `tiny` is not
//!   supported (`422`). Other actions (`…/message`, `…/description`: leave
//!   Alertmanager's `update_alerts` off) are `404`.
//!
//! Answers are Opsgenie's: `202 {"result":"Request will be
//! processed","took":…,"requestId":…}`, and errors `{"message","took",
//! "requestId"}` (`422` adds `errors` by field) with `401` (key), `404`,
//! `413`, `422`, `429` (with `Retry-After`) and Klaxon's `409` for a
//! disabled service. Like Opsgenie, which processes requests
//! asynchronously, closing or acknowledging an alert that is not open is
//! accepted and does nothing.

use std::time::Instant;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use klaxon_core::incident::IncidentAction;
use klaxon_core::PublicId;
use klaxon_store::{ActOutcome, Actor, IntegrationTarget, NewIncident, StoreError};
use serde_json::{json, Map, Value};

use super::{
    act_on_open_incident, control_character, fit_details, fitting_key, open_incident, parse_json,
    read_body, service_for, with_retry_after, BodyError, Failure,
};
use crate::app::AppState;
use crate::http::incidents::{DESCRIPTION_MAX, MESSAGE_MAX};
use crate::metrics::Source;

/// Opsgenie's limit on an alias, in characters.
const ALIAS_MAX: usize = 512;
/// `priority` values.
const PRIORITIES: [&str; 5] = ["P1", "P2", "P3", "P4", "P5"];

/// An Opsgenie error answer.
#[derive(Debug)]
struct OgError {
    status: StatusCode,
    message: String,
    /// Field → problem (`422` only).
    errors: Option<Map<String, Value>>,
    retry_after: Option<std::time::Duration>,
}

impl OgError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: None,
            retry_after: None,
        }
    }

    fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Could not authenticate")
    }

    /// A `422` naming what is wrong with each field.
    fn unprocessable(errors: Map<String, Value>) -> Self {
        Self {
            errors: Some(errors),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Request body is not processable. Please check the errors.",
            )
        }
    }

    fn field(field: &str, problem: impl Into<String>) -> Self {
        let mut errors = Map::new();
        errors.insert(field.to_owned(), Value::String(problem.into()));
        Self::unprocessable(errors)
    }
}

impl From<Failure> for OgError {
    fn from(failure: Failure) -> Self {
        Self::new(failure.status(), failure.message())
    }
}

impl From<StoreError> for OgError {
    fn from(err: StoreError) -> Self {
        Failure::from(err).into()
    }
}

impl From<BodyError> for OgError {
    fn from(err: BodyError) -> Self {
        match err {
            BodyError::TooLarge => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large.")
            }
            BodyError::Unreadable => OgError::field("body", "could not be read"),
        }
    }
}

/// One request's `took` and `requestId`.
struct Reply {
    started: Instant,
    request_id: String,
}

impl Reply {
    fn start() -> Self {
        let hex = klaxon_core::id::random_hex(&mut rand::rng(), 32);
        let request_id = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        Self {
            started: Instant::now(),
            request_id,
        }
    }

    /// Seconds since the request began, to the millisecond, as Opsgenie
    /// reports it.
    fn took(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
    }

    fn answer(self, outcome: Result<(), OgError>) -> Response {
        let took = self.took();
        match outcome {
            Ok(()) => (
                StatusCode::ACCEPTED,
                Json(json!({
                    "result": "Request will be processed",
                    "took": took,
                    "requestId": self.request_id,
                })),
            )
                .into_response(),
            Err(err) => {
                let mut body = Map::new();
                body.insert("message".into(), Value::String(err.message));
                if let Some(errors) = err.errors {
                    body.insert("errors".into(), Value::Object(errors));
                }
                body.insert("took".into(), json!(took));
                body.insert("requestId".into(), Value::String(self.request_id));
                let response = (err.status, Json(Value::Object(body))).into_response();
                match err.retry_after {
                    Some(wait) => with_retry_after(response, wait),
                    None => response,
                }
            }
        }
    }
}

/// The key of `Authorization: GenieKey <key>`.
fn genie_key(request: &Request) -> Option<String> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, key) = value.split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("geniekey")
        .then(|| key.trim().to_owned())
}

/// The key's service, within its rate.
async fn authenticate(state: &AppState, key: Option<String>) -> Result<IntegrationTarget, OgError> {
    let key = key.ok_or_else(OgError::unauthorized)?;
    let service = service_for(state, &key)
        .await?
        .ok_or_else(OgError::unauthorized)?;
    state
        .inbound
        .limiter
        .take(&service.id)
        .map_err(|wait| {
            OgError {
        retry_after: Some(wait),
        ..OgError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "You are making too many requests! To avoid errors, we recommend you limit requests.",
        )
    }
        })?;
    Ok(service)
}

/// The body as a JSON object (an empty body is an empty object).
async fn read_object(request: Request) -> Result<Map<String, Value>, OgError> {
    let bytes = read_body(request).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let document = parse_json(&bytes).map_err(|e| OgError::field("body", e))?;
    if let Some(path) = control_character(&document) {
        return Err(OgError::field(
            &path,
            "must not contain control characters (other than tab, newline and carriage return)",
        ));
    }
    match document {
        Value::Object(object) => Ok(object),
        _ => Err(OgError::field("body", "must be a JSON object")),
    }
}

/// A validated `POST /v2/alerts` body.
fn parse_alert(mut body: Map<String, Value>) -> Result<NewIncident, OgError> {
    let mut errors = Map::new();
    let mut text = |body: &mut Map<String, Value>, field: &str| match body.remove(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errors.insert(field.into(), json!(format!("{field} must be a string")));
            None
        }
    };
    let message = text(&mut body, "message").map(|m| m.trim().to_owned());
    let alias = text(&mut body, "alias").filter(|a| !a.trim().is_empty());
    let description = text(&mut body, "description").filter(|d| !d.trim().is_empty());
    let priority = text(&mut body, "priority");
    let mut more = Map::new();
    for field in ["entity", "source", "note", "user"] {
        if let Some(v) = text(&mut body, field) {
            more.insert(field.into(), Value::String(v));
        }
    }
    match message.as_deref() {
        None | Some("") => {
            errors.insert("message".into(), json!("Message can not be empty."));
        }
        Some(m) if m.len() > MESSAGE_MAX => {
            errors.insert(
                "message".into(),
                json!(format!(
                    "Message can not be longer than {MESSAGE_MAX} bytes."
                )),
            );
        }
        Some(_) => {}
    }
    if alias
        .as_ref()
        .is_some_and(|a| a.chars().count() > ALIAS_MAX)
    {
        errors.insert(
            "alias".into(),
            json!(format!(
                "Alias can not be longer than {ALIAS_MAX} characters."
            )),
        );
    }
    if description
        .as_ref()
        .is_some_and(|d| d.len() > DESCRIPTION_MAX)
    {
        errors.insert(
            "description".into(),
            json!(format!(
                "Description can not be longer than {DESCRIPTION_MAX} bytes."
            )),
        );
    }
    if priority
        .as_deref()
        .is_some_and(|p| !PRIORITIES.contains(&p))
    {
        errors.insert(
            "priority".into(),
            json!("Priority should be one of [P1, P2, P3, P4, P5]"),
        );
    }
    let mut details = Map::new();
    details.insert(
        "priority".into(),
        Value::String(priority.unwrap_or_else(|| "P3".into())),
    );
    details.append(&mut more);
    match body.remove("details") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => {
            details.insert("details".into(), v);
        }
        Some(_) => {
            errors.insert(
                "details".into(),
                json!("Details must be an object of strings."),
            );
        }
    }
    match body.remove("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tags)) if tags.iter().all(Value::is_string) => {
            details.insert("tags".into(), Value::Array(tags));
        }
        Some(_) => {
            errors.insert("tags".into(), json!("Tags must be a list of strings."));
        }
    }
    for field in ["responders", "visibleTo", "actions"] {
        if let Some(v) = body.remove(field).filter(|v| !v.is_null()) {
            details.insert(field.into(), v);
        }
    }
    if !errors.is_empty() {
        return Err(OgError::unprocessable(errors));
    }
    Ok(NewIncident {
        message: message.unwrap_or_default(),
        description,
        details: Some(fit_details(details)),
        key: alias.as_deref().map(fitting_key),
    })
}

/// `POST /v2/alerts`: opens an incident, or adds nothing to the open one
/// with the alias (or, without one, the message).
pub async fn create_alert(State(state): State<AppState>, request: Request) -> Response {
    let reply = Reply::start();
    let outcome = async {
        let service = authenticate(&state, genie_key(&request)).await?;
        let new = parse_alert(read_object(request).await?)?;
        state.metrics.integration_event(Source::Opsgenie);
        open_incident(&state, &service, &new).await?;
        Ok(())
    }
    .await;
    reply.answer(outcome)
}

/// `POST /v2/alerts/{identifier}/close` and `…/acknowledge`.
pub async fn act_on_alert(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let reply = Reply::start();
    let outcome = async {
        let Ok(Path((identifier, action))) = path else {
            return Err(OgError::new(StatusCode::NOT_FOUND, "Alert does not exist"));
        };
        let action = match action.as_str() {
            "close" => IncidentAction::Resolve,
            "acknowledge" => IncidentAction::Acknowledge,
            other => {
                return Err(OgError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "Alert action {other:?} is not supported: only close and acknowledge are"
                    ),
                ))
            }
        };
        let identifier_type =
            form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                .find(|(name, _)| name == "identifierType")
                .map_or_else(|| "id".to_owned(), |(_, v)| v.into_owned());
        let service = authenticate(&state, genie_key(&request)).await?;
        // The body (`user`, `source`, `note`) only has to be well-formed.
        read_object(request).await?;
        state.metrics.integration_event(Source::Opsgenie);
        match identifier_type.as_str() {
            "alias" => {
                if identifier.chars().count() > ALIAS_MAX {
                    return Err(OgError::field(
                        "identifier",
                        format!("Alias can not be longer than {ALIAS_MAX} characters."),
                    ));
                }
                let key = fitting_key(&identifier);
                act_on_open_incident(&state, &service, Some(&key), None, action).await?;
            }
            "id" => act_on_incident_id(&state, &service, &identifier, action).await?,
            "tiny" => {
                return Err(OgError::field(
                    "identifierType",
                    "tiny ids are not supported; use identifierType=alias or id",
                ))
            }
            _ => {
                return Err(OgError::field(
                    "identifierType",
                    "Identifier type should be one of [id, alias, tiny]",
                ))
            }
        }
        Ok(())
    }
    .await;
    reply.answer(outcome)
}

/// Acts on an incident of the key's service by its Klaxon id. Another
/// service's or account's incident is as absent as an unknown one.
async fn act_on_incident_id(
    state: &AppState,
    service: &IntegrationTarget,
    id: &str,
    action: IncidentAction,
) -> Result<(), OgError> {
    if PublicId::parse(id).is_none() {
        return Ok(());
    }
    let incident = match state.store.get_incident(&service.account_id, id).await {
        Ok(incident) if incident.service_id == service.id => incident,
        Ok(_) | Err(StoreError::NotFound) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    let actor = Actor::Service(service.id.clone());
    match state
        .store
        .act_on_incident(
            &service.account_id,
            &incident.id,
            action,
            &actor,
            state.clock.now_ms(),
        )
        .await
    {
        Ok(ActOutcome::Changed(_) | ActOutcome::Unchanged(_))
        | Err(StoreError::Transition(_) | StoreError::NotFound) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn alertmanagers_create_message() {
        let new = parse_alert(body(json!({
            "alias": "6b86b273ff34fce19d6b804eff5a3f5747ada4ea22f1d49c01e52ddb7875b4b",
            "message": "[FIRING:1] HighLatency api",
            "description": "Latency is high",
            "details": {"alertname": "HighLatency", "job": "api"},
            "source": "http://alertmanager:9093",
            "tags": ["prod", "api"],
            "priority": "P2",
        })))
        .expect("valid");
        assert_eq!(new.message, "[FIRING:1] HighLatency api");
        assert_eq!(
            new.key.as_deref(),
            Some("6b86b273ff34fce19d6b804eff5a3f5747ada4ea22f1d49c01e52ddb7875b4b")
        );
        assert_eq!(new.description.as_deref(), Some("Latency is high"));
        assert_eq!(
            new.details,
            Some(json!({
                "priority": "P2", "source": "http://alertmanager:9093",
                "details": {"alertname": "HighLatency", "job": "api"}, "tags": ["prod", "api"],
            }))
        );
    }

    #[test]
    fn problems_are_named_by_field() {
        let err = parse_alert(body(json!({
            "message": "", "priority": "P9", "tags": "a", "details": [1], "alias": "a".repeat(513),
            "entity": 5,
        })))
        .expect_err("invalid");
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        let errors = err.errors.expect("errors");
        let mut fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["alias", "details", "entity", "message", "priority", "tags"]
        );
        // Without an alias the message deduplicates; the priority defaults.
        let new = parse_alert(body(json!({"message": "m"}))).expect("valid");
        assert_eq!(new.key, None);
        assert_eq!(new.details, Some(json!({"priority": "P3"})));
    }
}
