//! On-call schedules: who is on call when, as pure math over instants.
//!
//! A [`Schedule`] has an IANA time zone, ordered [`Layer`]s and
//! [`Override`]s. Each layer rotates through its users in turns that follow
//! wall-clock time in the zone (see [`Layer`] for DST), and has
//! someone on call only inside its [`Restriction`] windows. Later layers are
//! higher: at any instant the highest layer with someone on call wins, and
//! lower layers show through where higher ones have no one. An override
//! covers every layer; among overlapping overrides the later in the list
//! wins (list them oldest first and the newest wins).
//!
//! Lookups are O(1) in how long ago a layer started: the turn is computed
//! from the wall-clock distance to `start_at`, then corrected by converting
//! only the handoffs an offset change could have moved.

mod restriction;
mod rotation;
mod zone;

#[cfg(test)]
mod tests;

use std::collections::BinaryHeap;

use jiff::tz::TimeZone;

pub use restriction::{parse_weekday, Restriction, WEEKDAYS};
pub use rotation::{Layer, Rotation};

use crate::time::Millis;
use zone::{Moment, DAY_MS};

/// The longest window [`Schedule::shifts`] and [`Layer::shifts`] cover: a
/// longer one is cut to this length from its start (callers page by
/// asking again from the end). This bounds the work and output of one call
/// (about 9,000 hourly turns plus restriction edges).
pub const MAX_WINDOW_MS: Millis = 366 * DAY_MS;

/// Someone covering every layer of a schedule for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Who is on call instead.
    pub user: String,
    /// First instant covered.
    pub start: Millis,
    /// First instant no longer covered; an override with `end <= start`
    /// covers nothing.
    pub end: Millis,
}

/// A stretch of time one user is on call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    /// Who is on call.
    pub user: String,
    /// First instant of the shift.
    pub start: Millis,
    /// First instant after it.
    pub end: Millis,
}

/// An on-call schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The zone the layers' wall-clock times are read in.
    pub time_zone: TimeZone,
    /// Layers, lowest priority first.
    pub layers: Vec<Layer>,
    /// Overrides; where they overlap, the later one wins.
    pub overrides: Vec<Override>,
}

impl Schedule {
    /// Who is on call at `at`, overrides and layer priority applied.
    pub fn on_call(&self, at: Millis) -> Option<&str> {
        if let Some(o) = self
            .overrides
            .iter()
            .rev()
            .find(|o| o.start <= at && at < o.end)
        {
            return Some(&o.user);
        }
        let m = Moment::new(&self.time_zone, at)?;
        self.layers
            .iter()
            .rev()
            .find_map(|layer| layer.on_call_at(&self.time_zone, &m))
    }

    /// The final shifts within `[since, until)`: sorted, clipped to the
    /// window, consecutive shifts of the same user merged, times with no one
    /// on call absent. A window longer than [`MAX_WINDOW_MS`] is cut to that
    /// length; instants jiff cannot represent (beyond about year ±9999) have
    /// no one.
    pub fn shifts(&self, since: Millis, until: Millis) -> Vec<Shift> {
        let Some((since, until)) = clamp_window(since, until) else {
            return Vec::new();
        };
        let layers: Vec<Vec<Shift>> = self
            .layers
            .iter()
            .map(|layer| layer.shifts(&self.time_zone, since, until))
            .collect();
        // (start, end, position in the list), clipped to the window.
        let mut overrides: Vec<(Millis, Millis, usize)> = self
            .overrides
            .iter()
            .enumerate()
            .map(|(i, o)| (o.start.max(since), o.end.min(until), i))
            .filter(|(start, end, _)| start < end)
            .collect();
        overrides.sort_unstable();

        let mut cuts = vec![since];
        cuts.extend(layers.iter().flatten().flat_map(|s| [s.start, s.end]));
        cuts.extend(overrides.iter().flat_map(|&(start, end, _)| [start, end]));

        // Everything is constant between cuts, so each piece is decided by
        // one sweep: overrides through a heap keyed by list position (the
        // latest-listed active one on top; expired ones are dropped when
        // they surface), layers through one cursor each.
        let mut pending = overrides.iter().peekable();
        let mut active: BinaryHeap<(usize, Millis)> = BinaryHeap::new();
        let mut cursors = vec![0usize; layers.len()];
        collect_shifts(cuts, until, |at| {
            while let Some(&&(start, end, i)) = pending.peek() {
                if start > at {
                    break;
                }
                active.push((i, end));
                pending.next();
            }
            while active.peek().is_some_and(|&(_, end)| end <= at) {
                active.pop();
            }
            if let Some(&(i, _)) = active.peek() {
                return self.overrides.get(i).map(|o| o.user.as_str());
            }
            layers
                .iter()
                .zip(cursors.iter_mut())
                .rev()
                .find_map(|(shifts, cursor)| {
                    while shifts.get(*cursor).is_some_and(|s| s.end <= at) {
                        *cursor += 1;
                    }
                    let shift = shifts.get(*cursor).filter(|s| s.start <= at)?;
                    Some(shift.user.as_str())
                })
        })
    }
}

/// Limits a window to [`MAX_WINDOW_MS`] and to the supported instants;
/// `None` if nothing is left.
fn clamp_window(since: Millis, until: Millis) -> Option<(Millis, Millis)> {
    let (lo, hi) = zone::supported_range();
    let since = since.max(lo);
    let until = until.min(since.saturating_add(MAX_WINDOW_MS)).min(hi);
    (since < until).then_some((since, until))
}

/// Builds shifts from the instants at which who is on call may change: each
/// piece from a cut to the next (the last to `until`) gets `who` at its
/// start, in time order, and equal neighbours are merged.
fn collect_shifts<'a>(
    mut cuts: Vec<Millis>,
    until: Millis,
    mut who: impl FnMut(Millis) -> Option<&'a str>,
) -> Vec<Shift> {
    cuts.retain(|c| *c < until);
    cuts.sort_unstable();
    cuts.dedup();
    let mut shifts: Vec<Shift> = Vec::new();
    for (k, &start) in cuts.iter().enumerate() {
        let end = cuts.get(k + 1).copied().unwrap_or(until);
        let Some(user) = who(start) else {
            continue;
        };
        match shifts.last_mut() {
            Some(last) if last.end == start && last.user == user => last.end = end,
            _ => shifts.push(Shift {
                user: user.to_owned(),
                start,
                end,
            }),
        }
    }
    shifts
}
