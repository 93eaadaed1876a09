//! Accounts, users, API tokens and tenant isolation.

use super::*;

pub(crate) async fn accounts_and_tokens(store: Arc<dyn Store>) {
    let store = &*store;
    assert!(!store.has_accounts().await.expect("has_accounts"));
    let t = tenant(store, "acme").await;
    assert!(store.has_accounts().await.expect("has_accounts"));

    let p = store
        .principal_by_token(&t.token_hash)
        .await
        .expect("principal_by_token")
        .expect("a principal");
    assert_eq!(
        (p.account_id.as_str(), p.user_id.as_str(), p.role.as_str()),
        (t.account.as_str(), t.admin.as_str(), "admin")
    );
    assert_eq!(p.last_used_at, None);
    assert_eq!(
        (p.kind.as_str(), p.expires_at, p.schedule_id.as_deref()),
        ("api", None, None),
        "an account's first token is an API token that does not expire"
    );
    assert!(store
        .principal_by_token("nope")
        .await
        .expect("lookup")
        .is_none());

    store
        .touch_token(&p.token_id, NOW + MINUTE, None)
        .await
        .expect("touch_token");
    let p2 = store
        .principal_by_token(&t.token_hash)
        .await
        .expect("lookup")
        .expect("principal");
    assert_eq!(p2.last_used_at, Some(NOW + MINUTE));

    let user = store
        .user_by_email("owner@acme.test")
        .await
        .expect("user_by_email")
        .expect("user");
    assert_eq!(user.id, t.admin);
    assert_eq!(user.account_id, t.account);
    assert_eq!(user.role, "admin");
    assert!(store
        .user_by_email("nobody@acme.test")
        .await
        .expect("lookup")
        .is_none());

    let second = store
        .create_token(
            &t.account,
            &t.admin,
            &api_token("laptop", None),
            "hash-2",
            NOW + 2 * MINUTE,
        )
        .await
        .expect("create_token");
    assert_eq!(second.name, "laptop");
    let tokens = store
        .list_tokens(&t.account, &t.admin)
        .await
        .expect("list_tokens");
    let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["laptop", "default"], "newest first");
    assert_eq!(tokens[1].last_used_at, Some(NOW + MINUTE));

    store
        .delete_token(
            &t.account,
            &t.admin,
            &second.id,
            &t.actor(),
            NOW + 3 * MINUTE,
        )
        .await
        .expect("delete_token");
    assert!(store
        .principal_by_token("hash-2")
        .await
        .expect("lookup")
        .is_none());
    assert_not_found(
        store
            .delete_token(&t.account, &t.admin, &second.id, &t.actor(), NOW)
            .await,
        "token deleted twice",
    );
    assert_eq!(
        store
            .list_tokens(&t.account, &t.admin)
            .await
            .expect("list")
            .len(),
        1
    );

    let account_events = events_of(store, &t.account, "account", &t.account).await;
    assert_eq!(actions(&account_events), ["account.create"]);
    assert_eq!(account_events[0].actor_type, "user");
    assert_eq!(
        account_events[0].actor_id.as_deref(),
        Some(t.admin.as_str())
    );
    assert_eq!(account_events[0].changeset.0, json!({"name": "acme"}));
    assert_eq!(
        actions(&events_of(store, &t.account, "token", &second.id).await),
        ["token.delete", "token.create"]
    );
}

