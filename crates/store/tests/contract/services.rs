//! Services, their states, counts and integration keys.

use super::*;

pub(crate) async fn service_crud(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = world(store, "other").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let s = &w.service;
    assert_eq!(
        (
            s.name.as_str(),
            s.description.as_deref(),
            s.policy_id.as_str()
        ),
        ("web", Some("web description"), w.policy.id.as_str())
    );
    assert_eq!(
        (s.acknowledge_timeout, s.auto_resolve_timeout),
        (Some(30), None)
    );
    assert_eq!(
        (
            s.state.as_str(),
            s.integration_key.as_str(),
            s.account_id.as_str()
        ),
        ("enabled", "integration-key-acme", acc)
    );
    assert_eq!(
        (s.triggered_count, s.acknowledged_count, s.resolved_count),
        (0, 0, 0)
    );
    assert_eq!((s.created_at, s.updated_at), (NOW, NOW));

    assert_taken(
        store
            .create_service(acc, &service_input("web", &w.policy.id), "k2", &actor, NOW)
            .await,
        "name",
    );
    assert_invalid(
        store
            .create_service(acc, &service_input("api", "nosuch00"), "k2", &actor, NOW)
            .await,
        "policy_id",
    );
    // Unique per account only.
    assert_eq!(other.service.name, "web");

    let db = store
        .create_service(
            acc,
            &service_input("Database", &w.policy.id),
            "k-db",
            &actor,
            NOW,
        )
        .await
        .expect("create_service");
    let api = store
        .create_service(
            acc,
            &service_input("api", &w.policy.id),
            "k-api",
            &actor,
            NOW,
        )
        .await
        .expect("create_service");
    let names: Vec<String> = store
        .list_services(acc)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["Database", "api", "web"], "by name, bytewise");

    assert_taken(
        store
            .update_service(
                acc,
                &api.id,
                &service_input("web", &w.policy.id),
                &json!({}),
                &actor,
                NOW,
            )
            .await,
        "name",
    );
    assert_invalid(
        store
            .update_service(
                acc,
                &api.id,
                &service_input("api", &other.policy.id),
                &json!({}),
                &actor,
                NOW,
            )
            .await,
        "policy_id",
    );
    let input = ServiceInput {
        name: "API".into(),
        description: None,
        policy_id: w.policy.id.clone(),
        acknowledge_timeout: None,
        auto_resolve_timeout: Some(240),
    };
    let changes = json!({"name": ["api", "API"]});
    let api2 = store
        .update_service(acc, &api.id, &input, &changes, &actor, NOW + 1)
        .await
        .expect("update_service");
    assert_eq!(
        (api2.name.as_str(), api2.description.as_deref()),
        ("API", None)
    );
    assert_eq!(
        (
            api2.acknowledge_timeout,
            api2.auto_resolve_timeout,
            api2.updated_at
        ),
        (None, Some(240), NOW + 1)
    );
    assert_eq!(api2.integration_key, "k-api");
    assert_eq!(
        store.get_service(acc, &api.id).await.expect("get").name,
        "API"
    );

    store
        .delete_service(acc, &db.id, &actor, NOW)
        .await
        .expect("delete_service");
    assert_not_found(store.get_service(acc, &db.id).await, "deleted service");
    assert_not_found(
        store.delete_service(acc, &db.id, &actor, NOW).await,
        "deleted twice",
    );
    assert_not_found(
        store
            .update_service(
                acc,
                &db.id,
                &service_input("x", &w.policy.id),
                &json!({}),
                &actor,
                NOW,
            )
            .await,
        "update deleted",
    );

    let events = events_of(store, acc, "service", &api.id).await;
    assert_eq!(actions(&events), ["service.update", "service.create"]);
    assert_eq!(events[0].changeset.0, changes);
    assert_eq!(
        events[1].changeset.0,
        json!({"name": "api", "description": "api description", "policy_id": w.policy.id,
               "acknowledge_timeout": 30, "auto_resolve_timeout": null})
    );
    assert_eq!(
        actions(&events_of(store, acc, "service", &db.id).await),
        ["service.delete", "service.create"]
    );
}

