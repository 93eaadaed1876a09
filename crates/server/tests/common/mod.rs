//! Black-box test harness: runs the real `klaxon` binary on a random port
//! against a fresh SQLite file or a fresh PostgreSQL database, and talks
//! to it over HTTP.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod fake_http;
pub mod smtp_sink;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Which database a server under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running `klaxon serve`, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub database_url: String,
    pub backend: Backend,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// Everything the process wrote (stderr, and stdout), when started
    /// with [`Server::start_logging`].
    logs: Option<Arc<Mutex<String>>>,
}

/// Generates one `#[tokio::test]` per backend for each named async test
/// function taking a [`Backend`].
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Backend::Postgres).await }
            )*
        }
    };
}

impl Server {
    /// Starts a server on a fresh database.
    pub async fn start(backend: Backend) -> Server {
        Self::start_with(backend, &[]).await
    }

    /// Starts a server with extra environment variables.
    pub async fn start_with(backend: Backend, env: &[(&str, &str)]) -> Server {
        Self::start_inner(backend, env, false).await
    }

    /// Starts a server that keeps what it writes to stderr and stdout
    /// (read it with [`Server::logs`]).
    pub async fn start_logging(backend: Backend, env: &[(&str, &str)]) -> Server {
        Self::start_inner(backend, env, true).await
    }

