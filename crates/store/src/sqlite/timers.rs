//! Durable timers (SQLite), and carrying out engine decisions.

use async_trait::async_trait;
use klaxon_core::engine::{Cause, TimerKind};
use klaxon_core::time::{Millis, DAY_MS};
use sqlx::SqliteConnection;

use super::incidents::fetch;
use super::policies::rules_of;
use super::{insert_event, SqliteStore};
use crate::plan::{plan, Change, PolicyContext};
use crate::util::{new_id, transition_changeset};
use crate::{Actor, FiredTimer, Incident, Result, StoreError, Timer, TimerStore};

#[async_trait]
impl TimerStore for SqliteStore {
    async fn fire_due_timers(&self, now: Millis, limit: i64) -> Result<Vec<FiredTimer>> {
        let mut tx = self.writer.begin().await?;
        let due: Vec<(String, String, String, String, Millis)> = sqlx::query_as(
            "SELECT id, account_id, incident_id, kind, due_at FROM timers
             WHERE due_at <= ? ORDER BY due_at, id LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut fired = Vec::with_capacity(due.len());
        let mut armed = false;
        for (timer_id, account_id, incident_id, kind, due_at) in due {
            // An earlier timer in this batch may have cancelled this one.
            let gone = sqlx::query("DELETE FROM timers WHERE id = ?")
                .bind(&timer_id)
                .execute(&mut *tx)
                .await?;
            if gone.rows_affected() == 0 {
                continue;
            }
            let Some(kind) = TimerKind::parse(&kind) else {
                tracing::error!(timer = %timer_id, kind, "dropping timer of unknown kind");
                continue;
            };
            let before = fetch(&mut tx, &account_id, &incident_id).await?;
            let pc = load_policy_context(&mut tx, &before.service_id, now).await?;
            // Timers never make impossible moves: a stale one plans nothing.
            let change = plan(Some(&before), Cause::Timer(kind), &pc, now)
                .ok()
                .flatten();
            if let Some(change) = &change {
                apply_change(&mut tx, &before, change, &Actor::System, now).await?;
                armed |= !change.schedule.is_empty();
            }
            fired.push(FiredTimer {
                kind: kind.as_str().to_owned(),
                incident_id,
                due_at,
                fired_at: now,
                acted: change.is_some(),
            });
        }
        tx.commit().await?;
        if armed {
            self.timer_notify.notify_one();
        }
        Ok(fired)
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
            "SELECT id, incident_id, kind, due_at FROM timers
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

/// Loads what the engine needs about an incident's service and policy.
pub(super) async fn load_policy_context(
    conn: &mut SqliteConnection,
    service_id: &str,
    now: Millis,
) -> Result<PolicyContext> {
    let row: Option<(String, String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT s.account_id, s.policy_id, p.loop_limit, s.acknowledge_timeout, s.auto_resolve_timeout
         FROM services s JOIN policies p ON p.id = s.policy_id WHERE s.id = ?",
    )
    .bind(service_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (account_id, policy_id, loop_limit, acknowledge_timeout, auto_resolve_timeout) =
        row.ok_or(StoreError::NotFound)?;
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
    for kind in &change.cancel {
        sqlx::query("DELETE FROM timers WHERE incident_id = ? AND kind = ?")
            .bind(incident_id)
            .bind(kind)
            .execute(&mut *conn)
            .await?;
    }
    for (kind, due) in &change.schedule {
        sqlx::query(
            "INSERT INTO timers (id, account_id, incident_id, kind, due_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
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
/// and the audit event. Returns the incident as it now is.
pub(super) async fn apply_change(
    conn: &mut SqliteConnection,
    before: &Incident,
    change: &Change,
    actor: &Actor,
    now: Millis,
) -> Result<Incident> {
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
    .await?;
    fetch(conn, account_id, &before.id).await
}
