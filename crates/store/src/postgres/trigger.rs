//! Opening incidents, `PUT /trigger` (PostgreSQL).
//!
//! A new incident costs five round trips: one read of everything the
//! decision needs (the service's state, an open incident with the same key
//! or message, the policy and its rules), `BEGIN`, the advisory lock, one
//! statement that checks again and writes the incident, its timers, its
//! audit event and the NOTIFY, and `COMMIT`. A repeated trigger costs the
//! read alone.
//!
//! Exactness does not rest on the first read: after the advisory lock the
//! write statement runs with a fresh snapshot (READ COMMITTED) and inserts
//! only if the service is enabled and no incident with the key (or
//! message) is open, so triggers of the same problem still decide one
//! after the other. The policy is read before the lock, like any read the
//! decision takes before its write; should a rule, user or the service
//! itself be deleted in between, a foreign key refuses the insert and the
//! trigger starts over with a fresh read.

use klaxon_core::engine::Cause;
use klaxon_core::time::{Millis, DAY_MS};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, Row};

use super::conn::{Pg, PgRowRef};
use crate::sql::outbox::{enqueue_pages, Page};

use super::timers::CHANNEL;
use super::{violates, PgStore};
use crate::plan::{open_changeset, plan, PolicyContext};
use crate::util::{new_id, new_incident_key};
use crate::{Actor, Incident, NewIncident, PolicyRule, Result, StoreError, TriggerOutcome};

/// The partial unique index that allows one unresolved incident per service and key.
const OPEN_KEY_INDEX: &str = "incidents_open_key";

/// How often a trigger starts over after a concurrent delete made its
/// insert violate a foreign key.
const ATTEMPTS: usize = 3;

/// The open incident with the same key (`$3`), or message, newest first.
/// One statement text per column, so both stay prepared.
macro_rules! open_incident_cte {
    ($column:literal) => {
        concat!(
            "o AS (SELECT i.id FROM incidents i
                WHERE i.account_id = $1 AND i.service_id = $2 AND i.state <> 'resolved' AND i.",
            $column,
            r#" = $3 ORDER BY i.triggered_at DESC, i.id COLLATE "C" DESC LIMIT 1)"#
        )
    };
}

/// The decision's read: one row per rule of the service's policy (one row
/// without a rule if it has none), each carrying the service's state and
/// the open incident. The rules are left out when an incident is open:
/// a repeated trigger needs none of them.
macro_rules! decision_read {
    ($column:literal) => {
        concat!(
            "WITH ",
            open_incident_cte!($column),
            r#" SELECT s.state AS service_state, (SELECT id FROM o) AS open_id,
                p.id AS service_policy_id, p.loop_limit, s.acknowledge_timeout, s.auto_resolve_timeout,
                r.id, r.policy_id, r.position, r.escalation_timeout, r.assignment_type, r.assignee_id,
                r.created_at, r.updated_at
             FROM services s
             LEFT JOIN policies p ON p.id = s.policy_id
             LEFT JOIN policy_rules r ON r.account_id = s.account_id AND r.policy_id = p.id
                AND NOT EXISTS (SELECT 1 FROM o)
             WHERE s.account_id = $1 AND s.id = $2
             ORDER BY r.position, r.id COLLATE "C""#
        )
    };
}

