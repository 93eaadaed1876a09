//! Klaxon's storage layer.
//!
//! One domain-level [`Store`] trait with two native backends: SQLite (the
//! embedded default) and PostgreSQL (scale-out). Each backend is written in
//! its own SQL dialect with its own migrations, kept in lockstep; one
//! contract test suite (`tests/contract.rs`) runs against both.
//!
//! Every method that reads or writes account data takes the account id, so
//! tenant isolation is a property of the interface. Every mutating method
//! writes its audit event in the same transaction as the change.

use std::sync::Arc;

use async_trait::async_trait;
use klaxon_core::time::Millis;
use klaxon_core::{IncidentAction, TransitionError};
use serde_json::Value;

mod feed;
mod heartbeats;
mod invitations;
pub mod model;
mod plan;
pub mod postgres;
pub(crate) mod sql;
pub mod sqlite;
mod stats;

pub use feed::{EventFeed, EventFeedStore, LoggedEvent};
pub use heartbeats::{
    FiredHeartbeat, Heartbeat, HeartbeatInput, HeartbeatOutcome, HeartbeatStore, Pinged,
};
pub use invitations::{Invitation, InvitationInput, InvitationStore};
pub use model::*;
pub use plan::rule_assignee;
pub use stats::{BatchSizes, MetricsStore, StoreGauges, StoreStats};

/// What can go wrong in the store, in domain terms. Callers never see the
/// database driver's types: a failure of the database itself is an opaque
/// [`BackendError`] that says only whether it is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such row in this account.
    #[error("not found")]
    NotFound,
    /// A unique field's value is used already (the field's name).
    #[error("{0} has already been taken")]
    Taken(&'static str),
    /// A field refers to something that does not exist or does not fit.
    #[error("{field} {message}")]
    Invalid {
        /// The request field at fault.
        field: &'static str,
        /// Rails-style message, e.g. "does not exist".
        message: String,
    },
    /// The request conflicts with the current state (e.g. a policy in use).
    #[error("{0}")]
    Conflict(String),
    /// The incident cannot make this move.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The database failed.
    #[error("database error: {0}")]
    Backend(BackendError),
    /// A migration failed.
    #[error("migration error: {0}")]
    Migrate(BackendError),
}

/// A failure of the database or its files, for logs; never shown to API
/// clients.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct BackendError {
    kind: BackendErrorKind,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// What the store's own logic needs to tell apart in a database failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendErrorKind {
    /// The database could not be reached in time (pool exhausted, server
    /// down, file locked, store closing) rather than refusing the work.
    Unavailable,
    /// A unique constraint refused the write.
    Unique,
    /// A foreign-key constraint refused the write.
    ForeignKey,
    /// Anything else.
    Other,
}

impl StoreError {
    /// The database could not be reached in time (pool exhausted, server
    /// down): worth a 503 rather than a 500.
    pub fn is_unavailable(&self) -> bool {
        self.backend_kind() == Some(BackendErrorKind::Unavailable)
    }

    /// A unique constraint refused the write.
    pub(crate) fn is_unique_violation(&self) -> bool {
        self.backend_kind() == Some(BackendErrorKind::Unique)
    }

    fn backend_kind(&self) -> Option<BackendErrorKind> {
        match self {
            StoreError::Backend(e) => Some(e.kind),
            _ => None,
        }
    }

    fn backend(
        kind: BackendErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Backend(BackendError {
            kind,
            source: source.into(),
        })
    }

    /// The store is shutting down (its writer task is gone).
    pub(crate) fn closed() -> StoreError {
        StoreError::backend(BackendErrorKind::Unavailable, "the store is closed")
    }

    /// A migration that cannot be applied.
    pub(crate) fn migrate(message: String) -> StoreError {
        StoreError::Migrate(BackendError {
            kind: BackendErrorKind::Other,
            source: message.into(),
        })
    }

