//! The incident state machine, escalation and edits.

use super::*;

pub(crate) async fn state_machine(store: Arc<dyn Store>) {
    use IncidentAction as A;
    use IncidentState as S;
    let store = &*store;
    let w = world(store, "acme").await;
    let acc = w.t.account.as_str();
    let i = w.trigger(store, "down", None, NOW).await;

    let acked = w.act(store, &i.id, A::Acknowledge, NOW + 1).await;
    assert_eq!(
        (
            acked.state.as_str(),
            acked.acknowledged_at,
            acked.resolved_at
        ),
        ("acknowledged", Some(NOW + 1), None)
    );
    assert_eq!(acked.updated_at, NOW + 1);
    assert_eq!(
        acked.current_user_id.as_deref(),
        Some(w.users[0].as_str()),
        "ack keeps the assignee"
    );
    let again = store
        .act_on_incident(acc, &i.id, A::Acknowledge, &w.t.actor(), NOW + 2)
        .await
        .expect("ack again");
    match again {
        ActOutcome::Unchanged(x) => assert_eq!(
            (x.state.as_str(), x.acknowledged_at, x.updated_at),
            ("acknowledged", Some(NOW + 1), NOW + 1)
        ),
        other => panic!("expected Unchanged, got {other:?}"),
    }

    let retriggered = w.act(store, &i.id, A::Trigger, NOW + 3).await;
    assert_eq!(
        (retriggered.state.as_str(), retriggered.acknowledged_at),
        ("triggered", None)
    );
    let again = store
        .act_on_incident(acc, &i.id, A::Trigger, &w.t.actor(), NOW + 4)
        .await
        .expect("trigger again");
    assert!(matches!(again, ActOutcome::Unchanged(_)), "{again:?}");

    w.act(store, &i.id, A::Acknowledge, NOW + 5).await;
    let resolved = w.act(store, &i.id, A::Resolve, NOW + 6).await;
    assert_eq!(resolved.state, "resolved");
    assert_eq!(
        (resolved.acknowledged_at, resolved.resolved_at),
        (Some(NOW + 5), Some(NOW + 6))
    );
    let again = store
        .act_on_incident(acc, &i.id, A::Resolve, &w.t.actor(), NOW + 7)
        .await
        .expect("resolve again");
    assert!(
        matches!(&again, ActOutcome::Unchanged(x) if x.resolved_at == Some(NOW + 6)),
        "{again:?}"
    );

    for action in [A::Acknowledge, A::Escalate, A::Trigger] {
        assert_transition(
            store
                .act_on_incident(acc, &i.id, action, &w.t.actor(), NOW + 8)
                .await,
            S::Resolved,
            action,
        );
    }
    let still = store.get_incident(acc, &i.id).await.expect("get");
    assert_eq!(
        (still.state.as_str(), still.updated_at),
        ("resolved", NOW + 6)
    );

    // Resolve straight from triggered.
    let j = w.trigger(store, "flap", None, NOW).await;
    let r = w.act(store, &j.id, A::Resolve, NOW + 1).await;
    assert_eq!((r.acknowledged_at, r.resolved_at), (None, Some(NOW + 1)));

    let events = events_of(store, acc, "incident", &i.id).await;
    assert_eq!(
        actions(&events),
        [
            "incident.resolve",
            "incident.acknowledge",
            "incident.trigger",
            "incident.acknowledge",
            "incident.create"
        ]
    );
    assert_eq!(
        events[0].changeset.0,
        json!({"state": ["acknowledged", "resolved"]})
    );
    assert_eq!(
        events[2].changeset.0,
        json!({"state": ["acknowledged", "triggered"]})
    );
    assert_eq!(
        events[3].changeset.0,
        json!({"state": ["triggered", "acknowledged"]})
    );
    assert!(events[..4]
        .iter()
        .all(|e| e.actor_type == "user" && e.actor_id.as_deref() == Some(w.t.admin.as_str())));
    assert_not_found(
        store
            .act_on_incident(acc, "nosuch00", A::Resolve, &w.t.actor(), NOW)
            .await,
        "unknown incident",
    );
}

