//! Token kinds and expiry, revocation with a user change or by an admin,
//! calendar feed tokens and invitations.

use klaxon_store::InvitationInput;

use super::*;

const DAY: Millis = 24 * 60 * MINUTE;

async fn principal(store: &dyn Store, hash: &str) -> Option<klaxon_store::Principal> {
    store.principal_by_token(hash).await.expect("lookup")
}

pub(crate) async fn tokens_expire_and_sessions_slide(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let session = TokenInput {
        name: "session".into(),
        kind: "session".into(),
        expires_at: Some(NOW + 30 * DAY),
    };
    let token = store
        .create_token(&t.account, &t.admin, &session, "session-hash", NOW + 1)
        .await
        .expect("create_token");
    assert_eq!(
        (token.kind.as_str(), token.expires_at),
        ("session", Some(NOW + 30 * DAY))
    );
    let p = principal(store, "session-hash").await.expect("a principal");
    assert_eq!(
        (p.kind.as_str(), p.expires_at, p.token_id.as_str()),
        ("session", Some(NOW + 30 * DAY), token.id.as_str())
    );

    // Using a session moves its expiry; a touch without a renewal keeps it.
    store
        .touch_token(&p.token_id, NOW + DAY, Some(NOW + 31 * DAY))
        .await
        .expect("touch");
    let p = principal(store, "session-hash").await.expect("a principal");
    assert_eq!(
        (p.last_used_at, p.expires_at),
        (Some(NOW + DAY), Some(NOW + 31 * DAY))
    );
    store
        .touch_token(&p.token_id, NOW + 2 * DAY, None)
        .await
        .expect("touch");
    let p = principal(store, "session-hash").await.expect("a principal");
    assert_eq!(
        (p.last_used_at, p.expires_at),
        (Some(NOW + 2 * DAY), Some(NOW + 31 * DAY))
    );

    // An API token with an expiry; once past it, the next token the user
    // gets clears the expired ones away.
    store
        .create_token(
            &t.account,
            &t.admin,
            &api_token("ci", Some(NOW + DAY)),
            "ci-hash",
            NOW + 2,
        )
        .await
        .expect("create_token");
    let listed = store.list_tokens(&t.account, &t.admin).await.expect("list");
    let kinds: Vec<(&str, &str, Option<Millis>)> = listed
        .iter()
        .map(|t| (t.name.as_str(), t.kind.as_str(), t.expires_at))
        .collect();
    assert_eq!(
        kinds,
        [
            ("ci", "api", Some(NOW + DAY)),
            ("session", "session", Some(NOW + 31 * DAY)),
            ("default", "api", None),
        ]
    );
    store
        .create_token(
            &t.account,
            &t.admin,
            &api_token("later", None),
            "later-hash",
            NOW + DAY,
        )
        .await
        .expect("create_token");
    assert!(principal(store, "ci-hash").await.is_none(), "expired: gone");
    assert!(principal(store, "session-hash").await.is_some());
    assert!(principal(store, &t.token_hash).await.is_some());
}

pub(crate) async fn user_changes_revoke_tokens(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    for n in 0..3 {
        store
            .create_token(
                &t.account,
                &t.admin,
                &api_token(&format!("t{n}"), None),
                &format!("hash-{n}"),
                NOW,
            )
            .await
            .expect("create_token");
    }
    let keep = principal(store, "hash-1").await.expect("a principal");
    let input = user_input("acme owner", "owner@acme.test", "admin");
    let user = store
        .update_user(
            &t.account,
            &t.admin,
            &input,
            &json!({"password": "changed"}),
            Revoke::AllBut(&keep.token_id),
            &t.actor(),
            NOW + 1,
        )
        .await
        .expect("update_user");
    assert_eq!(user.id, t.admin);
    let left: Vec<String> = store
        .list_tokens(&t.account, &t.admin)
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        left,
        [keep.token_id.as_str()],
        "only the kept token is left"
    );
    let events = events_of(store, &t.account, "user", &t.admin).await;
    assert_eq!(events[0].action, "user.update");
    assert_eq!(
        events[0].changeset.0,
        json!({"password": "changed", "tokens_revoked": 3})
    );

    // All of them; and a change that revokes nothing says nothing of it.
    store
        .update_user(
            &t.account,
            &t.admin,
            &input,
            &json!({}),
            Revoke::All,
            &t.actor(),
            NOW + 2,
        )
        .await
        .expect("update_user");
    assert!(store
        .list_tokens(&t.account, &t.admin)
        .await
        .expect("list")
        .is_empty());
    store
        .update_user(
            &t.account,
            &t.admin,
            &input,
            &json!({"name": ["a", "b"]}),
            Revoke::Nothing,
            &t.actor(),
            NOW + 3,
        )
        .await
        .expect("update_user");
    let events = events_of(store, &t.account, "user", &t.admin).await;
    assert_eq!(events[0].changeset.0, json!({"name": ["a", "b"]}));
    assert_eq!(events[1].changeset.0, json!({"tokens_revoked": 1}));
}

