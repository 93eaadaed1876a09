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

/// Why a database is not one this version of Klaxon can take over as it
/// is (a restore's check): no migrations table, a migration that failed
/// half-way, or one this version does not know (a newer Klaxon's). Older
/// databases are fine: `serve` applies what they lack.
pub(super) fn unknown_history(conn: &Connection) -> Result<Option<String>> {
    let has_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(Some("it has no migrations table".into()));
    }
    let mut stmt =
        conn.prepare("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")?;
    let applied: Vec<(i64, bool, Vec<u8>)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if applied.is_empty() {
        return Ok(Some("no migration was ever applied to it".into()));
    }
    for (version, success, checksum) in applied {
        if !success {
            return Ok(Some(format!("migration {version} was left half-applied")));
        }
        match MIGRATIONS.iter().find(|m| m.version == version) {
            Some(m) if *m.checksum == *checksum => {}
            Some(_) => {
                return Ok(Some(format!(
                    "migration {version} was applied with different text than this version of Klaxon has"
                )))
            }
            None => {
                return Ok(Some(format!(
                    "it has migration {version}, which this version of Klaxon does not know (a newer version made it)"
                )))
            }
        }
    }
    Ok(None)
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

    #[test]
    fn tells_a_history_it_cannot_take_over() {
        let conn = Connection::open_in_memory().expect("open");
        let why = unknown_history(&conn).expect("reads").expect("no table");
        assert!(why.contains("no migrations table"), "{why}");
        run(&conn).expect("migrates");
        assert_eq!(unknown_history(&conn).expect("reads"), None);
        conn.execute("DELETE FROM _sqlx_migrations WHERE version > 1", [])
            .expect("an older database");
        assert_eq!(unknown_history(&conn).expect("reads"), None);
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99999, 'future', TRUE, x'00', 0)",
            [],
        )
        .expect("a newer migration");
        let why = unknown_history(&conn).expect("reads").expect("newer");
        assert!(why.contains("99999"), "{why}");
    }
}
