//! SMS and voice pages through Twilio's REST API.
//!
//! A text is `POST /2010-04-01/Accounts/{sid}/Messages.json` with the
//! alert (or the several alerts of a bundle) cut to one SMS segment; a
//! call is `POST …/Calls.json` pointing Twilio at `/voice?message=<id>`,
//! which reads the alert and takes a key press (`http::twilio`). Both ask
//! Twilio to report delivery to `/twilio/status`. Twilio's `sid` for the
//! message or call is recorded as the outbox row's provider id, which is
//! how those reports find it.
//!
//! Twilio takes no idempotency key for messages or calls: a process that
//! dies after Twilio accepted a send and before the outcome is committed
//! leaves the row `sending`, and when its lease runs out it is sent again.

use std::time::Duration;

use async_trait::async_trait;
use klaxon_core::notify::sms::{cut_to_one_segment, render, AlertText};
use klaxon_core::time::Millis;
use klaxon_store::{OutgoingMessage, SendOutcome};
use serde::Deserialize;

use super::{retry_at, Notifier};
use crate::config::TwilioConfig;

/// How long one API request may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER_MS: Millis = 15 * 60_000;

/// Sends `sms` and `phone` messages through one Twilio account.
pub struct Twilio {
    http: reqwest::Client,
    config: TwilioConfig,
    public_url: String,
}

impl Twilio {
    /// A client for `config`'s account; callbacks and the call's TwiML are
    /// fetched from `public_url`.
    pub fn new(config: &TwilioConfig, public_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("klaxon/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Twilio {
            http,
            config: config.clone(),
            public_url: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The URL of one of the account's resources (`Messages`, `Calls`).
    fn resource_url(&self, resource: &str) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/{resource}.json",
            self.config.api_url, self.config.account_sid
        )
    }

    /// The API call that sends `m`: its URL and form fields.
    pub fn request(&self, m: &OutgoingMessage) -> Option<(String, Vec<(&'static str, String)>)> {
        let status_callback = format!("{}/twilio/status", self.public_url);
        let to = m.address.clone();
        let from = self.config.from_number.clone();
        match m.channel.as_str() {
            "sms" => Some((
                self.resource_url("Messages"),
                vec![
                    ("To", to),
                    ("From", from),
                    ("Body", sms_text(m)),
                    ("StatusCallback", status_callback),
                ],
            )),
            "phone" => Some((
                self.resource_url("Calls"),
                vec![
                    ("To", to),
                    ("From", from),
                    ("Url", voice_url(&self.public_url, &m.id)),
                    ("StatusCallback", status_callback),
                ],
            )),
            _ => None,
        }
    }
}

/// Whether `public_url` names this machine only (the default
/// `http://127.0.0.1:8080`), which Twilio cannot call back.
pub fn is_loopback(public_url: &str) -> bool {
    let rest = public_url.split_once("://").map_or(public_url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// Where Twilio fetches the TwiML of the call that sends message `id`.
pub fn voice_url(public_url: &str, id: &str) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("message", id)
        .finish();
    format!("{public_url}/voice?{query}")
}

#[async_trait]
impl Notifier for Twilio {
    fn provider(&self, _channel: &str) -> &'static str {
        "twilio"
    }

    async fn send(&self, m: &OutgoingMessage, now: Millis) -> SendOutcome {
        let Some((url, form)) = self.request(m) else {
            return SendOutcome::Failed {
                error: format!("Twilio does not send {} messages", m.channel),
            };
        };
        let sent = self
            .http
            .post(&url)
            .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
            .form(&form)
            .send()
            .await;
        let jitter = rand::random::<f64>();
        let response = match sent {
            Ok(response) => response,
            Err(err) => return transport_failure(&err, m.attempts, now, jitter),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match response.text().await {
            Ok(body) => classify(
                status,
                retry_after.as_deref(),
                &body,
                m.attempts,
                now,
                jitter,
            ),
            // Twilio answered 2xx but the body was cut off: it took the
            // message, and sending again would send it twice.
            Err(_) if (200..300).contains(&status) => SendOutcome::Sent {
                provider_id: None,
                delivered: false,
            },
            Err(err) => transport_failure(&err, m.attempts, now, jitter),
        }
    }
}

/// A request that got no (whole) answer: a timeout, a refused or dropped
/// connection. Worth trying again.
fn transport_failure(err: &reqwest::Error, attempts: i64, now: Millis, jitter: f64) -> SendOutcome {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    SendOutcome::Retry {
        error: format!("Twilio {what}: {}", error_chain(err)),
        at: retry_at(now, attempts, jitter),
    }
}

/// An error with its causes, `: `-separated (reqwest's own message alone
/// rarely says what went wrong).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The parts of Twilio's JSON answers used here.
#[derive(Debug, Default, Deserialize)]
struct Answer {
    sid: Option<String>,
    code: Option<i64>,
    message: Option<String>,
}

/// What an answer from Twilio means for the message: 2xx it was taken;
/// 429 and 5xx try again later (after `Retry-After` seconds when given);
/// any other status is a permanent refusal (a bad number, a number that
/// cannot receive texts, bad credentials), recorded with Twilio's message
/// and error code.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &str,
    attempts: i64,
    now: Millis,
    jitter: f64,
) -> SendOutcome {
    let answer: Answer = serde_json::from_str(body).unwrap_or_default();
    if (200..300).contains(&status) {
        return SendOutcome::Sent {
            provider_id: answer.sid.filter(|s| !s.is_empty()),
            delivered: false,
        };
    }
    let mut error = format!("Twilio answered {status}");
    if let Some(message) = answer.message.as_deref().filter(|m| !m.is_empty()) {
        error.push_str(": ");
        error.push_str(message);
    }
    if let Some(code) = answer.code {
        error.push_str(&format!(" (error {code})"));
    }
    if status == 429 || status >= 500 {
        let backoff = retry_at(now, attempts, jitter);
        let at = match retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(secs) if status == 429 => {
                let wait = Millis::try_from(secs)
                    .unwrap_or(Millis::MAX)
                    .saturating_mul(1000)
                    .min(MAX_RETRY_AFTER_MS);
                now.saturating_add(wait)
            }
            _ => backoff,
        };
        SendOutcome::Retry { error, at }
    } else {
        SendOutcome::Failed { error }
    }
}

