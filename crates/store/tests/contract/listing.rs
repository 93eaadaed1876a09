//! Listing and filtering incidents and events; deletion.

use super::*;

pub(crate) async fn list_incidents_filters(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let acc = w.t.account.as_str();
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
    let i1 = w.trigger(store, "CPU load high", None, NOW + 1).await;
    let i2 = w.trigger(store, "disk 100% full", None, NOW + 2).await;
    w.act(store, &i2.id, IncidentAction::Acknowledge, NOW + 10)
        .await;
    let i3 = w
        .trigger_on(store, &db.id, "disk_usage warning", None, NOW + 3)
        .await;
    w.act(store, &i3.id, IncidentAction::Resolve, NOW + 10)
        .await;
    let i4 = w
        .trigger_on(store, &db.id, "Disk latency", None, NOW + 4)
        .await;
    let i5 = w.trigger(store, "memory", None, NOW + 5).await;
    w.act(store, &i5.id, IncidentAction::Escalate, NOW + 10)
        .await;

    let list = |filter: IncidentFilter| async move {
        let (rows, total) = store
            .list_incidents(acc, &filter)
            .await
            .expect("list_incidents");
        assert_eq!(rows.len() as i64, total, "one page holds all");
        rows.into_iter().map(|i| i.id).collect::<Vec<_>>()
    };
    let all = || page(100, 0);
    assert_eq!(list(all()).await, idv(&[&i5, &i4, &i3, &i2, &i1]));
    let states = |s: &[&str]| IncidentFilter {
        states: s.iter().map(|s| s.to_string()).collect(),
        ..all()
    };
    assert_eq!(list(states(&["triggered"])).await, idv(&[&i5, &i4, &i1]));
    assert_eq!(
        list(states(&["triggered", "acknowledged"])).await,
        idv(&[&i5, &i4, &i2, &i1])
    );
    assert_eq!(list(states(&["resolved"])).await, idv(&[&i3]));
    assert!(list(states(&["bogus"])).await.is_empty());
    let by_service = IncidentFilter {
        service_id: Some(db.id.clone()),
        ..all()
    };
    assert_eq!(list(by_service).await, idv(&[&i4, &i3]));
    let by_user = IncidentFilter {
        current_user_id: Some(w.users[1].clone()),
        ..all()
    };
    assert_eq!(list(by_user).await, idv(&[&i5]));
    let window = IncidentFilter {
        since: Some(NOW + 2),
        until: Some(NOW + 4),
        ..all()
    };
    assert_eq!(
        list(window).await,
        idv(&[&i3, &i2]),
        "since inclusive, until exclusive"
    );
    let q = |q: &str| IncidentFilter {
        q: Some(q.into()),
        ..all()
    };
    assert_eq!(
        list(q("disk")).await,
        idv(&[&i4, &i3, &i2]),
        "case-insensitive"
    );
    assert_eq!(list(q("LOAD")).await, idv(&[&i1]));
    assert!(list(q("nothing like it")).await.is_empty());
    let combined = IncidentFilter {
        states: vec!["triggered".into(), "resolved".into()],
        service_id: Some(db.id.clone()),
        q: Some("DISK".into()),
        since: Some(NOW + 4),
        ..all()
    };
    assert_eq!(list(combined).await, idv(&[&i4]));
}

pub(crate) async fn list_incidents_escapes_like_wildcards(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let acc = w.t.account.as_str();
    let pct = w.trigger(store, "disk 100% full", None, NOW + 1).await;
    let _hundred = w.trigger(store, "100 errors", None, NOW + 2).await;
    let underscore = w.trigger(store, "disk_usage warning", None, NOW + 3).await;
    let _dash = w.trigger(store, "desk-use high", None, NOW + 4).await;
    let backslash = w.trigger(store, r"path C:\temp full", None, NOW + 5).await;
    let _plain = w.trigger(store, "path C:temp", None, NOW + 6).await;
    let q = |q: &str| IncidentFilter {
        q: Some(q.into()),
        ..page(100, 0)
    };
    for (query, want) in [
        ("100%", vec![pct.id.as_str()]),
        ("0% f", vec![pct.id.as_str()]),
        ("%", vec![pct.id.as_str()]),
        ("k_u", vec![underscore.id.as_str()]),
        ("_", vec![underscore.id.as_str()]),
        (r"C:\t", vec![backslash.id.as_str()]),
        (r"\", vec![backslash.id.as_str()]),
    ] {
        let (rows, total) = store
            .list_incidents(acc, &q(query))
            .await
            .expect("list_incidents");
        assert_eq!(
            (ids(&rows), total),
            (want.clone(), want.len() as i64),
            "q = {query:?}"
        );
    }
}

pub(crate) async fn list_incidents_pages_newest_first(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let acc = w.t.account.as_str();
    let mut made = Vec::new();
    // Seven incidents, some sharing an instant (then ordered by id, descending).
    for (n, at) in [0, 1, 1, 1, 2, 3, 3].into_iter().enumerate() {
        made.push(
            w.trigger(store, &format!("incident {n}"), None, NOW + at)
                .await,
        );
    }
    let mut want: Vec<(Millis, String)> = made
        .iter()
        .map(|i| (i.triggered_at, i.id.clone()))
        .collect();
    want.sort_by(|a, b| b.cmp(a));
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();

    let (rows, total) = store
        .list_incidents(acc, &page(100, 0))
        .await
        .expect("list");
    assert_eq!(
        (rows.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), total),
        (want.clone(), 7)
    );
    let mut paged = Vec::new();
    for offset in (0..7).step_by(3) {
        let (rows, total) = store
            .list_incidents(acc, &page(3, offset))
            .await
            .expect("page");
        assert_eq!(total, 7);
        assert!(rows.len() <= 3);
        paged.extend(rows.into_iter().map(|i| i.id));
    }
    assert_eq!(paged, want);
    let (rows, total) = store
        .list_incidents(acc, &page(3, 7))
        .await
        .expect("past the end");
    assert_eq!((rows.len(), total), (0, 7));
    let filtered = IncidentFilter {
        since: Some(NOW + 1),
        until: Some(NOW + 3),
        ..page(2, 1)
    };
    let (rows, total) = store
        .list_incidents(acc, &filtered)
        .await
        .expect("filtered page");
    assert_eq!(total, 4);
    assert_eq!(
        rows.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        want[3..5].to_vec()
    );
}

