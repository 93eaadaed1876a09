//! Opening incidents: assignment and deduplication.

use super::*;

fn is_generated_key(key: &str) -> bool {
    key.len() == 32
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) async fn trigger_assigns_the_first_rule(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let new = NewIncident {
        message: "CPU on fire".into(),
        description: Some("load 99".into()),
        details: Some(json!({"host": "db-1", "load": [99, 98.5], "tags": {"env": "prod"}})),
        key: None,
    };
    let outcome = store
        .trigger_incident(
            &w.t.account,
            &w.service.id,
            &new,
            true,
            &w.service_actor(),
            NOW,
        )
        .await
        .expect("trigger_incident");
    let TriggerOutcome::Created(i) = outcome else {
        panic!("expected Created, got {outcome:?}");
    };
    assert_eq!(i.id.len(), 8);
    assert!(i.id.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(
        (i.account_id.as_str(), i.service_id.as_str()),
        (w.t.account.as_str(), w.service.id.as_str())
    );
    assert_eq!(
        (
            i.state.as_str(),
            i.message.as_str(),
            i.description.as_deref()
        ),
        ("triggered", "CPU on fire", Some("load 99"))
    );
    assert_eq!(i.details.as_ref().map(|d| &d.0), new.details.as_ref());
    assert!(is_generated_key(&i.key), "generated key {:?}", i.key);
    assert_eq!(i.current_user_id.as_deref(), Some(w.users[0].as_str()));
    assert_eq!(
        i.current_policy_rule_id.as_deref(),
        Some(w.rules[0].id.as_str())
    );
    assert_eq!(i.current_policy_id.as_deref(), Some(w.policy.id.as_str()));
    assert_eq!(i.escalation_loop_count, 1);
    assert_eq!(
        (i.triggered_at, i.created_at, i.updated_at),
        (NOW, NOW, NOW)
    );
    assert_eq!((i.acknowledged_at, i.resolved_at), (None, None));

    let got = store
        .get_incident(&w.t.account, &i.id)
        .await
        .expect("get_incident");
    assert_eq!(
        (got.key.as_str(), got.current_policy_id.as_deref()),
        (i.key.as_str(), Some(w.policy.id.as_str()))
    );
    assert_eq!(got.details.as_ref().map(|d| &d.0), new.details.as_ref());

    let events = events_of(store, &w.t.account, "incident", &i.id).await;
    assert_eq!(actions(&events), ["incident.create"]);
    let e = &events[0];
    assert_eq!(
        (e.actor_type.as_str(), e.actor_id.as_deref()),
        ("service", Some(w.service.id.as_str()))
    );
    assert_eq!(
        (e.source_type.as_str(), e.source_id.as_str(), e.created_at),
        ("incident", i.id.as_str(), NOW)
    );
    assert_eq!(
        e.changeset.0,
        json!({"state": "triggered", "message": "CPU on fire", "description": "load 99",
               "details": new.details, "key": i.key, "current_user_id": w.users[0],
               "current_policy_rule_id": w.rules[0].id, "escalation_loop_count": 1})
    );

    // Details may be a plain JSON string too; explicit keys are kept as given.
    let new = NewIncident {
        message: "disk".into(),
        description: None,
        details: Some(json!("raw text")),
        key: Some("Disk/Full:1".into()),
    };
    let TriggerOutcome::Created(j) = store
        .trigger_incident(
            &w.t.account,
            &w.service.id,
            &new,
            true,
            &w.service_actor(),
            NOW,
        )
        .await
        .expect("trigger_incident")
    else {
        panic!("expected Created");
    };
    assert_eq!(j.key, "Disk/Full:1");
    assert_eq!(j.details.map(|d| d.0), Some(json!("raw text")));
    assert_eq!(j.description, None);
}

pub(crate) async fn trigger_without_rules(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let policy = store
        .create_policy(&t.account, "empty", 1, &t.actor(), NOW)
        .await
        .expect("policy");
    let service = store
        .create_service(
            &t.account,
            &service_input("svc", &policy.id),
            "k",
            &t.actor(),
            NOW,
        )
        .await
        .expect("service");
    let outcome = store
        .trigger_incident(
            &t.account,
            &service.id,
            &new_incident("m", None),
            true,
            &t.actor(),
            NOW,
        )
        .await
        .expect("trigger_incident");
    let TriggerOutcome::Created(i) = outcome else {
        panic!("expected Created, got {outcome:?}");
    };
    assert_eq!(
        (
            i.current_user_id,
            i.current_policy_rule_id,
            i.current_policy_id
        ),
        (None, None, None)
    );
    assert_eq!((i.escalation_loop_count, i.details), (1, None));
    // Escalating with no rules moves nothing but re-triggers.
    let acked = store
        .act_on_incident(
            &t.account,
            &i.id,
            IncidentAction::Acknowledge,
            &t.actor(),
            NOW,
        )
        .await
        .expect("ack");
    assert!(matches!(acked, ActOutcome::Changed(_)));
    let ActOutcome::Changed(e) = store
        .act_on_incident(&t.account, &i.id, IncidentAction::Escalate, &t.actor(), NOW)
        .await
        .expect("escalate")
    else {
        panic!("expected Changed");
    };
    assert_eq!(
        (
            e.state.as_str(),
            e.current_policy_rule_id,
            e.escalation_loop_count
        ),
        ("triggered", None, 1)
    );
    assert_not_found(
        store
            .trigger_incident(
                &t.account,
                "nosuch00",
                &new_incident("m", None),
                true,
                &t.actor(),
                NOW,
            )
            .await,
        "unknown service",
    );
}

pub(crate) async fn dedup_by_key(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, sid, actor) = (
        w.t.account.as_str(),
        w.service.id.as_str(),
        w.service_actor(),
    );
    let first = w.trigger(store, "disk full", Some("disk"), NOW).await;
    let events_before = store
        .list_events(
            acc,
            &EventFilter {
                source: None,
                limit: 1,
                offset: 0,
            },
        )
        .await
        .expect("events")
        .1;

    // Same key, even with another message: the open incident.
    for message in ["disk full", "disk still full"] {
        let again = store
            .trigger_incident(
                acc,
                sid,
                &new_incident(message, Some("disk")),
                true,
                &actor,
                NOW + 1,
            )
            .await
            .expect("trigger");
        match again {
            TriggerOutcome::Deduplicated(id) => {
                assert_eq!(id, first.id);
                let i = store.get_incident(acc, &id).await.expect("incident");
                assert_eq!(i.message, "disk full");
                assert_eq!(i.current_policy_id.as_deref(), Some(w.policy.id.as_str()));
            }
            other => panic!("expected Deduplicated, got {other:?}"),
        }
    }
    // Without dedup an explicit key in use is refused.
    assert_taken(
        store
            .trigger_incident(
                acc,
                sid,
                &new_incident("disk full", Some("disk")),
                false,
                &actor,
                NOW,
            )
            .await,
        "key",
    );
    let events_after = store
        .list_events(
            acc,
            &EventFilter {
                source: None,
                limit: 1,
                offset: 0,
            },
        )
        .await
        .expect("events")
        .1;
    assert_eq!(events_before, events_after, "dedup writes nothing");

    // Same message, new key: a new incident.
    let other = w.trigger(store, "disk full", Some("disk-2"), NOW + 2).await;
    assert_ne!(other.id, first.id);
    // Keys are per service.
    let db = store
        .create_service(
            acc,
            &service_input("db", &w.policy.id),
            "k-db",
            &w.t.actor(),
            NOW,
        )
        .await
        .expect("service");
    w.trigger_on(store, &db.id, "disk full", Some("disk"), NOW)
        .await;

    let found = store
        .find_open_incident(acc, sid, Some("disk"), None)
        .await
        .expect("find")
        .expect("open");
    assert_eq!(found.id, first.id);
    assert!(store
        .find_open_incident(acc, sid, Some("nope"), None)
        .await
        .expect("find")
        .is_none());
    assert!(store
        .find_open_incident(acc, sid, None, None)
        .await
        .expect("find")
        .is_none());

    // Still deduplicated while acknowledged; a new incident once resolved.
    w.act(store, &first.id, IncidentAction::Acknowledge, NOW + 3)
        .await;
    let again = store
        .trigger_incident(
            acc,
            sid,
            &new_incident("disk full", Some("disk")),
            true,
            &actor,
            NOW + 4,
        )
        .await
        .expect("trigger");
    assert!(
        matches!(&again, TriggerOutcome::Deduplicated(id) if *id == first.id),
        "{again:?}"
    );
    w.act(store, &first.id, IncidentAction::Resolve, NOW + 5)
        .await;
    assert!(store
        .find_open_incident(acc, sid, Some("disk"), None)
        .await
        .expect("find")
        .is_none());
    let reopened = w.trigger(store, "disk full", Some("disk"), NOW + 6).await;
    assert_ne!(reopened.id, first.id);
    assert_eq!(reopened.key, "disk");
    w.act(store, &reopened.id, IncidentAction::Resolve, NOW + 7)
        .await;
    // Without dedup too, once resolved.
    let outcome = store
        .trigger_incident(
            acc,
            sid,
            &new_incident("disk full", Some("disk")),
            false,
            &actor,
            NOW + 8,
        )
        .await
        .expect("trigger");
    assert!(matches!(outcome, TriggerOutcome::Created(_)), "{outcome:?}");
}

