//! Escalation policies and their rules.

use super::*;

pub(crate) async fn policy_crud(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let other = tenant(store, "other").await;
    let (acc, actor) = (t.account.as_str(), t.actor());
    let p = store
        .create_policy(acc, "Primary", 3, &actor, NOW)
        .await
        .expect("create_policy");
    assert_eq!(
        (p.name.as_str(), p.loop_limit, p.account_id.as_str()),
        ("Primary", 3, acc)
    );
    assert_eq!((p.created_at, p.updated_at), (NOW, NOW));
    assert_taken(
        store.create_policy(acc, "Primary", 1, &actor, NOW).await,
        "name",
    );
    // Names are unique per account only.
    store
        .create_policy(&other.account, "Primary", 1, &other.actor(), NOW)
        .await
        .expect("same name, other account");
    let b = store
        .create_policy(acc, "Backup", 1, &actor, NOW)
        .await
        .expect("create_policy");
    let z = store
        .create_policy(acc, "zeta", 1, &actor, NOW)
        .await
        .expect("create_policy");
    let names: Vec<String> = store
        .list_policies(acc)
        .await
        .expect("list_policies")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["Backup", "Primary", "zeta"], "by name");

    assert_taken(
        store
            .update_policy(acc, &b.id, "Primary", 1, &json!({}), &actor, NOW)
            .await,
        "name",
    );
    let changes = json!({"loop_limit": [1, 4], "name": ["Backup", "Secondary"]});
    let b2 = store
        .update_policy(acc, &b.id, "Secondary", 4, &changes, &actor, NOW + 1)
        .await
        .expect("update_policy");
    assert_eq!(
        (b2.name.as_str(), b2.loop_limit, b2.updated_at),
        ("Secondary", 4, NOW + 1)
    );
    assert_eq!(
        store.get_policy(acc, &b.id).await.expect("get_policy").name,
        "Secondary"
    );

    store
        .delete_policy(acc, &z.id, &actor, NOW)
        .await
        .expect("delete_policy");
    assert_not_found(store.get_policy(acc, &z.id).await, "deleted policy");
    assert_not_found(
        store.delete_policy(acc, &z.id, &actor, NOW).await,
        "deleted twice",
    );
    assert_not_found(
        store
            .update_policy(acc, &z.id, "z", 1, &json!({}), &actor, NOW)
            .await,
        "update deleted",
    );

    let events = events_of(store, acc, "policy", &b.id).await;
    assert_eq!(actions(&events), ["policy.update", "policy.create"]);
    assert_eq!(events[0].changeset.0, changes);
    assert_eq!(
        events[1].changeset.0,
        json!({"name": "Backup", "loop_limit": 1})
    );
    assert_eq!(
        actions(&events_of(store, acc, "policy", &z.id).await),
        ["policy.delete", "policy.create"]
    );
}

