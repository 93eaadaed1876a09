//! What happens to an incident when it is opened, acted on, or one of its
//! timers comes due — as data.
//!
//! [`decide`] is a pure function of the incident's state, its policy, its
//! service's timeouts and `now`. It returns the state-machine action to
//! apply, the new assignment, which durable timers to cancel and
//! schedule, and who is to be told: [`Page`]s for whoever the incident is
//! (again) assigned to, and a [`StatusUpdate`] for those already paged. The
//! store carries the decision out in one transaction.
//!
//! `decide` knows rule positions, not users, so a page names its recipient
//! as a role ([`Recipient`]) that the store resolves to a user id along
//! with the assignment. A repeated trigger of an open incident never
//! reaches `decide` (deduplication answers it), and an action that changes
//! nothing decides `None`: neither pages anyone.

use crate::escalation::{self, Step};
use crate::incident::{apply, IncidentAction, IncidentState, Transition, TransitionError};
use crate::time::Millis;

/// The kinds of durable timer an incident can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// Move to the next rule if still triggered.
    Escalate,
    /// Return an acknowledged incident to triggered.
    AcknowledgeTimeout,
    /// Resolve an incident left open too long.
    AutoResolve,
}

impl TimerKind {
    /// All kinds.
    pub const ALL: [TimerKind; 3] = [
        TimerKind::Escalate,
        TimerKind::AcknowledgeTimeout,
        TimerKind::AutoResolve,
    ];

    /// The name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Escalate => "escalate",
            TimerKind::AcknowledgeTimeout => "acknowledge_timeout",
            TimerKind::AutoResolve => "auto_resolve",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        TimerKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Why [`decide`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A new incident.
    Open,
    /// A person or monitoring system asked for an action.
    Act(IncidentAction),
    /// A timer came due.
    Timer(TimerKind),
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The incident's state (`Triggered` for `Open`).
    pub state: IncidentState,
    /// Position of the current rule in the policy (`None`: no rule, or it
    /// was deleted).
    pub rule_index: Option<usize>,
    /// Current walk of the rule list, 1-based.
    pub loop_count: u32,
    /// Each rule's escalation timeout in milliseconds, in policy order.
    pub rule_timeouts: &'a [Millis],
    /// How many times the rule list is walked.
    pub loop_limit: u32,
    /// The service's acknowledge timeout in milliseconds.
    pub acknowledge_timeout: Option<Millis>,
    /// The service's auto-resolve timeout in milliseconds.
    pub auto_resolve_timeout: Option<Millis>,
    /// The instant of the decision.
    pub now: Millis,
}

/// Why someone is paged about an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageReason {
    /// The incident opened and was assigned.
    Assigned,
    /// A timer or a person moved the incident to the next rule.
    Escalated,
    /// The incident went from acknowledged back to triggered (the
    /// acknowledge timeout, or someone triggering it again): paging starts
    /// again for its current assignee.
    Retriggered,
}

impl PageReason {
    /// The reason's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            PageReason::Assigned => "assigned",
            PageReason::Escalated => "escalated",
            PageReason::Retriggered => "retriggered",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            PageReason::Assigned,
            PageReason::Escalated,
            PageReason::Retriggered,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Whom a [`Page`] is for, in the terms [`decide`] knows. The store
/// resolves it to a user id; a rule or incident with nobody assigned (a
/// schedule with a gap, a deleted rule) resolves to nobody, and nobody is
/// paged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// Whoever the rule at [`Decision::step`] assigns at `now`: its user, or
    /// its schedule's on-call user.
    NewAssignee,
    /// The incident's assignee as it stands; the decision does not change it.
    CurrentAssignee,
}

/// Someone to page about the incident, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Page {
    /// Why they are paged.
    pub reason: PageReason,
    /// Who they are.
    pub to: Recipient,
}

/// A short update about the incident for the users already paged about it,
/// except whoever acted (see [`crate::notify::status_update_recipients`]).
/// Planned for acknowledge, escalate and resolve, whether a person or a
/// timer acted (a timer has no actor, so everyone paged is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusUpdate {
    /// What happened.
    pub action: IncidentAction,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The state-machine action applied (its name goes in the audit event).
    pub action: IncidentAction,
    /// The incident's new state.
    pub to: IncidentState,
    /// The new assignment, if it changes.
    pub step: Option<Step>,
    /// Timer kinds to delete before scheduling.
    pub cancel: Vec<TimerKind>,
    /// Timers to create.
    pub schedule: Vec<(TimerKind, Millis)>,
    /// Who is to be paged, at `now`, because of this decision.
    pub pages: Vec<Page>,
    /// The update for those already paged, if this decision warrants one.
    pub status_update: Option<StatusUpdate>,
}

