//! `/schedules`: who is on call, layer by layer, with overrides; the final
//! shift list, an iCalendar feed, and `/oncalls` across the account.

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use klaxon_core::schedule::{parse_weekday, Rotation, MAX_WINDOW_MS};
use klaxon_core::time::{format_ts, parse_ts, Millis, DAY_MS};
use klaxon_core::validate::is_time_zone;
use klaxon_core::PublicId;
use klaxon_store::{parse_hhmm, LayerInput, RestrictionSpec};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Auth, FeedReader};
use super::error::{ApiError, ApiResult};
use super::input::{Changeset, Checks, Input, Params};
use super::sessions::NAME_MAX;
use super::{created, path_id, views, Created};
use crate::app::AppState;

/// Most users in one layer's rotation.
pub const MAX_LAYER_USERS: usize = 100;
/// Most restriction windows on one layer.
pub const MAX_RESTRICTIONS: usize = 50;
/// Longest turn count.
pub const MAX_COUNT: i64 = 1000;
/// Default span of `/shifts`: two weeks.
pub const DEFAULT_SHIFTS_SPAN: Millis = 14 * DAY_MS;

/// `POST /schedules` and `PUT /schedules/:id` body.
#[derive(Debug, Deserialize)]
pub struct ScheduleBody {
    name: Option<String>,
    time_zone: Option<String>,
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

/// `GET /schedules`
pub async fn list_schedules(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let schedules = state.store.list_schedules(&auth.account_id).await?;
    Ok(Json(Value::Array(
        schedules.iter().map(views::schedule).collect(),
    )))
}

/// `GET /schedules/:id` (with its layers), or `GET /schedules/:id.ics`.
pub async fn show_schedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    parts: axum::http::request::Parts,
) -> ApiResult<Response> {
    if let Some(id) = id.strip_suffix(".ics") {
        return calendar(&state, id, &parts).await;
    }
    let auth = Auth::from_token(
        &state,
        super::auth::credential(&parts).ok_or(ApiError::Unauthorized)?,
    )
    .await?;
    let id = path_id(&id)?;
    let schedule = state.store.get_schedule(&auth.account_id, id).await?;
    let layers = state.store.list_layers(&auth.account_id, id).await?;
    let mut body = views::schedule(&schedule);
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "layers".into(),
            Value::Array(layers.iter().map(views::layer).collect()),
        );
    }
    Ok(Json(body).into_response())
}

