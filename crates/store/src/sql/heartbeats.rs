//! Heartbeats, for both backends.
//!
//! A heartbeat's row is its own durable timer: `due_at` is when it expires
//! while it is up (the last ping, or the creation, plus the interval). A
//! ping of an up heartbeat is one UPDATE that moves `due_at` on.
//!
//! Firing ([`HeartbeatStore::fire_due_heartbeats`]) goes in three steps,
//! because opening an incident is the backends' own transaction (the
//! trigger path every integration takes, with its deduplication, paging and
//! escalation):
//!
//! 1. claim: in one transaction, the due rows are selected (`FOR UPDATE
//!    SKIP LOCKED` on PostgreSQL, so each is claimed by one process), set
//!    `down` with `due_at` a short lease ahead, and an up heartbeat's
//!    `heartbeat.expire` event is written;
//! 2. trigger `Heartbeat 'name' expired` with the fixed key
//!    `heartbeat:<id>` (a repeat, after a crash or the next interval, is
//!    deduplicated while the incident is open);
//! 3. settle: `due_at` moves one interval on, if the row still holds the
//!    claim. A ping (or a delete) that came in between took it over, so
//!    the incident just opened is resolved again.
//!
//! A process that dies between the steps leaves the lease to lapse, and an
//! engine fires the heartbeat again: an expiry is never lost, and never
//! opens two incidents.

use async_trait::async_trait;
use klaxon_core::incident::IncidentAction;
use klaxon_core::time::{format_ts, Millis, MINUTE_MS};
use serde_json::{json, Value};

use super::incidents::Triggers;
use super::row::from_row;
use super::{audit, found, query, taken, Backend, Change, Db, Write};
use crate::util::new_id;
use crate::{
    ActOutcome, Actor, FiredHeartbeat, Heartbeat, HeartbeatInput, HeartbeatOutcome, HeartbeatStore,
    IncidentStore, NewIncident, Pinged, Result, StoreError, TriggerOutcome,
};

/// How long a claimed heartbeat stays with the process firing it. Should
/// that process die before settling it, another fires it again after this
/// (the incident's key deduplicates the repeat).
pub(crate) const CLAIM_LEASE_MS: Millis = MINUTE_MS;

from_row!(Heartbeat {
    id,
    account_id,
    service_id,
    name,
    interval_minutes,
    token,
    state,
    last_ping_at,
    due_at,
    created_at,
    updated_at,
});

/// Heartbeat columns, in `Heartbeat`'s order.
macro_rules! heartbeat_columns {
    () => {
        "id, account_id, service_id, name, interval_minutes, token, state, last_ping_at, due_at, created_at, updated_at"
    };
}

/// A ping of an up heartbeat: it expires one interval (minutes × 60,000
/// ms) from now.
const PING_UP: &str =
    "UPDATE heartbeats SET last_ping_at = $1, due_at = $1 + interval_minutes * 60000
     WHERE token = $2 AND state = 'up' RETURNING id, due_at";

/// A ping of a down heartbeat: it comes back up.
const PING_DOWN: &str =
    "UPDATE heartbeats SET state = 'up', last_ping_at = $1, due_at = $1 + interval_minutes * 60000
     WHERE token = $2 AND state = 'down' RETURNING id, due_at";

#[async_trait]
impl<B: Backend + Triggers> HeartbeatStore for B {
    async fn list_heartbeats(&self, account_id: &str, service_id: &str) -> Result<Vec<Heartbeat>> {
        let mut db = self.read().await?;
        service_exists(&mut db, account_id, service_id, false).await?;
        db.fetch_all(
            query(concat!(
                "SELECT ",
                heartbeat_columns!(),
                // Byte order, as SQLite sorts, whatever the database's collation.
                r#" FROM heartbeats WHERE account_id = $1 AND service_id = $2 ORDER BY name COLLATE "C", id COLLATE "C""#
            ))
            .bind(account_id)
            .bind(service_id),
        )
        .await
    }

    async fn get_heartbeat(
        &self,
        account_id: &str,
        service_id: &str,
        id: &str,
    ) -> Result<Heartbeat> {
        self.read()
            .await?
            .fetch_one(
                query(concat!(
                    "SELECT ",
                    heartbeat_columns!(),
                    " FROM heartbeats WHERE account_id = $1 AND service_id = $2 AND id = $3"
                ))
                .bind(account_id)
                .bind(service_id)
                .bind(id),
            )
            .await
    }

