//! Schedule-level table tests and the properties, plus helpers shared with
//! the submodules' tests.

use jiff::civil::{DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Span, Timestamp};
use proptest::prelude::*;

use super::*;
use crate::time::parse_ts;

pub(super) fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).expect("zone in the tz database")
}

pub(super) fn civil(s: &str) -> DateTime {
    s.parse().expect("civil datetime")
}

pub(super) fn hm(s: &str) -> Time {
    s.parse().expect("civil time")
}

/// The instant of a wall-clock reading in `zone` (compatible).
pub(super) fn at(zone: &TimeZone, s: &str) -> Millis {
    zone::instant(zone, civil(s)).expect("representable")
}

pub(super) fn utc(s: &str) -> Millis {
    parse_ts(s).expect("RFC 3339")
}

pub(super) fn local(zone: &TimeZone, ms: Millis) -> DateTime {
    zone.to_datetime(Timestamp::from_millisecond(ms).expect("representable"))
}

pub(super) fn layer(rotation: Rotation, count: u32, start_at: &str, users: &[&str]) -> Layer {
    Layer {
        rotation,
        count,
        start_at: civil(start_at),
        users: users.iter().map(|u| u.to_string()).collect(),
        restrictions: Vec::new(),
    }
}

pub(super) fn weekdays(days: &[&str], start: &str, end: &str) -> Restriction {
    let mut set = [false; 7];
    for d in days {
        set[parse_weekday(d).expect("weekday")] = true;
    }
    Restriction {
        days: set,
        start: hm(start),
        end: hm(end),
    }
}

fn shift(user: &str, start: Millis, end: Millis) -> Shift {
    Shift {
        user: user.to_owned(),
        start,
        end,
    }
}

fn ovr(user: &str, start: Millis, end: Millis) -> Override {
    Override {
        user: user.to_owned(),
        start,
        end,
    }
}

const HOUR: Millis = 3_600_000;

#[test]
fn higher_layers_win_and_lower_ones_show_through() {
    let berlin = tz("Europe/Berlin");
    let mut office = layer(Rotation::Daily, 1, "2026-01-05T00:00", &["cat"]);
    office.restrictions = vec![weekdays(
        &["mon", "tue", "wed", "thu", "fri"],
        "09:00",
        "17:00",
    )];
    let s = Schedule {
        time_zone: berlin.clone(),
        layers: vec![
            layer(Rotation::Weekly, 1, "2026-01-05T09:00", &["ann", "bob"]),
            office,
            layer(Rotation::Daily, 1, "2026-01-01T00:00", &[]),
        ],
        overrides: Vec::new(),
    };
    for (when, who) in [
        ("2026-01-07T10:00", "cat"),
        ("2026-01-07T18:00", "ann"),
        ("2026-01-10T10:00", "ann"),
        ("2026-01-12T09:30", "cat"),
        ("2026-01-12T17:00", "bob"),
    ] {
        assert_eq!(s.on_call(at(&berlin, when)), Some(who), "{when}");
    }
    assert_eq!(s.on_call(at(&berlin, "2026-01-05T08:00")), None);
}

#[test]
fn overrides_win_and_hand_back_at_their_end() {
    let berlin = tz("Europe/Berlin");
    let base = Schedule {
        time_zone: berlin.clone(),
        layers: vec![layer(
            Rotation::Weekly,
            1,
            "2026-01-05T09:00",
            &["ann", "bob"],
        )],
        overrides: Vec::new(),
    };
    let (ten, twelve) = (
        at(&berlin, "2026-01-07T10:00"),
        at(&berlin, "2026-01-07T12:00"),
    );
    let (one, two) = (
        at(&berlin, "2026-01-07T13:00"),
        at(&berlin, "2026-01-07T14:00"),
    );
    let s = Schedule {
        overrides: vec![ovr("dan", ten, two), ovr("eve", twelve, one)],
        ..base.clone()
    };
    assert_eq!(s.on_call(ten - 1), Some("ann"));
    assert_eq!(s.on_call(ten), Some("dan"));
    assert_eq!(s.on_call(twelve), Some("eve"), "the later override wins");
    assert_eq!(s.on_call(one), Some("dan"));
    assert_eq!(s.on_call(two - 1), Some("dan"));
    assert_eq!(
        s.on_call(two),
        Some("ann"),
        "handed back exactly at the end"
    );
    assert_eq!(
        s.shifts(ten - HOUR, two + HOUR),
        vec![
            shift("ann", ten - HOUR, ten),
            shift("dan", ten, twelve),
            shift("eve", twelve, one),
            shift("dan", one, two),
            shift("ann", two, two + HOUR),
        ]
    );
    // Listed the other way round, the long override hides the short one.
    let s = Schedule {
        overrides: vec![ovr("eve", twelve, one), ovr("dan", ten, two)],
        ..base
    };
    assert_eq!(s.on_call(twelve), Some("dan"));
    assert_eq!(s.shifts(ten, two), vec![shift("dan", ten, two)]);
}

