//! Turning an engine decision into the row changes both backends write.
//!
//! `klaxon_core::engine::decide` says what happens in domain terms (an
//! action, a step in the policy, timers); this module maps that onto an
//! incident row, using the policy's rules as loaded by a backend. Both
//! backends then only execute the SQL.

use std::collections::HashMap;

use klaxon_core::engine::{decide, Cause, Context, Decision, PageReason, StatusUpdate, TimerKind};
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

/// Who a rule pages at an instant: its user, or (for a schedule rule)
/// whoever that schedule has on call then — nobody if it has a gap or is
/// not in `schedules`. The engine, `/oncalls` and the escalation preview
/// all answer through this.
pub fn rule_assignee(
    rule: &PolicyRule,
    schedules: &HashMap<String, klaxon_core::schedule::Schedule>,
    at: Millis,
) -> Option<String> {
    match rule.assignment_type.as_str() {
        "user" => Some(rule.assignee_id.clone()),
        _ => schedules
            .get(&rule.assignee_id)?
            .on_call(at)
            .map(str::to_owned),
    }
}

/// The audit changeset of a newly opened incident.
pub(crate) fn open_changeset(
    new: &crate::NewIncident,
    key: &str,
    change: &Change,
) -> serde_json::Value {
    let mut changeset = serde_json::json!({
        "state": "triggered", "message": new.message, "description": new.description,
        "details": new.details, "key": key, "current_user_id": change.current_user_id,
        "current_policy_rule_id": change.current_policy_rule_id, "escalation_loop_count": change.loop_count,
    });
    change.annotate(&mut changeset);
    changeset
}

/// The service and policy settings `load_policy_context` reads in one query.
#[derive(Debug, Clone)]
pub(crate) struct ServicePolicyRow {
    /// The service's account.
    pub account_id: String,
    /// Its policy.
    pub policy_id: String,
    /// The policy's loop limit.
    pub loop_limit: i64,
    /// Minutes, or off.
    pub acknowledge_timeout: Option<i64>,
    /// Minutes, or off.
    pub auto_resolve_timeout: Option<i64>,
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
    /// Users to page at `now` and why: the decision's pages resolved to
    /// the new `current_user_id` (nobody assigned, nobody paged).
    pub pages: Vec<(PageReason, String)>,
    /// The update for the users already paged about the incident.
    pub status_update: Option<StatusUpdate>,
    /// Rules passed over because nobody was on call on their schedule
    /// (the step went on to the next rule that had someone).
    pub skipped_rules: Vec<String>,
    /// The step found nobody on call on any rule from its own on: the
    /// incident stays unassigned until the next escalation.
    pub nobody_on_call: bool,
}

impl Change {
    /// Adds what the walk passed over to an audit changeset.
    pub fn annotate(&self, changeset: &mut serde_json::Value) {
        if let Some(map) = changeset.as_object_mut() {
            if !self.skipped_rules.is_empty() {
                map.insert(
                    "skipped_rules".into(),
                    serde_json::json!(self.skipped_rules),
                );
            }
            if self.nobody_on_call {
                tracing::warn!(
                    rule = ?self.current_policy_rule_id,
                    "nobody is on call on any rule from here on: the incident stays unassigned and pages no one until it escalates"
                );
                map.insert("nobody_on_call".into(), serde_json::Value::Bool(true));
            }
        }
    }
}

