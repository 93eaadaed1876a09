//! `/users`: the people of an account.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use klaxon_core::validate::{is_time_zone, Email};
use klaxon_core::Role;
use klaxon_store::{Revoke, UserInput};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::client_ip::ClientIp;
use super::error::{ApiError, ApiResult};
use super::input::{Changeset, Checks, Input};
use super::sessions::{
    check_password, hash_password, parse_email, verify_password, NAME_MAX, PASSWORD_MAX,
};
use super::throttle::Attempt;
use super::{created, path_id, views, Created};
use crate::app::AppState;

/// `POST /users` and `PUT /users/:id` body; absent fields keep their value on update.
#[derive(Debug, Deserialize)]
pub struct UserBody {
    name: Option<String>,
    email: Option<String>,
    role: Option<String>,
    time_zone: Option<String>,
    password: Option<String>,
    /// The caller's password, to change their own password or email.
    current_password: Option<String>,
}

/// A role name, or a 422 on `role`.
pub(super) fn check_role(checks: &mut Checks, raw: &str) -> String {
    match Role::parse(raw) {
        Some(r) => r.as_str().to_owned(),
        None => {
            checks.add("role", "must be one of admin, responder, observer");
            String::new()
        }
    }
}

fn check_zone(checks: &mut Checks, raw: &str) -> String {
    if !is_time_zone(raw) {
        checks.add(
            "time_zone",
            "is not a known IANA time zone (like Europe/Berlin)",
        );
    }
    raw.to_owned()
}

/// `GET /users`
pub async fn list_users(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let users = state.store.list_users(&auth.account_id).await?;
    Ok(Json(Value::Array(users.iter().map(views::user).collect())))
}

/// `GET /users/:id`
pub async fn show_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = state
        .store
        .get_user(&auth.account_id, path_id(&id)?)
        .await?;
    Ok(Json(views::user(&user)))
}

/// `POST /users` (admins).
pub async fn create_user(
    State(state): State<AppState>,
    auth: Auth,
    Input(body): Input<UserBody>,
) -> ApiResult<Created> {
    auth.require_admin()?;
    let mut checks = Checks::default();
    let name = checks.required("name", body.name.as_deref(), NAME_MAX);
    let email = parse_email(&mut checks, body.email.as_deref());
    let role = check_role(&mut checks, body.role.as_deref().unwrap_or("responder"));
    let time_zone = check_zone(&mut checks, body.time_zone.as_deref().unwrap_or("UTC"));
    if let Some(p) = &body.password {
        check_password(&mut checks, p);
    }
    checks.finish()?;
    let password_hash = match body.password {
        Some(p) => Some(hash_password(&state.hasher, p).await?),
        None => None,
    };
    let input = UserInput {
        name,
        email,
        role,
        time_zone,
        password_hash,
    };
    let user = state
        .store
        .create_user(
            &auth.account_id,
            &input,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(created(format!("/users/{}", user.id), views::user(&user)))
}

/// `PUT /users/:id`: admins change anyone; others change themselves, but
/// not their role.
///
/// Changing one's own password or email takes the current password
/// (`current_password`: `422` when missing or wrong; checks count against
/// the sign-in rate limit) and revokes every other token of the caller,
/// keeping the one the request came with. A user who has no password yet
/// sets one without. An admin setting another user's password revokes
/// all of that user's tokens.
pub async fn update_user(
    State(state): State<AppState>,
    auth: Auth,
    client: ClientIp,
    Path(id): Path<String>,
    Input(body): Input<UserBody>,
) -> ApiResult<StatusCode> {
    let id = path_id(&id)?;
    let is_self = id == auth.user_id;
    if !is_self {
        auth.require_admin()?;
    }
    let before = state.store.get_user(&auth.account_id, id).await?;
    let mut checks = Checks::default();
    let name = checks.required_or("name", body.name.as_deref(), NAME_MAX, &before.name);
    let email = match body.email.as_deref() {
        Some(e) => match Email::parse(e) {
            Some(e) => e.into_string(),
            None => {
                checks.add("email", "is not a valid email address");
                before.email.clone()
            }
        },
        None => before.email.clone(),
    };
    let role = match body.role.as_deref() {
        Some(r) => {
            if !auth.role.can_manage() && r != before.role {
                return Err(ApiError::Forbidden("only admins may change roles"));
            }
            check_role(&mut checks, r)
        }
        None => before.role.clone(),
    };
    let time_zone = match body.time_zone.as_deref() {
        Some(z) => check_zone(&mut checks, z),
        None => before.time_zone.clone(),
    };
    if let Some(p) = &body.password {
        check_password(&mut checks, p);
    }
    let credentials_change = body.password.is_some() || email != before.email;
    let current = match (is_self && credentials_change, &before.password_hash) {
        (true, Some(stored)) => {
            let given = checks.required(
                "current_password",
                body.current_password.as_deref(),
                PASSWORD_MAX,
            );
            Some((given, stored.clone()))
        }
        _ => None,
    };
    checks.finish()?;
    if let Some((given, stored)) = current {
        state
            .auth_limits
            .check(Attempt::SignIn, Some(&client), Some(&before.email))?;
        if !verify_password(&state.hasher, given, Some(&stored)).await? {
            return Err(ApiError::field("current_password", "is incorrect"));
        }
    }
    let revoke = match (is_self, credentials_change, body.password.is_some()) {
        (true, true, _) => Revoke::AllBut(&auth.token_id),
        (false, _, true) => Revoke::All,
        _ => Revoke::Nothing,
    };
    let mut changes = Changeset::default();
    changes
        .diff("name", &before.name, &name)
        .diff("email", &before.email, &email)
        .diff("role", &before.role, &role)
        .diff("time_zone", &before.time_zone, &time_zone);
    let password_hash = match body.password {
        Some(p) => {
            changes.note("password", json!("changed"));
            Some(hash_password(&state.hasher, p).await?)
        }
        None => before.password_hash.clone(),
    };
    if changes.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let input = UserInput {
        name,
        email,
        role,
        time_zone,
        password_hash,
    };
    state
        .store
        .update_user(
            &auth.account_id,
            id,
            &input,
            &changes.into_value(),
            revoke,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /users/:id` (admins).
pub async fn delete_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    let id = path_id(&id)?;
    state
        .store
        .delete_user(&auth.account_id, id, &auth.actor(), state.clock.now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
