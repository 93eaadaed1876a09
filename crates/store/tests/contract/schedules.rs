//! On-call schedules: CRUD, layers, overrides, tenant isolation, who is on
//! call, and incidents assigned (and escalated) through a schedule.

use klaxon_store::{LayerInput, RestrictionSpec, Schedule};

use super::*;

const ZONE: &str = "Europe/Berlin";

/// The instant of a wall-clock time in Berlin.
fn berlin(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Millis {
    let zone = jiff::tz::TimeZone::get(ZONE).unwrap();
    jiff::civil::date(y, mo, d)
        .at(h, mi, 0, 0)
        .to_zoned(zone)
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn layer(rotation: &str, start_at: &str, users: &[impl AsRef<str>]) -> LayerInput {
    LayerInput {
        rotation: rotation.into(),
        count: 1,
        start_at: start_at.into(),
        users: users.iter().map(|u| u.as_ref().to_owned()).collect(),
        restrictions: Vec::new(),
    }
}

fn schedule_rule(schedule_id: &str) -> RuleInput {
    RuleInput {
        escalation_timeout: 30,
        assignment_type: "schedule".into(),
        assignee_id: schedule_id.into(),
    }
}

async fn new_user(store: &dyn Store, t: &Tenant, name: &str) -> String {
    let input = user_input(name, &format!("{name}@{}.test", t.account), "responder");
    store
        .create_user(&t.account, &input, &t.actor(), NOW)
        .await
        .expect("create_user")
        .id
}

async fn new_schedule(store: &dyn Store, t: &Tenant, name: &str) -> Schedule {
    store
        .create_schedule(&t.account, name, ZONE, &t.actor(), NOW)
        .await
        .expect("create_schedule")
}

/// Who the schedule, as stored now, has on call at `at`.
async fn on_call(
    store: &dyn Store,
    account: &str,
    schedule_id: &str,
    at: Millis,
) -> Option<String> {
    store
        .load_schedule(account, schedule_id, at)
        .await
        .expect("load_schedule")
        .to_core()
        .on_call(at)
        .map(str::to_owned)
}

/// A policy whose rules are `rules`, and a service on it.
async fn service_with(
    store: &dyn Store,
    t: &Tenant,
    name: &str,
    rules: &[RuleInput],
) -> (Service, Vec<PolicyRule>) {
    let policy = store
        .create_policy(&t.account, name, 2, &t.actor(), NOW)
        .await
        .expect("create_policy");
    let mut created = Vec::new();
    for input in rules {
        created.push(
            store
                .create_rule(&t.account, &policy.id, input, &t.actor(), NOW)
                .await
                .expect("create_rule"),
        );
    }
    let service = store
        .create_service(
            &t.account,
            &service_input(name, &policy.id),
            &format!("integration-key-{name}"),
            &t.actor(),
            NOW,
        )
        .await
        .expect("create_service");
    (service, created)
}

pub(crate) async fn schedule_crud(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = tenant(store, "other").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let s = store
        .create_schedule(acc, "Primary", ZONE, &actor, NOW)
        .await
        .expect("create_schedule");
    assert_eq!(
        (s.name.as_str(), s.time_zone.as_str(), s.account_id.as_str()),
        ("Primary", ZONE, acc)
    );
    assert_eq!((s.id.len(), s.created_at, s.updated_at), (8, NOW, NOW));
    assert_taken(
        store
            .create_schedule(acc, "Primary", "UTC", &actor, NOW)
            .await,
        "name",
    );
    // Names are unique per account only.
    store
        .create_schedule(&other.account, "Primary", ZONE, &other.actor(), NOW)
        .await
        .expect("same name, other account");
    let b = new_schedule(store, &w.t, "Backup").await;
    let z = new_schedule(store, &w.t, "zeta").await;
    let names: Vec<String> = store
        .list_schedules(acc)
        .await
        .expect("list_schedules")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["Backup", "Primary", "zeta"], "by name, byte order");

    assert_taken(
        store
            .update_schedule(acc, &b.id, "Primary", ZONE, &json!({}), &actor, NOW)
            .await,
        "name",
    );
    let changes = json!({"name": ["Backup", "Secondary"], "time_zone": [ZONE, "UTC"]});
    let b2 = store
        .update_schedule(acc, &b.id, "Secondary", "UTC", &changes, &actor, NOW + 1)
        .await
        .expect("update_schedule");
    assert_eq!(
        (b2.name.as_str(), b2.time_zone.as_str()),
        ("Secondary", "UTC")
    );
    assert_eq!((b2.created_at, b2.updated_at), (NOW, NOW + 1));
    let got = store.get_schedule(acc, &b.id).await.expect("get_schedule");
    assert_eq!(
        (got.name.as_str(), got.time_zone.as_str(), got.updated_at),
        ("Secondary", "UTC", NOW + 1)
    );

    store
        .delete_schedule(acc, &z.id, &actor, NOW)
        .await
        .expect("delete_schedule");
    assert_not_found(store.get_schedule(acc, &z.id).await, "deleted schedule");
    assert_not_found(
        store.delete_schedule(acc, &z.id, &actor, NOW).await,
        "deleted twice",
    );
    assert_not_found(
        store
            .update_schedule(acc, &z.id, "z", ZONE, &json!({}), &actor, NOW)
            .await,
        "update deleted",
    );
    assert_not_found(store.list_layers(acc, &z.id).await, "layers of deleted");

    // A schedule an escalation rule names cannot be deleted.
    let rule = store
        .create_rule(acc, &w.policy.id, &schedule_rule(&s.id), &actor, NOW)
        .await
        .expect("create_rule assigned to the schedule");
    assert_eq!(
        (rule.assignment_type.as_str(), rule.assignee_id.as_str()),
        ("schedule", s.id.as_str())
    );
    assert_conflict(store.delete_schedule(acc, &s.id, &actor, NOW).await);
    store.get_schedule(acc, &s.id).await.expect("still there");
    // Pointing the rule elsewhere frees it.
    store
        .update_rule(
            acc,
            &w.policy.id,
            &rule.id,
            &rule_input(&w.users[0]),
            &json!({}),
            &actor,
            NOW,
        )
        .await
        .expect("update_rule");
    store
        .delete_schedule(acc, &s.id, &actor, NOW)
        .await
        .expect("delete_schedule once unused");
    assert_not_found(store.get_schedule(acc, &s.id).await, "deleted schedule");
    // A rule cannot name a deleted schedule.
    assert_invalid(
        store
            .create_rule(acc, &w.policy.id, &schedule_rule(&s.id), &actor, NOW)
            .await,
        "assignment",
    );

    let events = events_of(store, acc, "schedule", &b.id).await;
    assert_eq!(actions(&events), ["schedule.update", "schedule.create"]);
    assert_eq!(events[0].changeset.0, changes);
    assert_eq!(
        events[1].changeset.0,
        json!({"name": "Backup", "time_zone": ZONE})
    );
    assert_eq!(
        (events[1].actor_type.as_str(), events[1].actor_id.as_deref()),
        ("user", Some(w.t.admin.as_str()))
    );
    assert_eq!(
        actions(&events_of(store, acc, "schedule", &z.id).await),
        ["schedule.delete", "schedule.create"]
    );
}

pub(crate) async fn layers_positions_and_users(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = tenant(store, "other").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let (a, b) = (w.users[0].as_str(), w.users[1].as_str());
    let s = new_schedule(store, &w.t, "Primary").await;
    assert!(store
        .list_layers(acc, &s.id)
        .await
        .expect("list")
        .is_empty());

    let mut first_input = layer("weekly", "2026-01-05T09:00:00", &[a, b]);
    first_input.count = 2;
    first_input.restrictions = vec![RestrictionSpec {
        days: vec!["mon".into(), "fri".into()],
        start: "09:00".into(),
        end: "17:00".into(),
    }];
    let first = store
        .create_layer(acc, &s.id, &first_input, &actor, NOW)
        .await
        .expect("create_layer");
    assert_eq!(
        (first.position, first.schedule_id.as_str(), first.id.len()),
        (0, s.id.as_str(), 8)
    );
    assert_eq!(
        (
            first.rotation.as_str(),
            first.count,
            first.start_at.as_str()
        ),
        ("weekly", 2, "2026-01-05T09:00:00")
    );
    assert_eq!(first.users.0, [a, b]);
    assert_eq!(first.restrictions.0, first_input.restrictions);
    assert_eq!((first.created_at, first.updated_at), (NOW, NOW));
    let second = store
        .create_layer(
            acc,
            &s.id,
            &layer("daily", "2026-01-01T00:00:00", &[b]),
            &actor,
            NOW,
        )
        .await
        .expect("create_layer");
    let third = store
        .create_layer(
            acc,
            &s.id,
            &layer("hourly", "2026-01-01T00:00:00", &[] as &[&str]),
            &actor,
            NOW,
        )
        .await
        .expect("an empty rotation is allowed");
    assert_eq!((second.position, third.position), (1, 2));
    let listed = store.list_layers(acc, &s.id).await.expect("list_layers");
    let got: Vec<(&str, i64)> = listed.iter().map(|l| (l.id.as_str(), l.position)).collect();
    assert_eq!(
        got,
        [
            (first.id.as_str(), 0),
            (second.id.as_str(), 1),
            (third.id.as_str(), 2)
        ]
    );
    assert_eq!(
        listed[0].restrictions.0, first_input.restrictions,
        "JSON round trip"
    );
    assert_eq!(listed[0].users.0, [a, b]);

    // Users must be users of the account.
    for users in [vec![a, other.admin.as_str()], vec!["nosuch00"]] {
        assert_invalid(
            store
                .create_layer(
                    acc,
                    &s.id,
                    &layer("daily", "2026-01-01T00:00:00", &users[..]),
                    &actor,
                    NOW,
                )
                .await,
            "users",
        );
    }
    assert_not_found(
        store
            .create_layer(
                acc,
                "nosuch00",
                &layer("daily", "2026-01-01T00:00:00", &[a]),
                &actor,
                NOW,
            )
            .await,
        "layer on unknown schedule",
    );

    // Update keeps the position.
    let changes = json!({"users": [[b], [a, b]]});
    let mut input = layer("daily", "2026-01-02T08:00:00", &[a, b]);
    input.count = 3;
    let updated = store
        .update_layer(acc, &s.id, &second.id, &input, &changes, &actor, NOW + 1)
        .await
        .expect("update_layer");
    assert_eq!(
        (updated.position, updated.count, updated.start_at.as_str()),
        (1, 3, "2026-01-02T08:00:00")
    );
    assert_eq!(updated.users.0, [a, b]);
    assert_eq!((updated.created_at, updated.updated_at), (NOW, NOW + 1));
    assert_invalid(
        store
            .update_layer(
                acc,
                &s.id,
                &second.id,
                &layer("daily", "2026-01-01T00:00:00", &[&other.admin]),
                &json!({}),
                &actor,
                NOW,
            )
            .await,
        "users",
    );
    assert_not_found(
        store
            .update_layer(acc, &s.id, "nosuch00", &input, &json!({}), &actor, NOW)
            .await,
        "update unknown layer",
    );
    let listed = store.list_layers(acc, &s.id).await.expect("list_layers");
    assert_eq!(
        listed[1].users.0,
        [a, b],
        "the refused update changed nothing"
    );

    // Deleting the bottom layer renumbers the rest.
    store
        .delete_layer(acc, &s.id, &first.id, &actor, NOW)
        .await
        .expect("delete_layer");
    let listed = store.list_layers(acc, &s.id).await.expect("list_layers");
    let got: Vec<(&str, i64)> = listed.iter().map(|l| (l.id.as_str(), l.position)).collect();
    assert_eq!(got, [(second.id.as_str(), 0), (third.id.as_str(), 1)]);
    assert_not_found(
        store.delete_layer(acc, &s.id, &first.id, &actor, NOW).await,
        "deleted twice",
    );
    assert_not_found(
        store
            .update_layer(acc, &s.id, &first.id, &input, &json!({}), &actor, NOW)
            .await,
        "update deleted layer",
    );
    // Appending continues from the end; positions are per schedule.
    let fourth = store
        .create_layer(
            acc,
            &s.id,
            &layer("daily", "2026-01-01T00:00:00", &[a]),
            &actor,
            NOW,
        )
        .await
        .expect("create_layer");
    assert_eq!(fourth.position, 2);
    let s2 = new_schedule(store, &w.t, "Secondary").await;
    let elsewhere = store
        .create_layer(
            acc,
            &s2.id,
            &layer("daily", "2026-01-01T00:00:00", &[a]),
            &actor,
            NOW,
        )
        .await
        .expect("create_layer");
    assert_eq!(elsewhere.position, 0);
    // A layer is only reachable through its own schedule.
    assert_not_found(
        store
            .update_layer(acc, &s2.id, &fourth.id, &input, &json!({}), &actor, NOW)
            .await,
        "layer through another schedule",
    );
    assert_not_found(
        store
            .delete_layer(acc, &s2.id, &fourth.id, &actor, NOW)
            .await,
        "delete through another schedule",
    );
    // Deleting the schedule takes its layers.
    store
        .delete_schedule(acc, &s2.id, &actor, NOW)
        .await
        .expect("delete_schedule");
    assert_not_found(
        store
            .delete_layer(acc, &s2.id, &elsewhere.id, &actor, NOW)
            .await,
        "layer of deleted schedule",
    );

    let events = events_of(store, acc, "schedule", &s.id).await;
    assert_eq!(
        actions(&events),
        [
            "schedule.layer_create",
            "schedule.layer_delete",
            "schedule.layer_update",
            "schedule.layer_create",
            "schedule.layer_create",
            "schedule.layer_create",
            "schedule.create",
        ]
    );
    assert_eq!(
        events[5].changeset.0,
        json!({
            "layer_id": first.id, "position": 0, "rule": "weekly", "count": 2,
            "start_at": "2026-01-05T09:00:00", "users": [a, b],
            "restrictions": [{"days": ["mon", "fri"], "start": "09:00", "end": "17:00"}],
        })
    );
    assert_eq!(events[4].changeset.0["position"], json!(1));
    assert_eq!(events[2].changeset.0, changes);
    assert_eq!(events[1].changeset.0, json!({"layer_id": first.id}));
    assert_eq!(events[0].changeset.0["position"], json!(2));
}

pub(crate) async fn overrides_crud(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = tenant(store, "other").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let (a, b) = (w.users[0].as_str(), w.users[1].as_str());
    let s = new_schedule(store, &w.t, "Primary").await;
    let (t1, t2, t3, t4) = (
        berlin(2026, 1, 6, 8, 0),
        berlin(2026, 1, 6, 10, 0),
        berlin(2026, 1, 6, 12, 0),
        berlin(2026, 1, 6, 14, 0),
    );
    // Created out of order: listed by start.
    let late = store
        .create_override(acc, &s.id, b, t3, t4, &actor, NOW)
        .await
        .expect("create_override");
    let early = store
        .create_override(acc, &s.id, a, t1, t2, &actor, NOW + 1)
        .await
        .expect("create_override");
    assert_eq!(
        (
            early.schedule_id.as_str(),
            early.user_id.as_str(),
            early.start_at,
            early.end_at,
            early.created_at
        ),
        (s.id.as_str(), a, t1, t2, NOW + 1)
    );
    assert_invalid(
        store
            .create_override(acc, &s.id, &other.admin, t1, t2, &actor, NOW)
            .await,
        "users",
    );
    assert_invalid(
        store
            .create_override(acc, &s.id, "nosuch00", t1, t2, &actor, NOW)
            .await,
        "users",
    );
    assert_not_found(
        store
            .create_override(acc, "nosuch00", a, t1, t2, &actor, NOW)
            .await,
        "override on unknown schedule",
    );

    let sid = s.id.as_str();
    let listed = |since: Millis, until: Millis| async move {
        store
            .list_overrides(acc, sid, since, until)
            .await
            .expect("list_overrides")
            .into_iter()
            .map(|o| o.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(t1, t4).await,
        [early.id.clone(), late.id.clone()],
        "by start"
    );
    assert_eq!(
        listed(t1 - MINUTE, t4 + MINUTE).await,
        [early.id.clone(), late.id.clone()]
    );
    // Overlapping [since, until): touching at an end is not overlapping.
    assert_eq!(listed(t2, t3).await, Vec::<String>::new());
    assert_eq!(listed(t2 - 1, t3).await, [early.id.as_str()]);
    assert_eq!(listed(t2, t3 + 1).await, [late.id.as_str()]);
    assert_eq!(listed(t4, t4 + MINUTE).await, Vec::<String>::new());
    assert_eq!(listed(t1 - MINUTE, t1).await, Vec::<String>::new());
    assert_eq!(
        listed(t1 + MINUTE, t1 + 2 * MINUTE).await,
        [early.id.as_str()],
        "inside"
    );

    store
        .delete_override(acc, &s.id, &early.id, &actor, NOW + 2)
        .await
        .expect("delete_override");
    assert_eq!(listed(t1, t4).await, [late.id.as_str()]);
    assert_not_found(
        store
            .delete_override(acc, &s.id, &early.id, &actor, NOW)
            .await,
        "deleted twice",
    );
    let s2 = new_schedule(store, &w.t, "Secondary").await;
    assert_not_found(
        store
            .delete_override(acc, &s2.id, &late.id, &actor, NOW)
            .await,
        "override through another schedule",
    );

    let events = events_of(store, acc, "schedule", &s.id).await;
    assert_eq!(
        actions(&events),
        [
            "schedule.override_delete",
            "schedule.override_create",
            "schedule.override_create",
            "schedule.create",
        ]
    );
    assert_eq!(events[0].changeset.0, json!({"override_id": early.id}));
    assert_eq!(
        events[1].changeset.0,
        json!({"override_id": early.id, "user_id": a, "start_at": t1, "end_at": t2})
    );
    assert_eq!(
        events[2].changeset.0,
        json!({"override_id": late.id, "user_id": b, "start_at": t3, "end_at": t4})
    );

    // Deleting the schedule takes its overrides.
    store
        .delete_schedule(acc, &s.id, &actor, NOW)
        .await
        .expect("delete_schedule");
    assert_not_found(
        store.list_overrides(acc, &s.id, t1, t4).await,
        "overrides of deleted schedule",
    );
    assert_not_found(
        store
            .delete_override(acc, &s.id, &late.id, &actor, NOW)
            .await,
        "override of deleted schedule",
    );
}

pub(crate) async fn schedule_tenant_isolation(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let other = tenant(store, "other").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let (oacc, oactor) = (other.account.as_str(), other.actor());
    let a = w.users[0].as_str();
    let s = new_schedule(store, &w.t, "Primary").await;
    let l = store
        .create_layer(
            acc,
            &s.id,
            &layer("weekly", "2026-01-05T09:00:00", &[a]),
            &actor,
            NOW,
        )
        .await
        .expect("create_layer");
    let (t1, t2) = (berlin(2026, 1, 6, 8, 0), berlin(2026, 1, 6, 10, 0));
    let o = store
        .create_override(acc, &s.id, a, t1, t2, &actor, NOW)
        .await
        .expect("create_override");
    assert!(store.list_schedules(oacc).await.expect("list").is_empty());
    // The other tenant's own schedule, to pair with acme's layer and override ids.
    let own = new_schedule(store, &other, "Primary").await;
    let own_layer = layer("daily", "2026-01-01T00:00:00", &[&other.admin]);
    assert_not_found(store.get_schedule(oacc, &s.id).await, "get");
    assert_not_found(
        store
            .update_schedule(oacc, &s.id, "mine", ZONE, &json!({}), &oactor, NOW)
            .await,
        "update",
    );
    assert_not_found(
        store.delete_schedule(oacc, &s.id, &oactor, NOW).await,
        "delete",
    );
    assert_not_found(store.list_layers(oacc, &s.id).await, "list_layers");
    assert_not_found(
        store
            .create_layer(oacc, &s.id, &own_layer, &oactor, NOW)
            .await,
        "create_layer",
    );
    for schedule in [&s.id, &own.id] {
        assert_not_found(
            store
                .update_layer(oacc, schedule, &l.id, &own_layer, &json!({}), &oactor, NOW)
                .await,
            "update_layer",
        );
        assert_not_found(
            store
                .delete_layer(oacc, schedule, &l.id, &oactor, NOW)
                .await,
            "delete_layer",
        );
        assert_not_found(
            store
                .delete_override(oacc, schedule, &o.id, &oactor, NOW)
                .await,
            "delete_override",
        );
    }
    assert!(store
        .list_layers(oacc, &own.id)
        .await
        .expect("own layers")
        .is_empty());
    assert_not_found(
        store.list_overrides(oacc, &s.id, t1, t2).await,
        "list_overrides",
    );
    assert!(store
        .list_overrides(oacc, &own.id, t1, t2)
        .await
        .expect("own overrides")
        .is_empty());
    assert_not_found(
        store
            .create_override(oacc, &s.id, &other.admin, t1, t2, &oactor, NOW)
            .await,
        "create_override",
    );
    assert_not_found(store.load_schedule(oacc, &s.id, NOW).await, "load_schedule");
    // Nor can another account's policy page through it.
    let policy = store
        .create_policy(oacc, "p", 1, &oactor, NOW)
        .await
        .expect("policy");
    assert_invalid(
        store
            .create_rule(oacc, &policy.id, &schedule_rule(&s.id), &oactor, NOW)
            .await,
        "assignment",
    );
    // And acme cannot put the other tenant's user on call, even in its own schedule.
    assert_invalid(
        store
            .create_layer(
                acc,
                &s.id,
                &layer("daily", "2026-01-01T00:00:00", &[&other.admin]),
                &actor,
                NOW,
            )
            .await,
        "users",
    );

    // Nothing of acme's changed.
    let data = store.load_schedule(acc, &s.id, NOW).await.expect("load");
    assert_eq!(data.schedule.name, "Primary");
    assert_eq!(data.layers.len(), 1);
    assert_eq!(data.layers[0].users.0, [a]);
    assert_eq!(data.overrides.len(), 1);
    assert_eq!(data.overrides[0].id, o.id);
    assert!(events_of(store, oacc, "schedule", &s.id).await.is_empty());
    assert_eq!(
        actions(&events_of(store, acc, "schedule", &s.id).await),
        [
            "schedule.override_create",
            "schedule.layer_create",
            "schedule.create"
        ]
    );
}

pub(crate) async fn user_in_a_rotation_cannot_be_deleted(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let c = new_user(store, &w.t, "carol").await;
    let d = new_user(store, &w.t, "dave").await;
    let s = new_schedule(store, &w.t, "Primary").await;
    let l1 = store
        .create_layer(
            acc,
            &s.id,
            &layer("weekly", "2026-01-05T09:00:00", &[&w.users[0], &c]),
            &actor,
            NOW,
        )
        .await
        .expect("create_layer");
    let l2 = store
        .create_layer(
            acc,
            &s.id,
            &layer("daily", "2026-01-05T09:00:00", &[&c]),
            &actor,
            NOW,
        )
        .await
        .expect("create_layer");
    assert_conflict(store.delete_user(acc, &c, &actor, NOW).await);
    // Taking them out of one layer is not enough.
    store
        .update_layer(
            acc,
            &s.id,
            &l1.id,
            &layer("weekly", "2026-01-05T09:00:00", &[&w.users[0]]),
            &json!({}),
            &actor,
            NOW,
        )
        .await
        .expect("update_layer");
    assert_conflict(store.delete_user(acc, &c, &actor, NOW).await);
    store.get_user(acc, &c).await.expect("still there");
    store
        .delete_layer(acc, &s.id, &l2.id, &actor, NOW)
        .await
        .expect("delete_layer");
    store
        .delete_user(acc, &c, &actor, NOW)
        .await
        .expect("delete_user once in no rotation");
    assert_not_found(store.get_user(acc, &c).await, "deleted user");

    // An override does not keep a user; it goes with them.
    let (t1, t2) = (berlin(2026, 1, 6, 8, 0), berlin(2026, 1, 6, 10, 0));
    store
        .create_override(acc, &s.id, &d, t1, t2, &actor, NOW)
        .await
        .expect("create_override");
    let kept = store
        .create_override(acc, &s.id, &w.users[1], t1, t2, &actor, NOW + 1)
        .await
        .expect("create_override");
    store
        .delete_user(acc, &d, &actor, NOW)
        .await
        .expect("delete_user with an override");
    let left: Vec<String> = store
        .list_overrides(acc, &s.id, t1, t2)
        .await
        .expect("list_overrides")
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(left, [kept.id.as_str()]);
    let data = store.load_schedule(acc, &s.id, NOW).await.expect("load");
    assert_eq!(data.overrides.len(), 1);
    assert_eq!(data.overrides[0].user_id, w.users[1]);
    // A deleted user cannot be put back.
    assert_invalid(
        store
            .create_override(acc, &s.id, &d, t1, t2, &actor, NOW)
            .await,
        "users",
    );
    assert_invalid(
        store
            .create_layer(
                acc,
                &s.id,
                &layer("daily", "2026-01-01T00:00:00", &[&c]),
                &actor,
                NOW,
            )
            .await,
        "users",
    );
}

pub(crate) async fn on_call_follows_layers_and_overrides(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let (a, b) = (w.users[0].as_str(), w.users[1].as_str());
    let c = new_user(store, &w.t, "carol").await;
    let s = new_schedule(store, &w.t, "Primary").await;
    store
        .create_layer(
            acc,
            &s.id,
            &layer("weekly", "2026-01-05T09:00:00", &[a, b]),
            &actor,
            NOW,
        )
        .await
        .expect("create_layer");
    let who = |at: Millis| on_call(store, acc, &s.id, at);
    assert_eq!(
        who(berlin(2026, 1, 5, 8, 59)).await,
        None,
        "before the first handoff"
    );
    assert_eq!(who(berlin(2026, 1, 5, 9, 0)).await.as_deref(), Some(a));
    assert_eq!(who(berlin(2026, 1, 8, 3, 0)).await.as_deref(), Some(a));
    assert_eq!(who(berlin(2026, 1, 12, 8, 59)).await.as_deref(), Some(a));
    assert_eq!(who(berlin(2026, 1, 12, 9, 0)).await.as_deref(), Some(b));
    assert_eq!(who(berlin(2026, 1, 19, 9, 0)).await.as_deref(), Some(a));
    // Twelve weeks on, across the switch to summer time, the handoff is
    // still at 09:00 local (07:00Z rather than 08:00Z).
    assert_eq!(who(berlin(2026, 3, 30, 8, 59)).await.as_deref(), Some(b));
    assert_eq!(who(berlin(2026, 3, 30, 9, 0)).await.as_deref(), Some(a));

    // A higher layer, restricted to Wednesdays 12:00–14:00, covers the lower one there.
    let mut lunch = layer("daily", "2026-01-01T00:00:00", &[&c]);
    lunch.restrictions = vec![RestrictionSpec {
        days: vec!["wed".into()],
        start: "12:00".into(),
        end: "14:00".into(),
    }];
    store
        .create_layer(acc, &s.id, &lunch, &actor, NOW)
        .await
        .expect("create_layer");
    assert_eq!(who(berlin(2026, 1, 7, 11, 59)).await.as_deref(), Some(a));
    assert_eq!(
        who(berlin(2026, 1, 7, 12, 0)).await.as_deref(),
        Some(c.as_str())
    );
    assert_eq!(
        who(berlin(2026, 1, 14, 13, 59)).await.as_deref(),
        Some(c.as_str())
    );
    assert_eq!(who(berlin(2026, 1, 14, 14, 0)).await.as_deref(), Some(b));

    // An override wins over every layer; the newest of overlapping ones wins.
    let (t1, t2) = (berlin(2026, 1, 7, 10, 0), berlin(2026, 1, 7, 13, 0));
    store
        .create_override(acc, &s.id, b, t1, t2, &actor, NOW)
        .await
        .expect("create_override");
    assert_eq!(who(t1 - 1).await.as_deref(), Some(a));
    assert_eq!(who(t1).await.as_deref(), Some(b));
    assert_eq!(
        who(berlin(2026, 1, 7, 12, 30)).await.as_deref(),
        Some(b),
        "over the higher layer"
    );
    assert_eq!(
        who(t2).await.as_deref(),
        Some(c.as_str()),
        "the end is exclusive"
    );
    let newer = store
        .create_override(
            acc,
            &s.id,
            a,
            berlin(2026, 1, 7, 11, 0),
            berlin(2026, 1, 7, 12, 0),
            &actor,
            NOW + 1,
        )
        .await
        .expect("create_override");
    assert_eq!(
        who(berlin(2026, 1, 7, 11, 30)).await.as_deref(),
        Some(a),
        "newest override"
    );
    assert_eq!(who(berlin(2026, 1, 7, 12, 30)).await.as_deref(), Some(b));

    // load_schedule: layers lowest first, overrides ending after `from`, oldest first.
    let data = store.load_schedule(acc, &s.id, t1).await.expect("load");
    assert_eq!(data.schedule.id, s.id);
    assert_eq!(
        data.layers.iter().map(|l| l.position).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(data.layers[1].users.0, [c.as_str()]);
    assert_eq!(
        data.overrides
            .iter()
            .map(|o| o.user_id.as_str())
            .collect::<Vec<_>>(),
        [b, a]
    );
    let data = store
        .load_schedule(acc, &s.id, newer.end_at)
        .await
        .expect("load");
    assert_eq!(data.overrides.len(), 1, "the newer one ended at `from`");
    assert!(store
        .load_schedule(acc, &s.id, t2)
        .await
        .expect("load")
        .overrides
        .is_empty());
    assert_not_found(
        store.load_schedule(acc, "nosuch00", NOW).await,
        "unknown schedule",
    );
}

pub(crate) async fn trigger_assigns_the_schedule_on_call(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let (a, b) = (w.users[0].as_str(), w.users[1].as_str());
    let s = new_schedule(store, &w.t, "Primary").await;
    store
        .create_layer(
            acc,
            &s.id,
            &layer("weekly", "2026-01-05T09:00:00", &[a, b]),
            &actor,
            NOW,
        )
        .await
        .expect("create_layer");
    let (service, rules) = service_with(
        store,
        &w.t,
        "db",
        &[schedule_rule(&s.id), rule_input(&w.t.admin)],
    )
    .await;

    let at = berlin(2026, 1, 6, 10, 0);
    let i = w
        .trigger_on(store, &service.id, "first week", None, at)
        .await;
    assert_eq!(i.current_user_id.as_deref(), Some(a));
    assert_eq!(
        i.current_policy_rule_id.as_deref(),
        Some(rules[0].id.as_str())
    );
    assert_eq!(i.escalation_loop_count, 1);
    assert_eq!(
        store
            .list_timers(acc, &i.id)
            .await
            .expect("list_timers")
            .iter()
            .map(|t| (t.kind.as_str(), t.due_at))
            .collect::<Vec<_>>(),
        [("escalate", at + 30 * MINUTE)]
    );
    let i = store.get_incident(acc, &i.id).await.expect("get_incident");
    assert_eq!(i.current_user_id.as_deref(), Some(a), "stored");
    let j = w
        .trigger_on(
            store,
            &service.id,
            "second week",
            None,
            berlin(2026, 1, 13, 10, 0),
        )
        .await;
    assert_eq!(j.current_user_id.as_deref(), Some(b));

    // Nobody on call (before the first handoff): the rule is passed over
    // at once for the next one with someone, whose timeout then runs,
    // and the audit event says which rule was skipped.
    let early = berlin(2026, 1, 1, 12, 0);
    let k = w
        .trigger_on(store, &service.id, "too early", None, early)
        .await;
    assert_eq!(k.current_user_id.as_deref(), Some(w.t.admin.as_str()));
    assert_eq!(
        k.current_policy_rule_id.as_deref(),
        Some(rules[1].id.as_str())
    );
    assert_eq!(k.state, "triggered");
    let timers = store.list_timers(acc, &k.id).await.expect("list_timers");
    assert_eq!(timers.len(), 1);
    assert_eq!(
        (timers[0].kind.as_str(), timers[0].due_at),
        ("escalate", early + 30 * MINUTE)
    );
    let opened = events_of(store, acc, "incident", &k.id).await;
    let trigger = opened
        .iter()
        .find(|e| e.action == "incident.create")
        .expect("a create event");
    assert_eq!(trigger.changeset.0["skipped_rules"], json!([rules[0].id]));
    let k = store.get_incident(acc, &k.id).await.expect("get_incident");
    assert_eq!(
        (
            k.current_user_id.as_deref(),
            k.current_policy_rule_id.as_deref()
        ),
        (Some(w.t.admin.as_str()), Some(rules[1].id.as_str()))
    );

    // A policy whose only rule has nobody on call leaves the incident
    // unassigned, and says so.
    let (lonely, lonely_rules) = service_with(store, &w.t, "lonely", &[schedule_rule(&s.id)]).await;
    let u = w.trigger_on(store, &lonely.id, "nobody", None, early).await;
    assert_eq!(u.current_user_id, None);
    assert_eq!(
        u.current_policy_rule_id.as_deref(),
        Some(lonely_rules[0].id.as_str())
    );
    let opened = events_of(store, acc, "incident", &u.id).await;
    assert_eq!(opened[0].changeset.0["nobody_on_call"], json!(true));

    // An override for B during A's week wins.
    store
        .create_override(
            acc,
            &s.id,
            b,
            berlin(2026, 1, 7, 0, 0),
            berlin(2026, 1, 8, 0, 0),
            &actor,
            NOW,
        )
        .await
        .expect("create_override");
    let o = w
        .trigger_on(
            store,
            &service.id,
            "overridden",
            None,
            berlin(2026, 1, 7, 10, 0),
        )
        .await;
    assert_eq!(o.current_user_id.as_deref(), Some(b));
    assert_eq!(
        o.current_policy_rule_id.as_deref(),
        Some(rules[0].id.as_str())
    );
    let after = w
        .trigger_on(
            store,
            &service.id,
            "after the override",
            None,
            berlin(2026, 1, 8, 0, 0),
        )
        .await;
    assert_eq!(after.current_user_id.as_deref(), Some(a));
    // Already-open incidents keep who they were given.
    let i = store.get_incident(acc, &i.id).await.expect("get_incident");
    assert_eq!(i.current_user_id.as_deref(), Some(a));
}

pub(crate) async fn escalation_pages_whoever_is_on_call_then(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let (acc, actor) = (w.t.account.as_str(), w.t.actor());
    let (a, b) = (w.users[0].as_str(), w.users[1].as_str());
    let x = new_user(store, &w.t, "xavier").await;
    // NOW is 23:13:20 on 14 November 2023 in Berlin; the daily handoff at
    // 23:30 falls between the trigger and the escalation 30 minutes later.
    assert_eq!(
        jiff::Timestamp::from_millisecond(NOW)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::get(ZONE).unwrap())
            .datetime(),
        jiff::civil::date(2023, 11, 14).at(23, 13, 20, 0)
    );
    let handoff = berlin(2023, 11, 14, 23, 30);
    assert!(NOW < handoff && handoff <= NOW + 30 * MINUTE);
    let s = new_schedule(store, &w.t, "Primary").await;
    store
        .create_layer(
            acc,
            &s.id,
            &layer("daily", "2023-11-13T23:30:00", &[a, b]),
            &actor,
            NOW,
        )
        .await
        .expect("create_layer");
    assert_eq!(on_call(store, acc, &s.id, NOW).await.as_deref(), Some(a));
    assert_eq!(
        on_call(store, acc, &s.id, NOW + 30 * MINUTE)
            .await
            .as_deref(),
        Some(b)
    );

    let (service, rules) =
        service_with(store, &w.t, "db", &[rule_input(&x), schedule_rule(&s.id)]).await;
    let i = w.trigger_on(store, &service.id, "down", None, NOW).await;
    assert_eq!(i.current_user_id.as_deref(), Some(x.as_str()));

    let fired = store
        .fire_due_timers(NOW + 30 * MINUTE, 10)
        .await
        .expect("fire_due_timers");
    assert_eq!(fired.len(), 1);
    assert!(fired[0].acted);
    let i = store.get_incident(acc, &i.id).await.expect("get_incident");
    assert_eq!(
        i.current_policy_rule_id.as_deref(),
        Some(rules[1].id.as_str())
    );
    assert_eq!(
        i.current_user_id.as_deref(),
        Some(b),
        "whoever is on call at the escalation, not at the trigger"
    );
    let events = events_of(store, acc, "incident", &i.id).await;
    assert_eq!(events[0].action, "incident.escalate");
    assert_eq!(events[0].changeset.0["current_user_id"], json!([x, b]));

    // Round two: back to X, then to the schedule again, where an override
    // now has A on call.
    store
        .create_override(
            acc,
            &s.id,
            a,
            NOW + 80 * MINUTE,
            NOW + 100 * MINUTE,
            &actor,
            NOW,
        )
        .await
        .expect("create_override");
    store
        .fire_due_timers(NOW + 60 * MINUTE, 10)
        .await
        .expect("fire_due_timers");
    let i = store.get_incident(acc, &i.id).await.expect("get_incident");
    assert_eq!(
        (i.current_user_id.as_deref(), i.escalation_loop_count),
        (Some(x.as_str()), 2)
    );
    store
        .fire_due_timers(NOW + 90 * MINUTE, 10)
        .await
        .expect("fire_due_timers");
    let i = store.get_incident(acc, &i.id).await.expect("get_incident");
    assert_eq!(
        i.current_policy_rule_id.as_deref(),
        Some(rules[1].id.as_str())
    );
    assert_eq!(i.current_user_id.as_deref(), Some(a), "the override");
}

/// Layers appended at once get distinct positions 0..n.
pub(crate) async fn concurrent_layer_appends(store: Arc<dyn Store>) {
    const RACERS: usize = 16;
    let t = tenant(&*store, "acme").await;
    let s = new_schedule(&*store, &t, "Primary").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..RACERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        let (account, schedule, admin) = (t.account.clone(), s.id.clone(), t.admin.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let input = layer("daily", "2026-01-01T00:00:00", &[&admin]);
            store
                .create_layer(
                    &account,
                    &schedule,
                    &input,
                    &Actor::User(admin.clone()),
                    NOW,
                )
                .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task").expect("create_layer");
    }
    let mut positions: Vec<i64> = store
        .list_layers(&t.account, &s.id)
        .await
        .expect("list_layers")
        .iter()
        .map(|l| l.position)
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (0..RACERS as i64).collect::<Vec<_>>());
}

/// A user put into a rotation (or given an override) while being deleted:
/// either the layer wins and the deletion is refused, or the deletion wins
/// and the layer is refused; never a layer naming a deleted user.
pub(crate) async fn concurrent_user_deletion_and_rotation(store: Arc<dyn Store>) {
    const USERS: usize = 8;
    let t = tenant(&*store, "acme").await;
    let s = new_schedule(&*store, &t, "Primary").await;
    let mut users = Vec::new();
    for n in 0..USERS {
        users.push(new_user(&*store, &t, &format!("user{n}")).await);
    }
    let (t1, t2) = (berlin(2026, 1, 6, 8, 0), berlin(2026, 1, 6, 10, 0));
    let barrier = Arc::new(tokio::sync::Barrier::new(3 * USERS));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, user) in users.iter().enumerate() {
        for what in ["layer", "override", "delete"] {
            let (store, barrier) = (store.clone(), barrier.clone());
            let (account, schedule, user) = (t.account.clone(), s.id.clone(), user.clone());
            let actor = t.actor();
            tasks.spawn(async move {
                barrier.wait().await;
                let result = match what {
                    "layer" => {
                        let input = layer("daily", "2026-01-01T00:00:00", &[&user]);
                        store
                            .create_layer(&account, &schedule, &input, &actor, NOW)
                            .await
                            .map(|_| ())
                    }
                    "override" => store
                        .create_override(&account, &schedule, &user, t1, t2, &actor, NOW)
                        .await
                        .map(|_| ()),
                    _ => store.delete_user(&account, &user, &actor, NOW).await,
                };
                (n, what, result)
            });
        }
    }
    let mut outcomes = [(None, None, None); USERS];
    while let Some(joined) = tasks.join_next().await {
        let (n, what, result) = joined.expect("task");
        let ok = match result {
            Ok(()) => true,
            Err(StoreError::Invalid { field: "users", .. }) if what != "delete" => false,
            Err(StoreError::Conflict(_)) if what == "delete" => false,
            Err(other) => panic!("{what} for user {n}: unexpected {other:?}"),
        };
        match what {
            "layer" => outcomes[n].0 = Some(ok),
            "override" => outcomes[n].1 = Some(ok),
            _ => outcomes[n].2 = Some(ok),
        }
    }
    let layers = store.list_layers(&t.account, &s.id).await.expect("layers");
    let overrides = store
        .list_overrides(&t.account, &s.id, t1, t2)
        .await
        .expect("overrides");
    for (n, user) in users.iter().enumerate() {
        let (Some(layered), Some(_), Some(deleted)) = outcomes[n] else {
            panic!("user {n}: missing outcome");
        };
        assert!(
            layered != deleted,
            "user {n}: exactly one of layer and delete wins"
        );
        let exists = store.get_user(&t.account, user).await.is_ok();
        assert_eq!(exists, !deleted, "user {n}");
        let in_layers = layers.iter().any(|l| l.users.0.contains(user));
        assert_eq!(in_layers, layered, "user {n}");
        if deleted {
            assert!(
                overrides.iter().all(|o| &o.user_id != user),
                "user {n}: no override of a deleted user"
            );
        }
    }
}
