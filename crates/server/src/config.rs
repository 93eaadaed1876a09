//! Configuration: flags win over `KLAXON_…` environment variables, which
//! win over the optional TOML file, which wins over the defaults. Loaded
//! once at start-up and carried in the application state.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use klaxon_core::time::Millis;
use serde::Deserialize;

pub use crate::http::client_ip::IpRange;

/// Settings shared by every subcommand that touches the database.
#[derive(Debug, Clone, Args, Default)]
pub struct ConfigArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "KLAXON_LISTEN")]
    pub listen: Option<String>,
    /// sqlite://path or postgres://… [default: sqlite://./klaxon-data/klaxon.db]
    #[arg(long = "database", env = "KLAXON_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Base URL for links in notifications and provider callbacks [default: http://<listen>]
    #[arg(long, env = "KLAXON_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Optional TOML file with the same settings (snake_case keys)
    #[arg(long, env = "KLAXON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Who may register (POST /registrations): open (anyone creates an
    /// account, or joins one with an invitation) | invite (only with an
    /// invitation) | closed [default: open]
    #[arg(long, env = "KLAXON_REGISTRATIONS")]
    pub registrations: Option<String>,
    /// Log format: text | json [default: text]
    #[arg(long, env = "KLAXON_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// SMTP server for email pages: smtp://, smtps:// (TLS) or
    /// smtp://…?tls=required (STARTTLS), with user:password@ for auth
    #[arg(long, env = "KLAXON_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Sender address of email pages [default: klaxon@<public host>]
    #[arg(long, env = "KLAXON_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Twilio account SID (SMS and voice pages)
    #[arg(long, env = "KLAXON_TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,
    /// Twilio auth token
    #[arg(long, env = "KLAXON_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,
    /// Twilio number pages are sent from (E.164)
    #[arg(long, env = "KLAXON_TWILIO_FROM_NUMBER")]
    pub twilio_from_number: Option<String>,
    /// Twilio REST API base URL [default: https://api.twilio.com]
    #[arg(long, env = "KLAXON_TWILIO_API_URL")]
    pub twilio_api_url: Option<String>,
    /// Events per minute each integration key may send to the PagerDuty,
    /// Opsgenie and Alertmanager endpoints, per process, with a burst of
    /// as many; 0 turns the limit off [default: 12000]
    #[arg(long, env = "KLAXON_INTEGRATION_RATE")]
    pub integration_rate: Option<u32>,
    /// Serve HTTPS with this certificate chain (PEM; with --tls-key).
    /// Reloaded on SIGHUP
    #[arg(long, env = "KLAXON_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "KLAXON_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Bearer token GET /metrics requires [default: none, open]
    #[arg(long, env = "KLAXON_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// How long a sign-in session lasts unused: 30d, 12h, 90m, 45s
    /// [default: 30d]
    #[arg(long, env = "KLAXON_SESSION_TTL")]
    pub session_ttl: Option<String>,
    /// Sign-in (and registration) attempts per minute per email address,
    /// per process; 0 turns the limit off [default: 10]
    #[arg(long, env = "KLAXON_AUTH_RATE_EMAIL")]
    pub auth_rate_email: Option<u32>,
    /// Sign-in (and registration) attempts per minute per client address,
    /// per process; 0 turns the limit off [default: 30]
    #[arg(long, env = "KLAXON_AUTH_RATE_IP")]
    pub auth_rate_ip: Option<u32>,
    /// Reverse proxies (addresses or CIDR ranges, comma-separated) whose
    /// X-Forwarded-For names the client [default: none]
    #[arg(long, env = "KLAXON_TRUSTED_PROXY")]
    pub trusted_proxy: Option<String>,
}

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    public_url: Option<String>,
    registrations: Option<String>,
    log_format: Option<String>,
    smtp_url: Option<String>,
    smtp_from: Option<String>,
    twilio_account_sid: Option<String>,
    twilio_auth_token: Option<String>,
    twilio_from_number: Option<String>,
    twilio_api_url: Option<String>,
    integration_rate: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    metrics_token: Option<String>,
    session_ttl: Option<String>,
    auth_rate_email: Option<u32>,
    auth_rate_ip: Option<u32>,
    trusted_proxy: Option<String>,
}

