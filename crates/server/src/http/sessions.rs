//! Registration, sign-in, the caller's identity and API tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use klaxon_core::id::random_secret;
use klaxon_core::validate::Email;
use klaxon_store::{Store, UserInput};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{hash_token, Auth};
use super::error::{ApiError, ApiResult};
use super::input::{Checks, Input};
use super::{path_id, views};
use crate::app::AppState;
use crate::password;

/// Length of generated API tokens (base62: ~190 bits).
pub const TOKEN_LEN: usize = 32;
/// Longest accepted name.
pub const NAME_MAX: usize = 255;
/// Password length bounds.
pub const PASSWORD_MIN: usize = 8;
/// Longest accepted password (Argon2 input is bounded to keep hashing cheap to refuse).
pub const PASSWORD_MAX: usize = 1024;

/// A fresh API token secret.
pub fn new_token() -> String {
    random_secret(&mut rand::rng(), TOKEN_LEN)
}

/// `POST /registrations` body (also what `klaxon bootstrap` takes).
#[derive(Debug, Default, Deserialize)]
pub struct Registration {
    /// The new account's name.
    pub account_name: Option<String>,
    /// The owner's name.
    pub name: Option<String>,
    /// The owner's sign-in address.
    pub email: Option<String>,
    /// The owner's password (optional for bootstrap).
    pub password: Option<String>,
}

/// Validates and checks a password, recording problems on `checks`.
pub fn check_password(checks: &mut Checks, password: &str) {
    if password.chars().count() < PASSWORD_MIN {
        checks.add(
            "password",
            format!("is too short (minimum is {PASSWORD_MIN} characters)"),
        );
    }
    checks.max_len("password", password, PASSWORD_MAX);
}

/// Creates an account, its admin and a token; returns
/// `{"account_id","user_id","token"}`.
pub async fn register(store: &dyn Store, now: i64, input: Registration) -> ApiResult<Value> {
    let mut checks = Checks::default();
    let account_name = checks.required("account_name", input.account_name.as_deref(), NAME_MAX);
    let name = checks.required("name", input.name.as_deref(), NAME_MAX);
    let email = parse_email(&mut checks, input.email.as_deref());
    if let Some(p) = &input.password {
        check_password(&mut checks, p);
    }
    checks.finish()?;
    let password_hash = match input.password {
        Some(p) => Some(password::hash(p).await?),
        None => None,
    };
    let owner = UserInput {
        name,
        email,
        role: "admin".into(),
        time_zone: "UTC".into(),
        password_hash,
    };
    let token = new_token();
    let (account, user, _) = store
        .create_account(&account_name, &owner, &hash_token(&token), now)
        .await?;
    Ok(json!({ "account_id": account.id, "user_id": user.id, "token": token }))
}

/// Parses a required email field.
pub fn parse_email(checks: &mut Checks, raw: Option<&str>) -> String {
    match raw.map(str::trim) {
        None | Some("") => {
            checks.add("email", "can't be blank");
            String::new()
        }
        Some(raw) => match Email::parse(raw) {
            Some(e) => e.into_string(),
            None => {
                checks.add("email", "is not a valid email address");
                String::new()
            }
        },
    }
}

/// `POST /registrations`: account + admin + token, unless closed by configuration.
pub async fn create_registration(
    State(state): State<AppState>,
    Input(input): Input<Registration>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !state.config.registrations_open {
        return Err(ApiError::Forbidden(
            "registrations are closed on this server",
        ));
    }
    let mut checks = Checks::default();
    if input.password.is_none() {
        checks.add("password", "can't be blank");
    }
    checks.finish()?;
    let body = register(&*state.store, state.clock.now_ms(), input).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// `POST /sessions` body.
#[derive(Debug, Deserialize)]
pub struct SignIn {
    email: Option<String>,
    password: Option<String>,
}

/// A valid Argon2 hash of a random password, verified against when the
/// email is unknown so that sign-in takes as long either way.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4A6XKqZr8pHXNlxNFx1dK/2YxS0y8VaWpIdkYFHqlvI";

/// `POST /sessions`: email + password → a new token.
pub async fn create_session(
    State(state): State<AppState>,
    Input(input): Input<SignIn>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut checks = Checks::default();
    let email = checks
        .required("email", input.email.as_deref(), 254)
        .to_ascii_lowercase();
    let password = checks.required("password", input.password.as_deref(), PASSWORD_MAX);
    checks.finish()?;
    let user = state.store.user_by_email(&email).await?;
    let phc = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.to_owned());
    let ok = password::verify(password, phc).await;
    let user = match user {
        Some(u) if ok && u.password_hash.is_some() => u,
        _ => return Err(ApiError::Unauthorized),
    };
    let token = new_token();
    state
        .store
        .create_token(
            &user.account_id,
            &user.id,
            "session",
            &hash_token(&token),
            state.clock.now_ms(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "user_id": user.id })),
    ))
}

/// `GET /me`: the caller.
pub async fn show_me(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let user = state
        .store
        .get_user(&auth.account_id, &auth.user_id)
        .await?;
    let mut body = views::user(&user);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("account_id".into(), Value::String(auth.account_id));
    }
    Ok(Json(body))
}

/// `GET /tokens`: the caller's tokens (never their secrets).
pub async fn list_tokens(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let tokens = state
        .store
        .list_tokens(&auth.account_id, &auth.user_id)
        .await?;
    Ok(Json(Value::Array(
        tokens.iter().map(|t| views::token(t, None)).collect(),
    )))
}

/// `POST /tokens` body.
#[derive(Debug, Deserialize)]
pub struct NewToken {
    name: Option<String>,
}

/// `POST /tokens`: a new token for the caller, shown once.
pub async fn create_token(
    State(state): State<AppState>,
    auth: Auth,
    Input(input): Input<NewToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut checks = Checks::default();
    let name = checks
        .optional("name", input.name.as_deref(), NAME_MAX)
        .unwrap_or_else(|| "api".into());
    checks.finish()?;
    let secret = new_token();
    let token = state
        .store
        .create_token(
            &auth.account_id,
            &auth.user_id,
            &name,
            &hash_token(&secret),
            state.clock.now_ms(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(views::token(&token, Some(&secret))),
    ))
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
        .delete_token(&auth.account_id, &auth.user_id, id, state.clock.now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_is_a_real_argon2_hash() {
        // If it did not parse, sign-in for unknown emails would return
        // early and reveal which emails exist through its timing.
        let parsed =
            argon2::password_hash::PasswordHash::new(DUMMY_HASH).expect("valid PHC string");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
    }

    #[tokio::test]
    async fn the_dummy_hash_matches_nothing_typed() {
        assert!(!crate::password::verify("correct horse".into(), DUMMY_HASH.into()).await);
    }

    #[tokio::test]
    async fn passwords_round_trip() {
        let phc = crate::password::hash("correct horse".into())
            .await
            .expect("hash");
        assert!(crate::password::verify("correct horse".into(), phc.clone()).await);
        assert!(!crate::password::verify("wrong horse".into(), phc).await);
    }
}
