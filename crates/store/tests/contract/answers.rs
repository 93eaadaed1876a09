//! Answers from the channels pages go out on: who a number belongs to,
//! what they can answer for, the message a call is about, and delivery
//! reports.

use klaxon_core::contact::{ContactAddress, ContactType};
use klaxon_store::{
    ContactInput, ContactOwner, DeliveryReport, Notification, NotificationsOf, SendOutcome,
};

use super::*;

const NUMBER: &str = "+15550001111";

/// Adds a contact; each a millisecond after the last, so their order is
/// the order of the calls.
async fn add_contact(store: &dyn Store, t: &Tenant, user: &str, kind: ContactType, address: &str) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static CLOCK: AtomicI64 = AtomicI64::new(0);
    let at = NOW + CLOCK.fetch_add(1, Ordering::Relaxed);
    let input = ContactInput {
        label: kind.as_str().into(),
        address: ContactAddress::parse(kind, address).expect("valid address"),
    };
    store
        .create_contact(&t.account, user, &input, &t.actor(), at)
        .await
        .expect("create_contact");
}

async fn add_user(store: &dyn Store, t: &Tenant, name: &str, role: &str) -> String {
    store
        .create_user(
            &t.account,
            &user_input(name, &format!("{name}@answers.test"), role),
            &t.actor(),
            NOW,
        )
        .await
        .expect("create_user")
        .id
}

fn owner(t: &Tenant, user: &str, role: &str) -> ContactOwner {
    ContactOwner {
        account_id: t.account.clone(),
        user_id: user.into(),
        role: role.into(),
    }
}

pub(crate) async fn users_by_contact_address_across_accounts(store: Arc<dyn Store>) {
    let store = &*store;
    let a = tenant(store, "alpha").await;
    let b = tenant(store, "beta").await;
    let ann = add_user(store, &a, "ann", "responder").await;
    let obi = add_user(store, &b, "obi", "observer").await;
    let cat = add_user(store, &b, "cat", "responder").await;
    // Ann has the number twice; she is one owner.
    add_contact(store, &a, &ann, ContactType::Sms, NUMBER).await;
    add_contact(store, &a, &ann, ContactType::Phone, NUMBER).await;
    add_contact(store, &b, &obi, ContactType::Phone, NUMBER).await;
    // Other numbers, and the number's digits in another type, do not count.
    add_contact(store, &b, &cat, ContactType::Sms, "+15550002222").await;
    add_contact(store, &b, &cat, ContactType::Email, "cat@answers.test").await;

    let both = [ContactType::Sms, ContactType::Phone];
    let owners = store
        .users_by_contact_address(NUMBER, &both)
        .await
        .expect("users_by_contact_address");
    assert_eq!(
        owners,
        [owner(&a, &ann, "responder"), owner(&b, &obi, "observer")]
    );
    let sms_only = store
        .users_by_contact_address(NUMBER, &[ContactType::Sms])
        .await
        .expect("users_by_contact_address");
    assert_eq!(sms_only, [owner(&a, &ann, "responder")]);
    assert_eq!(
        store
            .users_by_contact_address("+15550002222", &both)
            .await
            .expect("users_by_contact_address"),
        [owner(&b, &cat, "responder")]
    );
    for (address, kinds) in [
        ("+15559999999", &both[..]),
        ("cat@answers.test", &both[..]),
        (NUMBER, &[][..]),
    ] {
        assert!(
            store
                .users_by_contact_address(address, kinds)
                .await
                .expect("users_by_contact_address")
                .is_empty(),
            "{address} {kinds:?}"
        );
    }
}

