//! `/services/:id/heartbeats` and the ping URL `/heartbeats/:token`.
//!
//! A heartbeat expects a ping at least every `interval` minutes. A missed
//! one opens an incident `Heartbeat 'name' expired` on its service through
//! the ordinary trigger path, and the next ping resolves it (see
//! `klaxon_store::HeartbeatStore`). Everyone in the account reads them;
//! admins and responders change them and see the secret ping URL.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use klaxon_core::id::random_secret;
use klaxon_core::time::format_ts;
use klaxon_core::Role;
use klaxon_store::{Heartbeat, HeartbeatInput};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::input::{Changeset, Checks, Input};
use super::sessions::NAME_MAX;
use super::{created, path_id, Created};
use crate::app::AppState;

/// Length of a ping token (base62: about 190 bits).
pub const TOKEN_LEN: usize = 32;
/// Longest interval: 30 days of minutes.
pub const MAX_INTERVAL: i64 = 30 * 24 * 60;

/// Admins and responders change heartbeats; observers only read them.
fn may_change(auth: &Auth) -> Result<(), ApiError> {
    match auth.role {
        Role::Admin | Role::Responder => Ok(()),
        Role::Observer => Err(ApiError::Forbidden("observers may not change heartbeats")),
    }
}

/// `POST /services/:id/heartbeats` and `PUT …/heartbeats/:heartbeat_id`
/// body; absent fields keep their value on update.
#[derive(Debug, Deserialize)]
pub struct HeartbeatBody {
    name: Option<String>,
    interval: Option<i64>,
}

fn check_interval(checks: &mut Checks, value: Option<i64>) -> i64 {
    match value {
        None => {
            checks.add("interval", "can't be blank");
            0
        }
        Some(v) => {
            checks.range("interval", v, 1, MAX_INTERVAL);
            v
        }
    }
}

/// A heartbeat; the ping URL (which holds its secret) only for those who
/// may change it.
fn view(state: &AppState, auth: &Auth, h: &Heartbeat) -> Value {
    let mut v = json!({
        "id": h.id,
        "service_id": h.service_id,
        "name": h.name,
        "interval": h.interval_minutes,
        "status": h.state,
        "last_ping_at": h.last_ping_at.map(format_ts),
        "expires_at": format_ts(h.expires_at()),
        "created_at": format_ts(h.created_at),
        "updated_at": format_ts(h.updated_at),
        "_links": {
            "self": { "href": format!("/services/{}/heartbeats/{}", h.service_id, h.id) },
            "service": { "href": format!("/services/{}", h.service_id) },
        },
    });
    if let (true, Some(obj)) = (may_change(auth).is_ok(), v.as_object_mut()) {
        obj.insert("ping_url".into(), Value::String(ping_url(state, &h.token)));
    }
    v
}

/// `{KLAXON_PUBLIC_URL}/heartbeats/{token}`.
fn ping_url(state: &AppState, token: &str) -> String {
    format!(
        "{}/heartbeats/{token}",
        state.config.public_url.trim_end_matches('/')
    )
}

/// `GET /services/:id/heartbeats`
pub async fn list_heartbeats(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let heartbeats = state
        .store
        .list_heartbeats(&auth.account_id, path_id(&id)?)
        .await?;
    Ok(Json(Value::Array(
        heartbeats.iter().map(|h| view(&state, &auth, h)).collect(),
    )))
}

/// `GET /services/:id/heartbeats/:heartbeat_id`
pub async fn show_heartbeat(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, heartbeat_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let heartbeat = state
        .store
        .get_heartbeat(&auth.account_id, path_id(&id)?, path_id(&heartbeat_id)?)
        .await?;
    Ok(Json(view(&state, &auth, &heartbeat)))
}

/// `POST /services/:id/heartbeats` (admins and responders).
pub async fn create_heartbeat(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<HeartbeatBody>,
) -> ApiResult<Created> {
    let service_id = path_id(&id)?;
    may_change(&auth)?;
    let mut checks = Checks::default();
    let input = HeartbeatInput {
        name: checks.required("name", body.name.as_deref(), NAME_MAX),
        interval_minutes: check_interval(&mut checks, body.interval),
    };
    checks.finish()?;
    let token = random_secret(&mut rand::rng(), TOKEN_LEN);
    let heartbeat = state
        .store
        .create_heartbeat(
            &auth.account_id,
            service_id,
            &input,
            &token,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(created(
        format!("/services/{service_id}/heartbeats/{}", heartbeat.id),
        view(&state, &auth, &heartbeat),
    ))
}

/// `PUT /services/:id/heartbeats/:heartbeat_id` (admins and responders).
pub async fn update_heartbeat(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, heartbeat_id)): Path<(String, String)>,
    Input(body): Input<HeartbeatBody>,
) -> ApiResult<StatusCode> {
    let (service_id, heartbeat_id) = (path_id(&id)?, path_id(&heartbeat_id)?);
    may_change(&auth)?;
    let before = state
        .store
        .get_heartbeat(&auth.account_id, service_id, heartbeat_id)
        .await?;
    let mut checks = Checks::default();
    let input = HeartbeatInput {
        name: checks.required_or("name", body.name.as_deref(), NAME_MAX, &before.name),
        interval_minutes: match body.interval {
            Some(v) => check_interval(&mut checks, Some(v)),
            None => before.interval_minutes,
        },
    };
    checks.finish()?;
    let mut changes = Changeset::default();
    changes.diff("name", &before.name, &input.name).diff(
        "interval",
        &before.interval_minutes,
        &input.interval_minutes,
    );
    if !changes.is_empty() {
        state
            .store
            .update_heartbeat(
                &auth.account_id,
                service_id,
                heartbeat_id,
                &input,
                &changes.into_value(),
                &auth.actor(),
                state.clock.now_ms(),
            )
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /services/:id/heartbeats/:heartbeat_id` (admins and
/// responders). An incident it opened stays as it is.
pub async fn delete_heartbeat(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, heartbeat_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (service_id, heartbeat_id) = (path_id(&id)?, path_id(&heartbeat_id)?);
    may_change(&auth)?;
    state
        .store
        .delete_heartbeat(
            &auth.account_id,
            service_id,
            heartbeat_id,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET` or `POST /heartbeats/:token`: a ping. The token is the only
/// credential; a body, if any, is ignored. The heartbeat expires one
/// interval from now; if it had expired, its incident is resolved.
pub async fn ping_heartbeat(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    // A token that cannot exist costs no query.
    if token.len() != TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::NotFound);
    }
    let pinged = state
        .store
        .ping_heartbeat(&token, state.clock.now_ms())
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(json!({
        "status": "up",
        "expires_at": format_ts(pinged.expires_at),
    })))
}