/// `POST /schedules` (admins).
pub async fn create_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Input(body): Input<ScheduleBody>,
) -> ApiResult<Created> {
    auth.require_admin()?;
    let mut checks = Checks::default();
    let name = checks.required("name", body.name.as_deref(), NAME_MAX);
    let zone = check_zone(&mut checks, body.time_zone.as_deref().unwrap_or("UTC"));
    checks.finish()?;
    let schedule = state
        .store
        .create_schedule(
            &auth.account_id,
            &name,
            &zone,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(created(
        format!("/schedules/{}", schedule.id),
        views::schedule(&schedule),
    ))
}

/// `PUT /schedules/:id` (admins).
pub async fn update_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<ScheduleBody>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    let id = path_id(&id)?;
    let before = state.store.get_schedule(&auth.account_id, id).await?;
    let mut checks = Checks::default();
    let name = checks.required_or("name", body.name.as_deref(), NAME_MAX, &before.name);
    let zone = match body.time_zone.as_deref() {
        Some(z) => check_zone(&mut checks, z),
        None => before.time_zone.clone(),
    };
    checks.finish()?;
    let mut changes = Changeset::default();
    changes
        .diff("name", &before.name, &name)
        .diff("time_zone", &before.time_zone, &zone);
    if !changes.is_empty() {
        state
            .store
            .update_schedule(
                &auth.account_id,
                id,
                &name,
                &zone,
                &changes.into_value(),
                &auth.actor(),
                state.clock.now_ms(),
            )
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /schedules/:id` (admins); refused while a policy rule uses it.
pub async fn delete_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    state
        .store
        .delete_schedule(
            &auth.account_id,
            path_id(&id)?,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A layer restriction as sent: `{"days": ["mon"], "start": "09:00", "end": "17:00"}`.
#[derive(Debug, Deserialize)]
pub struct RestrictionBody {
    days: Option<Vec<String>>,
    start: Option<String>,
    end: Option<String>,
}

/// `POST /schedules/:id/layers` and `PUT …/layers/:layer_id` body.
#[derive(Debug, Deserialize)]
pub struct LayerBody {
    rule: Option<String>,
    count: Option<i64>,
    start_at: Option<String>,
    users: Option<Vec<String>>,
    restrictions: Option<Vec<RestrictionBody>>,
}

fn check_layer(
    checks: &mut Checks,
    body: LayerBody,
    before: Option<&klaxon_store::Layer>,
) -> LayerInput {
    let rotation = match body.rule.as_deref() {
        Some(r) => match Rotation::parse(r) {
            Some(r) => r.as_str().to_owned(),
            None => {
                checks.add(
                    "rule",
                    "must be one of hourly, daily, weekly, monthly, yearly",
                );
                String::new()
            }
        },
        None => match before {
            Some(b) => b.rotation.clone(),
            None => {
                checks.add("rule", "can't be blank");
                String::new()
            }
        },
    };
    let count = body.count.or(before.map(|b| b.count)).unwrap_or(1);
    checks.range("count", count, 1, MAX_COUNT);
    let start_at = match body.start_at.as_deref().map(str::trim) {
        Some(s) => {
            match s.parse::<jiff::civil::DateTime>() {
                Ok(dt) if !s.ends_with('Z') && !s.contains('+') => {
                    dt.strftime("%Y-%m-%dT%H:%M:%S").to_string()
                }
                _ => {
                    checks.add("start_at", "must be a wall-clock time in the schedule's zone, like 2026-01-05T09:00:00");
                    String::new()
                }
            }
        }
        None => match before {
            Some(b) => b.start_at.clone(),
            None => {
                checks.add("start_at", "can't be blank");
                String::new()
            }
        },
    };
    let users = match body.users {
        Some(users) => {
            if users.is_empty() {
                checks.add("users", "must name at least one user");
            }
            if users.len() > MAX_LAYER_USERS {
                checks.add("users", format!("may name at most {MAX_LAYER_USERS} users"));
            }
            if users.iter().any(|u| PublicId::parse(u).is_none()) {
                checks.add("users", "must be user ids");
            }
            users
        }
        None => match before {
            Some(b) => b.users.0.clone(),
            None => {
                checks.add("users", "can't be blank");
                Vec::new()
            }
        },
    };
    let restrictions = match body.restrictions {
        Some(list) => {
            if list.len() > MAX_RESTRICTIONS {
                checks.add(
                    "restrictions",
                    format!("may hold at most {MAX_RESTRICTIONS} windows"),
                );
            }
            list.into_iter()
                .map(|r| {
                    let days = r.days.unwrap_or_default();
                    if days.is_empty() || days.iter().any(|d| parse_weekday(d).is_none()) {
                        checks.add(
                            "restrictions",
                            "days must be a non-empty list of mon, tue, wed, thu, fri, sat, sun",
                        );
                    }
                    let mut time = |v: Option<String>| {
                        let v = v.unwrap_or_default();
                        if parse_hhmm(&v).is_none() {
                            checks.add("restrictions", "start and end must be times like 09:00");
                        }
                        v
                    };
                    let (start, end) = (time(r.start), time(r.end));
                    RestrictionSpec {
                        days: days.iter().map(|d| d.to_ascii_lowercase()).collect(),
                        start,
                        end,
                    }
                })
                .collect()
        }
        None => before.map(|b| b.restrictions.0.clone()).unwrap_or_default(),
    };
    LayerInput {
        rotation,
        count,
        start_at,
        users,
        restrictions,
    }
}

/// `GET /schedules/:id/layers`
pub async fn list_layers(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let layers = state
        .store
        .list_layers(&auth.account_id, path_id(&id)?)
        .await?;
    Ok(Json(Value::Array(
        layers.iter().map(views::layer).collect(),
    )))
}

/// `POST /schedules/:id/layers` (admins): a new layer on top.
pub async fn create_layer(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<LayerBody>,
) -> ApiResult<Created> {
    auth.require_admin()?;
    let id = path_id(&id)?;
    let mut checks = Checks::default();
    let input = check_layer(&mut checks, body, None);
    checks.finish()?;
    let layer = state
        .store
        .create_layer(
            &auth.account_id,
            id,
            &input,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(created(
        format!("/schedules/{id}/layers/{}", layer.id),
        views::layer(&layer),
    ))
}

/// `PUT /schedules/:id/layers/:layer_id` (admins).
pub async fn update_layer(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, layer_id)): Path<(String, String)>,
    Input(body): Input<LayerBody>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    let (id, layer_id) = (path_id(&id)?, path_id(&layer_id)?);
    let layers = state.store.list_layers(&auth.account_id, id).await?;
    let before = layers
        .iter()
        .find(|l| l.id == layer_id)
        .ok_or(ApiError::NotFound)?;
    let mut checks = Checks::default();
    let input = check_layer(&mut checks, body, Some(before));
    checks.finish()?;
    let changes = json!({"layer_id": layer_id, "before": views::layer(before)});
    state
        .store
        .update_layer(
            &auth.account_id,
            id,
            layer_id,
            &input,
            &changes,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /schedules/:id/layers/:layer_id` (admins).
pub async fn delete_layer(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, layer_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    state
        .store
        .delete_layer(
            &auth.account_id,
            path_id(&id)?,
            path_id(&layer_id)?,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A time window in the query string.
#[derive(Debug, Deserialize)]
pub struct WindowQuery {
    since: Option<String>,
    until: Option<String>,
    at: Option<String>,
}

/// Parses an optional RFC 3339 parameter.
fn instant(checks: &mut Checks, field: &str, raw: Option<&str>) -> Option<Millis> {
    let raw = raw.filter(|r| !r.is_empty())?;
    let t = parse_ts(raw);
    if t.is_none() {
        checks.add(field, "must be an RFC 3339 time like 2026-01-05T09:00:00Z");
    }
    t
}

fn window(q: &WindowQuery, now: Millis, default_span: Millis) -> ApiResult<(Millis, Millis)> {
    let mut checks = Checks::default();
    let since = instant(&mut checks, "since", q.since.as_deref()).unwrap_or(now);
    let until = instant(&mut checks, "until", q.until.as_deref())
        .unwrap_or(since.saturating_add(default_span));
    if until <= since {
        checks.add("until", "must be after since");
    } else if until - since > MAX_WINDOW_MS {
        checks.add("until", "must be at most 366 days after since");
    }
    checks.finish()?;
    Ok((since, until))
}

/// `GET /schedules/:id/overrides?since&until`
pub async fn list_overrides(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Params(q): Params<WindowQuery>,
) -> ApiResult<Json<Value>> {
    let now = state.clock.now_ms();
    let (since, until) = window(&q, now, MAX_WINDOW_MS)?;
    let list = state
        .store
        .list_overrides(&auth.account_id, path_id(&id)?, since, until)
        .await?;
    Ok(Json(Value::Array(
        list.iter().map(views::schedule_override).collect(),
    )))
}

/// `POST /schedules/:id/overrides` body.
#[derive(Debug, Deserialize)]
pub struct OverrideBody {
    user_id: Option<String>,
    start_at: Option<String>,
    end_at: Option<String>,
}

/// `POST /schedules/:id/overrides` (admins and responders: covering a
/// shift is a responder's job).
pub async fn create_override(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<OverrideBody>,
) -> ApiResult<Created> {
    auth.require_responder()?;
    let id = path_id(&id)?;
    let mut checks = Checks::default();
    let user_id = checks.required("user_id", body.user_id.as_deref(), 64);
    if !user_id.is_empty() && PublicId::parse(&user_id).is_none() {
        checks.add("user_id", "is not a user id");
    }
    let start = instant(&mut checks, "start_at", body.start_at.as_deref());
    let end = instant(&mut checks, "end_at", body.end_at.as_deref());
    match (start, end) {
        (Some(s), Some(e)) if e <= s => checks.add("end_at", "must be after start_at"),
        (Some(s), Some(e)) if e - s > MAX_WINDOW_MS => {
            checks.add("end_at", "must be at most 366 days after start_at")
        }
        (None, _) if body.start_at.is_none() => checks.add("start_at", "can't be blank"),
        (_, None) if body.end_at.is_none() => checks.add("end_at", "can't be blank"),
        _ => {}
    }
    checks.finish()?;
    let (start, end) = (start.unwrap_or_default(), end.unwrap_or_default());
    let o = state
        .store
        .create_override(
            &auth.account_id,
            id,
            &user_id,
            start,
            end,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await
        .map_err(|e| match e {
            klaxon_store::StoreError::Invalid { .. } => {
                ApiError::field("user_id", "does not exist")
            }
            other => other.into(),
        })?;
    Ok(created(
        format!("/schedules/{id}/overrides/{}", o.id),
        views::schedule_override(&o),
    ))
}

/// `DELETE /schedules/:id/overrides/:override_id` (admins and responders).
pub async fn delete_override(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, override_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    auth.require_responder()?;
    state
        .store
        .delete_override(
            &auth.account_id,
            path_id(&id)?,
            path_id(&override_id)?,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /schedules/:id/on_call?at=` → `{"at", "users": [user…]}`.
pub async fn show_on_call(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Params(q): Params<WindowQuery>,
) -> ApiResult<Json<Value>> {
    let mut checks = Checks::default();
    let at = instant(&mut checks, "at", q.at.as_deref()).unwrap_or_else(|| state.clock.now_ms());
    checks.finish()?;
    let data = state
        .store
        .load_schedule(&auth.account_id, path_id(&id)?, at)
        .await?;
    let mut users = Vec::new();
    if let Some(user_id) = data.to_core().on_call(at) {
        users.push(views::user(
            &state.store.get_user(&auth.account_id, user_id).await?,
        ));
    }
    Ok(Json(json!({ "at": format_ts(at), "users": users })))
}

/// `GET /schedules/:id/shifts?since&until` → the final, merged shift list
/// (default: the next two weeks; at most 366 days).
pub async fn list_shifts(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Params(q): Params<WindowQuery>,
) -> ApiResult<Json<Value>> {
    let (since, until) = window(&q, state.clock.now_ms(), DEFAULT_SHIFTS_SPAN)?;
    let data = state
        .store
        .load_schedule(&auth.account_id, path_id(&id)?, since)
        .await?;
    let shifts = data.to_core().shifts(since, until);
    Ok(Json(Value::Array(
        shifts.iter().map(views::shift).collect(),
    )))
}

/// `GET /schedules/:id.ics?token=…`: the coming shifts as an iCalendar
/// feed for calendar apps, which cannot send headers, hence the token in
/// the URL. Only the schedule's own feed token is accepted
/// (`POST /schedules/:id/feed_token`): calendar URLs get shared and logged,
/// and one must never open the API.
async fn calendar(
    state: &AppState,
    id: &str,
    parts: &axum::http::request::Parts,
) -> ApiResult<Response> {
    let token = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let id = path_id(id)?;
    let auth = match (token, super::auth::credential(parts)) {
        (Some(t), _) => FeedReader::for_schedule(state, &t, id).await?,
        (None, Some(t)) => FeedReader::for_schedule(state, t, id).await?,
        (None, None) => return Err(ApiError::Unauthorized),
    };
    let now = state.clock.now_ms();
    let since = now - 7 * DAY_MS;
    let data = state
        .store
        .load_schedule(&auth.account_id, id, since)
        .await?;
    let shifts = data.to_core().shifts(since, now + 60 * DAY_MS);
    let users = state.store.list_users(&auth.account_id).await?;
    let name_of = |id: &str| {
        users
            .iter()
            .find(|u| u.id == id)
            .map_or(id.to_owned(), |u| u.name.clone())
    };
    let body = super::ical::calendar(&data.schedule, &shifts, now, name_of);
    Ok(([(CONTENT_TYPE, "text/calendar; charset=utf-8")], body).into_response())
}

/// `GET /oncalls?at=`: who is on call now for every schedule and every
/// escalation rule of the account.
pub async fn list_oncalls(
    State(state): State<AppState>,
    auth: Auth,
    Params(q): Params<WindowQuery>,
) -> ApiResult<Json<Value>> {
    let mut checks = Checks::default();
    let at = instant(&mut checks, "at", q.at.as_deref()).unwrap_or_else(|| state.clock.now_ms());
    checks.finish()?;
    let store = &state.store;
    let mut on_call = std::collections::HashMap::new();
    let mut schedules = Vec::new();
    for s in store.list_schedules(&auth.account_id).await? {
        let core = store
            .load_schedule(&auth.account_id, &s.id, at)
            .await?
            .to_core();
        let user = core.on_call(at).map(str::to_owned);
        schedules.push(json!({ "schedule_id": s.id, "name": s.name, "user_id": user }));
        on_call.insert(s.id.clone(), core);
    }
    let mut rules = Vec::new();
    for p in store.list_policies(&auth.account_id).await? {
        for r in store.list_rules(&auth.account_id, &p.id).await? {
            let user = klaxon_store::rule_assignee(&r, &on_call, at);
            rules.push(json!({
                "policy_id": p.id, "policy_name": p.name, "rule_id": r.id, "position": r.position,
                "assignment": { "type": r.assignment_type, "id": r.assignee_id }, "user_id": user,
            }));
        }
    }
    Ok(Json(
        json!({ "at": format_ts(at), "schedules": schedules, "rules": rules }),
    ))
}
