//! Tokens: the caller's own (`/tokens`), any user's for admins
//! (`/users/:id/tokens`), and calendar feed tokens
//! (`/schedules/:id/feed_token`). Secrets are shown once, at creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use klaxon_core::time::{format_ts, parse_ts, Millis, DAY_MS};
use klaxon_store::{token_kind, TokenInput};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{hash_token, Auth};
use super::error::ApiResult;
use super::input::{Checks, Input};
use super::sessions::{new_token, NAME_MAX};
use super::{path_id, views};
use crate::app::AppState;

/// Longest lifetime `expires_in_days` and `expires_at` may give a token.
pub const MAX_TOKEN_DAYS: i64 = 3650;

/// `GET /tokens`: the caller's tokens of every kind (never their secrets).
pub async fn list_tokens(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    tokens_of(&state, &auth.account_id, &auth.user_id).await
}

async fn tokens_of(state: &AppState, account_id: &str, user_id: &str) -> ApiResult<Json<Value>> {
    let tokens = state.store.list_tokens(account_id, user_id).await?;
    Ok(Json(Value::Array(
        tokens.iter().map(|t| views::token(t, None)).collect(),
    )))
}

/// `POST /tokens` body.
#[derive(Debug, Deserialize)]
pub struct NewToken {
    name: Option<String>,
    /// RFC 3339 instant after which the token stops working.
    expires_at: Option<String>,
    /// Days from now after which the token stops working.
    expires_in_days: Option<i64>,
}

/// `POST /tokens`: a new API token for the caller, shown once; it never
/// expires unless given `expires_at` or `expires_in_days`.
pub async fn create_token(
    State(state): State<AppState>,
    auth: Auth,
    Input(input): Input<NewToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let now = state.clock.now_ms();
    let mut checks = Checks::default();
    let name = checks
        .optional("name", input.name.as_deref(), NAME_MAX)
        .unwrap_or_else(|| "api".into());
    let expires_at = expiry(&mut checks, &input, now);
    checks.finish()?;
    let secret = new_token();
    let token = state
        .store
        .create_token(
            &auth.account_id,
            &auth.user_id,
            &TokenInput {
                name,
                kind: token_kind::API.into(),
                expires_at,
            },
            &hash_token(&secret),
            now,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(views::token(&token, Some(&secret))),
    ))
}

/// A new token's expiry from `expires_at` or `expires_in_days` (not both).
fn expiry(checks: &mut Checks, input: &NewToken, now: Millis) -> Option<Millis> {
    let latest = now.saturating_add(MAX_TOKEN_DAYS * DAY_MS);
    match (input.expires_at.as_deref(), input.expires_in_days) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            checks.add("expires_at", "give expires_at or expires_in_days, not both");
            None
        }
        (None, Some(days)) => {
            checks.range("expires_in_days", days, 1, MAX_TOKEN_DAYS);
            Some(now.saturating_add(days.clamp(1, MAX_TOKEN_DAYS) * DAY_MS))
        }
        (Some(raw), None) => match parse_ts(raw) {
            Some(at) if at > now && at <= latest => Some(at),
            Some(_) => {
                checks.add(
                    "expires_at",
                    format!("must be in the future and at most {MAX_TOKEN_DAYS} days ahead"),
                );
                None
            }
            None => {
                checks.add(
                    "expires_at",
                    "is not an RFC 3339 instant (like 2026-01-05T09:00:00Z)",
                );
                None
            }
        },
    }
}

/// `DELETE /tokens/:id`: revokes one of the caller's tokens.
pub async fn delete_token(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = path_id(&id)?;
    state
        .store
        .delete_token(
            &auth.account_id,
            &auth.user_id,
            id,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The user whose tokens `/users/:id/tokens` names: the caller, or for an
/// admin anyone in the account. Another account's user is a 404 whoever
/// asks; someone else's tokens are admins' only (403).
async fn token_owner<'a>(state: &AppState, auth: &Auth, id: &'a str) -> ApiResult<&'a str> {
    let id = path_id(id)?;
    if id != auth.user_id {
        state.store.get_user(&auth.account_id, id).await?;
        auth.require_admin()?;
    }
    Ok(id)
}

/// `GET /users/:id/tokens`: a user's tokens (admins; others their own).
pub async fn list_user_tokens(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user_id = token_owner(&state, &auth, &id).await?;
    tokens_of(&state, &auth.account_id, user_id).await
}

/// `DELETE /users/:id/tokens/:token_id`: revokes a user's token (admins;
/// others their own).
pub async fn delete_user_token(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, token_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let user_id = token_owner(&state, &auth, &id).await?;
    state
        .store
        .delete_token(
            &auth.account_id,
            user_id,
            path_id(&token_id)?,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /schedules/:id/feed_token`: the caller's calendar feed token for
/// the schedule, replacing the one they had, shown once with the feed's
/// URL. It reads that feed and nothing else. Every role may have one.
pub async fn create_feed_token(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let schedule_id = path_id(&id)?;
    let secret = new_token();
    let token = state
        .store
        .create_feed_token(
            &auth.account_id,
            &auth.user_id,
            schedule_id,
            &hash_token(&secret),
            state.clock.now_ms(),
        )
        .await?;
    let url = format!(
        "{}/schedules/{schedule_id}.ics?token={secret}",
        state.config.public_url
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": token.id,
            "schedule_id": schedule_id,
            "url": url,
            "token": secret,
            "created_at": format_ts(token.created_at),
        })),
    ))
}

/// `DELETE /schedules/:id/feed_token`: revokes the caller's calendar feed
/// token for the schedule (`404` when they have none).
pub async fn delete_feed_token(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_feed_token(
            &auth.account_id,
            &auth.user_id,
            path_id(&id)?,
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