/// Validated configuration.
#[derive(Clone)]
pub struct Config {
    /// Socket address to bind.
    pub listen: SocketAddr,
    /// Database URL (may hold a password: redacted in `Debug`).
    pub database_url: String,
    /// Base URL for links.
    pub public_url: String,
    /// Who may register through `POST /registrations`.
    pub registrations: Registrations,
    /// JSON logs instead of text.
    pub json_logs: bool,
    /// Virtual clock speed (`KLAXON_CLOCK_SPEED`).
    pub clock_speed: f64,
    /// Virtual clock origin in ms (`KLAXON_CLOCK_ORIGIN`, unix seconds).
    pub clock_origin_ms: Option<i64>,
    /// Email over SMTP, when configured.
    pub smtp: Option<SmtpConfig>,
    /// SMS and voice through Twilio, when configured.
    pub twilio: Option<TwilioConfig>,
    /// Inbound integration events per minute per key and process (0: no limit).
    pub integration_rate: u32,
    /// HTTPS, when configured.
    pub tls: Option<TlsConfig>,
    /// The bearer token `GET /metrics` requires, when set (redacted in `Debug`).
    pub metrics_token: Option<String>,
    /// How long a session token lasts unused (ms of the server's clock).
    pub session_ttl_ms: Millis,
    /// Sign-in and registration attempts per minute per email and process
    /// (0: no limit).
    pub auth_rate_email: u32,
    /// Sign-in and registration attempts per minute per client address and
    /// process (0: no limit).
    pub auth_rate_ip: u32,
    /// Proxies whose `X-Forwarded-For` is believed (none: the socket peer
    /// is the client).
    pub trusted_proxies: Vec<IpRange>,
}

/// The certificate and key HTTPS is served with (PEM files, read at start
/// and again on SIGHUP).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Who may register through `POST /registrations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registrations {
    /// Anyone creates an account; an invitation joins its account.
    Open,
    /// Only with an invitation, which joins its account.
    Invite,
    /// Nobody (admins add users; `klaxon bootstrap` makes accounts).
    Closed,
}

/// Where email pages go.
#[derive(Clone)]
pub struct SmtpConfig {
    /// `smtp://`, `smtps://` URL (may hold a password: redacted in `Debug`).
    pub url: String,
    /// The `From` address.
    pub from: String,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("url", &redact(&self.url))
            .field("from", &self.from)
            .finish()
    }
}

/// Twilio's credentials and the number pages come from.
#[derive(Clone)]
pub struct TwilioConfig {
    /// Account SID.
    pub account_sid: String,
    /// Auth token (signs requests both ways: never logged).
    pub auth_token: String,
    /// The sending number, E.164.
    pub from_number: String,
    /// REST API base URL, without a trailing slash.
    pub api_url: String,
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"***")
            .field("from_number", &self.from_number)
            .field("api_url", &self.api_url)
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact(&self.database_url))
            .field("public_url", &self.public_url)
            .field("registrations", &self.registrations)
            .field("json_logs", &self.json_logs)
            .field("clock_speed", &self.clock_speed)
            .field("clock_origin_ms", &self.clock_origin_ms)
            .field("smtp", &self.smtp)
            .field("twilio", &self.twilio)
            .field("integration_rate", &self.integration_rate)
            .field("tls", &self.tls)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .field("session_ttl_ms", &self.session_ttl_ms)
            .field("auth_rate_email", &self.auth_rate_email)
            .field("auth_rate_ip", &self.auth_rate_ip)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

