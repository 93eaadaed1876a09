//! Restrictions: the windows of the week in which a layer has someone on
//! call (e.g. weekdays 09:00–17:00).
//!
//! A window opens on each listed weekday at `start` and closes at `end` the
//! same day, or the next day when `end` is not after `start` (overnight;
//! equal times make a 24-hour window). Both edges are wall-clock times in
//! the schedule's zone, placed the "compatible" way, so across a DST change
//! a window is an hour shorter or longer, and an edge inside a skipped hour
//! moves later by the gap.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::zone::{self, Moment, DAY_MS};
use crate::time::Millis;

/// Weekday names as the API spells them, Monday first: the index of a name
/// here is its index into [`Restriction::days`].
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parses `mon` … `sun` (ignoring ASCII case) to an index into
/// [`Restriction::days`] (Monday 0, Sunday 6).
pub fn parse_weekday(s: &str) -> Option<usize> {
    WEEKDAYS.iter().position(|d| d.eq_ignore_ascii_case(s))
}

/// A window that recurs on chosen days of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restriction {
    /// The days a window opens on, Monday first.
    pub days: [bool; 7],
    /// Wall-clock time the window opens.
    pub start: Time,
    /// Wall-clock time the window closes: later the same day, otherwise the
    /// next day.
    pub end: Time,
}

impl Restriction {
    /// The wall-clock bounds of the window opening on `day`, if one does.
    fn window(&self, day: Date) -> Option<(DateTime, DateTime)> {
        let weekday = usize::try_from(day.weekday().to_monday_zero_offset()).ok()?;
        if !self.days.get(weekday).copied().unwrap_or(false) {
            return None;
        }
        let end_day = if self.end > self.start {
            day
        } else {
            day.tomorrow().ok()?
        };
        Some((day.to_datetime(self.start), end_day.to_datetime(self.end)))
    }
}

/// Whether `restrictions` let a layer have someone on call at `m`; no
/// restrictions allow every instant.
pub(super) fn allows(restrictions: &[Restriction], tz: &TimeZone, m: &Moment) -> bool {
    if restrictions.is_empty() {
        return true;
    }
    // A window is at most two days of wall clock, and its edges are placed
    // with offsets from the neighbourhood; so only windows opening from the
    // day before `local - spread` to the day of `local + spread` can hold it.
    let spread = m.max_offset - m.min_offset;
    let (Some(first), Some(last)) = (
        zone::wall_at(m.local_ms - spread),
        zone::wall_at(m.local_ms + spread),
    ) else {
        return false;
    };
    let Ok(mut day) = first.date().yesterday() else {
        return false;
    };
    while day <= last.date() {
        for r in restrictions {
            let Some((open, close)) = r.window(day) else {
                continue;
            };
            let inside = if m.is_steady() {
                // One offset throughout: comparing wall clocks is exact and
                // saves two zone conversions per window.
                open <= m.local && m.local < close
            } else {
                match (zone::instant(tz, open), zone::instant(tz, close)) {
                    (Some(open), Some(close)) => open <= m.at && m.at < close,
                    _ => false,
                }
            };
            if inside {
                return true;
            }
        }
        let Ok(next) = day.tomorrow() else {
            break;
        };
        day = next;
    }
    false
}

