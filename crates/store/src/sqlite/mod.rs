//! SQLite backend: the embedded default.
//!
//! One file in WAL mode with `synchronous=FULL`, so a commit is on disk
//! before the API answers 2xx. The store logic is the shared one
//! (`crate::sql`), run through rusqlite on the connection the calling task
//! holds ([`conn`]): one writer behind an async mutex, so writes never meet
//! `SQLITE_BUSY` and deduplication cannot race, and a few read-only
//! connections that WAL lets run beside it. Write transactions begin
//! `IMMEDIATE`: they take SQLite's write lock at once instead of upgrading
//! a read lock half-way.
//!
//! One process serves a database file (`klaxon serve` holds an exclusive
//! lock on `<file>.lock`, see [`lock_for_serving`]); short admin commands
//! may open it beside the server. That is what lets [`ingest`] answer the
//! ingest path's questions from memory exactly.

mod backup;
pub(crate) mod conn;
mod handoff;
mod incidents;
mod ingest;
mod migrate;
mod timers;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::{sql, Result, Store, StoreError};

pub use backup::{backup, restore, Copied};

/// The SQLite store.
pub struct SqliteStore {
    /// The writer and readers the store logic runs on.
    conns: Arc<conn::Conns>,
    /// Wakes the engine when a commit arms a timer (one process per file,
    /// so an in-process signal reaches every engine there is).
    timer_notify: Arc<tokio::sync::Notify>,
    /// Wakes the sender when a commit queues messages.
    outbox_notify: Arc<tokio::sync::Notify>,
    /// Queue of the group-commit trigger batcher (`incidents.rs`).
    triggers: tokio::sync::mpsc::Sender<incidents::TriggerJob>,
    /// Integration keys, service states and open dedup keys in memory.
    ingest: Arc<ingest::IngestState>,
    /// New incidents' first pages, claimed for the sender as written.
    handoff: Arc<handoff::Handoff>,
    /// What commits counted, for monitoring.
    counters: Arc<crate::stats::Counters>,
}

impl SqliteStore {
    /// Opens (creating if needed, with its directory) the database file a
    /// `sqlite://path` URL names.
    pub async fn connect(url: &str) -> Result<Self> {
        let path = database_path(url)?;
        create_parent(&path)?;
        let conns = Arc::new(conn::Conns::open(&path)?);
        let timer_notify: Arc<tokio::sync::Notify> = Default::default();
        let outbox_notify: Arc<tokio::sync::Notify> = Default::default();
        let ingest: Arc<ingest::IngestState> = Default::default();
        let handoff: Arc<handoff::Handoff> = Default::default();
        let counters: Arc<crate::stats::Counters> = Default::default();
        let (triggers, jobs) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(incidents::run_trigger_batcher(
            conns.clone(),
            jobs,
            incidents::Wake {
                timers: timer_notify.clone(),
                outbox: outbox_notify.clone(),
            },
            ingest.clone(),
            handoff.clone(),
            counters.clone(),
        ));
        Ok(SqliteStore {
            conns,
            timer_notify,
            outbox_notify,
            triggers,
            ingest,
            handoff,
            counters,
        })
    }
}

impl sql::Backend for SqliteStore {
    type Read<'a> = conn::Lite<conn::Reader<'a>>;
    type Write<'a> = SqliteWrite<'a>;

    async fn read(&self) -> Result<Self::Read<'_>> {
        self.conns.reader().await
    }

    async fn write(&self) -> Result<Self::Write<'_>> {
        Ok(SqliteWrite {
            tx: self.conns.begin().await?,
            store: self,
            changes: Vec::new(),
        })
    }

    const GROUP_COMMIT: bool = true;

    fn counters(&self) -> &crate::stats::Counters {
        &self.counters
    }
}

impl sql::outbox::OutboxWake for SqliteStore {
    async fn messages_queued(&self) {
        self.outbox_notify.notified().await;
    }

    fn handed_off(
        &self,
        owner: &str,
        now: klaxon_core::time::Millis,
        lease_until: klaxon_core::time::Millis,
        limit: i64,
    ) -> Vec<crate::OutgoingMessage> {
        self.handoff.take(owner, now, lease_until, limit)
    }
}