    /// A row that does not fit the type it is read into.
    pub(crate) fn decode(message: String) -> StoreError {
        StoreError::backend(BackendErrorKind::Other, message)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        let kind = match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                BackendErrorKind::Unavailable
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => BackendErrorKind::Unique,
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                BackendErrorKind::ForeignKey
            }
            _ => BackendErrorKind::Other,
        };
        StoreError::backend(kind, err)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ffi;
        let kind = match &err {
            rusqlite::Error::SqliteFailure(e, _) => match e.extended_code {
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    BackendErrorKind::Unique
                }
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY => BackendErrorKind::ForeignKey,
                _ if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::CannotOpen
                ) =>
                {
                    BackendErrorKind::Unavailable
                }
                _ => BackendErrorKind::Other,
            },
            _ => BackendErrorKind::Other,
        };
        StoreError::backend(kind, err)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(err: std::io::Error) -> Self {
        StoreError::backend(BackendErrorKind::Unavailable, err)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(BackendError {
            kind: BackendErrorKind::Other,
            source: Box::new(err),
        })
    }
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Accounts, users and their tokens (API, session and calendar feed).
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account with its owner (an admin) and a first API token, atomically.
    async fn create_account(
        &self,
        name: &str,
        owner: &UserInput,
        token_hash: &str,
        now: Millis,
    ) -> Result<(Account, User, ApiToken)>;
    /// Whether any account exists (a brand-new database prints setup help).
    async fn has_accounts(&self) -> Result<bool>;
    /// Resolves a token (by its hash) to its user and account, whatever
    /// its kind and expiry: the caller decides what the token may do.
    async fn principal_by_token(&self, token_hash: &str) -> Result<Option<Principal>>;
    /// Records that a token was used; `renew_until` moves its expiry (a
    /// session's sliding expiry).
    async fn touch_token(
        &self,
        token_id: &str,
        now: Millis,
        renew_until: Option<Millis>,
    ) -> Result<()>;
    /// Finds a user by sign-in email, across accounts (email is globally unique).
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    /// Issues an API or session token for a user (and forgets the user's
    /// tokens that have expired).
    async fn create_token(
        &self,
        account_id: &str,
        user_id: &str,
        input: &TokenInput,
        token_hash: &str,
        now: Millis,
    ) -> Result<ApiToken>;
    /// A user's tokens of every kind, newest first.
    async fn list_tokens(&self, account_id: &str, user_id: &str) -> Result<Vec<ApiToken>>;
    /// Revokes one of a user's tokens (by the user, or an admin: `actor`).
    async fn delete_token(
        &self,
        account_id: &str,
        user_id: &str,
        token_id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// Issues the user's calendar feed token for a schedule of the account,
    /// replacing the one they had for it. `NotFound` for a schedule of
    /// another account.
    async fn create_feed_token(
        &self,
        account_id: &str,
        user_id: &str,
        schedule_id: &str,
        token_hash: &str,
        now: Millis,
    ) -> Result<ApiToken>;
    /// Revokes the user's calendar feed token for a schedule; `NotFound`
    /// when they have none.
    async fn delete_feed_token(
        &self,
        account_id: &str,
        user_id: &str,
        schedule_id: &str,
        now: Millis,
    ) -> Result<()>;
    /// Adds a user to an account.
    async fn create_user(
        &self,
        account_id: &str,
        input: &UserInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<User>;
    /// The account's users, oldest first.
    async fn list_users(&self, account_id: &str) -> Result<Vec<User>>;
    /// One user of the account.
    async fn get_user(&self, account_id: &str, id: &str) -> Result<User>;
    /// Replaces a user's fields and revokes the user's tokens `revoke`
    /// names, in one transaction; `changes` is the audit changeset (which
    /// gains `tokens_revoked` when any were).
    #[allow(clippy::too_many_arguments)]
    async fn update_user(
        &self,
        account_id: &str,
        id: &str,
        input: &UserInput,
        changes: &Value,
        revoke: Revoke<'_>,
        actor: &Actor,
        now: Millis,
    ) -> Result<User>;
    /// Removes a user. Refused while an escalation rule names them or when
    /// they are the account's last admin.
    async fn delete_user(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
}

/// Escalation policies and their rules.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Creates a policy without rules.
    async fn create_policy(
        &self,
        account_id: &str,
        name: &str,
        loop_limit: i64,
        actor: &Actor,
        now: Millis,
    ) -> Result<Policy>;
    /// The account's policies, by name.
    async fn list_policies(&self, account_id: &str) -> Result<Vec<Policy>>;
    /// One policy.
    async fn get_policy(&self, account_id: &str, id: &str) -> Result<Policy>;
    /// Renames a policy or changes its loop limit.
    #[allow(clippy::too_many_arguments)]
    async fn update_policy(
        &self,
        account_id: &str,
        id: &str,
        name: &str,
        loop_limit: i64,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Policy>;
    /// Deletes a policy and its rules; refused while a service uses it.
    async fn delete_policy(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// A policy's rules in order.
    async fn list_rules(&self, account_id: &str, policy_id: &str) -> Result<Vec<PolicyRule>>;
    /// One rule of a policy.
    async fn get_rule(&self, account_id: &str, policy_id: &str, id: &str) -> Result<PolicyRule>;
    /// Appends a rule at the end of a policy.
    async fn create_rule(
        &self,
        account_id: &str,
        policy_id: &str,
        input: &RuleInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<PolicyRule>;
    /// Replaces a rule's timeout and assignment.
    #[allow(clippy::too_many_arguments)]
    async fn update_rule(
        &self,
        account_id: &str,
        policy_id: &str,
        id: &str,
        input: &RuleInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<PolicyRule>;
    /// Removes a rule and closes the gap in positions.
    async fn delete_rule(
        &self,
        account_id: &str,
        policy_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// Reorders a policy's rules; `rule_ids` must name every rule exactly once.
    async fn sort_rules(
        &self,
        account_id: &str,
        policy_id: &str,
        rule_ids: &[String],
        actor: &Actor,
        now: Millis,
    ) -> Result<Vec<PolicyRule>>;
}

/// Services.
#[async_trait]
pub trait ServiceStore: Send + Sync {
    /// Creates an enabled service.
    async fn create_service(
        &self,
        account_id: &str,
        input: &ServiceInput,
        integration_key: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Service>;
    /// The account's services, by name, with incident counts.
    async fn list_services(&self, account_id: &str) -> Result<Vec<Service>>;
    /// One service with incident counts.
    async fn get_service(&self, account_id: &str, id: &str) -> Result<Service>;
    /// Replaces a service's fields.
    async fn update_service(
        &self,
        account_id: &str,
        id: &str,
        input: &ServiceInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Service>;
    /// Deletes a service with its incidents.
    async fn delete_service(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// Enables or disables (maintenance) a service. Returns false when it
    /// already was in that state (nothing written).
    async fn set_service_state(
        &self,
        account_id: &str,
        id: &str,
        state: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<bool>;
    /// Replaces the integration key.
    async fn set_integration_key(
        &self,
        account_id: &str,
        id: &str,
        key: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// Resolves an integration key to its service (any account).
    async fn service_by_integration_key(&self, key: &str) -> Result<Option<IntegrationTarget>>;
    /// Records a change event (a deploy, a configuration change) on a
    /// service's timeline: a `service.change_event` audit event carrying
    /// `changeset`. It opens nothing and pages nobody. `NotFound` when the
    /// account has no such service.
    async fn record_change_event(
        &self,
        account_id: &str,
        service_id: &str,
        changeset: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
}

/// Incidents and the audit log.
#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// Opens an incident on a service, assigned to its policy's first rule.
    ///
    /// With `dedup`, an existing open incident is looked for first without
    /// taking any write lock (a repeated trigger is a pure read); only a
    /// miss goes on to the serialised check-and-insert.
    ///
    /// With `dedup`, an unresolved incident with the same key (or, when no
    /// key is given, the same message) is returned as `Deduplicated` and
    /// nothing is written; without it an explicit key already in use by an
    /// unresolved incident is `Taken("key")`. A disabled service is a
    /// `Conflict`. Safe under any concurrency.
    #[allow(clippy::too_many_arguments)]
    async fn trigger_incident(
        &self,
        account_id: &str,
        service_id: &str,
        new: &NewIncident,
        dedup: bool,
        actor: &Actor,
        now: Millis,
    ) -> Result<TriggerOutcome>;
    /// Incidents matching a filter, newest first, and the total count.
    async fn list_incidents(
        &self,
        account_id: &str,
        filter: &IncidentFilter,
    ) -> Result<(Vec<Incident>, i64)>;
    /// One incident.
    async fn get_incident(&self, account_id: &str, id: &str) -> Result<Incident>;
    /// The newest unresolved incident of a service with this key (or, when
    /// `key` is `None`, this message).
    async fn find_open_incident(
        &self,
        account_id: &str,
        service_id: &str,
        key: Option<&str>,
        message: Option<&str>,
    ) -> Result<Option<Incident>>;
    /// Changes an incident's message, description or details.
    async fn update_incident(
        &self,
        account_id: &str,
        id: &str,
        patch: &IncidentPatch,
        actor: &Actor,
        now: Millis,
    ) -> Result<Incident>;
    /// Records that an unresolved incident now stands for `alerts` alerts
    /// (a group of alerts that grew while it was open). When that is more
    /// than its details record (`details.alert_count`, 0 when absent), its
    /// details become `details` (with `alert_count` set to `alerts` when
    /// they are an object) and an `incident.update` event with the
    /// changeset `{"alert_count": [old, new]}` is written; the incident is
    /// returned. `None` when it is resolved or records as many already
    /// (nothing written). `NotFound` when the account has no such incident.
    async fn grow_incident(
        &self,
        account_id: &str,
        id: &str,
        alerts: i64,
        details: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Option<Incident>>;
    /// Applies a state-machine action (see `klaxon_core::incident::apply`).
    async fn act_on_incident(
        &self,
        account_id: &str,
        id: &str,
        action: IncidentAction,
        actor: &Actor,
        now: Millis,
    ) -> Result<ActOutcome>;
    /// Deletes an incident (its events stay in the audit log).
    async fn delete_incident(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// Audit events, newest first, and the total count.
    async fn list_events(
        &self,
        account_id: &str,
        filter: &EventFilter,
    ) -> Result<(Vec<Event>, i64)>;
}

/// On-call schedules, their layers and overrides.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates a schedule without layers.
    async fn create_schedule(
        &self,
        account_id: &str,
        name: &str,
        time_zone: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Schedule>;
    /// The account's schedules, by name.
    async fn list_schedules(&self, account_id: &str) -> Result<Vec<Schedule>>;
    /// One schedule.
    async fn get_schedule(&self, account_id: &str, id: &str) -> Result<Schedule>;
    /// Renames a schedule or changes its zone.
    #[allow(clippy::too_many_arguments)]
    async fn update_schedule(
        &self,
        account_id: &str,
        id: &str,
        name: &str,
        time_zone: &str,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Schedule>;
    /// Deletes a schedule; refused while an escalation rule names it.
    async fn delete_schedule(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// A schedule's layers, lowest first.
    async fn list_layers(&self, account_id: &str, schedule_id: &str) -> Result<Vec<Layer>>;
    /// Adds a layer on top.
    async fn create_layer(
        &self,
        account_id: &str,
        schedule_id: &str,
        input: &LayerInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<Layer>;
    /// Replaces a layer's rotation, users and restrictions.
    #[allow(clippy::too_many_arguments)]
    async fn update_layer(
        &self,
        account_id: &str,
        schedule_id: &str,
        id: &str,
        input: &LayerInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Layer>;
    /// Removes a layer and closes the gap in positions.
    async fn delete_layer(
        &self,
        account_id: &str,
        schedule_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// Overrides overlapping `[since, until)`, by start.
    async fn list_overrides(
        &self,
        account_id: &str,
        schedule_id: &str,
        since: Millis,
        until: Millis,
    ) -> Result<Vec<ScheduleOverride>>;
    /// Adds an override (the user must be in the account).
    #[allow(clippy::too_many_arguments)]
    async fn create_override(
        &self,
        account_id: &str,
        schedule_id: &str,
        user_id: &str,
        start_at: Millis,
        end_at: Millis,
        actor: &Actor,
        now: Millis,
    ) -> Result<ScheduleOverride>;
    /// Removes an override.
    async fn delete_override(
        &self,
        account_id: &str,
        schedule_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// A schedule with its layers and the overrides ending after `from`.
    async fn load_schedule(&self, account_id: &str, id: &str, from: Millis)
        -> Result<ScheduleData>;
}

/// Users' contacts and notification rules. Every method names the account
/// and the user: a user of another account, or a contact or rule of
/// another user, is `NotFound`.
#[async_trait]
pub trait ContactStore: Send + Sync {
    /// A user's contacts, oldest first.
    async fn list_contacts(&self, account_id: &str, user_id: &str) -> Result<Vec<Contact>>;
    /// One of a user's contacts.
    async fn get_contact(&self, account_id: &str, user_id: &str, id: &str) -> Result<Contact>;
    /// Adds a contact to a user.
    async fn create_contact(
        &self,
        account_id: &str,
        user_id: &str,
        input: &ContactInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<Contact>;
    /// Replaces a contact's type, label and address; `changes` is the
    /// audit changeset.
    #[allow(clippy::too_many_arguments)]
    async fn update_contact(
        &self,
        account_id: &str,
        user_id: &str,
        id: &str,
        input: &ContactInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Contact>;
    /// Removes a contact and the notification rules that use it (each
    /// rule's removal is an audit event of its own).
    async fn delete_contact(
        &self,
        account_id: &str,
        user_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// A user's notification rules, by start delay.
    async fn list_notification_rules(
        &self,
        account_id: &str,
        user_id: &str,
    ) -> Result<Vec<NotificationRule>>;
    /// One of a user's notification rules.
    async fn get_notification_rule(
        &self,
        account_id: &str,
        user_id: &str,
        id: &str,
    ) -> Result<NotificationRule>;
    /// Adds a notification rule; its contact must be the same user's.
    async fn create_notification_rule(
        &self,
        account_id: &str,
        user_id: &str,
        input: &NotificationRuleInput,
        actor: &Actor,
        now: Millis,
    ) -> Result<NotificationRule>;
    /// Replaces a rule's contact and delay.
    #[allow(clippy::too_many_arguments)]
    async fn update_notification_rule(
        &self,
        account_id: &str,
        user_id: &str,
        id: &str,
        input: &NotificationRuleInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<NotificationRule>;
    /// Removes a notification rule.
    async fn delete_notification_rule(
        &self,
        account_id: &str,
        user_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
}

/// Durable timers: escalation, acknowledge timeouts, auto-resolve.
///
/// Timers are rows written in the same transaction as the change that
/// arms them. Firing one applies its effect and deletes it in one
/// transaction, so a crash at any point fires it later or not at all, never
/// twice; with several processes on PostgreSQL each due timer is claimed by
/// exactly one (`FOR UPDATE SKIP LOCKED`).
#[async_trait]
pub trait TimerStore: Send + Sync {
    /// Fires up to `limit` timers due at `now`, oldest first.
    async fn fire_due_timers(&self, now: Millis, limit: i64) -> Result<Vec<FiredTimer>>;
    /// When the earliest pending timer comes due.
    async fn next_timer_due(&self) -> Result<Option<Millis>>;
    /// Resolves when a timer may have been armed since the last call, by
    /// this process or (PostgreSQL) another one sharing the database.
    async fn timers_changed(&self);
    /// An incident's pending timers, soonest first.
    async fn list_timers(&self, account_id: &str, incident_id: &str) -> Result<Vec<Timer>>;
}

/// The notification outbox: senders claim due messages with a lease and
/// report what became of them.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` messages due at `now` (and sends whose lease
    /// ran out) for `owner` until `lease_until`. Pages of incidents that
    /// are no longer triggered are cancelled instead.
    async fn claim_messages(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> Result<Vec<OutgoingMessage>>;

    /// Records sends' outcomes, in one transaction; returns the ids of the
    /// messages `owner` no longer held (their lease ran out and another
    /// sender took them), whose outcome was not recorded.
    async fn finish_messages(
        &self,
        owner: &str,
        outcomes: &[(String, SendOutcome)],
        now: Millis,
    ) -> Result<Vec<String>>;

    /// When the next message comes due (or a lease runs out).
    async fn next_message_due(&self) -> Result<Option<Millis>>;

    /// Returns when messages may have been queued.
    async fn messages_changed(&self);

    /// The messages about an incident or to a user, in the account.
    async fn list_notifications(
        &self,
        account_id: &str,
        of: NotificationsOf<'_>,
    ) -> Result<Vec<Notification>>;
}

/// Server secrets and single-use links.
#[async_trait]
pub trait LinkStore: Send + Sync {
    /// The secret named `name`: `fresh` is stored if there is none yet,
    /// and whatever is stored is returned, so every process sharing the
    /// database gets the same one.
    async fn secret(&self, name: &str, fresh: &str, now: Millis) -> Result<String>;
    /// Marks link `id` used; `true` the first time only. Rows of links
    /// past their expiry are swept meanwhile (an expired link is refused
    /// before it gets here).
    async fn use_link(&self, id: &str, expires_at: Millis, now: Millis) -> Result<bool>;
}

/// Answers from the channels pages go out on (SMS replies, key presses
/// in a call, providers' delivery reports). These look across accounts:
/// the caller has authenticated the provider's request, which names a
/// phone number, a message or the provider's id rather than an account.
#[async_trait]
pub trait AnswerStore: Send + Sync {
    /// The users, in every account, with a contact of one of `kinds` at
    /// `address` (stored normalised, e.g. E.164), once each, in the order
    /// their first such contact was added.
    async fn users_by_contact_address(
        &self,
        address: &str,
        kinds: &[klaxon_core::contact::ContactType],
    ) -> Result<Vec<ContactOwner>>;

    /// The unresolved incidents assigned to a user now, oldest first.
    async fn open_incidents_assigned_to(
        &self,
        account_id: &str,
        user_id: &str,
    ) -> Result<Vec<Incident>>;

    /// One message of the outbox, in any account, with its incident as it
    /// is now (what a phone call reads out); `None` when there is none.
    async fn outgoing_message(&self, id: &str) -> Result<Option<OutgoingMessage>>;

    /// Records a provider's report on the messages it took under
    /// `provider_id` (an SMS bundle is several): `sent` becomes `delivered`
    /// or `failed`. A message in any other state is left as it is, so a
    /// late or repeated report changes nothing. Returns how many changed.
    async fn report_delivery(
        &self,
        provider_id: &str,
        report: &DeliveryReport,
        now: Millis,
    ) -> Result<u64>;
}

/// The whole store.
#[async_trait]
pub trait Store:
    AccountStore
    + PolicyStore
    + ServiceStore
    + IncidentStore
    + ScheduleStore
    + ContactStore
    + TimerStore
    + OutboxStore
    + LinkStore
    + AnswerStore
    + HeartbeatStore
    + EventFeedStore
    + MetricsStore
    + InvitationStore
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Checks the database answers.
    async fn ping(&self) -> Result<()>;
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;
    /// Closes the connection pools.
    async fn close(&self);
}

/// Opens the store a database URL names: `sqlite://path` (created if
/// missing) or `postgres://…`. Does not migrate.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::Invalid {
            field: "database",
            message: "must start with sqlite:// or postgres://".into(),
        })
    }
}

/// Takes what makes this process the only server of its database: for
/// SQLite an exclusive lock beside the file, held until the guard drops
/// (see [`sqlite::lock_for_serving`]); PostgreSQL is shared by design and
/// needs none. Admin commands do not call this and work beside a server.
pub fn lock_for_serving(url: &str) -> Result<Option<sqlite::ServeLock>> {
    if url.starts_with("sqlite:") {
        sqlite::lock_for_serving(url).map(Some)
    } else {
        Ok(None)
    }
}

/// Helpers shared by both backends that involve no SQL.
pub(crate) mod util {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

    use klaxon_core::id::{ordered_floor, random_hex, PublicId};

    /// Whether this process hands out ids in time order (see [`order_ids`]).
    static ORDERED: AtomicBool = AtomicBool::new(false);
    /// The last ordered id number handed out, or the floor to start above.
    static LAST_ORDERED: AtomicU64 = AtomicU64::new(0);

    /// A fresh public id as a `String`: in time order once [`order_ids`]
    /// was called, else at random.
    pub fn new_id() -> String {
        ORDERED
            .load(Relaxed)
            .then(next_ordered)
            .flatten()
            .unwrap_or_else(|| PublicId::generate(&mut rand::rng()))
            .to_string()
    }

    /// The next ordered id: the first number of the current second, or the
    /// one after the last handed out if that is later (a burst of more
    /// than 238,328 ids in a second borrows from the next one). `None`
    /// once the numbers run out, in 2054.
    fn next_ordered() -> Option<PublicId> {
        let floor = ordered_floor(unix_secs());
        let take = |last: u64| last.max(floor.saturating_sub(1)) + 1;
        let last = LAST_ORDERED
            .fetch_update(Relaxed, Relaxed, |last| Some(take(last)))
            .unwrap_or_else(|last| last);
        PublicId::from_number(take(last))
    }

    fn unix_secs() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Hands out ids in time order from the next second on (a server of
    /// the same database that ran before may have used this one). Only
    /// sound in a process that alone writes its database, with other
    /// writers (admin commands) drawing at random: ordered ids from two
    /// processes would collide. `sqlite::lock_for_serving` calls it.
    pub fn order_ids() {
        raise_id_floor(ordered_floor(unix_secs() + 1).saturating_sub(1));
        ORDERED.store(true, Relaxed);
    }

    /// Makes ordered ids start above `number` (the newest id a previous
    /// server wrote, in case the clock has since gone back).
    pub fn raise_id_floor(number: u64) {
        LAST_ORDERED.fetch_max(number, Relaxed);
    }

    /// A generated incident key: 32 lower-case hex characters.
    pub fn new_incident_key() -> String {
        random_hex(&mut rand::rng(), 32)
    }

    /// Checks that `ids` names every rule exactly once (a reorder request).
    pub fn check_permutation(rules: &[crate::PolicyRule], ids: &[String]) -> crate::Result<()> {
        let mut want: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        let mut got: Vec<&str> = ids.iter().map(String::as_str).collect();
        want.sort_unstable();
        got.sort_unstable();
        if want == got {
            Ok(())
        } else {
            Err(crate::StoreError::Invalid {
                field: "rule_ids",
                message: "must list every rule of the policy exactly once".into(),
            })
        }
    }

    /// The error for an assignment type the store cannot resolve.
    pub fn unknown_assignment() -> crate::StoreError {
        crate::StoreError::Invalid {
            field: "assignment",
            message: "type must be user or schedule".into(),
        }
    }

    /// The table an assignment type names.
    pub fn assignment_table(kind: &str) -> crate::Result<&'static str> {
        match kind {
            "user" => Ok("users"),
            "schedule" => Ok("schedules"),
            _ => Err(unknown_assignment()),
        }
    }

    /// The audit changeset of a new layer.
    pub fn layer_changeset(layer: &crate::Layer) -> serde_json::Value {
        serde_json::json!({
            "layer_id": layer.id, "position": layer.position, "rule": layer.rotation,
            "count": layer.count, "start_at": layer.start_at, "users": layer.users.0,
            "restrictions": layer.restrictions.0,
        })
    }

    /// Refuses to delete a user who is in a layer's rotation (the layers
    /// of the account, loaded by the caller).
    pub fn refuse_if_in_rotation(layers: &[crate::Layer], user_id: &str) -> crate::Result<()> {
        match layers
            .iter()
            .find(|l| l.users.0.iter().any(|u| u == user_id))
        {
            Some(l) => Err(crate::StoreError::Conflict(format!(
                "the user is in the rotation of schedule {}; remove them from its layer first",
                l.schedule_id
            ))),
            None => Ok(()),
        }
    }

    /// The error for a trigger on a service in maintenance.
    pub fn service_disabled() -> crate::StoreError {
        crate::StoreError::Conflict(
            "the service is disabled (maintenance); enable it to open incidents".into(),
        )
    }

    /// Applies a text patch to an incident: the audit changeset
    /// (`{field: [old, new]}`, empty when nothing changes) and the new
    /// message, description and details.
    pub fn apply_patch(
        before: &crate::Incident,
        patch: &crate::IncidentPatch,
    ) -> (
        serde_json::Map<String, serde_json::Value>,
        String,
        Option<String>,
        Option<serde_json::Value>,
    ) {
        use serde_json::json;
        let mut changes = serde_json::Map::new();
        let message = patch
            .message
            .clone()
            .unwrap_or_else(|| before.message.clone());
        if message != before.message {
            changes.insert("message".into(), json!([before.message, message]));
        }
        let description = match &patch.description {
            Some(d) => d.clone(),
            None => before.description.clone(),
        };
        if description != before.description {
            changes.insert(
                "description".into(),
                json!([before.description, description]),
            );
        }
        let old_details = before.details.as_ref().map(|d| d.0.clone());
        let details = match &patch.details {
            Some(d) => d.clone(),
            None => old_details.clone(),
        };
        if details != old_details {
            changes.insert("details".into(), json!([old_details, details]));
        }
        (changes, message, description, details)
    }

    /// The audit changeset of a state change: `{field: [old, new]}` for each
    /// field that moved.
    pub fn transition_changeset(
        before: &crate::Incident,
        to: klaxon_core::IncidentState,
        user_id: &Option<String>,
        rule_id: &Option<String>,
        loop_count: i64,
    ) -> serde_json::Value {
        use serde_json::json;
        let mut changes = serde_json::Map::new();
        if before.state != to.as_str() {
            changes.insert("state".into(), json!([before.state, to.as_str()]));
        }
        if &before.current_user_id != user_id {
            changes.insert(
                "current_user_id".into(),
                json!([before.current_user_id, user_id]),
            );
        }
        if &before.current_policy_rule_id != rule_id {
            changes.insert(
                "current_policy_rule_id".into(),
                json!([before.current_policy_rule_id, rule_id]),
            );
        }
        if before.escalation_loop_count != loop_count {
            changes.insert(
                "escalation_loop_count".into(),
                json!([before.escalation_loop_count, loop_count]),
            );
        }
        serde_json::Value::Object(changes)
    }

    /// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
    pub fn like_pattern(q: &str) -> String {
        let mut out = String::with_capacity(q.len() + 2);
        out.push('%');
        for c in q.chars() {
            if matches!(c, '%' | '_' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('%');
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ordered_ids_increase_and_start_above_the_floor() {
            order_ids();
            let floor = ordered_floor(unix_secs() + 3600);
            raise_id_floor(floor);
            let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
            let first = PublicId::parse(&ids[0]).expect("an id").number();
            assert!(first > floor, "{first} should be above {floor}");
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order");
        }
    }
}
