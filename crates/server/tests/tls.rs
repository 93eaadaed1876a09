//! HTTPS served by the real binary (`KLAXON_TLS_CERT`/`KLAXON_TLS_KEY`)
//! with certificates made at test time: reqwest over TLS, PagerDuty's
//! official Python client (`pagerduty`, which only takes https base URLs)
//! triggering and resolving through `POST /v2/enqueue`, and a SIGHUP that
//! swaps the certificate for new connections (and a bad file that does
//! not). `.ci/run` installs the Python module; elsewhere its test says so
//! loudly and passes (on CI, `CI` set, it fails instead).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, Server};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for localhost and 127.0.0.1: (chain PEM, key PEM).
    fn server_cert(&self, name: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The files a TLS server is started with, and the CA that signed them.
struct Files {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Files {
    fn new() -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
            ca: Ca::new("Klaxon test CA one"),
        };
        let (cert, key) = files.ca.server_cert("klaxon one");
        files.write(&cert, &key);
        std::fs::write(files.ca_path(), &files.ca.pem).unwrap();
        files
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Replaces the files as a renewal would: written aside, renamed in.
    fn write(&self, cert: &str, key: &str) {
        for (path, text) in [(self.cert(), cert), (self.key(), key)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, &path).unwrap();
        }
    }

    async fn start(&self, backend: Backend) -> Server {
        let (cert, key) = (self.cert(), self.key());
        let mut server = Server::start_with(
            backend,
            &[
                ("KLAXON_TLS_CERT", cert.to_str().unwrap()),
                ("KLAXON_TLS_KEY", key.to_str().unwrap()),
            ],
        )
        .await;
        assert!(
            server.base.starts_with("https://127.0.0.1:"),
            "{}",
            server.base
        );
        server.http = client(&self.ca.pem);
        server
    }
}