pub(crate) async fn dedup_by_message(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, sid, actor) = (
        w.t.account.as_str(),
        w.service.id.as_str(),
        w.service_actor(),
    );
    let first = w.trigger(store, "ping failed", None, NOW).await;
    let again = store
        .trigger_incident(
            acc,
            sid,
            &new_incident("ping failed", None),
            true,
            &actor,
            NOW + 1,
        )
        .await
        .expect("trigger");
    assert!(
        matches!(&again, TriggerOutcome::Deduplicated(id) if *id == first.id),
        "{again:?}"
    );
    // Messages match exactly.
    let other = w.trigger(store, "Ping failed", None, NOW + 2).await;
    assert_ne!(other.id, first.id);
    let found = store
        .find_open_incident(acc, sid, None, Some("ping failed"))
        .await
        .expect("find")
        .expect("open");
    assert_eq!(found.id, first.id);
    // Without dedup and without a key, every trigger opens an incident.
    let outcome = store
        .trigger_incident(
            acc,
            sid,
            &new_incident("ping failed", None),
            false,
            &actor,
            NOW + 3,
        )
        .await
        .expect("trigger");
    let TriggerOutcome::Created(third) = outcome else {
        panic!("expected Created, got {outcome:?}");
    };
    assert_ne!(third.key, first.key);
    assert!(is_generated_key(&third.key));
    // The newest open one is found.
    let found = store
        .find_open_incident(acc, sid, None, Some("ping failed"))
        .await
        .expect("find")
        .expect("open");
    assert_eq!(found.id, third.id);
    for id in [&first.id, &third.id] {
        w.act(store, id, IncidentAction::Resolve, NOW + 4).await;
    }
    assert!(store
        .find_open_incident(acc, sid, None, Some("ping failed"))
        .await
        .expect("find")
        .is_none());
    let fresh = w.trigger(store, "ping failed", None, NOW + 5).await;
    assert!(fresh.id != first.id && fresh.id != third.id);
}

