//! Rows as the store returns them. Instants are milliseconds since the Unix
//! epoch; ids are the 8-character public ids.

use klaxon_core::time::Millis;
use serde_json::Value;
use sqlx::types::Json;

/// A tenant.
#[derive(Debug, Clone)]
pub struct Account {
    /// Public id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// A person who can sign in and be paged.
#[derive(Debug, Clone)]
pub struct User {
    /// Public id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Display name.
    pub name: String,
    /// Unique, lower-cased sign-in address.
    pub email: String,
    /// `admin`, `responder` or `observer`.
    pub role: String,
    /// IANA zone for rendering times to this user.
    pub time_zone: String,
    /// Argon2 PHC string; `None` when the user cannot sign in with a password.
    pub password_hash: Option<String>,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Values for a new or changed user.
#[derive(Debug, Clone)]
pub struct UserInput {
    /// Display name.
    pub name: String,
    /// Normalised email address.
    pub email: String,
    /// Role name.
    pub role: String,
    /// IANA zone.
    pub time_zone: String,
    /// Argon2 PHC string.
    pub password_hash: Option<String>,
}

/// An API token's metadata (the secret itself is never stored).
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// Public id.
    pub id: String,
    /// Owning user.
    pub user_id: String,
    /// Label.
    pub name: String,
    /// Creation instant.
    pub created_at: Millis,
    /// Last time the token authenticated a request (updated at most once a minute).
    pub last_used_at: Option<Millis>,
    /// What it may do: one of [`token_kind`].
    pub kind: String,
    /// When it stops working (`None`: never). A session's moves forward as
    /// it is used.
    pub expires_at: Option<Millis>,
    /// The schedule a feed token reads.
    pub schedule_id: Option<String>,
}

/// What a token may do (`api_tokens.kind`).
pub mod token_kind {
    /// `POST /tokens` (and the first token of an account): the whole API.
    pub const API: &str = "api";
    /// `POST /sessions`: the whole API, expiring when left unused.
    pub const SESSION: &str = "session";
    /// A calendar feed token: one schedule's `.ics` feed, nothing else.
    pub const FEED: &str = "feed";
}

/// Values for a new API or session token.
#[derive(Debug, Clone)]
pub struct TokenInput {
    /// Label.
    pub name: String,
    /// [`token_kind::API`] or [`token_kind::SESSION`].
    pub kind: String,
    /// When it stops working (`None`: never).
    pub expires_at: Option<Millis>,
}

/// Which of a user's tokens a change to the user revokes, in the same
/// transaction.
#[derive(Debug, Clone, Copy)]
pub enum Revoke<'a> {
    /// None.
    Nothing,
    /// Every one but this token id (the one the request came with).
    AllBut(&'a str),
    /// Every one.
    All,
}

/// Who is making a request, resolved from an API token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The caller's account; every query is scoped by it.
    pub account_id: String,
    /// The caller.
    pub user_id: String,
    /// The caller's role name.
    pub role: String,
    /// The token used.
    pub token_id: String,
    /// When the token was last seen, to throttle `last_used_at` writes.
    pub last_used_at: Option<Millis>,
    /// The token's kind: one of [`token_kind`].
    pub kind: String,
    /// When the token stops working (`None`: never).
    pub expires_at: Option<Millis>,
    /// The schedule a feed token reads.
    pub schedule_id: Option<String>,
}

/// A service: something that breaks, with an integration key monitoring uses.
#[derive(Debug, Clone)]
pub struct Service {
    /// Public id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Unique per account.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Escalation policy.
    pub policy_id: String,
    /// Minutes after which an acknowledged incident triggers again.
    pub acknowledge_timeout: Option<i64>,
    /// Minutes after which an unresolved incident is resolved by the system.
    pub auto_resolve_timeout: Option<i64>,
    /// `enabled` or `disabled`.
    pub state: String,
    /// Secret monitoring systems authenticate with.
    pub integration_key: String,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
    /// Incidents in state triggered.
    pub triggered_count: i64,
    /// Incidents in state acknowledged.
    pub acknowledged_count: i64,
    /// Incidents in state resolved.
    pub resolved_count: i64,
}