pub(crate) async fn admins_revoke_other_users_tokens(store: Arc<dyn Store>) {
    let store = &*store;
    let a = world(store, "a").await;
    let b = world(store, "b").await;
    let responder = &a.users[0];
    let token = store
        .create_token(
            &a.t.account,
            responder,
            &api_token("laptop", None),
            "responder-hash",
            NOW,
        )
        .await
        .expect("create_token");
    // Another account cannot reach it, nor list it.
    assert_not_found(
        store
            .delete_token(&b.t.account, responder, &token.id, &b.t.actor(), NOW)
            .await,
        "another account",
    );
    assert!(store
        .list_tokens(&b.t.account, responder)
        .await
        .expect("list")
        .is_empty());
    // Nor can the token be named under another user of its account.
    assert_not_found(
        store
            .delete_token(&a.t.account, &a.users[1], &token.id, &a.t.actor(), NOW)
            .await,
        "another user",
    );
    store
        .delete_token(&a.t.account, responder, &token.id, &a.t.actor(), NOW + 1)
        .await
        .expect("the admin revokes it");
    assert!(principal(store, "responder-hash").await.is_none());
    let events = events_of(store, &a.t.account, "token", &token.id).await;
    assert_eq!(actions(&events), ["token.delete", "token.create"]);
    assert_eq!(events[0].actor_id.as_deref(), Some(a.t.admin.as_str()));
    assert_eq!(events[0].changeset.0, json!({"user_id": responder}));
}

pub(crate) async fn feed_tokens_are_one_per_user_and_schedule(store: Arc<dyn Store>) {
    let store = &*store;
    let a = world(store, "a").await;
    let b = world(store, "b").await;
    let schedule = store
        .create_schedule(&a.t.account, "Primary", "UTC", &a.t.actor(), NOW)
        .await
        .expect("create_schedule");
    let other = store
        .create_schedule(&a.t.account, "Secondary", "UTC", &a.t.actor(), NOW)
        .await
        .expect("create_schedule");
    let user = &a.users[0];
    let first = store
        .create_feed_token(&a.t.account, user, &schedule.id, "feed-1", NOW)
        .await
        .expect("create_feed_token");
    assert_eq!(
        (first.kind.as_str(), first.schedule_id.as_deref()),
        ("feed", Some(schedule.id.as_str()))
    );
    let p = principal(store, "feed-1").await.expect("a principal");
    assert_eq!(
        (
            p.kind.as_str(),
            p.schedule_id.as_deref(),
            p.user_id.as_str()
        ),
        ("feed", Some(schedule.id.as_str()), user.as_str())
    );
    // A second one for the same schedule replaces the first; another
    // schedule's, or another user's, is a token of its own.
    store
        .create_feed_token(&a.t.account, user, &schedule.id, "feed-2", NOW + 1)
        .await
        .expect("create_feed_token");
    assert!(principal(store, "feed-1").await.is_none(), "replaced");
    store
        .create_feed_token(&a.t.account, user, &other.id, "feed-3", NOW + 2)
        .await
        .expect("another schedule");
    store
        .create_feed_token(&a.t.account, &a.users[1], &schedule.id, "feed-4", NOW + 2)
        .await
        .expect("another user");
    for hash in ["feed-2", "feed-3", "feed-4"] {
        assert!(principal(store, hash).await.is_some(), "{hash}");
    }
    // Another account's schedule does not exist here.
    assert_not_found(
        store
            .create_feed_token(&b.t.account, &b.users[0], &schedule.id, "feed-x", NOW)
            .await,
        "another account's schedule",
    );
    assert_not_found(
        store
            .delete_feed_token(&b.t.account, user, &schedule.id, NOW)
            .await,
        "another account",
    );
    store
        .delete_feed_token(&a.t.account, user, &schedule.id, NOW + 3)
        .await
        .expect("delete_feed_token");
    assert!(principal(store, "feed-2").await.is_none());
    assert_not_found(
        store
            .delete_feed_token(&a.t.account, user, &schedule.id, NOW + 3)
            .await,
        "deleted twice",
    );
    // Deleting a schedule takes its feed tokens with it.
    store
        .delete_schedule(&a.t.account, &schedule.id, &a.t.actor(), NOW + 4)
        .await
        .expect("delete_schedule");
    assert!(principal(store, "feed-4").await.is_none());
    assert!(principal(store, "feed-3").await.is_some());
}

fn invitation(role: &str, email: Option<&str>, expires_at: Millis) -> InvitationInput {
    InvitationInput {
        role: role.into(),
        email: email.map(Into::into),
        expires_at,
    }
}

