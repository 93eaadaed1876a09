//! Rotations: whose turn it is on one layer.
//!
//! Turn `i` starts at the wall-clock time `start_at + i × count units`,
//! computed from `start_at` every time rather than by stepping from the
//! previous turn, so monthly turns from 31 January go 28 (29) February,
//! 31 March, 30 April, 31 May… without drifting to the 28th. The handoff is
//! that wall time's instant in the schedule's zone, disambiguated the
//! "compatible" way (see [`super::zone::instant`]).
//!
//! The turn in force at `t` is the latest-numbered turn whose handoff has
//! happened: `max { i : handoff(i) ≤ t }`. Handoffs almost always increase
//! with `i`, but not quite. A wall time in a spring-forward gap is pushed
//! forward by the gap, so the hourly turn starting at 02:00 on the day
//! Berlin skips 02:00–03:00 hands off at the same instant as the 03:00 turn
//! (and with a gap longer than a turn — Samoa skipped 30 December 2011 — at
//! an instant after later turns). Taking the latest-numbered turn makes such
//! squeezed turns zero-length instead of letting turns overlap or run
//! backwards: that user's turn simply does not happen. In a fall-back fold a
//! handoff takes the first occurrence, so the turn containing the repeated
//! hour is an hour longer (the hourly 02:00 turn in Berlin on the last
//! Sunday of October lasts two hours, a daily turn that day 25 hours).

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Span;

use super::restriction::{self, Restriction};
use super::zone::{self, Moment, DAY_MS, HOUR_MS, MAX_OFFSET_MS};
use super::{clamp_window, collect_shifts, Shift};
use crate::time::Millis;

/// The unit of a layer's turn length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rotation {
    /// Turns of `count` wall-clock hours.
    Hourly,
    /// Turns of `count` days, handing off at the same wall-clock time.
    Daily,
    /// Turns of `count` weeks, handing off on the same weekday and time.
    Weekly,
    /// Turns of `count` months, on `start_at`'s day of the month (or the
    /// month's last day when it is shorter).
    Monthly,
    /// Turns of `count` years (29 February falls back to the 28th).
    Yearly,
}

impl Rotation {
    /// All rotations.
    pub const ALL: [Rotation; 5] = [
        Rotation::Hourly,
        Rotation::Daily,
        Rotation::Weekly,
        Rotation::Monthly,
        Rotation::Yearly,
    ];

    /// The name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rotation::Hourly => "hourly",
            Rotation::Daily => "daily",
            Rotation::Weekly => "weekly",
            Rotation::Monthly => "monthly",
            Rotation::Yearly => "yearly",
        }
    }

    /// Parses an API name, ignoring ASCII case.
    pub fn parse(s: &str) -> Option<Self> {
        Rotation::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }

    /// The unit in wall milliseconds, for units of fixed wall-clock length.
    fn fixed_ms(self) -> Option<Millis> {
        match self {
            Rotation::Hourly => Some(HOUR_MS),
            Rotation::Daily => Some(DAY_MS),
            Rotation::Weekly => Some(7 * DAY_MS),
            Rotation::Monthly | Rotation::Yearly => None,
        }
    }

    /// The unit in months, for calendar units.
    fn months(self) -> Option<i64> {
        match self {
            Rotation::Monthly => Some(1),
            Rotation::Yearly => Some(12),
            Rotation::Hourly | Rotation::Daily | Rotation::Weekly => None,
        }
    }
}

/// One layer of a schedule: a rotation through users, optionally
/// restricted to windows of the week.
///
/// Turn `i` (from 0) belongs to `users[i % users.len()]` and starts at the
/// wall-clock time `start_at + i × count` units in the schedule's zone, so
/// handoffs keep their local time across DST changes: the turn spanning a
/// change is an hour shorter or longer. A handoff inside a spring-forward
/// gap moves later by the gap; one in a fall-back fold takes the first
/// occurrence. Hourly turns count wall-clock hours too, so the one starting
/// in a skipped hour is empty (that user is skipped) and the one starting
/// at a repeated hour lasts two hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The unit of each turn.
    pub rotation: Rotation,
    /// Units per turn; 0 is taken as 1 rather than refused, as the HTTP
    /// layer validates and pure math should not fail on it.
    pub count: u32,
    /// The first handoff, as wall-clock time in the schedule's zone.
    pub start_at: DateTime,
    /// Whose turn it is, in order, cycling; may repeat, may be empty (then
    /// the layer never has anyone).
    pub users: Vec<String>,
    /// Windows outside which the layer has no one; none means always.
    pub restrictions: Vec<Restriction>,
}