pub(crate) async fn trigger_on_disabled_service_is_refused(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, sid) = (w.t.account.as_str(), w.service.id.as_str());
    let open = w.trigger(store, "before", Some("k1"), NOW).await;
    store
        .set_service_state(acc, sid, "disabled", &w.t.actor(), NOW)
        .await
        .expect("disable");
    for (message, key) in [("new", Some("k2")), ("before", Some("k1")), ("m", None)] {
        assert_conflict(
            store
                .trigger_incident(
                    acc,
                    sid,
                    &new_incident(message, key),
                    true,
                    &w.service_actor(),
                    NOW,
                )
                .await,
        );
    }
    let (list, total) = store
        .list_incidents(acc, &page(100, 0))
        .await
        .expect("list");
    assert_eq!((ids(&list), total), (vec![open.id.as_str()], 1));
    store
        .set_service_state(acc, sid, "enabled", &w.t.actor(), NOW)
        .await
        .expect("enable");
    w.trigger(store, "new", Some("k2"), NOW).await;
}

/// A deduplicating trigger of the world's service, as its monitoring sends it.
async fn trigger_at(
    store: &dyn Store,
    w: &World,
    message: &str,
    key: Option<&str>,
    now: Millis,
) -> TriggerOutcome {
    let actor = Actor::Service(w.service.id.clone());
    store
        .trigger_incident(
            &w.t.account,
            &w.service.id,
            &new_incident(message, key),
            true,
            &actor,
            now,
        )
        .await
        .expect("trigger")
}

