//! Prometheus Alertmanager's webhook receiver, `POST
//! /integrations/alertmanager` (`webhook_configs`, payload version 4), with
//! the integration key as `Authorization: Bearer <key>` or `?key=<key>`.
//!
//! One notification is one group of alerts: `firing` opens an incident
//! (or finds the open one), `resolved` resolves it. The group key
//! deduplicates (hashed when it does not fit a key: group keys of many
//! labels are long). The message is the group's `summary` annotation, or
//! its alert name and labels; the details keep the alerts (labels,
//! annotations, times, generator URL), the common and group labels, the
//! common annotations and Alertmanager's URL. A group that grows while its
//! incident is open (a firing notification with more firing alerts than
//! the incident records) replaces the incident's details and notes the new
//! count on its timeline (`incident.update`).
//!
//! Answers `200 {"status":"success",…}`; errors are the API's usual JSON
//! errors (`401`, `400`, `409` for a disabled service, `413`, `422`), and
//! `429` with `Retry-After` when the key is over its rate.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use klaxon_core::incident::IncidentAction;
use klaxon_core::validate::TextKind;
use klaxon_store::{Actor, IntegrationTarget, NewIncident, StoreError, TriggerOutcome};
use serde_json::{json, Map, Value};

use super::{
    act_on_open_incident, control_character, cut, fit_details, fitting_key, open_incident,
    parse_json, read_body, service_for, with_retry_after, Acted, BodyError, Failure,
};
use crate::app::AppState;
use crate::http::auth::credential;
use crate::http::error::ApiError;
use crate::http::incidents::{DESCRIPTION_MAX, MESSAGE_MAX};
use crate::metrics::Source;

/// Fields of each alert kept in the incident's details.
const ALERT_FIELDS: [&str; 7] = [
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
];
/// Fields of the notification kept in the incident's details.
const GROUP_FIELDS: [&str; 7] = [
    "status",
    "receiver",
    "groupKey",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
];

/// What can go wrong, in the API's usual shapes.
enum AmError {
    Api(ApiError),
    Throttled(std::time::Duration),
}

impl From<ApiError> for AmError {
    fn from(err: ApiError) -> Self {
        AmError::Api(err)
    }
}

impl From<Failure> for AmError {
    fn from(failure: Failure) -> Self {
        AmError::Api(match failure {
            Failure::Disabled(message) => ApiError::Conflict(message),
            Failure::Gone => ApiError::Unauthorized,
            Failure::Unavailable => ApiError::Unavailable,
            Failure::Internal => ApiError::Internal(anyhow::anyhow!("inbound integration failed")),
        })
    }
}

impl From<StoreError> for AmError {
    fn from(err: StoreError) -> Self {
        Failure::from(err).into()
    }
}

impl IntoResponse for AmError {
    fn into_response(self) -> Response {
        match self {
            AmError::Api(err) => err.into_response(),
            AmError::Throttled(wait) => {
                let body = json!({
                    "error": "too_many_requests",
                    "message": "this integration key is over its rate of events; retry later",
                });
                with_retry_after(
                    (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response(),
                    wait,
                )
            }
        }
    }
}

/// The key from `Authorization` or the `key` query parameter.
fn key_of(parts: &Parts) -> Option<String> {
    if let Some(key) = credential(parts) {
        return Some(key.to_owned());
    }
    form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, v)| v.into_owned())
}

/// A validated notification.
#[derive(Debug)]
struct Notification {
    group_key: String,
    firing: bool,
    /// Firing alerts, those Alertmanager left out (`truncatedAlerts`)
    /// counted in.
    firing_alerts: i64,
    message: String,
    description: Option<String>,
    details: Map<String, Value>,
}

/// A field that must be an object of strings (labels, annotations), if
/// present.
fn labels<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    checks: &mut super::super::input::Checks,
) -> Option<&'a Map<String, Value>> {
    match object.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => {
            checks.add(field, "must be an object");
            None
        }
    }
}