/// Pushes every instant inside `(since, until)` at which one of
/// `restrictions`' windows opens or closes.
pub(super) fn push_edges(
    restrictions: &[Restriction],
    tz: &TimeZone,
    since: Millis,
    until: Millis,
    cuts: &mut Vec<Millis>,
) {
    if restrictions.is_empty() {
        return;
    }
    // Edges of the window opening on a day lie within two days plus an
    // offset (26 h) either way of that day's wall clock; six days of margin
    // cover them.
    let local_day = |at: Millis, margin: Millis| {
        let ts = Timestamp::from_millisecond(at.checked_add(margin)?).ok()?;
        Some(tz.to_datetime(ts).date())
    };
    let (Some(mut day), Some(last)) = (local_day(since, -6 * DAY_MS), local_day(until, 6 * DAY_MS))
    else {
        return;
    };
    while day <= last {
        for (open, close) in restrictions.iter().filter_map(|r| r.window(day)) {
            for edge in [zone::instant(tz, open), zone::instant(tz, close)] {
                if let Some(edge) = edge.filter(|e| since < *e && *e < until) {
                    cuts.push(edge);
                }
            }
        }
        let Ok(next) = day.tomorrow() else {
            break;
        };
        day = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::{at, layer, tz, utc, weekdays};
    use crate::schedule::{Layer, Rotation};

    const HOUR: Millis = 3_600_000;

    fn restricted(restrictions: Vec<Restriction>) -> Layer {
        Layer {
            restrictions,
            ..layer(Rotation::Daily, 1, "2026-01-01T00:00", &["ann"])
        }
    }

    #[test]
    fn weekday_names() {
        assert_eq!(parse_weekday("mon"), Some(0));
        assert_eq!(parse_weekday("Wed"), Some(2));
        assert_eq!(parse_weekday("SUN"), Some(6));
        for bad in ["", "monday", "mo", " mon"] {
            assert_eq!(parse_weekday(bad), None, "{bad}");
        }
    }

    #[test]
    fn office_hours() {
        let berlin = tz("Europe/Berlin");
        let l = restricted(vec![weekdays(
            &["mon", "tue", "wed", "thu", "fri"],
            "09:00",
            "17:00",
        )]);
        // 7 January 2026 is a Wednesday.
        for (when, on) in [
            ("2026-01-07T10:00", true),
            ("2026-01-07T09:00", true),
            ("2026-01-07T08:59:59", false),
            ("2026-01-07T17:00", false),
            ("2026-01-07T18:00", false),
            ("2026-01-10T10:00", false),
        ] {
            let who = l.on_call(&berlin, at(&berlin, when));
            assert_eq!(who.is_some(), on, "{when}");
        }
    }

    #[test]
    fn overnight_and_whole_day_windows() {
        let berlin = tz("Europe/Berlin");
        let l = restricted(vec![weekdays(&["fri"], "22:00", "06:00")]);
        for (when, on) in [
            ("2026-01-09T22:00", true),
            ("2026-01-10T03:00", true),
            ("2026-01-10T06:00", false),
            ("2026-01-08T23:00", false),
            ("2026-01-10T22:00", false),
        ] {
            let who = l.on_call(&berlin, at(&berlin, when));
            assert_eq!(who.is_some(), on, "{when}");
        }
        let l = restricted(vec![weekdays(&["mon"], "08:00", "08:00")]);
        let since = at(&berlin, "2026-01-05T00:00");
        let shifts = l.shifts(&berlin, since, since + 7 * 24 * HOUR);
        let spans: Vec<(Millis, Millis)> = shifts.iter().map(|s| (s.start, s.end)).collect();
        let (open, close) = (
            at(&berlin, "2026-01-05T08:00"),
            at(&berlin, "2026-01-06T08:00"),
        );
        assert_eq!(spans, vec![(open, close)]);
    }

    #[test]
    fn windows_follow_the_wall_clock_across_dst() {
        let berlin = tz("Europe/Berlin");
        // Saturday 22:00 to Sunday 06:00 over the spring change is 7 hours.
        let l = restricted(vec![weekdays(&["sat"], "22:00", "06:00")]);
        let since = at(&berlin, "2026-03-28T12:00");
        let shifts = l.shifts(&berlin, since, since + 24 * HOUR);
        let lengths: Vec<Millis> = shifts.iter().map(|s| s.end - s.start).collect();
        assert_eq!(lengths, vec![7 * HOUR]);
        // A window opening in the skipped hour opens at 03:30 CEST.
        let l = restricted(vec![weekdays(&["sun"], "02:30", "04:00")]);
        assert_eq!(l.on_call(&berlin, utc("2026-03-29T01:29:59Z")), None);
        assert_eq!(l.on_call(&berlin, utc("2026-03-29T01:30:00Z")), Some("ann"));
        assert_eq!(l.on_call(&berlin, utc("2026-03-29T02:00:00Z")), None);
        // No days at all: never on call.
        let never = restricted(vec![Restriction {
            days: [false; 7],
            ..weekdays(&[], "00:00", "00:00")
        }]);
        assert!(never.shifts(&berlin, since, since + 24 * HOUR).is_empty());
    }
}
