//! PostgreSQL backend: the scale-out store.
//!
//! Several `klaxon serve` processes may share one database and every
//! request runs on its own pooled connection, so, unlike SQLite's single
//! writer, nothing serialises writers here except the database itself.
//! Transactions run at the default READ COMMITTED level; every
//! check-then-write first takes a row lock on the row the check is about
//! (or on its parent), so a concurrent writer waits and then, with a fresh
//! snapshot, sees the committed result.
//!
//! Parent rows that are only locked to serialise writers (an account while
//! its admins change, a policy while its rules move) are locked
//! `FOR NO KEY UPDATE`: it excludes
//! other lockers exactly like `FOR UPDATE` does, but not the `FOR KEY SHARE`
//! locks that foreign-key checks of unrelated inserts take (every audit
//! event references its account), so those never queue behind it.
//! Opening incidents serialises only triggers of the same problem, on an
//! advisory lock (see `trigger.rs`).

mod accounts;
mod incidents;
mod policies;
mod schedules;
mod services;
mod timers;
mod trigger;

use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::time::Millis;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use crate::util::new_id;
use crate::{Actor, Result, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    /// Wakes this process's engine: poked after local commits that arm
    /// timers and by the LISTEN task for other processes' NOTIFYs.
    timer_notify: std::sync::Arc<tokio::sync::Notify>,
    /// The LISTEN task starts with the first engine that waits.
    listener_started: std::sync::Once,
}

impl PgStore {
    /// Connects to the database a `postgres://…` URL names.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        Ok(PgStore {
            pool,
            timer_notify: Default::default(),
            listener_started: std::sync::Once::new(),
        })
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        // sqlx takes an advisory lock, so processes starting together migrate once.
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Maps a unique-constraint violation to `Taken(field)`.
pub(crate) fn taken(field: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Taken(field),
        _ => StoreError::from(err),
    }
}

/// Whether an error is a violation of the named unique constraint or index.
pub(crate) fn violates(err: &sqlx::Error, constraint: &str) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some(constraint))
}

/// Writes one audit event inside the caller's transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_event(
    conn: &mut PgConnection,
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
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