impl sql::feed::LogOrder for SqliteStore {
    // One writer: events become visible in the order they are numbered.
    const VISIBLE_IN_SEQ_ORDER: bool = true;
}

impl sql::services::ServiceLookup for SqliteStore {
    fn known_integration_target(&self, key: &str) -> Option<Option<crate::IntegrationTarget>> {
        self.ingest.integration_target(key)
    }
}

/// A write transaction on the SQLite writer.
pub(crate) struct SqliteWrite<'a> {
    tx: conn::LiteTx<tokio::sync::MutexGuard<'a, rusqlite::Connection>>,
    store: &'a SqliteStore,
    changes: Vec<sql::Change>,
}

sql::delegate_db!(SqliteWrite<'_>, tx);

impl sql::Write for SqliteWrite<'_> {
    fn record(&mut self, change: sql::Change) {
        self.changes.push(change);
    }

    async fn commit(self) -> Result<()> {
        let SqliteWrite { tx, store, changes } = self;
        // Memory moves in commit order: the change is applied before the
        // writer is released, so before any later commit (see `ingest`).
        let _writer = tx.commit()?;
        let (mut armed, mut queued) = (false, false);
        if !changes.is_empty() {
            let mut state = store.ingest.write();
            for change in changes {
                armed |= matches!(change, sql::Change::TimersArmed);
                queued |= matches!(change, sql::Change::MessagesQueued);
                if state.loaded() {
                    state.apply(change);
                }
            }
        }
        if armed {
            store.timer_notify.notify_one();
        }
        if queued {
            store.outbox_notify.notify_one();
        }
        Ok(())
    }
}

/// Holds the lock that makes a process the only server of a SQLite file;
/// released when dropped (or when the process dies, however it dies).
#[derive(Debug)]
pub struct ServeLock {
    _file: std::fs::File,
}

/// Takes the serving lock of the database file a `sqlite://path` URL
/// names: an exclusive lock on `<path>.lock`. A second server on the same
/// file gets a clear error at once instead of silently breaking the
/// one-writer assumptions; admin commands (`migrate`, `bootstrap`) do not
/// take it and work beside a running server.
pub fn lock_for_serving(url: &str) -> Result<ServeLock> {
    let db = database_path(url)?;
    create_parent(&db)?;
    match try_lock(&db)? {
        Some(lock) => {
            // This process alone writes the file now: its ids may follow
            // time, which keeps every index keyed by id appended at its
            // end instead of written all over.
            crate::util::order_ids();
            Ok(lock)
        }
        None => Err(StoreError::Conflict(format!(
            "another klaxon server is already serving {} (lock {} is held); \
             one process serves a SQLite file, use PostgreSQL to run several",
            db.display(),
            lock_path(&db).display()
        ))),
    }
}

/// `<db>.lock`, the serving lock's file.
fn lock_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

/// Takes the serving lock of `db` if nobody holds it (`None` if somebody
/// does): servers, and restores, which must not run beside one.
fn try_lock(db: &Path) -> Result<Option<ServeLock>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(db))
        .map_err(StoreError::from)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(ServeLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        use sql::Db;
        let _: (i64,) = self
            .conns
            .reader()
            .await?
            .fetch_one(sql::query("SELECT 1"))
            .await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        let writer = self.conns.writer().await;
        migrate::run(&writer)?;
        crate::util::raise_id_floor(newest_ordered_id(&writer)?);
        drop(writer);
        // The schema is current: take the ingest facts into memory, holding
        // the writer so that no commit falls in between.
        let mut tx = self.conns.begin().await?;
        self.ingest.load(&mut tx).await
    }

    async fn close(&self) {
        // Pages claimed at their queueing that the sender never took go
        // back to the queue: the next start sends them at once instead of
        // when their lease runs out.
        let untaken = self.handoff.drain();
        if !untaken.is_empty() {
            if let Err(err) = self.requeue(&untaken).await {
                tracing::warn!(error = %err, count = untaken.len(), "could not requeue untaken pages; they are sent when their lease runs out");
            }
        }
        self.conns.close();
    }
}

