//! `/incidents`: the seed contract, to the letter, plus Revily's extras.

use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use klaxon_core::incident::{IncidentAction, IncidentState};
use klaxon_core::time::parse_ts;
use klaxon_store::{IncidentFilter, IncidentPatch, NewIncident, TriggerOutcome};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::input::{check_json, nullable, Checks, Input, Params};
use super::page::PageParams;
use super::{path_id, views};
use crate::app::AppState;

/// Longest message.
pub const MESSAGE_MAX: usize = 1024;
/// Longest description.
pub const DESCRIPTION_MAX: usize = 16 * 1024;
/// Largest details, serialised.
pub const DETAILS_MAX: usize = 64 * 1024;
/// Longest deduplication key.
pub const KEY_MAX: usize = 255;

/// Body of `POST /services/:id/incidents` and `PUT /trigger`.
#[derive(Debug, Deserialize)]
pub struct IncidentBody {
    message: Option<String>,
    key: Option<String>,
    description: Option<String>,
    details: Option<Value>,
}

/// Checks `details`: a JSON object or string within the size limit. A
/// string that holds a JSON object (what a form can send) becomes the object.
fn check_details(checks: &mut Checks, details: Option<Value>) -> Option<Value> {
    let details = match details? {
        Value::Null => return None,
        Value::String(s) if s.trim_start().starts_with('{') => {
            let details = serde_json::from_str::<Value>(&s).unwrap_or(Value::String(s));
            // The request was checked as text; its escapes become
            // characters only now.
            check_json(checks, &details, "details", Some("details"));
            details
        }
        v @ (Value::String(_) | Value::Object(_)) => v,
        _ => {
            checks.add("details", "must be a JSON object or a string");
            return None;
        }
    };
    if serde_json::to_vec(&details).map_or(true, |b| b.len() > DETAILS_MAX) {
        checks.add(
            "details",
            format!("is too large (maximum is {DETAILS_MAX} bytes)"),
        );
    }
    Some(details)
}

/// Validates a new incident (shared with the integration API).
pub fn parse_new_incident(body: IncidentBody) -> ApiResult<NewIncident> {
    let mut checks = Checks::default();
    let message = checks.required("message", body.message.as_deref(), MESSAGE_MAX);
    let key = checks.optional("key", body.key.as_deref(), KEY_MAX);
    let description = checks.optional("description", body.description.as_deref(), DESCRIPTION_MAX);
    let details = check_details(&mut checks, body.details);
    checks.finish()?;
    Ok(NewIncident {
        message,
        description,
        details,
        key,
    })
}

/// `201 Created` with the incident and its `Location`.
pub fn created_incident(incident: &klaxon_store::Incident) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/incidents/{}", incident.id))],
        Json(views::incident(incident)),
    )
        .into_response()
}

/// `POST /services/:service_id/incidents`: opens an incident. An explicit
/// key already used by an unresolved incident of the service is a 422.
pub async fn create_incident(
    State(state): State<AppState>,
    auth: Auth,
    Path(service_id): Path<String>,
    Input(body): Input<IncidentBody>,
) -> ApiResult<Response> {
    auth.require_responder()?;
    let service_id = path_id(&service_id)?;
    let new = parse_new_incident(body)?;
    let outcome = state
        .store
        .trigger_incident(
            &auth.account_id,
            service_id,
            &new,
            false,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    match outcome {
        TriggerOutcome::Created(incident) => Ok(created_incident(&incident)),
        TriggerOutcome::Deduplicated(_) => Err(ApiError::field("key", "has already been taken")),
    }
}

/// Query of `GET /incidents`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    service_id: Option<String>,
    current_user_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    page: Option<String>,
    per_page: Option<String>,
}

