//! Contacts reached over HTTPS: signed webhooks, Slack incoming webhooks
//! and ntfy topics. They need no configuration: the contact's address is
//! the URL.
//!
//! All three share one HTTP client: rustls with the webpki roots, a
//! 10-second limit per request, and no redirects followed, so a contact
//! URL cannot bounce a request (and its signature or token) to another
//! host. A contact URL's `user:password@` is sent as Basic authorisation
//! (webhook, Slack) or as the ntfy credentials (see [`ntfy`]), never as
//! part of the request line.
//!
//! What a receiver's answer means is the same for all three
//! ([`outcome`]): a 2xx delivered the message; a 429, a 408, a 5xx, a
//! timeout or a connection failure is retried with the sender's backoff,
//! never sooner than the receiver's `Retry-After`; anything else (another
//! 4xx, a redirect) is a permanent failure, recorded with the status and
//! the start of the body. Errors never carry the URL: Slack and ntfy URLs
//! are credentials.

pub mod ntfy;
pub mod slack;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use klaxon_core::contact::HookUrl;
use klaxon_core::time::Millis;
use klaxon_store::{OutgoingMessage, SendOutcome};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode, Url};

pub use ntfy::Ntfy;
pub use slack::Slack;
pub use webhook::{SigningKeys, Webhook};

use super::{retry_at, LinkAction, Links};

/// Longest a request may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Characters of a receiver's error body kept in the recorded error.
pub const EXCERPT_CHARS: usize = 200;
/// Bytes of a receiver's answer read at most.
const READ_LIMIT: usize = 16 * 1024;

/// `Klaxon/<version>`: the `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("Klaxon/", env!("CARGO_PKG_VERSION"));

/// What the three notifiers share: the HTTP client, the answer links and
/// the server's public URL.
pub struct Web {
    client: reqwest::Client,
    links: Arc<dyn Links>,
    public_url: String,
}

impl Web {
    /// The shared client, making links with `links` and incident URLs
    /// under `public_url`.
    pub fn new(public_url: &str, links: Arc<dyn Links>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| anyhow::anyhow!("building the HTTP client: {err}"))?;
        Ok(Self {
            client,
            links,
            public_url: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The URLs a message about `m` carries.
    pub fn urls(&self, m: &OutgoingMessage) -> Urls {
        let answers = (!m.is_status_update()).then(|| Answers {
            acknowledge: self.links.url(m, LinkAction::Acknowledge),
            resolve: self.links.url(m, LinkAction::Resolve),
        });
        Urls {
            incident: format!("{}/incidents/{}", self.public_url, m.incident_id),
            answers,
        }
    }
}

/// The URLs in one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// The incident in the API.
    pub incident: String,
    /// The one-click answers (pages only).
    pub answers: Option<Answers>,
}

/// Signed one-click answer links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    /// Acknowledges the incident.
    pub acknowledge: String,
    /// Resolves the incident.
    pub resolve: String,
}

/// The contact URL of `m`, checked again (https, or http to loopback)
/// before anything is sent to it.
fn target(m: &OutgoingMessage) -> Result<Url, SendOutcome> {
    HookUrl::parse(&m.address)
        .ok()
        .and_then(|url| Url::parse(url.as_str()).ok())
        .ok_or_else(|| SendOutcome::Failed {
            error: format!("the {} contact's URL is not usable", m.channel),
        })
}

/// The one-line summary of a message: `ALERT [service] message` for a
/// page, `ACKNOWLEDGED [service] message` (and so on) for a status
/// update.
pub fn headline(m: &OutgoingMessage) -> String {
    if m.is_status_update() {
        format!(
            "{} [{}] {}",
            update_word(&m.reason),
            m.service_name,
            m.message
        )
    } else {
        super::alert_text(m)
    }
}

/// What a status update says happened, in capitals.
fn update_word(reason: &str) -> String {
    match reason {
        "escalated_away" => "ESCALATED".to_owned(),
        other => other.replace('_', " ").to_uppercase(),
    }
}

/// `s` cut to at most `max` characters, the cut marked with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some(_) => {
            let keep = max.saturating_sub(1);
            let end = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
            format!("{}…", &s[..end])
        }
    }
}