/// Decides what `cause` does to an incident.
///
/// `Ok(None)`: nothing happens (a repeated action, or a timer that no
/// longer applies). `Err`: an action the state machine refuses.
pub fn decide(cause: Cause, ctx: &Context<'_>) -> Result<Option<Decision>, TransitionError> {
    let rules = ctx.rule_timeouts.len();
    match cause {
        Cause::Open => {
            let step = escalation::first_step(rules);
            let mut schedule = escalation_timer(ctx, step);
            if let Some(t) = ctx.auto_resolve_timeout {
                schedule.push((TimerKind::AutoResolve, ctx.now.saturating_add(t)));
            }
            Ok(Some(Decision {
                action: IncidentAction::Trigger,
                to: IncidentState::Triggered,
                step,
                cancel: Vec::new(),
                schedule,
                pages: page(PageReason::Assigned, Recipient::NewAssignee, step.is_some()),
                status_update: None,
            }))
        }
        Cause::Act(action) => act(action, ctx, false),
        Cause::Timer(TimerKind::Escalate) if ctx.state == IncidentState::Triggered => {
            act(IncidentAction::Escalate, ctx, true)
        }
        Cause::Timer(TimerKind::AcknowledgeTimeout) if ctx.state == IncidentState::Acknowledged => {
            act(IncidentAction::Trigger, ctx, true)
        }
        Cause::Timer(TimerKind::AutoResolve) if ctx.state != IncidentState::Resolved => {
            act(IncidentAction::Resolve, ctx, true)
        }
        // A timer whose condition no longer holds (it should have been
        // cancelled; firing it late must do nothing).
        Cause::Timer(_) => Ok(None),
    }
}

fn act(
    action: IncidentAction,
    ctx: &Context<'_>,
    timed: bool,
) -> Result<Option<Decision>, TransitionError> {
    let to = match apply(ctx.state, action)? {
        Transition::Unchanged => return Ok(None),
        Transition::To(to) => to,
    };
    let rules = ctx.rule_timeouts.len();
    let decision = match action {
        IncidentAction::Acknowledge => Decision {
            action,
            to,
            step: None,
            cancel: vec![TimerKind::Escalate, TimerKind::AcknowledgeTimeout],
            schedule: ctx
                .acknowledge_timeout
                .map(|t| (TimerKind::AcknowledgeTimeout, ctx.now.saturating_add(t)))
                .into_iter()
                .collect(),
            pages: Vec::new(),
            status_update: Some(StatusUpdate { action }),
        },
        IncidentAction::Trigger => {
            // Paging starts again for the current rule.
            let current = ctx.rule_index.map(|index| Step {
                index,
                loop_count: ctx.loop_count,
            });
            Decision {
                action,
                to,
                step: None,
                cancel: vec![TimerKind::Escalate, TimerKind::AcknowledgeTimeout],
                schedule: escalation_timer(ctx, current),
                pages: page(PageReason::Retriggered, Recipient::CurrentAssignee, true),
                status_update: None,
            }
        }
        IncidentAction::Escalate => {
            let next = if timed {
                escalation::next_timed(rules, ctx.rule_index, ctx.loop_count, ctx.loop_limit)
            } else {
                escalation::next_manual(rules, ctx.rule_index, ctx.loop_count)
            };
            // A timed escalation past the last permitted step does nothing
            // (no timer should exist then; a stray one is dropped).
            if timed && next.is_none() {
                return Ok(None);
            }
            Decision {
                action,
                to,
                step: next,
                cancel: vec![TimerKind::Escalate, TimerKind::AcknowledgeTimeout],
                schedule: escalation_timer(ctx, next),
                pages: page(
                    PageReason::Escalated,
                    Recipient::NewAssignee,
                    next.is_some(),
                ),
                status_update: Some(StatusUpdate { action }),
            }
        }
        IncidentAction::Resolve => Decision {
            action,
            to,
            step: None,
            cancel: TimerKind::ALL.to_vec(),
            schedule: Vec::new(),
            pages: Vec::new(),
            status_update: Some(StatusUpdate { action }),
        },
    };
    Ok(Some(decision))
}

