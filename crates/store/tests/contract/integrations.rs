//! What the inbound integrations (PagerDuty, Opsgenie, Alertmanager) need
//! beyond opening and acting on incidents: a group of alerts that grows
//! while its incident is open, and change events on a service.

use super::*;

pub(crate) async fn grow_incident_records_a_growing_group(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = world(store, "globex").await;
    let acc = w.t.account.as_str();
    let actor = w.service_actor();
    let opened = store
        .trigger_incident(
            acc,
            &w.service.id,
            &NewIncident {
                message: "HighLatency".into(),
                description: None,
                details: Some(json!({"alert_count": 1, "alerts": ["a"]})),
                key: Some("group-1".into()),
            },
            true,
            &actor,
            NOW,
        )
        .await
        .expect("trigger_incident");
    let TriggerOutcome::Created(i) = opened else {
        panic!("expected a new incident, got {opened:?}");
    };

    // As many alerts as recorded, or fewer: nothing is written.
    for alerts in [0, 1] {
        let same = store
            .grow_incident(acc, &i.id, alerts, &json!({"alerts": []}), &actor, NOW + 1)
            .await
            .expect("grow_incident");
        assert!(same.is_none(), "{alerts} alerts: {same:?}");
    }
    let got = store.get_incident(acc, &i.id).await.expect("get");
    assert_eq!(got.updated_at, NOW);
    assert_eq!(
        got.details.as_ref().map(|d| &d.0),
        Some(&json!({"alert_count": 1, "alerts": ["a"]}))
    );

    // More: the details are replaced, the count set, the timeline told.
    let grown = store
        .grow_incident(
            acc,
            &i.id,
            3,
            &json!({"alerts": ["a", "b", "c"]}),
            &actor,
            NOW + 2,
        )
        .await
        .expect("grow_incident")
        .expect("the group grew");
    assert_eq!(
        grown.details.as_ref().map(|d| &d.0),
        Some(&json!({"alerts": ["a", "b", "c"], "alert_count": 3}))
    );
    assert_eq!(
        (grown.updated_at, grown.state.as_str()),
        (NOW + 2, "triggered")
    );
    assert_eq!(grown.message, "HighLatency", "the message stays");
    let got = store.get_incident(acc, &i.id).await.expect("get");
    assert_eq!(got.details, grown.details);
    // A smaller notification arriving late changes nothing.
    let late = store
        .grow_incident(acc, &i.id, 2, &json!({"alerts": []}), &actor, NOW + 3)
        .await
        .expect("grow_incident");
    assert!(late.is_none(), "{late:?}");

    let events = events_of(store, acc, "incident", &i.id).await;
    assert_eq!(actions(&events), ["incident.update", "incident.create"]);
    assert_eq!(events[0].changeset.0, json!({"alert_count": [1, 3]}));
    assert_eq!(
        (events[0].actor_type.as_str(), events[0].actor_id.as_deref()),
        ("service", Some(w.service.id.as_str()))
    );
    assert_eq!(events[0].created_at, NOW + 2);

    // Another account's incident, or none at all, is not found.
    assert_not_found(
        store
            .grow_incident(&other.t.account, &i.id, 9, &json!({}), &actor, NOW + 4)
            .await,
        "another account's incident",
    );
    assert_not_found(
        store
            .grow_incident(acc, "AAAAAAAA", 9, &json!({}), &actor, NOW + 4)
            .await,
        "an unknown incident",
    );

    // Details that are not an object start from zero and are kept as given.
    let plain = w.trigger(store, "plain", None, NOW + 5).await;
    let grown = store
        .grow_incident(acc, &plain.id, 1, &json!("two alerts"), &actor, NOW + 6)
        .await
        .expect("grow_incident")
        .expect("grew from nothing");
    assert_eq!(
        grown.details.as_ref().map(|d| &d.0),
        Some(&json!("two alerts"))
    );

    // A resolved incident is history: nothing is written.
    w.act(store, &i.id, IncidentAction::Resolve, NOW + 7).await;
    let closed = store
        .grow_incident(acc, &i.id, 10, &json!({}), &actor, NOW + 8)
        .await
        .expect("grow_incident");
    assert!(closed.is_none(), "{closed:?}");
    let events = events_of(store, acc, "incident", &i.id).await;
    assert_eq!(
        actions(&events),
        ["incident.resolve", "incident.update", "incident.create"]
    );
    let got = store.get_incident(acc, &i.id).await.expect("get");
    assert_eq!(
        got.details.as_ref().and_then(|d| d.0.get("alert_count")),
        Some(&json!(3))
    );
}

pub(crate) async fn change_events_are_recorded_on_the_service(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = world(store, "globex").await;
    let acc = w.t.account.as_str();
    let change =
        json!({"summary": "Deployed v1.2.3", "source": "ci", "custom_details": {"sha": "abc"}});
    store
        .record_change_event(acc, &w.service.id, &change, &w.service_actor(), NOW + 1)
        .await
        .expect("record_change_event");

    let events = events_of(store, acc, "service", &w.service.id).await;
    assert_eq!(actions(&events), ["service.change_event", "service.create"]);
    assert_eq!(events[0].changeset.0, change);
    assert_eq!(
        (events[0].actor_type.as_str(), events[0].actor_id.as_deref()),
        ("service", Some(w.service.id.as_str()))
    );
    assert_eq!(events[0].created_at, NOW + 1);
    // It opens nothing.
    let (incidents, total) = store
        .list_incidents(acc, &page(10, 0))
        .await
        .expect("list_incidents");
    assert_eq!((incidents.len(), total), (0, 0));

    // Another account's service, or none at all, is not found, and nothing
    // is written to either account.
    assert_not_found(
        store
            .record_change_event(
                &other.t.account,
                &w.service.id,
                &change,
                &other.service_actor(),
                NOW + 2,
            )
            .await,
        "another account's service",
    );
    assert_not_found(
        store
            .record_change_event(acc, "AAAAAAAA", &change, &w.service_actor(), NOW + 2)
            .await,
        "an unknown service",
    );
    assert_eq!(
        events_of(store, acc, "service", &w.service.id).await.len(),
        2
    );
    assert_eq!(
        actions(&events_of(store, &other.t.account, "service", &w.service.id).await),
        Vec::<&str>::new()
    );
}
