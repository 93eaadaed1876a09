//! Test support for Klaxon: a real, throwaway PostgreSQL server for tests.
//!
//! Klaxon's PostgreSQL backend has to be tested against a real server: mocks would not catch
//! SQL, locking or transaction-isolation mistakes. This crate starts one PostgreSQL server per
//! test *process* (lazily, the first time a test asks for it) and hands every test its own
//! brand-new, empty database, so tests can run in parallel threads without seeing each other's
//! data and without any manual setup.
//!
//! ```no_run
//! let url = klaxon_testkit::fresh_postgres_url();
//! // e.g. postgres://klaxon@127.0.0.1:41234/klaxon_test_5120_m3x9q1_0
//! // connect with sqlx (or anything else) and run migrations into this private database.
//! ```
//!
//! # How the server is run
//!
//! * The binaries are found via `pg_config --bindir`, then `PATH`, then the highest version
//!   under `/usr/lib/postgresql/*/bin`.
//! * `initdb` runs into a fresh directory under [`std::env::temp_dir`] (`/tmp` when that is not
//!   reachable by the `postgres` user) with trust authentication, superuser `klaxon`, UTF-8,
//!   the `C` locale (deterministic ordering, no dependency on installed locales) and
//!   `--no-sync`.
//! * The server listens on `127.0.0.1` on a free port (a few other ports are tried if the
//!   start fails), with its Unix socket in that same directory and durability switched off
//!   (`fsync`, `synchronous_commit`, `full_page_writes`) and autovacuum off: test data is
//!   disposable and speed matters. It allows 400 connections, enough for many parallel tests
//!   each holding a connection pool.
//! * PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
//!   `postgres` system user, which must exist.
//!
//! Each test binary gets its own server, so several binaries can run at the same time.
//!
//! # Cleanup
//!
//! Rust never drops statics, so the server cannot be stopped from a destructor. Instead a small
//! `sh` watchdog process is started next to it: it polls until the test process is gone (normal
//! exit, panic, `SIGKILL`, Ctrl-C…), then stops the server with an immediate shutdown and
//! deletes the temporary directory, usually within a second of the test process exiting.
//! Databases are not dropped while the process runs (each is a copy of `template1`, about 8 MB
//! on disk); they all go with the directory.
//!
//! # Using an existing server
//!
//! Set `KLAXON_TEST_POSTGRES_URL` to the URL of a running server whose user may
//! `CREATE DATABASE` (e.g. `postgres://klaxon@127.0.0.1:5432/postgres`) and no server is
//! started: databases are created there instead, and URLs handed out keep that URL's
//! credentials, host and query parameters with the database name replaced. Such databases are
//! *not* dropped afterwards. This is also the way to avoid one server start per process under
//! test runners that run every test in its own process (cargo-nextest).
//!
//! # Requirements
//!
//! The PostgreSQL server binaries (`initdb`, `postgres`) and `psql` (version 13 or newer) must
//! be installed (Debian: `apt-get install postgresql`), or `KLAXON_TEST_POSTGRES_URL` must be
//! set (then only `psql` is needed). Databases are created through one long-lived `psql` session rather than a Rust
//! client so that this crate needs no async runtime and no dependencies.

#![warn(missing_docs)]

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable naming an already-running server to use instead of starting one.
const URL_ENV: &str = "KLAXON_TEST_POSTGRES_URL";
/// Superuser created by `initdb`; every handed-out URL connects as this role.
const SUPERUSER: &str = "klaxon";
/// Database the admin session connects to in order to run `CREATE DATABASE`.
const ADMIN_DB: &str = "postgres";
/// How long a starting server may take to accept connections before we give up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports are tried when the server fails to start (e.g. a port race with another process).
const START_ATTEMPTS: usize = 5;
/// Interval between readiness checks while the server starts.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Printed by the admin `psql` session after each statement so we know the statement finished.
const DONE_MARKER: &str = "__klaxon_testkit_done__";

/// Shell script run by the watchdog: `$1` is the test process id, `$2` the temporary directory.
///
/// `alive` treats zombies as dead: once the test process has exited, the postmaster is
/// re-parented to an init that may reap it late, and `kill -0` alone would still succeed.
const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/status" ] && grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; then
        return 1
    fi
    return 0
}
while alive "$1"; do sleep 0.5; done
pidfile="$2/data/postmaster.pid"
if [ -f "$pidfile" ]; then
    pm=$(head -n 1 "$pidfile")
    case "$pm" in
        ''|*[!0-9]*) ;;
        *)
            if kill -QUIT "$pm" 2>/dev/null; then
                i=0
                while alive "$pm" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
                kill -KILL "$pm" 2>/dev/null
            fi
            ;;
    esac