/// What an integration key resolves to: just enough to authorise and
/// route a monitoring system's request (no incident counts: this is on the
/// hot path of every trigger).
#[derive(Debug, Clone)]
pub struct IntegrationTarget {
    /// The service.
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// `enabled` or `disabled`.
    pub state: String,
}

/// Values for a new or changed service.
#[derive(Debug, Clone)]
pub struct ServiceInput {
    /// Unique per account.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Escalation policy (must exist in the account).
    pub policy_id: String,
    /// Minutes, or `None` for off.
    pub acknowledge_timeout: Option<i64>,
    /// Minutes, or `None` for off.
    pub auto_resolve_timeout: Option<i64>,
}

/// An escalation policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Public id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Unique per account.
    pub name: String,
    /// How many times the rule list is walked.
    pub loop_limit: i64,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// One step of a policy.
#[derive(Debug, Clone)]
pub struct PolicyRule {
    /// Public id.
    pub id: String,
    /// Owning policy.
    pub policy_id: String,
    /// 0-based order within the policy.
    pub position: i64,
    /// Minutes before moving on to the next rule.
    pub escalation_timeout: i64,
    /// `user` or `schedule`.
    pub assignment_type: String,
    /// The user or schedule id.
    pub assignee_id: String,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Values for a new or changed rule.
#[derive(Debug, Clone)]
pub struct RuleInput {
    /// Minutes before moving on.
    pub escalation_timeout: i64,
    /// `user` or `schedule`.
    pub assignment_type: String,
    /// The user or schedule id (must exist in the account).
    pub assignee_id: String,
}

/// A place a user can be paged: an email address, a phone number (SMS or
/// voice) or a URL (webhook, Slack, ntfy).
#[derive(Debug, Clone)]
pub struct Contact {
    /// Public id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The user it belongs to.
    pub user_id: String,
    /// `email`, `sms`, `phone`, `webhook`, `slack` or `ntfy` (column `type`).
    pub kind: String,
    /// The user's name for it ("mobile").
    pub label: String,
    /// Normalised for its type (see `klaxon_core::contact`).
    pub address: String,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Values for a new or changed contact. The address has been checked
/// against the type; nothing else can be built.
#[derive(Debug, Clone)]
pub struct ContactInput {
    /// Label.
    pub label: String,
    /// Type and normalised address.
    pub address: klaxon_core::contact::ContactAddress,
}

/// When to use which of a user's contacts once they are assigned an
/// incident.
#[derive(Debug, Clone)]
pub struct NotificationRule {
    /// Public id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The user it belongs to.
    pub user_id: String,
    /// One of the same user's contacts.
    pub contact_id: String,
    /// Minutes after the assignment.
    pub start_delay: i64,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Values for a new or changed notification rule.
#[derive(Debug, Clone)]
pub struct NotificationRuleInput {
    /// One of the same user's contacts (else `Invalid { field: "contact_id" }`).
    pub contact_id: String,
    /// Minutes after the assignment.
    pub start_delay: klaxon_core::contact::StartDelay,
}

/// An incident, with the policy id of its current rule for `_links`.
#[derive(Debug, Clone)]
pub struct Incident {
    /// Public id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The service it belongs to.
    pub service_id: String,
    /// `triggered`, `acknowledged` or `resolved`.
    pub state: String,
    /// Short text, required.
    pub message: String,
    /// Longer text.
    pub description: Option<String>,
    /// Arbitrary JSON (object or string) from the monitoring system.
    pub details: Option<Json<Value>>,
    /// Deduplication key.
    pub key: String,
    /// Who is assigned now.
    pub current_user_id: Option<String>,
    /// Which rule of the policy assigned them.
    pub current_policy_rule_id: Option<String>,
    /// The policy the current rule belongs to (joined, for links).
    pub current_policy_id: Option<String>,
    /// Which walk of the rule list (1-based).
    pub escalation_loop_count: i64,
    /// When it was opened.
    pub triggered_at: Millis,
    /// When it was last acknowledged, if it is acknowledged.
    pub acknowledged_at: Option<Millis>,
    /// When it was resolved.
    pub resolved_at: Option<Millis>,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// A new incident.
#[derive(Debug, Clone)]
pub struct NewIncident {
    /// Short text.
    pub message: String,
    /// Longer text.
    pub description: Option<String>,
    /// Arbitrary JSON.
    pub details: Option<Value>,
    /// Explicit deduplication key; `None` generates one.
    pub key: Option<String>,
}

/// Changed text fields of an incident (`None` leaves a field as it is).
#[derive(Debug, Clone, Default)]
pub struct IncidentPatch {
    /// New message.
    pub message: Option<String>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// New details (`Some(None)` clears them).
    pub details: Option<Option<Value>>,
}

/// Filters and page for listing incidents.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only these states (empty: all).
    pub states: Vec<String>,
    /// Only this service.
    pub service_id: Option<String>,
    /// Only incidents assigned to this user.
    pub current_user_id: Option<String>,
    /// Triggered at or after.
    pub since: Option<Millis>,
    /// Triggered before.
    pub until: Option<Millis>,
    /// Substring of the message (case-insensitive for ASCII).
    pub q: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// An audit event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Public id.
    pub id: String,
    /// Like `incident.acknowledge`.
    pub action: String,
    /// `incident`, `service`, …
    pub source_type: String,
    /// Public id of the source.
    pub source_id: String,
    /// `user`, `service` or `system`.
    pub actor_type: String,
    /// Public id of the actor (none for the system).
    pub actor_id: Option<String>,
    /// What changed: `{field: [old, new]}` or the created object.
    pub changeset: Json<Value>,
    /// When.
    pub created_at: Millis,
}

/// Filters and page for listing events.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events of this source type and id.
    pub source: Option<(String, String)>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// Who did something, recorded on every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A person, by user id.
    User(String),
    /// A monitoring system, by service id.
    Service(String),
    /// Klaxon itself (timers).
    System,
}

impl Actor {
    /// `(actor_type, actor_id)` as stored.
    pub fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Actor::User(id) => ("user", Some(id)),
            Actor::Service(id) => ("service", Some(id)),
            Actor::System => ("system", None),
        }
    }
}

