//! Email pages over SMTP (`KLAXON_SMTP_URL`, `KLAXON_SMTP_FROM`).
//!
//! One connection per message: pages are rare and bursty, and a fresh
//! connection never trips over one the relay has dropped meanwhile. Each
//! message is `multipart/alternative` (plain text and HTML, see
//! [`render`]) with a `Message-ID` made from the outbox row id, so a
//! message sent twice (a sender that died before recording the send) is
//! recognisably the same message to mail clients, and a `References`
//! header naming the incident, so pages and updates about one incident
//! thread together.
//!
//! A 4xx reply, a dropped connection or a timeout is transient: the
//! message is retried with backoff. A 5xx reply (unknown mailbox, refused
//! credentials) or an address that cannot be sent to fails for good, with
//! the server's reply as the error.

pub mod render;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use klaxon_core::time::Millis;
use klaxon_store::{OutgoingMessage, SendOutcome};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{retry_at, Links, Notifier};
use crate::config::{redact, SmtpConfig};

/// Longest wait for the server at each step (connecting, each reply).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one whole send may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest error kept with a failed message.
const ERROR_MAX: usize = 500;

/// Sends email pages through one SMTP server.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of Message-IDs: the sender's domain.
    id_domain: String,
    links: Arc<dyn Links>,
}

impl Email {
    /// The notifier for `config`; fails on a URL or sender address that
    /// cannot work (at start-up, not at the first page).
    pub fn new(config: &SmtpConfig, links: Arc<dyn Links>) -> anyhow::Result<Self> {
        let from: Mailbox = config.from.parse().with_context(|| {
            format!(
                "the SMTP sender {:?} is not an email address (KLAXON_SMTP_FROM)",
                config.from
            )
        })?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)
            .with_context(|| format!("the SMTP URL {} is not usable", redact(&config.url)))?
            .timeout(Some(STEP_TIMEOUT))
            .build();
        Ok(Self {
            id_domain: from.email.domain().to_owned(),
            transport,
            from,
            links,
        })
    }

    /// The `Message-ID` of `m`'s email: the same for every attempt.
    pub fn message_id(&self, m: &OutgoingMessage) -> String {
        format!("<{}.{}@{}>", m.id, m.incident_id, self.id_domain)
    }

    /// The email for `m`, or why it cannot be sent.
    pub fn message(&self, m: &OutgoingMessage) -> Result<Message, String> {
        let to: Address = m
            .address
            .parse()
            .map_err(|err| format!("{:?} is not an email address: {err}", m.address))?;
        let body = render::render(m, &*self.links);
        let header = |name: &'static str, value: String| {
            HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
        };
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(body.subject)
            .message_id(Some(self.message_id(m)))
            .references(format!("<{}.incident@{}>", m.incident_id, self.id_domain))
            // Out-of-office and other automatic replies are not wanted.
            .raw_header(header("Auto-Submitted", "auto-generated".to_owned()))
            .raw_header(header("X-Auto-Response-Suppress", "All".to_owned()))
            .raw_header(header("X-Klaxon-Incident", m.incident_id.clone()))
            .multipart(MultiPart::alternative_plain_html(body.text, body.html))
            .map_err(|err| format!("cannot build the email: {err}"))
    }
}

#[async_trait]
impl Notifier for Email {
    fn provider(&self, _channel: &str) -> &'static str {
        "smtp"
    }

    async fn send(&self, m: &OutgoingMessage, now: Millis) -> SendOutcome {
        let email = match self.message(m) {
            Ok(email) => email,
            Err(error) => return SendOutcome::Failed { error },
        };
        let message_id = self.message_id(m);
        let result = tokio::time::timeout(SEND_TIMEOUT, self.transport.send(email)).await;
        let error = match result {
            Ok(Ok(_)) => {
                return SendOutcome::Sent {
                    provider_id: Some(message_id),
                    delivered: false,
                }
            }
            Ok(Err(err)) => err,
            Err(_) => {
                return SendOutcome::Retry {
                    error: format!("no answer from the SMTP server in {SEND_TIMEOUT:?}"),
                    at: retry_at(now, m.attempts, rand::random()),
                }
            }
        };
        outcome(&error, m.attempts, now, rand::random())
    }
}