fi
case "$2" in
    *klaxon-pg-*) rm -rf "$2" ;;
esac
"#;

/// A PostgreSQL server started for this test process; shared by all tests in the process.
///
/// Starting a server costs about a second, so it is done once per process and shared; isolation
/// between tests comes from giving each test its own database ([`PgServer::create_database`]).
/// Obtain it with [`PgServer::shared`].
#[derive(Debug)]
pub struct PgServer {
    /// `scheme://userinfo@host:port` part of every URL handed out.
    url_prefix: String,
    /// `?query` part (possibly empty) appended after the database name.
    url_suffix: String,
    /// URL of the maintenance database the admin session runs `CREATE DATABASE` in.
    admin_url: String,
    /// The `psql` binary used for the admin session.
    psql: PathBuf,
    /// Server log of a server we started ourselves, quoted in error messages.
    log: Option<PathBuf>,
    /// Long-lived `psql` session: spawning `psql` and opening a connection costs ~40 ms, more
    /// than `CREATE DATABASE` itself, so one session is kept and shared (serialised).
    admin: Mutex<Option<AdminSession>>,
}

impl PgServer {
    /// Starts (once per process, lazily, thread-safe) and returns the shared server.
    ///
    /// This blocks (about a second on the first call, then not at all), so it can be called from
    /// sync tests and from async tests alike; in an async test the first call briefly blocks
    /// one runtime thread, which is harmless in tests. When `KLAXON_TEST_POSTGRES_URL` is set no
    /// server is started and that server is used instead.
    ///
    /// # Panics
    ///
    /// Panics with an explanation (including the server log when relevant) if no server can be
    /// started; the failure is remembered, so every later call panics with the same message
    /// instead of retrying a slow start.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();
        match SHARED.get_or_init(PgServer::init) {
            Ok(server) => server,
            Err(message) => {
                panic!("klaxon-testkit: no PostgreSQL server for tests: {message}")
            }
        }
    }

    /// `postgres://USER@127.0.0.1:PORT/DBNAME` URL for a given database name.
    ///
    /// With `KLAXON_TEST_POSTGRES_URL` set, this is that URL with its database path replaced
    /// (credentials, host and query parameters are kept). The name is percent-encoded where
    /// needed, so any database name yields a valid URL.
    pub fn url(&self, db: &str) -> String {
        format!(
            "{}/{}{}",
            self.url_prefix,
            percent_encode(db),
            self.url_suffix
        )
    }

    /// Creates a brand-new empty database with a unique name and returns its URL.
    ///
    /// Names are unique across threads, processes and runs (process id, process start time and
    /// a counter), so tests never share a database. Takes a few tens of milliseconds: a copy of
    /// `template1` made through a long-lived admin session. Calls from parallel tests are
    /// serialised on that session.
    ///
    /// # Panics
    ///
    /// Panics if the database cannot be created; the message contains PostgreSQL's error and,
    /// for a server started by this crate, the path of its log.
    pub fn create_database(&self) -> String {
        let mut last_error = String::new();
        // A second attempt only happens when the admin session broke (e.g. its connection was
        // lost); it gets a new session and a new name, in case the first statement did land.
        for _ in 0..2 {
            let name = unique_database_name();
            let result = {
                let mut guard = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
                let session = match guard.take() {
                    Some(session) => session,
                    None => match AdminSession::spawn(&self.psql, &self.admin_url) {
                        Ok(session) => session,
                        Err(error) => {
                            last_error = error;
                            continue;
                        }
                    },
                };
                let session = guard.insert(session);
                let result = session.run(&format!("CREATE DATABASE \"{name}\";"));
                if let Err(SessionError::Broken(_)) = &result {
                    if let Some(session) = guard.take() {
                        session.close();
                    }
                }
                result
            };
            match result {
                Ok(()) => return self.url(&name),
                Err(SessionError::Failed(message)) => {
                    panic!(
                        "klaxon-testkit: CREATE DATABASE \"{name}\" failed: {}{}",
                        message.trim(),
                        self.log_hint()
                    )
                }
                Err(SessionError::Broken(message)) => last_error = message,
            }
        }
        panic!(
            "klaxon-testkit: could not run CREATE DATABASE through `{}` connected to {}: {}{}",
            self.psql.display(),
            redact_password(&self.admin_url),
            last_error.trim(),
            self.log_hint()
        )
    }

    /// Builds the shared server: the one named by `KLAXON_TEST_POSTGRES_URL`, or a new one.
    fn init() -> Result<PgServer, String> {
        match std::env::var(URL_ENV) {
            Ok(url) if !url.trim().is_empty() => PgServer::external(url.trim()),
            _ => PgServer::start_local(),
        }
    }

    /// Uses an already-running server; nothing is started and nothing needs cleaning up.
    fn external(url: &str) -> Result<PgServer, String> {
        let (url_prefix, url_suffix) = split_url(url).map_err(|error| {
            format!(
                "{URL_ENV}={:?} is not usable: {error}",
                redact_password(url)
            )
        })?;
        Ok(PgServer {
            url_prefix,
            url_suffix,
            admin_url: url.to_owned(),
            psql: psql_binary(find_bindir().ok().as_deref()),
            log: None,
            admin: Mutex::new(None),
        })
    }

    /// Runs `initdb` into a fresh temporary directory and starts a server on a free port.
    fn start_local() -> Result<PgServer, String> {
        let bindir = find_bindir()?;
        let root = effective_uid()? == 0;
        let dir = create_temp_dir(root)?;
        // Started before anything else so that the directory is removed even if a later step
        // fails or the process dies half-way.
        spawn_watchdog(&dir)?;
        let run_as = if root {
            let (uid, gid) = postgres_user_ids()?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|error| {
                format!("could not chown {} to postgres: {error}", dir.display())
            })?;
            Some((uid, gid))
        } else {
            None
        };
        let data = dir.join("data");
        run_initdb(&bindir, &dir, &data, run_as)?;
        let log = dir.join("postgres.log");
        let port = start_postgres(&bindir, &dir, &data, &log, run_as)?;
        let url_prefix = format!("postgres://{SUPERUSER}@127.0.0.1:{port}");
        Ok(PgServer {
            admin_url: format!("{url_prefix}/{ADMIN_DB}"),
            url_prefix,
            url_suffix: String::new(),
            psql: psql_binary(Some(&bindir)),
            log: Some(log),
            admin: Mutex::new(None),
        })
    }

    /// Points at the server log (if we started the server) for error messages.
    fn log_hint(&self) -> String {
        match &self.log {
            Some(log) => format!(
                "\n--- server log ({}) ---\n{}",
                log.display(),
                read_log(log)
            ),
            None => String::new(),
        }
    }
}

