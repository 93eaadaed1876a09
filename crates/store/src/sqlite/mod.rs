//! SQLite backend: the embedded default.
//!
//! One file in WAL mode with `synchronous=FULL`, so a commit is on disk
//! before the API answers 2xx. All writes go through a single-connection
//! pool: SQLite has one writer at a time anyway, and serialising writers in
//! the process makes every write transaction run without `SQLITE_BUSY`
//! retries, which is also what makes deduplication race-free here. Reads use
//! a separate pool of read-only connections, which WAL lets run alongside
//! the writer. Write transactions begin `IMMEDIATE`: they take SQLite's
//! write lock at once instead of upgrading a read lock half-way.
//!
//! One process serves a database file (`klaxon serve` holds an exclusive
//! lock on `<file>.lock`, see [`lock_for_serving`]); short admin commands
//! may open it beside the server. That is what lets [`ingest`] answer the
//! ingest path's questions from memory exactly.

pub(crate) mod conn;
mod incidents;
mod ingest;
mod policies;
mod schedules;
mod timers;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{SqliteConnection, SqlitePool};

use crate::util::new_id;
use crate::{sql, Actor, Result, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite store.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Wakes the engine when a commit arms a timer (one process per file,
    /// so an in-process signal reaches every engine there is).
    timer_notify: std::sync::Arc<tokio::sync::Notify>,
    /// Queue of the group-commit trigger batcher (`incidents.rs`).
    triggers: tokio::sync::mpsc::Sender<incidents::TriggerJob>,
    /// Integration keys, service states and open dedup keys in memory.
    ingest: std::sync::Arc<ingest::IngestState>,
    /// The writer and readers the shared store logic runs on.
    conns: conn::Conns,
}

impl SqliteStore {
    /// Opens (creating if needed, with its directory) the database file a
    /// `sqlite://path` URL names.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = opts.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(StoreError::from)?;
            }
        }
        // A local file's connection cannot go stale: no ping before each use
        // (it would cost every transaction a round trip to the worker).
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone().read_only(true))
            .await?;
        let timer_notify: std::sync::Arc<tokio::sync::Notify> = Default::default();
        let ingest: std::sync::Arc<ingest::IngestState> = Default::default();
        let conns = conn::Conns::open(opts.get_filename())?;
        let (triggers, jobs) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(incidents::run_trigger_batcher(
            writer.clone(),
            jobs,
            timer_notify.clone(),
            ingest.clone(),
        ));
        Ok(SqliteStore {
            writer,
            reader,
            timer_notify,
            triggers,
            ingest,
            conns,
        })
    }

    /// Begins a write transaction, taking the write lock at once.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Commits, then records the change in the in-memory ingest state
    /// before any later commit can (see [`ingest`]).
    async fn commit_then(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        record: impl FnOnce(&mut ingest::Inner),
    ) -> Result<()> {
        commit_then(&self.ingest, tx, record).await
    }
}

/// [`SqliteStore::commit_then`] for tasks that hold the state, not the store.
async fn commit_then(
    ingest: &ingest::IngestState,
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    record: impl FnOnce(&mut ingest::Inner),
) -> Result<()> {
    let _order = ingest.commit_order.lock().await;
    tx.commit().await?;
    let mut inner = ingest.write();
    if inner.loaded() {
        record(&mut inner);
    }
    Ok(())
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

impl sql::Db for SqliteWrite<'_> {
    fn dialect(&self) -> sql::Dialect {
        sql::Dialect::Sqlite
    }

    fn execute(&mut self, q: sql::Query<'_>) -> impl std::future::Future<Output = Result<u64>> + Send {
        self.tx.execute(q)
    }

    fn fetch_all<T: sql::FromRow + Send>(
        &mut self,
        q: sql::Query<'_>,
    ) -> impl std::future::Future<Output = Result<Vec<T>>> + Send {
        self.tx.fetch_all(q)
    }

    fn fetch_optional<T: sql::FromRow + Send>(
        &mut self,
        q: sql::Query<'_>,
    ) -> impl std::future::Future<Output = Result<Option<T>>> + Send {
        self.tx.fetch_optional(q)
    }
}

impl sql::Write for SqliteWrite<'_> {
    fn record(&mut self, change: sql::Change) {
        self.changes.push(change);
    }

    async fn commit(self) -> Result<()> {
        let SqliteWrite { tx, store, changes } = self;
        // Memory moves in commit order: the change is applied before any
        // later commit (see `ingest`).
        let _order = store.ingest.commit_order.lock().await;
        tx.commit()?;
        let mut armed = false;
        let mut inner = store.ingest.write();
        for change in changes {
            armed |= matches!(change, sql::Change::TimersArmed);
            if inner.loaded() {
                inner.apply(change);
            }
        }
        drop(inner);
        if armed {
            store.timer_notify.notify_one();
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
    let opts = SqliteConnectOptions::from_str(url)?;
    let db = opts.get_filename();
    if let Some(dir) = db.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(StoreError::from)?;
        }
    }
    let mut path = db.as_os_str().to_owned();
    path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::from)?;
    match file.try_lock() {
        Ok(()) => Ok(ServeLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Conflict(format!(
            "another klaxon server is already serving {} (lock {} is held); \
             one process serves a SQLite file, use PostgreSQL to run several",
            db.display(),
            std::path::Path::new(&path).display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.writer).await?;
        // The schema is current: take the ingest facts into memory, holding
        // the writer and the commit order so no commit falls in between.
        let mut conn = self.writer.acquire().await?;
        let _order = self.ingest.commit_order.lock().await;
        self.ingest.load(&mut conn).await
    }

    async fn close(&self) {
        self.conns.close();
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Maps a unique-constraint violation to `Taken(field)`.
pub(crate) fn taken(field: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Taken(field),
        _ => StoreError::from(err),
    }
}

/// Writes one audit event inside the caller's transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_event(
    conn: &mut SqliteConnection,
    account_id: &str,
    action: &str,
    source_type: &str,
    source_id: &str,
    actor: &Actor,
    changeset: &Value,
    now: Millis,
) -> Result<()> {
    let (actor_type, actor_id) = actor.parts();
    sqlx::query(
        "INSERT INTO events (id, account_id, action, source_type, source_id, actor_type, actor_id, changeset, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new_id())
    .bind(account_id)
    .bind(action)
    .bind(source_type)
    .bind(source_id)
    .bind(actor_type)
    .bind(actor_id)
    .bind(Json(changeset))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// `Ok(())` when a statement touched a row, `NotFound` otherwise.
pub(crate) fn found(rows: u64) -> Result<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}