#[test]
fn shifts_are_merged_and_clipped() {
    let berlin = tz("Europe/Berlin");
    let s = Schedule {
        time_zone: berlin.clone(),
        layers: vec![layer(
            Rotation::Weekly,
            1,
            "2026-01-05T09:00",
            &["ann", "ann", "bob"],
        )],
        overrides: Vec::new(),
    };
    let since = at(&berlin, "2026-01-07T00:00");
    let until = at(&berlin, "2026-01-28T00:00");
    assert_eq!(
        s.shifts(since, until),
        vec![
            shift("ann", since, at(&berlin, "2026-01-19T09:00")),
            shift(
                "bob",
                at(&berlin, "2026-01-19T09:00"),
                at(&berlin, "2026-01-26T09:00")
            ),
            shift("ann", at(&berlin, "2026-01-26T09:00"), until),
        ]
    );
    assert!(s.shifts(until, since).is_empty());
    assert!(s.shifts(since, since).is_empty());
}

#[test]
fn one_unrestricted_user_is_one_shift_from_the_start() {
    let ny = tz("America/New_York");
    let s = Schedule {
        time_zone: ny.clone(),
        layers: vec![layer(Rotation::Hourly, 5, "2026-03-01T09:00", &["ann"])],
        overrides: Vec::new(),
    };
    let until = at(&ny, "2026-04-01T00:00");
    assert_eq!(
        s.shifts(at(&ny, "2026-02-01T00:00"), until),
        vec![shift("ann", at(&ny, "2026-03-01T09:00"), until)]
    );
}

#[test]
fn long_windows_are_cut_to_a_year() {
    let s = Schedule {
        time_zone: tz("Europe/Berlin"),
        layers: vec![layer(
            Rotation::Hourly,
            1,
            "2025-01-01T00:00",
            &["ann", "bob"],
        )],
        overrides: Vec::new(),
    };
    let since = utc("2026-01-01T00:00:00Z");
    let shifts = s.shifts(since, since + 10 * MAX_WINDOW_MS);
    let last = shifts.last().expect("shifts");
    assert_eq!(last.end, since + MAX_WINDOW_MS);
    // Two spring-forward squeezes merge three turns into one; fall-back
    // only lengthens one.
    assert_eq!(shifts.len(), 366 * 24 - 2);
    for (from, to) in [
        (i64::MIN, i64::MAX),
        (i64::MAX - 1, i64::MAX),
        (i64::MIN, i64::MIN + 1),
    ] {
        assert!(s.shifts(from, to).len() <= 366 * 24);
        let _ = s.on_call(from);
        let _ = s.on_call(to);
    }
}

