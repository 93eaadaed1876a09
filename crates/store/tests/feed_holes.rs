//! The audit log as a feed on PostgreSQL, where transactions commit in
//! any order: a number taken by a transaction still running is a hole the
//! feed does not read past, until it commits or the caller declares it
//! rolled back. (SQLite writes one transaction at a time and has none.)
#![allow(clippy::unwrap_used)]

use klaxon_store::{Actor, Store, UserInput};
use sqlx::Connection;

const NOW: i64 = 1_700_000_000_000;

/// Inserts an event of `account` on a raw connection, in the caller's
/// transaction.
async fn insert_event(conn: &mut sqlx::PgConnection, account: &str, id: &str) {
    sqlx::query(
        "INSERT INTO events (id, account_id, action, source_type, source_id, actor_type, changeset, created_at)
         VALUES ($1, $2, 'test.raw', 'test', $1, 'system', '{}', $3)",
    )
    .bind(id)
    .bind(account)
    .bind(NOW)
    .execute(conn)
    .await
    .unwrap();
}

async fn policy(store: &dyn Store, account: &str, name: &str) {
    store
        .create_policy(account, name, 1, &Actor::System, NOW)
        .await
        .unwrap();
}

fn actions(feed: &klaxon_store::EventFeed) -> Vec<&str> {
    feed.events
        .iter()
        .map(|e| e.event.action.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_waits_at_a_hole_until_it_fills_or_is_settled() {
    let url = tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
        .await
        .unwrap();
    let store = klaxon_store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let owner = UserInput {
        name: "Owner".into(),
        email: "owner@holes.test".into(),
        role: "admin".into(),
        time_zone: "UTC".into(),
        password_hash: None,
    };
    let (account, _, _) = store
        .create_account("Holes", &owner, "hash", NOW)
        .await
        .unwrap();
    let account = account.id;
    let start = store.latest_event_seq().await.unwrap();
    let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();

    // A transaction takes a number and is still running when a later
    // number commits.
    let mut slow = raw.begin().await.unwrap();
    insert_event(&mut slow, &account, "rawevt01").await;
    policy(&*store, &account, "after the slow one").await;
    let feed = store.event_feed(&account, start, 0, 100).await.unwrap();
    assert_eq!(feed.through, start, "nothing read past the hole");
    assert_eq!(feed.hole, Some((start + 1, start + 1)));
    assert!(feed.events.is_empty());
    // Once it commits, both are read, in order.
    slow.commit().await.unwrap();
    let feed = store.event_feed(&account, start, 0, 100).await.unwrap();
    assert_eq!(feed.hole, None);
    assert_eq!(feed.through, start + 2);
    assert_eq!(actions(&feed), ["test.raw", "policy.create"]);

    // A number taken by a transaction that rolls back stays a hole until
    // the caller settles it.
    let after = feed.through;
    let mut lost = raw.begin().await.unwrap();
    insert_event(&mut lost, &account, "rawevt02").await;
    lost.rollback().await.unwrap();
    policy(&*store, &account, "after the lost one").await;
    let feed = store.event_feed(&account, after, 0, 100).await.unwrap();
    assert_eq!(
        (feed.through, feed.hole),
        (after, Some((after + 1, after + 1)))
    );
    let feed = store
        .event_feed(&account, after, after + 1, 100)
        .await
        .unwrap();
    assert_eq!((feed.through, feed.hole), (after + 2, None));
    assert_eq!(actions(&feed), ["policy.create"]);
    store.close().await;
}
