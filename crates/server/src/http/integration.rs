//! The integration API: monitoring systems authenticate with a service's
//! integration key and trigger, acknowledge or resolve by key or message.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use klaxon_core::incident::IncidentAction;
use klaxon_store::{ActOutcome, Actor, IntegrationTarget, NewIncident, StoreError, TriggerOutcome};
use serde::Deserialize;

use super::auth::IntegrationAuth;
use super::error::{ApiError, ApiResult};
use super::incidents::{created_incident, parse_new_incident, IncidentBody, KEY_MAX, MESSAGE_MAX};
use super::input::{Checks, Input};
use crate::app::AppState;
use crate::metrics::Source;

/// `PUT /trigger`: `201` with a new incident, or `304` when an unresolved
/// incident with the key (or, without a key, the message) exists already.
pub async fn trigger(
    State(state): State<AppState>,
    IntegrationAuth(service): IntegrationAuth,
    Input(body): Input<IncidentBody>,
) -> ApiResult<Response> {
    let new = parse_new_incident(body)?;
    state.metrics.integration_event(Source::Klaxon);
    let outcome = open_incident(&state, &service, &new).await?;
    Ok(match outcome {
        TriggerOutcome::Created(incident) => created_incident(&incident).into_response(),
        TriggerOutcome::Deduplicated(_) => StatusCode::NOT_MODIFIED.into_response(),
    })
}

/// Body of `PUT /acknowledge` and `PUT /resolve`.
#[derive(Debug, Deserialize)]
pub struct TargetBody {
    key: Option<String>,
    message: Option<String>,
}

async fn act(
    state: AppState,
    service: IntegrationTarget,
    body: TargetBody,
    action: IncidentAction,
) -> ApiResult<StatusCode> {
    let mut checks = Checks::default();
    let key = checks.optional("key", body.key.as_deref(), KEY_MAX);
    let message = checks.optional("message", body.message.as_deref(), MESSAGE_MAX);
    if key.is_none() && message.is_none() {
        checks.add("key", "can't be blank (give the incident's key or message)");
    }
    checks.finish()?;
    state.metrics.integration_event(Source::Klaxon);
    match act_on_open_incident(&state, &service, key.as_deref(), message.as_deref(), action).await?
    {
        Acted::Changed => Ok(StatusCode::NO_CONTENT),
        Acted::Unchanged => Ok(StatusCode::NOT_MODIFIED),
        Acted::NotOpen => Err(ApiError::NotFound),
    }
}

/// Opens an incident on the key's service, or finds the unresolved one it
/// repeats (by key, or without a key by message): `PUT /trigger` and every
/// inbound integration (PagerDuty, Opsgenie, Alertmanager) go through here.
pub async fn open_incident(
    state: &AppState,
    service: &IntegrationTarget,
    new: &NewIncident,
) -> Result<TriggerOutcome, StoreError> {
    let actor = Actor::Service(service.id.clone());
    state
        .store
        .trigger_incident(
            &service.account_id,
            &service.id,
            new,
            true,
            &actor,
            state.clock.now_ms(),
        )
        .await
}

/// What acting on a service's unresolved incident came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acted {
    /// The incident moved.
    Changed,
    /// It already was where the action would put it.
    Unchanged,
    /// No unresolved incident has the key (or message); nothing happened.
    NotOpen,
}

/// Acknowledges or resolves the service's unresolved incident with this
/// key (or, without a key, this message): `PUT /acknowledge`, `PUT
/// /resolve` and the inbound integrations' acknowledge and resolve.
pub async fn act_on_open_incident(
    state: &AppState,
    service: &IntegrationTarget,
    key: Option<&str>,
    message: Option<&str>,
    action: IncidentAction,
) -> Result<Acted, StoreError> {
    let Some(incident) = state
        .store
        .find_open_incident(&service.account_id, &service.id, key, message)
        .await?
    else {
        return Ok(Acted::NotOpen);
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
        Ok(ActOutcome::Changed(_)) => Ok(Acted::Changed),
        Ok(ActOutcome::Unchanged(_)) => Ok(Acted::Unchanged),
        // Resolved (or deleted) between the lookup and the action.
        Err(StoreError::Transition(_) | StoreError::NotFound) => Ok(Acted::NotOpen),
        Err(other) => Err(other),
    }
}

/// `PUT /acknowledge`: `204`, `304` if already acknowledged, `404` if
/// resolved or unknown.
pub async fn acknowledge(
    State(state): State<AppState>,
    IntegrationAuth(service): IntegrationAuth,
    Input(body): Input<TargetBody>,
) -> ApiResult<StatusCode> {
    act(state, service, body, IncidentAction::Acknowledge).await
}

/// `PUT /resolve`: `204`, `404` if resolved or unknown.
pub async fn resolve(
    State(state): State<AppState>,
    IntegrationAuth(service): IntegrationAuth,
    Input(body): Input<TargetBody>,
) -> ApiResult<StatusCode> {
    act(state, service, body, IncidentAction::Resolve).await
}
