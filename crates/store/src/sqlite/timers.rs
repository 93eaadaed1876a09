//! Durable timers (SQLite), and carrying out engine decisions.

use async_trait::async_trait;
use klaxon_core::time::{Millis, DAY_MS};
use std::collections::HashMap;

use sqlx::types::Json;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::incidents::INCIDENT_SELECT;
use super::policies::rules_of;
use super::{insert_event, SqliteStore};
use crate::plan::{
    plan_batch, BatchInput, BatchPlan, Change, DueTimer, PolicyContext, ServicePolicyRow,
};
use crate::util::{new_id, transition_changeset};
use crate::{Actor, FiredTimer, Incident, Result, StoreError, Timer, TimerStore};

#[async_trait]
impl TimerStore for SqliteStore {
    async fn fire_due_timers(&self, now: Millis, limit: i64) -> Result<Vec<FiredTimer>> {
        let mut tx = self.begin_write().await?;
        let due: Vec<DueTimer> = sqlx::query_as(
            "SELECT id, incident_id, kind, due_at, attempts FROM timers
             WHERE due_at <= ? ORDER BY due_at, id LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<&str> = due.iter().map(|t| t.incident_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let input = load_batch(&mut tx, &ids, now).await?;
        let batch = plan_batch(&due, input, now);
        write_batch(&mut tx, &batch, now).await?;
        // Auto-resolved incidents stop deduplicating triggers.
        self.commit_then(tx, |state| {
            for w in batch
                .incidents
                .iter()
                .filter(|w| w.after.state == "resolved")
            {
                state.closed(&w.after.id);
            }
        })
        .await?;
        batch.log_failures();
        if !batch.insert.is_empty() {
            self.timer_notify.notify_one();
        }
        Ok(batch.fired)
    }

    async fn next_timer_due(&self) -> Result<Option<Millis>> {
        let row: Option<(Millis,)> =
            sqlx::query_as("SELECT due_at FROM timers ORDER BY due_at LIMIT 1")
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(|(due,)| due))
    }

    async fn timers_changed(&self) {
        self.timer_notify.notified().await;
    }

    async fn list_timers(&self, account_id: &str, incident_id: &str) -> Result<Vec<Timer>> {
        Ok(sqlx::query_as(
            "SELECT id, incident_id, kind, due_at, attempts FROM timers
             WHERE account_id = ? AND incident_id = ? ORDER BY due_at, id",
        )
        .bind(account_id)
        .bind(incident_id)
        .fetch_all(&self.reader)
        .await?)
    }
}

impl SqliteStore {
    /// Wakes the engine after a commit that armed timers.
    pub(super) fn timers_armed(&self, change: &Change) {
        if !change.schedule.is_empty() {
            self.timer_notify.notify_one();
        }
    }
}

/// The incidents of a batch's timers, and their services' policies. What
/// cannot be read (a row that does not decode, a policy or schedule that
/// is missing or malformed) is recorded in the input with its reason, so
/// that only the timers depending on it are set aside; only an unreachable
/// database fails the batch.
async fn load_batch(conn: &mut SqliteConnection, ids: &[&str], now: Millis) -> Result<BatchInput> {
    let mut input = BatchInput::default();
    match fetch_incidents(conn, ids).await {
        Ok(rows) => input.incidents = rows.into_iter().map(|i| (i.id.clone(), i)).collect(),
        Err(err) if err.is_unavailable() => return Err(err),
        Err(_) => {
            // One bad row fails the set-based read: find it row by row.
            for id in ids {
                match fetch_incidents(conn, &[id]).await {
                    Ok(rows) => input
                        .incidents
                        .extend(rows.into_iter().map(|i| (i.id.clone(), i))),
                    Err(err) if err.is_unavailable() => return Err(err),
                    Err(err) => {
                        input
                            .broken_incidents
                            .insert((*id).to_owned(), err.to_string());
                    }
                }
            }
        }
    }
    let mut services: Vec<&str> = input
        .incidents
        .values()
        .map(|i| i.service_id.as_str())
        .collect();
    services.sort_unstable();
    services.dedup();
    // Timers of one service share its policy: load it once a batch.
    let mut contexts = HashMap::new();
    for service_id in services {
        let pc = match load_policy_context(&mut *conn, service_id, now).await {
            Err(err) if err.is_unavailable() => return Err(err),
            pc => pc.map_err(|err| err.to_string()),
        };
        contexts.insert(service_id.to_owned(), pc);
    }
    input.contexts = contexts;
    Ok(input)
}

async fn fetch_incidents(conn: &mut SqliteConnection, ids: &[&str]) -> Result<Vec<Incident>> {
    let mut q = QueryBuilder::<Sqlite>::new(format!("{INCIDENT_SELECT} WHERE i.id IN ("));
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    q.push(")");
    Ok(q.build_query_as().fetch_all(&mut *conn).await?)
}

/// Arming a kind that is pending already replaces it (one pending timer per
/// incident and kind, `timers_incident_kind`).
const REARM: &str = " ON CONFLICT (incident_id, kind) DO UPDATE
    SET due_at = excluded.due_at, attempts = 0, created_at = excluded.created_at";

/// Writes a planned batch with a handful of set-based statements.
async fn write_batch(conn: &mut SqliteConnection, batch: &BatchPlan, now: Millis) -> Result<()> {
    if !batch.delete.is_empty() {
        let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM timers WHERE id IN (");
        let mut list = q.separated(", ");
        for id in &batch.delete {
            list.push_bind(id);
        }
        q.push(")");
        q.build().execute(&mut *conn).await?;
    }
    // Timers set aside: one UPDATE. Before the cancellations and inserts, so
    // that a timer another change of the batch cancels or re-arms ends as
    // that change says.
    for chunk in batch.failed.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE timers SET attempts = v.column2, due_at = v.column3 FROM (",
        );
        q.push_values(chunk, |mut row, f| {
            row.push_bind(&f.id)
                .push_bind(f.attempts)
                .push_bind(f.retry_at);
        });
        q.push(") AS v WHERE timers.id = v.column1");
        q.build().execute(&mut *conn).await?;
    }
    for (kinds, ids) in batch.cancel_groups() {
        let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM timers WHERE kind IN (");
        let mut list = q.separated(", ");
        for kind in kinds {
            list.push_bind(kind);
        }
        q.push(") AND incident_id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id);
        }
        q.push(")");
        q.build().execute(&mut *conn).await?;
    }
    // One UPDATE for the whole batch; SQLite names VALUES columns column1…
    for chunk in batch.incidents.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE incidents SET state = v.column2, acknowledged_at = v.column3, resolved_at = v.column4,
                current_user_id = v.column5, current_policy_rule_id = v.column6,
                escalation_loop_count = v.column7, updated_at = v.column8 FROM (",
        );
        q.push_values(chunk, |mut row, w| {
            let i = &w.after;
            row.push_bind(&i.id)
                .push_bind(&i.state)
                .push_bind(i.acknowledged_at)
                .push_bind(i.resolved_at)
                .push_bind(&i.current_user_id)
                .push_bind(&i.current_policy_rule_id)
                .push_bind(i.escalation_loop_count)
                .push_bind(i.updated_at);
        });
        q.push(") AS v WHERE incidents.id = v.column1");
        q.build().execute(&mut *conn).await?;
    }
    // SQLite allows 32766 bound values per statement; chunk well below it.
    for chunk in batch.insert.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO timers (id, account_id, incident_id, kind, due_at, created_at) ",
        );
        q.push_values(chunk, |mut row, (account, incident, kind, due)| {
            row.push_bind(new_id())
                .push_bind(account)
                .push_bind(incident)
                .push_bind(*kind)
                .push_bind(*due)
                .push_bind(now);
        });
        q.push(REARM);
        q.build().execute(&mut *conn).await?;
    }
    for chunk in batch.events.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (id, account_id, action, source_type, source_id, actor_type, actor_id, changeset, created_at) ",
        );
        q.push_values(chunk, |mut row, (account, incident, action, changes)| {
            row.push_bind(new_id())
                .push_bind(account)
                .push_bind(action)
                .push_bind("incident")
                .push_bind(incident)
                .push_bind("system")
                .push_bind(None::<String>)
                .push_bind(Json(changes))
                .push_bind(now);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Loads what the engine needs about an incident's service and policy.
pub(super) async fn load_policy_context(
    conn: &mut SqliteConnection,
    service_id: &str,
    now: Millis,
) -> Result<PolicyContext> {
    let row: Option<ServicePolicyRow> = sqlx::query_as(
        "SELECT s.account_id, s.policy_id, p.loop_limit, s.acknowledge_timeout, s.auto_resolve_timeout
         FROM services s JOIN policies p ON p.id = s.policy_id WHERE s.id = ?",
    )
    .bind(service_id)
    .fetch_optional(&mut *conn)
    .await?;
    let ServicePolicyRow {
        account_id,
        policy_id,
        loop_limit,
        acknowledge_timeout,
        auto_resolve_timeout,
    } = row.ok_or(StoreError::NotFound)?;
    let rules = rules_of(&mut *conn, &account_id, &policy_id).await?;
    let mut schedules = std::collections::HashMap::new();
    for id in PolicyContext::schedule_ids(&rules) {
        // Overrides that ended a day before `now` cannot matter any more.
        let data = super::schedules::load(&mut *conn, &account_id, &id, now - DAY_MS).await?;
        schedules.insert(id, data.to_core());
    }
    Ok(PolicyContext {
        rules,
        loop_limit,
        acknowledge_timeout,
        auto_resolve_timeout,
        schedules,
    })
}

/// Cancels and arms an incident's timers as a change says.
pub(super) async fn write_timers(
    conn: &mut SqliteConnection,
    account_id: &str,
    incident_id: &str,
    change: &Change,
    now: Millis,
) -> Result<()> {
    if !change.cancel.is_empty() {
        let marks = vec!["?"; change.cancel.len()].join(", ");
        let sql = format!("DELETE FROM timers WHERE incident_id = ? AND kind IN ({marks})");
        let mut q = sqlx::query(&sql).bind(incident_id);
        for kind in &change.cancel {
            q = q.bind(kind);
        }
        q.execute(&mut *conn).await?;
    }
    for (kind, due) in &change.schedule {
        sqlx::query(&format!(
            "INSERT INTO timers (id, account_id, incident_id, kind, due_at, created_at) VALUES (?, ?, ?, ?, ?, ?){REARM}"
        ))
        .bind(new_id())
        .bind(account_id)
        .bind(incident_id)
        .bind(kind)
        .bind(due)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Writes a planned change of an existing incident: the row, its timers
/// and the audit event.
pub(super) async fn apply_change(
    conn: &mut SqliteConnection,
    before: &Incident,
    change: &Change,
    actor: &Actor,
    now: Millis,
) -> Result<()> {
    let account_id = &before.account_id;
    sqlx::query(
        "UPDATE incidents SET state = ?, acknowledged_at = ?, resolved_at = ?, current_user_id = ?,
            current_policy_rule_id = ?, escalation_loop_count = ?, updated_at = ?
         WHERE account_id = ? AND id = ?",
    )
    .bind(change.state.as_str())
    .bind(change.acknowledged_at)
    .bind(change.resolved_at)
    .bind(&change.current_user_id)
    .bind(&change.current_policy_rule_id)
    .bind(change.loop_count)
    .bind(now)
    .bind(account_id)
    .bind(&before.id)
    .execute(&mut *conn)
    .await?;
    write_timers(conn, account_id, &before.id, change, now).await?;
    let changes = transition_changeset(
        before,
        change.state,
        &change.current_user_id,
        &change.current_policy_rule_id,
        change.loop_count,
    );
    let event = format!("incident.{}", change.action.as_str());
    insert_event(
        conn, account_id, &event, "incident", &before.id, actor, &changes, now,
    )
    .await
}
