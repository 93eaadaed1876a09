//! Runs `wrk` with `load.lua` and reads back the line its `done()` prints.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::servers::Running;

const SCRIPT: &str = include_str!("load.lua");

/// Threads, connections and duration of every run, the same for both servers.
#[derive(Clone, Copy)]
pub struct Load {
    pub threads: u64,
    pub connections: u64,
    pub seconds: u64,
}

/// What one run measured.
pub struct Figures {
    pub requests: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Answers with a status of 400 or more.
    pub status_errors: u64,
    /// Connect, read and write errors and timeouts.
    pub socket_errors: u64,
}

pub struct Wrk {
    binary: PathBuf,
    script: PathBuf,
    dir: PathBuf,
}

impl Wrk {
    /// Finds `wrk` on the PATH and writes the script into `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Option<Wrk>> {
        let Some(path) = std::env::var_os("PATH") else {
            return Ok(None);
        };
        let Some(binary) = std::env::split_paths(&path)
            .map(|dir| dir.join("wrk"))
            .find(|candidate| candidate.is_file())
        else {
            return Ok(None);
        };
        let script = dir.join("load.lua");
        std::fs::write(&script, SCRIPT)?;
        Ok(Some(Wrk {
            binary,
            script,
            dir: dir.to_owned(),
        }))
    }

    /// Loads `url` for `load.seconds`; `args` go to the script's `init`.
    pub fn run(&self, load: Load, url: &str, args: &[&str]) -> anyhow::Result<Figures> {
        let out_path = self.dir.join("wrk.out");
        let out = File::create(&out_path)?;
        let child = Command::new(&self.binary)
            .arg(format!("-t{}", load.threads))
            .arg(format!("-c{}", load.connections))
            .arg(format!("-d{}s", load.seconds))
            .args(["--timeout", "5s", "-s"])
            .arg(&self.script)
            .arg(url)
            .arg("--")
            .args(args)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting wrk")?;
        let mut process = Running { child };
        // wrk stops itself after the duration; the margin covers its start
        // and the last requests in flight, and bounds the run if it hangs.
        let deadline = Instant::now() + Duration::from_secs(load.seconds + 30);
        let status = loop {
            if let Some(status) = process.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("wrk did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let output = std::fs::read_to_string(&out_path)?;
        if !status.success() {
            bail!("wrk failed ({status}):\n{output}");
        }
        parse(&output).ok_or_else(|| anyhow!("no result line in wrk output:\n{output}"))
    }
}

fn parse(output: &str) -> Option<Figures> {
    let line = output
        .lines()
        .find_map(|line| line.strip_prefix("ingest-result "))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    let requests = field("requests")?;
    let duration_s = field("duration_us")? as f64 / 1e6;
    Some(Figures {
        requests,
        per_second: requests as f64 / duration_s,
        p50_ms: field("p50_us")? as f64 / 1e3,
        p99_ms: field("p99_us")? as f64 / 1e3,
        p999_ms: field("p999_us")? as f64 / 1e3,
        status_errors: field("status_errors")?,
        socket_errors: field("socket_errors")?,
    })
}