/// Sends `request` and turns the answer into an outcome; `provider_id`
/// reads the provider's id from a 2xx body.
async fn deliver(
    request: reqwest::RequestBuilder,
    m: &OutgoingMessage,
    now: Millis,
    provider_id: fn(&[u8]) -> Option<String>,
) -> SendOutcome {
    match request.send().await {
        Ok(response) => outcome(response, m, now, provider_id).await,
        Err(err) => SendOutcome::Retry {
            error: describe(err),
            at: backoff(m, now, None),
        },
    }
}

/// What an answer means (see the module documentation).
async fn outcome(
    response: Response,
    m: &OutgoingMessage,
    now: Millis,
    provider_id: fn(&[u8]) -> Option<String>,
) -> SendOutcome {
    let status = response.status();
    let wait = retry_after(response.headers(), wall_clock_ms());
    let body = read_capped(response).await;
    if status.is_success() {
        return SendOutcome::Sent {
            provider_id: provider_id(&body),
            delivered: true,
        };
    }
    let error = http_error(status, &body);
    if is_transient(status) {
        SendOutcome::Retry {
            error,
            at: backoff(m, now, wait),
        }
    } else {
        SendOutcome::Failed { error }
    }
}

/// Whether a failed answer is worth trying again.
fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// `HTTP 404 Not Found: <start of the body>`, or a note that a redirect
/// was not followed.
fn http_error(status: StatusCode, body: &[u8]) -> String {
    if status.is_redirection() {
        return format!("HTTP {status}: redirects are not followed; use the final URL");
    }
    let text = excerpt(body);
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    }
}

/// The start of a body as one line of text: invalid UTF-8 replaced,
/// control characters and runs of blanks made single spaces, at most
/// [`EXCERPT_CHARS`] characters.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(READ_LIMIT)]);
    let line = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    truncate(&line, EXCERPT_CHARS)
}

/// Reads up to [`READ_LIMIT`] bytes of the body (a receiver cannot make
/// the sender read without end); a body that breaks off is what came.
async fn read_capped(mut response: Response) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = READ_LIMIT - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// A transport error with its causes, without the URL.
fn describe(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let err = err.without_url();
    let mut text = kind.to_owned();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    truncate(&text, 2 * EXCERPT_CHARS)
}

/// When to try again: the sender's backoff, but never before the
/// receiver's `Retry-After` (`wait`, in milliseconds).
fn backoff(m: &OutgoingMessage, now: Millis, wait: Option<Millis>) -> Millis {
    let at = retry_at(now, m.attempts, rand::random::<f64>());
    match wait {
        Some(wait) => at.max(now.saturating_add(wait)),
        None => at,
    }
}

/// How long `Retry-After` asks to wait, in milliseconds: delay seconds, or
/// an HTTP date compared with `wall_now_ms`. Unreadable values are
/// ignored; a date in the past is no wait.
pub fn retry_after(headers: &HeaderMap, wall_now_ms: Millis) -> Option<Millis> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Millis::try_from(seconds).map_or(Millis::MAX, |s| s.saturating_mul(1000)));
    }
    let date = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    Some((date.as_millisecond() - wall_now_ms).max(0))
}