/// Hides the password in `scheme://user:password@host/db`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// The default database location.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./klaxon-data/klaxon.db";
/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default inbound integration rate: events per minute per key.
pub const DEFAULT_INTEGRATION_RATE: u32 = 12_000;
/// The default session lifetime, unused.
pub const DEFAULT_SESSION_TTL: &str = "30d";
/// The default sign-in attempts per minute per email address.
pub const DEFAULT_AUTH_RATE_EMAIL: u32 = 10;
/// The default sign-in attempts per minute per client address.
pub const DEFAULT_AUTH_RATE_IP: u32 = 30;

impl ConfigArgs {
    /// Merges flags/env with the file and defaults, and validates.
    pub fn load(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let listen_text = pick(&self.listen, &file.listen, DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text
            .parse()
            .with_context(|| format!("listen address {listen_text:?} is not host:port"))?;
        let database_url = pick(&self.database_url, &file.database_url, DEFAULT_DATABASE_URL);
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            bail!("database URL must start with sqlite:// or postgres://");
        }
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
            (None, None) => None,
            _ => bail!("TLS needs both KLAXON_TLS_CERT and KLAXON_TLS_KEY (--tls-cert, --tls-key)"),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = pick(
            &self.public_url,
            &file.public_url,
            &format!("{scheme}://{listen}"),
        )
        .trim_end_matches('/')
        .to_owned();
        let registrations = match pick(&self.registrations, &file.registrations, "open").as_str() {
            "open" => Registrations::Open,
            "invite" => Registrations::Invite,
            "closed" => Registrations::Closed,
            other => bail!("registrations must be open, invite or closed, not {other:?}"),
        };
        let json_logs = match pick(&self.log_format, &file.log_format, "text").as_str() {
            "text" => false,
            "json" => true,
            other => bail!("log format must be text or json, not {other:?}"),
        };
        let clock_speed = match std::env::var("KLAXON_CLOCK_SPEED") {
            Ok(v) => v
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .with_context(|| {
                    format!("KLAXON_CLOCK_SPEED must be a positive number, not {v:?}")
                })?,
            Err(_) => 1.0,
        };
        let clock_origin_ms = match std::env::var("KLAXON_CLOCK_ORIGIN") {
            Ok(v) => Some(
                v.parse::<i64>()
                    .with_context(|| {
                        format!("KLAXON_CLOCK_ORIGIN must be unix seconds, not {v:?}")
                    })?
                    .saturating_mul(1000),
            ),
            Err(_) => None,
        };
        let smtp = match opt(&self.smtp_url, &file.smtp_url) {
            Some(url) => {
                if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                    bail!("SMTP URL must start with smtp:// or smtps://");
                }
                let host = public_url
                    .split("://")
                    .nth(1)
                    .and_then(|rest| rest.split(['/', ':']).next())
                    .filter(|h| !h.is_empty())
                    .unwrap_or("localhost");
                let from = opt(&self.smtp_from, &file.smtp_from)
                    .unwrap_or_else(|| format!("Klaxon <klaxon@{host}>"));
                Some(SmtpConfig { url, from })
            }
            None => None,
        };
        let twilio = match (
            opt(&self.twilio_account_sid, &file.twilio_account_sid),
            opt(&self.twilio_auth_token, &file.twilio_auth_token),
            opt(&self.twilio_from_number, &file.twilio_from_number),
        ) {
            (Some(account_sid), Some(auth_token), Some(from_number)) => {
                if klaxon_core::contact::ContactAddress::parse(
                    klaxon_core::contact::ContactType::Sms,
                    &from_number,
                )
                .is_err()
                {
                    bail!("the Twilio from number must be E.164 (+15551234567), not {from_number:?}");
                }
                let api_url = opt(&self.twilio_api_url, &file.twilio_api_url)
                    .unwrap_or_else(|| "https://api.twilio.com".to_owned())
                    .trim_end_matches('/')
                    .to_owned();
                Some(TwilioConfig {
                    account_sid,
                    auth_token,
                    from_number,
                    api_url,
                })
            }
            (None, None, None) => None,
            _ => bail!(
                "Twilio needs all of KLAXON_TWILIO_ACCOUNT_SID, KLAXON_TWILIO_AUTH_TOKEN and KLAXON_TWILIO_FROM_NUMBER"
            ),
        };
        let integration_rate = self
            .integration_rate
            .or(file.integration_rate)
            .unwrap_or(DEFAULT_INTEGRATION_RATE);
        let metrics_token = opt(&self.metrics_token, &file.metrics_token);
        let ttl_text = pick(&self.session_ttl, &file.session_ttl, DEFAULT_SESSION_TTL);
        let session_ttl_ms = parse_duration_ms(&ttl_text).with_context(|| {
            format!("session TTL must be a duration like 30d, 12h, 90m or 45s (at most 3650d), not {ttl_text:?}")
        })?;
        let auth_rate_email = self
            .auth_rate_email
            .or(file.auth_rate_email)
            .unwrap_or(DEFAULT_AUTH_RATE_EMAIL);
        let auth_rate_ip = self
            .auth_rate_ip
            .or(file.auth_rate_ip)
            .unwrap_or(DEFAULT_AUTH_RATE_IP);
        let trusted_proxies = match opt(&self.trusted_proxy, &file.trusted_proxy) {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    IpRange::parse(p).with_context(|| {
                        format!("trusted proxy {p:?} is not an IP address or CIDR range")
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            None => Vec::new(),
        };
        Ok(Config {
            listen,
            database_url,
            public_url,
            registrations,
            json_logs,
            clock_speed,
            clock_origin_ms,
            smtp,
            twilio,
            integration_rate,
            tls,
            metrics_token,
            session_ttl_ms,
            auth_rate_email,
            auth_rate_ip,
            trusted_proxies,
        })
    }
}

/// `30d`, `12h`, `90m`, `45s` in ms; a positive amount with its unit, at
/// most ten years.
pub fn parse_duration_ms(text: &str) -> Option<Millis> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let unit_ms: Millis = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    let amount: Millis = text[..text.len() - 1].parse().ok()?;
    let ms = amount.checked_mul(unit_ms)?;
    (ms > 0 && ms <= 3650 * 86_400_000).then_some(ms)
}

