//! Invitations to join an account: an admin makes one, the person invited
//! registers with its code and becomes a user of the account with the
//! invitation's role. The rows and the [`InvitationStore`] trait; the one
//! implementation for every backend is `sql/invitations.rs`.

use async_trait::async_trait;
use klaxon_core::time::Millis;

use crate::{Actor, ApiToken, Result, User, UserInput};

/// An invitation (its code is never stored, only the code's hash).
#[derive(Debug, Clone)]
pub struct Invitation {
    /// Public id.
    pub id: String,
    /// The account it joins.
    pub account_id: String,
    /// The role the new user gets.
    pub role: String,
    /// The only address that may use it, if set (normalised).
    pub email: Option<String>,
    /// Unusable from this instant.
    pub expires_at: Millis,
    /// When it was used (it works once).
    pub used_at: Option<Millis>,
    /// The user it made.
    pub used_by: Option<String>,
    /// Creation instant.
    pub created_at: Millis,
}

/// Values for a new invitation.
#[derive(Debug, Clone)]
pub struct InvitationInput {
    /// The role the new user gets.
    pub role: String,
    /// The only address that may use it, if set (normalised).
    pub email: Option<String>,
    /// Unusable from this instant.
    pub expires_at: Millis,
}

/// Invitations.
#[async_trait]
pub trait InvitationStore: Send + Sync {
    /// Creates an invitation whose code hashes to `code_hash`.
    async fn create_invitation(
        &self,
        account_id: &str,
        input: &InvitationInput,
        code_hash: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Invitation>;
    /// The account's invitations, newest first, used and expired ones too.
    async fn list_invitations(&self, account_id: &str) -> Result<Vec<Invitation>>;
    /// Withdraws an invitation.
    async fn delete_invitation(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// Uses an invitation, in one transaction: the unused, unexpired
    /// invitation whose code hashes to `code_hash` makes `user` a user of
    /// its account with its role (`user.role` is not read), issues the
    /// user's first API token and is used up. `NotFound` when no such
    /// invitation is usable (unknown, used or expired alike); `Invalid`
    /// on `email` when it names another address; `Taken("email")`, with
    /// the invitation left unused, when the email is someone's already.
    async fn accept_invitation(
        &self,
        code_hash: &str,
        user: &UserInput,
        token_hash: &str,
        now: Millis,
    ) -> Result<(Invitation, User, ApiToken)>;
}
