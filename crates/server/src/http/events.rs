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

/// Events of one resource, after checking it exists in the caller's
/// account (another account's id is a 404, not an empty list).
async fn source_events(
    state: &AppState,
    auth: &Auth,
    uri: &Uri,
    params: PageParams,
    kind: &str,
    id: &str,
) -> Listing {
    let (store, account) = (&state.store, auth.account_id.as_str());
    let id = path_id(id)?;
    match kind {
        "incident" => {
            store.get_incident(account, id).await?;
        }
        "service" => {
            store.get_service(account, id).await?;
        }
        "policy" => {
            store.get_policy(account, id).await?;
        }
        "user" => {
            store.get_user(account, id).await?;
        }
        _ => {
            store.get_schedule(account, id).await?;
        }
    }
    list(state, auth, uri, params, Some((kind, id))).await
}

macro_rules! resource_events {
    ($($(#[$doc:meta])* $name:ident => $kind:literal),* $(,)?) => {$(
        $(#[$doc])*
        pub async fn $name(
            State(state): State<AppState>,
            auth: Auth,
            OriginalUri(uri): OriginalUri,
            Path(id): Path<String>,
            Params(params): Params<PageParams>,
        ) -> Listing {
            source_events(&state, &auth, &uri, params, $kind, &id).await
        }
    )*};
}

resource_events! {
    /// `GET /incidents/:id/events`
    list_incident_events => "incident",
    /// `GET /services/:id/events`
    list_service_events => "service",
    /// `GET /policies/:id/events`
    list_policy_events => "policy",
    /// `GET /users/:id/events`
    list_user_events => "user",
    /// `GET /schedules/:id/events`
    list_schedule_events => "schedule",
}
