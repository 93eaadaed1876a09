//! The escalation engine: fires durable timers as they come due.
//!
//! It sleeps until the earliest pending timer (converted from the virtual
//! clock to real time) and is woken early when a timer is armed — by a
//! request in this process, or, on PostgreSQL, by a NOTIFY from another
//! process. Polling is only a fallback, every [`FALLBACK_POLL`]. What a
//! timer does is decided by `klaxon_core::engine::decide`; the store
//! applies it and deletes the timer in one transaction. A timer that
//! cannot be processed (its incident's data is broken) is set aside by the
//! store with a growing delay and logged; the rest of the batch fires, so
//! a step fails only when the database itself does.
//!
//! Heartbeats are fired by the same loop: a heartbeat's row carries its
//! own due time (`HeartbeatStore::fire_due_heartbeats`), and the loop
//! sleeps until the earlier of the next timer and the next heartbeat.
//!
//! [`run_due`] is the loop's firing step on its own, without the sleeping
//! (both go through one `fire_due`): tests on a manual clock call it after
//! moving the clock.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use klaxon_core::time::Millis;
use klaxon_store::{FiredHeartbeat, FiredTimer, Store};
use tokio::sync::watch;

use crate::clock::Clock;

/// Longest sleep without a wake-up (covers a lost NOTIFY or a timer armed
/// by a process that died before notifying).
pub const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// Timers fired per transaction.
pub const BATCH: i64 = 256;
/// Heartbeats claimed at once (each then opens its incident on its own).
pub const HEARTBEAT_BATCH: i64 = 64;
/// Pause before retrying timers that are due but were skipped because a
/// request (or another process) holds their incident.
const BUSY_RETRY: Duration = Duration::from_millis(10);

/// Runs until `shutdown` turns true. Never returns an error: a failing
/// database is logged and retried.
pub async fn run(store: Arc<dyn Store>, clock: Clock, shutdown: watch::Receiver<bool>) {
    run_observed(store, clock, shutdown, |_, _| {}).await;
}

