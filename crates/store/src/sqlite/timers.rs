//! Firing due timers (SQLite): one batch per transaction on the single
//! writer, so nothing else can change its incidents meanwhile.

use klaxon_core::time::Millis;

use super::SqliteStore;
use crate::plan::{plan_batch, BatchInput, BatchPlan};
use crate::sql::outbox::write_batch_pages;
use crate::sql::timers::{
    due_timers, fetch_incidents, insert_events, insert_timers, load_policy_context, push_row,
    NewTimer, TimerEngine,
};
use crate::sql::{query, Backend, Change, Db, Write};
use crate::{FiredTimer, Result};

impl TimerEngine for SqliteStore {
    async fn fire_due(&self, now: Millis, limit: i64) -> Result<Vec<FiredTimer>> {
        let mut tx = self.write().await?;
        let due = due_timers(&mut tx, now, limit).await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<String> = due.iter().map(|t| t.incident_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let input = load_batch(&mut tx, &ids, now).await?;
        let batch = plan_batch(&due, input, now);
        write_batch(&mut tx, &batch, now).await?;
        if write_batch_pages(&mut tx, &batch, now).await? {
            tx.record(Change::MessagesQueued);
        }
        // Auto-resolved incidents stop deduplicating triggers.
        for w in batch
            .incidents
            .iter()
            .filter(|w| w.after.state == "resolved")
        {
            tx.record(Change::IncidentClosed {
                id: w.after.id.clone(),
            });
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
        self.timer_notify.notified().await;
    }
}

/// The incidents of a batch's timers, and their services' policies. What
/// cannot be read (a row that does not decode, a policy or schedule that
/// is missing or malformed) is recorded in the input with its reason, so
/// that only the timers depending on it are set aside; only an unreachable
/// database fails the batch.
async fn load_batch(db: &mut impl Db, ids: &[String], now: Millis) -> Result<BatchInput> {
    let mut input = BatchInput::default();
    match fetch_incidents(db, ids).await {
        Ok(rows) => input.incidents = rows.into_iter().map(|i| (i.id.clone(), i)).collect(),
        Err(err) if err.is_unavailable() => return Err(err),
        Err(_) => {
            // One bad row fails the set-based read: find it row by row.
            for id in ids {
                match fetch_incidents(db, std::slice::from_ref(id)).await {
                    Ok(rows) => input
                        .incidents
                        .extend(rows.into_iter().map(|i| (i.id.clone(), i))),
                    Err(err) if err.is_unavailable() => return Err(err),
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
        let pc = match load_policy_context(db, &service_id, now).await {
            Err(err) if err.is_unavailable() => return Err(err),
            pc => pc.map_err(|err| err.to_string()),
        };
        input.contexts.insert(service_id, pc);
    }
    Ok(input)
}

/// Writes a planned batch with a handful of set-based statements. SQLite
/// allows 32,766 bound values per statement: chunks stay well below.
async fn write_batch(db: &mut impl Db, batch: &BatchPlan, now: Millis) -> Result<()> {
    for chunk in batch.delete.chunks(1000) {
        let mut q = query("DELETE FROM timers WHERE id IN ");
        q.push_list(chunk);
        db.execute(q).await?;
    }
    // Timers set aside: one UPDATE. Before the cancellations and inserts, so
    // that a timer another change of the batch cancels or re-arms ends as
    // that change says. SQLite names VALUES columns column1…
    for chunk in batch.failed.chunks(1000) {
        let mut q =
            query("UPDATE timers SET attempts = v.column2, due_at = v.column3 FROM (VALUES ");
        for (i, f) in chunk.iter().enumerate() {
            push_row(&mut q, i, |q| {
                q.push_bind(&f.id)
                    .push(", ")
                    .push_bind(&f.attempts)
                    .push(", ")
                    .push_bind(&f.retry_at);
            });
        }
        q.push(") AS v WHERE timers.id = v.column1");
        db.execute(q).await?;
    }
    for (kinds, ids) in batch.cancel_groups() {
        let mut q = query("DELETE FROM timers WHERE kind IN ");
        q.push_list(&kinds)
            .push(" AND incident_id IN ")
            .push_list(&ids);
        db.execute(q).await?;
    }
    for chunk in batch.incidents.chunks(1000) {
        let mut q = query(
            "UPDATE incidents SET state = v.column2, acknowledged_at = v.column3, resolved_at = v.column4,
                current_user_id = v.column5, current_policy_rule_id = v.column6,
                escalation_loop_count = v.column7, updated_at = v.column8 FROM (VALUES ",
        );
        for (n, w) in chunk.iter().enumerate() {
            let i = &w.after;
            push_row(&mut q, n, |q| {
                q.push_bind(&i.id)
                    .push(", ")
                    .push_bind(&i.state)
                    .push(", ")
                    .push_bind(&i.acknowledged_at)
                    .push(", ")
                    .push_bind(&i.resolved_at)
                    .push(", ")
                    .push_bind(&i.current_user_id)
                    .push(", ")
                    .push_bind(&i.current_policy_rule_id)
                    .push(", ")
                    .push_bind(&i.escalation_loop_count)
                    .push(", ")
                    .push_bind(&i.updated_at);
            });
        }
        q.push(") AS v WHERE incidents.id = v.column1");
        db.execute(q).await?;
    }
    let timers: Vec<NewTimer<'_>> = batch
        .insert
        .iter()
        .map(|(account, incident, kind, due)| {
            (account.as_str(), incident.as_str(), *kind, *due, now)
        })
        .collect();
    insert_timers(db, &timers).await?;
    insert_events(db, &batch.events, now).await
}
