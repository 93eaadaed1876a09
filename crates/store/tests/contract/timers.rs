//! Durable timers: escalation, acknowledge timeout, auto-resolve, and
//! exactly-once firing under concurrency.

use super::*;

async fn timers_of(store: &dyn Store, w: &World, id: &str) -> Vec<(String, Millis)> {
    store
        .list_timers(&w.t.account, id)
        .await
        .expect("list_timers")
        .into_iter()
        .map(|t| (t.kind, t.due_at))
        .collect()
}

/// Fires everything due at `now`, in batches, until nothing is left. A
/// batch may skip a timer whose incident another transaction still holds
/// (on PostgreSQL the engine never waits for a lock), so keep going while
/// anything due remains.
async fn fire_all(store: &dyn Store, now: Millis) -> Vec<klaxon_store::FiredTimer> {
    let mut all = Vec::new();
    for _ in 0..1000 {
        let fired = store
            .fire_due_timers(now, 100)
            .await
            .expect("fire_due_timers");
        if fired.is_empty() {
            let next = store.next_timer_due().await.expect("next_timer_due");
            if next.is_none_or(|due| due > now) {
                return all;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        all.extend(fired);
    }
    panic!("timers due at {now} never drained");
}

pub(crate) async fn timers_walk_the_policy_and_stop_at_the_loop_limit(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let i = w.trigger(store, "down", None, NOW).await;
    assert_eq!(
        timers_of(store, &w, &i.id).await,
        [("escalate".to_owned(), NOW + 30 * MINUTE)]
    );
    assert_eq!(
        store.next_timer_due().await.expect("next"),
        Some(NOW + 30 * MINUTE)
    );
    assert!(
        fire_all(store, NOW + 30 * MINUTE - 1).await.is_empty(),
        "nothing before its delay"
    );
    // rule 2 (loop 1), rule 1 (loop 2), rule 2 (loop 2): three escalations.
    let expected = [(1usize, 1i64), (0, 2), (1, 2)];
    for (n, (rule, loop_count)) in expected.into_iter().enumerate() {
        let at = NOW + (n as Millis + 1) * 30 * MINUTE;
        let fired = fire_all(store, at).await;
        assert_eq!(fired.len(), 1);
        assert!(fired[0].acted);
        assert_eq!((fired[0].due_at, fired[0].fired_at), (at, at));
        let now = store.get_incident(&w.t.account, &i.id).await.expect("get");
        assert_eq!(
            now.current_policy_rule_id.as_deref(),
            Some(w.rules[rule].id.as_str())
        );
        assert_eq!(now.current_user_id.as_deref(), Some(w.users[rule].as_str()));
        assert_eq!(now.escalation_loop_count, loop_count);
        assert_eq!(now.state, "triggered");
    }
    assert!(
        timers_of(store, &w, &i.id).await.is_empty(),
        "the walk is over"
    );
    assert_eq!(store.next_timer_due().await.expect("next"), None);
    let events = events_of(store, &w.t.account, "incident", &i.id).await;
    let escalations: Vec<&Event> = events
        .iter()
        .filter(|e| e.action == "incident.escalate")
        .collect();
    assert_eq!(escalations.len(), 3);
    assert!(escalations
        .iter()
        .all(|e| e.actor_type == "system" && e.actor_id.is_none()));
}

pub(crate) async fn acknowledge_cancels_and_ack_timeout_retriggers(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let i = w.trigger(store, "down", None, NOW).await;
    w.act(store, &i.id, IncidentAction::Acknowledge, NOW + MINUTE)
        .await;
    // The service's acknowledge timeout is 30 minutes.
    assert_eq!(
        timers_of(store, &w, &i.id).await,
        [("acknowledge_timeout".to_owned(), NOW + 31 * MINUTE)]
    );
    assert!(
        fire_all(store, NOW + 30 * MINUTE).await.is_empty(),
        "the escalation was cancelled"
    );
    let fired = fire_all(store, NOW + 31 * MINUTE).await;
    assert_eq!(fired.len(), 1);
    let again = store.get_incident(&w.t.account, &i.id).await.expect("get");
    assert_eq!(again.state, "triggered");
    assert_eq!(again.acknowledged_at, None);
    assert_eq!(
        again.current_policy_rule_id.as_deref(),
        Some(w.rules[0].id.as_str()),
        "same rule"
    );
    assert_eq!(
        timers_of(store, &w, &i.id).await,
        [("escalate".to_owned(), NOW + 61 * MINUTE)],
        "paging starts again for the current rule"
    );
    let events = events_of(store, &w.t.account, "incident", &i.id).await;
    assert_eq!(events[0].action, "incident.trigger");
    assert_eq!(events[0].actor_type, "system");
}

pub(crate) async fn manual_escalation_rearms_and_resolve_cancels(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let mut input = service_input("web", &w.policy.id);
    input.auto_resolve_timeout = Some(240);
    store
        .update_service(
            &w.t.account,
            &w.service.id,
            &input,
            &json!({}),
            &w.t.actor(),
            NOW,
        )
        .await
        .expect("update_service");
    let i = w.trigger(store, "down", None, NOW).await;
    let mut timers = timers_of(store, &w, &i.id).await;
    timers.sort();
    assert_eq!(
        timers,
        [
            ("auto_resolve".to_owned(), NOW + 240 * MINUTE),
            ("escalate".to_owned(), NOW + 30 * MINUTE)
        ]
    );
    w.act(store, &i.id, IncidentAction::Escalate, NOW + 5 * MINUTE)
        .await;
    let mut timers = timers_of(store, &w, &i.id).await;
    timers.sort();
    assert_eq!(
        timers,
        [
            ("auto_resolve".to_owned(), NOW + 240 * MINUTE),
            ("escalate".to_owned(), NOW + 35 * MINUTE)
        ],
        "the new rule's clock starts at the manual escalation"
    );
    w.act(store, &i.id, IncidentAction::Resolve, NOW + 6 * MINUTE)
        .await;
    assert!(timers_of(store, &w, &i.id).await.is_empty());
    // Another incident is resolved by the system after four hours.
    let j = w.trigger(store, "flapping", None, NOW).await;
    w.act(store, &j.id, IncidentAction::Acknowledge, NOW + MINUTE)
        .await;
    store
        .act_on_incident(
            &w.t.account,
            &j.id,
            IncidentAction::Acknowledge,
            &w.t.actor(),
            NOW + 2 * MINUTE,
        )
        .await
        .expect("repeat");
    // Keep it acknowledged past its acknowledge timeout with repeated acks? No:
    // let the ack timeout re-trigger it, then auto-resolve wins at 240 min.
    let fired = fire_all(store, NOW + 240 * MINUTE).await;
    assert!(fired.iter().any(|f| f.kind == "auto_resolve" && f.acted));
    let j = store.get_incident(&w.t.account, &j.id).await.expect("get");
    assert_eq!(j.state, "resolved");
    assert!(timers_of(store, &w, &j.id).await.is_empty());
    let events = events_of(store, &w.t.account, "incident", &j.id).await;
    assert_eq!(events[0].action, "incident.resolve");
    assert_eq!(events[0].actor_type, "system");
}

pub(crate) async fn concurrent_engines_fire_each_timer_once(store: Arc<dyn Store>) {
    let w = world(&*store, "acme").await;
    let mut ids = Vec::new();
    for n in 0..120 {
        ids.push(
            w.trigger(&*store, &format!("incident {n}"), None, NOW + n)
                .await
                .id,
        );
    }
    let at = NOW + 30 * MINUTE + 200;
    let mut engines = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        engines.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..1000 {
                let fired = store.fire_due_timers(at, 7).await.expect("fire");
                if fired.is_empty()
                    && store
                        .next_timer_due()
                        .await
                        .expect("next")
                        .is_none_or(|d| d > at)
                {
                    break;
                }
                mine.extend(fired.into_iter().map(|f| f.incident_id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for e in engines {
        all.extend(e.await.expect("engine task"));
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 120, "every due timer fired exactly once");
    assert_eq!(unique.len(), 120);
    for id in &ids {
        let events = events_of(&*store, &w.t.account, "incident", id).await;
        let escalations = events
            .iter()
            .filter(|e| e.action == "incident.escalate")
            .count();
        assert_eq!(escalations, 1, "incident {id}");
        let timers = timers_of(&*store, &w, id).await;
        assert_eq!(timers.len(), 1, "the next escalation is armed once");
    }
}

pub(crate) async fn actions_race_with_the_engine(store: Arc<dyn Store>) {
    // Requests acknowledging incidents while engines fire their timers:
    // every incident ends acknowledged or escalated-then-acknowledged, never
    // with an escalation timer left behind, and nothing errors.
    let w = Arc::new(world(&*store, "acme").await);
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(
            w.trigger(&*store, &format!("incident {n}"), None, NOW)
                .await
                .id,
        );
    }
    let at = NOW + 30 * MINUTE;
    let engine = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                store.fire_due_timers(at, 5).await.expect("fire");
            }
        })
    };
    let mut acks = Vec::new();
    for id in ids.clone() {
        let (store, w) = (store.clone(), w.clone());
        acks.push(tokio::spawn(async move {
            store
                .act_on_incident(
                    &w.t.account,
                    &id,
                    IncidentAction::Acknowledge,
                    &w.t.actor(),
                    at,
                )
                .await
                .expect("acknowledge");
        }));
    }
    for a in acks {
        a.await.expect("ack task");
    }
    engine.await.expect("engine");
    for id in &ids {
        let i = store.get_incident(&w.t.account, id).await.expect("get");
        assert_eq!(i.state, "acknowledged");
        let kinds: Vec<String> = timers_of(&*store, &w, id)
            .await
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(kinds, ["acknowledge_timeout"], "incident {id}");
    }
}