#[test]
fn a_busy_year_stays_quick() {
    // Three hourly-ish layers with restrictions and many overrides over the
    // longest window: a guard against accidentally quadratic work.
    let berlin = tz("Europe/Berlin");
    let mut day = layer(
        Rotation::Hourly,
        1,
        "2020-01-01T00:00",
        &["ann", "bob", "cat"],
    );
    day.restrictions = vec![
        weekdays(&["mon", "tue", "wed", "thu", "fri"], "08:00", "18:00"),
        weekdays(&["sat"], "10:00", "12:00"),
    ];
    let mut night = layer(Rotation::Hourly, 3, "2021-06-01T00:30", &["dan", "eve"]);
    night.restrictions = vec![weekdays(&["mon", "wed", "fri"], "22:00", "06:00")];
    let since = utc("2026-01-01T00:00:00Z");
    let s = Schedule {
        time_zone: berlin,
        layers: vec![
            layer(Rotation::Daily, 1, "2019-01-01T09:00", &["fay", "gus"]),
            day,
            night,
        ],
        overrides: (0..2000)
            .map(|i| ovr("hal", since + i * 4 * HOUR, since + i * 4 * HOUR + HOUR))
            .collect(),
    };
    let shifts = s.shifts(since, since + MAX_WINDOW_MS);
    assert!(shifts.len() > 5000, "{}", shifts.len());
    for pair in shifts.windows(2) {
        assert!(pair[0].end <= pair[1].start);
    }
}

// ---------------------------------------------------------------- properties

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];
const USERS: [&str; 4] = ["ann", "bob", "cat", "dan"];

fn arb_zone() -> impl Strategy<Value = TimeZone> {
    prop::sample::select(ZONES.to_vec()).prop_map(tz)
}

/// A wall-clock time from 2025-01-01 over about 500 days, on a 15-minute
/// grid (so that handoffs land in 30-minute and hour gaps now and then).
fn arb_start() -> impl Strategy<Value = DateTime> {
    (0i64..500 * 96).prop_map(|quarters| {
        civil("2025-01-01T00:00")
            .checked_add(Span::new().minutes(quarters * 15))
            .expect("in range")
    })
}

fn arb_restriction() -> impl Strategy<Value = Restriction> {
    (prop::array::uniform7(any::<bool>()), 0i8..48, 0i8..48).prop_map(|(days, start, end)| {
        Restriction {
            days,
            start: Time::constant(start / 2, (start % 2) * 30, 0, 0),
            end: Time::constant(end / 2, (end % 2) * 30, 0, 0),
        }
    })
}

fn arb_layer() -> impl Strategy<Value = Layer> {
    (
        prop::sample::select(Rotation::ALL.to_vec()),
        1u32..4,
        arb_start(),
        prop::collection::vec(prop::sample::select(USERS.to_vec()), 0..4),
        prop::collection::vec(arb_restriction(), 0..3),
    )
        .prop_map(|(rotation, count, start_at, users, restrictions)| Layer {
            rotation,
            count,
            start_at,
            users: users.into_iter().map(str::to_owned).collect(),
            restrictions,
        })
}

/// A window starting in 2026 and lasting from a minute to about 3 weeks.
fn arb_window() -> impl Strategy<Value = (Millis, Millis)> {
    (0i64..365 * 24 * 60, 1i64..21 * 24 * 60).prop_map(|(from, len)| {
        let since = utc("2026-01-01T00:00:00Z") + from * 60_000;
        (since, since + len * 60_000)
    })
}

fn arb_schedule() -> impl Strategy<Value = Schedule> {
    (
        arb_zone(),
        prop::collection::vec(arb_layer(), 1..4),
        prop::collection::vec(
            (
                prop::sample::select(USERS.to_vec()),
                0i64..400 * 24 * 60,
                1i64..5 * 24 * 60,
            ),
            0..3,
        ),
    )
        .prop_map(|(time_zone, layers, overrides)| Schedule {
            time_zone,
            layers,
            overrides: overrides
                .into_iter()
                .map(|(user, from, len)| {
                    let start = utc("2026-01-01T00:00:00Z") + from * 60_000;
                    ovr(user, start, start + len * 60_000)
                })
                .collect(),
        })
}

/// Instants spread over `[since, until)`, plus each shift's first and last
/// millisecond and the millisecond before each.
fn samples(since: Millis, until: Millis, fractions: &[u16], shifts: &[Shift]) -> Vec<Millis> {
    let span = until - since;
    let mut out: Vec<Millis> = fractions
        .iter()
        .map(|f| since + span * Millis::from(*f) / 65_536)
        .collect();
    for s in shifts {
        out.extend([s.start, s.start - 1, s.end - 1, s.end]);
    }
    out.retain(|t| (since..until).contains(t));
    out
}

