//! The integration API: monitoring systems authenticate with a service's
//! integration key and trigger, acknowledge or resolve by key or message.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use klaxon_core::incident::IncidentAction;
use klaxon_store::{ActOutcome, Actor, StoreError, TriggerOutcome};
use serde::Deserialize;

use super::auth::IntegrationAuth;
use super::error::{ApiError, ApiResult};
use super::incidents::{created_incident, parse_new_incident, IncidentBody, KEY_MAX, MESSAGE_MAX};
use super::input::{Checks, Input};
use crate::app::AppState;

/// `PUT /trigger`: `201` with a new incident, or `304` when an unresolved
/// incident with the key (or, without a key, the message) exists already.
pub async fn trigger(
    State(state): State<AppState>,
    IntegrationAuth(service): IntegrationAuth,
    Input(body): Input<IncidentBody>,
) -> ApiResult<Response> {
    let new = parse_new_incident(body)?;
    let actor = Actor::Service(service.id.clone());
    let outcome = state
        .store
        .trigger_incident(
            &service.account_id,
            &service.id,
            &new,
            true,
            &actor,
            state.clock.now_ms(),
        )
        .await?;
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
    service: klaxon_store::IntegrationTarget,
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
    let incident = state
        .store
        .find_open_incident(
            &service.account_id,
            &service.id,
            key.as_deref(),
            message.as_deref(),
        )
        .await?
        .ok_or(ApiError::NotFound)?;
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
        Ok(ActOutcome::Changed(_)) => Ok(StatusCode::NO_CONTENT),
        Ok(ActOutcome::Unchanged(_)) => Ok(StatusCode::NOT_MODIFIED),
        // Resolved (or deleted) between the lookup and the action.
        Err(StoreError::Transition(_) | StoreError::NotFound) => Err(ApiError::NotFound),
        Err(other) => Err(other.into()),
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