pub(crate) async fn tenant_isolation(store: Arc<dyn Store>) {
    let store = &*store;
    let a = world(store, "a").await;
    let b = world(store, "b").await;
    let incident = a.trigger(store, "a is down", Some("a-key"), NOW).await;
    let (acc, actor) = (b.t.account.as_str(), b.t.actor());

    // Users and tokens.
    assert_not_found(store.get_user(acc, &a.users[0]).await, "get_user");
    assert_not_found(
        store
            .update_user(
                acc,
                &a.users[0],
                &user_input("x", "x@x.test", "responder"),
                &json!({}),
                Revoke::Nothing,
                &actor,
                NOW,
            )
            .await,
        "update_user",
    );
    assert_not_found(
        store.delete_user(acc, &a.users[0], &actor, NOW).await,
        "delete_user",
    );
    assert_not_found(
        store.delete_user(acc, &a.t.admin, &actor, NOW).await,
        "delete_user admin",
    );
    let tokens = store
        .list_tokens(&a.t.account, &a.t.admin)
        .await
        .expect("list_tokens");
    assert_not_found(
        store
            .delete_token(acc, &a.t.admin, &tokens[0].id, &actor, NOW)
            .await,
        "delete_token",
    );
    assert!(store
        .list_tokens(acc, &a.t.admin)
        .await
        .expect("list_tokens")
        .is_empty());
    let users = store.list_users(acc).await.expect("list_users");
    assert_eq!(users.len(), 3);
    assert!(users.iter().all(|u| u.account_id == b.t.account));

    // Policies and rules.
    assert_not_found(store.get_policy(acc, &a.policy.id).await, "get_policy");
    assert_not_found(
        store
            .update_policy(acc, &a.policy.id, "x", 1, &json!({}), &actor, NOW)
            .await,
        "update_policy",
    );
    assert_not_found(
        store.delete_policy(acc, &a.policy.id, &actor, NOW).await,
        "delete_policy",
    );
    assert_not_found(store.list_rules(acc, &a.policy.id).await, "list_rules");
    assert_not_found(
        store.get_rule(acc, &a.policy.id, &a.rules[0].id).await,
        "get_rule",
    );
    assert_not_found(
        store.get_rule(acc, &b.policy.id, &a.rules[0].id).await,
        "get_rule via own policy",
    );
    assert_not_found(
        store
            .create_rule(acc, &a.policy.id, &rule_input(&b.users[0]), &actor, NOW)
            .await,
        "create_rule",
    );
    assert_not_found(
        store
            .update_rule(
                acc,
                &a.policy.id,
                &a.rules[0].id,
                &rule_input(&b.users[0]),
                &json!({}),
                &actor,
                NOW,
            )
            .await,
        "update_rule",
    );
    assert_not_found(
        store
            .delete_rule(acc, &a.policy.id, &a.rules[0].id, &actor, NOW)
            .await,
        "delete_rule",
    );
    let a_rule_ids: Vec<String> = a.rules.iter().map(|r| r.id.clone()).collect();
    assert_not_found(
        store
            .sort_rules(acc, &a.policy.id, &a_rule_ids, &actor, NOW)
            .await,
        "sort_rules",
    );
    let policies = store.list_policies(acc).await.expect("list_policies");
    assert_eq!(
        policies.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [b.policy.id.as_str()]
    );
    assert_eq!(
        store
            .list_rules(&a.t.account, &a.policy.id)
            .await
            .expect("rules")
            .len(),
        2,
        "untouched"
    );

    // Services.
    assert_not_found(store.get_service(acc, &a.service.id).await, "get_service");
    assert_not_found(
        store
            .update_service(
                acc,
                &a.service.id,
                &service_input("x", &b.policy.id),
                &json!({}),
                &actor,
                NOW,
            )
            .await,
        "update_service",
    );
    assert_not_found(
        store.delete_service(acc, &a.service.id, &actor, NOW).await,
        "delete_service",
    );
    assert_not_found(
        store
            .set_service_state(acc, &a.service.id, "disabled", &actor, NOW)
            .await,
        "set_service_state",
    );
    assert_not_found(
        store
            .set_integration_key(acc, &a.service.id, "stolen", &actor, NOW)
            .await,
        "set_integration_key",
    );
    assert_invalid(
        store
            .create_service(acc, &service_input("x", &a.policy.id), "k-x", &actor, NOW)
            .await,
        "policy_id",
    );
    let services = store.list_services(acc).await.expect("list_services");
    assert_eq!(
        services.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [b.service.id.as_str()]
    );

    // Incidents and events.
    let new = new_incident("b sneaks in", Some("a-key"));
    assert_not_found(
        store
            .trigger_incident(acc, &a.service.id, &new, true, &actor, NOW)
            .await,
        "trigger_incident",
    );
    assert_not_found(store.get_incident(acc, &incident.id).await, "get_incident");
    let patch = IncidentPatch {
        message: Some("x".into()),
        ..IncidentPatch::default()
    };
    assert_not_found(
        store
            .update_incident(acc, &incident.id, &patch, &actor, NOW)
            .await,
        "update_incident",
    );
    for action in [
        IncidentAction::Acknowledge,
        IncidentAction::Resolve,
        IncidentAction::Escalate,
        IncidentAction::Trigger,
    ] {
        assert_not_found(
            store
                .act_on_incident(acc, &incident.id, action, &actor, NOW)
                .await,
            "act_on_incident",
        );
    }
    assert_not_found(
        store.delete_incident(acc, &incident.id, &actor, NOW).await,
        "delete_incident",
    );
    let found = store
        .find_open_incident(acc, &a.service.id, Some("a-key"), None)
        .await
        .expect("find_open_incident");
    assert!(found.is_none());
    let (list, total) = store
        .list_incidents(acc, &page(100, 0))
        .await
        .expect("list_incidents");
    assert!(list.is_empty());
    assert_eq!(total, 0);
    let filter = IncidentFilter {
        service_id: Some(a.service.id.clone()),
        ..page(100, 0)
    };
    assert_eq!(store.list_incidents(acc, &filter).await.expect("list").1, 0);
    assert!(events_of(store, acc, "incident", &incident.id)
        .await
        .is_empty());
    let (all, _) = store
        .list_events(
            acc,
            &EventFilter {
                source: None,
                limit: 1000,
                offset: 0,
            },
        )
        .await
        .expect("list_events");
    assert!(all
        .iter()
        .all(|e| e.source_id != a.service.id && e.source_id != incident.id));

    // Nothing of A's changed.
    let still = store
        .get_incident(&a.t.account, &incident.id)
        .await
        .expect("a's incident");
    assert_eq!(
        (still.state.as_str(), still.message.as_str()),
        ("triggered", "a is down")
    );
    let svc = store
        .get_service(&a.t.account, &a.service.id)
        .await
        .expect("a's service");
    assert_eq!(
        (svc.state.as_str(), svc.integration_key.as_str()),
        ("enabled", "integration-key-a")
    );
}

