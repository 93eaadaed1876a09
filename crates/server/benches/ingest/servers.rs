//! The two servers under load, each started as a child process on a
//! loopback port and stopped when its handle is dropped (also on panic).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// How long a server may take to start before the benchmark gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process killed and reaped on drop, so that no server outlives
/// the benchmark, whichever way it ends.
pub struct Running {
    pub child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Klaxon's `serve` on port 0; `base` is the URL it announces.
pub struct Klaxon {
    pub base: String,
    _process: Running,
}

pub fn start_klaxon(database_url: &str) -> anyhow::Result<Klaxon> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_klaxon"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            database_url,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting klaxon")?;
    let stdout = child.stdout.take();
    let process = Running { child };
    let stdout = stdout.ok_or_else(|| anyhow!("klaxon stdout not captured"))?;
    // Read on a thread so that a silent server cannot hang the benchmark;
    // the thread keeps draining stdout afterwards so the pipe never fills.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("Klaxon listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(START_TIMEOUT)
        .context("klaxon did not announce its address")?;
    Ok(Klaxon {
        base,
        _process: process,
    })
}

/// The Alertmanager binary: Debian names it `prometheus-alertmanager`,
/// upstream `alertmanager`.
pub fn find_alertmanager() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["prometheus-alertmanager", "alertmanager"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// First line of `alertmanager --version`, e.g. "alertmanager, version 0.25.0 (…)".
pub fn alertmanager_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            let text = [out.stdout, out.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .map(|line| line.split(" (").next().unwrap_or(line).to_owned())
        })
        .unwrap_or_else(|| "alertmanager".to_owned())
}

/// Alertmanager on a free loopback port, clustering off, with a route to a
/// receiver that sends nothing: the ingest path only.
pub struct Alertmanager {
    pub base: String,
    _process: Running,
}

const ALERTMANAGER_CONFIG: &str = "\
route:
  receiver: \"null\"
receivers:
  - name: \"null\"
";

pub fn start_alertmanager(binary: &Path, dir: &Path) -> anyhow::Result<Alertmanager> {
    let config = dir.join("alertmanager.yml");
    std::fs::write(&config, ALERTMANAGER_CONFIG)?;
    let storage = dir.join("data");
    std::fs::create_dir_all(&storage)?;
    let log_path = dir.join("alertmanager.log");
    // The port is picked by binding port 0 and releasing it, which another
    // process could take in between; a few attempts make that harmless.
    let mut last_error = anyhow!("no attempt");
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = File::create(&log_path)?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut process = Running { child };
        let base = format!("http://127.0.0.1:{port}");
        match wait_ready(&mut process, &format!("{base}/-/ready")) {
            Ok(()) => {
                return Ok(Alertmanager {
                    base,
                    _process: process,
                })
            }
            Err(error) => last_error = error,
        }
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    Err(last_error.context(format!("alertmanager did not start; its log:\n{log}")))
}

/// Polls a readiness URL with plain HTTP/1.0 until it answers 200.
fn wait_ready(process: &mut Running, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let (host, path) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| anyhow!("bad readiness url {url}"))?;
    while Instant::now() < deadline {
        if let Some(status) = process.child.try_wait()? {
            bail!("exited with {status}");
        }
        if http_status(host, &format!("/{path}")).is_some_and(|s| s == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("not ready after {START_TIMEOUT:?}")
}

fn http_status(host: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
