//! The audit log: `GET /events` and `GET /<resource>/:id/events`.

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::Json;
use klaxon_store::EventFilter;
use serde_json::Value;

use super::auth::Auth;
use super::error::ApiResult;
use super::input::{Checks, Params};
use super::page::PageParams;
use super::{path_id, views};
use crate::app::AppState;

type Listing = ApiResult<(HeaderMap, Json<Value>)>;

async fn list(
    state: &AppState,
    auth: &Auth,
    uri: &Uri,
    params: PageParams,
    source: Option<(&str, &str)>,
) -> Listing {
    let mut checks = Checks::default();
    let page = params.parse(&mut checks);
    checks.finish()?;
    let filter = EventFilter {
        source: source.map(|(t, id)| (t.to_owned(), id.to_owned())),
        limit: page.per_page,
        offset: page.offset(),
    };
    let (events, total) = state.store.list_events(&auth.account_id, &filter).await?;
    Ok((
        page.headers(uri, total),
        Json(Value::Array(events.iter().map(views::event).collect())),
    ))
}

/// `GET /events`: the account's audit log, newest first.
pub async fn list_events(
    State(state): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    Params(params): Params<PageParams>,
) -> Listing {
    list(&state, &auth, &uri, params, None).await
}

/// `GET /incidents/:id/events`
pub async fn list_incident_events(
    State(state): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Params(params): Params<PageParams>,
) -> Listing {
    let id = path_id(&id)?;
    state.store.get_incident(&auth.account_id, id).await?;
    list(&state, &auth, &uri, params, Some(("incident", id))).await
}

/// `GET /services/:id/events`
pub async fn list_service_events(
    State(state): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Params(params): Params<PageParams>,
) -> Listing {
    let id = path_id(&id)?;
    state.store.get_service(&auth.account_id, id).await?;
    list(&state, &auth, &uri, params, Some(("service", id))).await
}

/// `GET /policies/:id/events`
pub async fn list_policy_events(
    State(state): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Params(params): Params<PageParams>,
) -> Listing {
    let id = path_id(&id)?;
    state.store.get_policy(&auth.account_id, id).await?;
    list(&state, &auth, &uri, params, Some(("policy", id))).await
}

/// `GET /users/:id/events`
pub async fn list_user_events(
    State(state): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Params(params): Params<PageParams>,
) -> Listing {
    let id = path_id(&id)?;
    state.store.get_user(&auth.account_id, id).await?;
    list(&state, &auth, &uri, params, Some(("user", id))).await
}

/// `GET /schedules/:id/events`
pub async fn list_schedule_events(
    State(state): State<AppState>,
    auth: Auth,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Params(params): Params<PageParams>,
) -> Listing {
    let id = path_id(&id)?;
    state.store.get_schedule(&auth.account_id, id).await?;
    list(&state, &auth, &uri, params, Some(("schedule", id))).await
}