/// The decision's write, after the advisory lock: checks the service and
/// the open incident again with a fresh snapshot and, if both allow it,
/// inserts the incident, its timers (parallel arrays, maybe empty) and its
/// `incident.create` event, and announces the timers on commit. The
/// foreign keys of timers and events are checked at the end of the
/// statement, when the incident row exists.
macro_rules! open_write {
    ($column:literal) => {
        concat!(
            "WITH s AS (SELECT state FROM services WHERE account_id = $1 AND id = $2), ",
            open_incident_cte!($column),
            ",
             ins AS (INSERT INTO incidents (id, account_id, service_id, state, message, description, details,
                    key, current_user_id, current_policy_rule_id, escalation_loop_count, triggered_at,
                    created_at, updated_at)
                SELECT $4, $1, $2, 'triggered', $5, $6, $7, $8, $9, $10, $11, $12, $12, $12
                FROM s WHERE s.state = 'enabled' AND NOT EXISTS (SELECT 1 FROM o)
                RETURNING id, details),
             t AS (INSERT INTO timers (id, account_id, incident_id, kind, due_at, created_at)
                SELECT v.id, $1, ins.id, v.kind, v.due_at, $12
                FROM ins, UNNEST($13::text[], $14::text[], $15::bigint[]) AS v(id, kind, due_at)),
             e AS (INSERT INTO events (id, account_id, action, source_type, source_id, actor_type, actor_id,
                    changeset, created_at)
                SELECT $16, $1, 'incident.create', 'incident', ins.id, $17, $18, $19, $12 FROM ins),
             n AS (SELECT pg_notify($20, '') FROM ins WHERE cardinality($13::text[]) > 0)
             SELECT (SELECT state FROM s) AS service_state, (SELECT id FROM o) AS open_id,
                EXISTS (SELECT 1 FROM ins) AS inserted, (SELECT details FROM ins) AS details,
                (SELECT count(*) FROM n) AS notified"
        )
    };
}

const READ_BY_KEY: &str = decision_read!("key");
const READ_BY_MESSAGE: &str = decision_read!("message");
const WRITE_BY_KEY: &str = open_write!("key");
const WRITE_BY_MESSAGE: &str = open_write!("message");

/// What the decision's read found.
struct Found {
    service_state: String,
    open_id: Option<String>,
    /// `None` when an incident is open (not read) or the service's policy
    /// is missing.
    policy: Option<PolicyContext>,
}

/// What the dedup check compares: the key, the message, or nothing (a
/// trigger without key nor dedup always opens a new incident: its message
/// is compared with NULL, which matches none).
#[derive(Clone, Copy)]
enum Probe<'a> {
    Key(&'a str),
    Message(Option<&'a str>),
}

impl Probe<'_> {
    fn read_sql(self) -> &'static str {
        match self {
            Probe::Key(_) => READ_BY_KEY,
            Probe::Message(_) => READ_BY_MESSAGE,
        }
    }

    fn write_sql(self) -> &'static str {
        match self {
            Probe::Key(_) => WRITE_BY_KEY,
            Probe::Message(_) => WRITE_BY_MESSAGE,
        }
    }

    fn value(self) -> Option<String> {
        match self {
            Probe::Key(key) => Some(key.to_owned()),
            Probe::Message(message) => message.map(str::to_owned),
        }
    }
}

impl crate::sql::incidents::Triggers for PgStore {
    /// `IncidentStore::trigger_incident`; see the module comment.
    async fn trigger(
        &self,
        account_id: &str,
        service_id: &str,
        new: &NewIncident,
        dedup: bool,
        actor: &Actor,
        now: Millis,
    ) -> Result<TriggerOutcome> {
        for attempt in 1..=ATTEMPTS {
            match self
                .trigger_once(account_id, service_id, new, dedup, actor, now)
                .await?
            {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::RacedADelete => {
                    tracing::debug!(attempt, "trigger raced a delete; starting over");
                }
            }
        }
        Err(StoreError::Conflict(
            "the service or its policy kept changing while the incident was opened; try again"
                .into(),
        ))
    }
}

