//! Who was paged how and when: `GET /incidents/:id/notifications` and
//! `GET /users/:id/notifications`, read from the notification outbox.

use axum::extract::{Path, State};
use axum::Json;
use klaxon_store::NotificationsOf;
use serde_json::Value;

use super::auth::Auth;
use super::error::ApiResult;
use super::{path_id, views};
use crate::app::AppState;

/// `GET /incidents/:id/notifications`: every message about the incident,
/// oldest first (another account's incident is a 404).
pub async fn list_incident_notifications(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = path_id(&id)?;
    state.store.get_incident(&auth.account_id, id).await?;
    list(&state, &auth, NotificationsOf::Incident(id)).await
}

/// `GET /users/:id/notifications`: the latest 500 messages to the user,
/// newest first.
pub async fn list_user_notifications(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = path_id(&id)?;
    state.store.get_user(&auth.account_id, id).await?;
    list(&state, &auth, NotificationsOf::User(id)).await
}

async fn list(state: &AppState, auth: &Auth, of: NotificationsOf<'_>) -> ApiResult<Json<Value>> {
    let rows = state.store.list_notifications(&auth.account_id, of).await?;
    Ok(Json(Value::Array(
        rows.iter().map(views::notification).collect(),
    )))
}
