//! SQLite connections: one writer, a few readers, each used in place.
//!
//! Statements run on the task that holds the connection, synchronously,
//! through rusqlite's cached prepared statements: no statement is handed to
//! another thread and back. The writer is behind an async mutex, so a task
//! waiting for it yields instead of blocking a runtime thread; readers come
//! from a small pool (WAL lets them run beside the writer).

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::sql::{Arg, Db, Dialect, FromRow, Query, Row};
use crate::{Result, StoreError};

/// How many read connections to keep.
const READERS: usize = 4;

/// Opens one connection to the database file with Klaxon's settings: WAL,
/// `synchronous=FULL` (a commit is on disk before anyone is told),
/// foreign keys on, a generous busy timeout for admin commands running
/// beside the server, statement journals in memory, and room for every
/// statement in the cache.
pub(super) fn open(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Statement journals (a multi-row INSERT's undo, should a constraint
    // stop it half-way) in memory, not in a temporary file: they were an
    // eighth of the writer's time under a trigger storm.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    if !read_only {
        // Checkpoint every ~40 MB of WAL rather than every ~4 MB: pages that
        // many commits dirty again are copied back to the database once.
        conn.pragma_update(None, "wal_autocheckpoint", 10000)?;
    }
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// The writer and the readers of one database file.
pub(super) struct Conns {
    writer: tokio::sync::Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    reader_slots: tokio::sync::Semaphore,
}

impl Conns {
    /// Opens the writer (creating the file) and the readers.
    pub(super) fn open(path: &Path) -> Result<Conns> {
        let writer = open(path, false)?;
        let readers = (0..READERS)
            .map(|_| open(path, true))
            .collect::<Result<Vec<_>>>()?;
        Ok(Conns {
            writer: tokio::sync::Mutex::new(writer),
            readers: Mutex::new(readers),
            reader_slots: tokio::sync::Semaphore::new(READERS),
        })
    }

    /// Waits for the writer, without starting a transaction.
    pub(super) async fn writer(&self) -> tokio::sync::MutexGuard<'_, Connection> {
        self.writer.lock().await
    }

    /// Waits for the writer and begins a write transaction, taking SQLite's
    /// write lock at once (`BEGIN IMMEDIATE`).
    pub(super) async fn begin(&self) -> Result<LiteTx<tokio::sync::MutexGuard<'_, Connection>>> {
        LiteTx::begin(self.writer.lock().await)
    }

    /// A read connection.
    pub(super) async fn reader(&self) -> Result<Lite<Reader<'_>>> {
        let permit = self
            .reader_slots
            .acquire()
            .await
            .map_err(|_| StoreError::closed())?;
        let conn = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or_else(StoreError::closed)?;
        Ok(Lite(Reader {
            conn: Some(conn),
            conns: self,
            _permit: permit,
        }))
    }

    /// Stops handing out readers.
    pub(super) fn close(&self) {
        self.reader_slots.close();
    }
}

/// A pooled read connection, returned to the pool when dropped.
pub(crate) struct Reader<'a> {
    conn: Option<Connection>,
    conns: &'a Conns,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.conns
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}

/// A connection (owned, pooled or locked) that runs [`Query`]s.
pub(crate) struct Lite<C>(pub(super) C);

impl<C: Deref<Target = Connection>> Lite<C> {
    fn run_execute(&self, q: &Query<'_>) -> Result<u64> {
        let text = q.text(Dialect::Sqlite);
        let mut stmt = self.0.prepare_cached(&text)?;
        bind(&mut stmt, q.args())?;
        Ok(stmt.raw_execute()? as u64)
    }

    fn run_fetch<T: FromRow>(&self, q: &Query<'_>, limit: usize) -> Result<Vec<T>> {
        let text = q.text(Dialect::Sqlite);
        let mut stmt = self.0.prepare_cached(&text)?;
        bind(&mut stmt, q.args())?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while out.len() < limit {
            match rows.next()? {
                Some(row) => out.push(T::from_row(&LiteRow(row))?),
                None => break,
            }
        }
        Ok(out)
    }
}

fn bind(stmt: &mut rusqlite::Statement<'_>, args: &[Arg<'_>]) -> Result<()> {
    if stmt.parameter_count() != args.len() {
        return Err(StoreError::decode(format!(
            "statement takes {} parameters, {} given",
            stmt.parameter_count(),
            args.len()
        )));
    }
    for (i, arg) in args.iter().enumerate() {
        let at = i + 1;
        match *arg {
            Arg::Int(v) => stmt.raw_bind_parameter(at, v)?,
            Arg::Text(v) => stmt.raw_bind_parameter(at, v)?,
            Arg::Json(v) => stmt.raw_bind_parameter(at, v.map(Value::to_string))?,
        }
    }
    Ok(())
}

