//! Planning notifications: which messages a page becomes, when each is
//! due, whether it is still to be sent when it comes due, and how SMS
//! messages are bundled and worded.
//!
//! [`crate::engine::decide`] says who is paged and why; the store resolves
//! that to a user and calls [`expand`] with the user's notification rules
//! and contacts, which gives one [`PlannedMessage`] per rule, due after the
//! rule's delay. When a message comes due the sender asks [`should_send`]:
//! an acknowledge or resolve since the page cancels it. Several SMS to one
//! contact due close together go out as one ([`sms::bundle_sms`]).
//!
//! Status updates ([`crate::engine::StatusUpdate`]) go to
//! [`status_update_recipients`]; they report a change that already
//! happened, so they are never cancelled.

pub mod sms;

#[cfg(test)]
mod tests;

use crate::contact::ContactType;
use crate::incident::IncidentState;
use crate::time::{Millis, MINUTE_MS};

/// A user's id, as the store keeps it.
pub type UserId = String;

/// A contact's id, as the store keeps it.
pub type ContactId = String;

/// One of a user's contacts, as much of it as planning needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRef {
    /// The contact's id.
    pub id: ContactId,
    /// How it is reached.
    pub kind: ContactType,
}

/// One of a user's notification rules: page this contact this long after
/// the user is paged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRuleSpec {
    /// The contact to use.
    pub contact_id: ContactId,
    /// Minutes after the page (a negative value counts as 0).
    pub start_delay: i64,
}

/// A message a page becomes: to one contact, due at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMessage {
    /// The contact to send it to.
    pub contact_id: ContactId,
    /// How that contact is reached.
    pub kind: ContactType,
    /// When the user was paged ([`should_send`] compares it with when
    /// paging last stopped).
    pub page_at: Millis,
    /// When to send it: `page_at` plus the rule's delay.
    pub due_at: Millis,
}

/// The messages a user paged at `page_at` is sent: one per notification
/// rule, due `start_delay` minutes after the page, in order of due time
/// (rules with the same delay in their given order). A rule naming a
/// contact not in `contacts` is skipped; two rules with the same contact
/// and delay give one message.
///
/// A user with no rules — or whose every rule names a missing contact,
/// which is what deleting those contacts would leave — is sent a message
/// on every contact at once: an assigned person is never paged on nothing
/// while they have a contact.
pub fn expand(
    page_at: Millis,
    rules: &[NotificationRuleSpec],
    contacts: &[ContactRef],
) -> Vec<PlannedMessage> {
    let mut out: Vec<PlannedMessage> = Vec::new();
    for rule in rules {
        let Some(contact) = contacts.iter().find(|c| c.id == rule.contact_id) else {
            continue;
        };
        let delay = rule.start_delay.max(0).saturating_mul(MINUTE_MS);
        let message = PlannedMessage {
            contact_id: contact.id.clone(),
            kind: contact.kind,
            page_at,
            due_at: page_at.saturating_add(delay),
        };
        if !out.contains(&message) {
            out.push(message);
        }
    }
    if out.is_empty() {
        for contact in contacts {
            let message = PlannedMessage {
                contact_id: contact.id.clone(),
                kind: contact.kind,
                page_at,
                due_at: page_at,
            };
            if !out.contains(&message) {
                out.push(message);
            }
        }
    }
    // Stable: equal due times keep the rules' order.
    out.sort_by_key(|m| m.due_at);
    out
}

/// What the sender knows about a message's incident when the message
/// comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentStatus {
    /// The incident's state now.
    pub state: IncidentState,
    /// When paging last stopped: the latest acknowledge or resolve, kept
    /// when the incident is triggered again (`acknowledged_at` is cleared
    /// then, so this must come from elsewhere, e.g. the audit log). `None`
    /// if it never stopped.
    pub paging_stopped_at: Option<Millis>,
}

/// Whether a page's message, planned at `page_at` and now due, is still to
/// be sent. Acknowledging or resolving cancels every message not yet sent:
///
/// - an acknowledged or resolved incident gets no page;
/// - a triggered incident gets it only if paging has not stopped since
///   the page: after an acknowledge and a retrigger, the retrigger planned
///   its own messages, and the old ones are void.
///
/// A stop in the same millisecond as the page counts as after it.
/// Status updates are not pages and are always sent.
pub fn should_send(page_at: Millis, incident: &IncidentStatus) -> bool {
    match incident.state {
        IncidentState::Acknowledged | IncidentState::Resolved => false,
        IncidentState::Triggered => incident
            .paging_stopped_at
            .is_none_or(|stopped| stopped < page_at),
    }
}

/// Who gets a status update: everyone already paged about the incident,
/// once each in the order first paged, except `actor` (the user who
/// acknowledged, escalated or resolved; `None` when a timer or a
/// monitoring system acted).
///
/// For an escalation the store may also drop the new assignee, who is
/// paged by the same decision.
pub fn status_update_recipients(previously_paged: &[UserId], actor: Option<&str>) -> Vec<UserId> {
    let mut out: Vec<UserId> = Vec::new();
    for user in previously_paged {
        if Some(user.as_str()) != actor && !out.contains(user) {
            out.push(user.clone());
        }
    }
    out
}