/// [`run`], calling `observe(fired, committed_at)` after every batch (the
/// timer benchmark measures lateness with it).
pub async fn run_observed(
    store: Arc<dyn Store>,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
    mut observe: impl FnMut(&[FiredTimer], Millis) + Send,
) {
    tracing::info!("escalation engine started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        // A long backlog is fired batch by batch; shutting down between
        // two batches loses nothing (each one is committed).
        let fired = fire_due(&*store, &clock, |batch| {
            observe(batch, clock.now_ms());
            if *shutdown.borrow() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await;
        let fired = match fired {
            Ok(ControlFlow::Continue(())) => {
                fire_heartbeats(&*store, &clock, |_| {
                    if *shutdown.borrow() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .await
            }
            other => other,
        };
        let wait = match fired {
            Ok(ControlFlow::Break(())) => break,
            Ok(ControlFlow::Continue(())) => next_wait(&*store, &clock).await,
            Err(err) => Err(err),
        };
        let wait = match wait {
            Ok(wait) => wait,
            Err(err) => {
                tracing::error!(error = %err, "engine step failed; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = store.timers_changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!("escalation engine stopped");
}

/// Fires every timer due at the clock's now, batch after batch, and
/// returns them in the order they fired; then every heartbeat due (see
/// [`run_due_heartbeats`]). Timers it arms are due later (every timeout is
/// at least a minute), so one call leaves nothing due behind — except, on
/// PostgreSQL, a timer whose incident another transaction holds at that
/// moment; the loop retries those shortly.
pub async fn run_due(store: &dyn Store, clock: &Clock) -> klaxon_store::Result<Vec<FiredTimer>> {
    let mut all = Vec::new();
    // Never stopped early: `each` always continues.
    let _ = fire_due(store, clock, |batch| {
        all.extend_from_slice(batch);
        ControlFlow::Continue(())
    })
    .await?;
    run_due_heartbeats(store, clock).await?;
    Ok(all)
}

/// Fires every heartbeat due at the clock's now and returns them in the
/// order they fired. A fired heartbeat is next due an interval later (at
/// least a minute), so one call leaves nothing due behind.
pub async fn run_due_heartbeats(
    store: &dyn Store,
    clock: &Clock,
) -> klaxon_store::Result<Vec<FiredHeartbeat>> {
    let mut all = Vec::new();
    let _ = fire_heartbeats(store, clock, |batch| {
        all.extend_from_slice(batch);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(all)
}

/// Fires due heartbeats in batches of [`HEARTBEAT_BATCH`], like
/// [`fire_due`] does timers.
async fn fire_heartbeats(
    store: &dyn Store,
    clock: &Clock,
    mut each: impl FnMut(&[FiredHeartbeat]) -> ControlFlow<()>,
) -> klaxon_store::Result<ControlFlow<()>> {
    loop {
        let fired = store
            .fire_due_heartbeats(clock.now_ms(), HEARTBEAT_BATCH)
            .await?;
        for h in &fired {
            tracing::debug!(
                heartbeat = %h.heartbeat_id,
                late_ms = h.fired_at - h.due_at,
                outcome = ?h.outcome,
                "heartbeat fired"
            );
        }
        if fired.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        if each(&fired).is_break() {
            return Ok(ControlFlow::Break(()));
        }
        if (fired.len() as i64) < HEARTBEAT_BATCH {
            return Ok(ControlFlow::Continue(()));
        }
    }
}

/// Fires due timers in batches of [`BATCH`], handing each batch to
/// `each` (which may stop early), until a batch comes back short.
async fn fire_due(
    store: &dyn Store,
    clock: &Clock,
    mut each: impl FnMut(&[FiredTimer]) -> ControlFlow<()>,
) -> klaxon_store::Result<ControlFlow<()>> {
    loop {
        let fired = store.fire_due_timers(clock.now_ms(), BATCH).await?;
        for t in &fired {
            tracing::debug!(
                incident = %t.incident_id,
                kind = %t.kind,
                late_ms = t.fired_at - t.due_at,
                acted = t.acted,
                "timer fired"
            );
        }
        if fired.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        if each(&fired).is_break() {
            return Ok(ControlFlow::Break(()));
        }
        // A short batch means the store found nothing more that it could
        // fire at this instant.
        if (fired.len() as i64) < BATCH {
            return Ok(ControlFlow::Continue(()));
        }
    }
}

/// How long to sleep before the next timer or heartbeat is due.
async fn next_wait(store: &dyn Store, clock: &Clock) -> klaxon_store::Result<Duration> {
    let next = match (
        store.next_timer_due().await?,
        store.next_heartbeat_due().await?,
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let wait = match (next, clock.speed()) {
        (Some(due), Some(speed)) => real_wait(due - clock.now_ms(), speed).min(FALLBACK_POLL),
        // Nothing pending, or a manual clock: time passes only when a
        // test moves it (and runs the engine itself).
        _ => FALLBACK_POLL,
    };
    Ok(wait)
}

/// Real time until a virtual-clock delay has passed.
fn real_wait(virtual_ms: Millis, speed: f64) -> Duration {
    if virtual_ms <= 0 {
        // Due but not fired: its incident is busy. Let the holder finish.
        return BUSY_RETRY;
    }
    let real = (virtual_ms as f64 / speed).ceil().max(1.0);
    Duration::from_millis(real as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_scale_with_clock_speed() {
        assert_eq!(real_wait(60_000, 60.0), Duration::from_millis(1000));
        assert_eq!(real_wait(1, 60.0), Duration::from_millis(1));
        assert_eq!(real_wait(0, 1.0), BUSY_RETRY);
        assert_eq!(real_wait(-5, 1.0), BUSY_RETRY);
    }
}