impl<C: Deref<Target = Connection> + Send> Db for Lite<C> {
    fn execute(&mut self, q: Query<'_>) -> impl std::future::Future<Output = Result<u64>> + Send {
        std::future::ready(self.run_execute(&q))
    }

    fn fetch_all<T: FromRow + Send>(
        &mut self,
        q: Query<'_>,
    ) -> impl std::future::Future<Output = Result<Vec<T>>> + Send {
        std::future::ready(self.run_fetch(&q, usize::MAX))
    }

    fn fetch_optional<T: FromRow + Send>(
        &mut self,
        q: Query<'_>,
    ) -> impl std::future::Future<Output = Result<Option<T>>> + Send {
        std::future::ready(self.run_fetch(&q, 1).map(|mut v| v.pop()))
    }
}

/// A rusqlite row as a [`Row`].
struct LiteRow<'r, 's>(&'r rusqlite::Row<'s>);

impl Row for LiteRow<'_, '_> {
    fn index(&self, name: &str) -> Result<usize> {
        Ok(self.0.as_ref().column_index(name)?)
    }

    fn int(&self, i: usize) -> Result<Option<i64>> {
        match self.0.get_ref(i)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(v) => Ok(Some(v)),
            other => Err(StoreError::decode(format!(
                "column {i}: expected an integer, found {}",
                other.data_type()
            ))),
        }
    }

    fn text(&self, i: usize) -> Result<Option<String>> {
        match self.0.get_ref(i)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|e| StoreError::decode(format!("column {i}: {e}"))),
            other => Err(StoreError::decode(format!(
                "column {i}: expected text, found {}",
                other.data_type()
            ))),
        }
    }

    fn json(&self, i: usize) -> Result<Option<Value>> {
        match self.0.get_ref(i)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(bytes) => serde_json::from_slice(bytes)
                .map(Some)
                .map_err(|e| StoreError::decode(format!("column {i}: {e}"))),
            other => Err(StoreError::decode(format!(
                "column {i}: expected JSON text, found {}",
                other.data_type()
            ))),
        }
    }
}

/// A write transaction on the writer. Rolled back when dropped without
/// [`LiteTx::commit`].
pub(crate) struct LiteTx<C: DerefMut<Target = Connection>> {
    /// `None` once committed.
    db: Option<Lite<C>>,
}

impl<C: DerefMut<Target = Connection>> LiteTx<C> {
    /// Begins `IMMEDIATE` on `conn`.
    pub(super) fn begin(conn: C) -> Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.raw_execute()?;
        Ok(LiteTx {
            db: Some(Lite(conn)),
        })
    }

    fn db(&self) -> &Lite<C> {
        self.db
            .as_ref()
            .expect("a transaction is used only until it commits")
    }

    /// Commits (and, with `synchronous=FULL`, syncs the WAL), and hands
    /// back the connection: whoever holds it still holds the writer, until
    /// they drop it.
    pub(super) fn commit(mut self) -> Result<C> {
        self.db().0.prepare_cached("COMMIT")?.raw_execute()?;
        Ok(self.db.take().expect("committed once").0)
    }
}

impl<C: DerefMut<Target = Connection>> Drop for LiteTx<C> {
    fn drop(&mut self) {
        if let Some(db) = &self.db {
            if !db.0.is_autocommit() {
                if let Err(err) = db.0.execute_batch("ROLLBACK") {
                    tracing::error!(error = %err, "rolling back a SQLite transaction failed");
                }
            }
        }
    }
}

impl<C: DerefMut<Target = Connection> + Send> Db for LiteTx<C> {
    fn execute(&mut self, q: Query<'_>) -> impl std::future::Future<Output = Result<u64>> + Send {
        std::future::ready(self.db().run_execute(&q))
    }

    fn fetch_all<T: FromRow + Send>(
        &mut self,
        q: Query<'_>,
    ) -> impl std::future::Future<Output = Result<Vec<T>>> + Send {
        std::future::ready(self.db().run_fetch(&q, usize::MAX))
    }

    fn fetch_optional<T: FromRow + Send>(
        &mut self,
        q: Query<'_>,
    ) -> impl std::future::Future<Output = Result<Option<T>>> + Send {
        std::future::ready(self.db().run_fetch(&q, 1).map(|mut v| v.pop()))
    }
}
