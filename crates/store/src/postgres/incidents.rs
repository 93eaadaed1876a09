//! Incidents and the audit log (PostgreSQL).

use async_trait::async_trait;
use klaxon_core::engine::Cause;
use klaxon_core::incident::IncidentAction;
use klaxon_core::time::Millis;
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::timers::{apply_change, load_policy_context};
use super::{found, insert_event, PgStore};
use crate::plan::plan;
use crate::util::like_pattern;
use crate::{
    ActOutcome, Actor, Event, EventFilter, Incident, IncidentFilter, IncidentPatch, IncidentStore,
    NewIncident, Result, StoreError, TriggerOutcome,
};

pub(super) const INCIDENT_SELECT: &str = "SELECT i.id, i.account_id, i.service_id, i.state, i.message, i.description,
    i.details, i.key, i.current_user_id, i.current_policy_rule_id, r.policy_id AS current_policy_id,
    i.escalation_loop_count, i.triggered_at, i.acknowledged_at, i.resolved_at, i.created_at, i.updated_at
    FROM incidents i LEFT JOIN policy_rules r ON r.id = i.current_policy_rule_id";

/// Newest first; ids compare bytewise, as in SQLite, whatever the collation.
const INCIDENT_ORDER: &str = r#" ORDER BY i.triggered_at DESC, i.id COLLATE "C" DESC"#;

const EVENT_COLUMNS: &str =
    "id, action, source_type, source_id, actor_type, actor_id, changeset, created_at";

