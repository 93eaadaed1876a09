//! `/policies` and their ordered rules.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use klaxon_store::RuleInput;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::error::ApiResult;
use super::input::{Changeset, Checks, Input};
use super::sessions::NAME_MAX;
use super::{created, path_id, views, Created};
use crate::app::AppState;

/// Default minutes before a rule escalates.
pub const DEFAULT_ESCALATION_TIMEOUT: i64 = 30;
/// Longest rule timeout: one week.
pub const MAX_ESCALATION_TIMEOUT: i64 = 7 * 24 * 60;
/// Most walks of a rule list.
pub const MAX_LOOP_LIMIT: i64 = 100;

/// `POST /policies` and `PUT /policies/:id` body.
#[derive(Debug, Deserialize)]
pub struct PolicyBody {
    name: Option<String>,
    loop_limit: Option<i64>,
}

/// `GET /policies`
pub async fn list_policies(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let policies = state.store.list_policies(&auth.account_id).await?;
    Ok(Json(Value::Array(
        policies.iter().map(views::policy).collect(),
    )))
}

/// `GET /policies/:id`: the policy with its rules in order.
pub async fn show_policy(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = path_id(&id)?;
    let policy = state.store.get_policy(&auth.account_id, id).await?;
    let rules = state.store.list_rules(&auth.account_id, id).await?;
    let mut body = views::policy(&policy);
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "rules".into(),
            Value::Array(rules.iter().map(views::rule).collect()),
        );
    }
    Ok(Json(body))
}

