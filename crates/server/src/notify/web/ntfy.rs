//! ntfy contacts: a push published to the contact's topic URL
//! (`https://ntfy.sh/mytopic`, or a topic on a self-hosted server).
//!
//! The message is published with ntfy's headers: the body is the
//! incident's description (or its message), `Title` the one-line alert,
//! `Priority` urgent for a page and default for a status update, `Tags`
//! an emoji, and for a page `Actions` with two `http` buttons that POST
//! the signed Acknowledge and Resolve links and clear the notification.
//! A title that is not plain ASCII is sent RFC 2047-encoded
//! (`=?UTF-8?B?…?=`), which ntfy decodes; nothing from an incident can put
//! a line break into a header. The body is cut below ntfy's 4 KiB message
//! limit, past which ntfy would turn it into an attachment.
//!
//! A protected topic takes credentials in the URL, which are taken out of
//! it and sent as an `Authorization` header:
//! `https://:tk_AbC123@ntfy.example/alerts` (or `https://tk_AbC123@…`) sends
//! the access token as `Bearer`, `https://user:password@ntfy.example/alerts`
//! sends Basic credentials.

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use klaxon_core::time::Millis;
use klaxon_store::{OutgoingMessage, SendOutcome};
use percent_encoding::percent_decode_str;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;

use super::{deliver, headline, target, truncate, Answers, Web};
use crate::notify::Notifier;

/// Bytes of body kept: under ntfy's default 4096-byte message limit.
const BODY_MAX_BYTES: usize = 3_800;
/// Characters of title kept.
const TITLE_MAX: usize = 250;
/// Raw bytes per RFC 2047 encoded word (60 base64 characters, so each
/// word stays within the RFC's 75).
const WORD_BYTES: usize = 45;

/// Credentials for a protected topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// An ntfy access token (`tk_…`).
    Token(String),
    /// A user name and password.
    Basic(String, String),
}

impl Credentials {
    /// The `Authorization` header value.
    pub fn header(&self) -> String {
        match self {
            Credentials::Token(token) => format!("Bearer {token}"),
            Credentials::Basic(user, password) => {
                format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
            }
        }
    }
}

/// Takes the credentials out of `url`'s user info (see the module
/// documentation); `None` if it has none.
pub fn take_credentials(url: &mut Url) -> Option<Credentials> {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = decode(url.username());
    let password = url.password().map(decode).unwrap_or_default();
    if user.is_empty() && password.is_empty() {
        return None;
    }
    // Neither fails for an http(s) URL with a host, which `target` ensures.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some(match (user.is_empty(), password.is_empty()) {
        (true, _) => Credentials::Token(password),
        (false, true) => Credentials::Token(user),
        (false, false) => Credentials::Basic(user, password),
    })
}