/// Validates a webhook notification and builds the incident's fields.
fn parse_notification(document: Value) -> Result<Notification, ApiError> {
    let mut checks = super::super::input::Checks::default();
    if let Some(path) = control_character(&document) {
        return Err(ApiError::field(&path, TextKind::Text.message()));
    }
    let Value::Object(object) = document else {
        return Err(ApiError::field("base", "must be a JSON object"));
    };
    match object.get("version") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v == "4" => {}
        Some(_) => checks.add("version", "must be \"4\" (Alertmanager's webhook version)"),
    }
    let group_key = match object.get("groupKey") {
        Some(Value::String(k)) if !k.trim().is_empty() => k.clone(),
        Some(Value::String(_) | Value::Null) | None => {
            checks.add("groupKey", "can't be blank");
            String::new()
        }
        Some(_) => {
            checks.add("groupKey", "must be a string");
            String::new()
        }
    };
    let firing = match object.get("status").and_then(Value::as_str) {
        Some("firing") => true,
        Some("resolved") => false,
        _ => {
            checks.add("status", "must be firing or resolved");
            false
        }
    };
    let alerts: &[Value] = match object.get("alerts") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(alerts)) => alerts,
        Some(_) => {
            checks.add("alerts", "must be an array");
            &[]
        }
    };
    if alerts.iter().any(|a| !a.is_object()) {
        checks.add("alerts", "must be an array of objects");
    }
    let truncated = match object.get("truncatedAlerts") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().filter(|n| *n >= 0).unwrap_or_else(|| {
            checks.add("truncatedAlerts", "must be a whole number");
            0
        }),
    };
    let group_labels = labels(&object, "groupLabels", &mut checks);
    let common_labels = labels(&object, "commonLabels", &mut checks);
    let common_annotations = labels(&object, "commonAnnotations", &mut checks);
    checks.finish()?;

    let firing_alerts = alerts
        .iter()
        .filter(|a| a.get("status").and_then(Value::as_str) != Some("resolved"))
        .count() as i64
        + truncated;
    let annotation = |name: &str| {
        common_annotations
            .and_then(|a| a.get(name))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let message = match annotation("summary") {
        Some(summary) => summary.to_owned(),
        None => labelled_name(group_labels, common_labels, &group_key),
    };
    let description = annotation("description").map(|d| cut(d, DESCRIPTION_MAX).to_owned());

    let mut details = Map::new();
    details.insert("alert_count".into(), json!(firing_alerts));
    for field in GROUP_FIELDS {
        if let Some(v) = object.get(field).filter(|v| !v.is_null()) {
            details.insert(field.into(), v.clone());
        }
    }
    if truncated > 0 {
        details.insert("truncatedAlerts".into(), json!(truncated));
    }
    let kept: Vec<Value> = alerts
        .iter()
        .filter_map(Value::as_object)
        .map(|alert| {
            let mut kept = Map::new();
            for field in ALERT_FIELDS {
                if let Some(v) = alert.get(field).filter(|v| !v.is_null()) {
                    kept.insert(field.into(), v.clone());
                }
            }
            Value::Object(kept)
        })
        .collect();
    details.insert("alerts".into(), Value::Array(kept));
    Ok(Notification {
        group_key,
        firing,
        firing_alerts,
        message: cut(&message, MESSAGE_MAX).trim().to_owned(),
        description,
        details,
    })
}

/// `alertname (label=value, …)`: the alert name with the labels that tell
/// this group apart — its group labels, or without any besides the name,
/// the labels its alerts share.
fn labelled_name(
    group_labels: Option<&Map<String, Value>>,
    common_labels: Option<&Map<String, Value>>,
    group_key: &str,
) -> String {
    let label = |map: Option<&Map<String, Value>>, name: &str| {
        map.and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let pairs = |map: Option<&Map<String, Value>>| -> Vec<String> {
        map.into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "alertname")
            .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
            .collect()
    };
    let Some(name) = label(common_labels, "alertname").or_else(|| label(group_labels, "alertname"))
    else {
        return format!("Alertmanager alert group {group_key}");
    };
    let mut distinguishing = pairs(group_labels);
    if distinguishing.is_empty() {
        distinguishing = pairs(common_labels);
    }
    if distinguishing.is_empty() {
        name
    } else {
        format!("{name} ({})", distinguishing.join(", "))
    }
}

/// `POST /integrations/alertmanager`.
pub async fn receive_alerts(State(state): State<AppState>, request: Request) -> Response {
    match receive(&state, request).await {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn receive(state: &AppState, request: Request) -> Result<Value, AmError> {
    let (parts, body) = request.into_parts();
    let key = key_of(&parts).ok_or(ApiError::Unauthorized)?;
    let service = service_for(state, &key)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let bytes = read_body(Request::from_parts(parts, body))
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => ApiError::PayloadTooLarge,
            BodyError::Unreadable => ApiError::BadRequest("could not read the request body".into()),
        })?;
    let document = parse_json(&bytes).map_err(ApiError::BadRequest)?;
    let notification = parse_notification(document)?;
    state
        .inbound
        .limiter
        .take(&service.id)
        .map_err(AmError::Throttled)?;
    state.metrics.integration_event(Source::Alertmanager);
    let key = fitting_key(&notification.group_key);
    if !notification.firing {
        let acted =
            act_on_open_incident(state, &service, Some(&key), None, IncidentAction::Resolve)
                .await?;
        let outcome = match acted {
            Acted::Changed => "resolved",
            Acted::Unchanged | Acted::NotOpen => "not_open",
        };
        return Ok(json!({"status": "success", "outcome": outcome, "key": key}));
    }
    let alerts = notification.firing_alerts;
    let details = fit_details(notification.details);
    let new = NewIncident {
        message: notification.message,
        description: notification.description,
        details: Some(details),
        key: Some(key.clone()),
    };
    let (id, outcome) = match open_incident(state, &service, &new).await? {
        TriggerOutcome::Created(incident) => {
            state.inbound.note_alerts(&incident.id, alerts);
            (incident.id, "opened")
        }
        TriggerOutcome::Deduplicated(id) => {
            let grew = grow(state, &service, &id, alerts, new.details.as_ref()).await?;
            (id, if grew { "updated" } else { "deduplicated" })
        }
    };
    Ok(json!({"status": "success", "outcome": outcome, "incident_id": id, "key": key}))
}

