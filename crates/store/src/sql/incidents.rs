//! Incidents and the audit log, for both backends. Opening incidents is
//! each backend's own ([`Triggers`]): PostgreSQL serialises triggers of one
//! problem on an advisory lock, SQLite batches them through its single
//! writer with group commit.

use std::future::Future;

use async_trait::async_trait;
use klaxon_core::engine::Cause;
use klaxon_core::incident::{IncidentAction, IncidentState};
use klaxon_core::time::Millis;
use serde_json::{json, Value};

use super::row::from_row;
use super::timers::{apply_change, load_policy_context};
use super::{audit, found, query, Backend, Change, Db, Query, Write};
use crate::plan::plan;
use crate::util::like_pattern;
use crate::{
    ActOutcome, Actor, Event, EventFilter, Incident, IncidentFilter, IncidentPatch, IncidentStore,
    NewIncident, Result, TriggerOutcome,
};

from_row!(Incident {
    id,
    account_id,
    service_id,
    state,
    message,
    description,
    details,
    key,
    current_user_id,
    current_policy_rule_id,
    current_policy_id,
    escalation_loop_count,
    triggered_at,
    acknowledged_at,
    resolved_at,
    created_at,
    updated_at,
});

from_row!(Event {
    id,
    action,
    source_type,
    source_id,
    actor_type,
    actor_id,
    changeset,
    created_at,
});

/// Incident columns, with the policy of the current rule (for links).
macro_rules! incident_select {
    () => {
        "SELECT i.id, i.account_id, i.service_id, i.state, i.message, i.description,
    i.details, i.key, i.current_user_id, i.current_policy_rule_id, r.policy_id AS current_policy_id,
    i.escalation_loop_count, i.triggered_at, i.acknowledged_at, i.resolved_at, i.created_at, i.updated_at
    FROM incidents i LEFT JOIN policy_rules r ON r.id = i.current_policy_rule_id"
    };
}
pub(crate) use incident_select;

/// Newest first; ids compare bytewise whatever the collation.
macro_rules! incident_order {
    () => {
        r#" ORDER BY i.triggered_at DESC, i.id COLLATE "C" DESC"#
    };
}

/// The native half of incidents: opening one.
pub(crate) trait Triggers {
    /// Opens an incident, or finds the open one it duplicates.
    fn trigger(
        &self,
        account_id: &str,
        service_id: &str,
        new: &NewIncident,
        dedup: bool,
        actor: &Actor,
        now: Millis,
    ) -> impl Future<Output = Result<TriggerOutcome>> + Send;
}

#[async_trait]
impl<B: Backend + Triggers> IncidentStore for B {
    async fn trigger_incident(
        &self,
        account_id: &str,
        service_id: &str,
        new: &NewIncident,
        dedup: bool,
        actor: &Actor,
        now: Millis,
    ) -> Result<TriggerOutcome> {
        self.trigger(account_id, service_id, new, dedup, actor, now)
            .await
    }

    async fn list_incidents(
        &self,
        account_id: &str,
        filter: &IncidentFilter,
    ) -> Result<(Vec<Incident>, i64)> {
        let mut db = self.read().await?;
        let like = filter.q.as_deref().map(like_pattern);
        let mut count = query("SELECT COUNT(*) FROM incidents i");
        push_filter(&mut count, account_id, filter, like.as_deref());
        let (total,): (i64,) = db.fetch_one(count).await?;
        let mut page = query(incident_select!());
        push_filter(&mut page, account_id, filter, like.as_deref());
        page.push(incident_order!());
        let (limit, offset) = page_bounds(filter.limit, filter.offset);
        page.push(" LIMIT ")
            .push_bind(&limit)
            .push(" OFFSET ")
            .push_bind(&offset);
        let rows = db.fetch_all(page).await?;
        Ok((rows, total))
    }

    async fn get_incident(&self, account_id: &str, id: &str) -> Result<Incident> {
        fetch(&mut self.read().await?, account_id, id).await
    }

    async fn find_open_incident(
        &self,
        account_id: &str,
        service_id: &str,
        key: Option<&str>,
        message: Option<&str>,
    ) -> Result<Option<Incident>> {
        open_incident(
            &mut self.read().await?,
            account_id,
            service_id,
            key,
            message,
        )
        .await
    }