pub(crate) async fn escalate_walks_rules_and_wraps(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let acc = w.t.account.as_str();
    let i = w.trigger(store, "down", None, NOW).await;
    w.act(store, &i.id, IncidentAction::Acknowledge, NOW + 1)
        .await;

    let e1 = w.act(store, &i.id, IncidentAction::Escalate, NOW + 2).await;
    assert_eq!((e1.state.as_str(), e1.acknowledged_at), ("triggered", None));
    assert_eq!(e1.current_user_id.as_deref(), Some(w.users[1].as_str()));
    assert_eq!(
        e1.current_policy_rule_id.as_deref(),
        Some(w.rules[1].id.as_str())
    );
    assert_eq!(
        (e1.current_policy_id.as_deref(), e1.escalation_loop_count),
        (Some(w.policy.id.as_str()), 1)
    );

    let e2 = w.act(store, &i.id, IncidentAction::Escalate, NOW + 3).await;
    assert_eq!(e2.current_user_id.as_deref(), Some(w.users[0].as_str()));
    assert_eq!(
        e2.current_policy_rule_id.as_deref(),
        Some(w.rules[0].id.as_str())
    );
    assert_eq!(e2.escalation_loop_count, 2);
    // Manual escalation ignores loop_limit (2).
    let e3 = w.act(store, &i.id, IncidentAction::Escalate, NOW + 4).await;
    let e4 = w.act(store, &i.id, IncidentAction::Escalate, NOW + 5).await;
    assert_eq!(
        (
            e3.current_policy_rule_id.as_deref(),
            e3.escalation_loop_count
        ),
        (Some(w.rules[1].id.as_str()), 2)
    );
    assert_eq!(
        (
            e4.current_policy_rule_id.as_deref(),
            e4.escalation_loop_count
        ),
        (Some(w.rules[0].id.as_str()), 3)
    );

    let events = events_of(store, acc, "incident", &i.id).await;
    assert_eq!(events[0].action, "incident.escalate");
    assert_eq!(
        events[0].changeset.0,
        json!({"current_user_id": [w.users[1], w.users[0]],
               "current_policy_rule_id": [w.rules[1].id, w.rules[0].id],
               "escalation_loop_count": [2, 3]})
    );
    assert_eq!(
        events[3].changeset.0,
        json!({"state": ["acknowledged", "triggered"],
               "current_user_id": [w.users[0], w.users[1]],
               "current_policy_rule_id": [w.rules[0].id, w.rules[1].id]})
    );

    // Rules follow the policy's current order.
    let order = vec![w.rules[1].id.clone(), w.rules[0].id.clone()];
    store
        .sort_rules(acc, &w.policy.id, &order, &w.t.actor(), NOW)
        .await
        .expect("sort");
    let e5 = w.act(store, &i.id, IncidentAction::Escalate, NOW + 6).await;
    assert_eq!(
        (
            e5.current_policy_rule_id.as_deref(),
            e5.escalation_loop_count
        ),
        (Some(w.rules[1].id.as_str()), 4)
    );

    // A deleted current rule: the walk restarts at the first rule.
    store
        .delete_rule(acc, &w.policy.id, &w.rules[1].id, &w.t.actor(), NOW)
        .await
        .expect("delete_rule");
    let orphan = store.get_incident(acc, &i.id).await.expect("get");
    assert_eq!(
        (orphan.current_policy_rule_id, orphan.current_policy_id),
        (None, None)
    );
    let e6 = w.act(store, &i.id, IncidentAction::Escalate, NOW + 7).await;
    assert_eq!(
        (
            e6.current_policy_rule_id.as_deref(),
            e6.escalation_loop_count
        ),
        (Some(w.rules[0].id.as_str()), 4)
    );
    assert_eq!(e6.current_user_id.as_deref(), Some(w.users[0].as_str()));
}

pub(crate) async fn update_incident_writes_a_changeset(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let i = w.trigger(store, "old message", None, NOW).await;

    let patch = IncidentPatch {
        message: Some("new message".into()),
        description: Some(Some("details here".into())),
        details: Some(Some(json!({"a": 1}))),
    };
    let u = store
        .update_incident(acc, &i.id, &patch, &actor, NOW + 1)
        .await
        .expect("update_incident");
    assert_eq!(
        (u.message.as_str(), u.description.as_deref(), u.updated_at),
        ("new message", Some("details here"), NOW + 1)
    );
    assert_eq!(u.details.as_ref().map(|d| &d.0), Some(&json!({"a": 1})));
    assert_eq!(u.current_policy_id.as_deref(), Some(w.policy.id.as_str()));

    // Nothing changes: no event, no write.
    let same = store
        .update_incident(acc, &i.id, &patch, &actor, NOW + 2)
        .await
        .expect("same");
    assert_eq!(same.updated_at, NOW + 1);
    let nothing = store
        .update_incident(acc, &i.id, &IncidentPatch::default(), &actor, NOW + 2)
        .await
        .expect("empty");
    assert_eq!(nothing.updated_at, NOW + 1);

    // Clearing.
    let clear = IncidentPatch {
        message: None,
        description: Some(None),
        details: Some(None),
    };
    let c = store
        .update_incident(acc, &i.id, &clear, &actor, NOW + 3)
        .await
        .expect("clear");
    assert_eq!(
        (
            c.message.as_str(),
            c.description.as_deref(),
            c.details.as_ref()
        ),
        ("new message", None, None)
    );
    let got = store.get_incident(acc, &i.id).await.expect("get");
    assert_eq!((got.description, got.details), (None, None));

    let events = events_of(store, acc, "incident", &i.id).await;
    assert_eq!(
        actions(&events),
        ["incident.update", "incident.update", "incident.create"]
    );
    assert_eq!(
        events[1].changeset.0,
        json!({"message": ["old message", "new message"], "description": [null, "details here"],
               "details": [null, {"a": 1}]})
    );
    assert_eq!(
        events[0].changeset.0,
        json!({"description": ["details here", null], "details": [{"a": 1}, null]})
    );
    assert_eq!(events[0].actor_id.as_deref(), Some(w.t.admin.as_str()));
    assert_not_found(
        store
            .update_incident(acc, "nosuch00", &patch, &actor, NOW)
            .await,
        "unknown incident",
    );
}