/// Records a group that grew while its incident was open. The alerts an
/// incident is known to record are remembered, so a repeated notification
/// of a group that did not grow costs no query.
async fn grow(
    state: &AppState,
    service: &IntegrationTarget,
    id: &str,
    alerts: i64,
    details: Option<&Value>,
) -> Result<bool, AmError> {
    if alerts <= state.inbound.known_alerts(id) {
        return Ok(false);
    }
    let details = details.cloned().unwrap_or(Value::Null);
    let grown = match state
        .store
        .grow_incident(
            &service.account_id,
            id,
            alerts,
            &details,
            &Actor::Service(service.id.clone()),
            state.clock.now_ms(),
        )
        .await
    {
        Ok(grown) => grown.is_some(),
        // Deleted since the trigger found it.
        Err(StoreError::NotFound) => false,
        Err(err) => return Err(err.into()),
    };
    state.inbound.note_alerts(id, alerts);
    Ok(grown)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of Alertmanager's webhook documentation (version 4).
    fn documented() -> Value {
        json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"HighLatency\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "klaxon",
            "groupLabels": {"alertname": "HighLatency"},
            "commonLabels": {"alertname": "HighLatency", "job": "api", "severity": "page"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "HighLatency", "instance": "web1", "job": "api", "severity": "page"},
                    "annotations": {"runbook": "https://runbooks.example.com/latency"},
                    "startsAt": "2026-01-05T09:00:00.000Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus:9090/graph?g0.expr=latency",
                    "fingerprint": "c0ffee00c0ffee00",
                },
                {
                    "status": "resolved",
                    "labels": {"alertname": "HighLatency", "instance": "web2", "job": "api", "severity": "page"},
                    "annotations": {},
                    "startsAt": "2026-01-05T08:00:00.000Z",
                    "endsAt": "2026-01-05T08:30:00.000Z",
                    "generatorURL": "http://prometheus:9090/graph?g0.expr=latency",
                    "fingerprint": "c0ffee00c0ffee01",
                    "extra": "dropped",
                },
            ],
        })
    }

    #[test]
    fn a_documented_notification() {
        let n = parse_notification(documented()).expect("valid");
        assert!(n.firing);
        assert_eq!(n.group_key, "{}:{alertname=\"HighLatency\"}");
        assert_eq!(n.firing_alerts, 1, "the resolved alert is not counted");
        assert_eq!(n.message, "HighLatency (job=api, severity=page)");
        assert_eq!(n.description, None);
        assert_eq!(n.details["alert_count"], 1);
        assert_eq!(n.details["externalURL"], "http://alertmanager:9093");
        assert_eq!(n.details["alerts"][1].get("extra"), None);
        assert_eq!(n.details["alerts"][0]["fingerprint"], "c0ffee00c0ffee00");
    }

    #[test]
    fn the_summary_wins_and_group_labels_distinguish() {
        let mut body = documented();
        body["commonAnnotations"] =
            json!({"summary": "API latency is high", "description": "p99 > 1s\non web1"});
        let n = parse_notification(body.clone()).expect("valid");
        assert_eq!(n.message, "API latency is high");
        assert_eq!(n.description.as_deref(), Some("p99 > 1s\non web1"));
        body["commonAnnotations"] = json!({});
        body["groupLabels"] = json!({"alertname": "HighLatency", "cluster": "eu1"});
        let n = parse_notification(body).expect("valid");
        assert_eq!(n.message, "HighLatency (cluster=eu1)");
    }

    #[test]
    fn bad_notifications_name_their_fields() {
        let err = |body: Value| match parse_notification(body) {
            Err(ApiError::Unprocessable(errors)) => errors.into_keys().collect::<Vec<_>>(),
            other => panic!("expected a 422, got {other:?}"),
        };
        assert_eq!(
            err(json!({"version": "3", "status": "burning", "alerts": {}, "groupKey": 1})),
            ["alerts", "groupKey", "status", "version"]
        );
        assert_eq!(err(json!([])), ["base"]);
        let mut body = documented();
        body["alerts"][0]["labels"]["job"] = json!("a\u{0}b");
        assert_eq!(err(body), ["alerts[0].labels.job"]);
        let mut body = documented();
        body["commonLabels"] = json!("x");
        body["truncatedAlerts"] = json!(-1);
        assert_eq!(err(body), ["commonLabels", "truncatedAlerts"]);
    }
}