    async fn create_heartbeat(
        &self,
        account_id: &str,
        service_id: &str,
        input: &HeartbeatInput,
        token: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<Heartbeat> {
        let mut tx = self.write().await?;
        // Key-share locked: the service cannot be deleted before this
        // commits (the insert would then hit the foreign key).
        service_exists(&mut tx, account_id, service_id, true).await?;
        let id = new_id();
        let due = now.saturating_add(input.interval_minutes.saturating_mul(MINUTE_MS));
        let heartbeat: Heartbeat = tx
            .fetch_one(
                query(concat!(
                    "INSERT INTO heartbeats (id, account_id, service_id, name, interval_minutes, token, state,
                        due_at, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 'up', $7, $8, $8) RETURNING ",
                    heartbeat_columns!()
                ))
                .bind(&id)
                .bind(account_id)
                .bind(service_id)
                .bind(&input.name)
                .bind(&input.interval_minutes)
                .bind(token)
                .bind(&due)
                .bind(&now),
            )
            .await
            .map_err(taken("name"))?;
        // The token is a secret: the audit log does not hold it.
        let changeset = json!({
            "service_id": service_id, "name": input.name, "interval": input.interval_minutes,
        });
        audit(account_id, actor, now)
            .event(&mut tx, "heartbeat.create", ("heartbeat", &id), &changeset)
            .await?;
        // A new expiry for the engine, maybe sooner than what it sleeps for.
        tx.record(Change::TimersArmed);
        tx.commit().await?;
        Ok(heartbeat)
    }