/// A header value from any text: control characters (line breaks
/// included) become spaces, and text that is not printable ASCII — or
/// that looks like an encoded word already — is RFC 2047-encoded.
pub fn header_value(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    let plain = clean.bytes().all(|b| (0x20..0x7f).contains(&b)) && !clean.contains("=?");
    let value = if plain {
        clean.to_owned()
    } else {
        encode_words(clean)
    };
    // Printable ASCII only by now, which every header value may hold.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `=?UTF-8?B?…?=` words of at most [`WORD_BYTES`] bytes each, cut on
/// character boundaries, separated by spaces (which decoders drop between
/// encoded words).
fn encode_words(text: &str) -> String {
    let mut words = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, c) in text.char_indices() {
        if i + c.len_utf8() - start > WORD_BYTES {
            words.push(&text[start..end]);
            start = i;
        }
        end = i + c.len_utf8();
    }
    if end > start {
        words.push(&text[start..end]);
    }
    words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", STANDARD.encode(w)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` cut to at most `max` bytes on a character boundary, the cut marked
/// with `…`.
fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One value in ntfy's action header syntax: quoted if it holds a
/// separator.
fn action_value(s: &str) -> String {
    let s = s.replace('"', "%22");
    if s.contains([',', ';', '\'']) {
        format!("\"{s}\"")
    } else {
        s
    }
}

/// The `Actions` header of a page: two http buttons that POST the answer
/// links and clear the notification.
pub fn actions(answers: &Answers) -> String {
    format!(
        "http, Acknowledge, {}, method=POST, clear=true; http, Resolve, {}, method=POST, clear=true",
        action_value(&answers.acknowledge),
        action_value(&answers.resolve)
    )
}

/// What is published for `m`: headers and body.
pub fn message(
    m: &OutgoingMessage,
    answers: Option<&Answers>,
) -> (Vec<(&'static str, HeaderValue)>, String) {
    let page = !m.is_status_update();
    let mut headers = vec![
        ("Title", header_value(&truncate(&headline(m), TITLE_MAX))),
        (
            "Priority",
            HeaderValue::from_static(if page { "urgent" } else { "default" }),
        ),
        (
            "Tags",
            HeaderValue::from_static(if page {
                "rotating_light"
            } else {
                "white_check_mark"
            }),
        ),
    ];
    if let Some(answers) = answers.filter(|_| page) {
        headers.push(("Actions", header_value(&actions(answers))));
    }
    let body = if page {
        m.description
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or(&m.message)
            .to_owned()
    } else {
        format!("Incident {} is now {}.", m.incident_id, m.incident_state)
    };
    (headers, truncate_bytes(&body, BODY_MAX_BYTES))
}

/// ntfy's id for a published message, from its answer.
fn message_id(body: &[u8]) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = answer.get("id")?.as_str()?;
    let plausible = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    plausible.then(|| id.to_owned())
}

/// Sends ntfy contacts' messages.
pub struct Ntfy {
    web: Arc<Web>,
}

impl Ntfy {
    /// An ntfy notifier.
    pub fn new(web: Arc<Web>) -> Self {
        Self { web }
    }
}

#[async_trait]
impl Notifier for Ntfy {
    fn provider(&self, _channel: &str) -> &'static str {
        "ntfy"
    }

    async fn send(&self, m: &OutgoingMessage, now: Millis) -> SendOutcome {
        let mut url = match target(m) {
            Ok(url) => url,
            Err(failed) => return failed,
        };
        let credentials = take_credentials(&mut url);
        let urls = self.web.urls(m);
        let (headers, body) = message(m, urls.answers.as_ref());
        let mut request = self
            .web
            .client
            .post(url)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(credentials) = credentials {
            let mut value = header_value(&credentials.header());
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        deliver(request.body(body), m, now, message_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::page;
    use super::*;

    fn answers() -> Answers {
        Answers {
            acknowledge: "https://k.test/links/a.b".into(),
            resolve: "https://k.test/links/r.s".into(),
        }
    }

    fn get<'a>(headers: &'a [(&str, HeaderValue)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn a_page_is_urgent_with_answer_buttons() {
        let (headers, body) = message(&page(), Some(&answers()));
        assert_eq!(get(&headers, "Title"), Some("ALERT [Disks] disk full"));
        assert_eq!(get(&headers, "Priority"), Some("urgent"));
        assert_eq!(get(&headers, "Tags"), Some("rotating_light"));
        assert_eq!(
            get(&headers, "Actions"),
            Some(
                "http, Acknowledge, https://k.test/links/a.b, method=POST, clear=true; \
                 http, Resolve, https://k.test/links/r.s, method=POST, clear=true"
            )
        );
        assert_eq!(body, "/var is at 100%");
        let mut m = page();
        m.description = None;
        assert_eq!(message(&m, None).1, "disk full");
    }

    #[test]
    fn a_status_update_is_default_priority_without_buttons() {
        let mut m = page();
        m.reason = "acknowledged".into();
        m.incident_state = "acknowledged".into();
        let (headers, body) = message(&m, Some(&answers()));
        assert_eq!(
            get(&headers, "Title"),
            Some("ACKNOWLEDGED [Disks] disk full")
        );
        assert_eq!(get(&headers, "Priority"), Some("default"));
        assert_eq!(get(&headers, "Tags"), Some("white_check_mark"));
        assert_eq!(get(&headers, "Actions"), None);
        assert_eq!(body, "Incident inc00001 is now acknowledged.");
    }

    #[test]
    fn headers_never_break_lines_and_encode_what_is_not_ascii() {
        assert_eq!(
            header_value("a\r\nInjected: yes\x7f").to_str().ok(),
            Some("a  Injected: yes")
        );
        let v = header_value("Plattenplatz: Ärger 🚨");
        let v = v.to_str().unwrap_or_default();
        assert!(v.starts_with("=?UTF-8?B?") && v.ends_with("?="), "{v}");
        assert_eq!(decode_words(v), "Plattenplatz: Ärger 🚨");
        // Long text: several words, none over 75 characters, cut on
        // character boundaries.
        let long = "é".repeat(100) + "🚨";
        let v = header_value(&long);
        let v = v.to_str().unwrap_or_default();
        assert!(v.split(' ').count() > 1);
        assert!(v.split(' ').all(|w| w.len() <= 75), "{v}");
        assert_eq!(decode_words(v), long);
        // Text that looks encoded is encoded, not passed on to be decoded.
        let v = header_value("=?UTF-8?B?SGk=?=");
        assert_eq!(
            decode_words(v.to_str().unwrap_or_default()),
            "=?UTF-8?B?SGk=?="
        );
    }

    /// A minimal RFC 2047 `B` decoder for the tests.
    fn decode_words(v: &str) -> String {
        let bytes: Vec<u8> = v
            .split(' ')
            .flat_map(|w| {
                let inner = w
                    .strip_prefix("=?UTF-8?B?")
                    .and_then(|w| w.strip_suffix("?="))
                    .expect("an encoded word");
                STANDARD.decode(inner).expect("base64")
            })
            .collect();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn bodies_stay_under_the_message_limit() {
        let mut m = page();
        m.description = Some("ü".repeat(5_000));
        let body = message(&m, None).1;
        assert!(body.len() <= BODY_MAX_BYTES);
        assert!(body.ends_with('…'));
    }

    #[test]
    fn action_values_with_separators_are_quoted() {
        assert_eq!(action_value("https://a/b"), "https://a/b");
        assert_eq!(action_value("https://a/b,c"), "\"https://a/b,c\"");
        assert_eq!(action_value("https://a/\";x"), "\"https://a/%22;x\"");
    }

    #[test]
    fn credentials_come_out_of_the_url() {
        let parse = |s: &str| Url::parse(s).expect("a URL");
        let mut url = parse("https://:tk_AbC123@ntfy.example/alerts");
        assert_eq!(
            take_credentials(&mut url),
            Some(Credentials::Token("tk_AbC123".into()))
        );
        assert_eq!(url.as_str(), "https://ntfy.example/alerts");
        let mut url = parse("https://tk_AbC123@ntfy.example/alerts");
        assert_eq!(
            take_credentials(&mut url),
            Some(Credentials::Token("tk_AbC123".into()))
        );
        let mut url = parse("https://phil:p%40ss%3Aword@ntfy.example/alerts?x=1");
        let creds = take_credentials(&mut url);
        assert_eq!(
            creds,
            Some(Credentials::Basic("phil".into(), "p@ss:word".into()))
        );
        assert_eq!(url.as_str(), "https://ntfy.example/alerts?x=1");
        assert_eq!(
            creds.map(|c| c.header()),
            Some(format!("Basic {}", STANDARD.encode("phil:p@ss:word")))
        );
        let mut url = parse("https://ntfy.sh/mytopic");
        assert_eq!(take_credentials(&mut url), None);
        assert_eq!(url.as_str(), "https://ntfy.sh/mytopic");
    }

    #[test]
    fn the_message_id_is_read_from_the_answer() {
        assert_eq!(
            message_id(br#"{"id":"sPs71M8A2T","time":1,"event":"message"}"#),
            Some("sPs71M8A2T".into())
        );
        assert_eq!(message_id(b"ok"), None);
        assert_eq!(message_id(br#"{"id":"a b"}"#), None);
    }
}
