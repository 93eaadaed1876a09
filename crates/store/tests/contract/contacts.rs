//! Users' contacts and notification rules.

use klaxon_core::contact::{ContactAddress, ContactType, StartDelay};
use klaxon_store::{ContactInput, NotificationRuleInput};

use super::*;

fn contact(kind: ContactType, label: &str, address: &str) -> ContactInput {
    ContactInput {
        label: label.into(),
        address: ContactAddress::parse(kind, address).expect("valid address"),
    }
}

fn rule(contact_id: &str, minutes: i64) -> NotificationRuleInput {
    NotificationRuleInput {
        contact_id: contact_id.into(),
        start_delay: StartDelay::new(minutes).expect("valid delay"),
    }
}

async fn responder(store: &dyn Store, t: &Tenant, name: &str) -> String {
    store
        .create_user(
            &t.account,
            &user_input(name, &format!("{name}@contacts.test"), "responder"),
            &t.actor(),
            NOW,
        )
        .await
        .expect("create_user")
        .id
}

pub(crate) async fn contact_crud(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let (acc, actor) = (t.account.as_str(), t.actor());
    let user = responder(store, &t, "ann").await;
    assert!(store
        .list_contacts(acc, &user)
        .await
        .expect("list_contacts")
        .is_empty());

    let sms = store
        .create_contact(
            acc,
            &user,
            &contact(ContactType::Sms, "mobile", "+15551234567"),
            &actor,
            NOW,
        )
        .await
        .expect("create_contact");
    assert_eq!(
        (
            sms.kind.as_str(),
            sms.label.as_str(),
            sms.address.as_str(),
            sms.user_id.as_str(),
            sms.account_id.as_str()
        ),
        ("sms", "mobile", "+15551234567", user.as_str(), acc)
    );
    assert_eq!((sms.created_at, sms.updated_at), (NOW, NOW));
    let hook = store
        .create_contact(
            acc,
            &user,
            &contact(
                ContactType::Ntfy,
                "phone push",
                "https://ntfy.sh/ann-alerts",
            ),
            &actor,
            NOW + 1,
        )
        .await
        .expect("create_contact");
    let listed: Vec<String> = store
        .list_contacts(acc, &user)
        .await
        .expect("list_contacts")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, [sms.id.clone(), hook.id.clone()], "oldest first");

    let changes = json!({"type": ["ntfy", "email"]});
    let changed = store
        .update_contact(
            acc,
            &user,
            &hook.id,
            &contact(ContactType::Email, "work", "ann@example.com"),
            &changes,
            &actor,
            NOW + 2,
        )
        .await
        .expect("update_contact");
    assert_eq!(
        (
            changed.kind.as_str(),
            changed.label.as_str(),
            changed.address.as_str(),
            changed.created_at,
            changed.updated_at
        ),
        ("email", "work", "ann@example.com", NOW + 1, NOW + 2)
    );
    let got = store
        .get_contact(acc, &user, &hook.id)
        .await
        .expect("get_contact");
    assert_eq!(got.address, "ann@example.com");

    store
        .delete_contact(acc, &user, &hook.id, &actor, NOW + 3)
        .await
        .expect("delete_contact");
    assert_not_found(
        store.get_contact(acc, &user, &hook.id).await,
        "deleted contact",
    );
    assert_not_found(
        store
            .delete_contact(acc, &user, &hook.id, &actor, NOW)
            .await,
        "deleted twice",
    );
    assert_not_found(
        store
            .update_contact(
                acc,
                &user,
                &hook.id,
                &contact(ContactType::Sms, "x", "+15551234567"),
                &json!({}),
                &actor,
                NOW,
            )
            .await,
        "update deleted",
    );

    let events = events_of(store, acc, "contact", &hook.id).await;
    assert_eq!(
        actions(&events),
        ["contact.delete", "contact.update", "contact.create"]
    );
    assert_eq!(events[1].changeset.0, changes);
    assert_eq!(
        events[2].changeset.0,
        json!({"user_id": user, "type": "ntfy", "label": "phone push", "address": "https://ntfy.sh/ann-alerts"})
    );
    assert_eq!(events[0].actor_id.as_deref(), Some(t.admin.as_str()));

    // Deleting the user takes their contacts along.
    store
        .delete_user(acc, &user, &actor, NOW + 4)
        .await
        .expect("delete_user");
    assert_not_found(store.get_contact(acc, &user, &sms.id).await, "user gone");
    assert_not_found(store.list_contacts(acc, &user).await, "user gone");
}

