//! One source of SQL for both backends.
//!
//! Store logic is written once, against the small [`Db`] interface, with
//! statements in PostgreSQL's spelling (`$1` placeholders, row-lock
//! clauses). Each backend runs them its own way:
//!
//! - PostgreSQL (sqlx, async) runs the text as written.
//! - SQLite (rusqlite, on the connection the caller holds, no hand-off to
//!   another thread) runs it after [`render`]: `$n` becomes `?n`, and the
//!   row-lock clauses and `COLLATE "C"` are dropped — SQLite has one writer
//!   at a time, so there is nothing to lock, and it compares text by bytes
//!   already.
//!
//! Native code is left only where the databases really differ: claiming
//! timers (`SKIP LOCKED`), waking other processes (`LISTEN/NOTIFY`),
//! opening incidents (PostgreSQL's advisory locks, SQLite's in-memory
//! group-commit batcher).

pub(crate) mod accounts;
pub(crate) mod answers;
pub(crate) mod contacts;
pub(crate) mod feed;
pub(crate) mod heartbeats;
pub(crate) mod incidents;
pub(crate) mod invitations;
pub(crate) mod links;
pub(crate) mod outbox;
pub(crate) mod policies;
pub(crate) mod row;
pub(crate) mod schedules;
pub(crate) mod services;
pub(crate) mod stats;
pub(crate) mod timers;

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{PoisonError, RwLock};

use klaxon_core::time::Millis;
use serde_json::Value;

use crate::util::new_id;
use crate::{Actor, Result, StoreError};

pub(crate) use row::{Decode, FromRow, Row};

/// The two SQL dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a statement parameter. Nulls carry their type, which
/// PostgreSQL needs to type the parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Json(Option<&'a Value>),
}

/// Types that bind as a statement parameter.
pub(crate) trait ToArg {
    fn to_arg(&self) -> Arg<'_>;
}

impl ToArg for i64 {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Int(Some(*self))
    }
}

impl ToArg for Option<i64> {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Int(*self)
    }
}

impl ToArg for str {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(Some(self))
    }
}

impl ToArg for String {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(Some(self))
    }
}

impl ToArg for Option<String> {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(self.as_deref())
    }
}

impl ToArg for Option<&str> {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(*self)
    }
}

impl ToArg for Value {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Json(Some(self))
    }
}

impl ToArg for Option<Value> {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Json(self.as_ref())
    }
}

impl<T: ToArg + ?Sized> ToArg for &T {
    fn to_arg(&self) -> Arg<'_> {
        (**self).to_arg()
    }
}

/// A statement and its arguments. Static text is the common case; dynamic
/// text (filters) is built with [`Query::push`] and [`Query::push_bind`],
/// which numbers the placeholders.
#[derive(Debug)]
pub(crate) struct Query<'a> {
    sql: Cow<'static, str>,
    args: Vec<Arg<'a>>,
}

/// Starts a query on static statement text.
pub(crate) fn query<'a>(sql: &'static str) -> Query<'a> {
    Query {
        sql: Cow::Borrowed(sql),
        args: Vec::with_capacity(8),
    }
}

impl<'a> Query<'a> {
    /// Binds the next `$n`.
    pub(crate) fn bind<T: ToArg + ?Sized>(mut self, value: &'a T) -> Self {
        self.args.push(value.to_arg());
        self
    }

    /// Appends statement text (makes the text dynamic).
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.to_mut().push_str(sql);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub(crate) fn push_bind<T: ToArg + ?Sized>(&mut self, value: &'a T) -> &mut Self {
        self.args.push(value.to_arg());
        let n = self.args.len();
        let sql = self.sql.to_mut();
        sql.push('$');
        sql.push_str(&n.to_string());
        self
    }

    /// Appends `(…)` with one placeholder per value, for `IN` lists.
    pub(crate) fn push_list<T: ToArg>(&mut self, values: &'a [T]) -> &mut Self {
        self.push("(");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_bind(v);
        }
        self.push(")")
    }

    /// The arguments, in placeholder order.
    pub(crate) fn args(&self) -> &[Arg<'a>] {
        &self.args
    }

    /// The text in `dialect`'s spelling.
    pub(crate) fn text(&self, dialect: Dialect) -> Cow<'_, str> {
        match (dialect, &self.sql) {
            (Dialect::Postgres, sql) => Cow::Borrowed(sql.as_ref()),
            (Dialect::Sqlite, Cow::Borrowed(sql)) => Cow::Borrowed(render_cached(sql)),
            (Dialect::Sqlite, Cow::Owned(sql)) => Cow::Owned(render(sql)),
        }
    }
}