/// The text of an SMS: the alert, or the alerts of a bundle, or a status
/// update (`ACKNOWLEDGED [service] message`), one segment at most.
pub fn sms_text(m: &OutgoingMessage) -> String {
    if m.is_status_update() {
        let what = match m.reason.as_str() {
            "acknowledged" => "ACKNOWLEDGED",
            "resolved" => "RESOLVED",
            "escalated_away" => "ESCALATED",
            _ => "UPDATE",
        };
        return cut_to_one_segment(&format!(
            "{what} [{}] {}",
            one_line(&m.service_name),
            one_line(&m.message)
        ));
    }
    let alerts: Vec<AlertText<'_>> = std::iter::once(m)
        .chain(&m.bundle)
        .map(|a| AlertText {
            service: &a.service_name,
            message: &a.message,
        })
        .collect();
    render(&alerts)
}

/// `s` with every run of whitespace or control characters one space.
pub fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_000_000;

    fn message(channel: &str, reason: &str, service: &str, text: &str) -> OutgoingMessage {
        OutgoingMessage {
            id: "Msg00001".into(),
            account_id: "Acct0001".into(),
            incident_id: "Inc00001".into(),
            user_id: "User0001".into(),
            contact_id: Some("Cont0001".into()),
            reason: reason.into(),
            channel: channel.into(),
            address: "+15550001111".into(),
            attempts: 1,
            page_at: NOW,
            service_name: service.into(),
            message: text.into(),
            description: None,
            details: None,
            incident_state: "triggered".into(),
            bundle: Vec::new(),
        }
    }

    fn twilio() -> Twilio {
        Twilio::new(
            &TwilioConfig {
                account_sid: "AC123".into(),
                auth_token: "secret".into(),
                from_number: "+15559990000".into(),
                api_url: "http://127.0.0.1:9".into(),
            },
            "https://klaxon.example.com/",
        )
        .expect("client")
    }

    #[test]
    fn success_records_the_sid_as_sent() {
        assert_eq!(
            classify(
                201,
                None,
                r#"{"sid":"SM123","status":"queued"}"#,
                1,
                NOW,
                0.0
            ),
            SendOutcome::Sent {
                provider_id: Some("SM123".into()),
                delivered: false
            }
        );
        // Taken without a readable sid: still taken, never sent again.
        assert_eq!(
            classify(200, None, "not json", 1, NOW, 0.0),
            SendOutcome::Sent {
                provider_id: None,
                delivered: false
            }
        );
    }

    #[test]
    fn rate_limits_and_server_errors_are_retried() {
        let body = r#"{"code":20429,"message":"Too Many Requests","status":429}"#;
        assert_eq!(
            classify(429, Some("30"), body, 1, NOW, 0.0),
            SendOutcome::Retry {
                error: "Twilio answered 429: Too Many Requests (error 20429)".into(),
                at: NOW + 30_000
            }
        );
        // Without Retry-After (or an HTTP date, not read): the backoff.
        for retry_after in [None, Some("Wed, 21 Oct 2015 07:28:00 GMT")] {
            assert_eq!(
                classify(429, retry_after, body, 3, NOW, 0.0),
                SendOutcome::Retry {
                    error: "Twilio answered 429: Too Many Requests (error 20429)".into(),
                    at: retry_at(NOW, 3, 0.0)
                }
            );
        }
        // A huge Retry-After waits the cap, not days.
        assert!(matches!(
            classify(429, Some("999999999999"), body, 1, NOW, 0.0),
            SendOutcome::Retry { at, .. } if at == NOW + MAX_RETRY_AFTER_MS
        ));
        for status in [500, 502, 503] {
            assert_eq!(
                classify(status, Some("30"), "<html>oops</html>", 2, NOW, 0.5),
                SendOutcome::Retry {
                    error: format!("Twilio answered {status}"),
                    at: retry_at(NOW, 2, 0.5)
                }
            );
        }
    }

    #[test]
    fn other_client_errors_fail_with_twilios_message() {
        let body = r#"{"code":21211,"message":"The 'To' number +1555 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
        assert_eq!(
            classify(400, None, body, 1, NOW, 0.0),
            SendOutcome::Failed {
                error: "Twilio answered 400: The 'To' number +1555 is not a valid phone number. (error 21211)".into()
            }
        );
        assert_eq!(
            classify(401, None, "", 1, NOW, 0.0),
            SendOutcome::Failed {
                error: "Twilio answered 401".into()
            }
        );
    }

    #[test]
    fn texts_are_one_segment() {
        let one = message("sms", "assigned", "Disks", "disk\n full");
        assert_eq!(sms_text(&one), "ALERT [Disks] disk full");
        let mut bundle = one.clone();
        bundle.bundle = vec![
            message("sms", "escalated", "CPU", "hot"),
            message("sms", "assigned", "Net", "down"),
        ];
        assert_eq!(
            sms_text(&bundle),
            "3 ALERTS: [Disks] disk full; [CPU] hot; [Net] down"
        );
        let ack = message("sms", "acknowledged", "Disks", "disk full");
        assert_eq!(sms_text(&ack), "ACKNOWLEDGED [Disks] disk full");
        let away = message("sms", "escalated_away", "Disks", &"x".repeat(400));
        let text = sms_text(&away);
        assert!(text.starts_with("ESCALATED [Disks] xxx"), "{text}");
        assert!(klaxon_core::notify::sms::fits_one_segment(&text));
        assert!(text.ends_with("..."));
    }

    #[test]
    fn requests_name_the_account_the_callback_and_the_twiml() {
        let t = twilio();
        let (url, form) = t
            .request(&message("sms", "assigned", "Disks", "full"))
            .expect("sms");
        assert_eq!(
            url,
            "http://127.0.0.1:9/2010-04-01/Accounts/AC123/Messages.json"
        );
        assert_eq!(
            form,
            [
                ("To", "+15550001111".to_owned()),
                ("From", "+15559990000".to_owned()),
                ("Body", "ALERT [Disks] full".to_owned()),
                (
                    "StatusCallback",
                    "https://klaxon.example.com/twilio/status".to_owned()
                ),
            ]
        );
        let (url, form) = t
            .request(&message("phone", "assigned", "Disks", "full"))
            .expect("call");
        assert_eq!(
            url,
            "http://127.0.0.1:9/2010-04-01/Accounts/AC123/Calls.json"
        );
        assert_eq!(
            form[2],
            (
                "Url",
                "https://klaxon.example.com/voice?message=Msg00001".to_owned()
            )
        );
        assert!(t
            .request(&message("email", "assigned", "Disks", "full"))
            .is_none());
    }

    #[test]
    fn loopback_public_urls_are_told_apart() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost",
            "https://LOCALHOST:8443/klaxon",
            "http://[::1]:8080",
            "http://0.0.0.0:8080",
            "http://user@127.0.0.2/x",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "https://klaxon.example.com",
            "http://10.0.0.5:8080",
            "https://[2001:db8::1]/",
            "http://localhost.example.com",
            "http://klaxon.test",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_api_is_retried() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let outcome = twilio()
            .send(&message("sms", "assigned", "Disks", "full"), NOW)
            .await;
        match outcome {
            SendOutcome::Retry { error, at } => {
                assert!(error.starts_with("Twilio "), "{error}");
                assert!(at >= retry_at(NOW, 1, 0.0) && at <= retry_at(NOW, 1, 1.0));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }
}