#[async_trait]
impl IncidentStore for PgStore {
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
        let mut conn = self.pool.acquire().await?;
        let mut count = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM incidents i");
        push_filter(&mut count, account_id, filter);
        let (total,): (i64,) = count.build_query_as().fetch_one(&mut *conn).await?;
        let mut page = QueryBuilder::<Postgres>::new(INCIDENT_SELECT);
        push_filter(&mut page, account_id, filter);
        page.push(INCIDENT_ORDER);
        push_page(&mut page, filter.limit, filter.offset);
        let rows = page.build_query_as().fetch_all(&mut *conn).await?;
        Ok((rows, total))
    }

    async fn get_incident(&self, account_id: &str, id: &str) -> Result<Incident> {
        let mut conn = self.pool.acquire().await?;
        fetch(&mut conn, account_id, id).await
    }

    async fn find_open_incident(
        &self,
        account_id: &str,
        service_id: &str,
        key: Option<&str>,
        message: Option<&str>,
    ) -> Result<Option<Incident>> {
        let mut conn = self.pool.acquire().await?;
        open_incident(&mut conn, account_id, service_id, key, message).await
    }

    async fn update_incident(
        &self,
        account_id: &str,
        id: &str,
        patch: &IncidentPatch,
        actor: &Actor,
        now: Millis,
    ) -> Result<Incident> {
        let mut tx = self.pool.begin().await?;
        lock_incident(&mut tx, account_id, id).await?;
        let before = fetch(&mut tx, account_id, id).await?;
        let (changes, message, description, details) = crate::util::apply_patch(&before, patch);
        if changes.is_empty() {
            return Ok(before);
        }
        sqlx::query(
            "UPDATE incidents SET message = $1, description = $2, details = $3, updated_at = $4
             WHERE account_id = $5 AND id = $6",
        )
        .bind(message)
        .bind(description)
        .bind(details.map(Json))
        .bind(now)
        .bind(account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let changes = Value::Object(changes);
        insert_event(
            &mut tx,
            account_id,
            "incident.update",
            "incident",
            id,
            actor,
            &changes,
            now,
        )
        .await?;
        let incident = fetch(&mut tx, account_id, id).await?;
        tx.commit().await?;
        Ok(incident)
    }

    async fn act_on_incident(
        &self,
        account_id: &str,
        id: &str,
        action: IncidentAction,
        actor: &Actor,
        now: Millis,
    ) -> Result<ActOutcome> {
        let mut tx = self.pool.begin().await?;
        // Two actions at once (an SMS reply and a timer, say) apply one
        // after the other, the second to the first's result.
        lock_incident(&mut tx, account_id, id).await?;
        let before = fetch(&mut tx, account_id, id).await?;
        let pc = load_policy_context(&mut tx, &before.service_id, now).await?;
        let Some(change) = plan(Some(&before), Cause::Act(action), &pc, now)? else {
            // Release the row lock now, not whenever the pool gets to it.
            tx.rollback().await?;
            return Ok(ActOutcome::Unchanged(before));
        };
        apply_change(&mut tx, &before, &change, actor, now).await?;
        let incident = fetch(&mut tx, account_id, id).await?;
        tx.commit().await?;
        self.timers_armed(&change);
        Ok(ActOutcome::Changed(incident))
    }

    async fn delete_incident(
        &self,
        account_id: &str,
        id: &str,
        actor: &Actor,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM incidents WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        found(done.rows_affected())?;
        insert_event(
            &mut tx,
            account_id,
            "incident.delete",
            "incident",
            id,
            actor,
            &json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_events(
        &self,
        account_id: &str,
        filter: &EventFilter,
    ) -> Result<(Vec<Event>, i64)> {
        let mut conn = self.pool.acquire().await?;
        let mut count = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM events");
        push_event_filter(&mut count, account_id, filter);
        let (total,): (i64,) = count.build_query_as().fetch_one(&mut *conn).await?;
        let mut page = QueryBuilder::<Postgres>::new(format!("SELECT {EVENT_COLUMNS} FROM events"));
        push_event_filter(&mut page, account_id, filter);
        page.push(" ORDER BY seq DESC");
        push_page(&mut page, filter.limit, filter.offset);
        let rows = page.build_query_as().fetch_all(&mut *conn).await?;
        Ok((rows, total))
    }
}

pub(super) async fn fetch(conn: &mut PgConnection, account_id: &str, id: &str) -> Result<Incident> {
    sqlx::query_as(&format!(
        "{INCIDENT_SELECT} WHERE i.account_id = $1 AND i.id = $2"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// Locks an incident row for the rest of the transaction; `NotFound` when
/// the account has no such incident. Locking the bare row first, then
/// reading the joined view with a fresh snapshot, returns the current rule's
/// policy as committed by whoever held the lock before.
async fn lock_incident(conn: &mut PgConnection, account_id: &str, id: &str) -> Result<()> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM incidents WHERE account_id = $1 AND id = $2 FOR NO KEY UPDATE",
    )
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|_| ()).ok_or(StoreError::NotFound)
}

async fn open_incident(
    conn: &mut PgConnection,
    account_id: &str,
    service_id: &str,
    key: Option<&str>,
    message: Option<&str>,
) -> Result<Option<Incident>> {
    let (column, value) = match (key, message) {
        (Some(key), _) => ("key", key),
        (None, Some(message)) => ("message", message),
        (None, None) => return Ok(None),
    };
    Ok(sqlx::query_as(&format!(
        "{INCIDENT_SELECT} WHERE i.account_id = $1 AND i.service_id = $2 AND i.state <> 'resolved'
         AND i.{column} = $3 {INCIDENT_ORDER} LIMIT 1"
    ))
    .bind(account_id)
    .bind(service_id)
    .bind(value)
    .fetch_optional(conn)
    .await?)
}

fn push_filter<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    account_id: &'a str,
    f: &'a IncidentFilter,
) {
    qb.push(" WHERE i.account_id = ").push_bind(account_id);
    if !f.states.is_empty() {
        qb.push(" AND i.state = ANY(")
            .push_bind(f.states.as_slice())
            .push(")");
    }
    if let Some(service_id) = &f.service_id {
        qb.push(" AND i.service_id = ").push_bind(service_id);
    }
    if let Some(user_id) = &f.current_user_id {
        qb.push(" AND i.current_user_id = ").push_bind(user_id);
    }
    if let Some(since) = f.since {
        qb.push(" AND i.triggered_at >= ").push_bind(since);
    }
    if let Some(until) = f.until {
        qb.push(" AND i.triggered_at < ").push_bind(until);
    }
    if let Some(q) = &f.q {
        qb.push(" AND i.message ILIKE ")
            .push_bind(like_pattern(q))
            .push(" ESCAPE '\\'");
    }
}

fn push_event_filter<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    account_id: &'a str,
    f: &'a EventFilter,
) {
    qb.push(" WHERE account_id = ").push_bind(account_id);
    if let Some((source_type, source_id)) = &f.source {
        qb.push(" AND source_type = ").push_bind(source_type);
        qb.push(" AND source_id = ").push_bind(source_id);
    }
}

/// `LIMIT … OFFSET …` with SQLite's reading of odd values, which PostgreSQL
/// would reject: a negative limit means no limit, a negative offset none.
fn push_page(qb: &mut QueryBuilder<'_, Postgres>, limit: i64, offset: i64) {
    qb.push(" LIMIT ")
        .push_bind((limit >= 0).then_some(limit))
        .push(" OFFSET ")
        .push_bind(offset.max(0));
}
