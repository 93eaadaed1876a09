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
use klaxon_core::time::{Millis, DAY_MS};
use sqlx::postgres::PgListener;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tokio::sync::Notify;

use super::incidents::INCIDENT_SELECT;
use super::policies::rules_of;
use super::{insert_event, PgStore};
use crate::plan::{
    plan_batch, BatchInput, BatchPlan, Change, DueTimer, PolicyContext, ServicePolicyRow,
};
use crate::util::{new_id, transition_changeset};
use crate::{Actor, FiredTimer, Incident, Result, StoreError, Timer, TimerStore};

/// The LISTEN/NOTIFY channel that announces newly armed timers.
pub(super) const CHANNEL: &str = "klaxon_timers";

#[async_trait]
impl TimerStore for PgStore {
    async fn fire_due_timers(&self, now: Millis, limit: i64) -> Result<Vec<FiredTimer>> {
        let mut tx = self.pool.begin().await?;
        let due: Vec<DueTimer> = sqlx::query_as(
            r#"SELECT id, incident_id, kind, due_at, attempts FROM timers
               WHERE due_at <= $1 ORDER BY due_at, id COLLATE "C" LIMIT $2
               FOR UPDATE SKIP LOCKED"#,
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
        // Incidents a request holds are skipped (their timers stay for the
        // next round): the engine never waits for a lock.
        let locked: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM incidents WHERE id = ANY($1) FOR NO KEY UPDATE SKIP LOCKED",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let locked: Vec<String> = locked.into_iter().map(|(id,)| id).collect();
        let input = load_batch(&mut tx, &locked, now).await?;
        let batch = plan_batch(&due, input, now);
        write_batch(&mut tx, &batch, now).await?;
        tx.commit().await?;
        batch.log_failures();
        if !batch.insert.is_empty() {
            self.timer_notify.notify_one();
        }
        Ok(batch.fired)
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
            r#"SELECT id, incident_id, kind, due_at, attempts FROM timers
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

/// The (locked) incidents of a batch's timers, and their services'
/// policies. What cannot be read (a row that does not decode, a policy or
/// schedule that is missing or malformed) is recorded in the input with
/// its reason, so that only the timers depending on it are set aside; only
/// an unreachable database fails the batch. Each policy is loaded in a
/// savepoint: an error PostgreSQL raises would otherwise abort the whole
/// transaction.
async fn load_batch(conn: &mut PgConnection, ids: &[String], now: Millis) -> Result<BatchInput> {
    let mut input = BatchInput::default();
    match fetch_incidents(conn, ids).await {
        Ok(rows) => input.incidents = rows.into_iter().map(|i| (i.id.clone(), i)).collect(),
        Err(err) if err.is_unavailable() => return Err(err),
        Err(_) => {
            // One bad row fails the set-based read: find it row by row.
            for id in ids {
                let mut sp = sqlx::Connection::begin(&mut *conn).await?;
                let rows = fetch_incidents(&mut sp, std::slice::from_ref(id)).await;
                match settle(sp, rows).await? {
                    Ok(rows) => input
                        .incidents
                        .extend(rows.into_iter().map(|i| (i.id.clone(), i))),
                    Err(err) => {
                        input.broken_incidents.insert(id.clone(), err.to_string());
                    }
                }
            }
        }
    }
    let mut services: Vec<String> = input
        .incidents
        .values()
        .map(|i| i.service_id.clone())
        .collect();
    services.sort_unstable();
    services.dedup();
    // Timers of one service share its policy: load it once a batch.
    for service_id in services {
        let mut sp = sqlx::Connection::begin(&mut *conn).await?;
        let pc = load_policy_context(&mut sp, &service_id, now).await;
        let pc = settle(sp, pc).await?;
        input
            .contexts
            .insert(service_id, pc.map_err(|err| err.to_string()));
    }
    Ok(input)
}

/// Ends a savepoint after the work done in it: released if `result` is
/// `Ok`, rolled back if not, so the transaction stays usable. The outer
/// `Result` is an unreachable database; the inner one is the work's own.
async fn settle<T>(sp: sqlx::Transaction<'_, Postgres>, result: Result<T>) -> Result<Result<T>> {
    match result {
        Ok(value) => {
            sp.commit().await?;
            Ok(Ok(value))
        }
        Err(err) if err.is_unavailable() => Err(err),
        Err(err) => {
            sp.rollback().await?;
            Ok(Err(err))
        }
    }
}

async fn fetch_incidents(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<Incident>> {
    Ok(
        sqlx::query_as(&format!("{INCIDENT_SELECT} WHERE i.id = ANY($1)"))
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// Arming a kind that is pending already replaces it (one pending timer per
/// incident and kind, `timers_incident_kind`).
const REARM: &str = " ON CONFLICT (incident_id, kind) DO UPDATE
    SET due_at = excluded.due_at, attempts = 0, created_at = excluded.created_at";

/// Writes a planned batch with a handful of set-based statements.
async fn write_batch(conn: &mut PgConnection, batch: &BatchPlan, now: Millis) -> Result<()> {
    if !batch.delete.is_empty() {
        sqlx::query("DELETE FROM timers WHERE id = ANY($1)")
            .bind(&batch.delete)
            .execute(&mut *conn)
            .await?;
    }
    // Timers set aside: one UPDATE. Before the cancellations and inserts, so
    // that a timer another change of the batch cancels or re-arms ends as
    // that change says.
    if !batch.failed.is_empty() {
        sqlx::query(
            "UPDATE timers AS t SET attempts = v.attempts, due_at = v.retry_at
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS v(id, attempts, retry_at)
             WHERE t.id = v.id",
        )
        .bind(
            batch
                .failed
                .iter()
                .map(|f| f.id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(batch.failed.iter().map(|f| f.attempts).collect::<Vec<_>>())
        .bind(batch.failed.iter().map(|f| f.retry_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    for (kinds, ids) in batch.cancel_groups() {
        sqlx::query("DELETE FROM timers WHERE kind = ANY($1) AND incident_id = ANY($2)")
            .bind(&kinds)
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
    }
    if !batch.incidents.is_empty() {
        // One UPDATE for the whole batch, the new values as parallel arrays.
        let rows = || batch.incidents.iter().map(|w| &w.after);
        sqlx::query(
            "UPDATE incidents AS i SET state = v.state, acknowledged_at = v.acknowledged_at,
                resolved_at = v.resolved_at, current_user_id = v.current_user_id,
                current_policy_rule_id = v.current_policy_rule_id,
                escalation_loop_count = v.escalation_loop_count, updated_at = v.updated_at
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::bigint[])
                AS v(id, state, acknowledged_at, resolved_at, current_user_id, current_policy_rule_id,
                     escalation_loop_count, updated_at)
             WHERE i.id = v.id",
        )
        .bind(rows().map(|i| i.id.as_str()).collect::<Vec<_>>())
        .bind(rows().map(|i| i.state.as_str()).collect::<Vec<_>>())
        .bind(rows().map(|i| i.acknowledged_at).collect::<Vec<_>>())
        .bind(rows().map(|i| i.resolved_at).collect::<Vec<_>>())
        .bind(rows().map(|i| i.current_user_id.as_deref()).collect::<Vec<_>>())
        .bind(rows().map(|i| i.current_policy_rule_id.as_deref()).collect::<Vec<_>>())
        .bind(rows().map(|i| i.escalation_loop_count).collect::<Vec<_>>())
        .bind(rows().map(|i| i.updated_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    // PostgreSQL allows 65535 bound values per statement; chunk well below.
    for chunk in batch.insert.chunks(1000) {
        let mut q = QueryBuilder::<Postgres>::new(
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
    if !batch.insert.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    for chunk in batch.events.chunks(1000) {
        let mut q = QueryBuilder::<Postgres>::new(
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
    conn: &mut PgConnection,
    service_id: &str,
    now: Millis,
) -> Result<PolicyContext> {
    let row: Option<ServicePolicyRow> = sqlx::query_as(
        "SELECT s.account_id, s.policy_id, p.loop_limit, s.acknowledge_timeout, s.auto_resolve_timeout
         FROM services s JOIN policies p ON p.id = s.policy_id WHERE s.id = $1",
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
        sqlx::query(&format!(
            "INSERT INTO timers (id, account_id, incident_id, kind, due_at, created_at) VALUES ($1, $2, $3, $4, $5, $6){REARM}"
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
    if !change.schedule.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Writes a planned change of an existing incident: the row, its timers
/// and the audit event.
pub(super) async fn apply_change(
    conn: &mut PgConnection,
    before: &Incident,
    change: &Change,
    actor: &Actor,
    now: Millis,
) -> Result<()> {
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
    .await
}