/// The assignments an incident triggered at `at` and never acknowledged
/// would go through: `(instant, step)` for the first rule and every timed
/// escalation, up to the end of the walk. Built from [`decide`], so it is
/// exactly what the engine would do.
pub fn preview(rule_timeouts: &[Millis], loop_limit: u32, at: Millis) -> Vec<(Millis, Step)> {
    let mut ctx = Context {
        state: IncidentState::Triggered,
        rule_index: None,
        loop_count: 1,
        rule_timeouts,
        loop_limit,
        acknowledge_timeout: None,
        auto_resolve_timeout: None,
        now: at,
    };
    let mut out = Vec::new();
    let mut next = decide(Cause::Open, &ctx).ok().flatten();
    // Bounded by the walk's length; the cap only guards absurd inputs.
    let cap = rule_timeouts
        .len()
        .saturating_mul(loop_limit.max(1) as usize)
        .min(10_000);
    while let Some(d) = next.take() {
        let Some(step) = d.step else { break };
        out.push((ctx.now, step));
        if out.len() >= cap {
            break;
        }
        let Some(&(_, due)) = d.schedule.iter().find(|(k, _)| *k == TimerKind::Escalate) else {
            break;
        };
        ctx.rule_index = Some(step.index);
        ctx.loop_count = step.loop_count;
        ctx.now = due;
        next = decide(Cause::Timer(TimerKind::Escalate), &ctx)
            .ok()
            .flatten();
    }
    out
}

/// First delay before a timer that could not be processed is tried again.
pub const RETRY_BASE_MS: Millis = 1_000;
/// Longest delay between two tries of a failing timer.
pub const RETRY_CAP_MS: Millis = 10 * crate::time::MINUTE_MS;

/// How long a timer that has now failed `attempts` times (1 after its
/// first failure) waits before it is tried again: 1 s, 2 s, 4 s … doubling
/// up to [`RETRY_CAP_MS`]. A failing timer is never dropped — its data may
/// be fixed — but it must not be retried so often that it crowds out the
/// timers that work.
pub fn retry_delay(attempts: u32) -> Millis {
    let doublings = attempts.saturating_sub(1).min(32);
    RETRY_BASE_MS
        .saturating_mul(1_i64 << doublings)
        .min(RETRY_CAP_MS)
}

/// One page, or none when there is nobody it could be for.
fn page(reason: PageReason, to: Recipient, someone: bool) -> Vec<Page> {
    if someone {
        vec![Page { reason, to }]
    } else {
        Vec::new()
    }
}

