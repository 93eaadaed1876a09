//! Races: what must hold when requests run in parallel, on any number of connections.

use super::*;

const RACERS: usize = 50;

/// Runs `RACERS` triggers at once (released together by a barrier) and
/// returns their outcomes.
pub(crate) async fn race_triggers(
    store: &Arc<dyn Store>,
    w: &World,
    make: impl Fn(usize) -> NewIncident,
    dedup: bool,
) -> Vec<Result<TriggerOutcome>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..RACERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        let (account, service) = (w.t.account.clone(), w.service.id.clone());
        let new = make(n);
        tasks.spawn(async move {
            barrier.wait().await;
            let actor = Actor::Service(service.clone());
            store
                .trigger_incident(&account, &service, &new, dedup, &actor, NOW + n as Millis)
                .await
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        out.push(joined.expect("task"));
    }
    out
}

/// Exactly one trigger opened an incident; every other deduplicated into it.
pub(crate) fn assert_one_created_among(outcomes: Vec<Result<TriggerOutcome>>) -> String {
    let (mut created, mut dedup) = (Vec::new(), Vec::new());
    for outcome in outcomes {
        match outcome.expect("trigger_incident") {
            TriggerOutcome::Created(i) => created.push(i.id),
            TriggerOutcome::Deduplicated(id) => dedup.push(id),
        }
    }
    assert_eq!((created.len(), dedup.len()), (1, RACERS - 1));
    assert!(dedup.iter().all(|id| *id == created[0]));
    created.remove(0)
}

pub(crate) async fn assert_one_created(
    store: &dyn Store,
    w: &World,
    outcomes: Vec<Result<TriggerOutcome>>,
) {
    let created = assert_one_created_among(outcomes);
    let (rows, total) = store
        .list_incidents(&w.t.account, &page(100, 0))
        .await
        .expect("list");
    assert_eq!((ids(&rows), total), (vec![created.as_str()], 1));
    let creates = events_of(store, &w.t.account, "incident", &created).await;
    assert_eq!(actions(&creates), ["incident.create"]);
    let svc = store
        .get_service(&w.t.account, &w.service.id)
        .await
        .expect("service");
    assert_eq!(svc.triggered_count, 1);
}

pub(crate) async fn concurrent_triggers_with_one_key(store: Arc<dyn Store>) {
    let w = world(&*store, "acme").await;
    let outcomes = race_triggers(
        &store,
        &w,
        |n| new_incident(&format!("disk full #{n}"), Some("disk")),
        true,
    )
    .await;
    assert_one_created(&*store, &w, outcomes).await;
}

pub(crate) async fn concurrent_triggers_with_one_message(store: Arc<dyn Store>) {
    let w = world(&*store, "acme").await;
    let outcomes = race_triggers(&store, &w, |_| new_incident("ping failed", None), true).await;
    assert_one_created(&*store, &w, outcomes).await;
}

pub(crate) async fn concurrent_triggers_without_dedup(store: Arc<dyn Store>) {
    let w = world(&*store, "acme").await;
    let outcomes = race_triggers(
        &store,
        &w,
        |_| new_incident("disk full", Some("disk")),
        false,
    )
    .await;
    let (mut created, mut taken) = (0, 0);
    for outcome in outcomes {
        match outcome {
            Ok(TriggerOutcome::Created(_)) => created += 1,
            Err(StoreError::Taken("key")) => taken += 1,
            other => panic!("expected Created or Taken(\"key\"), got {other:?}"),
        }
    }
    assert_eq!((created, taken), (1, RACERS - 1));
    assert_eq!(
        store
            .list_incidents(&w.t.account, &page(100, 0))
            .await
            .expect("list")
            .1,
        1
    );
}