fn shift_at(shifts: &[Shift], t: Millis) -> Option<&str> {
    shifts
        .iter()
        .find(|s| s.start <= t && t < s.end)
        .map(|s| s.user.as_str())
}

/// Sorted, non-empty, non-overlapping, inside the window, and merged.
fn check_well_formed(shifts: &[Shift], since: Millis, until: Millis) -> Result<(), TestCaseError> {
    for s in shifts {
        prop_assert!(
            since <= s.start && s.start < s.end && s.end <= until,
            "{s:?}"
        );
    }
    for pair in shifts.windows(2) {
        prop_assert!(pair[0].end <= pair[1].start, "{pair:?}");
        prop_assert!(
            pair[0].end < pair[1].start || pair[0].user != pair[1].user,
            "unmerged {pair:?}"
        );
    }
    Ok(())
}

/// Reference turn handoffs, computed naively from turn 0 with jiff's own
/// calendar arithmetic.
fn naive_handoffs(layer: &Layer, zone: &TimeZone, until: Millis) -> Vec<Millis> {
    let mut out = Vec::new();
    for i in 0i64.. {
        let n = i * i64::from(layer.count);
        let span = match layer.rotation {
            Rotation::Hourly => Span::new().hours(n),
            Rotation::Daily => Span::new().days(n),
            Rotation::Weekly => Span::new().weeks(n),
            Rotation::Monthly => Span::new().months(n),
            Rotation::Yearly => Span::new().years(n),
        };
        let wall = layer.start_at.checked_add(span).expect("in range");
        let h = zone
            .to_ambiguous_timestamp(wall)
            .compatible()
            .expect("in range")
            .as_millisecond();
        if h > until + 2 * zone::MAX_OFFSET_MS {
            break;
        }
        out.push(h);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// (1) and (5): the shift list agrees with `on_call` everywhere, each
    /// layer has one person per instant, and every list is well formed.
    #[test]
    fn shifts_agree_with_on_call(
        s in arb_schedule(),
        (since, until) in arb_window(),
        fractions in prop::collection::vec(any::<u16>(), 24),
    ) {
        let shifts = s.shifts(since, until);
        check_well_formed(&shifts, since, until)?;
        for t in samples(since, until, &fractions, &shifts) {
            prop_assert_eq!(s.on_call(t), shift_at(&shifts, t), "at {}", t);
        }
        for layer in &s.layers {
            let own = layer.shifts(&s.time_zone, since, until);
            check_well_formed(&own, since, until)?;
            for t in samples(since, until, &fractions, &own) {
                prop_assert_eq!(layer.on_call(&s.time_zone, t), shift_at(&own, t), "at {}", t);
            }
        }
    }

    /// (2): an unrestricted layer's shifts change hands exactly at the turn
    /// handoffs, and the users come round in order.
    #[test]
    fn unrestricted_shifts_follow_the_turns(
        zone in arb_zone(),
        rotation in prop::sample::select(Rotation::ALL.to_vec()),
        count in 1u32..4,
        n in 1usize..5,
        before in 0i64..40 * 24 * 60,
        (since, until) in arb_window(),
        fractions in prop::collection::vec(any::<u16>(), 24),
    ) {
        let start_at = local(&zone, since - before * 60_000);
        let layer = Layer {
            rotation,
            count,
            start_at,
            users: USERS[..n].iter().map(|u| u.to_string()).collect(),
            restrictions: Vec::new(),
        };
        let handoffs = naive_handoffs(&layer, &zone, until);
        let turn = |t: Millis| handoffs.iter().rposition(|h| *h <= t);
        let user = |t: Millis| turn(t).map(|i| USERS[i % n]);
        let shifts = layer.shifts(&zone, since, until);
        for t in samples(since, until, &fractions, &shifts) {
            prop_assert_eq!(layer.on_call(&zone, t), user(t), "at {}", t);
        }
        let mut expected: Vec<Millis> = handoffs
            .iter()
            .copied()
            .filter(|h| since < *h && *h < until && user(*h) != user(h - 1))
            .collect();
        // A DST gap can map two hourly turns to one instant (02:00 and 03:00
        // on a spring-forward night): that is one change of hands, not two.
        expected.dedup();
        let changes: Vec<Millis> = shifts.iter().map(|s| s.start).filter(|t| *t > since).collect();
        prop_assert_eq!(changes, expected);
        for pair in shifts.windows(2) {
            prop_assert_eq!(pair[0].end, pair[1].start, "contiguous once started");
            // Only hourly turns can be squeezed out (by a DST gap).
            if rotation != Rotation::Hourly {
                let at = |u: &str| USERS.iter().position(|x| *x == u);
                prop_assert_eq!(at(&pair[1].user), at(&pair[0].user).map(|i| (i + 1) % n));
            }
        }
        let unit = match rotation {
            Rotation::Hourly => Some(HOUR),
            Rotation::Daily => Some(24 * HOUR),
            Rotation::Weekly => Some(7 * 24 * HOUR),
            Rotation::Monthly | Rotation::Yearly => None,
        };
        if let Some(unit) = unit.filter(|_| zone == TimeZone::UTC) {
            for s in shifts.iter().filter(|s| s.start > since && s.end < until) {
                prop_assert_eq!(s.end - s.start, i64::from(count) * unit);
            }
        }
    }

    /// (3): an override holds for its whole span and hands back to exactly
    /// what would have been on call without it.
    #[test]
    fn overrides_win_and_hand_back(
        s in arb_schedule(),
        (start, end) in arb_window(),
        fractions in prop::collection::vec(any::<u16>(), 24),
    ) {
        let mut with = s.clone();
        with.overrides.push(ovr("zed", start, end));
        for t in samples(start, end, &fractions, &[]) {
            prop_assert_eq!(with.on_call(t), Some("zed"));
        }
        prop_assert_eq!(with.on_call(start), Some("zed"));
        prop_assert_eq!(with.on_call(end - 1), Some("zed"));
        prop_assert_eq!(with.on_call(end), s.on_call(end));
        prop_assert_eq!(with.on_call(start - 1), s.on_call(start - 1));
        let shifts = with.shifts(start - HOUR, end + HOUR);
        prop_assert!(shifts.contains(&shift("zed", start, end)));
    }

    /// (4): daily and weekly handoffs keep `start_at`'s wall-clock time (and
    /// weekday) in every zone whenever that wall time exists, and the turn
    /// changes hands exactly there.
    #[test]
    fn handoffs_keep_wall_clock_time(
        zone in arb_zone(),
        weekly in any::<bool>(),
        count in 1u32..4,
        start_at in arb_start(),
    ) {
        let rotation = if weekly { Rotation::Weekly } else { Rotation::Daily };
        let users: Vec<String> = USERS[..3].iter().map(|u| u.to_string()).collect();
        let layer = Layer { rotation, count, start_at, users, restrictions: Vec::new() };
        let days = if weekly { 7 * i64::from(count) } else { i64::from(count) };
        let mut previous = None;
        for i in 0i64..120 {
            let wall = start_at.checked_add(Span::new().days(i * days)).expect("in range");
            let h = layer.handoff(&zone, i).expect("in range");
            let reading = local(&zone, h);
            match zone.to_ambiguous_timestamp(wall).offset() {
                AmbiguousOffset::Gap { .. } => prop_assert!(reading > wall),
                _ => prop_assert_eq!(reading, wall),
            }
            prop_assert!(previous < Some(h), "handoffs increase");
            prop_assert_eq!(layer.on_call(&zone, h), Some(USERS[(i % 3) as usize]));
            if i > 0 {
                prop_assert_eq!(layer.on_call(&zone, h - 1), Some(USERS[((i - 1) % 3) as usize]));
            } else {
                prop_assert_eq!(layer.on_call(&zone, h - 1), None);
            }
            previous = Some(h);
        }
    }
}
