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

use klaxon_core::time::Millis;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, Postgres};
use tokio::sync::Notify;

use super::conn::Pg;
use super::PgStore;
use crate::plan::{plan_batch, BatchInput, BatchPlan};
use crate::sql::outbox::write_batch_pages;
use crate::sql::timers::{
    due_timers, fetch_incidents, insert_events, insert_timers, load_policy_context, NewTimer,
    TimerEngine,
};
use crate::sql::{Backend, Change, Write};
use crate::{FiredTimer, Result};

/// The LISTEN/NOTIFY channel that announces newly armed timers.
pub(super) const CHANNEL: &str = "klaxon_timers";
/// The LISTEN/NOTIFY channel that announces newly queued messages.
pub(super) const OUTBOX_CHANNEL: &str = "klaxon_outbox";

impl TimerEngine for PgStore {
    async fn fire_due(&self, now: Millis, limit: i64) -> Result<Vec<FiredTimer>> {
        let mut tx = self.write().await?;
        let due = due_timers(&mut tx, now, limit).await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<&str> = due.iter().map(|t| t.incident_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let conn = tx.conn();
        // Incidents a request holds are skipped (their timers stay for the
        // next round): the engine never waits for a lock.
        let locked: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM incidents WHERE id = ANY($1) FOR NO KEY UPDATE SKIP LOCKED",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let input = load_batch(conn, &locked, now).await?;
        let batch = plan_batch(&due, input, now);
        write_batch(conn, &batch, now).await?;
        if write_batch_pages(&mut Pg(&mut *conn), &batch, now).await? {
            tx.record(Change::MessagesQueued);
        }
        if !batch.insert.is_empty() {
            tx.record(Change::TimersArmed);
        }
        tx.commit().await?;
        batch.count_moves(self.counters());
        batch.log_failures();
        Ok(batch.fired)
    }

    async fn timers_armed(&self) {
        self.start_listener();
        self.timer_notify.notified().await;
    }
}

/// Forwards NOTIFYs on the timer and outbox channels to this process's
/// engine and sender, with a reconnect loop; ends when the pool is closed.
pub(super) async fn listen(pool: sqlx::PgPool, timers: Arc<Notify>, outbox: Arc<Notify>) {
    while !pool.is_closed() {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if let Err(err) = listener.listen_all([CHANNEL, OUTBOX_CHANNEL]).await {
                    tracing::warn!(error = %err, "cannot LISTEN for timers and messages");
                } else {
                    // Anything armed or queued while we were not listening.
                    timers.notify_one();
                    outbox.notify_one();
                    loop {
                        match listener.recv().await {
                            Ok(n) if n.channel() == OUTBOX_CHANNEL => outbox.notify_one(),
                            Ok(_) => timers.notify_one(),
                            Err(err) => {
                                if !pool.is_closed() {
                                    tracing::warn!(error = %err, "the LISTEN connection was lost");
                                }
                                break;
                            }
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot connect the LISTEN connection"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
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
    match fetch_incidents(&mut Pg(&mut *conn), ids).await {
        Ok(rows) => input.incidents = rows.into_iter().map(|i| (i.id.clone(), i)).collect(),
        Err(err) if err.is_unavailable() => return Err(err),
        Err(_) => {
            // One bad row fails the set-based read: find it row by row.
            for id in ids {
                let mut sp = sqlx::Connection::begin(&mut *conn).await?;
                let rows = fetch_incidents(&mut Pg(&mut *sp), std::slice::from_ref(id)).await;
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
        let pc = load_policy_context(&mut Pg(&mut *sp), &service_id, now).await;
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
    let timers: Vec<NewTimer<'_>> = batch
        .insert
        .iter()
        .map(|(account, incident, kind, due)| {
            (account.as_str(), incident.as_str(), *kind, *due, now)
        })
        .collect();
    let mut db = Pg(&mut *conn);
    insert_timers(&mut db, &timers).await?;
    insert_events(&mut db, &batch.events, now).await
}