/// PostgreSQL phrases and what SQLite runs instead: no row locks (one
/// writer at a time), no byte-order collation (SQLite's default), and
/// `LIKE` for `ILIKE` (SQLite's `LIKE` ignores ASCII case).
const POSTGRES_ONLY: [(&str, &str); 7] = [
    (" FOR NO KEY UPDATE", ""),
    (" FOR KEY SHARE", ""),
    (" FOR UPDATE", ""),
    (" FOR SHARE", ""),
    (" SKIP LOCKED", ""),
    (" COLLATE \"C\"", ""),
    (" ILIKE ", " LIKE "),
];

/// Rewrites statement text for SQLite: `$n` → `?n` (SQLite would read `$1`
/// as a *named* parameter, numbered by first appearance) and the
/// PostgreSQL-only phrases replaced.
pub(crate) fn render(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    'scan: while let Some(c) = rest.chars().next() {
        if c == ' ' {
            for (phrase, instead) in POSTGRES_ONLY {
                if rest.starts_with(phrase) {
                    out.push_str(instead);
                    rest = &rest[phrase.len()..];
                    continue 'scan;
                }
            }
        }
        if c == '$' && rest[1..].starts_with(|d: char| d.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// [`render`] for static text, computed once per statement.
fn render_cached(sql: &'static str) -> &'static str {
    static CACHE: RwLock<Option<HashMap<&'static str, &'static str>>> = RwLock::new(None);
    if let Some(done) = CACHE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|m| m.get(sql).copied())
    {
        return done;
    }
    let mut cache = CACHE.write().unwrap_or_else(PoisonError::into_inner);
    cache
        .get_or_insert_with(HashMap::new)
        .entry(sql)
        // The set of static statements is fixed by the code, so leaking one
        // rendering of each is bounded.
        .or_insert_with(|| Box::leak(render(sql).into_boxed_str()))
}

/// A connection or transaction that runs queries: what store logic is
/// written against. SQLite's implementation does its work before returning
/// the future (it never waits on another thread); PostgreSQL's awaits the
/// server.
pub(crate) trait Db: Send {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, q: Query<'_>) -> impl Future<Output = Result<u64>> + Send;

    /// Every row of a query.
    fn fetch_all<T: FromRow + Send>(
        &mut self,
        q: Query<'_>,
    ) -> impl Future<Output = Result<Vec<T>>> + Send;

    /// The first row of a query, if any.
    fn fetch_optional<T: FromRow + Send>(
        &mut self,
        q: Query<'_>,
    ) -> impl Future<Output = Result<Option<T>>> + Send;

    /// The first row of a query; `NotFound` when there is none.
    fn fetch_one<T: FromRow + Send>(
        &mut self,
        q: Query<'_>,
    ) -> impl Future<Output = Result<T>> + Send {
        let row = self.fetch_optional(q);
        async move { row.await?.ok_or(StoreError::NotFound) }
    }
}

/// A write transaction: a [`Db`] that commits, and that carries the
/// changes the backend must act on once committed.
pub(crate) trait Write: Db {
    /// Records a change to act on after the commit (and only if it
    /// happens): SQLite applies it to its in-memory ingest state in commit
    /// order; both wake the timer engine for [`Change::TimersArmed`].
    fn record(&mut self, change: Change);

    /// Commits.
    fn commit(self) -> impl Future<Output = Result<()>> + Send;
}

/// What a committed write changed that a backend keeps outside the
/// database or announces.
#[derive(Debug)]
pub(crate) enum Change {
    /// A service was created.
    ServiceCreated {
        id: String,
        account_id: String,
        integration_key: String,
    },
    /// A service was enabled or disabled.
    ServiceState { id: String, enabled: bool },
    /// A service's integration key was replaced.
    ServiceRekeyed { id: String, integration_key: String },
    /// A service and its incidents were deleted.
    ServiceDeleted { id: String },
    /// An incident was resolved or deleted: it no longer deduplicates.
    IncidentClosed { id: String },
    /// An open incident's message was edited (keyless dedup follows it).
    MessageChanged { id: String, message: String },
    /// Timers were armed: the engine should look again.
    TimersArmed,
    /// Messages were queued (or re-queued): senders should look again.
    MessagesQueued,
}

/// A database the shared store logic runs on: where read and write
/// transactions come from. The `Store` traits are implemented once for
/// every `Backend` (in this module's siblings); what only one database can
/// do is a `Backend` method each implements natively.
pub(crate) trait Backend: Send + Sync + 'static {
    /// A connection for reads.
    type Read<'a>: Db
    where
        Self: 'a;
    /// A write transaction.
    type Write<'a>: Write
    where
        Self: 'a;

    /// A read connection.
    fn read(&self) -> impl Future<Output = Result<Self::Read<'_>>> + Send;

    /// Begins a write transaction.
    fn write(&self) -> impl Future<Output = Result<Self::Write<'_>>> + Send;

    /// Whether new incidents are committed in groups (SQLite's batcher),
    /// whose sizes the counters then record.
    const GROUP_COMMIT: bool;

    /// What this process counts as it commits, for monitoring.
    fn counters(&self) -> &crate::stats::Counters;
}

/// Implements [`Db`] for a wrapper by handing every query to its field.
macro_rules! delegate_db {
    ($t:ty, $field:ident) => {
        impl $crate::sql::Db for $t {
            fn execute(
                &mut self,
                q: $crate::sql::Query<'_>,
            ) -> impl std::future::Future<Output = $crate::Result<u64>> + Send {
                self.$field.execute(q)
            }

            fn fetch_all<T: $crate::sql::FromRow + Send>(
                &mut self,
                q: $crate::sql::Query<'_>,
            ) -> impl std::future::Future<Output = $crate::Result<Vec<T>>> + Send {
                self.$field.fetch_all(q)
            }

            fn fetch_optional<T: $crate::sql::FromRow + Send>(
                &mut self,
                q: $crate::sql::Query<'_>,
            ) -> impl std::future::Future<Output = $crate::Result<Option<T>>> + Send {
                self.$field.fetch_optional(q)
            }
        }
    };
}
pub(crate) use delegate_db;

/// Maps a unique-constraint violation to `Taken(field)`.
pub(crate) fn taken(field: &'static str) -> impl FnOnce(StoreError) -> StoreError {
    move |err| {
        if err.is_unique_violation() {
            StoreError::Taken(field)
        } else {
            err
        }
    }
}

/// `Ok(())` when a statement touched a row, `NotFound` otherwise.
pub(crate) fn found(rows: u64) -> Result<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// Who writes audit events, for whom and when: what every event of one
/// store call shares.
#[derive(Clone, Copy)]
pub(crate) struct Audit<'a> {
    pub account_id: &'a str,
    pub actor: &'a Actor,
    pub now: Millis,
}