pub(crate) async fn notification_rule_crud(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let (acc, actor) = (t.account.as_str(), t.actor());
    let user = responder(store, &t, "ann").await;
    let sms = store
        .create_contact(
            acc,
            &user,
            &contact(ContactType::Sms, "mobile", "+15551234567"),
            &actor,
            NOW,
        )
        .await
        .expect("create_contact");
    let mail = store
        .create_contact(
            acc,
            &user,
            &contact(ContactType::Email, "work", "ann@example.com"),
            &actor,
            NOW,
        )
        .await
        .expect("create_contact");

    let later = store
        .create_notification_rule(acc, &user, &rule(&sms.id, 5), &actor, NOW)
        .await
        .expect("create_notification_rule");
    assert_eq!(
        (
            later.contact_id.as_str(),
            later.start_delay,
            later.user_id.as_str()
        ),
        (sms.id.as_str(), 5, user.as_str())
    );
    let first = store
        .create_notification_rule(acc, &user, &rule(&mail.id, 0), &actor, NOW + 1)
        .await
        .expect("create_notification_rule");
    let listed: Vec<(String, i64)> = store
        .list_notification_rules(acc, &user)
        .await
        .expect("list_notification_rules")
        .into_iter()
        .map(|r| (r.id, r.start_delay))
        .collect();
    assert_eq!(
        listed,
        [(first.id.clone(), 0), (later.id.clone(), 5)],
        "by start delay"
    );

    let changes = json!({"start_delay": [5, 10]});
    let moved = store
        .update_notification_rule(
            acc,
            &user,
            &later.id,
            &rule(&mail.id, 10),
            &changes,
            &actor,
            NOW + 2,
        )
        .await
        .expect("update_notification_rule");
    assert_eq!(
        (
            moved.contact_id.as_str(),
            moved.start_delay,
            moved.updated_at
        ),
        (mail.id.as_str(), 10, NOW + 2)
    );
    assert_eq!(
        store
            .get_notification_rule(acc, &user, &later.id)
            .await
            .expect("get_notification_rule")
            .start_delay,
        10
    );

    store
        .delete_notification_rule(acc, &user, &first.id, &actor, NOW + 3)
        .await
        .expect("delete_notification_rule");
    assert_not_found(
        store.get_notification_rule(acc, &user, &first.id).await,
        "deleted rule",
    );
    assert_not_found(
        store
            .delete_notification_rule(acc, &user, &first.id, &actor, NOW)
            .await,
        "deleted twice",
    );
    assert_not_found(
        store
            .update_notification_rule(
                acc,
                &user,
                &first.id,
                &rule(&mail.id, 1),
                &json!({}),
                &actor,
                NOW,
            )
            .await,
        "update deleted",
    );
    let events = events_of(store, acc, "notification_rule", &later.id).await;
    assert_eq!(
        actions(&events),
        ["notification_rule.update", "notification_rule.create"]
    );
    assert_eq!(
        events[1].changeset.0,
        json!({"user_id": user, "contact_id": sms.id, "start_delay": 5})
    );
    assert_eq!(
        actions(&events_of(store, acc, "notification_rule", &first.id).await),
        ["notification_rule.delete", "notification_rule.create"]
    );
}