pub(crate) async fn open_incidents_assigned_to_a_user(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = world(store, "other").await;
    let (first, second) = (&w.users[0], &w.users[1]);
    let old = w.trigger(store, "old", None, NOW).await;
    let acked = w.trigger(store, "acked", None, NOW + 1).await;
    let done = w.trigger(store, "done", None, NOW + 2).await;
    let moved = w.trigger(store, "moved", None, NOW + 3).await;
    let new = w.trigger(store, "new", None, NOW + 4).await;
    w.act(store, &acked.id, IncidentAction::Acknowledge, NOW + 5)
        .await;
    w.act(store, &done.id, IncidentAction::Resolve, NOW + 5)
        .await;
    w.act(store, &moved.id, IncidentAction::Escalate, NOW + 5)
        .await;
    other.trigger(store, "elsewhere", None, NOW).await;

    let mine = store
        .open_incidents_assigned_to(&w.t.account, first)
        .await
        .expect("open_incidents_assigned_to");
    assert_eq!(
        ids(&mine),
        [old.id.as_str(), acked.id.as_str(), new.id.as_str()],
        "unresolved, assigned to the user, oldest first"
    );
    let theirs = store
        .open_incidents_assigned_to(&w.t.account, second)
        .await
        .expect("open_incidents_assigned_to");
    assert_eq!(ids(&theirs), [moved.id.as_str()]);
    // Another account's user id finds nothing here.
    assert!(store
        .open_incidents_assigned_to(&w.t.account, &other.users[0])
        .await
        .expect("open_incidents_assigned_to")
        .is_empty());
}

async fn notification(store: &dyn Store, account: &str, incident: &str, id: &str) -> Notification {
    store
        .list_notifications(account, NotificationsOf::Incident(incident))
        .await
        .expect("list_notifications")
        .into_iter()
        .find(|n| n.id == id)
        .expect("the message is listed")
}

pub(crate) async fn outgoing_messages_and_delivery_reports(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let user = &w.users[0];
    add_contact(store, &w.t, user, ContactType::Sms, NUMBER).await;
    add_contact(store, &w.t, user, ContactType::Phone, NUMBER).await;
    let one = w.trigger(store, "disk full", None, NOW).await;
    let two = w.trigger(store, "cpu hot", None, NOW).await;
    let claimed = store
        .claim_messages("sender", NOW, NOW + MINUTE, 10)
        .await
        .expect("claim_messages");
    assert_eq!(claimed.len(), 4, "{claimed:?}");

    let call = claimed
        .iter()
        .find(|m| m.incident_id == one.id && m.channel == "phone")
        .expect("a call about the first incident");
    let got = store
        .outgoing_message(&call.id)
        .await
        .expect("outgoing_message")
        .expect("found");
    assert_eq!(
        (
            got.id.as_str(),
            got.account_id.as_str(),
            got.incident_id.as_str(),
            got.user_id.as_str(),
            got.channel.as_str(),
            got.address.as_str(),
            got.service_name.as_str(),
            got.message.as_str(),
            got.incident_state.as_str(),
        ),
        (
            call.id.as_str(),
            w.t.account.as_str(),
            one.id.as_str(),
            user.as_str(),
            "phone",
            NUMBER,
            "web",
            "disk full",
            "triggered"
        )
    );
    assert!(store
        .outgoing_message("no-such-message")
        .await
        .expect("outgoing_message")
        .is_none());
    // The incident as it is now, not as it was when the page was queued.
    w.act(store, &one.id, IncidentAction::Acknowledge, NOW + 1)
        .await;
    let got = store
        .outgoing_message(&call.id)
        .await
        .expect("outgoing_message")
        .expect("found");
    assert_eq!(got.incident_state, "acknowledged");

    // Both texts went out as one bundle under one id; the call under another.
    let texts: Vec<&OutgoingMessage> = claimed.iter().filter(|m| m.channel == "sms").collect();
    let other_call = claimed
        .iter()
        .find(|m| m.incident_id == two.id && m.channel == "phone")
        .expect("a call about the second incident");
    let sent = |provider: &str| SendOutcome::Sent {
        provider_id: Some(provider.into()),
        delivered: false,
    };
    let outcomes = vec![
        (texts[0].id.clone(), sent("SM1")),
        (texts[1].id.clone(), sent("SM1")),
        (call.id.clone(), sent("CA1")),
        (other_call.id.clone(), sent("CA2")),
    ];
    let lost = store
        .finish_messages("sender", &outcomes, NOW + 2)
        .await
        .expect("finish_messages");
    assert!(lost.is_empty());

    let changed = store
        .report_delivery("SM1", &DeliveryReport::Delivered, NOW + 3)
        .await
        .expect("report_delivery");
    assert_eq!(changed, 2, "every message of the bundle");
    for text in &texts {
        let n = notification(store, &w.t.account, &text.incident_id, &text.id).await;
        assert_eq!((n.status.as_str(), n.updated_at), ("delivered", NOW + 3));
        assert_eq!(n.provider_id.as_deref(), Some("SM1"));
    }
    let busy = DeliveryReport::Failed {
        error: "busy".into(),
    };
    assert_eq!(
        store
            .report_delivery("CA1", &busy, NOW + 3)
            .await
            .expect("report_delivery"),
        1
    );
    let n = notification(store, &w.t.account, &one.id, &call.id).await;
    assert_eq!(
        (n.status.as_str(), n.error.as_deref()),
        ("failed", Some("busy"))
    );
    // Settled messages stay settled; unknown ids change nothing.
    assert_eq!(
        store
            .report_delivery("SM1", &busy, NOW + 4)
            .await
            .expect("report_delivery"),
        0
    );
    assert_eq!(
        store
            .report_delivery("CA1", &DeliveryReport::Delivered, NOW + 4)
            .await
            .expect("report_delivery"),
        0
    );
    assert_eq!(
        store
            .report_delivery("SM-unknown", &DeliveryReport::Delivered, NOW + 4)
            .await
            .expect("report_delivery"),
        0
    );
    let n = notification(store, &w.t.account, &one.id, &call.id).await;
    assert_eq!(n.status, "failed");
    let n = notification(store, &w.t.account, &texts[0].incident_id, &texts[0].id).await;
    assert_eq!(n.status, "delivered");
    // The second call is still only sent.
    let n = notification(store, &w.t.account, &two.id, &other_call.id).await;
    assert_eq!(
        (n.status.as_str(), n.provider_id.as_deref()),
        ("sent", Some("CA2"))
    );
}

