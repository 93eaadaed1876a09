//! The server must go away with the test process, even when that process is killed.
//!
//! The test re-runs this test binary as a child that starts a server and then hangs; the parent
//! kills it with SIGKILL (no destructors, no atexit) and waits for the watchdog to stop the
//! postmaster and remove the temporary directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "KLAXON_TESTKIT_CLEANUP_CHILD";

/// In the child: start the server, report our pid, then wait to be killed.
#[test]
fn child_starts_server_and_hangs() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return; // Only meaningful when spawned by `server_is_removed_when_test_process_is_killed`.
    }
    let url = klaxon_testkit::fresh_postgres_url();
    println!("\nREADY {} {url}", std::process::id());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The directory the child's server lives in (`klaxon-pg-<pid>-…` under the temp dir or /tmp).
fn server_dir_of(pid: u32) -> Option<PathBuf> {
    let prefix = format!("klaxon-pg-{pid}-");
    [std::env::temp_dir(), PathBuf::from("/tmp")]
        .iter()
        .filter_map(|base| std::fs::read_dir(base).ok())
        .flat_map(|entries| entries.flatten())
        .find(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        !status
            .lines()
            .any(|line| line.starts_with("State:") && line.contains('Z'))
    })
}

#[test]
fn server_is_removed_when_test_process_is_killed() {
    if std::env::var_os(CHILD_ENV).is_some()
        || std::env::var_os("KLAXON_TEST_POSTGRES_URL").is_some()
    {
        return; // Nothing is started (or cleaned up) when an external server is used.
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "child_starts_server_and_hangs",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-run the test binary");
    let stdout = child.stdout.take().expect("piped stdout");
    // Read on another thread so that a child stuck before READY fails the test instead of
    // hanging it.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                // libtest may print "test NAME ... " before the test's own output on the same line.
                line.split_once("READY ").map(|(_, rest)| rest.to_owned())
            });
        let _ = sender.send(ready);
    });
    let line = match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(line)) => line,
        outcome => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not report READY within 60 s: {outcome:?}");
        }
    };
    let pid: u32 = line
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("pid in READY line");
    let dir = server_dir_of(pid).expect("server directory of the child");
    let postmaster: u32 = std::fs::read_to_string(dir.join("data/postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|pid| pid.trim().parse().ok())
        .expect("postmaster pid");
    assert!(alive(postmaster), "server should run while the child lives");

    child.kill().expect("kill child");
    child.wait().expect("reap child");
    let killed = Instant::now();

    let deadline = killed + Duration::from_secs(15);
    while (alive(postmaster) || Path::new(&dir).exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(postmaster), "postmaster {postmaster} still running");
    assert!(!dir.exists(), "{} still exists", dir.display());
    eprintln!(
        "cleaned up {:?} after the test process was killed",
        killed.elapsed()
    );
}
