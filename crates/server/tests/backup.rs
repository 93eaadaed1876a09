//! `klaxon backup` beside a running server under trigger load, and
//! `klaxon restore` into a fresh path: every incident answered 201 before
//! the backup began is in the copy, none asked for after it ended is, and
//! a server on the restored database works (it deduplicates what was
//! open). Restore refuses a served database; PostgreSQL is pointed to
//! pg_dump.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Server};
use reqwest::StatusCode;

/// One trigger: when it was sent, when its 201 came, the incident.
struct Opened {
    key: String,
    sent: Instant,
    answered: Instant,
    id: String,
}

async fn trigger_until(
    http: reqwest::Client,
    base: String,
    key: String,
    task: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Opened> {
    let mut opened = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let dedup = format!("task{task}/n{n}");
        n += 1;
        let sent = Instant::now();
        let res = http
            .put(format!("{base}/trigger"))
            .header("Authorization", format!("Token token=\"{key}\""))
            .form(&[("message", "load"), ("key", dedup.as_str())])
            .send()
            .await
            .unwrap();
        let answered = Instant::now();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: serde_json::Value = res.json().await.unwrap();
        opened.push(Opened {
            key: dedup,
            sent,
            answered,
            id: body["id"].as_str().unwrap().to_owned(),
        });
    }
    opened
}

/// Every incident id of a service, page by page.
async fn incident_ids(server: &Server, token: &str, service: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    for page in 1.. {
        let res = server
            .get(
                &format!("/services/{service}/incidents?per_page=100&page={page}"),
                token,
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        let rows = res.body.as_array().unwrap();
        if rows.is_empty() {
            return ids;
        }
        ids.extend(rows.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
    }
    unreachable!()
}

fn klaxon(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_klaxon"))
        .args(args)
        .env("KLAXON_DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .env_remove("KLAXON_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_every_acknowledged_trigger() {
    let mut server = Server::start(Backend::Sqlite).await;
    let acct = server.register("Acme").await;
    let s = server
        .setup_service(&acct, "Web", &[acct.user_id.as_str()], 1)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("klaxon-backup.db");

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            tokio::spawn(trigger_until(
                server.http.clone(),
                server.base.clone(),
                s.integration_key.clone(),
                task,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let began = Instant::now();
    let url = server.database_url.clone();
    let to = backup.to_str().unwrap().to_owned();
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || klaxon(&url, &["backup", "--to", &to]))
            .await
            .unwrap();
    let ended = Instant::now();
    assert!(ok, "backup failed: {stdout}{stderr}");
    assert!(stdout.contains("backed up"), "{stdout}");

    // The load goes on past the backup, then stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut opened = Vec::new();
    for task in tasks {
        opened.extend(task.await.unwrap());
    }
    let before: Vec<&Opened> = opened.iter().filter(|o| o.answered < began).collect();
    let after: Vec<&Opened> = opened.iter().filter(|o| o.sent > ended).collect();
    eprintln!(
        "{} triggers answered before the backup, {} sent after it ({} in all; the backup took {:?})",
        before.len(),
        after.len(),
        opened.len(),
        ended - began
    );
    assert!(
        before.len() >= 20,
        "too little load before: {}",
        before.len()
    );
    assert!(!after.is_empty(), "no load after the backup");

    // Restoring over a served database is refused.
    let (ok, _, stderr) = klaxon(
        &server.database_url,
        &["restore", "--from", backup.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(stderr.contains("stop it before restoring"), "{stderr}");
    assert!(server.terminate());

    // Into a fresh path, then a server on it.
    let restored = format!("sqlite://{}/restored/klaxon.db", dir.path().display());
    let (ok, stdout, stderr) = klaxon(&restored, &["restore", "--from", backup.to_str().unwrap()]);
    assert!(ok, "restore failed: {stdout}{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");
    server.database_url = restored;
    server.spawn();

    let ids = incident_ids(&server, &acct.token, &s.service_id).await;
    let missing: Vec<&str> = before
        .iter()
        .filter(|o| !ids.contains(&o.id))
        .map(|o| o.id.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} incidents answered 201 before the backup are missing: {missing:?}",
        missing.len(),
        before.len()
    );
    let later: Vec<&str> = after
        .iter()
        .filter(|o| ids.contains(&o.id))
        .map(|o| o.id.as_str())
        .collect();
    assert!(
        later.is_empty(),
        "triggers sent after the backup are in it: {later:?}"
    );

    // The restored server deduplicates what the backup holds open, and
    // opens what it does not.
    let res = server
        .integration(
            "trigger",
            &s.integration_key,
            &[("message", "load"), ("key", &before[0].key)],
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_MODIFIED, "{}", res.text);
    let res = server
        .integration(
            "trigger",
            &s.integration_key,
            &[("message", "load"), ("key", &after[0].key)],
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let res = server
        .put(
            &format!("/incidents/{}/acknowledge", before[1].id),
            &acct.token,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert!(server.terminate());
}

#[test]
fn restore_checks_the_file_and_postgres_is_sent_to_its_tools() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/k.db", dir.path().display());
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "SQLite format 3\0 but not really a database").unwrap();
    let (ok, _, stderr) = klaxon(&url, &["restore", "--from", junk.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("is not a SQLite database"), "{stderr}");
    assert!(!Path::new(&dir.path().join("k.db")).exists());

    let (ok, _, stderr) = klaxon(&url, &["backup", "--to", "/nonexistent-dir/b.db"]);
    assert!(!ok);
    assert!(stderr.contains("no database at"), "{stderr}");

    let pg = "postgres://klaxon@127.0.0.1:1/klaxon";
    let (ok, _, stderr) = klaxon(pg, &["backup", "--to", "x.db"]);
    assert!(!ok);
    assert!(stderr.contains("pg_dump"), "{stderr}");
    let (ok, _, stderr) = klaxon(pg, &["restore", "--from", "x.db"]);
    assert!(!ok);
    assert!(stderr.contains("pg_restore"), "{stderr}");
}
