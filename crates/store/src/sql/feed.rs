//! The audit log as a feed, for both backends.
//!
//! Events are numbered by `seq` as they are inserted. Whether they also
//! become visible in that order is the backends' difference
//! ([`LogOrder`]): SQLite writes one transaction at a time, so what a read
//! sees is final up to the highest number it sees. On PostgreSQL
//! transactions commit in any order: a number can be taken by one still
//! running while a later number is visible already. A read there looks at
//! the numbers themselves (every account's, the primary key only) and stops
//! before the first hole, which the caller either sees filled by the next
//! read or, after waiting long enough, declares rolled back.

use async_trait::async_trait;

use super::row::{Decode, FromRow, Row};
use super::{query, Backend, Db};
use crate::{Event, EventFeed, EventFeedStore, LoggedEvent, Result};

/// The native half of the feed: whether events become visible in the
/// order of their numbers.
pub(crate) trait LogOrder {
    /// One writer at a time: a number seen means every lower one is
    /// committed or gone for good.
    const VISIBLE_IN_SEQ_ORDER: bool;
}

impl FromRow for LoggedEvent {
    fn from_row(row: &dyn Row) -> Result<Self> {
        Ok(LoggedEvent {
            seq: i64::decode(row, row.index("seq")?)?,
            event: Event::from_row(row)?,
        })
    }
}

/// An account's events after `$2` (index `events_account`).
macro_rules! account_events {
    () => {
        "SELECT seq, id, action, source_type, source_id, actor_type, actor_id, changeset, created_at
     FROM events WHERE account_id = $1 AND seq > $2"
    };
}

#[async_trait]
impl<B: Backend + LogOrder> EventFeedStore for B {
    async fn latest_event_seq(&self) -> Result<i64> {
        let (seq,): (i64,) = self
            .read()
            .await?
            .fetch_one(query("SELECT COALESCE(MAX(seq), 0) FROM events"))
            .await?;
        Ok(seq)
    }

    async fn event_feed(
        &self,
        account_id: &str,
        after: i64,
        settled: i64,
        limit: i64,
    ) -> Result<EventFeed> {
        let mut db = self.read().await?;
        let limit = limit.max(1);
        if B::VISIBLE_IN_SEQ_ORDER {
            let events: Vec<LoggedEvent> = db
                .fetch_all(
                    query(concat!(account_events!(), " ORDER BY seq LIMIT $3"))
                        .bind(account_id)
                        .bind(&after)
                        .bind(&limit),
                )
                .await?;
            return Ok(EventFeed {
                through: events.last().map_or(after, |e| e.seq),
                more: events.len() as i64 == limit,
                hole: None,
                events,
            });
        }
        let seqs: Vec<(i64,)> = db
            .fetch_all(
                query("SELECT seq FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(&after)
                    .bind(&limit),
            )
            .await?;
        let (through, hole) = contiguous(after, settled, seqs.iter().map(|(s,)| *s));
        let more = hole.is_none() && seqs.len() as i64 == limit;
        if through == after {
            return Ok(EventFeed {
                events: Vec::new(),
                through,
                hole,
                more,
            });
        }
        let mut q = query(account_events!()).bind(account_id).bind(&after);
        q.push(" AND seq <= ")
            .push_bind(&through)
            .push(" ORDER BY seq");
        let events = db.fetch_all(q).await?;
        Ok(EventFeed {
            events,
            through,
            hole,
            more,
        })
    }
}

/// How far numbers run on from `after` without a hole (holes at or below
/// `settled` do not count), and the first hole after that.
fn contiguous(
    after: i64,
    settled: i64,
    seqs: impl Iterator<Item = i64>,
) -> (i64, Option<(i64, i64)>) {
    let mut through = after;
    for seq in seqs {
        if seq > through + 1 && seq - 1 > settled {
            return (through, Some((through + 1, seq - 1)));
        }
        through = seq;
    }
    (through, None)
}

#[cfg(test)]
mod tests {
    use super::contiguous;

    #[test]
    fn stops_before_the_first_unsettled_hole() {
        assert_eq!(contiguous(0, 0, [1, 2, 3].into_iter()), (3, None));
        assert_eq!(contiguous(0, 0, std::iter::empty()), (0, None));
        assert_eq!(
            contiguous(0, 0, [1, 2, 5, 6].into_iter()),
            (2, Some((3, 4)))
        );
        assert_eq!(contiguous(2, 0, [5].into_iter()), (2, Some((3, 4))));
        // A hole waited out is passed; a later one still stops the read.
        assert_eq!(contiguous(2, 4, [5, 6, 9].into_iter()), (6, Some((7, 8))));
        assert_eq!(contiguous(2, 8, [5, 6, 9].into_iter()), (9, None));
    }
}
