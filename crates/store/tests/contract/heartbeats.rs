//! Heartbeats: their rows, pings, and expiry firing once through the
//! trigger path; and the audit log read as a feed.

use klaxon_store::{FiredHeartbeat, Heartbeat, HeartbeatInput, HeartbeatOutcome};

use super::*;

fn beat(name: &str, interval_minutes: i64) -> HeartbeatInput {
    HeartbeatInput {
        name: name.into(),
        interval_minutes,
    }
}

async fn create(
    store: &dyn Store,
    w: &World,
    name: &str,
    interval: i64,
    token: &str,
    now: Millis,
) -> Heartbeat {
    store
        .create_heartbeat(
            &w.t.account,
            &w.service.id,
            &beat(name, interval),
            token,
            &w.t.actor(),
            now,
        )
        .await
        .expect("create_heartbeat")
}

async fn get(store: &dyn Store, w: &World, id: &str) -> Heartbeat {
    store
        .get_heartbeat(&w.t.account, &w.service.id, id)
        .await
        .expect("get_heartbeat")
}

async fn fire(store: &dyn Store, now: Millis) -> Vec<FiredHeartbeat> {
    store
        .fire_due_heartbeats(now, 50)
        .await
        .expect("fire_due_heartbeats")
}

/// `(heartbeat, outcome)` of what fired.
fn outcomes(fired: &[FiredHeartbeat]) -> Vec<(String, HeartbeatOutcome)> {
    fired
        .iter()
        .map(|f| (f.heartbeat_id.clone(), f.outcome.clone()))
        .collect()
}

pub(crate) async fn heartbeat_crud(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, sid, actor) = (w.t.account.as_str(), w.service.id.as_str(), w.t.actor());
    let h = create(store, &w, "nightly backup", 60, "token-backup", NOW).await;
    assert_eq!(
        (h.name.as_str(), h.interval_minutes, h.token.as_str()),
        ("nightly backup", 60, "token-backup")
    );
    assert_eq!((h.service_id.as_str(), h.account_id.as_str()), (sid, acc));
    assert_eq!((h.state.as_str(), h.last_ping_at), ("up", None));
    assert_eq!(
        (h.due_at, h.expires_at()),
        (NOW + 60 * MINUTE, NOW + 60 * MINUTE)
    );
    assert_eq!((h.created_at, h.updated_at), (NOW, NOW));
    assert_eq!(
        store.next_heartbeat_due().await.expect("next"),
        Some(NOW + 60 * MINUTE)
    );

    // Names are unique per service.
    assert_taken(
        store
            .create_heartbeat(acc, sid, &beat("nightly backup", 5), "t2", &actor, NOW)
            .await,
        "name",
    );
    let other_service = store
        .create_service(acc, &service_input("db", &w.policy.id), "k-db", &actor, NOW)
        .await
        .expect("create_service");
    store
        .create_heartbeat(
            acc,
            &other_service.id,
            &beat("nightly backup", 5),
            "t3",
            &actor,
            NOW,
        )
        .await
        .expect("the same name on another service");
    let cron = create(store, &w, "cron", 5, "token-cron", NOW).await;
    let names: Vec<String> = store
        .list_heartbeats(acc, sid)
        .await
        .expect("list")
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["cron", "nightly backup"], "by name");
    assert_not_found(
        store.list_heartbeats(acc, "nosuch00").await,
        "list of an unknown service",
    );
    assert_not_found(
        store
            .create_heartbeat(acc, "nosuch00", &beat("x", 5), "t4", &actor, NOW)
            .await,
        "create on an unknown service",
    );
    assert_not_found(
        store.get_heartbeat(acc, &other_service.id, &h.id).await,
        "a heartbeat under another service",
    );

    // A longer interval moves the expiry from the creation (no ping yet).
    let later = NOW + 3 * MINUTE;
    let changes = json!({"interval": [60, 90]});
    let updated = store
        .update_heartbeat(
            acc,
            sid,
            &h.id,
            &beat("nightly backup", 90),
            &changes,
            &actor,
            later,
        )
        .await
        .expect("update");
    assert_eq!(updated.interval_minutes, 90);
    assert_eq!(updated.due_at, NOW + 90 * MINUTE);
    assert_eq!(updated.updated_at, later);
    assert_taken(
        store
            .update_heartbeat(acc, sid, &h.id, &beat("cron", 90), &changes, &actor, later)
            .await,
        "name",
    );
    assert_not_found(
        store
            .update_heartbeat(acc, sid, "nosuch00", &beat("x", 5), &changes, &actor, later)
            .await,
        "update of an unknown heartbeat",
    );

    store
        .delete_heartbeat(acc, sid, &cron.id, &actor, later)
        .await
        .expect("delete");
    assert_not_found(store.get_heartbeat(acc, sid, &cron.id).await, "deleted");
    assert_not_found(
        store
            .delete_heartbeat(acc, sid, &cron.id, &actor, later)
            .await,
        "deleted twice",
    );
    let events = events_of(store, acc, "heartbeat", &h.id).await;
    assert_eq!(actions(&events), ["heartbeat.update", "heartbeat.create"]);
    assert_eq!(events[0].changeset.0, changes);
    assert_eq!(
        events[1].changeset.0,
        json!({"service_id": sid, "name": "nightly backup", "interval": 60})
    );
    assert!(
        !events[1].changeset.0.to_string().contains("token-backup"),
        "the token stays out of the audit log"
    );
    let events = events_of(store, acc, "heartbeat", &cron.id).await;
    assert_eq!(actions(&events), ["heartbeat.delete", "heartbeat.create"]);

    // Deleting the service takes its heartbeats along.
    store
        .delete_service(acc, &other_service.id, &actor, later)
        .await
        .expect("delete service");
    assert_eq!(
        store
            .ping_heartbeat("t3", later)
            .await
            .expect("ping")
            .map(|p| p.heartbeat_id),
        None
    );
}