/// What an SMTP error means for the message.
fn outcome(err: &SmtpError, attempts: i64, now: Millis, jitter: f64) -> SendOutcome {
    let error = describe(err);
    // A 5xx reply will not change by asking again; neither will a message
    // the client itself cannot send (no common AUTH mechanism, an address
    // the server cannot take).
    if err.is_permanent() || err.is_client() {
        SendOutcome::Failed { error }
    } else {
        SendOutcome::Retry {
            error,
            at: retry_at(now, attempts, jitter),
        }
    }
}

/// `550 5.1.1 mailbox unavailable` for a reply, lettre's words otherwise.
fn describe(err: &SmtpError) -> String {
    let text = match (err.status(), std::error::Error::source(err)) {
        (Some(code), Some(reply)) => format!("SMTP {code} {reply}"),
        (Some(code), None) => format!("SMTP {code}"),
        _ => format!("SMTP: {err}"),
    };
    crate::html::truncate(&crate::html::one_line(&text), ERROR_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::LinkAction;

    struct FakeLinks;

    impl Links for FakeLinks {
        fn url(&self, m: &OutgoingMessage, action: LinkAction) -> String {
            format!("https://k.test/links/{}-{}", m.id, action.as_str())
        }
    }

    fn email(from: &str) -> anyhow::Result<Email> {
        Email::new(
            &SmtpConfig {
                url: "smtp://127.0.0.1:2525".into(),
                from: from.into(),
            },
            Arc::new(FakeLinks),
        )
    }

    fn page(address: &str) -> OutgoingMessage {
        OutgoingMessage {
            id: "msg00001".into(),
            account_id: "acc00001".into(),
            incident_id: "inc00001".into(),
            user_id: "usr00001".into(),
            contact_id: None,
            reason: "assigned".into(),
            channel: "email".into(),
            address: address.into(),
            attempts: 1,
            page_at: 0,
            service_name: "Disks".into(),
            message: "disk full".into(),
            description: None,
            details: None,
            incident_state: "triggered".into(),
            bundle: Vec::new(),
        }
    }

    #[test]
    fn settings_are_checked_at_start() {
        assert!(email("Klaxon <klaxon@example.com>").is_ok());
        assert!(email("not an address").is_err());
        let bad_url = Email::new(
            &SmtpConfig {
                url: "smtp://user:secret@/".into(),
                from: "k@example.com".into(),
            },
            Arc::new(FakeLinks),
        );
        let err = format!("{:#}", bad_url.err().expect("an empty host is refused"));
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn the_message_id_is_the_rows_and_the_headers_are_set() -> anyhow::Result<()> {
        let e = email("Klaxon <klaxon@pager.example.com>")?;
        let m = page("oncall@example.com");
        let raw = String::from_utf8(e.message(&m).map_err(anyhow::Error::msg)?.formatted())?;
        assert!(
            raw.contains("Message-ID: <msg00001.inc00001@pager.example.com>\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("References: <inc00001.incident@pager.example.com>\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("Subject: ALERT [Disks] disk full\r\n"),
            "{raw}"
        );
        assert!(raw.contains("Auto-Submitted: auto-generated\r\n"), "{raw}");
        assert!(raw.contains("To: oncall@example.com\r\n"), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        // Another attempt is the same message.
        let again = String::from_utf8(
            e.message(&OutgoingMessage { attempts: 2, ..m })
                .map_err(anyhow::Error::msg)?
                .formatted(),
        )?;
        assert!(again.contains("Message-ID: <msg00001.inc00001@pager.example.com>\r\n"));
        Ok(())
    }

    #[test]
    fn a_bad_address_fails_without_a_send() {
        let e = email("k@example.com").expect("valid settings");
        assert!(e.message(&page("no-at-sign")).is_err());
        assert!(e.message(&page("a@b@c")).is_err());
    }
}