/// The audit context of one store call.
pub(crate) fn audit<'a>(account_id: &'a str, actor: &'a Actor, now: Millis) -> Audit<'a> {
    Audit {
        account_id,
        actor,
        now,
    }
}

impl Audit<'_> {
    /// Writes one audit event inside the caller's transaction: `action`
    /// on `source` (type, id) with its changeset.
    pub(crate) async fn event(
        self,
        db: &mut impl Db,
        action: &str,
        (source_type, source_id): (&str, &str),
        changeset: &Value,
    ) -> Result<()> {
        let (actor_type, actor_id) = self.actor.parts();
        let id = new_id();
        db.execute(
            query(
                "INSERT INTO events (id, account_id, action, source_type, source_id, actor_type, actor_id, changeset, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&id)
            .bind(self.account_id)
            .bind(action)
            .bind(source_type)
            .bind(source_id)
            .bind(actor_type)
            .bind(&actor_id)
            .bind(changeset)
            .bind(&self.now),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_for_sqlite() {
        assert_eq!(
            render(
                r#"SELECT a FROM t WHERE x = $1 AND y = $12 ORDER BY n COLLATE "C" FOR NO KEY UPDATE"#
            ),
            "SELECT a FROM t WHERE x = ?1 AND y = ?12 ORDER BY n"
        );
        assert_eq!(render("SELECT '$' || $2"), "SELECT '$' || ?2");
        assert_eq!(
            render("SELECT id FROM t FOR UPDATE SKIP LOCKED"),
            "SELECT id FROM t"
        );
        assert_eq!(
            render("SELECT 'é' FROM t FOR KEY SHARE"),
            "SELECT 'é' FROM t"
        );
        assert_eq!(
            render("SELECT 1 WHERE m ILIKE $1 ESCAPE '\\'"),
            "SELECT 1 WHERE m LIKE ?1 ESCAPE '\\'"
        );
    }

    #[test]
    fn numbers_dynamic_placeholders() {
        let ids = ["a".to_string(), "b".to_string()];
        let mut q = query("SELECT 1 WHERE x = $1").bind("k");
        q.push(" AND id IN ").push_list(&ids);
        assert_eq!(q.sql, "SELECT 1 WHERE x = $1 AND id IN ($2, $3)");
        assert_eq!(q.args().len(), 3);
        assert_eq!(
            q.text(Dialect::Sqlite),
            "SELECT 1 WHERE x = ?1 AND id IN (?2, ?3)"
        );
    }

    #[test]
    fn static_renders_are_cached() {
        let q: Query<'_> = query("SELECT $1 FOR UPDATE");
        let a = q.text(Dialect::Sqlite);
        let b = q.text(Dialect::Sqlite);
        assert_eq!(a, "SELECT ?1");
        assert!(std::ptr::eq(a.as_ptr(), b.as_ptr()));
    }
}