fn parse_filter(
    query: ListQuery,
    service_id: Option<&str>,
) -> ApiResult<(IncidentFilter, super::page::Page)> {
    let mut checks = Checks::default();
    let page = PageParams {
        page: query.page,
        per_page: query.per_page,
    }
    .parse(&mut checks);
    let mut states = Vec::new();
    for s in query
        .state
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match IncidentState::parse(s) {
            Some(s) => states.push(s.as_str().to_owned()),
            None => checks.add(
                "state",
                format!("{s:?} is not one of triggered, acknowledged, resolved"),
            ),
        }
    }
    let mut id_param = |field: &str, raw: Option<&str>| {
        raw.filter(|r| !r.is_empty()).map(|r| {
            if klaxon_core::PublicId::parse(r).is_none() {
                checks.add(field, "is not a valid id");
            }
            r.to_owned()
        })
    };
    let service_id = service_id
        .map(str::to_owned)
        .or_else(|| id_param("service_id", query.service_id.as_deref()));
    let current_user_id = id_param("current_user_id", query.current_user_id.as_deref());
    let mut instant = |field: &str, raw: Option<&str>| {
        raw.filter(|r| !r.is_empty()).and_then(|r| {
            let t = parse_ts(r);
            if t.is_none() {
                checks.add(field, "must be an RFC 3339 time like 2026-01-05T09:00:00Z");
            }
            t
        })
    };
    let since = instant("since", query.since.as_deref());
    let until = instant("until", query.until.as_deref());
    let q = query.q.filter(|q| !q.is_empty());
    if let Some(q) = &q {
        checks.max_len("q", q, MESSAGE_MAX);
    }
    checks.finish()?;
    let filter = IncidentFilter {
        states,
        service_id,
        current_user_id,
        since,
        until,
        q,
        limit: page.per_page,
        offset: page.offset(),
    };
    Ok((filter, page))
}

async fn list(
    state: AppState,
    auth: Auth,
    uri: axum::http::Uri,
    query: ListQuery,
    service_id: Option<&str>,
) -> ApiResult<Response> {
    let (filter, page) = parse_filter(query, service_id)?;
    if let Some(id) = service_id {
        // Another account's service is a 404, not an empty list.
        state.store.get_service(&auth.account_id, id).await?;
    }
    let (incidents, total) = state
        .store
        .list_incidents(&auth.account_id, &filter)
        .await?;
    let body: Vec<_> = incidents.iter().map(views::incident).collect();
    Ok((page.headers(&uri, total), Json(body)).into_response())
}

/// `GET /incidents`: newest first, filtered and paginated.
pub async fn list_incidents(
    State(state): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    Params(query): Params<ListQuery>,
) -> ApiResult<Response> {
    list(state, auth, uri, query, None).await
}

/// `GET /services/:service_id/incidents`
pub async fn list_service_incidents(
    State(state): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    Path(service_id): Path<String>,
    Params(query): Params<ListQuery>,
) -> ApiResult<Response> {
    let service_id = path_id(&service_id)?;
    list(state, auth, uri, query, Some(service_id)).await
}

/// `GET /incidents/:id`
pub async fn show_incident(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let incident = state
        .store
        .get_incident(&auth.account_id, path_id(&id)?)
        .await?;
    Ok(Json(views::incident(&incident)).into_response())
}

/// `PUT /incidents/:id` body; `null` clears description or details.
#[derive(Debug, Deserialize)]
pub struct UpdateBody {
    message: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    details: Option<Option<Value>>,
}

/// `PUT /incidents/:id`: changes message, description or details.
pub async fn update_incident(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<UpdateBody>,
) -> ApiResult<StatusCode> {
    auth.require_responder()?;
    let id = path_id(&id)?;
    let mut checks = Checks::default();
    let patch = IncidentPatch {
        message: body
            .message
            .as_deref()
            .map(|m| checks.required("message", Some(m), MESSAGE_MAX)),
        description: body
            .description
            .map(|d| checks.optional("description", d.as_deref(), DESCRIPTION_MAX)),
        details: body.details.map(|d| check_details(&mut checks, d)),
    };
    checks.finish()?;
    state
        .store
        .update_incident(
            &auth.account_id,
            id,
            &patch,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn act(
    state: AppState,
    auth: Auth,
    id: String,
    action: IncidentAction,
) -> ApiResult<StatusCode> {
    auth.require_responder()?;
    state
        .store
        .act_on_incident(
            &auth.account_id,
            path_id(&id)?,
            action,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /incidents/:id/acknowledge`
pub async fn acknowledge_incident(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    act(state, auth, id, IncidentAction::Acknowledge).await
}

/// `PUT /incidents/:id/resolve`
pub async fn resolve_incident(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    act(state, auth, id, IncidentAction::Resolve).await
}

/// `PUT /incidents/:id/trigger`
pub async fn trigger_incident(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    act(state, auth, id, IncidentAction::Trigger).await
}

/// `PUT /incidents/:id/escalate`: the next policy rule, now.
pub async fn escalate_incident(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    act(state, auth, id, IncidentAction::Escalate).await
}

/// `DELETE /incidents/:id` (admins). Its audit events stay in `/events`.
pub async fn delete_incident(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    state
        .store
        .delete_incident(
            &auth.account_id,
            path_id(&id)?,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