pub(crate) async fn deleting_a_contact_deletes_its_rules(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let (acc, actor) = (t.account.as_str(), t.actor());
    let user = responder(store, &t, "ann").await;
    let mut contacts = Vec::new();
    for (kind, address) in [
        (ContactType::Phone, "+4930123456"),
        (ContactType::Webhook, "http://127.0.0.1:9000/hook"),
    ] {
        contacts.push(
            store
                .create_contact(acc, &user, &contact(kind, "c", address), &actor, NOW)
                .await
                .expect("create_contact")
                .id,
        );
    }
    let mut rules = Vec::new();
    for (contact_id, delay) in [(&contacts[0], 0), (&contacts[0], 15), (&contacts[1], 0)] {
        rules.push(
            store
                .create_notification_rule(acc, &user, &rule(contact_id, delay), &actor, NOW)
                .await
                .expect("create_notification_rule")
                .id,
        );
    }
    store
        .delete_contact(acc, &user, &contacts[0], &actor, NOW + 1)
        .await
        .expect("delete_contact");
    let left: Vec<String> = store
        .list_notification_rules(acc, &user)
        .await
        .expect("list_notification_rules")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, [rules[2].clone()]);
    for gone in &rules[..2] {
        let events = events_of(store, acc, "notification_rule", gone).await;
        assert_eq!(
            actions(&events),
            ["notification_rule.delete", "notification_rule.create"]
        );
        assert_eq!(
            events[0].changeset.0,
            json!({"user_id": user, "contact_id": contacts[0]})
        );
    }
}

pub(crate) async fn rule_contact_must_be_the_users(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let other = tenant(store, "other").await;
    let (acc, actor) = (t.account.as_str(), t.actor());
    let ann = responder(store, &t, "ann").await;
    let bob = responder(store, &t, "bob").await;
    let bobs = store
        .create_contact(
            acc,
            &bob,
            &contact(ContactType::Sms, "m", "+15551234567"),
            &actor,
            NOW,
        )
        .await
        .expect("create_contact");
    let foreign = store
        .create_contact(
            &other.account,
            &other.admin,
            &contact(ContactType::Sms, "m", "+15551234567"),
            &other.actor(),
            NOW,
        )
        .await
        .expect("create_contact");
    for contact_id in [bobs.id.as_str(), foreign.id.as_str(), "AAAAAAAA"] {
        assert_invalid(
            store
                .create_notification_rule(acc, &ann, &rule(contact_id, 0), &actor, NOW)
                .await,
            "contact_id",
        );
    }
    let anns = store
        .create_contact(
            acc,
            &ann,
            &contact(ContactType::Sms, "m", "+15551234568"),
            &actor,
            NOW,
        )
        .await
        .expect("create_contact");
    let r = store
        .create_notification_rule(acc, &ann, &rule(&anns.id, 0), &actor, NOW)
        .await
        .expect("create_notification_rule");
    assert_invalid(
        store
            .update_notification_rule(
                acc,
                &ann,
                &r.id,
                &rule(&bobs.id, 0),
                &json!({}),
                &actor,
                NOW,
            )
            .await,
        "contact_id",
    );
    // A contact or rule is addressed through its own user only.
    assert_not_found(
        store.get_contact(acc, &ann, &bobs.id).await,
        "bob's via ann",
    );
    assert_not_found(
        store.delete_contact(acc, &ann, &bobs.id, &actor, NOW).await,
        "bob's via ann",
    );
    assert_not_found(
        store.get_notification_rule(acc, &bob, &r.id).await,
        "ann's rule via bob",
    );
    assert_not_found(
        store
            .delete_notification_rule(acc, &bob, &r.id, &actor, NOW)
            .await,
        "ann's rule via bob",
    );
    assert_eq!(
        store
            .get_notification_rule(acc, &ann, &r.id)
            .await
            .expect("unchanged")
            .contact_id,
        anns.id
    );
}