    async fn start_inner(backend: Backend, env: &[(&str, &str)], keep_logs: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}/klaxon.db", dir.path().display()),
            Backend::Postgres => tokio::task::spawn_blocking(klaxon_testkit::fresh_postgres_url)
                .await
                .unwrap(),
        };
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut server = Server {
            child: None,
            base: String::new(),
            database_url,
            backend,
            env,
            _dir: dir,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            logs: keep_logs.then(Arc::default),
        };
        server.spawn();
        server
    }

    /// A `klaxon <args>` command against this server's database.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_klaxon"));
        cmd.args(args)
            .env("KLAXON_DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "warn")
            .env_remove("KLAXON_LISTEN")
            .env_remove("KLAXON_CONFIG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// (Re)starts the server process on a new random port.
    pub fn spawn(&mut self) {
        let stderr = if self.logs.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = self
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("klaxon binary runs");
        if let (Some(logs), Some(stderr)) = (self.logs.clone(), child.stderr.take()) {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut logs = logs.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            assert!(Instant::now() < deadline, "server did not start");
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("Klaxon listening on ") {
                        break url.trim().to_owned();
                    }
                }
                _ => panic!("server exited before listening"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        let logs = self.logs.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(logs) = &logs {
                    let mut logs = logs.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            }
        });
        self.base = base;
        self.child = Some(child);
    }

    /// Another `klaxon serve` process on the same database with the same
    /// environment (several processes sharing PostgreSQL).
    pub fn sibling(&self) -> Server {
        let mut other = Server {
            child: None,
            base: String::new(),
            database_url: self.database_url.clone(),
            backend: self.backend,
            env: self.env.clone(),
            _dir: tempfile::tempdir().unwrap(),
            http: self.http.clone(),
            logs: None,
        };
        other.spawn();
        other
    }

    /// Sends SIGTERM and waits (up to 30 s) for the process to exit;
    /// returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`HUP`, `TERM`, …) to the server process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal}");
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the process has written so far (empty unless started with
    /// [`Server::start_logging`]).
    pub fn logs(&self) -> String {
        self.logs
            .as_ref()
            .map(|l| l.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the process with SIGKILL (no graceful shutdown) and waits.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `klaxon <args>` against this server's database and returns
    /// (exit success, stdout, stderr).
    pub fn run_cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().expect("klaxon binary runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Creates an account through `POST /registrations`.
    pub async fn register(&self, account: &str) -> Account {
        let email = format!(
            "owner-{}@{}.example.com",
            rand_suffix(),
            account.to_lowercase()
        );
        let res = self
            .call(Method::POST, "/registrations", None, Some(json!({
                "account_name": account, "name": "Owner", "email": email, "password": "correct horse",
            })))
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{:?}", res.body);
        Account {
            id: res.str("account_id"),
            user_id: res.str("user_id"),
            token: res.str("token"),
            email,
        }
    }

    /// One request with a JSON body (or none) and a user token (or none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Res {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Token token=\"{t}\""));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Res::from(req.send().await.expect("request sent")).await
    }

    /// One request with a form body, as `curl -d` sends it.
    pub async fn form(
        &self,
        method: Method,
        path: &str,
        token: &str,
        fields: &[(&str, &str)],
    ) -> Res {
        let req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("Authorization", format!("Token token=\"{token}\""))
            .form(fields);
        Res::from(req.send().await.expect("request sent")).await
    }

    /// One request with a raw body and content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Res {
        let req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("Authorization", format!("Token token=\"{token}\""))
            .header("Content-Type", content_type)
            .body(body);
        Res::from(req.send().await.expect("request sent")).await
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> Res {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// POST JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Res {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// PUT JSON with a token.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Res {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    /// DELETE with a token.
    pub async fn delete(&self, path: &str, token: &str) -> Res {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// A policy with one rule per user, and a service using it. Returns
    /// (service JSON, policy id, rule ids).
    pub async fn setup_service(
        &self,
        acct: &Account,
        name: &str,
        users: &[&str],
        loop_limit: i64,
    ) -> Setup {
        let policy = self
            .post(
                "/policies",
                &acct.token,
                json!({"name": format!("{name} policy"), "loop_limit": loop_limit}),
            )
            .await;
        assert_eq!(policy.status, StatusCode::CREATED, "{:?}", policy.body);
        let policy_id = policy.str("id");
        let mut rule_ids = Vec::new();
        for user in users {
            let rule = self
                .post(
                    &format!("/policies/{policy_id}/rules"),
                    &acct.token,
                    json!({
                        "escalation_timeout": 30, "assignment": {"type": "user", "id": user},
                    }),
                )
                .await;
            assert_eq!(rule.status, StatusCode::CREATED, "{:?}", rule.body);
            rule_ids.push(rule.str("id"));
        }
        let service = self
            .post(
                "/services",
                &acct.token,
                json!({"name": name, "policy_id": policy_id}),
            )
            .await;
        assert_eq!(service.status, StatusCode::CREATED, "{:?}", service.body);
        Setup {
            service_id: service.str("id"),
            integration_key: service.str("integration_key"),
            policy_id,
            rule_ids,
        }
    }

    /// Adds a contact to `a`'s own user; returns its id.
    pub async fn contact(&self, a: &Account, kind: &str, address: &str) -> String {
        let res = self
            .post(
                &format!("/users/{}/contacts", a.user_id),
                &a.token,
                json!({"type": kind, "label": kind, "address": address}),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
        res.str("id")
    }

    /// An incident's notifications once `done` holds for them (or the
    /// last seen after 20 s, for the caller's assertion to report).
    pub async fn notifications_when(
        &self,
        token: &str,
        incident: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let res = self
                .get(&format!("/incidents/{incident}/notifications"), token)
                .await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.text);
            let rows = res.body.as_array().unwrap().clone();
            if done(&rows) || started.elapsed() > Duration::from_secs(20) {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Integration API call with a service key and a form body.
    pub async fn integration(&self, action: &str, key: &str, fields: &[(&str, &str)]) -> Res {
        let req = self
            .http
            .put(format!("{}/{}", self.base, action))
            .header("Authorization", format!("Token token=\"{key}\""))
            .form(fields);
        Res::from(req.send().await.expect("request sent")).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An account created for a test.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub user_id: String,
    pub token: String,
    pub email: String,
}

/// What `setup_service` made.
#[derive(Debug, Clone)]
pub struct Setup {
    pub service_id: String,
    pub integration_key: String,
    pub policy_id: String,
    pub rule_ids: Vec<String>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Res {
    async fn from(r: reqwest::Response) -> Res {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Res {
            status,
            headers,
            text,
            body,
        }
    }

    /// A string field of the JSON body.
    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field} in {}", self.body))
            .to_owned()
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Asserts a 4xx/5xx JSON error body with this status.
    pub fn assert_error(&self, status: StatusCode) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert!(
            self.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "error is JSON: {:?} {}",
            self.headers,
            self.text
        );
        assert!(
            self.body.is_object(),
            "error body is an object: {}",
            self.text
        );
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