pub(crate) async fn user_email_is_unique(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let other = tenant(store, "other").await;
    let alice = store
        .create_user(
            &t.account,
            &user_input("Alice", "alice@x.test", "responder"),
            &t.actor(),
            NOW + 1,
        )
        .await
        .expect("create_user");
    assert_eq!(
        (
            alice.name.as_str(),
            alice.role.as_str(),
            alice.time_zone.as_str()
        ),
        ("Alice", "responder", "Europe/Berlin")
    );
    assert_eq!((alice.created_at, alice.updated_at), (NOW + 1, NOW + 1));
    assert_taken(
        store
            .create_user(
                &t.account,
                &user_input("Alice 2", "alice@x.test", "observer"),
                &t.actor(),
                NOW,
            )
            .await,
        "email",
    );
    // Globally unique, across accounts.
    assert_taken(
        store
            .create_user(
                &other.account,
                &user_input("Alice 3", "alice@x.test", "observer"),
                &other.actor(),
                NOW,
            )
            .await,
        "email",
    );
    let bob = store
        .create_user(
            &t.account,
            &user_input("Bob", "bob@x.test", "observer"),
            &t.actor(),
            NOW + 2,
        )
        .await
        .expect("create_user");
    assert_taken(
        store
            .update_user(
                &t.account,
                &bob.id,
                &user_input("Bob", "alice@x.test", "observer"),
                &json!({}),
                Revoke::Nothing,
                &t.actor(),
                NOW,
            )
            .await,
        "email",
    );
    let changes = json!({"name": ["Bob", "Robert"], "role": ["observer", "responder"]});
    let mut input = user_input("Robert", "bob@x.test", "responder");
    input.password_hash = Some("$argon2id$fake".into());
    let bob2 = store
        .update_user(
            &t.account,
            &bob.id,
            &input,
            &changes,
            Revoke::Nothing,
            &t.actor(),
            NOW + 3,
        )
        .await
        .expect("update_user");
    assert_eq!(
        (bob2.name.as_str(), bob2.role.as_str()),
        ("Robert", "responder")
    );
    assert_eq!(bob2.password_hash.as_deref(), Some("$argon2id$fake"));
    assert_eq!((bob2.created_at, bob2.updated_at), (NOW + 2, NOW + 3));
    assert_eq!(
        store
            .get_user(&t.account, &bob.id)
            .await
            .expect("get_user")
            .name,
        "Robert"
    );

    let users = store.list_users(&t.account).await.expect("list_users");
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["acme owner", "Alice", "Robert"], "oldest first");

    let events = events_of(store, &t.account, "user", &bob.id).await;
    assert_eq!(actions(&events), ["user.update", "user.create"]);
    assert_eq!(events[0].changeset.0, changes);
    assert_eq!(
        events[1].changeset.0,
        json!({"name": "Bob", "email": "bob@x.test", "role": "observer", "time_zone": "Europe/Berlin"})
    );
    assert_not_found(store.get_user(&t.account, "nobody00").await, "unknown user");
}