pub(crate) async fn heartbeat_tenant_isolation(store: Arc<dyn Store>) {
    let store = &*store;
    let a = world(store, "acme").await;
    let b = world(store, "other").await;
    let h = create(store, &a, "cron", 5, "token-a", NOW).await;
    let (acc_b, actor_b) = (b.t.account.as_str(), b.t.actor());
    // B names A's service and heartbeat: as if they did not exist.
    assert_not_found(store.list_heartbeats(acc_b, &a.service.id).await, "list");
    assert_not_found(
        store.get_heartbeat(acc_b, &a.service.id, &h.id).await,
        "get",
    );
    assert_not_found(
        store.get_heartbeat(acc_b, &b.service.id, &h.id).await,
        "get under B's service",
    );
    assert_not_found(
        store
            .create_heartbeat(acc_b, &a.service.id, &beat("x", 5), "t-b", &actor_b, NOW)
            .await,
        "create",
    );
    assert_not_found(
        store
            .update_heartbeat(
                acc_b,
                &a.service.id,
                &h.id,
                &beat("mine", 5),
                &json!({}),
                &actor_b,
                NOW,
            )
            .await,
        "update",
    );
    assert_not_found(
        store
            .delete_heartbeat(acc_b, &b.service.id, &h.id, &actor_b, NOW)
            .await,
        "delete",
    );
    assert!(store
        .list_heartbeats(acc_b, &b.service.id)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(get(store, &a, &h.id).await.name, "cron");
    // Its expiry opens the incident on its own service, in its own account.
    let fired = fire(store, NOW + 5 * MINUTE).await;
    let [f] = fired.as_slice() else {
        panic!("one heartbeat fired: {fired:?}");
    };
    assert_eq!(f.account_id, a.t.account);
    let (incidents, _) = store
        .list_incidents(acc_b, &page(100, 0))
        .await
        .expect("list");
    assert!(incidents.is_empty(), "nothing in B");
}

pub(crate) async fn heartbeat_expiry_fires_once_and_a_ping_resolves(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let acc = w.t.account.as_str();
    let h = create(store, &w, "backup", 5, "token-backup", NOW).await;
    let due = NOW + 5 * MINUTE;
    assert!(fire(store, due - 1).await.is_empty(), "not a ms early");

    let fired = fire(store, due).await;
    let [f] = fired.as_slice() else {
        panic!("one heartbeat fired: {fired:?}");
    };
    let HeartbeatOutcome::Opened(incident_id) = f.outcome.clone() else {
        panic!("an incident was opened: {f:?}");
    };
    assert_eq!(
        (f.heartbeat_id.as_str(), f.due_at, f.fired_at),
        (h.id.as_str(), due, due)
    );
    assert!(fire(store, due).await.is_empty(), "and only once");
    let incident = store.get_incident(acc, &incident_id).await.expect("get");
    assert_eq!(incident.message, "Heartbeat 'backup' expired");
    assert_eq!(incident.key, format!("heartbeat:{}", h.id));
    assert_eq!(incident.state, "triggered");
    assert_eq!(incident.service_id, w.service.id);
    // Assigned and escalating like any trigger.
    assert_eq!(
        incident.current_user_id.as_deref(),
        Some(w.users[0].as_str())
    );
    assert_eq!(
        store.next_timer_due().await.expect("next"),
        Some(due + 30 * MINUTE)
    );
    let down = get(store, &w, &h.id).await;
    assert_eq!(down.state, "down");
    assert_eq!(
        down.due_at,
        due + 5 * MINUTE,
        "looked at again an interval on"
    );
    let events = events_of(store, acc, "heartbeat", &h.id).await;
    assert_eq!(actions(&events), ["heartbeat.expire", "heartbeat.create"]);
    assert_eq!(events[0].actor_type, "system");

    // Another interval of silence: still the one incident.
    let fired = fire(store, due + 5 * MINUTE).await;
    assert_eq!(
        outcomes(&fired),
        [(
            h.id.clone(),
            HeartbeatOutcome::AlreadyOpen(incident_id.clone())
        )]
    );
    let (open, total) = store
        .list_incidents(acc, &page(100, 0))
        .await
        .expect("list");
    assert_eq!((open.len(), total), (1, 1));
    assert_eq!(
        actions(&events_of(store, acc, "heartbeat", &h.id).await),
        ["heartbeat.expire", "heartbeat.create"],
        "a repeat writes nothing"
    );

    // The ping resolves it, with the service as actor, and re-arms.
    let ping_at = due + 7 * MINUTE;
    let pinged = store
        .ping_heartbeat("token-backup", ping_at)
        .await
        .expect("ping")
        .expect("a known token");
    assert_eq!(pinged.heartbeat_id, h.id);
    assert_eq!(pinged.expires_at, ping_at + 5 * MINUTE);
    assert_eq!(pinged.resolved.as_deref(), Some(incident_id.as_str()));
    let resolved = store.get_incident(acc, &incident_id).await.expect("get");
    assert_eq!(resolved.state, "resolved");
    let trail = events_of(store, acc, "incident", &incident_id).await;
    assert_eq!(actions(&trail), ["incident.resolve", "incident.create"]);
    assert_eq!(
        (trail[0].actor_type.as_str(), trail[0].actor_id.as_deref()),
        ("service", Some(w.service.id.as_str()))
    );
    let up = get(store, &w, &h.id).await;
    assert_eq!((up.state.as_str(), up.last_ping_at), ("up", Some(ping_at)));
    assert_eq!(up.due_at, ping_at + 5 * MINUTE);
    assert_eq!(
        actions(&events_of(store, acc, "heartbeat", &h.id).await),
        ["heartbeat.recover", "heartbeat.expire", "heartbeat.create"]
    );
    // A second ping is a plain one.
    let again = store
        .ping_heartbeat("token-backup", ping_at + MINUTE)
        .await
        .expect("ping")
        .expect("known");
    assert_eq!(
        (again.resolved, again.expires_at),
        (None, ping_at + 6 * MINUTE)
    );
    assert!(fire(store, ping_at + 6 * MINUTE - 1).await.is_empty());

    // Silence again: a new incident.
    let fired = fire(store, ping_at + 6 * MINUTE).await;
    let [f] = fired.as_slice() else {
        panic!("one heartbeat fired: {fired:?}");
    };
    let HeartbeatOutcome::Opened(second) = &f.outcome else {
        panic!("a new incident: {f:?}");
    };
    assert_ne!(second, &incident_id);
    assert_eq!(
        store
            .ping_heartbeat("no-such-token", ping_at)
            .await
            .expect("ping")
            .map(|p| p.heartbeat_id),
        None
    );
}

pub(crate) async fn heartbeat_pings_move_the_expiry(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let h = create(store, &w, "cron", 10, "token-cron", NOW).await;
    for n in 1..=5 {
        let at = NOW + n * 8 * MINUTE;
        assert!(fire(store, at).await.is_empty(), "pinged in time ({n})");
        let p = store
            .ping_heartbeat("token-cron", at)
            .await
            .expect("ping")
            .expect("known");
        assert_eq!(p.expires_at, at + 10 * MINUTE);
    }
    let last = NOW + 40 * MINUTE;
    assert_eq!(
        store.next_heartbeat_due().await.expect("next"),
        Some(last + 10 * MINUTE)
    );
    assert!(fire(store, last + 10 * MINUTE - 1).await.is_empty());
    assert_eq!(fire(store, last + 10 * MINUTE).await.len(), 1);
    // Pings write no audit events, only the expiry does.
    assert_eq!(
        actions(&events_of(store, &w.t.account, "heartbeat", &h.id).await),
        ["heartbeat.expire", "heartbeat.create"]
    );

    // A shorter interval on an up heartbeat counts from its last ping.
    let g = create(store, &w, "fast", 60, "token-fast", NOW).await;
    store
        .ping_heartbeat("token-fast", NOW + MINUTE)
        .await
        .expect("ping")
        .expect("known");
    let shorter = store
        .update_heartbeat(
            &w.t.account,
            &w.service.id,
            &g.id,
            &beat("fast", 2),
            &json!({"interval": [60, 2]}),
            &w.t.actor(),
            NOW + MINUTE,
        )
        .await
        .expect("update");
    assert_eq!(shorter.due_at, NOW + 3 * MINUTE);
    let fired = fire(store, NOW + 3 * MINUTE).await;
    assert_eq!(
        fired
            .iter()
            .map(|f| f.heartbeat_id.as_str())
            .collect::<Vec<_>>(),
        [g.id.as_str()]
    );
}

pub(crate) async fn deleted_heartbeat_never_fires(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let h = create(store, &w, "cron", 5, "token-cron", NOW).await;
    store
        .delete_heartbeat(
            &w.t.account,
            &w.service.id,
            &h.id,
            &w.t.actor(),
            NOW + MINUTE,
        )
        .await
        .expect("delete");
    assert_eq!(store.next_heartbeat_due().await.expect("next"), None);
    assert!(fire(store, NOW + 60 * MINUTE).await.is_empty());
    let (incidents, _) = store
        .list_incidents(&w.t.account, &page(100, 0))
        .await
        .expect("list");
    assert!(incidents.is_empty());
}

pub(crate) async fn heartbeat_on_a_disabled_service_retries_each_interval(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let acc = w.t.account.as_str();
    let h = create(store, &w, "cron", 5, "token-cron", NOW).await;
    store
        .set_service_state(acc, &w.service.id, "disabled", &w.t.actor(), NOW)
        .await
        .expect("disable");
    let due = NOW + 5 * MINUTE;
    let fired = fire(store, due).await;
    assert!(
        matches!(fired.as_slice(), [f] if matches!(f.outcome, HeartbeatOutcome::Refused(_))),
        "{fired:?}"
    );
    let (incidents, _) = store
        .list_incidents(acc, &page(100, 0))
        .await
        .expect("list");
    assert!(incidents.is_empty(), "a disabled service pages nobody");
    assert_eq!(get(store, &w, &h.id).await.due_at, due + 5 * MINUTE);
    assert_eq!(
        actions(&events_of(store, acc, "heartbeat", &h.id).await),
        [
            "heartbeat.not_paged",
            "heartbeat.expire",
            "heartbeat.create"
        ]
    );
    // Still disabled an interval later: refused again, recorded once.
    let fired = fire(store, due + 5 * MINUTE).await;
    assert!(matches!(fired[0].outcome, HeartbeatOutcome::Refused(_)));
    assert_eq!(events_of(store, acc, "heartbeat", &h.id).await.len(), 3);
    store
        .set_service_state(
            acc,
            &w.service.id,
            "enabled",
            &w.t.actor(),
            due + 6 * MINUTE,
        )
        .await
        .expect("enable");
    assert!(fire(store, due + 10 * MINUTE - 1).await.is_empty());
    let fired = fire(store, due + 10 * MINUTE).await;
    assert!(
        matches!(fired.as_slice(), [f] if matches!(f.outcome, HeartbeatOutcome::Opened(_))),
        "{fired:?}"
    );
}

pub(crate) async fn concurrent_engines_fire_each_heartbeat_once(store: Arc<dyn Store>) {
    let w = world(&*store, "acme").await;
    let mut ids = Vec::new();
    for n in 0..24 {
        let h = create(
            &*store,
            &w,
            &format!("job {n}"),
            5,
            &format!("token-{n}"),
            NOW + n,
        )
        .await;
        ids.push(h.id);
    }
    let at = NOW + 6 * MINUTE;
    let mut engines = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        engines.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let fired = store.fire_due_heartbeats(at, 3).await.expect("fire");
                if fired.is_empty() {
                    break;
                }
                mine.extend(fired);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for e in engines {
        all.extend(e.await.expect("engine task"));
    }
    let mut fired: Vec<String> = all.iter().map(|f| f.heartbeat_id.clone()).collect();
    fired.sort();
    ids.sort();
    assert_eq!(fired, ids, "each heartbeat fired exactly once");
    assert!(all
        .iter()
        .all(|f| matches!(f.outcome, HeartbeatOutcome::Opened(_))));
    let (_, total) = store
        .list_incidents(&w.t.account, &page(1, 0))
        .await
        .expect("list");
    assert_eq!(total, 24, "one incident each");
}

pub(crate) async fn event_feed_reads_an_account_in_order(store: Arc<dyn Store>) {
    let store = &*store;
    let start = store.latest_event_seq().await.expect("latest");
    let a = world(store, "acme").await;
    let b = world(store, "other").await;
    let latest = store.latest_event_seq().await.expect("latest");
    assert!(latest > start);
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(a.trigger(store, &format!("a{n}"), None, NOW + n).await.id);
        b.trigger(store, &format!("b{n}"), None, NOW + n).await;
    }
    // Read in small pages from where the log stood: A's five events, in
    // order, with increasing numbers, and none of B's.
    let mut after = latest;
    let mut seen = Vec::new();
    for _ in 0..100 {
        let feed = store
            .event_feed(&a.t.account, after, 0, 3)
            .await
            .expect("feed");
        assert!(feed.hole.is_none(), "nothing is in flight: {feed:?}");
        assert!(feed.through >= after);
        assert!(feed
            .events
            .iter()
            .all(|e| e.seq > after && e.seq <= feed.through));
        seen.extend(feed.events);
        if !feed.more && feed.through == after {
            break;
        }
        after = feed.through;
    }
    let sources: Vec<&str> = seen.iter().map(|e| e.event.source_id.as_str()).collect();
    assert_eq!(
        sources,
        created.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(seen.iter().all(|e| e.event.action == "incident.create"));
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    // The same events as the listing, by id, and resuming after one.
    let (listed, _) = store
        .list_events(
            &a.t.account,
            &EventFilter {
                source: None,
                limit: 5,
                offset: 0,
            },
        )
        .await
        .expect("list");
    let mut listed: Vec<&str> = listed.iter().map(|e| e.id.as_str()).collect();
    listed.reverse();
    let ids: Vec<&str> = seen.iter().map(|e| e.event.id.as_str()).collect();
    assert_eq!(ids, listed);
    let resumed = store
        .event_feed(&a.t.account, seen[2].seq, 0, 100)
        .await
        .expect("feed");
    let rest: Vec<&str> = resumed.events.iter().map(|e| e.event.id.as_str()).collect();
    assert_eq!(rest, ids[3..]);
    assert!(store.latest_event_seq().await.expect("latest") >= seen[4].seq);
    // Another account reading from the same place sees only its own.
    let theirs = store
        .event_feed(&b.t.account, latest, 0, 100)
        .await
        .expect("feed");
    assert_eq!(theirs.events.len(), 5);
    assert!(theirs
        .events
        .iter()
        .all(|e| !created.contains(&e.event.source_id)));
}
