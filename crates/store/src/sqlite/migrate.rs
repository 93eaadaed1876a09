//! Running the SQLite migrations on the writer connection.
//!
//! The migrations are embedded at build time (`sqlx::migrate!`, which only
//! reads the files; no sqlx driver runs them) and recorded in the
//! `_sqlx_migrations` table in the layout databases created by earlier
//! versions already have, so those upgrade in place: each applied version
//! with its SHA-384 checksum. A migration that was applied with different
//! text, or one that failed half-way, stops the start with a clear error
//! rather than guessing.

use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Result, StoreError};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Applies every migration the database lacks, each in its own
/// transaction, in version order.
pub(super) fn run(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        )",
    )?;
    let dirty: Option<i64> = conn
        .query_row(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(version) = dirty {
        return Err(migrate_error(format!(
            "migration {version} was left half-applied; restore a backup"
        )));
    }
    for migration in MIGRATIONS.iter() {
        let applied: Option<Vec<u8>> = conn
            .query_row(
                "SELECT checksum FROM _sqlx_migrations WHERE version = ?1",
                [migration.version],
                |row| row.get(0),
            )
            .optional()?;
        match applied {
            Some(checksum) if checksum == *migration.checksum => continue,
            Some(_) => {
                return Err(migrate_error(format!(
                    "migration {} was applied with different text than this version of Klaxon has",
                    migration.version
                )))
            }
            None => {}
        }
        let started = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = conn.execute_batch(&migration.sql).and_then(|()| {
            conn.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES (?1, ?2, TRUE, ?3, ?4)",
                params![
                    migration.version,
                    migration.description.as_ref(),
                    migration.checksum.as_ref(),
                    i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX),
                ],
            )
        });
        match applied.and_then(|_| conn.execute_batch("COMMIT")) {
            Ok(()) => {
                tracing::info!(version = migration.version, description = %migration.description, "migrated");
            }
            Err(err) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(migrate_error(format!(
                    "migration {} ({}) failed: {err}",
                    migration.version, migration.description
                )));
            }
        }
    }
    Ok(())
}

fn migrate_error(message: String) -> StoreError {
    StoreError::migrate(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT version FROM _sqlx_migrations ORDER BY version")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    #[test]
    fn applies_once_and_refuses_changed_text() {
        let conn = Connection::open_in_memory().expect("open");
        run(&conn).expect("first run");
        let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions(&conn), all);
        run(&conn).expect("second run is a no-op");
        assert_eq!(versions(&conn), all);
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 1",
            [],
        )
        .expect("tamper");
        let err = run(&conn).expect_err("changed text is refused");
        assert!(err.to_string().contains("different text"), "{err}");
        conn.execute(
            "UPDATE _sqlx_migrations SET success = false WHERE version = 2",
            [],
        )
        .expect("tamper");
        let err = run(&conn).expect_err("a half-applied migration is refused");
        assert!(err.to_string().contains("half-applied"), "{err}");
    }
}