    async fn update_incident(
        &self,
        account_id: &str,
        id: &str,
        patch: &IncidentPatch,
        actor: &Actor,
        now: Millis,
    ) -> Result<Incident> {
        let mut tx = self.write().await?;
        lock_incident(&mut tx, account_id, id).await?;
        let before = fetch(&mut tx, account_id, id).await?;
        let (changes, message, description, details) = crate::util::apply_patch(&before, patch);
        if changes.is_empty() {
            return Ok(before);
        }
        tx.execute(
            query(
                "UPDATE incidents SET message = $1, description = $2, details = $3, updated_at = $4
                 WHERE account_id = $5 AND id = $6",
            )
            .bind(&message)
            .bind(&description)
            .bind(&details)
            .bind(&now)
            .bind(account_id)
            .bind(id),
        )
        .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "incident.update",
                ("incident", id),
                &Value::Object(changes),
            )
            .await?;
        let incident = fetch(&mut tx, account_id, id).await?;
        tx.record(Change::MessageChanged {
            id: id.to_owned(),
            message: incident.message.clone(),
        });
        tx.commit().await?;
        Ok(incident)
    }

    async fn grow_incident(
        &self,
        account_id: &str,
        id: &str,
        alerts: i64,
        details: &Value,
        actor: &Actor,
        now: Millis,
    ) -> Result<Option<Incident>> {
        let mut tx = self.write().await?;
        // Two notifications of one growing group apply one after the other:
        // the second compares with what the first recorded.
        lock_incident(&mut tx, account_id, id).await?;
        let before = fetch(&mut tx, account_id, id).await?;
        let recorded = recorded_alerts(&before);
        if before.state == IncidentState::Resolved.as_str() || alerts <= recorded {
            return Ok(None);
        }
        let mut details = details.clone();
        if let Value::Object(map) = &mut details {
            map.insert("alert_count".into(), json!(alerts));
        }
        tx.execute(
            query(
                "UPDATE incidents SET details = $1, updated_at = $2 WHERE account_id = $3 AND id = $4",
            )
            .bind(&details)
            .bind(&now)
            .bind(account_id)
            .bind(id),
        )
        .await?;
        audit(account_id, actor, now)
            .event(
                &mut tx,
                "incident.update",
                ("incident", id),
                &json!({ "alert_count": [recorded, alerts] }),
            )
            .await?;
        let incident = fetch(&mut tx, account_id, id).await?;
        tx.commit().await?;
        Ok(Some(incident))
    }

    async fn act_on_incident(
        &self,
        account_id: &str,
        id: &str,
        action: IncidentAction,
        actor: &Actor,
        now: Millis,
    ) -> Result<ActOutcome> {
        let mut tx = self.write().await?;
        // Two actions at once (an SMS reply and a timer, say) apply one
        // after the other, the second to the first's result.
        lock_incident(&mut tx, account_id, id).await?;
        let before = fetch(&mut tx, account_id, id).await?;
        let pc = load_policy_context(&mut tx, &before.service_id, now).await?;
        let Some(change) = plan(Some(&before), Cause::Act(action), &pc, now)? else {
            // Dropping the transaction rolls it back and releases the lock.
            return Ok(ActOutcome::Unchanged(before));
        };
        apply_change(&mut tx, &before, &change, actor, now).await?;
        let incident = fetch(&mut tx, account_id, id).await?;
        if change.state == IncidentState::Resolved {
            tx.record(Change::IncidentClosed { id: id.to_owned() });
        }
        tx.commit().await?;
        if change.state.as_str() != before.state {
            self.counters().moved(change.state);
        }
        Ok(ActOutcome::Changed(incident))
    }

    async fn delete_incident(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let done = tx
            .execute(
                query("DELETE FROM incidents WHERE account_id = $1 AND id = $2")
                    .bind(account_id)
                    .bind(id),
            )
            .await?;
        found(done)?;
        audit(account_id, actor, now)
            .event(&mut tx, "incident.delete", ("incident", id), &json!({}))
            .await?;
        tx.record(Change::IncidentClosed { id: id.to_owned() });
        tx.commit().await
    }

    async fn list_events(
        &self,
        account_id: &str,
        filter: &EventFilter,
    ) -> Result<(Vec<Event>, i64)> {
        let mut db = self.read().await?;
        let mut count = query("SELECT COUNT(*) FROM events");
        push_event_filter(&mut count, account_id, filter);
        let (total,): (i64,) = db.fetch_one(count).await?;
        let mut page = query(
            "SELECT id, action, source_type, source_id, actor_type, actor_id, changeset, created_at FROM events",
        );
        push_event_filter(&mut page, account_id, filter);
        let (limit, offset) = page_bounds(filter.limit, filter.offset);
        page.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(&limit)
            .push(" OFFSET ")
            .push_bind(&offset);
        let rows = db.fetch_all(page).await?;
        Ok((rows, total))
    }
}

