//! `/services`: what breaks, with its policy and integration key.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use klaxon_core::id::random_secret;
use klaxon_store::{Service, ServiceInput};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::error::ApiResult;
use super::input::{nullable, Changeset, Checks, Input};
use super::sessions::NAME_MAX;
use super::{created, path_id, views, Created};
use crate::app::AppState;

/// Length of generated integration keys.
pub const INTEGRATION_KEY_LEN: usize = 32;
/// Longest description.
pub const DESCRIPTION_MAX: usize = 16 * 1024;
/// Longest acknowledge / auto-resolve timeout: one year of minutes.
pub const MAX_TIMEOUT: i64 = 366 * 24 * 60;

fn new_integration_key() -> String {
    random_secret(&mut rand::rng(), INTEGRATION_KEY_LEN)
}

/// `POST /services` and `PUT /services/:id` body. `null` turns a timeout off.
#[derive(Debug, Deserialize)]
pub struct ServiceBody {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    policy_id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    acknowledge_timeout: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    auto_resolve_timeout: Option<Option<i64>>,
}

fn check_timeout(checks: &mut Checks, field: &str, value: Option<i64>) -> Option<i64> {
    if let Some(v) = value {
        checks.range(field, v, 1, MAX_TIMEOUT);
    }
    value
}

fn check_policy_id(checks: &mut Checks, raw: Option<&str>) -> String {
    match raw.map(str::trim) {
        None | Some("") => {
            checks.add("policy_id", "can't be blank");
            String::new()
        }
        Some(id) => {
            if klaxon_core::PublicId::parse(id).is_none() {
                checks.add("policy_id", "does not exist");
            }
            id.to_owned()
        }
    }
}

fn show(auth: &Auth, s: &Service) -> Value {
    views::service(s, auth.role.can_manage())
}

/// `GET /services`
pub async fn list_services(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let services = state.store.list_services(&auth.account_id).await?;
    Ok(Json(Value::Array(
        services.iter().map(|s| show(&auth, s)).collect(),
    )))
}

/// `GET /services/:id`
pub async fn show_service(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let service = state
        .store
        .get_service(&auth.account_id, path_id(&id)?)
        .await?;
    Ok(Json(show(&auth, &service)))
}

