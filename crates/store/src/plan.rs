//! Turning an engine decision into the row changes both backends write.
//!
//! `klaxon_core::engine::decide` says what happens in domain terms (an
//! action, a step in the policy, timers); this module maps that onto an
//! incident row, using the policy's rules as loaded by a backend. Both
//! backends then only execute the SQL.

use std::collections::HashMap;

use klaxon_core::engine::{decide, Cause, Context, Decision};
use klaxon_core::escalation::Step;
use klaxon_core::incident::{IncidentAction, IncidentState, TransitionError};
use klaxon_core::time::{Millis, MINUTE_MS};

use crate::{Incident, PolicyRule};

/// What the engine needs to know about an incident's service and policy.
#[derive(Debug, Clone)]
pub(crate) struct PolicyContext {
    /// The service's policy's rules, in order.
    pub rules: Vec<PolicyRule>,
    /// How many times the rule list is walked.
    pub loop_limit: i64,
    /// Minutes, or off.
    pub acknowledge_timeout: Option<i64>,
    /// Minutes, or off.
    pub auto_resolve_timeout: Option<i64>,
    /// The schedules the rules name, by id.
    pub schedules: HashMap<String, klaxon_core::schedule::Schedule>,
}

/// The new values of an incident row, and its timer changes.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The action applied (the audit event's name).
    pub action: IncidentAction,
    /// New state.
    pub state: IncidentState,
    /// New `acknowledged_at`.
    pub acknowledged_at: Option<Millis>,
    /// New `resolved_at`.
    pub resolved_at: Option<Millis>,
    /// New assignee.
    pub current_user_id: Option<String>,
    /// New rule.
    pub current_policy_rule_id: Option<String>,
    /// New loop count.
    pub loop_count: i64,
    /// Timer kinds to delete.
    pub cancel: Vec<&'static str>,
    /// Timers to insert: (kind, due).
    pub schedule: Vec<(&'static str, Millis)>,
}

impl PolicyContext {
    /// Who a rule pages at an instant: its user, or (for a schedule rule)
    /// whoever is on call then — nobody if the schedule has a gap.
    pub fn assignee(&self, rule: &PolicyRule, at: Millis) -> Option<String> {
        match rule.assignment_type.as_str() {
            "user" => Some(rule.assignee_id.clone()),
            _ => self
                .schedules
                .get(&rule.assignee_id)?
                .on_call(at)
                .map(str::to_owned),
        }
    }

    /// Ids of the schedules the rules name.
    pub fn schedule_ids(rules: &[PolicyRule]) -> Vec<String> {
        let mut ids: Vec<String> = rules
            .iter()
            .filter(|r| r.assignment_type == "schedule")
            .map(|r| r.assignee_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Decides what `cause` does to `before` (`None` for a new incident) and
/// returns the row changes, `None` when nothing changes.
pub(crate) fn plan(
    before: Option<&Incident>,
    cause: Cause,
    pc: &PolicyContext,
    now: Millis,
) -> Result<Option<Change>, TransitionError> {
    let timeouts: Vec<Millis> = pc
        .rules
        .iter()
        .map(|r| r.escalation_timeout.saturating_mul(MINUTE_MS))
        .collect();
    let state = before
        .and_then(|b| IncidentState::parse(&b.state))
        .unwrap_or(IncidentState::Triggered);
    let rule_index = before.and_then(|b| {
        let current = b.current_policy_rule_id.as_ref()?;
        pc.rules.iter().position(|r| &r.id == current)
    });
    let ctx = Context {
        state,
        rule_index,
        loop_count: before.map_or(1, |b| u32::try_from(b.escalation_loop_count).unwrap_or(1)),
        rule_timeouts: &timeouts,
        loop_limit: u32::try_from(pc.loop_limit).unwrap_or(1),
        acknowledge_timeout: pc.acknowledge_timeout.map(|m| m.saturating_mul(MINUTE_MS)),
        auto_resolve_timeout: pc.auto_resolve_timeout.map(|m| m.saturating_mul(MINUTE_MS)),
        now,
    };
    let Some(d) = decide(cause, &ctx)? else {
        return Ok(None);
    };
    Ok(Some(change(before, d, pc, now)))
}

fn change(before: Option<&Incident>, d: Decision, pc: &PolicyContext, now: Millis) -> Change {
    let (mut user, mut rule, mut loop_count) = match before {
        Some(b) => (
            b.current_user_id.clone(),
            b.current_policy_rule_id.clone(),
            b.escalation_loop_count,
        ),
        None => (None, None, 1),
    };
    if let Some(Step {
        index,
        loop_count: l,
    }) = d.step
    {
        if let Some(r) = pc.rules.get(index) {
            user = pc.assignee(r, now);
            rule = Some(r.id.clone());
            loop_count = i64::from(l);
        }
    }
    let (acknowledged_at, resolved_at) = match d.to {
        IncidentState::Triggered => (None, None),
        IncidentState::Acknowledged => (Some(now), None),
        IncidentState::Resolved => (before.and_then(|b| b.acknowledged_at), Some(now)),
    };
    Change {
        action: d.action,
        state: d.to,
        acknowledged_at,
        resolved_at,
        current_user_id: user,
        current_policy_rule_id: rule,
        loop_count,
        cancel: d.cancel.iter().map(|k| k.as_str()).collect(),
        schedule: d
            .schedule
            .iter()
            .map(|(k, due)| (k.as_str(), *due))
            .collect(),
    }
}