pub(crate) async fn rules_positions_and_sorting(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, actor, pid) = (w.t.account.as_str(), w.t.actor(), w.policy.id.as_str());
    assert_eq!(
        w.rules.iter().map(|r| r.position).collect::<Vec<_>>(),
        [0, 1]
    );
    let mut third_input = rule_input(&w.t.admin);
    third_input.escalation_timeout = 5;
    let third = store
        .create_rule(acc, pid, &third_input, &actor, NOW)
        .await
        .expect("create_rule");
    assert_eq!(
        (
            third.position,
            third.escalation_timeout,
            third.policy_id.as_str()
        ),
        (2, 5, pid)
    );
    assert_eq!(
        (third.assignment_type.as_str(), third.assignee_id.as_str()),
        ("user", w.t.admin.as_str())
    );
    let got = store.get_rule(acc, pid, &third.id).await.expect("get_rule");
    assert_eq!(got.id, third.id);

    let events = events_of(store, acc, "policy_rule", &third.id).await;
    assert_eq!(
        events[0].changeset.0,
        json!({"policy_id": pid, "position": 2, "escalation_timeout": 5,
               "assignment": {"type": "user", "id": w.t.admin}})
    );

    // Update keeps the position.
    let mut input = rule_input(&w.users[0]);
    input.escalation_timeout = 10;
    let changes = json!({"escalation_timeout": [5, 10]});
    let updated = store
        .update_rule(acc, pid, &third.id, &input, &changes, &actor, NOW + 1)
        .await
        .expect("update_rule");
    assert_eq!(
        (
            updated.position,
            updated.escalation_timeout,
            updated.updated_at
        ),
        (2, 10, NOW + 1)
    );
    assert_eq!(updated.assignee_id, w.users[0]);
    assert_not_found(
        store
            .update_rule(acc, pid, "nosuch00", &input, &json!({}), &actor, NOW)
            .await,
        "update unknown rule",
    );

    // Sorting: every rule exactly once.
    let (r0, r1, r2) = (
        w.rules[0].id.clone(),
        w.rules[1].id.clone(),
        third.id.clone(),
    );
    let bad: [Vec<String>; 4] = [
        vec![r0.clone(), r1.clone()],
        vec![r0.clone(), r1.clone(), r1.clone()],
        vec![r0.clone(), r1.clone(), r2.clone(), "nosuch00".into()],
        vec![r0.clone(), r1.clone(), "nosuch00".into()],
    ];
    for ids in &bad {
        assert_invalid(
            store.sort_rules(acc, pid, ids, &actor, NOW).await,
            "rule_ids",
        );
    }
    let order = vec![r2.clone(), r0.clone(), r1.clone()];
    let sorted = store
        .sort_rules(acc, pid, &order, &actor, NOW + 2)
        .await
        .expect("sort_rules");
    assert_eq!(
        sorted.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        order
    );
    assert_eq!(
        sorted.iter().map(|r| r.position).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let listed = store.list_rules(acc, pid).await.expect("list_rules");
    assert_eq!(
        listed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        order
    );
    let sort_events = events_of(store, acc, "policy", pid).await;
    assert_eq!(sort_events[0].action, "policy.sort_rules");
    assert_eq!(
        sort_events[0].changeset.0,
        json!({"rule_ids": [[r0, r1, r2], order]})
    );

    // Deleting the middle rule closes the gap.
    store
        .delete_rule(acc, pid, &w.rules[0].id, &actor, NOW)
        .await
        .expect("delete_rule");
    let listed = store.list_rules(acc, pid).await.expect("list_rules");
    let got: Vec<(String, i64)> = listed.iter().map(|r| (r.id.clone(), r.position)).collect();
    assert_eq!(got, [(third.id.clone(), 0), (w.rules[1].id.clone(), 1)]);
    assert_not_found(
        store
            .delete_rule(acc, pid, &w.rules[0].id, &actor, NOW)
            .await,
        "deleted twice",
    );
    assert_not_found(
        store.get_rule(acc, pid, &w.rules[0].id).await,
        "deleted rule",
    );
    let events = events_of(store, acc, "policy_rule", &w.rules[0].id).await;
    assert_eq!(
        actions(&events),
        ["policy_rule.delete", "policy_rule.create"]
    );
    assert_eq!(events[0].changeset.0, json!({"policy_id": pid}));
    // Appending after a delete continues from the end.
    let fourth = store
        .create_rule(acc, pid, &rule_input(&w.users[1]), &actor, NOW)
        .await
        .expect("create_rule");
    assert_eq!(fourth.position, 2);

    // Deleting the policy takes its rules.
    let spare = store
        .create_policy(acc, "spare", 1, &actor, NOW)
        .await
        .expect("policy");
    let rule = store
        .create_rule(acc, &spare.id, &rule_input(&w.users[0]), &actor, NOW)
        .await
        .expect("rule");
    assert_eq!(rule.position, 0, "positions are per policy");
    store
        .delete_policy(acc, &spare.id, &actor, NOW)
        .await
        .expect("delete_policy");
    assert_not_found(
        store.list_rules(acc, &spare.id).await,
        "rules of deleted policy",
    );
    assert_not_found(
        store.get_rule(acc, &spare.id, &rule.id).await,
        "rule of deleted policy",
    );
    assert_not_found(
        store
            .create_rule(acc, &spare.id, &rule_input(&w.users[0]), &actor, NOW)
            .await,
        "rule on deleted policy",
    );
    assert_not_found(
        store.sort_rules(acc, &spare.id, &[], &actor, NOW).await,
        "sort deleted policy",
    );
}

pub(crate) async fn rule_assignment_must_be_in_the_account(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = tenant(store, "other").await;
    let (acc, actor, pid) = (w.t.account.as_str(), w.t.actor(), w.policy.id.as_str());
    assert_invalid(
        store
            .create_rule(acc, pid, &rule_input(&other.admin), &actor, NOW)
            .await,
        "assignment",
    );
    assert_invalid(
        store
            .create_rule(acc, pid, &rule_input("nosuch00"), &actor, NOW)
            .await,
        "assignment",
    );
    let schedule = RuleInput {
        escalation_timeout: 30,
        assignment_type: "schedule".into(),
        assignee_id: "sched001".into(),
    };
    assert_invalid(
        store.create_rule(acc, pid, &schedule, &actor, NOW).await,
        "assignment",
    );
    assert_invalid(
        store
            .update_rule(
                acc,
                pid,
                &w.rules[0].id,
                &rule_input(&other.admin),
                &json!({}),
                &actor,
                NOW,
            )
            .await,
        "assignment",
    );
    let rules = store.list_rules(acc, pid).await.expect("list_rules");
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].assignee_id, w.users[0], "unchanged");
}

pub(crate) async fn policy_in_use_cannot_be_deleted(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    assert_conflict(store.delete_policy(acc, &w.policy.id, &actor, NOW).await);
    assert_eq!(
        store
            .list_rules(acc, &w.policy.id)
            .await
            .expect("rules")
            .len(),
        2
    );
    // Moving the service to another policy frees it.
    let other = store
        .create_policy(acc, "other", 1, &actor, NOW)
        .await
        .expect("policy");
    store
        .update_service(
            acc,
            &w.service.id,
            &service_input("web", &other.id),
            &json!({}),
            &actor,
            NOW,
        )
        .await
        .expect("update_service");
    store
        .delete_policy(acc, &w.policy.id, &actor, NOW)
        .await
        .expect("delete_policy");
    assert_conflict(store.delete_policy(acc, &other.id, &actor, NOW).await);
    store
        .delete_service(acc, &w.service.id, &actor, NOW)
        .await
        .expect("delete_service");
    store
        .delete_policy(acc, &other.id, &actor, NOW)
        .await
        .expect("delete_policy");
}