/// Convenience: `PgServer::shared().create_database()`.
///
/// What most tests need: the URL of a private, empty database on a running server.
pub fn fresh_postgres_url() -> String {
    PgServer::shared().create_database()
}

/// Why an admin statement did not succeed.
#[derive(Debug)]
enum SessionError {
    /// The statement ran and PostgreSQL reported an error (message attached).
    Failed(String),
    /// The `psql` session died or could not be talked to (whatever it printed attached).
    Broken(String),
}

/// A long-lived `psql` process reading statements from a pipe.
///
/// After each statement it is told to print [`DONE_MARKER`] and `psql`'s `ERROR` variable to
/// stderr (unbuffered, unlike stdout on a pipe), which tells us both that the statement finished
/// and whether it failed; the error text precedes the marker on stderr. (`\warn` needs psql 13
/// or newer.)
#[derive(Debug)]
struct AdminSession {
    child: Child,
    stdin: ChildStdin,
    stderr: BufReader<ChildStderr>,
}

impl AdminSession {
    /// Starts `psql` connected to `url`; a connection failure surfaces on the first statement.
    ///
    /// `-X` ignores any `~/.psqlrc`, `-w` forbids password prompts (nobody is there to answer
    /// them; credentials belong in the URL or `~/.pgpass`), and `PGCONNECT_TIMEOUT` keeps an
    /// unreachable server from hanging the tests.
    fn spawn(psql: &Path, url: &str) -> Result<AdminSession, String> {
        let mut child = Command::new(psql)
            .args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=0", "-d", url])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("could not run `{}`: {error}", psql.display()))?;
        let (Some(stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("psql was started without the requested pipes".to_owned());
        };
        Ok(AdminSession {
            child,
            stdin,
            stderr: BufReader::new(stderr),
        })
    }

    /// Runs one statement (which must end with `;`) and waits for it to finish.
    fn run(&mut self, sql: &str) -> Result<(), SessionError> {
        let mut output = String::new();
        let sent = writeln!(self.stdin, "{sql}\n\\warn {DONE_MARKER} :ERROR")
            .and_then(|()| self.stdin.flush());
        if let Err(error) = sent {
            return Err(SessionError::Broken(
                self.drain(format!("could not write to psql: {error}\n")),
            ));
        }
        loop {
            let mut line = String::new();
            match self.stderr.read_line(&mut line) {
                Ok(0) => return Err(SessionError::Broken(output)),
                Ok(_) => {}
                Err(error) => {
                    output.push_str(&format!("could not read from psql: {error}\n"));
                    return Err(SessionError::Broken(output));
                }
            }
            if let Some(status) = line.trim_end().strip_prefix(DONE_MARKER) {
                return if status.trim() == "false" {
                    Ok(())
                } else {
                    Err(SessionError::Failed(output))
                };
            }
            output.push_str(&line);
        }
    }

    /// Collects whatever psql still has to say after a failed write (it has usually exited).
    fn drain(&mut self, mut output: String) -> String {
        let mut rest = String::new();
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = io::Read::read_to_string(&mut self.stderr, &mut rest);
        }
        output.push_str(&rest);
        output
    }