/// A setting given by flag/env or the file, if given and not empty.
fn opt(flag: &Option<String>, file: &Option<String>) -> Option<String> {
    flag.clone()
        .or_else(|| file.clone())
        .filter(|v| !v.trim().is_empty())
}

fn pick(flag: &Option<String>, file: &Option<String>, default: &str) -> String {
    flag.clone()
        .or_else(|| file.clone())
        .unwrap_or_else(|| default.to_owned())
}

/// The defaults as a TOML file (`klaxon print-default-config`).
pub fn default_toml() -> String {
    format!(
        "# Klaxon configuration. Flags and KLAXON_* environment variables override these.\n\
         listen = \"{DEFAULT_LISTEN}\"\n\
         database_url = \"{DEFAULT_DATABASE_URL}\"\n\
         # public_url = \"https://klaxon.example.com\"\n\
         registrations = \"open\"\n\
         log_format = \"text\"\n\
         # Events per minute per integration key and process (0: no limit).\n\
         integration_rate = {DEFAULT_INTEGRATION_RATE}\n\
         # HTTPS (PEM files; reloaded on SIGHUP). The public URL then defaults to https://.\n\
         # tls_cert = \"/etc/klaxon/cert.pem\"\n\
         # tls_key = \"/etc/klaxon/key.pem\"\n\
         # Bearer token GET /metrics requires (default: none, open).\n\
         # metrics_token = \"…\"\n\
         # How long a sign-in session lasts unused (s, m, h or d).\n\
         session_ttl = \"{DEFAULT_SESSION_TTL}\"\n\
         # Sign-in and registration attempts per minute and process (0: no limit).\n\
         auth_rate_email = {DEFAULT_AUTH_RATE_EMAIL}\n\
         auth_rate_ip = {DEFAULT_AUTH_RATE_IP}\n\
         # Reverse proxies whose X-Forwarded-For names the client.\n\
         # trusted_proxy = \"127.0.0.1, 10.0.0.0/8\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://kx:secret@db:5432/kx"),
            "postgres://kx:***@db:5432/kx"
        );
        assert_eq!(redact("postgres://kx@db/kx"), "postgres://kx@db/kx");
        assert_eq!(redact("sqlite://./a.db"), "sqlite://./a.db");
    }

    #[test]
    fn defaults_are_valid() {
        let c = ConfigArgs::default().load().expect("defaults load");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.registrations, Registrations::Open);
        assert_eq!(c.integration_rate, DEFAULT_INTEGRATION_RATE);
        assert_eq!(c.session_ttl_ms, 30 * 86_400_000);
        assert_eq!((c.auth_rate_email, c.auth_rate_ip), (10, 30));
        assert!(c.trusted_proxies.is_empty());
    }

    #[test]
    fn the_default_file_parses() {
        toml::from_str::<FileConfig>(&default_toml()).expect("parses");
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nregistrations = \"closed\"\n",
        )
        .expect("write");
        let args = ConfigArgs {
            listen: Some("127.0.0.1:9001".into()),
            config: Some(path),
            ..Default::default()
        };
        let c = args.load().expect("loads");
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.registrations, Registrations::Closed);
    }

    #[test]
    fn reads_durations_and_proxies() {
        assert_eq!(parse_duration_ms("30d"), Some(30 * 86_400_000));
        assert_eq!(parse_duration_ms("90m"), Some(90 * 60_000));
        assert_eq!(parse_duration_ms(" 45s "), Some(45_000));
        for bad in ["", "30", "d", "0h", "-1h", "1w", "3651d", "1.5h"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
        let args = ConfigArgs {
            registrations: Some("invite".into()),
            session_ttl: Some("12h".into()),
            trusted_proxy: Some("127.0.0.1, 10.0.0.0/8,::1".into()),
            ..Default::default()
        };
        let c = args.load().expect("loads");
        assert_eq!(c.registrations, Registrations::Invite);
        assert_eq!(c.session_ttl_ms, 12 * 3_600_000);
        assert_eq!(c.trusted_proxies.len(), 3);
        for bad in [
            ConfigArgs {
                session_ttl: Some("forever".into()),
                ..Default::default()
            },
            ConfigArgs {
                trusted_proxy: Some("10.0.0.0/33".into()),
                ..Default::default()
            },
            ConfigArgs {
                registrations: Some("maybe".into()),
                ..Default::default()
            },
        ] {
            assert!(bad.load().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_needs_both_files_and_makes_the_public_url_https() {
        let c = ConfigArgs {
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            metrics_token: Some("s3cret".into()),
            ..Default::default()
        }
        .load()
        .expect("loads");
        assert_eq!(c.public_url, "https://127.0.0.1:8080");
        assert!(c.tls.is_some());
        assert!(!format!("{c:?}").contains("s3cret"));
        let half = ConfigArgs {
            tls_cert: Some("cert.pem".into()),
            ..Default::default()
        };
        assert!(half.load().is_err());
        let blank = ConfigArgs {
            metrics_token: Some(" ".into()),
            ..Default::default()
        };
        assert_eq!(blank.load().expect("loads").metrics_token, None);
    }

    #[test]
    fn rejects_bad_values() {
        let bad = ConfigArgs {
            listen: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(bad.load().is_err());
        let bad = ConfigArgs {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        };
        assert!(bad.load().is_err());
    }
}