impl Layer {
    /// Who this layer alone has on call at `at` (rotation and restrictions,
    /// not overrides or other layers). `None` before the first handoff.
    pub fn on_call(&self, tz: &TimeZone, at: Millis) -> Option<&str> {
        self.on_call_at(tz, &Moment::new(tz, at)?)
    }

    /// This layer's own shifts within `[since, until)`, after restrictions,
    /// for the timeline: sorted, clipped to the window, consecutive turns of
    /// the same user merged. Windows are truncated as in
    /// [`super::Schedule::shifts`].
    pub fn shifts(&self, tz: &TimeZone, since: Millis, until: Millis) -> Vec<Shift> {
        let Some((since, until)) = clamp_window(since, until) else {
            return Vec::new();
        };
        if self.users.is_empty() {
            return Vec::new();
        }
        let mut cuts = vec![since];
        self.push_handoffs(tz, since, until, &mut cuts);
        restriction::push_edges(&self.restrictions, tz, since, until, &mut cuts);
        collect_shifts(cuts, until, |at| self.on_call(tz, at))
    }

    /// [`Layer::on_call`] with the zone lookups done once per instant, so a
    /// schedule can share them between its layers.
    pub(super) fn on_call_at(&self, tz: &TimeZone, m: &Moment) -> Option<&str> {
        if self.users.is_empty() || !restriction::allows(&self.restrictions, tz, m) {
            return None;
        }
        let turn = self.turn_at(tz, m)?;
        let len = i64::try_from(self.users.len()).ok()?;
        let index = usize::try_from(turn.rem_euclid(len)).ok()?;
        self.users.get(index).map(String::as_str)
    }

    /// The instant turn `turn` begins, or `None` beyond the supported range.
    pub(super) fn handoff(&self, tz: &TimeZone, turn: i64) -> Option<Millis> {
        zone::instant(tz, zone::wall_at(self.turn_wall_ms(turn)?)?)
    }

    fn count(&self) -> i64 {
        i64::from(self.count.max(1))
    }

    /// The wall milliseconds turn `turn` starts at.
    fn turn_wall_ms(&self, turn: i64) -> Option<Millis> {
        if turn < 0 {
            return None;
        }
        if let Some(unit) = self.rotation.fixed_ms() {
            let step = unit.checked_mul(self.count())?;
            return zone::wall_ms(self.start_at)?.checked_add(turn.checked_mul(step)?);
        }
        let months = turn.checked_mul(self.rotation.months()?.checked_mul(self.count())?)?;
        let span = Span::new().try_months(months).ok()?;
        // jiff clamps the day to the month's length, without carrying over.
        zone::wall_ms(self.start_at.checked_add(span).ok()?)
    }

    /// The last turn starting at or before a wall-clock time (in wall
    /// milliseconds), or `None` if it is before the first turn.
    fn last_turn_by(&self, wall: Millis) -> Option<i64> {
        let start = zone::wall_ms(self.start_at)?;
        let elapsed = wall.checked_sub(start).filter(|e| *e >= 0)?;
        if let Some(unit) = self.rotation.fixed_ms() {
            return Some(elapsed / unit.checked_mul(self.count())?);
        }
        let per_turn = self.rotation.months()?.checked_mul(self.count())?;
        let (w, s) = (zone::wall_at(wall)?, self.start_at);
        let months = (i64::from(w.year()) - i64::from(s.year())) * 12 + i64::from(w.month())
            - i64::from(s.month());
        // Counting whole months may overshoot by one turn (same month, but a
        // later day or time than `wall`); it never undershoots.
        let mut turn = months.div_euclid(per_turn);
        for _ in 0..2 {
            if self.turn_wall_ms(turn).is_some_and(|t| t <= wall) {
                return Some(turn);
            }
            turn = turn.checked_sub(1).filter(|t| *t >= 0)?;
        }
        None
    }

    /// The turn in force at `m`: `max { i : handoff(i) ≤ m.at }`.
    ///
    /// Turn `i` hands off at its wall milliseconds minus an offset in force
    /// near `m`. So every turn starting by `at + min_offset` (wall) has
    /// handed off, and none starting after `at + max_offset` has; only the
    /// turns between need converting, and away from offset changes there
    /// are none.
    fn turn_at(&self, tz: &TimeZone, m: &Moment) -> Option<i64> {
        let surely = self.last_turn_by(m.at + m.min_offset);
        let mut turn = self.last_turn_by(m.at + m.max_offset)?;
        let floor = surely.unwrap_or(-1);
        while turn > floor {
            if self.handoff(tz, turn).is_some_and(|h| h <= m.at) {
                return Some(turn);
            }
            turn -= 1;
        }
        surely
    }