/// A client that trusts only `ca` and opens a new connection per request
/// (so each one sees the certificate served at that moment).
fn client(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn healthz(client: &reqwest::Client, base: &str) -> Result<StatusCode, reqwest::Error> {
    client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_configured_certificate() {
    let files = Files::new();
    let mut server = files.start(Backend::Sqlite).await;
    assert_eq!(
        healthz(&server.http, &server.base).await.unwrap(),
        StatusCode::OK
    );

    // A client that trusts another CA refuses the server; plain HTTP on
    // the port gets no HTTP answer.
    let stranger = client(&Ca::new("Someone else").pem);
    assert!(healthz(&stranger, &server.base).await.is_err());
    let plain = server.base.replacen("https://", "http://", 1);
    assert!(reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_err());

    // The whole API works over it, and links default to https.
    let acct = server.register("Acme").await;
    let s = server
        .setup_service(&acct, "Web", &[acct.user_id.as_str()], 1)
        .await;
    let res = server
        .integration("trigger", &s.integration_key, &[("message", "disk full")])
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let res = server
        .post(
            &format!("/services/{}/heartbeats", s.service_id),
            &acct.token,
            json!({"name": "nightly", "interval": 60}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    let ping = res.str("ping_url");
    // (The public URL is built from the listen address, here port 0.)
    assert!(ping.starts_with("https://127.0.0.1:"), "{ping}");

    // Graceful shutdown still works.
    assert!(server.terminate(), "the server exits cleanly on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_with_a_key_that_does_not_fit() {
    let files = Files::new();
    let (_, other_key) = files.ca.server_cert("another");
    std::fs::write(files.key(), other_key).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_klaxon"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--database")
        .arg(format!("sqlite://{}/k.db", files.dir.path().display()))
        .arg("--tls-cert")
        .arg(files.cert())
        .arg("--tls-key")
        .arg(files.key())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not fit the certificate"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_for_new_connections() {
    let files = Files::new();
    let mut server = files.start(Backend::Sqlite).await;
    let old = client(&files.ca.pem);
    assert_eq!(healthz(&old, &server.base).await.unwrap(), StatusCode::OK);

    // A renewal by another CA: only clients trusting it get through once
    // the server reloads.
    let renewed_by = Ca::new("Klaxon test CA two");
    let new = client(&renewed_by.pem);
    assert!(
        healthz(&new, &server.base).await.is_err(),
        "not before SIGHUP"
    );
    let (cert, key) = renewed_by.server_cert("klaxon two");
    files.write(&cert, &key);
    server.signal("HUP");
    let started = Instant::now();
    while healthz(&new, &server.base).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate was not served after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        healthz(&old, &server.base).await.is_err(),
        "the old one is gone"
    );

    // A broken renewal is refused and the current certificate kept.
    std::fs::write(files.cert(), "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.is_running());
    assert_eq!(healthz(&new, &server.base).await.unwrap(), StatusCode::OK);
    // A key that belongs to another certificate too.
    let (cert_three, _) = renewed_by.server_cert("klaxon three");
    files.write(&cert_three, &key);
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(healthz(&new, &server.base).await.unwrap(), StatusCode::OK);
    assert!(server.terminate());
}

/// Drives `pagerduty.EventsApiV2Client` at the server over HTTPS, trusting
/// the test CA; prints one JSON line.
const PAGERDUTY_SCRIPT: &str = r#"
import json, os, ssl, sys, warnings
warnings.simplefilter("ignore")
import pagerduty

url, key, step = os.environ["KLAXON_URL"], os.environ["ROUTING_KEY"], sys.argv[1]
trust = ssl.create_default_context(cafile=os.environ["KLAXON_CA"])
client = pagerduty.EventsApiV2Client(key, base_url=url, verify=trust)
if step == "trigger":
    dedup = client.trigger(
        "Disk full on db1", "db1.example.com", severity="critical",
        custom_details={"free": "1%"},
    )
    print(json.dumps({"dedup_key": dedup}))
elif step == "resolve":
    print(json.dumps({"dedup_key": client.resolve(os.environ["DEDUP_KEY"])}))
elif step == "untrusted":
    stranger = pagerduty.EventsApiV2Client(key, base_url=url)
    try:
        stranger.trigger("x", "y")
        print(json.dumps({"refused": False}))
    except Exception as e:
        print(json.dumps({"refused": True, "error": type(e).__name__}))
elif step == "http":
    try:
        pagerduty.EventsApiV2Client(key, base_url=url.replace("https://", "http://"))
        print(json.dumps({"refused": False}))
    except Exception as e:
        print(json.dumps({"refused": True, "error": type(e).__name__}))
"#;

fn has_pagerduty() -> bool {
    Command::new("python3")
        .args(["-c", "import pagerduty; pagerduty.EventsApiV2Client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The module is missing: fail on CI, skip loudly elsewhere.
fn missing(module: &str, install: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{module} is missing on CI; .ci/run should have installed it ({install})");
    }
    eprintln!(
        "\n********************************************************************\n\
         SKIPPED: {module} is not installed here; install it with `{install}`\n\
         (.ci/run does) to run this test.\n\
         ********************************************************************\n"
    );
}

async fn pagerduty_step(
    script: &Path,
    step: &str,
    server: &Server,
    files: &Files,
    key: &str,
    dedup: &str,
) -> Value {
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(step)
        .env("KLAXON_URL", &server.base)
        .env("KLAXON_CA", files.ca_path())
        .env("ROUTING_KEY", key)
        .env("DEDUP_KEY", dedup)
        .env_remove("SSL_CERT_FILE")
        .env_remove("REQUESTS_CA_BUNDLE")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pagerduty {step} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{step}: {e}: {stdout}"))
}

async fn pagerduty_client_triggers_and_resolves_over_https(backend: Backend) {
    if !has_pagerduty() {
        return missing(
            "the pagerduty Python module",
            "python3 -m pip install pagerduty",
        );
    }
    let files = Files::new();
    let server = files.start(backend).await;
    let acct = server.register("Acme").await;
    let s = server
        .setup_service(&acct, "Disks", &[acct.user_id.as_str()], 1)
        .await;
    let script = files.dir.path().join("pagerduty_steps.py");
    std::fs::write(&script, PAGERDUTY_SCRIPT).unwrap();
    let key = s.integration_key.as_str();

    // The client refuses plain http itself, and a server it cannot verify.
    let out = pagerduty_step(&script, "http", &server, &files, key, "").await;
    assert_eq!(out["refused"], true, "{out}");
    let out = pagerduty_step(&script, "untrusted", &server, &files, key, "").await;
    assert_eq!(out["refused"], true, "{out}");

    let out = pagerduty_step(&script, "trigger", &server, &files, key, "").await;
    let dedup = out["dedup_key"].as_str().unwrap().to_owned();
    let list = server
        .get(
            &format!("/services/{}/incidents", s.service_id),
            &acct.token,
        )
        .await;
    let incidents = list.body.as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{}", list.text);
    let incident = &incidents[0];
    assert_eq!(incident["key"], dedup.as_str());
    assert_eq!(incident["message"], "Disk full on db1");
    assert_eq!(incident["state"], "triggered");
    assert_eq!(incident["details"]["custom_details"]["free"], "1%");

    let out = pagerduty_step(&script, "resolve", &server, &files, key, &dedup).await;
    assert_eq!(out["dedup_key"], dedup.as_str());
    let id = incident["id"].as_str().unwrap();
    let res = server.get(&format!("/incidents/{id}"), &acct.token).await;
    assert_eq!(res.body["state"], "resolved", "{}", res.text);
}

both_backends!(pagerduty_client_triggers_and_resolves_over_https);
