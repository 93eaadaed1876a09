//! `/users/:id/contacts` and `/users/:id/notification_rules`: where and
//! when a user is paged.
//!
//! Everyone in the account reads them. Admins change anyone's; a
//! responder changes only their own; observers change nothing.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use klaxon_core::contact::{ContactAddress, ContactType, StartDelay, URL_MAX};
use klaxon_core::{PublicId, Role};
use klaxon_store::{Contact, ContactInput, NotificationRuleInput};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::input::{Changeset, Checks, Input};
use super::sessions::NAME_MAX;
use super::{created, path_id, views, Created};
use crate::app::AppState;

/// Admins change anyone's contacts and rules, responders their own.
fn may_change(auth: &Auth, user_id: &str) -> Result<(), ApiError> {
    match auth.role {
        Role::Admin => Ok(()),
        Role::Responder if auth.user_id == user_id => Ok(()),
        Role::Responder => Err(ApiError::Forbidden(
            "responders may change only their own contacts and notification rules",
        )),
        Role::Observer => Err(ApiError::Forbidden(
            "observers may not change contacts or notification rules",
        )),
    }
}

/// `POST /users/:id/contacts` and `PUT …/contacts/:contact_id` body;
/// absent fields keep their value on update.
#[derive(Debug, Deserialize)]
pub struct ContactBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    label: Option<String>,
    address: Option<String>,
}

fn check_type(checks: &mut Checks, raw: Option<&str>) -> Option<ContactType> {
    match raw.map(str::trim) {
        None | Some("") => {
            checks.add("type", "can't be blank");
            None
        }
        Some(t) => {
            let kind = ContactType::parse(&t.to_ascii_lowercase());
            if kind.is_none() {
                checks.add("type", ContactType::UNKNOWN);
            }
            kind
        }
    }
}

/// Checks the address against the type (when the type is known).
fn check_address(
    checks: &mut Checks,
    kind: Option<ContactType>,
    raw: &str,
) -> Option<ContactAddress> {
    let kind = kind?;
    match ContactAddress::parse(kind, raw) {
        Ok(address) => Some(address),
        Err(e) => {
            checks.add("address", e.to_string());
            None
        }
    }
}

/// A label as submitted; blank falls back to the type's name.
fn check_label(checks: &mut Checks, raw: Option<&str>, kind: Option<ContactType>) -> String {
    checks
        .optional("label", raw, NAME_MAX)
        .unwrap_or_else(|| kind.map(|k| k.as_str().to_owned()).unwrap_or_default())
}

/// `GET /users/:id/contacts`
pub async fn list_contacts(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let contacts = state
        .store
        .list_contacts(&auth.account_id, path_id(&id)?)
        .await?;
    Ok(Json(Value::Array(
        contacts.iter().map(views::contact).collect(),
    )))
}

/// `GET /users/:id/contacts/:contact_id`
pub async fn show_contact(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, contact_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let contact = state
        .store
        .get_contact(&auth.account_id, path_id(&id)?, path_id(&contact_id)?)
        .await?;
    Ok(Json(views::contact(&contact)))
}

/// `POST /users/:id/contacts`
pub async fn create_contact(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<ContactBody>,
) -> ApiResult<Created> {
    let user_id = path_id(&id)?;
    may_change(&auth, user_id)?;
    let mut checks = Checks::default();
    let kind = check_type(&mut checks, body.kind.as_deref());
    let label = check_label(&mut checks, body.label.as_deref(), kind);
    let raw = checks.required("address", body.address.as_deref(), URL_MAX);
    let address = if raw.is_empty() {
        None
    } else {
        check_address(&mut checks, kind, &raw)
    };
    checks.finish()?;
    let Some(address) = address else {
        return Err(ApiError::field("address", "can't be blank"));
    };
    let contact = state
        .store
        .create_contact(
            &auth.account_id,
            user_id,
            &ContactInput { label, address },
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(created(
        format!("/users/{user_id}/contacts/{}", contact.id),
        views::contact(&contact),
    ))
}

/// The stored type of a contact (the schema allows only known ones).
fn stored_type(contact: &Contact) -> ApiResult<ContactType> {
    ContactType::parse(&contact.kind).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "contact {} has unknown type {:?}",
            contact.id,
            contact.kind
        ))
    })
}