pub(crate) async fn contacts_tenant_isolation(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let other = tenant(store, "other").await;
    let (acc, actor) = (t.account.as_str(), t.actor());
    let c = store
        .create_contact(
            acc,
            &t.admin,
            &contact(
                ContactType::Slack,
                "ops",
                "https://hooks.slack.com/services/T/B/x",
            ),
            &actor,
            NOW,
        )
        .await
        .expect("create_contact");
    let r = store
        .create_notification_rule(acc, &t.admin, &rule(&c.id, 0), &actor, NOW)
        .await
        .expect("create_notification_rule");
    let (oacc, oactor) = (other.account.as_str(), other.actor());
    let input = contact(ContactType::Sms, "x", "+15551234567");
    assert_not_found(store.list_contacts(oacc, &t.admin).await, "list");
    assert_not_found(store.get_contact(oacc, &t.admin, &c.id).await, "get");
    assert_not_found(
        store
            .create_contact(oacc, &t.admin, &input, &oactor, NOW)
            .await,
        "create",
    );
    assert_not_found(
        store
            .update_contact(oacc, &t.admin, &c.id, &input, &json!({}), &oactor, NOW)
            .await,
        "update",
    );
    assert_not_found(
        store
            .delete_contact(oacc, &t.admin, &c.id, &oactor, NOW)
            .await,
        "delete",
    );
    assert_not_found(
        store.list_notification_rules(oacc, &t.admin).await,
        "list rules",
    );
    assert_not_found(
        store.get_notification_rule(oacc, &t.admin, &r.id).await,
        "get rule",
    );
    assert_not_found(
        store
            .create_notification_rule(oacc, &t.admin, &rule(&c.id, 0), &oactor, NOW)
            .await,
        "create rule",
    );
    assert_not_found(
        store
            .update_notification_rule(
                oacc,
                &t.admin,
                &r.id,
                &rule(&c.id, 1),
                &json!({}),
                &oactor,
                NOW,
            )
            .await,
        "update rule",
    );
    assert_not_found(
        store
            .delete_notification_rule(oacc, &t.admin, &r.id, &oactor, NOW)
            .await,
        "delete rule",
    );
    // Nothing changed, and the other account's log holds nothing of it.
    let still = store
        .get_contact(acc, &t.admin, &c.id)
        .await
        .expect("still there");
    assert_eq!(still.address, "https://hooks.slack.com/services/T/B/x");
    assert!(events_of(store, oacc, "contact", &c.id).await.is_empty());
    assert_eq!(
        actions(&events_of(store, acc, "notification_rule", &r.id).await),
        ["notification_rule.create"]
    );
}

pub(crate) async fn concurrent_rule_and_contact_deletion(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let (acc, actor) = (t.account.clone(), t.actor());
    for round in 0..10 {
        let c = store
            .create_contact(
                &acc,
                &t.admin,
                &contact(ContactType::Sms, "m", "+15551234567"),
                &actor,
                NOW,
            )
            .await
            .expect("create_contact");
        let (s1, s2) = (store.clone(), store.clone());
        let (a1, a2) = (acc.clone(), acc.clone());
        let (u1, u2) = (t.admin.clone(), t.admin.clone());
        let (c1, c2) = (c.id.clone(), c.id.clone());
        let (act1, act2) = (actor.clone(), actor.clone());
        let add = tokio::spawn(async move {
            s1.create_notification_rule(&a1, &u1, &rule(&c1, 0), &act1, NOW)
                .await
        });
        let del = tokio::spawn(async move { s2.delete_contact(&a2, &u2, &c2, &act2, NOW).await });
        let added = add.await.expect("join");
        del.await.expect("join").expect("delete_contact");
        // The rule either came first (and went with the contact, with its
        // delete event) or found the contact gone; never a dangling rule
        // or a database error.
        match added {
            Ok(r) => assert_eq!(
                actions(&events_of(&*store, &acc, "notification_rule", &r.id).await),
                ["notification_rule.delete", "notification_rule.create"],
                "round {round}"
            ),
            Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "contact_id"),
            Err(other) => panic!("round {round}: {other:?}"),
        }
        assert!(store
            .list_notification_rules(&acc, &t.admin)
            .await
            .expect("list")
            .is_empty());
    }
}
