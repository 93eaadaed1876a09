//! Server secrets and single-use links.

use super::*;

pub(crate) async fn secrets_are_made_once(store: Arc<dyn Store>) {
    let first = store.secret("links", "aaaa", NOW).await.unwrap();
    assert_eq!(first, "aaaa");
    // A later (or another process's) fresh value loses to the stored one.
    assert_eq!(
        store.secret("links", "bbbb", NOW + 1).await.unwrap(),
        "aaaa"
    );
    assert_eq!(store.secret("other", "cccc", NOW).await.unwrap(), "cccc");
    // Racing first uses agree on one value.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.secret("raced", &format!("v{i}"), NOW).await })
        })
        .collect();
    let mut seen = HashSet::new();
    for r in racers {
        seen.insert(r.await.unwrap().unwrap());
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
}

pub(crate) async fn links_work_once(store: Arc<dyn Store>) {
    let expires = NOW + 60_000;
    assert!(store.use_link("link-a", expires, NOW).await.unwrap());
    assert!(!store.use_link("link-a", expires, NOW + 1).await.unwrap());
    assert!(store.use_link("link-b", expires, NOW).await.unwrap());
    // Concurrent uses of one link: exactly one wins.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.use_link("link-c", expires, NOW).await })
        })
        .collect();
    let mut wins = 0;
    for r in racers {
        wins += usize::from(r.await.unwrap().unwrap());
    }
    assert_eq!(wins, 1);
    // Once past its expiry the row is swept (the signer refuses the link
    // before asking, so a reuse cannot sneak through).
    assert!(store
        .use_link("link-d", expires + 10, expires + 5)
        .await
        .unwrap());
    assert!(store
        .use_link("link-a", expires + 60_000, expires + 5)
        .await
        .unwrap());
}