    /// Pushes the handoffs inside `(since, until)` that can change whose
    /// turn it is: those of turns after the one in force at `since`.
    fn push_handoffs(&self, tz: &TimeZone, since: Millis, until: Millis, cuts: &mut Vec<Millis>) {
        let Some(m) = Moment::new(tz, since) else {
            return;
        };
        let mut turn = self.turn_at(tz, &m).map_or(0, |t| t + 1);
        // Wall milliseconds rise by at least an hour per turn, and a wall
        // clock is never more than MAX_OFFSET from UTC, so this ends within
        // a day's worth of turns after `until`.
        while let Some(wall) = self.turn_wall_ms(turn) {
            if wall.saturating_sub(MAX_OFFSET_MS) >= until {
                break;
            }
            if let Some(h) = self.handoff(tz, turn).filter(|h| since < *h && *h < until) {
                cuts.push(h);
            }
            turn += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::{at, civil, layer, local, tz, utc};

    const HOUR: Millis = 3_600_000;

    #[test]
    fn rotations_round_trip() {
        for r in Rotation::ALL {
            assert_eq!(Rotation::parse(r.as_str()), Some(r));
        }
        assert_eq!(Rotation::parse("Weekly"), Some(Rotation::Weekly));
        assert_eq!(Rotation::parse("fortnightly"), None);
    }

    #[test]
    fn weekly_rotation_of_three() {
        let berlin = tz("Europe/Berlin");
        let l = layer(
            Rotation::Weekly,
            1,
            "2026-01-05T09:00",
            &["ann", "bob", "cat"],
        );
        assert_eq!(l.on_call(&berlin, at(&berlin, "2026-01-05T08:59:59")), None);
        assert_eq!(l.on_call(&berlin, at(&berlin, "2025-06-01T12:00")), None);
        for (when, who) in [
            ("2026-01-05T09:00", "ann"),
            ("2026-01-12T08:59:59", "ann"),
            ("2026-01-12T09:00", "bob"),
            ("2026-01-21T03:00", "cat"),
            ("2026-01-26T09:00", "ann"),
            // Across the March DST change the handoff stays at 09:00.
            ("2026-03-30T08:59", "cat"),
            ("2026-03-30T09:00", "ann"),
            ("2026-07-01T12:00", "bob"),
            ("2031-01-06T09:00", "ann"),
        ] {
            assert_eq!(l.on_call(&berlin, at(&berlin, when)), Some(who), "{when}");
        }
    }

    #[test]
    fn a_start_long_ago_is_found_directly() {
        let users = ["a", "b", "c", "d", "e", "f", "g"];
        let l = layer(Rotation::Hourly, 1, "2000-01-01T00:00", &users);
        let t = utc("2026-06-15T12:34:00Z");
        let hours = (t - utc("2000-01-01T00:00:00Z")) / HOUR;
        let expected = users[usize::try_from(hours % 7).expect("small")];
        assert_eq!(l.on_call(&TimeZone::UTC, t), Some(expected));
    }

    /// Daily 09:00 handoffs across both 2026 DST changes: every handoff
    /// reads 09:00 locally, and the turns spanning a change are 23 and 25
    /// hours long.
    #[test]
    fn daily_handoffs_stay_at_nine_across_dst() {
        for (name, start, short, long) in [
            (
                "Europe/Berlin",
                "2026-03-20T09:00",
                "2026-03-28",
                "2026-10-24",
            ),
            (
                "America/New_York",
                "2026-03-01T09:00",
                "2026-03-07",
                "2026-10-31",
            ),
        ] {
            let zone = tz(name);
            let l = layer(Rotation::Daily, 1, start, &["ann", "bob"]);
            for i in 0..260 {
                let h = l.handoff(&zone, i).expect("in range");
                let next = l.handoff(&zone, i + 1).expect("in range");
                let reading = local(&zone, h);
                assert_eq!(reading.time(), civil(start).time(), "{name} turn {i}");
                let hours = match reading.date().to_string() {
                    d if d == short => 23,
                    d if d == long => 25,
                    _ => 24,
                };
                assert_eq!(next - h, hours * HOUR, "{name} {reading}");
            }
            let change = format!(
                "{}T09:00",
                civil(start)
                    .date()
                    .checked_add(Span::new().days(8))
                    .expect("date")
            );
            assert_ne!(
                l.on_call(&zone, at(&zone, &change) - 1),
                l.on_call(&zone, at(&zone, &change))
            );
        }
    }

    #[test]
    fn weekly_handoffs_stay_monday_nine_across_dst() {
        for name in ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"] {
            let zone = tz(name);
            let l = layer(Rotation::Weekly, 1, "2026-01-05T09:00", &["ann", "bob"]);
            for i in 0..60 {
                let reading = local(&zone, l.handoff(&zone, i).expect("in range"));
                assert_eq!(reading.weekday(), jiff::civil::Weekday::Monday, "{name}");
                assert_eq!(reading.time(), civil("2026-01-05T09:00").time(), "{name}");
            }
        }
    }

    #[test]
    fn handoffs_in_gaps_move_later_and_in_folds_take_the_first() {
        let berlin = tz("Europe/Berlin");
        let l = layer(
            Rotation::Daily,
            1,
            "2026-03-27T02:30",
            &["ann", "bob", "cat"],
        );
        // 02:30 does not exist on 29 March: the handoff is 03:30 CEST.
        assert_eq!(l.handoff(&berlin, 2), Some(utc("2026-03-29T01:30:00Z")));
        assert_eq!(l.handoff(&berlin, 3), Some(utc("2026-03-30T00:30:00Z")));
        assert_eq!(l.on_call(&berlin, utc("2026-03-29T01:29:59Z")), Some("bob"));
        assert_eq!(l.on_call(&berlin, utc("2026-03-29T01:30:00Z")), Some("cat"));

        let ny = tz("America/New_York");
        let l = layer(Rotation::Daily, 1, "2026-03-07T02:30", &["ann", "bob"]);
        assert_eq!(l.handoff(&ny, 1), Some(utc("2026-03-08T07:30:00Z")));
        assert_eq!(l.on_call(&ny, utc("2026-03-08T07:30:00Z")), Some("bob"));

        let l = layer(
            Rotation::Daily,
            1,
            "2026-10-31T01:30",
            &["ann", "bob", "cat"],
        );
        assert_eq!(
            l.handoff(&ny, 1),
            Some(utc("2026-11-01T05:30:00Z")),
            "EDT, the first 01:30"
        );
        assert_eq!(l.handoff(&ny, 2), Some(utc("2026-11-02T06:30:00Z")));
        assert_eq!(
            l.on_call(&ny, utc("2026-11-01T06:30:00Z")),
            Some("bob"),
            "not at the second 01:30"
        );
    }

    #[test]
    fn hourly_turns_across_dst() {
        let berlin = tz("Europe/Berlin");
        // Spring: the 02:00 turn falls in the gap and hands off together
        // with 03:00, so it is empty and cat is skipped that night.
        let l = layer(
            Rotation::Hourly,
            1,
            "2026-03-29T00:00",
            &["ann", "bob", "cat"],
        );
        assert_eq!(l.handoff(&berlin, 2), l.handoff(&berlin, 3));
        let since = utc("2026-03-28T23:00:00Z");
        let cut = |h: i64| since + h * HOUR;
        let shifts = l.shifts(&berlin, since, cut(5));
        let got: Vec<(&str, Millis, Millis)> = shifts
            .iter()
            .map(|s| (s.user.as_str(), s.start, s.end))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ann", cut(0), cut(1)),
                ("bob", cut(1), cut(2)),
                ("ann", cut(2), cut(3)),
                ("bob", cut(3), cut(4)),
                ("cat", cut(4), cut(5)),
            ]
        );
        // Autumn: 02:00 happens twice; its turn starts at the first and
        // lasts two hours.
        let l = layer(
            Rotation::Hourly,
            1,
            "2026-10-25T00:00",
            &["ann", "bob", "cat"],
        );
        assert_eq!(l.handoff(&berlin, 2), Some(utc("2026-10-25T00:00:00Z")));
        assert_eq!(l.handoff(&berlin, 3), Some(utc("2026-10-25T02:00:00Z")));
        assert_eq!(l.on_call(&berlin, utc("2026-10-25T01:30:00Z")), Some("cat"));
        assert_eq!(l.on_call(&berlin, utc("2026-10-25T02:00:00Z")), Some("ann"));
        // Eight-hour turns: the one containing the spring gap is 7 h.
        let l = layer(Rotation::Hourly, 8, "2026-03-28T22:00", &["ann", "bob"]);
        let (a, b) = (l.handoff(&berlin, 0), l.handoff(&berlin, 1));
        assert_eq!(b.zip(a).map(|(b, a)| b - a), Some(7 * HOUR));
    }

    #[test]
    fn a_skipped_day_squeezes_turns_without_going_backwards() {
        // Samoa moved across the date line: 30 December 2011 never
        // happened there, so 24 hourly handoffs land after later ones.
        let apia = tz("Pacific/Apia");
        let l = layer(
            Rotation::Hourly,
            1,
            "2011-12-29T12:00",
            &["ann", "bob", "cat"],
        );
        let since = at(&apia, "2011-12-29T12:00");
        let until = at(&apia, "2011-12-31T12:00");
        assert_eq!(until - since, 24 * HOUR);
        let shifts = l.shifts(&apia, since, until);
        assert_eq!(shifts.first().map(|s| s.start), Some(since));
        assert_eq!(shifts.last().map(|s| s.end), Some(until));
        for pair in shifts.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        let mut last_turn = -1;
        for quarter in 0..96 {
            let m = Moment::new(&apia, since + quarter * HOUR / 4).expect("in range");
            let turn = l.turn_at(&apia, &m).expect("started");
            assert!(turn >= last_turn);
            last_turn = turn;
        }
    }

    #[test]
    fn calendar_turns_do_not_drift() {
        let berlin = tz("Europe/Berlin");
        let l = layer(
            Rotation::Monthly,
            1,
            "2026-01-31T09:00",
            &["ann", "bob", "cat"],
        );
        for (i, day) in [
            "2026-01-31",
            "2026-02-28",
            "2026-03-31",
            "2026-04-30",
            "2026-05-31",
        ]
        .into_iter()
        .enumerate()
        {
            let h = l.handoff(&berlin, i64::try_from(i).expect("small"));
            assert_eq!(h, Some(at(&berlin, &format!("{day}T09:00"))), "turn {i}");
        }
        assert_eq!(
            l.on_call(&berlin, at(&berlin, "2026-02-28T08:59")),
            Some("ann")
        );
        assert_eq!(
            l.on_call(&berlin, at(&berlin, "2026-02-28T09:00")),
            Some("bob")
        );
        assert_eq!(
            l.on_call(&berlin, at(&berlin, "2026-03-31T08:00")),
            Some("bob")
        );
        assert_eq!(
            l.on_call(&berlin, at(&berlin, "2026-03-31T10:00")),
            Some("cat")
        );

        let l = layer(Rotation::Yearly, 1, "2024-02-29T09:00", &["ann", "bob"]);
        for (i, day) in [
            "2024-02-29",
            "2025-02-28",
            "2026-02-28",
            "2027-02-28",
            "2028-02-29",
        ]
        .into_iter()
        .enumerate()
        {
            let h = l.handoff(&berlin, i64::try_from(i).expect("small"));
            assert_eq!(h, Some(at(&berlin, &format!("{day}T09:00"))), "turn {i}");
        }
        assert_eq!(
            l.on_call(&berlin, at(&berlin, "2025-02-28T10:00")),
            Some("bob")
        );
        assert_eq!(
            l.on_call(&berlin, at(&berlin, "2025-02-27T10:00")),
            Some("ann")
        );
    }

    #[test]
    fn extremes_give_no_one_without_panicking() {
        let berlin = tz("Europe/Berlin");
        let instants = [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX];
        for rotation in Rotation::ALL {
            for count in [0, 1, u32::MAX] {
                for start_at in [DateTime::MIN, civil("2026-01-01T00:00"), DateTime::MAX] {
                    let l = Layer {
                        rotation,
                        count,
                        start_at,
                        users: vec!["ann".into(), "bob".into()],
                        restrictions: Vec::new(),
                    };
                    for t in instants {
                        let _ = l.on_call(&berlin, t);
                        let _ = l.shifts(&berlin, t, t.saturating_add(30 * 24 * HOUR));
                    }
                    assert!(l.shifts(&berlin, i64::MIN, i64::MAX).len() <= 366 * 24);
                }
            }
        }
        // A count of 0 is taken as 1.
        let zero = layer(Rotation::Daily, 0, "2026-01-01T00:00", &["ann", "bob"]);
        assert_eq!(
            zero.on_call(&berlin, at(&berlin, "2026-01-02T00:00")),
            Some("bob")
        );
    }
}