/// The real time (not the server clock): what receivers compare
/// signature times and `Retry-After` dates with.
fn wall_clock_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// A page as the sender would claim it.
    pub(super) fn page() -> OutgoingMessage {
        OutgoingMessage {
            id: "msg00001".into(),
            account_id: "acc00001".into(),
            incident_id: "inc00001".into(),
            user_id: "usr00001".into(),
            contact_id: Some("con00001".into()),
            reason: "assigned".into(),
            channel: "webhook".into(),
            address: "https://hooks.example.com/in".into(),
            attempts: 1,
            page_at: 1_700_000_000_000,
            service_name: "Disks".into(),
            message: "disk full".into(),
            description: Some("/var is at 100%".into()),
            details: None,
            incident_state: "triggered".into(),
            bundle: Vec::new(),
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(value).expect("a header value"),
        );
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after(&headers("120"), now), Some(120_000));
        assert_eq!(retry_after(&headers(" 0 "), now), Some(0));
        assert_eq!(
            retry_after(&headers("Sun, 06 Nov 1994 08:50:07 GMT"), now),
            Some(30_000)
        );
        assert_eq!(
            retry_after(&headers("Sun, 06 Nov 1994 08:00:00 GMT"), now),
            Some(0)
        );
        for junk in ["soon", "-5", "1.5", ""] {
            assert_eq!(retry_after(&headers(junk), now), None, "{junk}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        assert_eq!(
            retry_after(&headers("99999999999999999999"), now),
            None,
            "beyond u64 is unreadable"
        );
        assert_eq!(
            retry_after(&headers("18446744073709551615"), now),
            Some(Millis::MAX)
        );
    }

    #[test]
    fn retries_wait_at_least_as_long_as_asked() {
        let m = page();
        let asked = 3_600_000;
        let at = backoff(&m, 1_000, Some(asked));
        assert_eq!(at, 1_000 + asked);
        let at = backoff(&m, 1_000, Some(1));
        assert!((6_000..=7_000).contains(&at), "the backoff wins: {at}");
        assert_eq!(backoff(&m, Millis::MAX - 5, Some(asked)), Millis::MAX);
    }

    #[test]
    fn transient_and_permanent_statuses() {
        for s in [429, 408, 500, 502, 503, 504] {
            assert!(
                is_transient(StatusCode::from_u16(s).expect("a status")),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 410, 413, 301, 302] {
            assert!(
                !is_transient(StatusCode::from_u16(s).expect("a status")),
                "{s}"
            );
        }
    }

    #[test]
    fn errors_keep_a_short_clean_excerpt() {
        assert_eq!(
            http_error(StatusCode::NOT_FOUND, b"no_service\r\n"),
            "HTTP 404 Not Found: no_service"
        );
        assert_eq!(http_error(StatusCode::GONE, b""), "HTTP 410 Gone");
        assert!(http_error(StatusCode::FOUND, b"elsewhere").contains("not followed"));
        let long = "x".repeat(10_000);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), EXCERPT_CHARS);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b"a\x00b\x1b[31m \xff\n\tc"), "a b [31m \u{fffd} c");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééééé", 4), "ééé…");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn headlines_say_what_happened() {
        let mut m = page();
        assert_eq!(headline(&m), "ALERT [Disks] disk full");
        m.reason = "resolved".into();
        assert_eq!(headline(&m), "RESOLVED [Disks] disk full");
        m.reason = "escalated_away".into();
        assert_eq!(headline(&m), "ESCALATED [Disks] disk full");
    }

    struct FixedLinks;

    impl Links for FixedLinks {
        fn url(&self, _: &OutgoingMessage, action: LinkAction) -> String {
            format!("https://k.test/links/{}", action.as_str())
        }
    }

    #[tokio::test]
    async fn an_unreachable_receiver_is_retried_and_the_url_kept_out_of_the_error() {
        use crate::notify::Notifier;
        // A port nothing listens on any more.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("an address").port()
        };
        let web = Arc::new(Web::new("https://k.test", Arc::new(FixedLinks)).expect("a client"));
        let notifiers: [(&str, Box<dyn Notifier>); 3] = [
            (
                "webhook",
                Box::new(Webhook::new(web.clone(), SigningKeys::new(b"k"))),
            ),
            ("slack", Box::new(Slack::new(web.clone()))),
            ("ntfy", Box::new(Ntfy::new(web))),
        ];
        for (channel, notifier) in notifiers {
            let mut m = page();
            m.channel = channel.into();
            m.address = format!("http://:tk_topsecret@127.0.0.1:{port}/hook?key=topsecret");
            match notifier.send(&m, 1_000).await {
                SendOutcome::Retry { error, at } => {
                    assert!(error.starts_with("cannot connect"), "{channel}: {error}");
                    assert!(!error.contains("topsecret"), "{channel}: {error}");
                    assert!(at >= 6_000, "{channel}: {at}");
                }
                other => panic!("{channel}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_usable_contact_urls_are_targets() {
        let mut m = page();
        assert!(target(&m).is_ok());
        m.address = "http://hooks.example.com/in".into();
        assert!(matches!(target(&m), Err(SendOutcome::Failed { .. })));
        m.address = "http://127.0.0.1:9/in".into();
        assert!(target(&m).is_ok());
        m.address = "ftp://example.com".into();
        assert!(target(&m).is_err());
    }
}
