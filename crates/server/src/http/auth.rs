//! Authentication extractors. A handler that takes [`Auth`] can only run
//! for a valid user token, and every store call it makes is scoped by the
//! account that token belongs to.
//!
//! Tokens come in three kinds (`klaxon_store::token_kind`): API tokens
//! and sign-in sessions open the whole API; a calendar feed token opens
//! one schedule's `.ics` feed and nothing else ([`FeedReader`]), so the
//! URL a calendar app keeps is no key to the account. An expired token is
//! refused like an unknown one. Using a session moves its expiry one TTL
//! ahead; like `last_used_at`, that is written at most once a minute, so
//! authenticating stays a read.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use klaxon_core::time::Millis;
use klaxon_core::Role;
use klaxon_store::{token_kind, Actor, IntegrationTarget, Principal};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::app::AppState;

/// Tokens are re-stamped with `last_used_at` (and sessions renewed) at most
/// this often, so that authenticating a request is a read, not a write.
const TOUCH_INTERVAL_MS: Millis = 60_000;

/// The authenticated user behind a request.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The caller's account; pass it to every store call.
    pub account_id: String,
    /// The caller.
    pub user_id: String,
    /// The caller's role.
    pub role: Role,
    /// The token that authenticated the request.
    pub token_id: String,
}

impl Auth {
    /// The caller as recorded on audit events.
    pub fn actor(&self) -> Actor {
        Actor::User(self.user_id.clone())
    }

    /// Admins only (account configuration).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role.can_manage() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("only admins may change this"))
        }
    }

    /// Admins and responders (acting on incidents).
    pub fn require_responder(&self) -> Result<(), ApiError> {
        if self.role.can_respond() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("observers may not act on incidents"))
        }
    }
}

/// Extracts the secret from `Authorization: Token token="…"` (the seed
/// documents' form), `Token …` or `Bearer …`.
pub fn credential(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace)?;
    let rest = rest.trim();
    let secret = if scheme.eq_ignore_ascii_case("token") {
        match rest.strip_prefix("token=") {
            Some(quoted) => quoted.trim_matches('"'),
            None => rest,
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        rest
    } else {
        return None;
    };
    let plausible = !secret.is_empty()
        && secret.len() <= 256
        && !klaxon_core::validate::TextKind::Line.refuses(secret);
    plausible.then_some(secret)
}

/// SHA-256 of a token, hex: what the database stores instead of the token.
/// Tokens are long random strings, so a fast hash is enough (no dictionary
/// to attack), and lookups stay one indexed read.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = credential(parts).ok_or(ApiError::Unauthorized)?;
        Auth::from_token(state, token).await
    }
}

/// Resolves a token of any kind that works now, and records its use
/// (renewing a session).
async fn principal(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::Unauthorized);
    }
    let principal = state
        .store
        .principal_by_token(&hash_token(token))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let now = state.clock.now_ms();
    if principal.expires_at.is_some_and(|t| t <= now) {
        return Err(ApiError::Unauthorized);
    }
    let ttl = state.config.session_ttl_ms;
    let session = principal.kind == token_kind::SESSION;
    // A very short TTL (tests, demos) is renewed often enough to slide.
    let interval = if session {
        TOUCH_INTERVAL_MS.min(ttl / 2)
    } else {
        TOUCH_INTERVAL_MS
    };
    if principal.last_used_at.is_none_or(|t| now - t >= interval) {
        let renew_until = session.then(|| now.saturating_add(ttl));
        // Best effort: a failed stamp must not fail the request.
        if let Err(err) = state
            .store
            .touch_token(&principal.token_id, now, renew_until)
            .await
        {
            tracing::warn!(error = %err, "could not record token use");
        }
    }
    Ok(principal)
}

impl Auth {
    /// Authenticates an API or session token (from the `Authorization`
    /// header). A calendar feed token is refused: it opens only its feed.
    pub async fn from_token(state: &AppState, token: &str) -> Result<Self, ApiError> {
        let principal = principal(state, token).await?;
        if principal.kind == token_kind::FEED {
            return Err(ApiError::Unauthorized);
        }
        let role = Role::parse(&principal.role).ok_or(ApiError::Unauthorized)?;
        Ok(Auth {
            account_id: principal.account_id,
            user_id: principal.user_id,
            role,
            token_id: principal.token_id,
        })
    }
}

/// The reader of a calendar feed, authenticated by that schedule's feed
/// token (and only by one).
#[derive(Debug, Clone)]
pub struct FeedReader {
    /// The account of the schedule.
    pub account_id: String,
    /// Whose feed token it is.
    pub user_id: String,
}

impl FeedReader {
    /// Authenticates a feed token for `schedule_id`; any other token, or
    /// the feed token of another schedule, is a 401.
    pub async fn for_schedule(
        state: &AppState,
        token: &str,
        schedule_id: &str,
    ) -> Result<Self, ApiError> {
        let principal = principal(state, token).await?;
        if principal.kind != token_kind::FEED
            || principal.schedule_id.as_deref() != Some(schedule_id)
        {
            return Err(ApiError::Unauthorized);
        }
        Ok(FeedReader {
            account_id: principal.account_id,
            user_id: principal.user_id,
        })
    }
}

/// A monitoring system authenticated by a service's integration key. It
/// authorises only the integration endpoints (`/trigger`, `/acknowledge`,
/// `/resolve`).
pub struct IntegrationAuth(pub IntegrationTarget);

impl FromRequestParts<AppState> for IntegrationAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = credential(parts).ok_or(ApiError::Unauthorized)?;
        let service = state
            .store
            .service_by_integration_key(key)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(IntegrationAuth(service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(header: &str) -> Parts {
        Request::builder()
            .header(AUTHORIZATION, header)
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    #[test]
    fn reads_every_accepted_form() {
        for h in [
            r#"Token token="dGpYyvbApYxXGAvPkQjt""#,
            "Token token=dGpYyvbApYxXGAvPkQjt",
            "Token dGpYyvbApYxXGAvPkQjt",
            "Bearer dGpYyvbApYxXGAvPkQjt",
            "bearer   dGpYyvbApYxXGAvPkQjt",
        ] {
            assert_eq!(credential(&parts(h)), Some("dGpYyvbApYxXGAvPkQjt"), "{h}");
        }
    }

    #[test]
    fn rejects_other_schemes_and_empty_secrets() {
        for h in [
            "Basic abc",
            "Token",
            "Bearer ",
            r#"Token token="""#,
            "garbage",
        ] {
            assert_eq!(credential(&parts(h)), None, "{h}");
        }
    }
}