/// What a trigger produced.
#[derive(Debug, Clone)]
// Returned once per trigger and matched at once: boxing the incident would
// only add an allocation to the hot path.
#[allow(clippy::large_enum_variant)]
pub enum TriggerOutcome {
    /// A new incident.
    Created(Incident),
    /// An unresolved incident with the same key (or, without a key, the same
    /// message) already exists: its id. Nothing was written.
    Deduplicated(String),
}

/// What an action on an incident produced.
#[derive(Debug, Clone)]
pub enum ActOutcome {
    /// The incident changed.
    Changed(Incident),
    /// The incident already was where the action would put it.
    Unchanged(Incident),
}

/// A timer the engine has fired.
#[derive(Debug, Clone)]
pub struct FiredTimer {
    /// `escalate`, `acknowledge_timeout` or `auto_resolve`.
    pub kind: String,
    /// The incident it belonged to.
    pub incident_id: String,
    /// When it was due.
    pub due_at: Millis,
    /// When it fired (the `now` it was processed with).
    pub fired_at: Millis,
    /// Whether it changed the incident (a timer whose condition no longer
    /// held is dropped without effect).
    pub acted: bool,
}

/// A pending timer, as listed for an incident.
#[derive(Debug, Clone)]
pub struct Timer {
    /// Public id.
    pub id: String,
    /// The incident.
    pub incident_id: String,
    /// `escalate`, `acknowledge_timeout` or `auto_resolve`.
    pub kind: String,
    /// When it comes due (for a timer that failed, its next try).
    pub due_at: Millis,
    /// How many times processing it has failed (0 for a healthy timer).
    pub attempts: i64,
}