/// `POST /services` (admins).
pub async fn create_service(
    State(state): State<AppState>,
    auth: Auth,
    Input(body): Input<ServiceBody>,
) -> ApiResult<Created> {
    auth.require_admin()?;
    let mut checks = Checks::default();
    let input = ServiceInput {
        name: checks.required("name", body.name.as_deref(), NAME_MAX),
        description: checks.optional(
            "description",
            body.description.flatten().as_deref(),
            DESCRIPTION_MAX,
        ),
        policy_id: check_policy_id(&mut checks, body.policy_id.as_deref()),
        acknowledge_timeout: check_timeout(
            &mut checks,
            "acknowledge_timeout",
            body.acknowledge_timeout.flatten(),
        ),
        auto_resolve_timeout: check_timeout(
            &mut checks,
            "auto_resolve_timeout",
            body.auto_resolve_timeout.flatten(),
        ),
    };
    checks.finish()?;
    let service = state
        .store
        .create_service(
            &auth.account_id,
            &input,
            &new_integration_key(),
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(created(
        format!("/services/{}", service.id),
        show(&auth, &service),
    ))
}

/// `PUT /services/:id` (admins).
pub async fn update_service(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<ServiceBody>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    let id = path_id(&id)?;
    let before = state.store.get_service(&auth.account_id, id).await?;
    let mut checks = Checks::default();
    let input = ServiceInput {
        name: checks.required_or("name", body.name.as_deref(), NAME_MAX, &before.name),
        description: match body.description {
            Some(d) => checks.optional("description", d.as_deref(), DESCRIPTION_MAX),
            None => before.description.clone(),
        },
        policy_id: match body.policy_id.as_deref() {
            Some(p) => check_policy_id(&mut checks, Some(p)),
            None => before.policy_id.clone(),
        },
        acknowledge_timeout: match body.acknowledge_timeout {
            Some(t) => check_timeout(&mut checks, "acknowledge_timeout", t),
            None => before.acknowledge_timeout,
        },
        auto_resolve_timeout: match body.auto_resolve_timeout {
            Some(t) => check_timeout(&mut checks, "auto_resolve_timeout", t),
            None => before.auto_resolve_timeout,
        },
    };
    checks.finish()?;
    let mut changes = Changeset::default();
    changes
        .diff("name", &before.name, &input.name)
        .diff("description", &before.description, &input.description)
        .diff("policy_id", &before.policy_id, &input.policy_id)
        .diff(
            "acknowledge_timeout",
            &before.acknowledge_timeout,
            &input.acknowledge_timeout,
        )
        .diff(
            "auto_resolve_timeout",
            &before.auto_resolve_timeout,
            &input.auto_resolve_timeout,
        );
    if !changes.is_empty() {
        state
            .store
            .update_service(
                &auth.account_id,
                id,
                &input,
                &changes.into_value(),
                &auth.actor(),
                state.clock.now_ms(),
            )
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /services/:id` (admins): deletes it with its incidents.
pub async fn delete_service(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    state
        .store
        .delete_service(
            &auth.account_id,
            path_id(&id)?,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_state(state: AppState, auth: Auth, id: String, to: &str) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    state
        .store
        .set_service_state(
            &auth.account_id,
            path_id(&id)?,
            to,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /services/:id/enable` (admins).
pub async fn enable_service(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    set_state(state, auth, id, "enabled").await
}

/// `PUT /services/:id/disable` (admins): maintenance; triggers are refused.
pub async fn disable_service(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    set_state(state, auth, id, "disabled").await
}

/// `POST /services/:id/integration_key` (admins): a new key; the old one
/// stops working at once.
pub async fn regenerate_integration_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    auth.require_admin()?;
    let key = new_integration_key();
    state
        .store
        .set_integration_key(
            &auth.account_id,
            path_id(&id)?,
            &key,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(Json(json!({ "integration_key": key })))
}

/// Query of `GET /services/:id/escalation_preview`.
#[derive(Debug, Deserialize)]
pub struct PreviewQuery {
    at: Option<String>,
}

/// `GET /services/:id/escalation_preview?at=`: for an incident triggered at
/// `at` (default now) and never acknowledged, who would be assigned when,
/// through every rule and loop up to the policy's `loop_limit`, with
/// schedules resolved at each step's instant.
pub async fn show_escalation_preview(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    super::input::Params(q): super::input::Params<PreviewQuery>,
) -> ApiResult<Json<Value>> {
    use klaxon_core::time::{format_ts, parse_ts, DAY_MS, MINUTE_MS};
    let mut checks = Checks::default();
    let at = match q.at.as_deref().filter(|a| !a.is_empty()) {
        Some(raw) => parse_ts(raw).unwrap_or_else(|| {
            checks.add("at", "must be an RFC 3339 time like 2026-01-05T09:00:00Z");
            0
        }),
        None => state.clock.now_ms(),
    };
    checks.finish()?;
    let service = state
        .store
        .get_service(&auth.account_id, path_id(&id)?)
        .await?;
    let policy = state
        .store
        .get_policy(&auth.account_id, &service.policy_id)
        .await?;
    let rules = state.store.list_rules(&auth.account_id, &policy.id).await?;
    let mut schedules = std::collections::HashMap::new();
    for r in rules.iter().filter(|r| r.assignment_type == "schedule") {
        if !schedules.contains_key(&r.assignee_id) {
            let data = state
                .store
                .load_schedule(&auth.account_id, &r.assignee_id, at - DAY_MS)
                .await?;
            schedules.insert(r.assignee_id.clone(), data.to_core());
        }
    }
    let timeouts: Vec<i64> = rules
        .iter()
        .map(|r| r.escalation_timeout.saturating_mul(MINUTE_MS))
        .collect();
    let loop_limit = u32::try_from(policy.loop_limit).unwrap_or(1);
    let steps = klaxon_core::engine::preview(&timeouts, loop_limit, at);
    let timeline: Vec<Value> = steps
        .iter()
        .map(|(when, step)| {
            let rule = &rules[step.index];
            let user = klaxon_store::rule_assignee(rule, &schedules, *when);
            json!({
                "at": format_ts(*when),
                "rule_id": rule.id,
                "position": rule.position,
                "escalation_loop_count": step.loop_count,
                "assignment": { "type": rule.assignment_type, "id": rule.assignee_id },
                "user_id": user,
            })
        })
        .collect();
    Ok(Json(json!({
        "service_id": service.id,
        "policy_id": policy.id,
        "at": format_ts(at),
        "steps": timeline,
    })))
}
