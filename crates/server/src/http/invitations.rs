//! `/invitations`: admins invite people into their account. The person
//! registers with the code (`POST /registrations` with `invitation`) and
//! becomes a user with the invitation's role. A code is shown once,
//! stored hashed, works once and expires.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use klaxon_core::time::DAY_MS;
use klaxon_core::validate::Email;
use klaxon_store::InvitationInput;
use serde::Deserialize;
use serde_json::Value;

use super::auth::{hash_token, Auth};
use super::error::ApiResult;
use super::input::{Checks, Input};
use super::sessions::new_token;
use super::users::check_role;
use super::{created, path_id, views, Created};
use crate::app::AppState;

/// How long an invitation lasts unless told.
pub const DEFAULT_DAYS: i64 = 7;
/// The longest an invitation may last.
pub const MAX_DAYS: i64 = 90;

/// `POST /invitations` body.
#[derive(Debug, Deserialize)]
pub struct InvitationBody {
    role: Option<String>,
    email: Option<String>,
    expires_in_days: Option<i64>,
}

/// `POST /invitations` (admins): a single-use code to join the account.
pub async fn create_invitation(
    State(state): State<AppState>,
    auth: Auth,
    Input(body): Input<InvitationBody>,
) -> ApiResult<Created> {
    auth.require_admin()?;
    let mut checks = Checks::default();
    let role = check_role(&mut checks, body.role.as_deref().unwrap_or("responder"));
    let email = match body
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        Some(raw) => match Email::parse(raw) {
            Some(e) => Some(e.into_string()),
            None => {
                checks.add("email", "is not a valid email address");
                None
            }
        },
        None => None,
    };
    let days = body.expires_in_days.unwrap_or(DEFAULT_DAYS);
    checks.range("expires_in_days", days, 1, MAX_DAYS);
    checks.finish()?;
    let now = state.clock.now_ms();
    let input = InvitationInput {
        role,
        email,
        expires_at: now.saturating_add(days * DAY_MS),
    };
    let code = new_token();
    let invitation = state
        .store
        .create_invitation(
            &auth.account_id,
            &input,
            &hash_token(&code),
            &auth.actor(),
            now,
        )
        .await?;
    Ok(created(
        format!("/invitations/{}", invitation.id),
        views::invitation(&invitation, Some(&code)),
    ))
}

/// `GET /invitations` (admins): the account's invitations, newest first,
/// without their codes.
pub async fn list_invitations(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require_admin()?;
    let list = state.store.list_invitations(&auth.account_id).await?;
    Ok(Json(Value::Array(
        list.iter().map(|i| views::invitation(i, None)).collect(),
    )))
}

/// `DELETE /invitations/:id` (admins): withdraws an invitation.
pub async fn delete_invitation(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    state
        .store
        .delete_invitation(
            &auth.account_id,
            path_id(&id)?,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
