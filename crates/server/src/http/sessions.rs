//! Registration (a new account, or joining one by invitation) and
//! sign-in; the caller's identity.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use klaxon_core::id::random_secret;
use klaxon_core::time::format_ts;
use klaxon_core::validate::Email;
use klaxon_store::{token_kind, Store, StoreError, TokenInput, UserInput};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{hash_token, Auth};
use super::client_ip::ClientIp;
use super::error::{ApiError, ApiResult};
use super::input::{Checks, Input};
use super::throttle::Attempt;
use super::views;
use crate::app::AppState;
use crate::config::Registrations;
use crate::password::Hasher;

/// Length of generated API tokens (base62: ~190 bits).
pub const TOKEN_LEN: usize = 32;
/// Longest accepted name.
pub const NAME_MAX: usize = 255;
/// Password length bounds.
pub const PASSWORD_MIN: usize = 8;
/// Longest accepted password (Argon2 input is bounded to keep hashing cheap to refuse).
pub const PASSWORD_MAX: usize = 1024;
/// Longest sign-in email looked up.
const EMAIL_MAX: usize = 254;

/// A fresh API token secret.
pub fn new_token() -> String {
    random_secret(&mut rand::rng(), TOKEN_LEN)
}

/// `POST /registrations` body (also what `klaxon bootstrap` takes).
#[derive(Debug, Default, Deserialize)]
pub struct Registration {
    /// The new account's name (not read when joining by invitation).
    pub account_name: Option<String>,
    /// The owner's name.
    pub name: Option<String>,
    /// The owner's sign-in address.
    pub email: Option<String>,
    /// The owner's password (optional for bootstrap).
    pub password: Option<String>,
    /// An invitation's code: join its account instead of creating one.
    pub invitation: Option<String>,
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

/// Hashes a password on the bounded pool: `429` when it is full.
pub async fn hash_password(hasher: &Hasher, password: String) -> ApiResult<String> {
    Ok(hasher.hash(password).await??)
}

/// Creates an account, its admin and a token; returns
/// `{"account_id","user_id","token"}`.
pub async fn register(
    store: &dyn Store,
    hasher: &Hasher,
    now: i64,
    input: Registration,
) -> ApiResult<Value> {
    let mut checks = Checks::default();
    let account_name = checks.required("account_name", input.account_name.as_deref(), NAME_MAX);
    let name = checks.required("name", input.name.as_deref(), NAME_MAX);
    let email = parse_email(&mut checks, input.email.as_deref());
    if let Some(p) = &input.password {
        check_password(&mut checks, p);
    }
    checks.finish()?;
    let password_hash = match input.password {
        Some(p) => Some(hash_password(hasher, p).await?),
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

/// Joins an invitation's account as a new user with its role; returns
/// `{"account_id","user_id","token"}` like a registration.
async fn join(state: &AppState, code: &str, input: Registration) -> ApiResult<Value> {
    let mut checks = Checks::default();
    let name = checks.required("name", input.name.as_deref(), NAME_MAX);
    let email = parse_email(&mut checks, input.email.as_deref());
    let password = checks.required("password", input.password.as_deref(), PASSWORD_MAX);
    check_password(&mut checks, &password);
    checks.finish()?;
    let invalid = || ApiError::field("invitation", "is not valid (unknown, used or expired)");
    if code.len() > 256 {
        return Err(invalid());
    }
    let member = UserInput {
        name,
        email,
        // The invitation's role replaces it.
        role: String::new(),
        time_zone: "UTC".into(),
        password_hash: Some(hash_password(&state.hasher, password).await?),
    };
    let token = new_token();
    let (invitation, user, _) = state
        .store
        .accept_invitation(
            &hash_token(code),
            &member,
            &hash_token(&token),
            state.clock.now_ms(),
        )
        .await
        .map_err(|err| match err {
            StoreError::NotFound => invalid(),
            other => other.into(),
        })?;
    Ok(json!({ "account_id": invitation.account_id, "user_id": user.id, "token": token }))
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

/// The bucket key of an email as typed: what sign-in looks up.
fn email_key(raw: Option<&str>) -> Option<String> {
    raw.map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e.len() <= EMAIL_MAX)
}

/// `POST /registrations`: a new account with its admin and a token; or,
/// with an `invitation`, a new user of the invitation's account. Who may
/// register is configured (`KLAXON_REGISTRATIONS`: open, invite, closed).
///
/// A registration with an email that is taken answers `422` saying so:
/// the account is made at once, with no confirmation mail that could tell
/// only the owner of the address, so a refusal that hid it would leave the
/// person registering unable to tell what went wrong. Instead, attempts
/// are rate-limited per client address and per email, like sign-in, and
/// an invitation is checked before the email is.
pub async fn create_registration(
    State(state): State<AppState>,
    client: ClientIp,
    Input(input): Input<Registration>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let invitation = input
        .invitation
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    match (state.config.registrations, &invitation) {
        (Registrations::Closed, _) => {
            return Err(ApiError::Forbidden(
                "registrations are closed on this server",
            ))
        }
        (Registrations::Invite, None) => {
            return Err(ApiError::Forbidden(
                "this server registers only by invitation",
            ))
        }
        _ => {}
    }
    state.auth_limits.check(
        Attempt::Registration,
        Some(&client),
        email_key(input.email.as_deref()).as_deref(),
    )?;
    let body = match invitation {
        Some(code) => join(&state, &code, input).await?,
        None => {
            let mut checks = Checks::default();
            if input.password.is_none() {
                checks.add("password", "can't be blank");
            }
            checks.finish()?;
            register(&*state.store, &state.hasher, state.clock.now_ms(), input).await?
        }
    };
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

/// Checks `password` against a user's stored hash (or, for a user without
/// one or no user, against a dummy, taking as long and failing), on the
/// bounded pool.
pub async fn verify_password(
    hasher: &Hasher,
    password: String,
    stored: Option<&str>,
) -> ApiResult<bool> {
    let phc = stored.unwrap_or(DUMMY_HASH).to_owned();
    let ok = hasher.verify(password, phc).await?;
    Ok(ok && stored.is_some())
}

/// `POST /sessions`: email + password → a new session token, which lapses
/// after `KLAXON_SESSION_TTL` unused. Attempts are rate-limited per email
/// and per client address.
pub async fn create_session(
    State(state): State<AppState>,
    client: ClientIp,
    Input(input): Input<SignIn>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut checks = Checks::default();
    let email = checks
        .required("email", input.email.as_deref(), EMAIL_MAX)
        .to_ascii_lowercase();
    let password = checks.required("password", input.password.as_deref(), PASSWORD_MAX);
    checks.finish()?;
    state
        .auth_limits
        .check(Attempt::SignIn, Some(&client), Some(&email))?;
    let user = state.store.user_by_email(&email).await?;
    let stored = user.as_ref().and_then(|u| u.password_hash.as_deref());
    if !verify_password(&state.hasher, password, stored).await? {
        return Err(ApiError::Unauthorized);
    }
    let Some(user) = user else {
        return Err(ApiError::Unauthorized);
    };
    let token = new_token();
    let now = state.clock.now_ms();
    let session = TokenInput {
        name: "session".into(),
        kind: token_kind::SESSION.into(),
        expires_at: Some(now.saturating_add(state.config.session_ttl_ms)),
    };
    let created = state
        .store
        .create_token(
            &user.account_id,
            &user.id,
            &session,
            &hash_token(&token),
            now,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "user_id": user.id,
            "expires_at": created.expires_at.map(format_ts),
        })),
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
        let hasher = Hasher::new(1, 1);
        assert!(!verify_password(&hasher, "correct horse".into(), None)
            .await
            .expect("checked"));
        let phc = hash_password(&hasher, "correct horse".into())
            .await
            .expect("hashed");
        assert!(verify_password(&hasher, "correct horse".into(), Some(&phc))
            .await
            .expect("checked"));
    }
}