impl SqliteStore {
    /// Puts claimed messages back in the queue, as if never claimed.
    async fn requeue(&self, ids: &[String]) -> Result<()> {
        use sql::{Db, Write};
        let mut tx = sql::Backend::write(self).await?;
        for chunk in ids.chunks(500) {
            let mut q = sql::query(
                "UPDATE outbox SET status = 'queued', lease_owner = NULL, lease_until = NULL,
                    attempts = attempts - 1 WHERE status = 'sending' AND id IN ",
            );
            q.push_list(chunk);
            tx.execute(q).await?;
        }
        tx.commit().await
    }
}

/// The number of the greatest id below a day from now in any table keyed
/// by id: where a server that ran before left off, should the clock have
/// gone back since (see `util::order_ids`). Random ids below the bound
/// may raise it further; that only moves ordered ids on a little.
fn newest_ordered_id(conn: &rusqlite::Connection) -> Result<u64> {
    use klaxon_core::id::{ordered_floor, PublicId};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Some(bound) = PublicId::from_number(ordered_floor(now + 86_400)) else {
        return Ok(0);
    };
    let tables: Vec<String> = conn
        .prepare(
            "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c
             WHERE m.type = 'table' AND c.name = 'id' AND c.type = 'TEXT'",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut newest = 0;
    for table in tables {
        let id: Option<String> = conn.query_row(
            &format!("SELECT max(id) FROM \"{table}\" WHERE id < ?1"),
            [bound.as_str()],
            |row| row.get(0),
        )?;
        if let Some(id) = id.as_deref().and_then(PublicId::parse) {
            newest = newest.max(id.number());
        }
    }
    Ok(newest)
}

/// The file a `sqlite://path` (or `sqlite:path`) URL names; a query string
/// (`?mode=rwc`) is ignored.
fn database_path(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Invalid {
            field: "database",
            message: "must name a file, like sqlite://./klaxon-data/klaxon.db".into(),
        });
    }
    Ok(PathBuf::from(path))
}

/// Creates the directory a database file is to live in.
fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(StoreError::from)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{database_path, newest_ordered_id};
    use klaxon_core::id::{ordered_floor, PublicId};
    use std::path::Path;

    /// Where a previous server left off is found in any table keyed by id,
    /// and ids of the far future (random ones) are passed over.
    #[test]
    fn newest_ordered_id_reads_every_id_table() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory db");
        conn.execute_batch(
            "CREATE TABLE a (id TEXT PRIMARY KEY); CREATE TABLE b (seq INTEGER PRIMARY KEY, id TEXT UNIQUE);
             CREATE TABLE c (name TEXT PRIMARY KEY);",
        )
        .expect("schema");
        assert_eq!(newest_ordered_id(&conn).expect("empty"), 0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let id =
            |secs: u64, n: u64| PublicId::from_number(ordered_floor(secs) + n).expect("in range");
        let newest = id(now, 7);
        for (table, id) in [
            ("a", id(now - 60, 0)),
            ("b", newest),
            ("a", id(now + 10 * 86_400, 0)),
        ] {
            conn.execute(
                &format!("INSERT INTO {table} (id) VALUES (?1)"),
                [id.as_str()],
            )
            .expect("insert");
        }
        conn.execute("INSERT INTO c (name) VALUES ('zzzzzzzz')", [])
            .expect("insert");
        assert_eq!(newest_ordered_id(&conn).expect("read"), newest.number());
    }

    #[test]
    fn database_urls() {
        let path = |url| database_path(url).expect("a path");
        assert_eq!(path("sqlite://./a/b.db"), Path::new("./a/b.db"));
        assert_eq!(path("sqlite:///tmp/x.db"), Path::new("/tmp/x.db"));
        assert_eq!(path("sqlite:x.db?mode=rwc"), Path::new("x.db"));
        assert!(database_path("sqlite://").is_err());
        assert!(database_path("sqlite::memory:").is_err());
    }
}
