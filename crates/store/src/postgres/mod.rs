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

pub(crate) mod conn;
mod timers;
mod trigger;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};

use crate::{sql, Result, Store};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    /// Wakes this process's engine: poked after local commits that arm
    /// timers and by the LISTEN task for other processes' NOTIFYs.
    timer_notify: std::sync::Arc<tokio::sync::Notify>,
    /// Wakes this process's sender, like `timer_notify` for messages.
    outbox_notify: std::sync::Arc<tokio::sync::Notify>,
    /// The LISTEN task starts with the first engine that waits.
    listener_started: std::sync::Once,
    /// What this process's commits counted, for monitoring.
    counters: crate::stats::Counters,
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
            outbox_notify: Default::default(),
            listener_started: std::sync::Once::new(),
            counters: Default::default(),
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

impl sql::Backend for PgStore {
    type Read<'a> = conn::Pg<sqlx::pool::PoolConnection<sqlx::Postgres>>;
    type Write<'a> = PgWrite<'a>;

    async fn read(&self) -> Result<Self::Read<'_>> {
        Ok(conn::Pg(self.pool.acquire().await?))
    }

    async fn write(&self) -> Result<Self::Write<'_>> {
        Ok(PgWrite {
            tx: conn::Pg(self.pool.begin().await?),
            store: self,
            timers_armed: false,
            messages_queued: false,
        })
    }

    const GROUP_COMMIT: bool = false;

    fn counters(&self) -> &crate::stats::Counters {
        &self.counters
    }
}

impl sql::services::ServiceLookup for PgStore {}

impl sql::feed::LogOrder for PgStore {
    // Transactions commit in any order, whatever numbers they took.
    const VISIBLE_IN_SEQ_ORDER: bool = false;
}

impl sql::outbox::OutboxWake for PgStore {
    async fn messages_queued(&self) {
        self.start_listener();
        self.outbox_notify.notified().await;
    }
}

impl PgStore {
    /// Starts the LISTEN task (once, with the first engine or sender that waits).
    fn start_listener(&self) {
        self.listener_started.call_once(|| {
            tokio::spawn(timers::listen(
                self.pool.clone(),
                self.timer_notify.clone(),
                self.outbox_notify.clone(),
            ));
        });
    }
}

/// A write transaction on a pooled PostgreSQL connection.
pub(crate) struct PgWrite<'a> {
    tx: conn::Pg<sqlx::Transaction<'static, sqlx::Postgres>>,
    store: &'a PgStore,
    timers_armed: bool,
    messages_queued: bool,
}

impl PgWrite<'_> {
    /// The transaction's connection, for native statements.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx.0
    }
}

sql::delegate_db!(PgWrite<'_>, tx);

impl sql::Write for PgWrite<'_> {
    fn record(&mut self, change: sql::Change) {
        // PostgreSQL keeps nothing in memory; only timers and messages
        // are announced.
        self.timers_armed |= matches!(change, sql::Change::TimersArmed);
        self.messages_queued |= matches!(change, sql::Change::MessagesQueued);
    }

    async fn commit(mut self) -> Result<()> {
        // Other processes hear of it through NOTIFY, delivered at commit.
        for (flag, channel) in [
            (self.timers_armed, timers::CHANNEL),
            (self.messages_queued, timers::OUTBOX_CHANNEL),
        ] {
            if flag {
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(channel)
                    .execute(&mut *self.tx.0)
                    .await?;
            }
        }
        self.tx.0.commit().await?;
        if self.timers_armed {
            self.store.timer_notify.notify_one();
        }
        if self.messages_queued {
            self.store.outbox_notify.notify_one();
        }
        Ok(())
    }
}

/// Whether an error is a violation of the named unique constraint or index.
pub(crate) fn violates(err: &sqlx::Error, constraint: &str) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some(constraint))
}