pub(crate) async fn events_record_actors_newest_first(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let acc = w.t.account.as_str();
    let i = w.trigger(store, "down", None, NOW).await;
    store
        .act_on_incident(
            acc,
            &i.id,
            IncidentAction::Acknowledge,
            &Actor::User(w.users[0].clone()),
            NOW + 1,
        )
        .await
        .expect("ack");
    // The same instant: insertion order decides.
    store
        .act_on_incident(acc, &i.id, IncidentAction::Trigger, &Actor::System, NOW + 1)
        .await
        .expect("timer re-trigger");
    store
        .act_on_incident(
            acc,
            &i.id,
            IncidentAction::Resolve,
            &w.service_actor(),
            NOW + 1,
        )
        .await
        .expect("resolve");

    let events = events_of(store, acc, "incident", &i.id).await;
    let got: Vec<(&str, &str, Option<&str>, Millis)> = events
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor_type.as_str(),
                e.actor_id.as_deref(),
                e.created_at,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "incident.resolve",
                "service",
                Some(w.service.id.as_str()),
                NOW + 1
            ),
            ("incident.trigger", "system", None, NOW + 1),
            (
                "incident.acknowledge",
                "user",
                Some(w.users[0].as_str()),
                NOW + 1
            ),
            (
                "incident.create",
                "service",
                Some(w.service.id.as_str()),
                NOW
            ),
        ]
    );
    assert!(events
        .iter()
        .all(|e| e.source_type == "incident" && e.source_id == i.id));
    let unique: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(unique.len(), 4);

    // Paging through the whole log.
    let all = EventFilter {
        source: None,
        limit: 1000,
        offset: 0,
    };
    let (everything, total) = store.list_events(acc, &all).await.expect("list_events");
    assert_eq!(everything.len() as i64, total);
    assert_eq!(everything[0].id, events[0].id, "newest first");
    assert_eq!(
        everything.last().map(|e| e.action.as_str()),
        Some("account.create")
    );
    let sources: HashSet<&str> = everything.iter().map(|e| e.source_type.as_str()).collect();
    let want: HashSet<&str> = [
        "account",
        "user",
        "policy",
        "policy_rule",
        "service",
        "incident",
    ]
    .into();
    assert_eq!(sources, want);
    let second = EventFilter {
        source: Some(("incident".into(), i.id.clone())),
        limit: 2,
        offset: 1,
    };
    let (rows, total) = store.list_events(acc, &second).await.expect("page");
    assert_eq!(total, 4);
    assert_eq!(
        rows.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["incident.trigger", "incident.acknowledge"]
    );
    // Source filters need both type and id to match.
    let wrong_type = EventFilter {
        source: Some(("service".into(), i.id.clone())),
        limit: 10,
        offset: 0,
    };
    assert_eq!(
        store.list_events(acc, &wrong_type).await.expect("list").1,
        0
    );
}

pub(crate) async fn delete_incident(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let i = w.trigger(store, "down", Some("k"), NOW).await;
    let keep = w.trigger(store, "other", None, NOW).await;
    store
        .delete_incident(acc, &i.id, &actor, NOW + 1)
        .await
        .expect("delete_incident");
    assert_not_found(store.get_incident(acc, &i.id).await, "deleted incident");
    assert_not_found(
        store.delete_incident(acc, &i.id, &actor, NOW).await,
        "deleted twice",
    );
    assert_not_found(
        store
            .act_on_incident(acc, &i.id, IncidentAction::Acknowledge, &actor, NOW)
            .await,
        "act on deleted",
    );
    let (rows, total) = store
        .list_incidents(acc, &page(100, 0))
        .await
        .expect("list");
    assert_eq!((ids(&rows), total), (vec![keep.id.as_str()], 1));
    // Its key is free again, and its events stay in the audit log.
    w.trigger(store, "down", Some("k"), NOW + 2).await;
    let events = events_of(store, acc, "incident", &i.id).await;
    assert_eq!(actions(&events), ["incident.delete", "incident.create"]);
    assert_eq!(
        (events[0].actor_id.as_deref(), events[0].created_at),
        (Some(w.t.admin.as_str()), NOW + 1)
    );
}
