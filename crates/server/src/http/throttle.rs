//! Limits on password guessing: attempts per minute per email address and
//! per client address, on sign-in, registration and the current-password
//! check of a password or email change. Token buckets in this process's
//! memory (the inbound integrations' [`RateLimiter`]): several processes
//! sharing PostgreSQL each allow the full rate, and a restart forgets.

use super::client_ip::ClientIp;
use super::error::ApiError;
use super::inbound::limit::retry_after_secs;
use super::inbound::RateLimiter;

/// What an attempt is counted as: each has its own buckets, so signing in
/// does not use up registering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// `POST /sessions`, and checking the current password of a change.
    SignIn,
    /// `POST /registrations`.
    Registration,
}

/// The buckets.
#[derive(Debug)]
pub struct AuthLimits {
    sign_in_email: RateLimiter,
    sign_in_ip: RateLimiter,
    registration_email: RateLimiter,
    registration_ip: RateLimiter,
}

impl AuthLimits {
    /// `per_email` and `per_ip` attempts per minute (0: no limit).
    pub fn new(per_email: u32, per_ip: u32) -> Self {
        AuthLimits {
            sign_in_email: RateLimiter::new(per_email),
            sign_in_ip: RateLimiter::new(per_ip),
            registration_email: RateLimiter::new(per_email),
            registration_ip: RateLimiter::new(per_ip),
        }
    }

    /// Counts one attempt from `client` (if known) for `email` (if given,
    /// normalised); `429` when either bucket is empty.
    pub fn check(
        &self,
        attempt: Attempt,
        client: Option<&ClientIp>,
        email: Option<&str>,
    ) -> Result<(), ApiError> {
        let (by_email, by_ip) = match attempt {
            Attempt::SignIn => (&self.sign_in_email, &self.sign_in_ip),
            Attempt::Registration => (&self.registration_email, &self.registration_ip),
        };
        if let Some(client) = client {
            by_ip
                .take(&client.limit_key())
                .map_err(|wait| ApiError::TooManyRequests {
                    message: "too many attempts from this address; try again later",
                    retry_after: retry_after_secs(wait),
                })?;
        }
        if let Some(email) = email {
            by_email
                .take(email)
                .map_err(|wait| ApiError::TooManyRequests {
                    message: "too many attempts for this email address; try again later",
                    retry_after: retry_after_secs(wait),
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_attempt_for_an_email_waits() {
        let limits = AuthLimits::new(10, 30);
        let client = ClientIp(None);
        for i in 0..10 {
            limits
                .check(Attempt::SignIn, Some(&client), Some("a@example.com"))
                .unwrap_or_else(|e| panic!("attempt {i}: {e}"));
        }
        let refused = limits.check(Attempt::SignIn, Some(&client), Some("a@example.com"));
        assert!(
            matches!(refused, Err(ApiError::TooManyRequests { retry_after, .. }) if retry_after >= 1)
        );
        // Another address, and registering, have their own buckets.
        limits
            .check(Attempt::SignIn, Some(&client), Some("b@example.com"))
            .expect("another email");
        limits
            .check(Attempt::Registration, Some(&client), Some("a@example.com"))
            .expect("registration");
    }
}