/// An on-call schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Public id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Unique per account.
    pub name: String,
    /// IANA zone its layers' wall-clock times are in.
    pub time_zone: String,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// A weekly (or other) time window a layer is limited to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestrictionSpec {
    /// Weekdays the window starts on: `mon` … `sun`.
    pub days: Vec<String>,
    /// Local start, `HH:MM`.
    pub start: String,
    /// Local end, `HH:MM` (at or before `start`: the next day).
    pub end: String,
}

/// One rotation layer of a schedule.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Public id.
    pub id: String,
    /// Owning schedule.
    pub schedule_id: String,
    /// 0-based; higher layers cover lower ones.
    pub position: i64,
    /// `hourly`, `daily`, `weekly`, `monthly` or `yearly`.
    pub rotation: String,
    /// Units per turn.
    pub count: i64,
    /// First handoff, wall-clock in the schedule's zone (`2026-01-05T09:00:00`).
    pub start_at: String,
    /// User ids in rotation order.
    pub users: Json<Vec<String>>,
    /// Windows the layer is limited to (empty: always).
    pub restrictions: Json<Vec<RestrictionSpec>>,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Values for a new or changed layer (validated by the caller).
#[derive(Debug, Clone)]
pub struct LayerInput {
    /// Rotation unit name.
    pub rotation: String,
    /// Units per turn.
    pub count: i64,
    /// First handoff (civil date-time text).
    pub start_at: String,
    /// User ids (must be in the account).
    pub users: Vec<String>,
    /// Windows.
    pub restrictions: Vec<RestrictionSpec>,
}

/// A temporary replacement covering every layer.
#[derive(Debug, Clone)]
pub struct ScheduleOverride {
    /// Public id.
    pub id: String,
    /// Owning schedule.
    pub schedule_id: String,
    /// Who is on call instead.
    pub user_id: String,
    /// Start instant.
    pub start_at: Millis,
    /// End instant (exclusive).
    pub end_at: Millis,
    /// Creation instant.
    pub created_at: Millis,
}

/// A schedule with everything needed to say who is on call.
#[derive(Debug, Clone)]
pub struct ScheduleData {
    /// The schedule.
    pub schedule: Schedule,
    /// Its layers, lowest first.
    pub layers: Vec<Layer>,
    /// Its overrides (those ending after the instant it was loaded for).
    pub overrides: Vec<ScheduleOverride>,
}

