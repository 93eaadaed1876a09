//! The real tools against the real server: PagerDuty's Python client
//! (`pdpyras`, from PyPI) and Prometheus Alertmanager paging Klaxon through
//! its webhook, PagerDuty and Opsgenie receivers. `.ci/run` installs both;
//! elsewhere a test whose tool is missing says so loudly and passes (on CI,
//! `CI` set, it fails instead).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::common::{Backend, Server};
use super::{account_with_service, another_service, incident_actions, incidents, only_incident};

/// A tool the test needs is absent: fail on CI, skip loudly elsewhere.
fn missing(tool: &str, install: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{tool} is missing on CI; .ci/run should have installed it ({install})");
    }
    eprintln!(
        "\n********************************************************************\n\
         SKIPPED: {tool} is not installed here; install it with `{install}`\n\
         (.ci/run does) to run this test.\n\
         ********************************************************************\n"
    );
}

/// Drives `pdpyras.EventsAPISession` (and `ChangeEventsAPISession`) at the
/// server over plain HTTP; prints one JSON line per step.
const PDPYRAS_SCRIPT: &str = r#"
import json, os, sys, warnings
warnings.simplefilter("ignore")
import pdpyras

url = os.environ["KLAXON_URL"]
key = os.environ["ROUTING_KEY"]
step = sys.argv[1]
session = pdpyras.EventsAPISession(key)
session.url = url
if step == "trigger":
    dedup = session.trigger(
        "Disk full on db1", "db1.example.com", severity="critical",
        custom_details={"free": "1%", "mount": "/var"},
        links=[{"href": "https://runbooks.example.com/disk", "text": "Runbook"}],
    )
    print(json.dumps({"dedup_key": dedup}))
elif step == "trigger_again":
    dedup = session.trigger("Disk full on db1", "db1.example.com", dedup_key=os.environ["DEDUP_KEY"])
    print(json.dumps({"dedup_key": dedup}))
elif step in ("acknowledge", "resolve"):
    dedup = getattr(session, step)(os.environ["DEDUP_KEY"])
    print(json.dumps({"dedup_key": dedup}))
elif step == "change":
    changes = pdpyras.ChangeEventsAPISession(key)
    changes.url = url
    changes.submit("Deployed v1.2.3", source="ci", custom_details={"sha": "abc123"})
    print(json.dumps({"submitted": True}))
elif step == "bad_key":
    bad = pdpyras.EventsAPISession("not-a-routing-key-of-klaxon-0000")
    bad.url = url
    try:
        bad.trigger("x", "y")
        print(json.dumps({"raised": None}))
    except pdpyras.PDHTTPError as e:
        print(json.dumps({"raised": e.response.status_code, "body": e.response.json()}))
"#;

async fn pdpyras(script: &Path, step: &str, server: &Server, key: &str, dedup: &str) -> Value {
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(step)
        .env("KLAXON_URL", &server.base)
        .env("ROUTING_KEY", key)
        .env("DEDUP_KEY", dedup)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pdpyras {step} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{step}: {e}: {stdout}"))
}

