//! The incident state machine.

use serde::Serialize;

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    /// Open and paging.
    Triggered,
    /// Someone is on it; paging paused.
    Acknowledged,
    /// Over.
    Resolved,
}

impl IncidentState {
    /// All states, in display order.
    pub const ALL: [IncidentState; 3] = [
        IncidentState::Triggered,
        IncidentState::Acknowledged,
        IncidentState::Resolved,
    ];

    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Triggered => "triggered",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        }
    }

    /// Parses a stored or submitted state name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "triggered" => Some(IncidentState::Triggered),
            "acknowledged" => Some(IncidentState::Acknowledged),
            "resolved" => Some(IncidentState::Resolved),
            _ => None,
        }
    }
}

/// Something a person, a monitoring system or the engine asks of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncidentAction {
    /// Back to triggered (e.g. after an acknowledge timeout).
    Trigger,
    /// Stop paging; someone is working on it.
    Acknowledge,
    /// Move to the next policy rule now.
    Escalate,
    /// Close it.
    Resolve,
}

impl IncidentAction {
    /// The action's verb, used in audit event names (`incident.acknowledge`).
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentAction::Trigger => "trigger",
            IncidentAction::Acknowledge => "acknowledge",
            IncidentAction::Escalate => "escalate",
            IncidentAction::Resolve => "resolve",
        }
    }
}

/// The outcome of a permitted action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The incident is already where the action would put it: accepted, and
    /// nothing changes (no event, no notification).
    Unchanged,
    /// The incident moves to this state. For `Escalate` the state may be the
    /// same (`triggered`) but the assignment moves on.
    To(IncidentState),
}

/// An action that cannot apply to an incident in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} an incident that is {}", action.as_str(), from.as_str())]
pub struct TransitionError {
    /// The state the incident is in.
    pub from: IncidentState,
    /// The action that was refused.
    pub action: IncidentAction,
}

/// Decides what `action` does to an incident in state `from`.
///
/// - trigger: to triggered; not from resolved.
/// - escalate: to triggered with the next rule; not from resolved.
/// - acknowledge: to acknowledged, only from triggered.
/// - resolve: to resolved.
///
/// Repeating the current state is `Unchanged`; an impossible move is an error.
pub fn apply(from: IncidentState, action: IncidentAction) -> Result<Transition, TransitionError> {
    use IncidentAction as A;
    use IncidentState as S;
    let refuse = Err(TransitionError { from, action });
    match (action, from) {
        (A::Trigger, S::Triggered) => Ok(Transition::Unchanged),
        (A::Trigger, S::Acknowledged) => Ok(Transition::To(S::Triggered)),
        (A::Trigger, S::Resolved) => refuse,
        (A::Escalate, S::Resolved) => refuse,
        (A::Escalate, _) => Ok(Transition::To(S::Triggered)),
        (A::Acknowledge, S::Triggered) => Ok(Transition::To(S::Acknowledged)),
        (A::Acknowledge, S::Acknowledged) => Ok(Transition::Unchanged),
        (A::Acknowledge, S::Resolved) => refuse,
        (A::Resolve, S::Resolved) => Ok(Transition::Unchanged),
        (A::Resolve, _) => Ok(Transition::To(S::Resolved)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IncidentAction as A;
    use IncidentState as S;

    #[test]
    fn transition_table() {
        let table = [
            (S::Triggered, A::Trigger, Ok(Transition::Unchanged)),
            (
                S::Acknowledged,
                A::Trigger,
                Ok(Transition::To(S::Triggered)),
            ),
            (S::Resolved, A::Trigger, Err(())),
            (
                S::Triggered,
                A::Acknowledge,
                Ok(Transition::To(S::Acknowledged)),
            ),
            (S::Acknowledged, A::Acknowledge, Ok(Transition::Unchanged)),
            (S::Resolved, A::Acknowledge, Err(())),
            (S::Triggered, A::Escalate, Ok(Transition::To(S::Triggered))),
            (
                S::Acknowledged,
                A::Escalate,
                Ok(Transition::To(S::Triggered)),
            ),
            (S::Resolved, A::Escalate, Err(())),
            (S::Triggered, A::Resolve, Ok(Transition::To(S::Resolved))),
            (S::Acknowledged, A::Resolve, Ok(Transition::To(S::Resolved))),
            (S::Resolved, A::Resolve, Ok(Transition::Unchanged)),
        ];
        for (from, action, want) in table {
            let got = apply(from, action).map_err(|_| ());
            assert_eq!(got, want, "{from:?} {action:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in IncidentState::ALL {
            assert_eq!(IncidentState::parse(s.as_str()), Some(s));
        }
        assert_eq!(IncidentState::parse("Triggered"), None);
    }
}
