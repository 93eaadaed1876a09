//! Online backup and restore of a SQLite database file.
//!
//! A backup is `VACUUM INTO` on a connection of its own: one read
//! transaction, so the copy is the database as of one instant — every
//! commit before it and none after — while the server goes on writing
//! (WAL readers never block the writer). It takes no serving lock, so it
//! runs beside `klaxon serve` like any admin command. The copy is written
//! beside its destination, checked, synced and renamed into place: the
//! destination is never a half-written file.
//!
//! A restore needs the server stopped: it takes the serving lock itself
//! (so no server can start half-way), copies the backup beside the
//! database, checks the copy (`PRAGMA integrity_check`, and a migration
//! history this version of Klaxon knows), settles the old database's WAL,
//! removes its `-wal`, `-shm` and `-journal` files (a stale WAL would be
//! replayed into the new file) and renames the copy over it.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{create_parent, database_path, migrate, try_lock};
use crate::{Result, StoreError};

/// What a backup or a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The file written.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Incidents it holds.
    pub incidents: i64,
}

/// Copies the database a `sqlite://path` URL names to `to`, consistently,
/// while a server may be writing it. An existing file at `to` is replaced
/// only once the new copy is complete.
pub fn backup(url: &str, to: &Path) -> Result<Copied> {
    let db = database_path(url)?;
    if !db.exists() {
        return Err(invalid(format!("no database at {}", db.display())));
    }
    if same_files(&db, to)? {
        return Err(invalid(format!(
            "{} is the database itself (or one of its files)",
            to.display()
        )));
    }
    let partial = beside(to, "partial")?;
    let copied = (|| {
        let source = open(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        source.execute("VACUUM INTO ?1", [path_text(&partial)?])?;
        drop(source);
        let copy = open(&partial, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let check: String = copy.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
        if check != "ok" {
            return Err(invalid(format!("the copy does not check out: {check}")));
        }
        let incidents = count_incidents(&copy)?;
        drop(copy);
        install(&partial, to)?;
        Ok(incidents)
    })();
    match copied {
        Ok(incidents) => Ok(Copied {
            path: to.to_owned(),
            bytes: std::fs::metadata(to)?.len(),
            incidents,
        }),
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// Replaces the database a `sqlite://path` URL names (created if missing)
/// with the backup `from`, after checking it. Refused while a server holds
/// the serving lock.
pub fn restore(url: &str, from: &Path) -> Result<Copied> {
    let db = database_path(url)?;
    create_parent(&db)?;
    let Some(_lock) = try_lock(&db)? else {
        return Err(StoreError::Conflict(format!(
            "a klaxon server is serving {} (its lock is held): stop it before restoring",
            db.display()
        )));
    };
    if !from.is_file() {
        return Err(invalid(format!("no backup file at {}", from.display())));
    }
    if db.exists() && same_files(&db, from)? {
        return Err(invalid(format!(
            "{} is the database itself (or one of its files)",
            from.display()
        )));
    }
    let partial = beside(&db, "restore")?;
    let restored = (|| {
        // Through SQLite rather than a byte copy: a backup made by hand
        // from a live file may still have pages in its own WAL.
        let source = open(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        source
            .execute("VACUUM INTO ?1", [path_text(&partial)?])
            .map_err(|err| {
                invalid(format!(
                    "{} is not a SQLite database Klaxon can read: {err}",
                    from.display()
                ))
            })?;
        drop(source);
        let copy = open(&partial, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        check_klaxon_database(&copy, from)?;
        let incidents = count_incidents(&copy)?;
        drop(copy);
        settle(&db);
        install(&partial, &db)?;
        Ok(incidents)
    })();
    match restored {
        Ok(incidents) => Ok(Copied {
            path: db.clone(),
            bytes: std::fs::metadata(&db)?.len(),
            incidents,
        }),
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// Opens a file with a busy timeout (a writer may be committing).
fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// Refuses a file that is not a whole Klaxon database.
fn check_klaxon_database(conn: &Connection, from: &Path) -> Result<()> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let problems: Vec<String> = stmt
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if problems != ["ok"] {
        return Err(invalid(format!(
            "{} fails SQLite's integrity check: {}",
            from.display(),
            problems.join("; ")
        )));
    }
    if let Some(why) = migrate::unknown_history(conn)? {
        return Err(invalid(format!(
            "{} is not a Klaxon database this version can restore: {why}",
            from.display()
        )));
    }
    Ok(())
}

fn count_incidents(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM incidents", [], |row| row.get(0))?)
}

/// Copies what the old database still holds in its WAL into the file, so
/// that it stands alone should the restore stop before the rename. A
/// database that cannot be opened is being replaced anyway.
fn settle(db: &Path) {
    if !db.exists() {
        return;
    }
    if let Ok(conn) = open(db, OpenFlags::SQLITE_OPEN_READ_WRITE) {
        if let Err(err) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %err, db = %db.display(), "cannot checkpoint the database being replaced");
        }
    }
}

/// Moves a complete, checked copy to `to`: synced, then the files SQLite
/// keeps beside `to` removed (a WAL or hot journal left there would be
/// replayed into the new file), then renamed over it, then the directory
/// synced.
fn install(partial: &Path, to: &Path) -> Result<()> {
    File::open(partial)?.sync_all()?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = to.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    std::fs::rename(partial, to)?;
    if let Some(dir) = parent(to) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A fresh file name in `path`'s directory, for a copy in progress.
fn beside(path: &Path, what: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| invalid(format!("{} does not name a file", path.display())))?;
    let dir = parent(path).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(invalid(format!("no directory {}", dir.display())));
    }
    let partial = dir.join(format!(
        ".{}.{what}-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(partial)
}

fn parent(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

/// Whether `other` is the database `db` or one of the files beside it.
fn same_files(db: &Path, other: &Path) -> Result<bool> {
    let db = std::fs::canonicalize(db)?;
    let other = match std::fs::canonicalize(other) {
        Ok(p) => p,
        Err(_) => match (parent(other).unwrap_or(Path::new(".")), other.file_name()) {
            (dir, Some(name)) => match std::fs::canonicalize(dir) {
                Ok(dir) => dir.join(name),
                Err(_) => return Ok(false),
            },
            _ => return Ok(false),
        },
    };
    Ok(["", "-wal", "-shm", "-journal", ".lock"]
        .iter()
        .any(|suffix| {
            let mut side = db.as_os_str().to_owned();
            side.push(suffix);
            other == Path::new(&side)
        }))
}

fn path_text(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| invalid(format!("{} is not valid UTF-8", path.display())))
}

fn invalid(message: String) -> StoreError {
    StoreError::Conflict(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(path: &Path) -> String {
        format!("sqlite://{}", path.display())
    }

    fn klaxon_db(path: &Path) -> Connection {
        let conn = super::super::conn::open(path, false).expect("open");
        migrate::run(&conn).expect("migrate");
        conn
    }

    #[test]
    fn backs_up_beside_a_writer_and_restores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("k.db");
        let live = klaxon_db(&db);
        live.execute_batch(
            "INSERT INTO accounts (id, name, created_at, updated_at) VALUES ('a', 'A', 0, 0)",
        )
        .expect("a row");
        let to = dir.path().join("backup.db");
        let copied = backup(&url(&db), &to).expect("backup");
        assert_eq!(copied.incidents, 0);
        assert!(copied.bytes > 0);
        // Again over the first one.
        backup(&url(&db), &to).expect("a second backup replaces the first");
        assert!(backup(&url(&db), &db).is_err(), "not over the database");
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        assert!(backup(&url(&db), Path::new(&wal)).is_err());
        live.execute_batch("DELETE FROM accounts")
            .expect("changed after");
        drop(live);

        let target = dir.path().join("restored").join("k.db");
        let restored = restore(&url(&target), &to).expect("restore");
        assert_eq!(restored.path, target);
        let conn = Connection::open(&target).expect("open");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1, "the backup's state");
    }

    #[test]
    fn restore_refuses_what_is_not_a_klaxon_database_and_a_served_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("k.db");
        drop(klaxon_db(&db));
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"not a database at all, not even close").expect("write");
        let err = restore(&url(&db), &junk).expect_err("junk");
        assert!(err.to_string().contains("not a SQLite database"), "{err}");
        let plain = dir.path().join("plain.db");
        Connection::open(&plain)
            .expect("open")
            .execute_batch("CREATE TABLE t (x)")
            .expect("table");
        let err = restore(&url(&db), &plain).expect_err("not Klaxon's");
        assert!(err.to_string().contains("no migrations table"), "{err}");
        let err = restore(&url(&db), &dir.path().join("missing.db")).expect_err("missing");
        assert!(err.to_string().contains("no backup file"), "{err}");

        let _serving = super::super::lock_for_serving(&url(&db)).expect("lock");
        let good = dir.path().join("good.db");
        backup(&url(&db), &good).expect("backup beside a server");
        let err = restore(&url(&db), &good).expect_err("served");
        assert!(err.to_string().contains("stop it"), "{err}");
        // Nothing was left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
    }
}