impl ScheduleData {
    /// The pure model `klaxon_core::schedule` computes with. Layers whose
    /// stored values do not parse (they were validated on the way in) are
    /// left out rather than failing every lookup.
    pub fn to_core(&self) -> klaxon_core::schedule::Schedule {
        use klaxon_core::schedule as s;
        let time_zone =
            jiff::tz::TimeZone::get(&self.schedule.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        let layers = self
            .layers
            .iter()
            .filter_map(|l| {
                Some(s::Layer {
                    rotation: s::Rotation::parse(&l.rotation)?,
                    count: u32::try_from(l.count).ok()?,
                    start_at: l.start_at.parse().ok()?,
                    users: l.users.0.clone(),
                    restrictions: l
                        .restrictions
                        .0
                        .iter()
                        .map(RestrictionSpec::to_core)
                        .collect::<Option<Vec<_>>>()?,
                })
            })
            .collect();
        let overrides = self
            .overrides
            .iter()
            .map(|o| s::Override {
                user: o.user_id.clone(),
                start: o.start_at,
                end: o.end_at,
            })
            .collect();
        s::Schedule {
            time_zone,
            layers,
            overrides,
        }
    }
}

impl RestrictionSpec {
    /// Parses into the core type; `None` if a day or time is malformed.
    pub fn to_core(&self) -> Option<klaxon_core::schedule::Restriction> {
        let mut days = [false; 7];
        for d in &self.days {
            days[klaxon_core::schedule::parse_weekday(d)?] = true;
        }
        Some(klaxon_core::schedule::Restriction {
            days,
            start: parse_hhmm(&self.start)?,
            end: parse_hhmm(&self.end)?,
        })
    }
}

/// Parses `HH:MM` (or `HH:MM:SS`) into a wall-clock time.
pub fn parse_hhmm(s: &str) -> Option<jiff::civil::Time> {
    let mut parts = s.split(':');
    let h: i8 = parts.next()?.parse().ok()?;
    let m: i8 = parts.next()?.parse().ok()?;
    let sec: i8 = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    jiff::civil::Time::new(h, m, sec, 0).ok()
}

/// A message of the notification outbox: who was (or is to be) paged
/// about which incident, how, and what became of it.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Public id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The incident it is about.
    pub incident_id: String,
    /// The user paged.
    pub user_id: String,
    /// The contact used; `None` for the user's sign-in address (a user
    /// without contacts), or a contact deleted since.
    pub contact_id: Option<String>,
    /// `assigned`, `escalated` or `retriggered`.
    pub reason: String,
    /// `email`, `sms`, `phone`, `webhook`, `slack` or `ntfy`.
    pub channel: String,
    /// Where it goes.
    pub address: String,
    /// `queued`, `sending`, `sent`, `delivered`, `failed` or `cancelled`.
    pub status: String,
    /// Sending attempts so far.
    pub attempts: i64,
    /// When the page was decided.
    pub page_at: Millis,
    /// When it is (or was) due.
    pub due_at: Millis,
    /// The provider's id for it (a Twilio SID, a message id).
    pub provider_id: Option<String>,
    /// The last error.
    pub error: Option<String>,
    /// When the provider accepted it.
    pub sent_at: Option<Millis>,
    /// Creation instant.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Whose notifications to list.
#[derive(Debug, Clone, Copy)]
pub enum NotificationsOf<'a> {
    /// Every message about one incident, oldest first.
    Incident(&'a str),
    /// The latest 500 messages to one user, newest first.
    User(&'a str),
}

/// A message claimed for sending, with what its text needs.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// The outbox row.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The incident.
    pub incident_id: String,
    /// The user paged.
    pub user_id: String,
    /// The contact used (`None`: the user's sign-in address).
    pub contact_id: Option<String>,
    /// Why: a page (`assigned`, `escalated`, `retriggered`) or a status
    /// update (`acknowledged`, `resolved`, `escalated_away`).
    pub reason: String,
    /// How.
    pub channel: String,
    /// Where.
    pub address: String,
    /// Attempts, this one included.
    pub attempts: i64,
    /// When the page was decided.
    pub page_at: Millis,
    /// The incident's service's name.
    pub service_name: String,
    /// The incident's message.
    pub message: String,
    /// The incident's description.
    pub description: Option<String>,
    /// The incident's details.
    pub details: Option<Json<Value>>,
    /// The incident's state when the message was claimed.
    pub incident_state: String,
    /// Other messages sent in the same text (an SMS bundle): their rows
    /// share this one's outcome. Empty for everything but SMS.
    pub bundle: Vec<OutgoingMessage>,
}

impl OutgoingMessage {
    /// Whether this is a status update rather than a page.
    pub fn is_status_update(&self) -> bool {
        !is_page_reason(&self.reason)
    }
}

/// Whether an outbox `reason` is a page (`assigned`, `escalated`,
/// `retriggered`) rather than a status update.
pub fn is_page_reason(reason: &str) -> bool {
    matches!(reason, "assigned" | "escalated" | "retriggered")
}

/// What became of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider took it (`delivered`: and it is known to have arrived).
    Sent {
        /// The provider's id for it.
        provider_id: Option<String>,
        /// Delivery is confirmed already.
        delivered: bool,
    },
    /// A transient failure: try again at `at`.
    Retry {
        /// What went wrong.
        error: String,
        /// When to try again.
        at: Millis,
    },
    /// A permanent failure: recorded, not retried.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// A user who can be reached at a contact address (who sent an SMS reply
/// from that number), in one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactOwner {
    /// The user's account.
    pub account_id: String,
    /// The user.
    pub user_id: String,
    /// The user's role (`admin`, `responder` or `observer`).
    pub role: String,
}

/// What a provider reported, after taking a message, about its delivery
/// (Twilio's status callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryReport {
    /// It arrived (an SMS delivered, a call answered).
    Delivered,
    /// It did not (undelivered, busy, no answer…).
    Failed {
        /// What the provider said.
        error: String,
    },
}