/// A page due at once is claimed exactly once, whether the backend writes
/// it claimed for a sender that claimed before (SQLite hands it over from
/// memory) or the sender claims it from the queue; what the sender gets is
/// what the outbox holds, and a lease that runs out frees it again.
pub(crate) async fn a_page_due_at_once_is_claimed_once(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "handoff").await;
    let user = &w.users[0];
    add_contact(store, &w.t, user, ContactType::Email, "ops@handoff.test").await;
    add_contact(store, &w.t, user, ContactType::Sms, NUMBER).await;
    let claim = |owner: &'static str, at: Millis| async move {
        store
            .claim_messages(owner, at, at + MINUTE, 10)
            .await
            .expect("claim_messages")
    };
    assert!(claim("sender", NOW).await.is_empty());
    let incident = w.trigger(store, "disk full", None, NOW).await;
    let mut claimed = claim("sender", NOW + 1).await;
    claimed.sort_by(|a, b| a.channel.cmp(&b.channel));
    let channels: Vec<&str> = claimed.iter().map(|m| m.channel.as_str()).collect();
    assert_eq!(channels, ["email", "sms"], "{claimed:?}");
    for m in &claimed {
        let stored = store
            .outgoing_message(&m.id)
            .await
            .expect("outgoing_message")
            .expect("found");
        let fields = |m: &klaxon_store::OutgoingMessage| {
            (
                m.account_id.clone(),
                m.incident_id.clone(),
                m.user_id.clone(),
                m.contact_id.clone(),
                m.reason.clone(),
                m.address.clone(),
                (
                    m.attempts,
                    m.page_at,
                    m.service_name.clone(),
                    m.message.clone(),
                    m.description.clone(),
                    m.details.as_ref().map(|d| d.0.clone()),
                    m.incident_state.clone(),
                ),
            )
        };
        assert_eq!(fields(m), fields(&stored), "{}", m.channel);
        assert_eq!(
            (m.incident_id.as_str(), m.attempts),
            (incident.id.as_str(), 1)
        );
        let row = notification(store, &w.t.account, &incident.id, &m.id).await;
        assert_eq!((row.status.as_str(), row.attempts), ("sending", 1));
    }
    // Not twice while the lease runs, by this sender or another.
    assert!(claim("sender", NOW + 2).await.is_empty());
    assert!(claim("other", NOW + 3).await.is_empty());
    // A lease that ran out (its sender died) frees the message again.
    let again = claim("other", NOW + 2 * MINUTE + 10).await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().all(|m| m.attempts == 2));
}