/// The escalation timer for an incident now at `step`: due after that
/// rule's timeout, if the walk goes on from there.
fn escalation_timer(ctx: &Context<'_>, step: Option<Step>) -> Vec<(TimerKind, Millis)> {
    let Some(step) = step else { return Vec::new() };
    let rules = ctx.rule_timeouts.len();
    if escalation::next_timed(rules, Some(step.index), step.loop_count, ctx.loop_limit).is_none() {
        return Vec::new();
    }
    let timeout = ctx.rule_timeouts.get(step.index).copied().unwrap_or(0);
    vec![(TimerKind::Escalate, ctx.now.saturating_add(timeout))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MINUTE_MS;
    use proptest::prelude::*;

    const TIMEOUTS: [Millis; 2] = [30 * MINUTE_MS, 10 * MINUTE_MS];

    fn ctx(
        state: IncidentState,
        rule: Option<usize>,
        loop_count: u32,
        now: Millis,
    ) -> Context<'static> {
        Context {
            state,
            rule_index: rule,
            loop_count,
            rule_timeouts: &TIMEOUTS,
            loop_limit: 2,
            acknowledge_timeout: Some(60 * MINUTE_MS),
            auto_resolve_timeout: Some(24 * 60 * MINUTE_MS),
            now,
        }
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let delays: Vec<Millis> = (0..=12).map(retry_delay).collect();
        assert_eq!(
            delays,
            [
                1_000, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000,
                512_000, 600_000, 600_000
            ]
        );
        assert_eq!(retry_delay(u32::MAX), RETRY_CAP_MS);
    }

    proptest! {
        #[test]
        fn retry_delay_never_shrinks(a in 0u32..1000) {
            prop_assert!(retry_delay(a) <= retry_delay(a + 1));
            prop_assert!(retry_delay(a) >= RETRY_BASE_MS);
        }
    }

    #[test]
    fn opening_assigns_the_first_rule_and_arms_timers() {
        let d = decide(Cause::Open, &ctx(IncidentState::Triggered, None, 1, 0))
            .expect("ok")
            .expect("decision");
        assert_eq!(
            d.step,
            Some(Step {
                index: 0,
                loop_count: 1
            })
        );
        assert_eq!(
            d.schedule,
            vec![
                (TimerKind::Escalate, 30 * MINUTE_MS),
                (TimerKind::AutoResolve, 24 * 60 * MINUTE_MS)
            ]
        );
    }

    #[test]
    fn timed_escalation_stops_at_the_loop_limit() {
        // Rule 2 of loop 2 is the end of the walk: no further timer.
        let d = decide(
            Cause::Timer(TimerKind::Escalate),
            &ctx(IncidentState::Triggered, Some(0), 2, 5),
        )
        .expect("ok")
        .expect("decision");
        assert_eq!(
            d.step,
            Some(Step {
                index: 1,
                loop_count: 2
            })
        );
        assert!(d.schedule.is_empty());
        let none = decide(
            Cause::Timer(TimerKind::Escalate),
            &ctx(IncidentState::Triggered, Some(1), 2, 5),
        )
        .expect("ok");
        assert_eq!(none, None);
    }

    #[test]
    fn acknowledge_cancels_escalation_and_arms_the_ack_timeout() {
        let d = decide(
            Cause::Act(IncidentAction::Acknowledge),
            &ctx(IncidentState::Triggered, Some(0), 1, 7),
        )
        .expect("ok")
        .expect("decision");
        assert_eq!(d.to, IncidentState::Acknowledged);
        assert!(d.cancel.contains(&TimerKind::Escalate));
        assert_eq!(
            d.schedule,
            vec![(TimerKind::AcknowledgeTimeout, 7 + 60 * MINUTE_MS)]
        );
    }

    #[test]
    fn ack_timeout_retriggers_the_current_rule() {
        let d = decide(
            Cause::Timer(TimerKind::AcknowledgeTimeout),
            &ctx(IncidentState::Acknowledged, Some(1), 1, 100),
        )
        .expect("ok")
        .expect("decision");
        assert_eq!(d.action, IncidentAction::Trigger);
        assert_eq!(d.to, IncidentState::Triggered);
        assert_eq!(
            d.schedule,
            vec![(TimerKind::Escalate, 100 + 10 * MINUTE_MS)]
        );
    }

    #[test]
    fn stale_timers_do_nothing() {
        for (kind, state) in [
            (TimerKind::Escalate, IncidentState::Acknowledged),
            (TimerKind::Escalate, IncidentState::Resolved),
            (TimerKind::AcknowledgeTimeout, IncidentState::Triggered),
            (TimerKind::AutoResolve, IncidentState::Resolved),
        ] {
            assert_eq!(
                decide(Cause::Timer(kind), &ctx(state, Some(0), 1, 0)),
                Ok(None),
                "{kind:?} {state:?}"
            );
        }
    }

    #[test]
    fn auto_resolve_resolves_and_cancels_everything() {
        let d = decide(
            Cause::Timer(TimerKind::AutoResolve),
            &ctx(IncidentState::Acknowledged, Some(0), 1, 0),
        )
        .expect("ok")
        .expect("decision");
        assert_eq!(d.to, IncidentState::Resolved);
        assert_eq!(d.cancel, TimerKind::ALL.to_vec());
    }

    #[test]
    fn preview_follows_the_timers() {
        let steps = preview(&TIMEOUTS, 2, 1000);
        let got: Vec<(Millis, usize, u32)> = steps
            .iter()
            .map(|(t, s)| (*t, s.index, s.loop_count))
            .collect();
        let m = MINUTE_MS;
        assert_eq!(
            got,
            vec![
                (1000, 0, 1),
                (1000 + 30 * m, 1, 1),
                (1000 + 40 * m, 0, 2),
                (1000 + 70 * m, 1, 2)
            ]
        );
        assert!(preview(&[], 3, 0).is_empty());
    }

    #[test]
    fn names_round_trip() {
        for k in TimerKind::ALL {
            assert_eq!(TimerKind::parse(k.as_str()), Some(k));
        }
        for r in [
            PageReason::Assigned,
            PageReason::Escalated,
            PageReason::Retriggered,
        ] {
            assert_eq!(PageReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(PageReason::parse("Assigned"), None);
    }

    fn pages_of(cause: Cause, c: &Context<'_>) -> (Vec<Page>, Option<IncidentAction>) {
        let d = decide(cause, c).expect("ok").expect("decision");
        (d.pages, d.status_update.map(|u| u.action))
    }

    #[test]
    fn who_is_told_about_each_change() {
        use IncidentAction as A;
        use IncidentState as S;
        let new = |reason| {
            vec![Page {
                reason,
                to: Recipient::NewAssignee,
            }]
        };
        let table = [
            (Cause::Open, S::Triggered, (new(PageReason::Assigned), None)),
            (
                Cause::Timer(TimerKind::Escalate),
                S::Triggered,
                (new(PageReason::Escalated), Some(A::Escalate)),
            ),
            (
                Cause::Act(A::Escalate),
                S::Acknowledged,
                (new(PageReason::Escalated), Some(A::Escalate)),
            ),
            (
                Cause::Timer(TimerKind::AcknowledgeTimeout),
                S::Acknowledged,
                (
                    vec![Page {
                        reason: PageReason::Retriggered,
                        to: Recipient::CurrentAssignee,
                    }],
                    None,
                ),
            ),
            (
                Cause::Act(A::Acknowledge),
                S::Triggered,
                (vec![], Some(A::Acknowledge)),
            ),
            (
                Cause::Act(A::Resolve),
                S::Acknowledged,
                (vec![], Some(A::Resolve)),
            ),
            (
                Cause::Timer(TimerKind::AutoResolve),
                S::Triggered,
                (vec![], Some(A::Resolve)),
            ),
        ];
        for (cause, state, want) in table {
            assert_eq!(
                pages_of(cause, &ctx(state, Some(0), 1, 0)),
                want,
                "{cause:?} {state:?}"
            );
        }
    }

    #[test]
    fn nobody_to_page_without_rules() {
        let none = Context {
            rule_timeouts: &[],
            ..ctx(IncidentState::Triggered, None, 1, 0)
        };
        assert_eq!(pages_of(Cause::Open, &none), (vec![], None));
        // A manual escalation of an empty policy still tells those paged.
        assert_eq!(
            pages_of(Cause::Act(IncidentAction::Escalate), &none),
            (vec![], Some(IncidentAction::Escalate))
        );
    }

    /// Repeating the current state (what a repeated request, or a repeated
    /// trigger of an open incident that deduplication did not catch, asks)
    /// and stale timers decide nothing, so they page nobody.
    #[test]
    fn no_op_causes_plan_no_pages() {
        use IncidentAction as A;
        use IncidentState as S;
        for (cause, state) in [
            (Cause::Act(A::Trigger), S::Triggered),
            (Cause::Act(A::Acknowledge), S::Acknowledged),
            (Cause::Act(A::Resolve), S::Resolved),
            (Cause::Timer(TimerKind::Escalate), S::Acknowledged),
            (Cause::Timer(TimerKind::AcknowledgeTimeout), S::Triggered),
            (Cause::Timer(TimerKind::AutoResolve), S::Resolved),
        ] {
            assert_eq!(
                decide(cause, &ctx(state, Some(0), 1, 0)),
                Ok(None),
                "{cause:?} {state:?}"
            );
        }
        // The end of the walk: a stray escalation timer pages nobody.
        assert_eq!(
            decide(
                Cause::Timer(TimerKind::Escalate),
                &ctx(S::Triggered, Some(1), 2, 0)
            ),
            Ok(None)
        );
    }

    /// A tiny simulator: applies decisions to an incident and its timers.
    #[derive(Debug, Clone)]
    struct Sim {
        state: IncidentState,
        step: Option<Step>,
        timers: Vec<(TimerKind, Millis)>,
        escalations: usize,
    }

    impl Sim {
        fn apply(&mut self, d: Decision) {
            self.state = d.to;
            if let Some(step) = d.step {
                self.step = Some(step);
            }
            self.timers.retain(|(k, _)| !d.cancel.contains(k));
            self.timers.extend(d.schedule);
            if d.action == IncidentAction::Escalate {
                self.escalations += 1;
            }
        }

        fn ctx<'a>(&self, timeouts: &'a [Millis], limit: u32, now: Millis) -> Context<'a> {
            Context {
                state: self.state,
                rule_index: self.step.map(|s| s.index),
                loop_count: self.step.map_or(1, |s| s.loop_count),
                rule_timeouts: timeouts,
                loop_limit: limit,
                acknowledge_timeout: None,
                auto_resolve_timeout: None,
                now,
            }
        }
    }

    proptest! {
        /// Left alone, an incident escalates rules × loop_limit − 1 times,
        /// each step exactly its rule's timeout after the previous one,
        /// and then no timer is left.
        #[test]
        fn unattended_walk(timeouts in prop::collection::vec(1i64..10_000, 1..6), limit in 1u32..5) {
            let mut sim = Sim { state: IncidentState::Triggered, step: None, timers: vec![], escalations: 0 };
            let d = decide(Cause::Open, &sim.ctx(&timeouts, limit, 0)).expect("ok").expect("open");
            sim.apply(d);
            let mut now = 0;
            while let Some((kind, due)) = sim.timers.pop() {
                prop_assert!(due >= now, "no step before its delay");
                let before = sim.step.expect("assigned");
                prop_assert_eq!(due - now, timeouts[before.index]);
                now = due;
                if let Some(d) = decide(Cause::Timer(kind), &sim.ctx(&timeouts, limit, now)).expect("timers never error") {
                    sim.apply(d);
                }
                prop_assert!(sim.timers.len() <= 1);
            }
            prop_assert_eq!(sim.escalations, timeouts.len() * limit as usize - 1);
            let last = sim.step.expect("assigned");
            prop_assert_eq!((last.index, last.loop_count), (timeouts.len() - 1, limit));
        }

        /// After an acknowledge no escalation timer remains; after a
        /// resolve no timer at all, whatever happened before.
        #[test]
        fn ack_and_resolve_cancel_future_effects(
            timeouts in prop::collection::vec(1i64..10_000, 1..4),
            actions in prop::collection::vec(0u8..4, 1..20),
        ) {
            let mut sim = Sim { state: IncidentState::Triggered, step: None, timers: vec![], escalations: 0 };
            let d = decide(Cause::Open, &sim.ctx(&timeouts, 3, 0)).expect("ok").expect("open");
            sim.apply(d);
            for (n, a) in actions.into_iter().enumerate() {
                let action = [IncidentAction::Acknowledge, IncidentAction::Trigger, IncidentAction::Escalate, IncidentAction::Resolve][a as usize];
                match decide(Cause::Act(action), &sim.ctx(&timeouts, 3, n as Millis)) {
                    Ok(Some(d)) => {
                        // A page comes only with a new or restarted
                        // assignment; an update only with a move to report.
                        let reasons: Vec<PageReason> = d.pages.iter().map(|p| p.reason).collect();
                        let (pages, update): (&[PageReason], _) = match action {
                            IncidentAction::Acknowledge => (&[], true),
                            IncidentAction::Resolve => (&[], true),
                            IncidentAction::Escalate => (&[PageReason::Escalated], true),
                            IncidentAction::Trigger => (&[PageReason::Retriggered], false),
                        };
                        prop_assert_eq!(&reasons[..], pages);
                        prop_assert_eq!(d.status_update.is_some(), update);
                        if let Some(u) = d.status_update {
                            prop_assert_eq!(u.action, action);
                        }
                        sim.apply(d)
                    }
                    Ok(None) => {}
                    Err(_) => prop_assert_eq!(sim.state, IncidentState::Resolved),
                }
                match sim.state {
                    IncidentState::Acknowledged => prop_assert!(sim.timers.iter().all(|(k, _)| *k != TimerKind::Escalate)),
                    IncidentState::Resolved => prop_assert!(sim.timers.is_empty()),
                    IncidentState::Triggered => {}
                }
            }
        }
    }
}