impl PgStore {
    async fn trigger_once(
        &self,
        account_id: &str,
        service_id: &str,
        new: &NewIncident,
        dedup: bool,
        actor: &Actor,
        now: Millis,
    ) -> Result<Attempt> {
        let probe = match (&new.key, dedup) {
            (Some(key), _) => Probe::Key(key),
            (None, true) => Probe::Message(Some(&new.message)),
            (None, false) => Probe::Message(None),
        };
        let mut conn = self.pool.acquire().await?;
        // Answering from this snapshot is correct: the service was disabled,
        // or the incident open, when we looked.
        let found = read_decision(&mut conn, account_id, service_id, probe, now).await?;
        if found.service_state != "enabled" {
            return Err(crate::util::service_disabled());
        }
        if let Some(id) = found.open_id {
            return existing(dedup, id).map(Attempt::Done);
        }
        let pc = found.policy.ok_or(StoreError::NotFound)?;
        let change = plan(None, Cause::Open, &pc, now)?.ok_or_else(|| {
            StoreError::Conflict("the engine declined to open the incident".into())
        })?;
        let id = new_id();
        let key = new.key.clone().unwrap_or_else(new_incident_key);
        let changeset = open_changeset(new, &key, &change);
        let timer_ids: Vec<String> = change.schedule.iter().map(|_| new_id()).collect();
        let (kinds, dues): (Vec<&str>, Vec<Millis>) = change.schedule.iter().copied().unzip();
        let (actor_type, actor_id) = actor.parts();

        let mut tx = Connection::begin(&mut *conn).await?;
        // Triggers of the same problem (same service and key, or without a
        // key the same message) queue on one transaction-scoped advisory
        // lock, so the write below checks (with a fresh snapshot) only after
        // the previous one has committed. Triggers of different problems run
        // in parallel.
        let lock = match probe {
            Probe::Key(key) => Some(format!("{service_id}:k:{key}")),
            Probe::Message(Some(message)) => Some(format!("{service_id}:m:{message}")),
            Probe::Message(None) => None,
        };
        if let Some(lock) = &lock {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(lock)
                .execute(&mut *tx)
                .await?;
        }
        let written: std::result::Result<PgRow, sqlx::Error> = sqlx::query(probe.write_sql())
            .bind(account_id)
            .bind(service_id)
            .bind(probe.value())
            .bind(&id)
            .bind(&new.message)
            .bind(&new.description)
            .bind(new.details.as_ref().map(Json))
            .bind(&key)
            .bind(&change.current_user_id)
            .bind(&change.current_policy_rule_id)
            .bind(change.loop_count)
            .bind(now)
            .bind(&timer_ids)
            .bind(&kinds)
            .bind(&dues)
            .bind(new_id())
            .bind(actor_type)
            .bind(actor_id)
            .bind(Json(&changeset))
            .bind(CHANNEL)
            .fetch_one(&mut *tx)
            .await;
        let row = match written {
            Ok(row) => row,
            Err(err) if violates(&err, OPEN_KEY_INDEX) => {
                // Backstop: the advisory lock makes this unreachable from
                // triggers themselves, but the index has the last word.
                tx.rollback().await?;
                if let (Some(key), true) = (&new.key, dedup) {
                    let found =
                        read_decision(&mut conn, account_id, service_id, Probe::Key(key), now)
                            .await?;
                    if let Some(id) = found.open_id {
                        return Ok(Attempt::Done(TriggerOutcome::Deduplicated(id)));
                    }
                }
                return Err(StoreError::Taken("key"));
            }
            // A rule, user or the service was deleted since the read.
            // Dropping the transaction rolls it back.
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                return Ok(Attempt::RacedADelete)
            }
            Err(err) => return Err(err.into()),
        };
        let inserted: bool = row.try_get("inserted")?;
        if !inserted {
            tx.rollback().await?;
            let state: Option<String> = row.try_get("service_state")?;
            let open_id: Option<String> = row.try_get("open_id")?;
            let outcome = match (state.as_deref(), open_id) {
                (None, _) => Err(StoreError::NotFound),
                (Some("enabled"), Some(id)) => existing(dedup, id),
                (Some("enabled"), None) => Err(StoreError::Conflict(
                    "the incident was neither written nor found open".into(),
                )),
                (Some(_), _) => Err(crate::util::service_disabled()),
            };
            return outcome.map(Attempt::Done);
        }
        // As stored: JSONB has its own key order.
        let details: Option<Json<Value>> = row.try_get("details")?;
        let pages: Vec<Page<'_>> = change
            .pages
            .iter()
            .map(|(reason, user)| Page {
                account: account_id,
                incident: &id,
                reason: *reason,
                user,
                at: now,
            })
            .collect();
        let queued = enqueue_pages(&mut Pg(&mut *tx), &pages).await?;
        if queued {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(super::timers::OUTBOX_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.counters.opened(1);
        if !change.schedule.is_empty() {
            self.timer_notify.notify_one();
        }
        if queued {
            self.outbox_notify.notify_one();
        }
        let current_policy_id = change
            .current_policy_rule_id
            .as_ref()
            .and_then(|rule| pc.rules.iter().find(|r| &r.id == rule))
            .map(|r| r.policy_id.clone());
        Ok(Attempt::Done(TriggerOutcome::Created(Incident {
            id,
            account_id: account_id.to_owned(),
            service_id: service_id.to_owned(),
            state: "triggered".into(),
            message: new.message.clone(),
            description: new.description.clone(),
            details,
            key,
            current_user_id: change.current_user_id,
            current_policy_rule_id: change.current_policy_rule_id,
            current_policy_id,
            escalation_loop_count: change.loop_count,
            triggered_at: now,
            acknowledged_at: None,
            resolved_at: None,
            created_at: now,
            updated_at: now,
        })))
    }
}

/// How one try at opening an incident ended (moved once, never stored:
/// boxing the outcome would only add an allocation).
#[allow(clippy::large_enum_variant)]
enum Attempt {
    /// Decided: opened, deduplicated or refused.
    Done(TriggerOutcome),
    /// A rule, user or the service was deleted between the decision's read
    /// and the write (a foreign key refused the insert): read again.
    RacedADelete,
}

/// An open incident answers a trigger with dedup, and refuses one without.
fn existing(dedup: bool, id: String) -> Result<TriggerOutcome> {
    if dedup {
        Ok(TriggerOutcome::Deduplicated(id))
    } else {
        Err(StoreError::Taken("key"))
    }
}

/// The decision's read, plus the schedules the rules name (rare; a few
/// more queries each).
async fn read_decision(
    conn: &mut PgConnection,
    account_id: &str,
    service_id: &str,
    probe: Probe<'_>,
    now: Millis,
) -> Result<Found> {
    let rows = sqlx::query(probe.read_sql())
        .bind(account_id)
        .bind(service_id)
        .bind(probe.value())
        .fetch_all(&mut *conn)
        .await?;
    let first = rows.first().ok_or(StoreError::NotFound)?;
    let service_state: String = first.try_get("service_state")?;
    let open_id: Option<String> = first.try_get("open_id")?;
    let policy_id: Option<String> = first.try_get("service_policy_id")?;
    if open_id.is_some() || policy_id.is_none() || service_state != "enabled" {
        return Ok(Found {
            service_state,
            open_id,
            policy: None,
        });
    }
    let mut rules = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<String>, _>("id")?.is_some() {
            rules.push(<PolicyRule as crate::sql::FromRow>::from_row(&PgRowRef(
                row,
            ))?);
        }
    }
    let mut schedules = std::collections::HashMap::new();
    for id in PolicyContext::schedule_ids(&rules) {
        // Overrides that ended a day before `now` cannot matter any more.
        let data =
            crate::sql::schedules::load(&mut Pg(&mut *conn), account_id, &id, now - DAY_MS).await?;
        schedules.insert(id, data.to_core());
    }
    Ok(Found {
        service_state,
        open_id,
        policy: Some(PolicyContext {
            rules,
            loop_limit: first.try_get("loop_limit")?,
            acknowledge_timeout: first.try_get("acknowledge_timeout")?,
            auto_resolve_timeout: first.try_get("auto_resolve_timeout")?,
            schedules,
        }),
    })
}