pub(crate) async fn last_admin_is_kept(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let owner = store.get_user(&t.account, &t.admin).await.expect("owner");
    let demote = user_input(&owner.name, &owner.email, "responder");
    assert_conflict(
        store
            .delete_user(&t.account, &t.admin, &t.actor(), NOW)
            .await,
    );
    assert_conflict(
        store
            .update_user(
                &t.account,
                &t.admin,
                &demote,
                &json!({}),
                Revoke::Nothing,
                &t.actor(),
                NOW,
            )
            .await,
    );
    // Renaming the last admin while keeping the role is fine.
    let keep = user_input("Renamed", &owner.email, "admin");
    store
        .update_user(
            &t.account,
            &t.admin,
            &keep,
            &json!({}),
            Revoke::Nothing,
            &t.actor(),
            NOW,
        )
        .await
        .expect("rename last admin");

    let second = store
        .create_user(
            &t.account,
            &user_input("Second", "second@x.test", "admin"),
            &t.actor(),
            NOW,
        )
        .await
        .expect("second admin");
    store
        .update_user(
            &t.account,
            &t.admin,
            &demote,
            &json!({}),
            Revoke::Nothing,
            &t.actor(),
            NOW,
        )
        .await
        .expect("demote with another admin left");
    let demote_second = user_input("Second", "second@x.test", "observer");
    assert_conflict(
        store
            .update_user(
                &t.account,
                &second.id,
                &demote_second,
                &json!({}),
                Revoke::Nothing,
                &t.actor(),
                NOW,
            )
            .await,
    );
    assert_conflict(
        store
            .delete_user(&t.account, &second.id, &t.actor(), NOW)
            .await,
    );
    // A non-admin can go.
    store
        .delete_user(&t.account, &t.admin, &t.actor(), NOW)
        .await
        .expect("delete responder");
    assert_not_found(store.get_user(&t.account, &t.admin).await, "deleted user");
    assert_not_found(
        store
            .delete_user(&t.account, &t.admin, &t.actor(), NOW)
            .await,
        "deleted twice",
    );
    // The deleted user's tokens went with them.
    assert!(store
        .principal_by_token(&t.token_hash)
        .await
        .expect("lookup")
        .is_none());
    let events = events_of(store, &t.account, "user", &t.admin).await;
    assert_eq!(
        actions(&events),
        ["user.delete", "user.update", "user.update"]
    );
}

pub(crate) async fn user_named_in_a_rule_cannot_be_deleted(store: Arc<dyn Store>) {
    let store = &*store;
    let w = world(store, "acme").await;
    let incident = w.trigger(store, "down", None, NOW).await;
    assert_eq!(
        incident.current_user_id.as_deref(),
        Some(w.users[0].as_str())
    );
    assert_conflict(
        store
            .delete_user(&w.t.account, &w.users[0], &w.t.actor(), NOW)
            .await,
    );
    // Reassign the rule, then the user can go; the incident loses its assignee.
    store
        .update_rule(
            &w.t.account,
            &w.policy.id,
            &w.rules[0].id,
            &rule_input(&w.users[1]),
            &json!({}),
            &w.t.actor(),
            NOW,
        )
        .await
        .expect("update_rule");
    store
        .delete_user(&w.t.account, &w.users[0], &w.t.actor(), NOW)
        .await
        .expect("delete_user");
    let incident = store
        .get_incident(&w.t.account, &incident.id)
        .await
        .expect("incident");
    assert_eq!(incident.current_user_id, None);
    assert_eq!(
        incident.current_policy_rule_id.as_deref(),
        Some(w.rules[0].id.as_str())
    );
}