pub(crate) async fn service_counts_by_state(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let acc = w.t.account.as_str();
    let second = store
        .create_service(
            acc,
            &service_input("db", &w.policy.id),
            "k-db",
            &w.t.actor(),
            NOW,
        )
        .await
        .expect("create_service");
    for n in 0..3 {
        w.trigger(store, &format!("t{n}"), None, NOW).await;
    }
    let a = w.trigger(store, "acked", None, NOW).await;
    w.act(store, &a.id, IncidentAction::Acknowledge, NOW).await;
    for n in 0..2 {
        let r = w.trigger(store, &format!("r{n}"), None, NOW).await;
        w.act(store, &r.id, IncidentAction::Resolve, NOW).await;
    }
    w.trigger_on(store, &second.id, "elsewhere", None, NOW)
        .await;
    let s = store
        .get_service(acc, &w.service.id)
        .await
        .expect("get_service");
    assert_eq!(
        (s.triggered_count, s.acknowledged_count, s.resolved_count),
        (3, 1, 2)
    );
    let listed = store.list_services(acc).await.expect("list_services");
    let counts: Vec<(&str, i64, i64, i64)> = listed
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.triggered_count,
                s.acknowledged_count,
                s.resolved_count,
            )
        })
        .collect();
    assert_eq!(counts, [("db", 1, 0, 0), ("web", 3, 1, 2)]);
    let by_key = store
        .service_by_integration_key("integration-key-acme")
        .await
        .expect("lookup")
        .expect("service");
    assert_eq!(
        (by_key.id.as_str(), by_key.state.as_str()),
        (counts_service_id(store, acc).await.as_str(), "enabled")
    );

    // Deleting a service deletes its incidents.
    store
        .delete_service(acc, &w.service.id, &w.t.actor(), NOW)
        .await
        .expect("delete_service");
    assert_not_found(
        store.get_incident(acc, &a.id).await,
        "incident of deleted service",
    );
    let (list, total) = store
        .list_incidents(acc, &page(100, 0))
        .await
        .expect("list_incidents");
    assert_eq!((list.len(), total), (1, 1));
}

pub(crate) async fn service_enable_disable_is_idempotent(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, id, actor) = (w.t.account.as_str(), w.service.id.as_str(), w.t.actor());
    assert!(!store
        .set_service_state(acc, id, "enabled", &actor, NOW)
        .await
        .expect("enable"));
    assert!(store
        .set_service_state(acc, id, "disabled", &actor, NOW + 1)
        .await
        .expect("disable"));
    let s = store.get_service(acc, id).await.expect("get_service");
    assert_eq!((s.state.as_str(), s.updated_at), ("disabled", NOW + 1));
    assert!(!store
        .set_service_state(acc, id, "disabled", &actor, NOW + 2)
        .await
        .expect("disable again"));
    assert_eq!(
        store.get_service(acc, id).await.expect("get").updated_at,
        NOW + 1,
        "nothing written"
    );
    assert!(store
        .set_service_state(acc, id, "enabled", &actor, NOW + 3)
        .await
        .expect("enable"));
    assert_eq!(
        store.get_service(acc, id).await.expect("get").state,
        "enabled"
    );
    let events = events_of(store, acc, "service", id).await;
    assert_eq!(
        actions(&events),
        ["service.enable", "service.disable", "service.create"]
    );
    assert_eq!(
        events[0].changeset.0,
        json!({"state": ["disabled", "enabled"]})
    );
    assert_eq!(
        events[1].changeset.0,
        json!({"state": ["enabled", "disabled"]})
    );
}

pub(crate) async fn integration_key_lookup(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = world(store, "other").await;
    let found = store
        .service_by_integration_key("integration-key-acme")
        .await
        .expect("lookup")
        .expect("service");
    assert_eq!(
        (found.id.as_str(), found.account_id.as_str()),
        (w.service.id.as_str(), w.t.account.as_str())
    );
    let found = store
        .service_by_integration_key("integration-key-other")
        .await
        .expect("lookup")
        .expect("service");
    assert_eq!(found.id, other.service.id);
    assert!(store
        .service_by_integration_key("nope")
        .await
        .expect("lookup")
        .is_none());

    store
        .set_integration_key(
            &w.t.account,
            &w.service.id,
            "fresh-key",
            &w.t.actor(),
            NOW + 1,
        )
        .await
        .expect("set_integration_key");
    assert!(store
        .service_by_integration_key("integration-key-acme")
        .await
        .expect("lookup")
        .is_none());
    let found = store
        .service_by_integration_key("fresh-key")
        .await
        .expect("lookup")
        .expect("service");
    assert_eq!(found.id.as_str(), w.service.id.as_str());
    let after = store
        .get_service(&w.t.account, &w.service.id)
        .await
        .expect("get");
    assert_eq!(after.updated_at, NOW + 1);
    let events = events_of(store, &w.t.account, "service", &w.service.id).await;
    assert_eq!(events[0].action, "service.regenerate_key");
    assert_eq!(
        events[0].changeset.0,
        json!({"integration_key": "regenerated"})
    );
}

/// The id of the service named "web" (the one keyed `integration-key-acme`).
async fn counts_service_id(store: &dyn Store, account: &str) -> String {
    store
        .list_services(account)
        .await
        .expect("list")
        .into_iter()
        .find(|s| s.name == "web")
        .expect("web")
        .id
}
