//! Monitoring's reads, for both backends: open incidents, pending timers
//! and the outbox's queue, each counted over a partial index where there
//! is one (`incidents_open_message`, `outbox_queued`, `outbox_sending`),
//! so a scrape costs what is open or waiting, not the history.

use async_trait::async_trait;

use super::{query, Backend, Db};
use crate::{MetricsStore, Result, StoreGauges, StoreStats};

#[async_trait]
impl<B: Backend> MetricsStore for B {
    fn stats(&self) -> StoreStats {
        self.counters().snapshot(B::GROUP_COMMIT)
    }

    async fn gauges(&self) -> Result<StoreGauges> {
        let mut db = self.read().await?;
        let open: Vec<(String, i64)> = db
            .fetch_all(query(
                "SELECT state, count(*) FROM incidents WHERE state <> 'resolved' GROUP BY state",
            ))
            .await?;
        let (timers_pending, timers_next_due): (i64, Option<i64>) = db
            .fetch_one(query("SELECT count(*), min(due_at) FROM timers"))
            .await?;
        let (outbox_queued, outbox_sending): (i64, i64) = db
            .fetch_one(query(
                "SELECT (SELECT count(*) FROM outbox WHERE status = 'queued'),
                        (SELECT count(*) FROM outbox WHERE status = 'sending')",
            ))
            .await?;
        let count = |state: &str| open.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
        Ok(StoreGauges {
            incidents_triggered: count("triggered"),
            incidents_acknowledged: count("acknowledged"),
            timers_pending,
            timers_next_due,
            outbox_queued,
            outbox_sending,
        })
    }
}
