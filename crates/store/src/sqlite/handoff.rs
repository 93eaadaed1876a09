//! Pages handed to the sender as they are written (SQLite).
//!
//! A new incident's first page is due the moment the incident opens. The
//! trigger batcher writes such a page already claimed for this process's
//! sender (`sending`, its lease running from the trigger's instant) and,
//! once the batch is committed, hands it over here; the sender takes it
//! at its next claim without a transaction of its own. Under an alert
//! storm that removes a whole write transaction (and its fsync) per sender
//! round from the single writer.
//!
//! Nothing here is needed for correctness: the rows are in the database,
//! leased. A message dropped from memory (its lease ran out before the
//! sender took it, or the sender changed) is claimed again from the
//! database when its lease runs out, as after a crash; on a clean shutdown
//! what was not taken is put back to `queued` (`SqliteStore::close`).
//! One process serves a SQLite file, so its one sender is the only taker.

use std::collections::VecDeque;
use std::sync::Mutex;

use klaxon_core::time::Millis;

use crate::OutgoingMessage;

/// The sender's claim settings and the messages waiting for it.
#[derive(Default)]
pub(super) struct Handoff(Mutex<State>);

#[derive(Default)]
struct State {
    /// The sender that claims here and its lease length, from its last
    /// claim; `None` until a sender has claimed (nothing is handed over
    /// before: the rows stay `queued`).
    sender: Option<(String, Millis)>,
    /// Committed messages claimed for `sender`, with their lease's end.
    ready: VecDeque<(Millis, OutgoingMessage)>,
}

impl Handoff {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The sender to claim new pages for, and its lease length.
    pub fn sender(&self) -> Option<(String, Millis)> {
        self.state().sender.clone()
    }

    /// Hands over committed messages claimed for `owner`.
    pub fn hand_over(&self, owner: &str, messages: Vec<(Millis, OutgoingMessage)>) {
        let mut state = self.state();
        if state.sender.as_ref().is_some_and(|(o, _)| o == owner) {
            state.ready.extend(messages);
        }
    }

    /// Up to `limit` messages for `owner` whose lease runs past `now`;
    /// records `owner` and its lease length for the next batches. Messages
    /// claimed for another owner, or whose lease ran out, are dropped
    /// (their rows are claimed again from the database).
    pub fn take(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> Vec<OutgoingMessage> {
        let mut state = self.state();
        let lease = lease_until.saturating_sub(now);
        match &mut state.sender {
            Some((o, l)) if o == owner => *l = lease,
            other => {
                *other = Some((owner.to_owned(), lease));
                state.ready.clear();
            }
        }
        let mut taken = Vec::new();
        while (taken.len() as i64) < limit {
            let Some((until, message)) = state.ready.pop_front() else {
                break;
            };
            if until > now {
                taken.push(message);
            }
        }
        taken
    }

    /// The ids of everything not taken, forgetting them.
    pub fn drain(&self) -> Vec<String> {
        self.state()
            .ready
            .drain(..)
            .map(|(_, message)| message.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> OutgoingMessage {
        OutgoingMessage {
            id: id.into(),
            account_id: "a".into(),
            incident_id: "i".into(),
            user_id: "u".into(),
            contact_id: None,
            reason: "assigned".into(),
            channel: "email".into(),
            address: "u@example.com".into(),
            attempts: 1,
            page_at: 0,
            service_name: "s".into(),
            message: "m".into(),
            description: None,
            details: None,
            incident_state: "triggered".into(),
            bundle: Vec::new(),
        }
    }

    #[test]
    fn nothing_is_handed_over_before_a_sender_claims() {
        let handoff = Handoff::default();
        assert!(handoff.sender().is_none());
        handoff.hand_over("s1", vec![(100, message("m1"))]);
        assert!(handoff.take("s1", 0, 100, 10).is_empty());
        assert_eq!(handoff.sender(), Some(("s1".into(), 100)));
    }

    #[test]
    fn the_claiming_sender_takes_live_leases_in_order_up_to_its_limit() {
        let handoff = Handoff::default();
        handoff.take("s1", 0, 50, 10);
        handoff.hand_over(
            "s1",
            vec![
                (100, message("m1")),
                (10, message("late")),
                (100, message("m2")),
                (100, message("m3")),
            ],
        );
        // Someone else's claims are not kept.
        handoff.hand_over("s2", vec![(100, message("other"))]);
        let ids = |v: Vec<OutgoingMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(handoff.take("s1", 20, 70, 2)), ["m1", "m2"]);
        assert_eq!(ids(handoff.take("s1", 20, 70, 2)), ["m3"]);
        handoff.hand_over("s1", vec![(100, message("m4"))]);
        assert_eq!(handoff.drain(), ["m4"]);
    }

    #[test]
    fn a_new_sender_drops_what_was_claimed_for_the_old_one() {
        let handoff = Handoff::default();
        handoff.take("s1", 0, 50, 10);
        handoff.hand_over("s1", vec![(100, message("m1"))]);
        assert!(handoff.take("s2", 0, 50, 10).is_empty());
        assert_eq!(handoff.sender(), Some(("s2".into(), 50)));
    }
}
