//! `GET /webhook_signing_secret`: the secret webhook receivers check
//! `X-Klaxon-Signature` with (admins only).

use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use crate::app::AppState;

/// `GET /webhook_signing_secret`: the caller's account's webhook signing
/// secret, `{"secret": "<64 hex characters>"}`. The HMAC key is the
/// secret's text as it is shown.
pub async fn show_webhook_signing_secret(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<impl IntoResponse> {
    if !auth.role.can_manage() {
        return Err(ApiError::Forbidden(
            "only admins may read the webhook signing secret",
        ));
    }
    let secret = state.webhook_keys.secret(&auth.account_id);
    Ok((
        [(CACHE_CONTROL, "no-store")],
        Json(json!({ "secret": secret })),
    ))
}
