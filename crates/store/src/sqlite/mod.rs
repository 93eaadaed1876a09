//! SQLite backend: the embedded default.
//!
//! One file in WAL mode with `synchronous=FULL`, so a commit is on disk
//! before the API answers 2xx. All writes go through a single-connection
//! pool: SQLite has one writer at a time anyway, and serialising writers in
//! the process makes every write transaction run without `SQLITE_BUSY`
//! retries, which is also what makes deduplication race-free here. Reads use
//! a separate pool of read-only connections, which WAL lets run alongside
//! the writer. One process per database file.

mod accounts;
mod incidents;
mod policies;
mod schedules;
mod services;
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
use crate::{Actor, Result, Store, StoreError};

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
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(e.into()))?;
            }
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.read_only(true))
            .await?;
        let timer_notify: std::sync::Arc<tokio::sync::Notify> = Default::default();
        let (triggers, jobs) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(incidents::run_trigger_batcher(
            writer.clone(),
            jobs,
            timer_notify.clone(),
        ));
        Ok(SqliteStore {
            writer,
            reader,
            timer_notify,
            triggers,
        })
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
        Ok(())
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Maps a unique-constraint violation to `Taken(field)`.
pub(crate) fn taken(field: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Taken(field),
        _ => StoreError::Backend(err),
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