fn has_pdpyras() -> bool {
    Command::new("python3")
        .args(["-c", "import pdpyras"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn pdpyras_triggers_acknowledges_and_resolves(backend: Backend) {
    if !has_pdpyras() {
        return missing(
            "the pdpyras Python module",
            "python3 -m pip install pdpyras",
        );
    }
    let server = Server::start(backend).await;
    let (acct, s) = account_with_service(&server, "Acme").await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pdpyras_steps.py");
    std::fs::write(&script, PDPYRAS_SCRIPT).unwrap();
    let key = s.integration_key.as_str();

    // A trigger without a key: the client returns the key Klaxon made.
    let out = pdpyras(&script, "trigger", &server, key, "").await;
    let dedup = out["dedup_key"].as_str().unwrap().to_owned();
    let incident = only_incident(&server, &acct.token, &s.service_id).await;
    assert_eq!(incident["key"], dedup.as_str());
    assert_eq!(incident["message"], "Disk full on db1");
    assert_eq!(incident["state"], "triggered");
    assert_eq!(incident["details"]["source"], "db1.example.com");
    assert_eq!(incident["details"]["severity"], "critical");
    assert_eq!(
        incident["details"]["custom_details"],
        json!({"free": "1%", "mount": "/var"})
    );
    let id = incident["id"].as_str().unwrap().to_owned();
    // The same key again: deduplicated.
    let out = pdpyras(&script, "trigger_again", &server, key, &dedup).await;
    assert_eq!(out["dedup_key"], dedup.as_str());
    assert_eq!(
        incidents(&server, &acct.token, &s.service_id).await.len(),
        1
    );

    for (step, state) in [("acknowledge", "acknowledged"), ("resolve", "resolved")] {
        let out = pdpyras(&script, step, &server, key, &dedup).await;
        assert_eq!(out["dedup_key"], dedup.as_str(), "{step}");
        let got = server.get(&format!("/incidents/{id}"), &acct.token).await;
        assert_eq!(got.body["state"], state, "{step}");
    }
    assert_eq!(
        incident_actions(&server, &acct.token, &id).await,
        [
            "incident.resolve",
            "incident.acknowledge",
            "incident.create"
        ]
    );
    // Resolving again is fine for the client too.
    let out = pdpyras(&script, "resolve", &server, key, &dedup).await;
    assert_eq!(out["dedup_key"], dedup.as_str());

    // Change events.
    let out = pdpyras(&script, "change", &server, key, "").await;
    assert_eq!(out["submitted"], true);
    let events = server
        .get(&format!("/services/{}/events", s.service_id), &acct.token)
        .await;
    assert_eq!(events.body[0]["action"], "service.change_event");
    assert_eq!(events.body[0]["changeset"]["summary"], "Deployed v1.2.3");

    // An unknown routing key: the client raises on PagerDuty's 400.
    let out = pdpyras(&script, "bad_key", &server, key, "").await;
    assert_eq!(out["raised"], 400, "{out}");
    assert_eq!(out["body"]["errors"], json!(["Invalid routing key"]));
}

/// The Alertmanager binary: Debian names it `prometheus-alertmanager`,
/// upstream `alertmanager`.
fn find_alertmanager() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .flat_map(|dir| ["prometheus-alertmanager", "alertmanager"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Alertmanager on a free loopback port with its own storage, clustering
/// off; killed on drop.
struct Alertmanager {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    async fn start(binary: &Path, config: &str, http: &reqwest::Client) -> Alertmanager {
        // A port picked by binding port 0 could be taken before Alertmanager
        // binds it: a few attempts make that harmless.
        let mut logs = String::new();
        for attempt in 1..=3 {
            let dir = tempfile::tempdir().unwrap();
            let config_file = dir.path().join("alertmanager.yml");
            std::fs::write(&config_file, config).unwrap();
            let storage = dir.path().join("data");
            std::fs::create_dir_all(&storage).unwrap();
            let log = dir.path().join("alertmanager.log");
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log_file = std::fs::File::create(&log).unwrap();
            let child = Command::new(binary)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .arg("--log.level=debug")
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("alertmanager starts");
            let mut am = Alertmanager {
                child,
                base: format!("http://127.0.0.1:{port}"),
                log,
                _dir: dir,
            };
            if am.ready(http).await {
                return am;
            }
            logs.push_str(&format!(
                "attempt {attempt}, port {port}:\n{}\n",
                am.log_text()
            ));
        }
        panic!("alertmanager did not start:\n{logs}");
    }

    /// Polls `/-/ready` for up to 20 s, while the process lives.
    async fn ready(&mut self, http: &reqwest::Client) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let ready = http
                .get(format!("{}/-/ready", self.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Posts alerts to Alertmanager's API, as Prometheus does.
    async fn post_alerts(&self, http: &reqwest::Client, alerts: &Value) {
        let res = http
            .post(format!("{}/api/v2/alerts", self.base))
            .json(alerts)
            .send()
            .await
            .expect("alertmanager answers");
        assert_eq!(res.status(), StatusCode::OK, "{:?}", res.text().await);
    }
}

/// Three receivers, each on its own Klaxon service, routed by the `via`
/// label; short intervals so that a test takes seconds.
fn alertmanager_config(klaxon: &str, webhook_key: &str, pd_key: &str, og_key: &str) -> String {
    format!(
        r#"global:
  resolve_timeout: 5s
route:
  receiver: webhook
  group_by: ["alertname", "via"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: webhook
      matchers: ['via="webhook"']
    - receiver: pagerduty
      matchers: ['via="pagerduty"']
    - receiver: opsgenie
      matchers: ['via="opsgenie"']
receivers:
  - name: webhook
    webhook_configs:
      - url: {klaxon}/integrations/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {webhook_key}
  - name: pagerduty
    pagerduty_configs:
      - url: {klaxon}/v2/enqueue
        routing_key: {pd_key}
        severity: critical
        send_resolved: true
  - name: opsgenie
    opsgenie_configs:
      - api_url: {klaxon}/
        api_key: {og_key}
        priority: P2
        send_resolved: true
"#
    )
}

fn alerts(ends_at: jiff::Timestamp, starts_at: jiff::Timestamp) -> Value {
    Value::Array(
        ["webhook", "pagerduty", "opsgenie"]
            .iter()
            .map(|via| {
                json!({
                    "labels": {"alertname": "KlaxonEndToEnd", "via": via, "severity": "critical", "instance": "db1"},
                    "annotations": {"summary": format!("Disk full on db1 (through {via})")},
                    "startsAt": starts_at.to_string(),
                    "endsAt": ends_at.to_string(),
                    "generatorURL": "http://prometheus.example.com/graph?g0.expr=disk",
                })
            })
            .collect(),
    )
}

async fn alertmanager_pages_through_all_three_receivers(backend: Backend) {
    let Some(binary) = find_alertmanager() else {
        return missing(
            "Prometheus Alertmanager",
            "apt-get install -y prometheus-alertmanager",
        );
    };
    let server = Server::start(backend).await;
    let (acct, webhook) = account_with_service(&server, "Acme").await;
    let pd = another_service(&server, &acct, "Through PagerDuty").await;
    let og = another_service(&server, &acct, "Through Opsgenie").await;
    let config = alertmanager_config(
        &server.base,
        &webhook.integration_key,
        &pd.integration_key,
        &og.integration_key,
    );
    let http = reqwest::Client::new();
    let am = Alertmanager::start(&binary, &config, &http).await;
    let services = [
        ("webhook", &webhook.service_id),
        ("pagerduty", &pd.service_id),
        ("opsgenie", &og.service_id),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let wait_for = |state: &'static str| {
        let server = &server;
        let token = acct.token.clone();
        let am = &am;
        async move {
            loop {
                let mut all = Vec::new();
                for (via, service) in services {
                    let list = incidents(server, &token, service).await;
                    let done = list.len() == 1 && list[0]["state"] == state;
                    all.push((via, done, list));
                }
                if all.iter().all(|(_, done, _)| *done) {
                    return all
                        .into_iter()
                        .map(|(_, _, mut l)| l.remove(0))
                        .collect::<Vec<_>>();
                }
                assert!(
                    Instant::now() < deadline,
                    "not every receiver's incident is {state} within 60 s: {all:?}\nalertmanager's log:\n{}",
                    am.log_text()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    let now = jiff::Timestamp::now();
    let started = now - jiff::SignedDuration::from_secs(60);
    am.post_alerts(
        &http,
        &alerts(now + jiff::SignedDuration::from_secs(3600), started),
    )
    .await;
    let opened = wait_for("triggered").await;
    let (through_webhook, through_pd, through_og) = (&opened[0], &opened[1], &opened[2]);
    assert_eq!(
        through_webhook["message"],
        "Disk full on db1 (through webhook)"
    );
    assert_eq!(through_webhook["details"]["commonLabels"]["via"], "webhook");
    assert_eq!(through_webhook["details"]["alert_count"], 1);
    assert!(through_webhook["key"]
        .as_str()
        .unwrap()
        .contains("KlaxonEndToEnd"));
    // Alertmanager's PagerDuty and Opsgenie receivers key a group by the
    // SHA-256 of its group key.
    for incident in [through_pd, through_og] {
        let key = incident["key"].as_str().unwrap();
        assert!(
            key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()),
            "{key}"
        );
        assert!(
            incident["message"]
                .as_str()
                .unwrap()
                .contains("KlaxonEndToEnd"),
            "{incident}"
        );
    }
    assert_eq!(through_pd["details"]["severity"], "critical");
    assert_eq!(through_pd["details"]["client"], "Alertmanager");
    assert_eq!(through_og["details"]["priority"], "P2");
    assert_eq!(through_og["details"]["details"]["via"], "opsgenie");

    // The alerts end: Alertmanager sends the resolutions.
    let ended = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    am.post_alerts(&http, &alerts(ended, started)).await;
    let resolved = wait_for("resolved").await;
    for (incident, opened) in resolved.iter().zip(&opened) {
        assert_eq!(incident["id"], opened["id"], "the same incident resolves");
    }
    for incident in &resolved {
        let id = incident["id"].as_str().unwrap();
        let actions = incident_actions(&server, &acct.token, id).await;
        assert_eq!(
            actions.first().map(String::as_str),
            Some("incident.resolve"),
            "{actions:?}"
        );
    }
}

crate::both_backends!(
    pdpyras_triggers_acknowledges_and_resolves,
    alertmanager_pages_through_all_three_receivers,
);
