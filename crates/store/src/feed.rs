//! Reading the audit log in order, for live streams: the rows and the
//! [`EventFeedStore`] trait; the one implementation for every backend is
//! `sql/feed.rs`.

use async_trait::async_trait;

use crate::{Event, Result};

/// An audit event with its place in the log.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// The log's sequence number (ascending in insertion order, across
    /// accounts).
    pub seq: i64,
    /// The event.
    pub event: Event,
}

/// One read of the log after a sequence number.
#[derive(Debug, Clone, Default)]
pub struct EventFeed {
    /// The account's events after the requested number, up to
    /// [`through`](Self::through), oldest first.
    pub events: Vec<LoggedEvent>,
    /// The log is complete up to here: no event numbered at or below it
    /// can still appear. The next read starts after it.
    pub through: i64,
    /// Numbers `(first, last)` just after `through` that are not visible
    /// although a later one is: a transaction still committing (it took
    /// its numbers before a later one committed), or one that rolled back
    /// (its numbers are never used). Only time tells them apart: once the
    /// caller has waited long enough, it passes `last` as `settled` and the
    /// read goes past them.
    pub hole: Option<(i64, i64)>,
    /// The read stopped at its limit: more is waiting.
    pub more: bool,
}

/// The audit log as a feed: what `GET /events/stream` polls.
#[async_trait]
pub trait EventFeedStore: Send + Sync {
    /// The highest sequence number in the log (0 when it is empty).
    async fn latest_event_seq(&self) -> Result<i64>;
    /// The account's events numbered after `after`, oldest first, reading
    /// up to `limit` numbers of the log. Holes at or below `settled` are
    /// taken as rolled back.
    async fn event_feed(
        &self,
        account_id: &str,
        after: i64,
        settled: i64,
        limit: i64,
    ) -> Result<EventFeed>;
}