/// `PUT /users/:id/contacts/:contact_id`: a new type is checked against
/// the address (the new one, or the one it has).
pub async fn update_contact(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, contact_id)): Path<(String, String)>,
    Input(body): Input<ContactBody>,
) -> ApiResult<StatusCode> {
    let (user_id, contact_id) = (path_id(&id)?, path_id(&contact_id)?);
    may_change(&auth, user_id)?;
    let before = state
        .store
        .get_contact(&auth.account_id, user_id, contact_id)
        .await?;
    let mut checks = Checks::default();
    let kind = match body.kind.as_deref() {
        Some(raw) => check_type(&mut checks, Some(raw)),
        None => Some(stored_type(&before)?),
    };
    let label = match body.label.as_deref() {
        Some(raw) => check_label(&mut checks, Some(raw), kind),
        None => before.label.clone(),
    };
    let raw = checks.required_or("address", body.address.as_deref(), URL_MAX, &before.address);
    let address = if raw.is_empty() {
        None
    } else {
        check_address(&mut checks, kind, &raw)
    };
    checks.finish()?;
    let Some(address) = address else {
        return Err(ApiError::field("address", "can't be blank"));
    };
    let mut changes = Changeset::default();
    changes
        .diff("type", before.kind.as_str(), address.kind().as_str())
        .diff("label", &before.label, &label)
        .diff("address", before.address.as_str(), address.address());
    if !changes.is_empty() {
        state
            .store
            .update_contact(
                &auth.account_id,
                user_id,
                contact_id,
                &ContactInput { label, address },
                &changes.into_value(),
                &auth.actor(),
                state.clock.now_ms(),
            )
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /users/:id/contacts/:contact_id`: its notification rules go
/// with it.
pub async fn delete_contact(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, contact_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (user_id, contact_id) = (path_id(&id)?, path_id(&contact_id)?);
    may_change(&auth, user_id)?;
    state
        .store
        .delete_contact(
            &auth.account_id,
            user_id,
            contact_id,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /users/:id/notification_rules` and `PUT …/:rule_id` body.
#[derive(Debug, Deserialize)]
pub struct NotificationRuleBody {
    contact_id: Option<String>,
    start_delay: Option<i64>,
}

fn check_contact_id(checks: &mut Checks, raw: Option<&str>) -> String {
    match raw.map(str::trim) {
        None | Some("") => {
            checks.add("contact_id", "can't be blank");
            String::new()
        }
        // An id of the wrong shape cannot name a contact.
        Some(raw) => match PublicId::parse(raw) {
            Some(id) => id.to_string(),
            None => {
                checks.add("contact_id", "does not exist");
                String::new()
            }
        },
    }
}

fn check_start_delay(checks: &mut Checks, minutes: i64) -> Option<StartDelay> {
    let delay = StartDelay::new(minutes);
    if delay.is_none() {
        checks.add("start_delay", StartDelay::OUT_OF_RANGE);
    }
    delay
}

/// `GET /users/:id/notification_rules`
pub async fn list_notification_rules(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user_id = path_id(&id)?;
    let rules = state
        .store
        .list_notification_rules(&auth.account_id, user_id)
        .await?;
    Ok(Json(Value::Array(
        rules.iter().map(views::notification_rule).collect(),
    )))
}

/// `GET /users/:id/notification_rules/:rule_id`
pub async fn show_notification_rule(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, rule_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let rule = state
        .store
        .get_notification_rule(&auth.account_id, path_id(&id)?, path_id(&rule_id)?)
        .await?;
    Ok(Json(views::notification_rule(&rule)))
}

/// `POST /users/:id/notification_rules`
pub async fn create_notification_rule(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Input(body): Input<NotificationRuleBody>,
) -> ApiResult<Created> {
    let user_id = path_id(&id)?;
    may_change(&auth, user_id)?;
    let mut checks = Checks::default();
    let contact_id = check_contact_id(&mut checks, body.contact_id.as_deref());
    let start_delay = check_start_delay(&mut checks, body.start_delay.unwrap_or(0));
    checks.finish()?;
    let Some(start_delay) = start_delay else {
        return Err(ApiError::field("start_delay", StartDelay::OUT_OF_RANGE));
    };
    let rule = state
        .store
        .create_notification_rule(
            &auth.account_id,
            user_id,
            &NotificationRuleInput {
                contact_id,
                start_delay,
            },
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(created(
        format!("/users/{user_id}/notification_rules/{}", rule.id),
        views::notification_rule(&rule),
    ))
}

/// `PUT /users/:id/notification_rules/:rule_id`
pub async fn update_notification_rule(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, rule_id)): Path<(String, String)>,
    Input(body): Input<NotificationRuleBody>,
) -> ApiResult<StatusCode> {
    let (user_id, rule_id) = (path_id(&id)?, path_id(&rule_id)?);
    may_change(&auth, user_id)?;
    let before = state
        .store
        .get_notification_rule(&auth.account_id, user_id, rule_id)
        .await?;
    let mut checks = Checks::default();
    let contact_id = match body.contact_id.as_deref() {
        Some(raw) => check_contact_id(&mut checks, Some(raw)),
        None => before.contact_id.clone(),
    };
    let start_delay =
        check_start_delay(&mut checks, body.start_delay.unwrap_or(before.start_delay));
    checks.finish()?;
    let Some(start_delay) = start_delay else {
        return Err(ApiError::field("start_delay", StartDelay::OUT_OF_RANGE));
    };
    let mut changes = Changeset::default();
    changes
        .diff("contact_id", &before.contact_id, &contact_id)
        .diff("start_delay", &before.start_delay, &start_delay.minutes());
    if !changes.is_empty() {
        state
            .store
            .update_notification_rule(
                &auth.account_id,
                user_id,
                rule_id,
                &NotificationRuleInput {
                    contact_id,
                    start_delay,
                },
                &changes.into_value(),
                &auth.actor(),
                state.clock.now_ms(),
            )
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /users/:id/notification_rules/:rule_id`
pub async fn delete_notification_rule(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, rule_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (user_id, rule_id) = (path_id(&id)?, path_id(&rule_id)?);
    may_change(&auth, user_id)?;
    state
        .store
        .delete_notification_rule(
            &auth.account_id,
            user_id,
            rule_id,
            &auth.actor(),
            state.clock.now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
