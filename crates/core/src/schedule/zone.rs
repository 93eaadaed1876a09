//! Instants seen from a schedule's time zone.
//!
//! Rotation math works in wall-clock time ("09:00 every Monday") but answers
//! in instants. Wall-clock readings are often handled here as *wall
//! milliseconds*: the reading taken as if the wall clock were UTC. That turns
//! civil arithmetic (a day is always 24 wall hours) into integer arithmetic,
//! and an instant's wall milliseconds are simply `at + offset`.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;

use crate::time::Millis;

/// One hour in milliseconds.
pub(super) const HOUR_MS: Millis = 3_600_000;

/// One day (24 hours) in milliseconds.
pub(super) const DAY_MS: Millis = 24 * HOUR_MS;

/// A bound on any UTC offset: jiff keeps offsets within ±25:59:59.
pub(super) const MAX_OFFSET_MS: Millis = 26 * HOUR_MS;

/// How far either side of an instant offset changes are gathered. A handoff
/// or window edge that can decide who is on call at `t` lies within two
/// maximal offsets (52 h) of `t`, and the offset used to place it was in
/// force at most another 52 h earlier (a gap's "before" offset); five days
/// leaves a margin.
const NEIGHBOURHOOD_MS: Millis = 5 * DAY_MS;

/// The instants schedule math answers for: jiff's range less a margin for
/// the neighbourhood, so that lookups near year ±9999 give "no one" instead
/// of failing halfway through.
pub(super) fn supported_range() -> (Millis, Millis) {
    let margin = 2 * NEIGHBOURHOOD_MS;
    (
        Timestamp::MIN.as_millisecond() + margin,
        Timestamp::MAX.as_millisecond() - margin,
    )
}

/// An instant together with what the zone looks like around it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Moment {
    /// The instant.
    pub(super) at: Millis,
    /// Its wall-clock reading.
    pub(super) local: DateTime,
    /// Its wall milliseconds.
    pub(super) local_ms: Millis,
    /// The smallest offset in force within the neighbourhood, in ms.
    pub(super) min_offset: Millis,
    /// The largest offset in force within the neighbourhood, in ms.
    pub(super) max_offset: Millis,
}

impl Moment {
    /// Looks at `at` from `tz`; `None` outside [`supported_range`].
    pub(super) fn new(tz: &TimeZone, at: Millis) -> Option<Moment> {
        let (lo, hi) = supported_range();
        if at < lo || at > hi {
            return None;
        }
        let ts = Timestamp::from_millisecond(at).ok()?;
        let from = Timestamp::from_millisecond(at - NEIGHBOURHOOD_MS).ok()?;
        let to = Timestamp::from_millisecond(at + NEIGHBOURHOOD_MS).ok()?;
        let first = offset_ms(tz.to_offset(from));
        // Transitions come strictly increasing, so this stops at `to`.
        let (min_offset, max_offset) = tz
            .following(from)
            .take_while(|t| t.timestamp() <= to)
            .map(|t| offset_ms(t.offset()))
            .fold((first, first), |(lo, hi), o| (lo.min(o), hi.max(o)));
        Some(Moment {
            at,
            local: tz.to_datetime(ts),
            local_ms: at + offset_ms(tz.to_offset(ts)),
            min_offset,
            max_offset,
        })
    }

    /// Whether the offset is the same throughout the neighbourhood, so that
    /// nearby wall-clock times map to instants by one fixed offset.
    pub(super) fn is_steady(&self) -> bool {
        self.min_offset == self.max_offset
    }
}

fn offset_ms(offset: Offset) -> Millis {
    Millis::from(offset.seconds()) * 1000
}

/// A wall-clock reading's wall milliseconds.
pub(super) fn wall_ms(dt: DateTime) -> Option<Millis> {
    let ts = TimeZone::UTC.to_timestamp(dt).ok()?;
    Some(ts.as_millisecond())
}

/// The wall-clock reading of wall milliseconds.
pub(super) fn wall_at(ms: Millis) -> Option<DateTime> {
    let ts = Timestamp::from_millisecond(ms).ok()?;
    Some(TimeZone::UTC.to_datetime(ts))
}

/// The instant a wall-clock reading denotes in `tz`, disambiguated the
/// "compatible" way (RFC 5545, Temporal): a reading skipped by a
/// spring-forward gap is pushed forward by the gap's length, and a reading
/// repeated by a fall-back fold takes its first occurrence.
pub(super) fn instant(tz: &TimeZone, dt: DateTime) -> Option<Millis> {
    let ts = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
    Some(ts.as_millisecond())
}