pub(crate) async fn invitations_work_once(store: Arc<dyn Store>) {
    let store = &*store;
    let t = tenant(store, "acme").await;
    let made = store
        .create_invitation(
            &t.account,
            &invitation("observer", None, NOW + DAY),
            "code-1",
            &t.actor(),
            NOW,
        )
        .await
        .expect("create_invitation");
    assert_eq!(
        (made.role.as_str(), made.used_at, made.expires_at),
        ("observer", None, NOW + DAY)
    );
    let mut newcomer = user_input("Nina", "nina@acme.test", "admin");
    newcomer.password_hash = Some("$argon2id$fake".into());
    let (used, user, token) = store
        .accept_invitation("code-1", &newcomer, "nina-token", NOW + 1)
        .await
        .expect("accept_invitation");
    assert_eq!(used.id, made.id);
    assert_eq!(
        (user.account_id.as_str(), user.role.as_str()),
        (t.account.as_str(), "observer"),
        "the invitation's role, not the one asked for"
    );
    assert_eq!((token.kind.as_str(), token.expires_at), ("api", None));
    let p = principal(store, "nina-token").await.expect("a principal");
    assert_eq!(p.user_id, user.id);
    let listed = store.list_invitations(&t.account).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].used_at, listed[0].used_by.as_deref()),
        (Some(NOW + 1), Some(user.id.as_str()))
    );
    let mut again = user_input("Other", "other@acme.test", "admin");
    again.password_hash = Some("$argon2id$fake".into());
    assert_not_found(
        store
            .accept_invitation("code-1", &again, "other-token", NOW + 2)
            .await,
        "used twice",
    );
    assert_not_found(
        store
            .accept_invitation("no-such-code", &again, "other-token", NOW + 2)
            .await,
        "unknown code",
    );
    // Expired: unusable from its expiry on.
    store
        .create_invitation(
            &t.account,
            &invitation("responder", None, NOW + DAY),
            "code-2",
            &t.actor(),
            NOW,
        )
        .await
        .expect("create_invitation");
    assert_not_found(
        store
            .accept_invitation("code-2", &again, "other-token", NOW + DAY)
            .await,
        "expired",
    );
    let events = events_of(store, &t.account, "invitation", &made.id).await;
    assert_eq!(actions(&events), ["invitation.accept", "invitation.create"]);
    assert_eq!(events[0].actor_id.as_deref(), Some(user.id.as_str()));
}

pub(crate) async fn invitations_check_the_email_and_stay_in_their_account(store: Arc<dyn Store>) {
    let store = &*store;
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let made = store
        .create_invitation(
            &a.account,
            &invitation("responder", Some("rita@a.test"), NOW + DAY),
            "code-rita",
            &a.actor(),
            NOW,
        )
        .await
        .expect("create_invitation");
    let mut someone = user_input("Sam", "sam@a.test", "responder");
    someone.password_hash = Some("$argon2id$fake".into());
    assert_invalid(
        store
            .accept_invitation("code-rita", &someone, "t1", NOW + 1)
            .await,
        "email",
    );
    // A taken email refuses the registration and leaves the invitation
    // usable.
    let mut taken = user_input("Rita", "owner@b.test", "responder");
    taken.password_hash = Some("$argon2id$fake".into());
    let open = store
        .create_invitation(
            &a.account,
            &invitation("responder", None, NOW + DAY),
            "code-open",
            &a.actor(),
            NOW,
        )
        .await
        .expect("create_invitation");
    assert_taken(
        store
            .accept_invitation("code-open", &taken, "t2", NOW + 1)
            .await,
        "email",
    );
    let mut rita = user_input("Rita", "rita@a.test", "responder");
    rita.password_hash = Some("$argon2id$fake".into());
    store
        .accept_invitation("code-open", &rita, "t3", NOW + 2)
        .await
        .expect("still usable after the refusal");
    // Another account neither lists nor withdraws them.
    assert!(store
        .list_invitations(&b.account)
        .await
        .expect("list")
        .is_empty());
    assert_not_found(
        store
            .delete_invitation(&b.account, &made.id, &b.actor(), NOW)
            .await,
        "another account",
    );
    store
        .delete_invitation(&a.account, &made.id, &a.actor(), NOW + 3)
        .await
        .expect("withdrawn");
    let listed = store.list_invitations(&a.account).await.expect("list");
    assert_eq!(
        listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [open.id.as_str()]
    );
    let mut late = user_input("Rita Two", "rita2@a.test", "responder");
    late.password_hash = Some("$argon2id$fake".into());
    assert_not_found(
        store
            .accept_invitation("code-rita", &late, "t4", NOW + 4)
            .await,
        "withdrawn",
    );
}
