//! End-to-end checks against a real server: databases are reachable, distinct and unique.

use std::process::Command;
use std::time::Instant;

use klaxon_testkit::{fresh_postgres_url, PgServer};

/// Runs one SQL statement with `psql` against `url` and returns its unaligned output.
fn psql(url: &str, sql: &str) -> String {
    let output = Command::new(psql_binary())
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql should run");
    assert!(
        output.status.success(),
        "psql -c {sql:?} on {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The same `psql` the crate would use: next to `pg_config --bindir`, else PATH.
fn psql_binary() -> String {
    Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| format!("{}/psql", String::from_utf8_lossy(&output.stdout).trim()))
        .filter(|path| std::path::Path::new(path).is_file())
        .unwrap_or_else(|| "psql".to_owned())
}

/// The database name at the end of a URL handed out by the testkit (before any `?query`).
fn database_of(url: &str) -> &str {
    let path = url
        .split('?')
        .next()
        .expect("split yields at least one part");
    path.rsplit('/').next().expect("url has a path")
}

#[test]
fn two_databases_are_reachable_and_distinct() {
    let started = Instant::now();
    let server = PgServer::shared();
    eprintln!("PgServer::shared() took {:?}", started.elapsed());

    let started = Instant::now();
    let first = server.create_database();
    eprintln!("first create_database() took {:?}", started.elapsed());
    let started = Instant::now();
    let second = fresh_postgres_url();
    eprintln!("second create_database() took {:?}", started.elapsed());

    assert_ne!(first, second);
    assert!(
        first.starts_with("postgres://klaxon@127.0.0.1:")
            || std::env::var_os("KLAXON_TEST_POSTGRES_URL").is_some()
    );
    assert_eq!(
        psql(&first, "SELECT current_database()"),
        database_of(&first)
    );
    assert_eq!(
        psql(&second, "SELECT current_database()"),
        database_of(&second)
    );

    // Data written to one database is invisible in the other.
    psql(
        &first,
        "CREATE TABLE marker (id int); INSERT INTO marker VALUES (1)",
    );
    assert_eq!(psql(&first, "SELECT count(*) FROM marker"), "1");
    assert_eq!(
        psql(
            &second,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        ),
        "0"
    );
}

#[test]
fn url_names_the_given_database() {
    let server = PgServer::shared();
    let url = server.url("some_db");
    assert_eq!(database_of(&url), "some_db", "{url}");
    assert_eq!(
        psql(&server.url("postgres"), "SELECT current_database()"),
        "postgres"
    );
}

#[test]
fn parallel_callers_get_unique_databases() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 5;
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                (0..PER_THREAD)
                    .map(|_| fresh_postgres_url())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut urls: Vec<String> = handles
        .into_iter()
        .flat_map(|handle| handle.join().expect("creating databases should not panic"))
        .collect();
    let elapsed = started.elapsed();
    eprintln!(
        "{} concurrent create_database() calls took {elapsed:?} ({:?} each)",
        urls.len(),
        elapsed / u32::try_from(urls.len()).expect("small count")
    );
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), THREADS * PER_THREAD);
}