/// Opens an incident and returns it, failing on a duplicate.
async fn open(
    store: &dyn Store,
    w: &World,
    message: &str,
    key: Option<&str>,
    now: Millis,
) -> Incident {
    match trigger_at(store, w, message, key, now).await {
        TriggerOutcome::Created(i) => i,
        other => panic!("expected a new incident for {message:?}/{key:?}, got {other:?}"),
    }
}

/// The incident a repeated trigger deduplicates into, or `None` when it
/// opens a new one.
async fn dedups_into(
    store: &dyn Store,
    w: &World,
    message: &str,
    key: Option<&str>,
) -> Option<String> {
    match trigger_at(store, w, message, key, NOW + 5).await {
        TriggerOutcome::Deduplicated(id) => Some(id),
        TriggerOutcome::Created(_) => None,
    }
}

/// Every way an incident stops being open stops it deduplicating, at
/// once: resolving, deleting, auto-resolve by the engine; editing the
/// message moves keyless dedup to the new message; and triggers in one
/// batch deduplicate against each other.
pub(crate) async fn dedup_ends_with_the_open_incident(shared: Arc<dyn Store>) {
    let store = &*shared;
    let w = world(store, "acme").await;
    let (acc, actor) = (&w.t.account, w.t.actor());

    // Resolved.
    let a = open(store, &w, "disk full", Some("disk"), NOW).await;
    assert_eq!(
        dedups_into(store, &w, "x", Some("disk")).await.as_deref(),
        Some(a.id.as_str())
    );
    store
        .act_on_incident(acc, &a.id, IncidentAction::Resolve, &actor, NOW + 1)
        .await
        .expect("resolve");
    let b = open(store, &w, "disk full", Some("disk"), NOW + 2).await;
    assert_ne!(a.id, b.id);

    // Deleted.
    store
        .delete_incident(acc, &b.id, &actor, NOW + 3)
        .await
        .expect("delete");
    let c = open(store, &w, "disk full", Some("disk"), NOW + 4).await;

    // Keyless dedup follows an edited message.
    let d = open(store, &w, "cpu hot", None, NOW + 5).await;
    assert_eq!(
        dedups_into(store, &w, "cpu hot", None).await.as_deref(),
        Some(d.id.as_str())
    );
    let patch = IncidentPatch {
        message: Some("cpu on fire".into()),
        ..IncidentPatch::default()
    };
    store
        .update_incident(acc, &d.id, &patch, &actor, NOW + 6)
        .await
        .expect("update");
    assert_eq!(
        dedups_into(store, &w, "cpu on fire", None).await.as_deref(),
        Some(d.id.as_str())
    );
    let e = open(store, &w, "cpu hot", None, NOW + 7).await;
    assert_ne!(e.id, d.id);

    // Auto-resolved by the engine.
    let mut input = service_input("web", &w.policy.id);
    input.auto_resolve_timeout = Some(5);
    store
        .update_service(acc, &w.service.id, &input, &json!({}), &actor, NOW + 8)
        .await
        .expect("update service");
    let f = open(store, &w, "memory low", Some("mem"), NOW + 10).await;
    store
        .fire_due_timers(NOW + 10 + 5 * MINUTE, 1000)
        .await
        .expect("fire");
    let f = store.get_incident(acc, &f.id).await.expect("incident");
    assert_eq!(f.state, "resolved");
    let g = open(store, &w, "memory low", Some("mem"), NOW + 11 + 5 * MINUTE).await;
    assert_ne!(f.id, g.id);

    // Concurrent triggers of one new key (batched together on SQLite): one incident.
    let outcomes = super::concurrency::race_triggers(
        &shared,
        &w,
        |_| new_incident("net down", Some("net")),
        true,
    )
    .await;
    super::concurrency::assert_one_created_among(outcomes);

    // Still open after all that: c (disk), e (cpu hot), d (cpu on fire).
    assert_eq!(
        dedups_into(store, &w, "x", Some("disk")).await.as_deref(),
        Some(c.id.as_str())
    );
    assert_eq!(
        dedups_into(store, &w, "cpu hot", None).await.as_deref(),
        Some(e.id.as_str())
    );
}
