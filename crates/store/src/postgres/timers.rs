//! Durable timers (PostgreSQL), and carrying out engine decisions.
//!
//! Several processes may run engines on one database. A due timer is
//! claimed with `FOR UPDATE SKIP LOCKED`, its incident locked with
//! `SKIP LOCKED` too, and the effect applied and the timer deleted in the
//! same transaction: exactly one process fires each timer, and a process
//! that dies mid-way releases its locks with its connection. The engine
//! never waits for a lock (everything it takes is `SKIP LOCKED`), so it
//! cannot deadlock with request handlers, which lock an incident and then
//! its timers. A timer whose incident is busy is left for the next round.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::engine::{Cause, TimerKind};
use klaxon_core::time::{Millis, DAY_MS};
use sqlx::postgres::PgListener;
use sqlx::PgConnection;
use tokio::sync::Notify;

use super::incidents::fetch;
use super::policies::rules_of;
use super::{insert_event, PgStore};
use crate::plan::{plan, Change, PolicyContext};
use crate::util::{new_id, transition_changeset};
use crate::{Actor, FiredTimer, Incident, Result, StoreError, Timer, TimerStore};

/// The LISTEN/NOTIFY channel that announces newly armed timers.
const CHANNEL: &str = "klaxon_timers";

#[async_trait]
impl TimerStore for PgStore {
    async fn fire_due_timers(&self, now: Millis, limit: i64) -> Result<Vec<FiredTimer>> {
        let mut tx = self.pool.begin().await?;
        let due: Vec<(String, String, String, String, Millis)> = sqlx::query_as(
            r#"SELECT id, account_id, incident_id, kind, due_at FROM timers
               WHERE due_at <= $1 ORDER BY due_at, id COLLATE "C" LIMIT $2
               FOR UPDATE SKIP LOCKED"#,
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut fired = Vec::with_capacity(due.len());
        let mut armed = false;
        for (timer_id, account_id, incident_id, kind, due_at) in due {
            let locked: Option<(String,)> = sqlx::query_as(
                "SELECT id FROM incidents WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED",
            )
            .bind(&incident_id)
            .fetch_optional(&mut *tx)
            .await?;
            if locked.is_none() {
                // Busy (a request is acting on it) or deleted: next round.
                continue;
            }
            // An earlier timer in this batch may have cancelled this one.
            let gone = sqlx::query("DELETE FROM timers WHERE id = $1")
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
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(due,)| due))
    }

    async fn timers_changed(&self) {
        self.listener_started.call_once(|| {
            tokio::spawn(listen(self.pool.clone(), self.timer_notify.clone()));
        });
        self.timer_notify.notified().await;
    }

    async fn list_timers(&self, account_id: &str, incident_id: &str) -> Result<Vec<Timer>> {
        Ok(sqlx::query_as(
            r#"SELECT id, incident_id, kind, due_at FROM timers
               WHERE account_id = $1 AND incident_id = $2 ORDER BY due_at, id COLLATE "C""#,
        )
        .bind(account_id)
        .bind(incident_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Forwards NOTIFYs on the timer channel to this process's engine, with a
/// reconnect loop; ends when the pool is closed.
async fn listen(pool: sqlx::PgPool, notify: Arc<Notify>) {
    while !pool.is_closed() {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if let Err(err) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %err, "cannot LISTEN for timers");
                } else {
                    // Anything armed while we were not listening.
                    notify.notify_one();
                    loop {
                        match listener.recv().await {
                            Ok(_) => notify.notify_one(),
                            Err(err) => {
                                if !pool.is_closed() {
                                    tracing::warn!(error = %err, "timer listener lost its connection");
                                }
                                break;
                            }
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot connect the timer listener"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl PgStore {
    /// Wakes this process's engine after a commit that armed timers (other
    /// processes hear the NOTIFY sent in the transaction).
    pub(super) fn timers_armed(&self, change: &Change) {
        if !change.schedule.is_empty() {
            self.timer_notify.notify_one();
        }
    }
}

/// Loads what the engine needs about an incident's service and policy.
pub(super) async fn load_policy_context(
    conn: &mut PgConnection,
    service_id: &str,
    now: Millis,
) -> Result<PolicyContext> {
    let row: Option<(String, String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT s.account_id, s.policy_id, p.loop_limit, s.acknowledge_timeout, s.auto_resolve_timeout
         FROM services s JOIN policies p ON p.id = s.policy_id WHERE s.id = $1",
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

/// Cancels and arms an incident's timers as a change says; announces armed
/// timers to every process on commit.
pub(super) async fn write_timers(
    conn: &mut PgConnection,
    account_id: &str,
    incident_id: &str,
    change: &Change,
    now: Millis,
) -> Result<()> {
    if !change.cancel.is_empty() {
        sqlx::query("DELETE FROM timers WHERE incident_id = $1 AND kind = ANY($2)")
            .bind(incident_id)
            .bind(&change.cancel)
            .execute(&mut *conn)
            .await?;
    }
    for (kind, due) in &change.schedule {
        sqlx::query(
            "INSERT INTO timers (id, account_id, incident_id, kind, due_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
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
    if !change.schedule.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Writes a planned change of an existing incident: the row, its timers
/// and the audit event. Returns the incident as it now is.
pub(super) async fn apply_change(
    conn: &mut PgConnection,
    before: &Incident,
    change: &Change,
    actor: &Actor,
    now: Millis,
) -> Result<Incident> {
    let account_id = &before.account_id;
    sqlx::query(
        "UPDATE incidents SET state = $1, acknowledged_at = $2, resolved_at = $3, current_user_id = $4,
            current_policy_rule_id = $5, escalation_loop_count = $6, updated_at = $7
         WHERE account_id = $8 AND id = $9",
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