impl PolicyContext {
    /// Who a rule pages at an instant: its user, or (for a schedule rule)
    /// whoever is on call then — nobody if the schedule has a gap.
    pub fn assignee(&self, rule: &PolicyRule, at: Millis) -> Option<String> {
        rule_assignee(rule, &self.schedules, at)
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
    let mut schedule: Vec<(&'static str, Millis)> = d
        .schedule
        .iter()
        .map(|(k, due)| (k.as_str(), *due))
        .collect();
    let (mut skipped_rules, mut nobody_on_call) = (Vec::new(), false);
    if let Some(Step {
        index,
        loop_count: l,
    }) = d.step
    {
        if let Some(r) = pc.rules.get(index) {
            user = pc.assignee(r, now);
            rule = Some(r.id.clone());
            loop_count = i64::from(l);
            if user.is_none() {
                // Nobody on call on this rule's schedule: go on at once to
                // the next rule that has someone, as if its timeout had
                // passed, and time the escalation by that rule.
                let next = pc
                    .rules
                    .iter()
                    .enumerate()
                    .skip(index + 1)
                    .find_map(|(j, r)| Some((j, r, pc.assignee(r, now)?)));
                match next {
                    Some((j, next, assignee)) => {
                        skipped_rules = pc.rules[index..j].iter().map(|r| r.id.clone()).collect();
                        user = Some(assignee);
                        rule = Some(next.id.clone());
                        let escalate = TimerKind::Escalate.as_str();
                        for (kind, due) in &mut schedule {
                            if *kind == escalate {
                                *due = now.saturating_add(
                                    next.escalation_timeout.saturating_mul(MINUTE_MS),
                                );
                            }
                        }
                    }
                    None => nobody_on_call = true,
                }
            }
        }
    }
    let (acknowledged_at, resolved_at) = match d.to {
        IncidentState::Triggered => (None, None),
        IncidentState::Acknowledged => (Some(now), None),
        IncidentState::Resolved => (before.and_then(|b| b.acknowledged_at), Some(now)),
    };
    // Both recipients name the assignee after the change: the new one the
    // step assigned, or the current one the decision left in place.
    let pages = d
        .pages
        .iter()
        .filter_map(|p| Some((p.reason, user.clone()?)))
        .collect();
    Change {
        action: d.action,
        state: d.to,
        acknowledged_at,
        resolved_at,
        current_user_id: user,
        current_policy_rule_id: rule,
        loop_count,
        cancel: d.cancel.iter().map(|k| k.as_str()).collect(),
        schedule,
        pages,
        status_update: d.status_update,
        skipped_rules,
        nobody_on_call,
    }
}

/// A due timer as the engine selects it.
#[derive(Debug, Clone)]
pub(crate) struct DueTimer {
    /// Timer id.
    pub id: String,
    /// Its incident.
    pub incident_id: String,
    /// Stored kind.
    pub kind: String,
    /// When it came due.
    pub due_at: Millis,
    /// How many times processing it has failed.
    pub attempts: i64,
}

/// A due timer that could not be processed: it stays, to be tried again
/// later (its data may be fixed), and the rest of the batch goes on.
#[derive(Debug, Clone)]
pub(crate) struct FailedTimer {
    /// Timer id.
    pub id: String,
    /// Its incident.
    pub incident_id: String,
    /// Stored kind.
    pub kind: String,
    /// Failures so far, this one included.
    pub attempts: i64,
    /// When it is tried again.
    pub retry_at: Millis,
    /// Why it failed.
    pub reason: String,
}

/// One incident's net effect of a batch of fired timers.
#[derive(Debug, Clone)]
pub(crate) struct IncidentWrite {
    /// The incident after every change of the batch.
    pub after: Incident,
    /// Timer kinds to delete (of the timers that existed before the batch).
    pub cancel: Vec<&'static str>,
}

/// Everything a batch of fired timers writes, computed in memory so the
/// backends can write it with a few set-based statements.
#[derive(Debug, Default)]
pub(crate) struct BatchPlan {
    /// What fired (for the engine's report).
    pub fired: Vec<crate::FiredTimer>,
    /// Fired timers to delete.
    pub delete: Vec<String>,
    /// Timers set aside for a later try.
    pub failed: Vec<FailedTimer>,
    /// Changed incidents (final values and cancellations).
    pub incidents: Vec<IncidentWrite>,
    /// Timers to insert: (account, incident, kind, due).
    pub insert: Vec<(String, String, &'static str, Millis)>,
    /// Audit events: (account, incident, action, changeset).
    pub events: Vec<(String, String, String, serde_json::Value)>,
    /// Pages to queue: (account, incident, why, user). Only the final
    /// assignee of a still-triggered incident is paged.
    pub pages: Vec<(String, String, PageReason, String)>,
    /// Queued pages to cancel: per incident, every user's (`None`: the
    /// incident is no longer triggered) or every user's but the new
    /// assignee's (it was reassigned).
    pub stop_pages: Vec<(String, Option<String>)>,
    /// Status updates to queue: (account, incident, what happened, the
    /// new assignee of an escalation, who is paged instead of told).
    pub updates: Vec<(String, String, IncidentAction, Option<String>)>,
}

impl BatchPlan {
    /// Counts the batch's moves to acknowledged and resolved (once it is
    /// committed): one audit event each.
    pub fn count_moves(&self, counters: &crate::stats::Counters) {
        for (_, _, action, _) in &self.events {
            match action.as_str() {
                "incident.acknowledge" => counters.moved(IncidentState::Acknowledged),
                "incident.resolve" => counters.moved(IncidentState::Resolved),
                _ => {}
            }
        }
    }

    /// Changed incidents grouped by the set of timer kinds they cancel, so
    /// each group is one `DELETE … WHERE kind IN … AND incident_id IN …`.
    pub fn cancel_groups(&self) -> Vec<(Vec<&'static str>, Vec<&str>)> {
        let mut groups: Vec<(Vec<&'static str>, Vec<&str>)> = Vec::new();
        for w in self.incidents.iter().filter(|w| !w.cancel.is_empty()) {
            let mut kinds = w.cancel.clone();
            kinds.sort_unstable();
            match groups.iter_mut().find(|(k, _)| *k == kinds) {
                Some((_, ids)) => ids.push(&w.after.id),
                None => groups.push((kinds, vec![&w.after.id])),
            }
        }
        groups
    }

    /// Logs the timers that were set aside (after the batch committed).
    pub fn log_failures(&self) {
        for f in &self.failed {
            tracing::error!(
                incident = %f.incident_id,
                timer = %f.id,
                kind = %f.kind,
                attempts = f.attempts,
                retry_at = f.retry_at,
                reason = %f.reason,
                "timer could not be processed; retrying later"
            );
        }
    }
}

/// What a backend could load for a batch. A failure to load one incident
/// or one service's policy is recorded here with its reason, so that only
/// the timers that depend on it are set aside.
#[derive(Debug, Default)]
pub(crate) struct BatchInput {
    /// The (locked) incidents by id. A timer whose incident is neither here
    /// nor in `broken_incidents` is left alone: busy, or deleted.
    pub incidents: HashMap<String, Incident>,
    /// Incidents whose rows could not be read, with the reason.
    pub broken_incidents: HashMap<String, String>,
    /// Each involved service's policy context, or why it could not be loaded.
    pub contexts: HashMap<String, Result<PolicyContext, String>>,
}

/// Plans a batch of due timers from what `input` holds. Timers of one
/// incident apply in order, each to the previous one's result; a timer an
/// earlier change cancelled does not fire. A timer that cannot be
/// processed — its incident or policy could not be loaded, its incident's
/// state is not one we know, the decision fails — goes to
/// [`BatchPlan::failed`] with a backoff; it never fails the batch.
pub(crate) fn plan_batch(due: &[DueTimer], input: BatchInput, now: Millis) -> BatchPlan {
    use klaxon_core::engine::{retry_delay, TimerKind};
    let BatchInput {
        mut incidents,
        broken_incidents,
        contexts,
    } = input;
    let mut out = BatchPlan::default();
    let fail = |out: &mut BatchPlan, t: &DueTimer, reason: String| {
        let attempts = t.attempts.saturating_add(1);
        let delay = retry_delay(u32::try_from(attempts).unwrap_or(u32::MAX));
        out.failed.push(FailedTimer {
            id: t.id.clone(),
            incident_id: t.incident_id.clone(),
            kind: t.kind.clone(),
            attempts,
            retry_at: now.saturating_add(delay),
            reason,
        });
    };
    // Per incident: kinds cancelled so far, and timers armed so far.
    let mut cancelled: HashMap<String, Vec<&'static str>> = HashMap::new();
    let mut armed: HashMap<String, Vec<(&'static str, Millis)>> = HashMap::new();
    let mut changed: Vec<String> = Vec::new();
    // Each changed incident's assignee before the batch.
    let mut assigned_before: HashMap<String, Option<String>> = HashMap::new();
    for t in due {
        let Some(current) = incidents.get_mut(&t.incident_id) else {
            if let Some(reason) = broken_incidents.get(&t.incident_id) {
                fail(&mut out, t, format!("cannot load the incident: {reason}"));
            }
            continue;
        };
        if cancelled
            .get(&t.incident_id)
            .is_some_and(|k| k.contains(&t.kind.as_str()))
        {
            // Deleted with its kind by an earlier change of this batch.
            continue;
        }
        let Some(kind) = TimerKind::parse(&t.kind) else {
            fail(&mut out, t, "unknown timer kind".to_owned());
            continue;
        };
        if IncidentState::parse(&current.state).is_none() {
            let reason = format!("unknown incident state {:?}", current.state);
            fail(&mut out, t, reason);
            continue;
        }
        let pc = match contexts.get(&current.service_id) {
            Some(Ok(pc)) => pc,
            Some(Err(reason)) => {
                fail(&mut out, t, format!("cannot load the policy: {reason}"));
                continue;
            }
            None => {
                fail(&mut out, t, "the policy was not loaded".to_owned());
                continue;
            }
        };
        let change = match plan(Some(&*current), Cause::Timer(kind), pc, now) {
            Ok(change) => change.map(|c| (c, pc)),
            Err(err) => {
                fail(&mut out, t, format!("the decision failed: {err}"));
                continue;
            }
        };
        out.delete.push(t.id.clone());
        out.fired.push(crate::FiredTimer {
            kind: kind.as_str().to_owned(),
            incident_id: t.incident_id.clone(),
            due_at: t.due_at,
            fired_at: now,
            acted: change.is_some(),
        });
        let Some((change, pc)) = change else { continue };
        let mut changes = crate::util::transition_changeset(
            current,
            change.state,
            &change.current_user_id,
            &change.current_policy_rule_id,
            change.loop_count,
        );
        change.annotate(&mut changes);
        out.events.push((
            current.account_id.clone(),
            current.id.clone(),
            format!("incident.{}", change.action.as_str()),
            changes,
        ));
        let kinds = cancelled.entry(t.incident_id.clone()).or_default();
        let pending = armed.entry(t.incident_id.clone()).or_default();
        for k in &change.cancel {
            pending.retain(|(p, _)| p != k);
            if !kinds.contains(k) {
                kinds.push(k);
            }
        }
        for &(kind, due) in &change.schedule {
            // One pending timer per kind: the latest arming wins.
            pending.retain(|(p, _)| *p != kind);
            pending.push((kind, due));
        }
        assigned_before
            .entry(t.incident_id.clone())
            .or_insert_with(|| current.current_user_id.clone());
        if let Some(update) = change.status_update {
            let assignee = (update.action == IncidentAction::Escalate)
                .then(|| change.current_user_id.clone())
                .flatten();
            out.updates.push((
                current.account_id.clone(),
                current.id.clone(),
                update.action,
                assignee,
            ));
        }
        for (reason, user) in &change.pages {
            out.pages.push((
                current.account_id.clone(),
                current.id.clone(),
                *reason,
                user.clone(),
            ));
        }
        current.state = change.state.as_str().to_owned();
        current.acknowledged_at = change.acknowledged_at;
        current.resolved_at = change.resolved_at;
        current.current_policy_id = change
            .current_policy_rule_id
            .as_ref()
            .and_then(|id| pc.rules.iter().find(|r| &r.id == id))
            .map(|r| r.policy_id.clone());
        current.current_user_id = change.current_user_id;
        current.current_policy_rule_id = change.current_policy_rule_id;
        current.escalation_loop_count = change.loop_count;
        current.updated_at = now;
        if !changed.contains(&t.incident_id) {
            changed.push(t.incident_id.clone());
        }
    }
    for id in changed {
        let Some(after) = incidents.remove(&id) else {
            continue;
        };
        for (kind, due) in armed.remove(&id).unwrap_or_default() {
            out.insert
                .push((after.account_id.clone(), id.clone(), kind, due));
        }
        let triggered = after.state == IncidentState::Triggered.as_str();
        let before = assigned_before.remove(&id).flatten();
        if !triggered {
            out.stop_pages.push((id.clone(), None));
        } else if before != after.current_user_id {
            out.stop_pages
                .push((id.clone(), after.current_user_id.clone()));
        }
        out.pages.retain(|(_, incident, _, user)| {
            *incident != id || (triggered && after.current_user_id.as_ref() == Some(user))
        });
        out.incidents.push(IncidentWrite {
            after,
            cancel: cancelled.remove(&id).unwrap_or_default(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use klaxon_core::engine::TimerKind;

    const NOW: Millis = 1_700_000_000_000;

    fn incident(id: &str, service: &str, state: &str) -> Incident {
        Incident {
            id: id.into(),
            account_id: "acct".into(),
            service_id: service.into(),
            state: state.into(),
            message: id.into(),
            description: None,
            details: None,
            key: id.into(),
            current_user_id: Some("u1".into()),
            current_policy_rule_id: Some("r1".into()),
            current_policy_id: Some("p".into()),
            escalation_loop_count: 1,
            triggered_at: NOW,
            acknowledged_at: None,
            resolved_at: None,
            created_at: NOW,
            updated_at: NOW,
        }
    }

    fn due(id: &str, incident: &str, attempts: i64) -> DueTimer {
        DueTimer {
            id: id.into(),
            incident_id: incident.into(),
            kind: "escalate".into(),
            due_at: NOW,
            attempts,
        }
    }

    fn context() -> PolicyContext {
        let rule = |id: &str, user: &str, position| PolicyRule {
            id: id.into(),
            policy_id: "p".into(),
            position,
            escalation_timeout: 30,
            assignment_type: "user".into(),
            assignee_id: user.into(),
            created_at: NOW,
            updated_at: NOW,
        };
        PolicyContext {
            rules: vec![rule("r1", "u1", 0), rule("r2", "u2", 1)],
            loop_limit: 2,
            acknowledge_timeout: None,
            auto_resolve_timeout: None,
            schedules: HashMap::new(),
        }
    }

    #[test]
    fn timers_that_cannot_be_processed_are_set_aside_alone() {
        let mut input = BatchInput::default();
        for (id, service, state) in [
            ("ok", "good", "triggered"),
            ("no-policy", "bad", "triggered"),
            ("odd-state", "good", "sleeping"),
        ] {
            input
                .incidents
                .insert(id.into(), incident(id, service, state));
        }
        input
            .broken_incidents
            .insert("unreadable".into(), "bad row".into());
        input.contexts.insert("good".into(), Ok(context()));
        input.contexts.insert("bad".into(), Err("not found".into()));
        let timers = [
            due("t1", "ok", 0),
            due("t2", "no-policy", 0),
            due("t3", "odd-state", 3),
            due("t4", "unreadable", 9),
            due("t5", "busy", 0),
        ];
        let plan = plan_batch(&timers, input, NOW);
        assert_eq!(plan.delete, ["t1"]);
        assert_eq!(plan.fired.len(), 1);
        assert_eq!(plan.incidents.len(), 1);
        assert_eq!(
            plan.incidents[0].after.current_policy_rule_id.as_deref(),
            Some("r2")
        );
        let failed: Vec<(&str, i64, Millis)> = plan
            .failed
            .iter()
            .map(|f| (f.id.as_str(), f.attempts, f.retry_at - NOW))
            .collect();
        // t5's incident is busy (locked elsewhere): left alone, not failed.
        assert_eq!(
            failed,
            [("t2", 1, 1_000), ("t3", 4, 8_000), ("t4", 10, 512_000)]
        );
    }

    #[test]
    fn pages_resolve_to_the_assignee_after_the_change() {
        let pc = context();
        let opened = plan(None, Cause::Open, &pc, NOW).unwrap().unwrap();
        assert_eq!(opened.pages, [(PageReason::Assigned, "u1".to_owned())]);
        assert_eq!(opened.status_update, None);
        let before = incident("i", "good", "triggered");
        let escalated = plan(Some(&before), Cause::Timer(TimerKind::Escalate), &pc, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(escalated.pages, [(PageReason::Escalated, "u2".to_owned())]);
        assert_eq!(
            escalated.status_update.map(|u| u.action),
            Some(IncidentAction::Escalate)
        );
        let acked = incident("i", "good", "acknowledged");
        let retriggered = plan(
            Some(&acked),
            Cause::Timer(TimerKind::AcknowledgeTimeout),
            &pc,
            NOW,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            retriggered.pages,
            [(PageReason::Retriggered, "u1".to_owned())]
        );
        // Nobody assigned: nobody paged.
        let unassigned = Incident {
            current_user_id: None,
            ..acked
        };
        let change = plan(
            Some(&unassigned),
            Cause::Timer(TimerKind::AcknowledgeTimeout),
            &pc,
            NOW,
        )
        .unwrap()
        .unwrap();
        assert!(change.pages.is_empty());
        // A repeated action changes nothing and pages nobody.
        assert!(
            plan(Some(&before), Cause::Act(IncidentAction::Trigger), &pc, NOW)
                .unwrap()
                .is_none()
        );
    }
}