/// `POST /policies` (admins).
pub async fn create_policy(
    State(state): State<AppState>,
    auth: Auth,
    Input(body): Input<PolicyBody>,
) -> ApiResult<Created> {
    auth.require_admin()?;
    let mut checks = Checks::default();
    let name = checks.required("name", body.name.as_deref(), NAME_MAX);
    let loop_limit = body.loop_limit.unwrap_or(1);
    checks.range("loop_limit", loop_limit, 1, MAX_LOOP_LIMIT);
    checks.finish()?;
    let policy = state
        .store
        .create_policy(
            &auth.account_id,
            &name,
            loop_limit,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(created(
        format!("/policies/{}", policy.id),
        views::policy(&policy),
    ))
}

/// `PUT /policies/:id` (admins).
pub async fn update_policy(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<PolicyBody>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    let id = path_id(&id)?;
    let before = state.store.get_policy(&auth.account_id, id).await?;
    let mut checks = Checks::default();
    let name = checks.required_or("name", body.name.as_deref(), NAME_MAX, &before.name);
    let loop_limit = body.loop_limit.unwrap_or(before.loop_limit);
    checks.range("loop_limit", loop_limit, 1, MAX_LOOP_LIMIT);
    checks.finish()?;
    let mut changes = Changeset::default();
    changes
        .diff("name", &before.name, &name)
        .diff("loop_limit", &before.loop_limit, &loop_limit);
    if !changes.is_empty() {
        state
            .store
            .update_policy(
                &auth.account_id,
                id,
                &name,
                loop_limit,
                &changes.into_value(),
                &auth.actor(),
                state.clock.now_ms(),
            )
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /policies/:id` (admins); refused while a service uses it.
pub async fn delete_policy(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    state
        .store
        .delete_policy(
            &auth.account_id,
            path_id(&id)?,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A rule's assignment: `{"type": "user", "id": "…"}`.
#[derive(Debug, Deserialize)]
pub struct Assignment {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
}

/// `POST /policies/:id/rules` and `PUT …/rules/:rule_id` body.
#[derive(Debug, Deserialize)]
pub struct RuleBody {
    escalation_timeout: Option<i64>,
    assignment: Option<Assignment>,
}

fn check_assignment(checks: &mut Checks, a: Option<&Assignment>) -> (String, String) {
    let Some(a) = a else {
        checks.add("assignment", "can't be blank");
        return (String::new(), String::new());
    };
    let kind = match a.kind.as_deref() {
        Some(k @ ("user" | "schedule")) => k,
        _ => {
            checks.add("assignment", "type must be user or schedule");
            ""
        }
    };
    let id = match a.id.as_deref().map(klaxon_core::PublicId::parse) {
        Some(Some(id)) => id.to_string(),
        _ => {
            checks.add("assignment", "id must be a user or schedule id");
            String::new()
        }
    };
    (kind.to_owned(), id)
}

/// `GET /policies/:id/rules`
pub async fn list_rules(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let rules = state
        .store
        .list_rules(&auth.account_id, path_id(&id)?)
        .await?;
    Ok(Json(Value::Array(rules.iter().map(views::rule).collect())))
}

/// `GET /policies/:id/rules/:rule_id`
pub async fn show_rule(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, rule_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let rule = state
        .store
        .get_rule(&auth.account_id, path_id(&id)?, path_id(&rule_id)?)
        .await?;
    Ok(Json(views::rule(&rule)))
}

/// `POST /policies/:id/rules` (admins): appends a rule.
pub async fn create_rule(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<RuleBody>,
) -> ApiResult<Created> {
    auth.require_admin()?;
    let policy_id = path_id(&id)?;
    let mut checks = Checks::default();
    let escalation_timeout = body
        .escalation_timeout
        .unwrap_or(DEFAULT_ESCALATION_TIMEOUT);
    checks.range(
        "escalation_timeout",
        escalation_timeout,
        1,
        MAX_ESCALATION_TIMEOUT,
    );
    let (assignment_type, assignee_id) = check_assignment(&mut checks, body.assignment.as_ref());
    checks.finish()?;
    let input = RuleInput {
        escalation_timeout,
        assignment_type,
        assignee_id,
    };
    let rule = state
        .store
        .create_rule(
            &auth.account_id,
            policy_id,
            &input,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(created(
        format!("/policies/{}/rules/{}", policy_id, rule.id),
        views::rule(&rule),
    ))
}

/// `PUT /policies/:id/rules/:rule_id` (admins).
pub async fn update_rule(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, rule_id)): Path<(String, String)>,
    Input(body): Input<RuleBody>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    let (policy_id, rule_id) = (path_id(&id)?, path_id(&rule_id)?);
    let before = state
        .store
        .get_rule(&auth.account_id, policy_id, rule_id)
        .await?;
    let mut checks = Checks::default();
    let escalation_timeout = body.escalation_timeout.unwrap_or(before.escalation_timeout);
    checks.range(
        "escalation_timeout",
        escalation_timeout,
        1,
        MAX_ESCALATION_TIMEOUT,
    );
    let (assignment_type, assignee_id) = match &body.assignment {
        Some(a) => check_assignment(&mut checks, Some(a)),
        None => (before.assignment_type.clone(), before.assignee_id.clone()),
    };
    checks.finish()?;
    let mut changes = Changeset::default();
    changes
        .diff(
            "escalation_timeout",
            &before.escalation_timeout,
            &escalation_timeout,
        )
        .diff(
            "assignment",
            &json!({"type": before.assignment_type, "id": before.assignee_id}),
            &json!({"type": assignment_type, "id": assignee_id}),
        );
    if !changes.is_empty() {
        let input = RuleInput {
            escalation_timeout,
            assignment_type,
            assignee_id,
        };
        state
            .store
            .update_rule(
                &auth.account_id,
                policy_id,
                rule_id,
                &input,
                &changes.into_value(),
                &auth.actor(),
                state.clock.now_ms(),
            )
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /policies/:id/rules/:rule_id` (admins).
pub async fn delete_rule(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, rule_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    state
        .store
        .delete_rule(
            &auth.account_id,
            path_id(&id)?,
            path_id(&rule_id)?,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /policies/:id/rules/sort` body.
#[derive(Debug, Deserialize)]
pub struct SortBody {
    rule_ids: Option<Vec<String>>,
}

/// `POST /policies/:id/rules/sort` (admins): `{"rule_ids": [...]}` names
/// every rule once, in the new order. Answers with the reordered rules.
pub async fn sort_rules(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<SortBody>,
) -> ApiResult<Json<Value>> {
    auth.require_admin()?;
    let policy_id = path_id(&id)?;
    let mut checks = Checks::default();
    let ids = body.rule_ids.unwrap_or_else(|| {
        checks.add("rule_ids", "can't be blank");
        Vec::new()
    });
    checks.finish()?;
    let rules = state
        .store
        .sort_rules(
            &auth.account_id,
            policy_id,
            &ids,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(Json(Value::Array(rules.iter().map(views::rule).collect())))
}