    /// Stops the `psql` process and reaps it.
    fn close(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns a database name no other test, process or earlier run will use.
///
/// The process id separates concurrent processes, the process start time separates runs whose
/// process ids repeat (relevant with a shared `KLAXON_TEST_POSTGRES_URL` server, where databases
/// are never dropped) and the counter separates tests within the process.
fn unique_database_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static RUN_ID: OnceLock<String> = OnceLock::new();
    let run_id = RUN_ID.get_or_init(|| {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        to_base36(millis)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("klaxon_test_{}_{run_id}_{n}", std::process::id())
}

/// Lowercase base-36 rendering, to keep database names well under PostgreSQL's 63-byte limit.
fn to_base36(mut value: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        // The remainder is < 36, so the index is in bounds and the cast is lossless.
        out.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a connection URL into `scheme://authority` and `?query` around its database path.
fn split_url(url: &str) -> Result<(String, String), String> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| "expected a URL like postgres://user@host:port/db".to_owned())?;
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_len == 0 {
        return Err("the URL has no host".to_owned());
    }
    let tail = &rest[authority_len..];
    let tail = tail.find('#').map_or(tail, |hash| &tail[..hash]);
    let query = tail.find('?').map_or("", |question| &tail[question..]);
    Ok((
        url[..authority_start + authority_len].to_owned(),
        query.to_owned(),
    ))
}

/// Replaces the password of a URL with `***`, so error messages do not leak it into CI logs.
fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@').map(|at| &authority[..at]) {
        Some(userinfo) => match userinfo.find(':') {
            Some(colon) => {
                let password_start = authority_start + colon + 1;
                let password_end = authority_start + userinfo.len();
                format!("{}***{}", &url[..password_start], &url[password_end..])
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for the URL path segment.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Locates the directory holding `initdb` and `postgres`.
///
/// Order: `pg_config --bindir` (the installation the system considers current), then `PATH`
/// (following symlinks such as `/usr/local/bin/initdb`, since `postgres` may not be on `PATH`),
/// then the highest version under `/usr/lib/postgresql/*/bin` (Debian's layout).
fn find_bindir() -> Result<PathBuf, String> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();

    if let Ok(output) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        if output.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if has_server(&dir) {
                return Ok(dir);
            }
        }
    }

    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if !initdb.is_file() {
                continue;
            }
            if has_server(&dir) {
                return Ok(dir);
            }
            if let Some(real_dir) = fs::canonicalize(&initdb)
                .ok()
                .and_then(|real| real.parent().map(Path::to_path_buf))
            {
                if has_server(&real_dir) {
                    return Ok(real_dir);
                }
            }
        }
    }

    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|name| name.split('.').map(|part| part.parse().ok()).collect())
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if has_server(&bin) && best.as_ref().is_none_or(|(found, _)| version > *found) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "could not find the PostgreSQL server binaries (initdb, postgres) via `pg_config \
             --bindir`, PATH or /usr/lib/postgresql/*/bin; install PostgreSQL (Debian: \
             `apt-get install postgresql`) or set {URL_ENV} to an existing server"
        )
    })
}

