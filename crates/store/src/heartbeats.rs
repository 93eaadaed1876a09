//! Heartbeats: a service expects a ping at least every interval; a missed
//! one opens an incident through the ordinary trigger path, and the next
//! ping resolves it. The rows and the [`HeartbeatStore`] trait; the one
//! implementation for every backend is `sql/heartbeats.rs`.

use async_trait::async_trait;
use klaxon_core::time::{Millis, MINUTE_MS};
use serde_json::Value;

use crate::{Actor, Result};

/// A heartbeat of a service.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Public id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The service whose incident a missed ping opens.
    pub service_id: String,
    /// Unique per service; the incident says `Heartbeat 'name' expired`.
    pub name: String,
    /// Longest silence allowed, in minutes.
    pub interval_minutes: i64,
    /// The secret of the ping URL.
    pub token: String,
    /// `up`, or `down` once it expired without a ping since.
    pub state: String,
    /// The last ping, if any.
    pub last_ping_at: Option<Millis>,
    /// When the engine next looks at it: the expiry while up, the next
    /// attempt to open the incident while down.
    pub due_at: Millis,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change of name or interval.
    pub updated_at: Millis,
}

impl Heartbeat {
    /// When it expires, or expired: the last ping (or the creation, before
    /// any ping) plus the interval.
    pub fn expires_at(&self) -> Millis {
        self.last_ping_at
            .unwrap_or(self.created_at)
            .saturating_add(self.interval_minutes.saturating_mul(MINUTE_MS))
    }

    /// The deduplication key of the incident its expiry opens.
    pub fn incident_key(id: &str) -> String {
        format!("heartbeat:{id}")
    }
}

/// Values for a new or changed heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatInput {
    /// Name, unique per service.
    pub name: String,
    /// Minutes, 1 to 43,200 (checked by the caller).
    pub interval_minutes: i64,
}

/// What a ping did.
#[derive(Debug, Clone)]
pub struct Pinged {
    /// The heartbeat pinged.
    pub heartbeat_id: String,
    /// When it now expires.
    pub expires_at: Millis,
    /// It was down: the incident its expiry opened, now resolved (if it
    /// was still open).
    pub resolved: Option<String>,
}

/// What firing an expired heartbeat did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// A new incident (its id).
    Opened(String),
    /// The incident of this expiry was still open (its id): nothing new.
    AlreadyOpen(String),
    /// The trigger was refused (a disabled service): nobody was paged. The
    /// next attempt is one interval later.
    Refused(String),
    /// The trigger failed; tried again one interval later (or, when the
    /// database was unreachable, after the claim lapses).
    Failed(String),
}

/// An expired heartbeat the engine fired.
#[derive(Debug, Clone)]
pub struct FiredHeartbeat {
    /// The heartbeat.
    pub heartbeat_id: String,
    /// Its account.
    pub account_id: String,
    /// Its service.
    pub service_id: String,
    /// When it was due.
    pub due_at: Millis,
    /// When it fired.
    pub fired_at: Millis,
    /// What came of it.
    pub outcome: HeartbeatOutcome,
}

/// Heartbeats of services, their pings and their expiry.
///
/// A heartbeat's expiry is a durable timer: its row's `due_at`. Firing
/// claims due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and moves
/// `due_at` past a short lease before triggering, so among several
/// processes one fires each expiry; a process that dies mid-way leaves the
/// lease to lapse and another fires it again, which the incident's fixed
/// key deduplicates.
#[async_trait]
pub trait HeartbeatStore: Send + Sync {
    /// A service's heartbeats, by name; `NotFound` for a service not in
    /// the account.
    async fn list_heartbeats(&self, account_id: &str, service_id: &str) -> Result<Vec<Heartbeat>>;
    /// One heartbeat of a service.
    async fn get_heartbeat(
        &self,
        account_id: &str,
        service_id: &str,
        id: &str,
    ) -> Result<Heartbeat>;
    /// Adds a heartbeat to a service (up, expiring one interval from
    /// `now`) with its ping token; a name in use on the service is
    /// `Taken("name")`.
    #[allow(clippy::too_many_arguments)]
    async fn create_heartbeat(
        &self,
        account_id: &str,
        service_id: &str,
        input: &HeartbeatInput,
        token: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Heartbeat>;
    /// Renames a heartbeat or changes its interval (an up heartbeat then
    /// expires one new interval after its last ping); `changes` is the
    /// audit changeset.
    #[allow(clippy::too_many_arguments)]
    async fn update_heartbeat(
        &self,
        account_id: &str,
        service_id: &str,
        id: &str,
        input: &HeartbeatInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Heartbeat>;
    /// Removes a heartbeat (an incident it opened stays as it is).
    async fn delete_heartbeat(
        &self,
        account_id: &str,
        service_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()>;
    /// Records a ping by token (any account): the heartbeat expires one
    /// interval from `now`. One UPDATE while it is up; a down heartbeat
    /// comes back up and its expiry's incident is resolved, with the
    /// service as actor. `None` for an unknown token.
    async fn ping_heartbeat(&self, token: &str, now: Millis) -> Result<Option<Pinged>>;
    /// Fires up to `limit` heartbeats due at `now`, oldest first: each
    /// triggers its incident (deduplicated by its fixed key) and is looked
    /// at again one interval later.
    async fn fire_due_heartbeats(&self, now: Millis, limit: i64) -> Result<Vec<FiredHeartbeat>>;
    /// When the earliest heartbeat comes due.
    async fn next_heartbeat_due(&self) -> Result<Option<Millis>>;
}