    async fn update_heartbeat(
        &self,
        account_id: &str,
        service_id: &str,
        id: &str,
        input: &HeartbeatInput,
        changes: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Heartbeat> {
        let mut tx = self.write().await?;
        let interval_ms = input.interval_minutes.saturating_mul(MINUTE_MS);
        // A down heartbeat keeps its next attempt (or the claim an engine
        // holds on it); an up one expires one new interval after its last
        // ping.
        let heartbeat: Heartbeat = tx
            .fetch_optional(
                query(concat!(
                    "UPDATE heartbeats SET name = $1, interval_minutes = $2, updated_at = $3,
                        due_at = CASE WHEN state = 'up' THEN COALESCE(last_ping_at, created_at) + $4 ELSE due_at END
                     WHERE account_id = $5 AND service_id = $6 AND id = $7 RETURNING ",
                    heartbeat_columns!()
                ))
                .bind(&input.name)
                .bind(&input.interval_minutes)
                .bind(&now)
                .bind(&interval_ms)
                .bind(account_id)
                .bind(service_id)
                .bind(id),
            )
            .await
            .map_err(taken("name"))?
            .ok_or(StoreError::NotFound)?;
        audit(account_id, actor, now)
            .event(&mut tx, "heartbeat.update", ("heartbeat", id), changes)
            .await?;
        // A shorter interval may move the expiry earlier.
        tx.record(Change::TimersArmed);
        tx.commit().await?;
        Ok(heartbeat)
    }

    async fn delete_heartbeat(
        &self,
        account_id: &str,
        service_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let done = tx
            .execute(
                query(
                    "DELETE FROM heartbeats WHERE account_id = $1 AND service_id = $2 AND id = $3",
                )
                .bind(account_id)
                .bind(service_id)
                .bind(id),
            )
            .await?;
        found(done)?;
        audit(account_id, actor, now)
            .event(&mut tx, "heartbeat.delete", ("heartbeat", id), &json!({}))
            .await?;
        tx.commit().await
    }

    async fn ping_heartbeat(&self, token: &str, now: Millis) -> Result<Option<Pinged>> {
        // The common case, a heartbeat that is up: one UPDATE. Its expiry
        // only moves later, so the engine need not be woken.
        let mut tx = self.write().await?;
        let up: Option<(String, Millis)> = tx
            .fetch_optional(query(PING_UP).bind(&now).bind(token))
            .await?;
        if let Some((heartbeat_id, expires_at)) = up {
            tx.commit().await?;
            return Ok(Some(Pinged {
                heartbeat_id,
                expires_at,
                resolved: None,
            }));
        }
        // Nothing was written: dropping the transaction ends it.
        drop(tx);
        let found: Option<Heartbeat> = self
            .read()
            .await?
            .fetch_optional(
                query(concat!(
                    "SELECT ",
                    heartbeat_columns!(),
                    " FROM heartbeats WHERE token = $1"
                ))
                .bind(token),
            )
            .await?;
        let Some(heartbeat) = found else {
            return Ok(None);
        };
        // Down: its incident is resolved first and the heartbeat comes back
        // up after, so a failure in between leaves it down and the next
        // ping (a retry) resolves again.
        let actor = Actor::Service(heartbeat.service_id.clone());
        let resolved = resolve_expiry(self, &heartbeat, &actor, now).await?;
        let mut tx = self.write().await?;
        let back: Option<(String, Millis)> = tx
            .fetch_optional(query(PING_DOWN).bind(&now).bind(token))
            .await?;
        let (heartbeat_id, expires_at) = match back {
            Some(row) => {
                audit(&heartbeat.account_id, &actor, now)
                    .event(
                        &mut tx,
                        "heartbeat.recover",
                        ("heartbeat", &row.0),
                        &json!({"state": ["down", "up"], "incident_id": resolved}),
                    )
                    .await?;
                row
            }
            // Another ping brought it up meanwhile (or it was deleted).
            None => match tx
                .fetch_optional(query(PING_UP).bind(&now).bind(token))
                .await?
            {
                Some(row) => row,
                None => return Ok(None),
            },
        };
        tx.commit().await?;
        Ok(Some(Pinged {
            heartbeat_id,
            expires_at,
            resolved,
        }))
    }

    async fn fire_due_heartbeats(&self, now: Millis, limit: i64) -> Result<Vec<FiredHeartbeat>> {
        let lease = now.saturating_add(CLAIM_LEASE_MS);
        let claimed = claim_due(self, now, limit, lease).await?;
        let mut fired = Vec::with_capacity(claimed.len());
        for heartbeat in claimed {
            fired.push(fire(self, heartbeat, lease, now).await?);
        }
        Ok(fired)
    }

    async fn next_heartbeat_due(&self) -> Result<Option<Millis>> {
        let row: Option<(Millis,)> = self
            .read()
            .await?
            .fetch_optional(query(
                "SELECT due_at FROM heartbeats ORDER BY due_at LIMIT 1",
            ))
            .await?;
        Ok(row.map(|(due,)| due))
    }
}

/// Step 1: claims the due heartbeats (as they were before the claim).
async fn claim_due<B: Backend>(
    store: &B,
    now: Millis,
    limit: i64,
    lease: Millis,
) -> Result<Vec<Heartbeat>> {
    let mut tx = store.write().await?;
    let due: Vec<Heartbeat> = tx
        .fetch_all(
            query(concat!(
                "SELECT ",
                heartbeat_columns!(),
                r#" FROM heartbeats WHERE due_at <= $1 ORDER BY due_at, id COLLATE "C" LIMIT $2
                    FOR UPDATE SKIP LOCKED"#
            ))
            .bind(&now)
            .bind(&limit),
        )
        .await?;
    if due.is_empty() {
        return Ok(due);
    }
    let ids: Vec<String> = due.iter().map(|h| h.id.clone()).collect();
    let mut q =
        query("UPDATE heartbeats SET state = 'down', due_at = $1 WHERE id IN ").bind(&lease);
    q.push_list(&ids);
    tx.execute(q).await?;
    for h in due.iter().filter(|h| h.state == "up") {
        audit(&h.account_id, &Actor::System, now)
            .event(
                &mut tx,
                "heartbeat.expire",
                ("heartbeat", &h.id),
                &json!({"state": ["up", "down"], "expired_at": format_ts(h.expires_at())}),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(due)
}

/// Steps 2 and 3 for one claimed heartbeat.
async fn fire<B: Backend + Triggers>(
    store: &B,
    heartbeat: Heartbeat,
    lease: Millis,
    now: Millis,
) -> Result<FiredHeartbeat> {
    let h = &heartbeat;
    let actor = Actor::Service(h.service_id.clone());
    let outcome = match store
        .trigger_incident(
            &h.account_id,
            &h.service_id,
            &expiry_incident(h),
            true,
            &actor,
            now,
        )
        .await
    {
        Ok(TriggerOutcome::Created(incident)) => HeartbeatOutcome::Opened(incident.id),
        Ok(TriggerOutcome::Deduplicated(id)) => HeartbeatOutcome::AlreadyOpen(id),
        Err(StoreError::Conflict(reason)) => HeartbeatOutcome::Refused(reason),
        // The claim lapses and an engine tries again.
        Err(err) if err.is_unavailable() => return Err(err),
        Err(err) => HeartbeatOutcome::Failed(err.to_string()),
    };
    let next = now.saturating_add(h.interval_minutes.saturating_mul(MINUTE_MS));
    let mut tx = store.write().await?;
    let held = tx
        .execute(
            query("UPDATE heartbeats SET due_at = $1 WHERE id = $2 AND state = 'down' AND due_at = $3")
                .bind(&next)
                .bind(&h.id)
                .bind(&lease),
        )
        .await?
        == 1;
    let first = h.state == "up";
    match &outcome {
        HeartbeatOutcome::Refused(reason) | HeartbeatOutcome::Failed(reason) => {
            if matches!(outcome, HeartbeatOutcome::Refused(_)) {
                tracing::warn!(heartbeat = %h.id, service = %h.service_id, reason = %reason, retry_at = next, "heartbeat expired; its incident was refused");
            } else {
                tracing::error!(heartbeat = %h.id, service = %h.service_id, reason = %reason, retry_at = next, "heartbeat expired; opening its incident failed");
            }
            // Recorded once an outage; later attempts are only logged.
            if first && held {
                audit(&h.account_id, &Actor::System, now)
                    .event(
                        &mut tx,
                        "heartbeat.not_paged",
                        ("heartbeat", &h.id),
                        &json!({"reason": reason, "retry_at": format_ts(next)}),
                    )
                    .await?;
            }
        }
        HeartbeatOutcome::Opened(id) => {
            tracing::info!(heartbeat = %h.id, service = %h.service_id, incident = %id, "heartbeat expired");
        }
        HeartbeatOutcome::AlreadyOpen(_) => {}
    }
    tx.commit().await?;
    if let (false, HeartbeatOutcome::Opened(_)) = (held, &outcome) {
        // A ping (or a delete) came in while the incident was being opened.
        resolve_expiry(store, h, &actor, now).await?;
    }
    Ok(FiredHeartbeat {
        heartbeat_id: heartbeat.id,
        account_id: heartbeat.account_id,
        service_id: heartbeat.service_id,
        due_at: heartbeat.due_at,
        fired_at: now,
        outcome,
    })
}

/// The incident a heartbeat's expiry opens.
fn expiry_incident(h: &Heartbeat) -> NewIncident {
    let description = match h.last_ping_at {
        Some(at) => format!(
            "No ping for {} minutes: the last one came at {}.",
            h.interval_minutes,
            format_ts(at)
        ),
        None => format!(
            "No ping in the {} minutes since the heartbeat was created.",
            h.interval_minutes
        ),
    };
    NewIncident {
        message: format!("Heartbeat '{}' expired", h.name),
        description: Some(description),
        details: Some(json!({
            "heartbeat_id": h.id,
            "heartbeat": h.name,
            "interval": h.interval_minutes,
            "last_ping_at": h.last_ping_at.map(format_ts),
            "expired_at": format_ts(h.expires_at()),
        })),
        key: Some(Heartbeat::incident_key(&h.id)),
    }
}

/// Resolves the open incident of a heartbeat's expiry, if there is one,
/// the way the integration API resolves by key; its id if it did.
async fn resolve_expiry<B: Backend + Triggers>(
    store: &B,
    h: &Heartbeat,
    actor: &Actor,
    now: Millis,
) -> Result<Option<String>> {
    let key = Heartbeat::incident_key(&h.id);
    let Some(open) = store
        .find_open_incident(&h.account_id, &h.service_id, Some(&key), None)
        .await?
    else {
        return Ok(None);
    };
    match store
        .act_on_incident(&h.account_id, &open.id, IncidentAction::Resolve, actor, now)
        .await
    {
        Ok(ActOutcome::Changed(_)) => Ok(Some(open.id)),
        // Resolved or deleted by someone else meanwhile.
        Ok(ActOutcome::Unchanged(_)) | Err(StoreError::Transition(_) | StoreError::NotFound) => {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// The service must be the account's; `lock` key-share locks it (a write
/// that adds to it).
async fn service_exists(
    db: &mut impl Db,
    account_id: &str,
    service_id: &str,
    lock: bool,
) -> Result<()> {
    let sql = if lock {
        "SELECT id FROM services WHERE account_id = $1 AND id = $2 FOR KEY SHARE"
    } else {
        "SELECT id FROM services WHERE account_id = $1 AND id = $2"
    };
    let row: Option<(String,)> = db
        .fetch_optional(query(sql).bind(account_id).bind(service_id))
        .await?;
    row.map(|_| ()).ok_or(StoreError::NotFound)
}