pub(crate) async fn concurrent_acknowledges(store: Arc<dyn Store>) {
    let w = world(&*store, "acme").await;
    let i = w.trigger(&*store, "down", None, NOW).await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (store, account, id) = (store.clone(), w.t.account.clone(), i.id.clone());
        let action = if n % 2 == 0 {
            IncidentAction::Acknowledge
        } else {
            IncidentAction::Escalate
        };
        tasks.spawn(async move {
            store
                .act_on_incident(&account, &id, action, &Actor::System, NOW + 1)
                .await
                .map(|o| (action, o))
        });
    }
    let (mut acks, mut escalations) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task").expect("act_on_incident") {
            (IncidentAction::Acknowledge, ActOutcome::Changed(_)) => acks += 1,
            (IncidentAction::Escalate, ActOutcome::Changed(_)) => escalations += 1,
            (IncidentAction::Acknowledge, ActOutcome::Unchanged(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(escalations, 10, "every escalation moves on");
    // Each escalation re-triggers, so acknowledges change it at most once per escalation (+1).
    assert!((1..=11).contains(&acks), "acks = {acks}");
    let events = events_of(&*store, &w.t.account, "incident", &i.id).await;
    assert_eq!(events.len(), 1 + acks + escalations, "one event per change");
    // Ten escalations over two rules starting at rule 1: 5 wraps.
    let end = store.get_incident(&w.t.account, &i.id).await.expect("get");
    assert_eq!(
        (
            end.current_policy_rule_id.as_deref(),
            end.escalation_loop_count
        ),
        (Some(w.rules[0].id.as_str()), 6)
    );
}

pub(crate) async fn concurrent_admin_demotions(store: Arc<dyn Store>) {
    let t = tenant(&*store, "acme").await;
    let mut admins = vec![t.admin.clone()];
    for n in 0..3 {
        let input = user_input(&format!("admin {n}"), &format!("admin{n}@x.test"), "admin");
        admins.push(
            store
                .create_user(&t.account, &input, &t.actor(), NOW)
                .await
                .expect("admin")
                .id,
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (n, id) in admins.iter().enumerate() {
        let (store, account, id) = (store.clone(), t.account.clone(), id.clone());
        tasks.spawn(async move {
            let user = store.get_user(&account, &id).await?;
            if n % 2 == 0 {
                let input = user_input(&user.name, &user.email, "observer");
                store
                    .update_user(
                        &account,
                        &id,
                        &input,
                        &json!({}),
                        Revoke::Nothing,
                        &Actor::System,
                        NOW,
                    )
                    .await
                    .map(|_| ())
            } else {
                store.delete_user(&account, &id, &Actor::System, NOW).await
            }
        });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(_)) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, refused), (3, 1));
    let users = store.list_users(&t.account).await.expect("list_users");
    assert_eq!(users.iter().filter(|u| u.role == "admin").count(), 1);
}

pub(crate) async fn concurrent_rule_appends(store: Arc<dyn Store>) {
    let w = world(&*store, "acme").await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (store, account, policy) = (store.clone(), w.t.account.clone(), w.policy.id.clone());
        let user = w.users[n % 2].clone();
        tasks.spawn(async move {
            store
                .create_rule(&account, &policy, &rule_input(&user), &Actor::System, NOW)
                .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task").expect("create_rule");
    }
    let rules = store
        .list_rules(&w.t.account, &w.policy.id)
        .await
        .expect("list_rules");
    assert_eq!(
        rules.iter().map(|r| r.position).collect::<Vec<_>>(),
        (0..22).collect::<Vec<i64>>()
    );
    // Deletes and appends at once keep positions dense.
    let mut tasks = tokio::task::JoinSet::new();
    for (n, rule) in rules.iter().take(10).enumerate() {
        let (store, account, policy, id) = (
            store.clone(),
            w.t.account.clone(),
            w.policy.id.clone(),
            rule.id.clone(),
        );
        let user = w.users[n % 2].clone();
        tasks.spawn(async move {
            store
                .delete_rule(&account, &policy, &id, &Actor::System, NOW)
                .await?;
            store
                .create_rule(&account, &policy, &rule_input(&user), &Actor::System, NOW)
                .await
                .map(|_| ())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task").expect("delete then create");
    }
    let rules = store
        .list_rules(&w.t.account, &w.policy.id)
        .await
        .expect("list_rules");
    assert_eq!(
        rules.iter().map(|r| r.position).collect::<Vec<_>>(),
        (0..22).collect::<Vec<i64>>()
    );
}