/// One incident of the account; `NotFound` when there is none.
pub(crate) async fn fetch(db: &mut impl Db, account_id: &str, id: &str) -> Result<Incident> {
    db.fetch_one(
        query(concat!(
            incident_select!(),
            " WHERE i.account_id = $1 AND i.id = $2"
        ))
        .bind(account_id)
        .bind(id),
    )
    .await
}

/// How many alerts an incident's details say it stands for
/// (`details.alert_count`; 0 when absent).
fn recorded_alerts(incident: &Incident) -> i64 {
    incident
        .details
        .as_ref()
        .and_then(|d| d.0.get("alert_count"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// Locks an incident row for the rest of the transaction (PostgreSQL;
/// SQLite's single writer needs no lock); `NotFound` when the account has
/// no such incident. Locking the bare row first, then reading the joined
/// view with a fresh snapshot, returns the current rule's policy as
/// committed by whoever held the lock before.
async fn lock_incident(db: &mut impl Db, account_id: &str, id: &str) -> Result<()> {
    let _: (String,) = db
        .fetch_one(
            query("SELECT id FROM incidents WHERE account_id = $1 AND id = $2 FOR NO KEY UPDATE")
                .bind(account_id)
                .bind(id),
        )
        .await?;
    Ok(())
}

/// The newest unresolved incident of a service with this key (or, without
/// a key, this message).
pub(crate) async fn open_incident(
    db: &mut impl Db,
    account_id: &str,
    service_id: &str,
    key: Option<&str>,
    message: Option<&str>,
) -> Result<Option<Incident>> {
    let (sql, value) = match (key, message) {
        (Some(key), _) => (
            concat!(
                incident_select!(),
                " WHERE i.account_id = $1 AND i.service_id = $2 AND i.state <> 'resolved' AND i.key = $3",
                incident_order!(),
                " LIMIT 1"
            ),
            key,
        ),
        (None, Some(message)) => (
            concat!(
                incident_select!(),
                " WHERE i.account_id = $1 AND i.service_id = $2 AND i.state <> 'resolved' AND i.message = $3",
                incident_order!(),
                " LIMIT 1"
            ),
            message,
        ),
        (None, None) => return Ok(None),
    };
    db.fetch_optional(query(sql).bind(account_id).bind(service_id).bind(value))
        .await
}

/// `LIMIT`/`OFFSET` values with SQLite's reading of odd ones, which
/// PostgreSQL would reject: a negative limit means no limit, a negative
/// offset none.
fn page_bounds(limit: i64, offset: i64) -> (i64, i64) {
    (if limit < 0 { i64::MAX } else { limit }, offset.max(0))
}

fn push_filter<'a>(
    q: &mut Query<'a>,
    account_id: &'a str,
    f: &'a IncidentFilter,
    like: Option<&'a str>,
) {
    q.push(" WHERE i.account_id = ").push_bind(account_id);
    if !f.states.is_empty() {
        q.push(" AND i.state IN ").push_list(&f.states);
    }
    if let Some(service_id) = &f.service_id {
        q.push(" AND i.service_id = ").push_bind(service_id);
    }
    if let Some(user_id) = &f.current_user_id {
        q.push(" AND i.current_user_id = ").push_bind(user_id);
    }
    if let Some(since) = &f.since {
        q.push(" AND i.triggered_at >= ").push_bind(since);
    }
    if let Some(until) = &f.until {
        q.push(" AND i.triggered_at < ").push_bind(until);
    }
    if let Some(like) = like {
        q.push(" AND i.message ILIKE ")
            .push_bind(like)
            .push(" ESCAPE '\\'");
    }
}

fn push_event_filter<'a>(q: &mut Query<'a>, account_id: &'a str, f: &'a EventFilter) {
    q.push(" WHERE account_id = ").push_bind(account_id);
    if let Some((source_type, source_id)) = &f.source {
        q.push(" AND source_type = ").push_bind(source_type);
        q.push(" AND source_id = ").push_bind(source_id);
    }
}
