//! What the store tells monitoring: counters it keeps as it commits
//! ([`StoreStats`], this process's) and the database's current queue
//! depths ([`StoreGauges`], read when asked). The server turns both into
//! Prometheus metrics; the store knows nothing of Prometheus.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use async_trait::async_trait;
use klaxon_core::time::Millis;
use klaxon_core::IncidentState;

use crate::Result;

/// What this process's store committed since it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Incidents opened (every path: triggers, the API, heartbeats).
    pub incidents_opened: u64,
    /// Incidents that moved to acknowledged.
    pub incidents_acknowledged: u64,
    /// Incidents that moved to resolved (by anyone, or by auto-resolve).
    pub incidents_resolved: u64,
    /// Triggers per group commit (SQLite's batcher; `None` elsewhere).
    pub trigger_batches: Option<BatchSizes>,
}

/// A histogram of group-commit sizes: how many triggers each commit took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchSizes {
    /// `(upper bound, commits of at most that many triggers)`, cumulative,
    /// bounds ascending.
    pub buckets: Vec<(u64, u64)>,
    /// Triggers in all commits.
    pub sum: u64,
    /// Commits.
    pub count: u64,
}

/// The database's queues as they stand (shared by every process on
/// PostgreSQL).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreGauges {
    /// Unresolved incidents that are triggered.
    pub incidents_triggered: i64,
    /// Unresolved incidents that are acknowledged.
    pub incidents_acknowledged: i64,
    /// Timers waiting to fire.
    pub timers_pending: i64,
    /// The earliest due time among them.
    pub timers_next_due: Option<Millis>,
    /// Outbox messages waiting to be sent.
    pub outbox_queued: i64,
    /// Outbox messages claimed by a sender and not finished.
    pub outbox_sending: i64,
}

/// Monitoring's view of the store.
#[async_trait]
pub trait MetricsStore: Send + Sync {
    /// This process's counters (atomic reads, no IO).
    fn stats(&self) -> StoreStats;
    /// Open incidents, timers and the outbox as they stand: a few counts
    /// over partial indexes, cheap enough for every scrape.
    async fn gauges(&self) -> Result<StoreGauges>;
}

/// Upper bounds of the batch-size buckets (the batcher takes at most 128).
const BATCH_BOUNDS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// The counters a backend bumps after its commits.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    opened: AtomicU64,
    acknowledged: AtomicU64,
    resolved: AtomicU64,
    batches: [AtomicU64; BATCH_BOUNDS.len()],
    /// Batches above the last bound (none while the batcher's limit is it).
    batch_over: AtomicU64,
    batch_sum: AtomicU64,
}

impl Counters {
    /// `n` incidents were opened.
    pub(crate) fn opened(&self, n: usize) {
        if n > 0 {
            self.opened.fetch_add(n as u64, Relaxed);
        }
    }

    /// An incident moved to `state`.
    pub(crate) fn moved(&self, state: IncidentState) {
        match state {
            IncidentState::Acknowledged => self.acknowledged.fetch_add(1, Relaxed),
            IncidentState::Resolved => self.resolved.fetch_add(1, Relaxed),
            IncidentState::Triggered => 0,
        };
    }

    /// A group commit took `size` triggers.
    pub(crate) fn batch(&self, size: usize) {
        let size = size as u64;
        match BATCH_BOUNDS.iter().position(|bound| size <= *bound) {
            Some(slot) => self.batches[slot].fetch_add(1, Relaxed),
            None => self.batch_over.fetch_add(1, Relaxed),
        };
        self.batch_sum.fetch_add(size, Relaxed);
    }

    /// A snapshot; `batcher` says whether this backend group-commits.
    pub(crate) fn snapshot(&self, batcher: bool) -> StoreStats {
        let trigger_batches = batcher.then(|| {
            let mut cumulative = 0;
            let buckets = BATCH_BOUNDS
                .iter()
                .zip(&self.batches)
                .map(|(bound, n)| {
                    cumulative += n.load(Relaxed);
                    (*bound, cumulative)
                })
                .collect();
            BatchSizes {
                buckets,
                sum: self.batch_sum.load(Relaxed),
                // Counted from the buckets, so that they agree with it.
                count: cumulative + self.batch_over.load(Relaxed),
            }
        });
        StoreStats {
            incidents_opened: self.opened.load(Relaxed),
            incidents_acknowledged: self.acknowledged.load(Relaxed),
            incidents_resolved: self.resolved.load(Relaxed),
            trigger_batches,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_fall_in_cumulative_buckets() {
        let c = Counters::default();
        for size in [1, 1, 3, 128, 500] {
            c.batch(size);
        }
        c.opened(4);
        c.moved(IncidentState::Resolved);
        c.moved(IncidentState::Triggered);
        let s = c.snapshot(true);
        let b = s.trigger_batches.expect("a batcher");
        assert_eq!(b.count, 5);
        assert_eq!(b.sum, 633);
        assert_eq!(b.buckets[0], (1, 2));
        assert_eq!(b.buckets[2], (4, 3));
        assert_eq!(b.buckets[7], (128, 4));
        assert_eq!(s.incidents_opened, 4);
        assert_eq!(s.incidents_resolved, 1);
        assert_eq!(s.incidents_acknowledged, 0);
        assert_eq!(c.snapshot(false).trigger_batches, None);
    }
}