/// `psql` next to the server binaries if there is one there, else whatever `PATH` finds.
fn psql_binary(bindir: Option<&Path>) -> PathBuf {
    bindir
        .map(|dir| dir.join("psql"))
        .filter(|psql| psql.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// The effective user id, to decide whether PostgreSQL must run as another user.
fn effective_uid() -> Result<u32, String> {
    // Linux: the second field of the `Uid:` line is the effective uid. Avoids a process spawn.
    if let Some(uid) = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|uid| uid.parse().ok())
        })
    {
        return Ok(uid);
    }
    let output = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|error| format!("could not run `id -u`: {error}"))?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|error| format!("unexpected output from `id -u`: {error}"))
}

/// Uid and gid of the `postgres` system user, which runs the server when tests run as root.
fn postgres_user_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("could not run `id {flag} postgres`: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "tests run as root and PostgreSQL refuses to run as root, but there is no \
                 `postgres` user to run it as ({}); create one (`useradd --system postgres`), \
                 run the tests as another user, or set {URL_ENV}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|error| format!("unexpected output from `id {flag} postgres`: {error}"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Whether every directory from `/` down to `dir` can be entered by any user.
fn traversable_by_others(dir: &Path) -> bool {
    let Ok(dir) = fs::canonicalize(dir) else {
        return false;
    };
    dir.ancestors()
        .all(|ancestor| fs::metadata(ancestor).is_ok_and(|meta| meta.mode() & 0o001 != 0))
}

/// Creates a new, uniquely named directory for the data directory, socket and log.
///
/// Uses [`std::env::temp_dir`] unless the `postgres` user could not reach it (when running as
/// root) or its path is so long that the Unix socket path would exceed the ~107-byte limit;
/// `/tmp` is used then.
fn create_temp_dir(root: bool) -> Result<PathBuf, String> {
    let mut base = std::env::temp_dir();
    if (root && !traversable_by_others(&base)) || base.as_os_str().len() > 60 {
        base = PathBuf::from("/tmp");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    for attempt in 0..100 {
        let dir = base.join(format!(
            "klaxon-pg-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(format!("could not create {}: {error}", dir.display()));
            }
        }
    }
    Err(format!(
        "could not create a unique directory under {}",
        base.display()
    ))
}

/// Starts the watchdog that stops the server and removes `dir` once this process is gone.
///
/// It gets its own process group, so a Ctrl-C aimed at the test run does not kill it before it
/// has cleaned up, and `/dev/null` for stdio, so it holds none of the test process's pipes
/// (which would make `cargo test` or a CI log reader wait for it).
fn spawn_watchdog(dir: &Path) -> Result<(), String> {
    Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("klaxon-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|error| format!("could not start the cleanup watchdog (sh): {error}"))
}

/// Runs PostgreSQL binaries as `postgres` when we are root (PostgreSQL refuses to run as root).
fn run_as(command: &mut Command, ids: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = ids {
        command.uid(uid).gid(gid);
    }
    command
}

/// Creates the cluster: trust auth for `klaxon`, UTF-8, `C` locale, no fsync (test data).
fn run_initdb(
    bindir: &Path,
    dir: &Path,
    data: &Path,
    ids: Option<(u32, u32)>,
) -> Result<(), String> {
    let initdb = bindir.join("initdb");
    let mut command = Command::new(&initdb);
    command
        .arg("-D")
        .arg(data)
        .args(["-A", "trust", "-U", SUPERUSER])
        .args(["--encoding=UTF8", "--locale=C", "--no-sync"])
        .current_dir(dir)
        .stdin(Stdio::null());
    let output = run_as(&mut command, ids)
        .output()
        .map_err(|error| format!("could not run {}: {error}", initdb.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}):\n{}{}",
            initdb.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Outcome of waiting for a freshly spawned postmaster.
enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

/// Starts the postmaster on a free port, trying other ports if it exits during start-up
/// (another process may grab the port between our probe and the server's bind).
fn start_postgres(
    bindir: &Path,
    dir: &Path,
    data: &Path,
    log: &Path,
    ids: Option<(u32, u32)>,
) -> Result<u16, String> {
    let postgres = bindir.join("postgres");
    let mut failures = String::new();
    for attempt in 1..=START_ATTEMPTS {
        let port = free_port()?;
        let log_file = File::create(log)
            .map_err(|error| format!("could not create {}: {error}", log.display()))?;
        let log_clone = log_file
            .try_clone()
            .map_err(|error| format!("could not duplicate the log file handle: {error}"))?;
        let mut command = Command::new(&postgres);
        command
            .arg("-D")
            .arg(data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=400"])
            .args(["-c", "shared_buffers=128MB"])
            // Hundreds of short-lived databases would keep autovacuum workers busy for nothing
            // on small CI machines; tests never live long enough to need it.
            .args(["-c", "autovacuum=off"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log_clone)
            .stderr(log_file)
            // Its own process group: a Ctrl-C on the test run must not shut it down behind the
            // watchdog's back; the watchdog stops it.
            .process_group(0);
        let mut child = run_as(&mut command, ids)
            .spawn()
            .map_err(|error| format!("could not run {}: {error}", postgres.display()))?;
        match wait_until_ready(&mut child, data, port)? {
            Startup::Ready => return Ok(port),
            Startup::Exited(status) => {
                failures.push_str(&format!(
                    "--- attempt {attempt} on port {port}: postgres exited ({status}); log: ---\n{}\n",
                    read_log(log)
                ));
            }
            Startup::TimedOut => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "postgres on port {port} did not accept connections within {}s; log ({}):\n{}",
                    START_TIMEOUT.as_secs(),
                    log.display(),
                    read_log(log)
                ));
            }
        }
    }
    Err(format!(
        "postgres failed to start {START_ATTEMPTS} times:\n{failures}"
    ))
}

/// Polls until the server reports itself ready and accepts TCP connections, exits, or times out.
fn wait_until_ready(child: &mut Child, data: &Path, port: u16) -> Result<Startup, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let pid_file = data.join("postmaster.pid");
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Startup::Exited(status)),
            Ok(None) => {}
            Err(error) => return Err(format!("could not check on postgres: {error}")),
        }
        // Line 8 of postmaster.pid is the postmaster's status; "ready" means it accepts
        // queries (an open port alone may still answer "the database system is starting up").
        let ready = fs::read_to_string(&pid_file)
            .is_ok_and(|contents| contents.lines().nth(7).map(str::trim) == Some("ready"));
        if ready && TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() {
            return Ok(Startup::Ready);
        }
        if Instant::now() >= deadline {
            return Ok(Startup::TimedOut);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// A TCP port on 127.0.0.1 that is free right now (the OS picks it).
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("could not find a free TCP port: {error}"))
}

/// The server log, for error messages (its last 8 KiB: enough to see why it failed).
fn read_log(log: &Path) -> String {
    match fs::read(log) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(8 * 1024);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(error) => format!("(could not read {}: {error})", log.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_url_replaces_only_the_database() {
        let (prefix, suffix) =
            split_url("postgres://u:p@db.example:5433/postgres?sslmode=disable#x")
                .expect("valid url");
        assert_eq!(prefix, "postgres://u:p@db.example:5433");
        assert_eq!(suffix, "?sslmode=disable");

        let (prefix, suffix) = split_url("postgresql://klaxon@127.0.0.1").expect("valid url");
        assert_eq!(prefix, "postgresql://klaxon@127.0.0.1");
        assert_eq!(suffix, "");

        let (prefix, suffix) = split_url("postgres://h?user=x").expect("valid url");
        assert_eq!(prefix, "postgres://h");
        assert_eq!(suffix, "?user=x");

        assert!(split_url("127.0.0.1:5432").is_err());
        assert!(split_url("postgres:///db").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_password("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn database_names_are_unique_and_short() {
        let a = unique_database_name();
        let b = unique_database_name();
        assert_ne!(a, b);
        assert!(a.len() < 63, "{a} is too long for PostgreSQL");
        assert_eq!(percent_encode(&a), a, "names need no URL escaping");
    }

    #[test]
    fn create_database_recovers_from_a_dead_admin_session() {
        let server = PgServer::shared();
        let first = server.create_database();
        {
            let mut guard = server.admin.lock().unwrap_or_else(PoisonError::into_inner);
            let session = guard.as_mut().expect("a session exists after a create");
            session.child.kill().expect("kill psql");
            session.child.wait().expect("reap psql");
        }
        let second = server.create_database();
        assert_ne!(first, second);
    }

    #[test]
    fn percent_encoding_and_base36() {
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(to_base36(0), "0");
        assert_eq!(to_base36(35), "z");
        assert_eq!(to_base36(36), "10");
    }
}
