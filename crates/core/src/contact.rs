//! Contacts: where a user can be paged, parsed at the boundary.
//!
//! A contact's address only makes sense for its type: an E.164 number for
//! SMS and voice, an email address for email, an `https` URL for webhooks,
//! Slack and ntfy. [`ContactAddress::parse`] checks the pair and
//! normalises the address, so a store or notifier holding one never sees
//! an address it cannot use.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::validate::Email;

/// How a contact is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactType {
    /// Email over SMTP.
    Email,
    /// Text message (Twilio).
    Sms,
    /// Voice call (Twilio).
    Phone,
    /// Signed JSON POST to a URL.
    Webhook,
    /// Slack incoming webhook.
    Slack,
    /// ntfy topic URL (push).
    Ntfy,
}

impl ContactType {
    /// Every type, in the order they are listed to clients.
    pub const ALL: [ContactType; 6] = [
        ContactType::Email,
        ContactType::Sms,
        ContactType::Phone,
        ContactType::Webhook,
        ContactType::Slack,
        ContactType::Ntfy,
    ];

    /// The type's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactType::Email => "email",
            ContactType::Sms => "sms",
            ContactType::Phone => "phone",
            ContactType::Webhook => "webhook",
            ContactType::Slack => "slack",
            ContactType::Ntfy => "ntfy",
        }
    }

    /// Parses a stored or submitted type name (exact, lower case).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The message for a type name that is none of these.
    pub const UNKNOWN: &'static str = "must be one of email, sms, phone, webhook, slack, ntfy";
}

impl fmt::Display for ContactType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an address does not fit its contact type. `Display` is the
/// client-facing message for the `address` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not `+` followed by 8–15 digits, the first not 0.
    #[error("must be an E.164 phone number like +15551234567")]
    Phone,
    /// Not a plausible email address.
    #[error("is not a valid email address")]
    Email,
    /// Not an absolute URL with a host, or longer than [`URL_MAX`].
    #[error("must be a URL like https://example.com/hook (at most 2048 bytes)")]
    Url,
    /// A URL whose scheme is neither https nor (for loopback hosts) http.
    #[error("must use https (plain http only for localhost, 127.0.0.0/8 or ::1)")]
    Insecure,
}

/// Longest URL accepted.
pub const URL_MAX: usize = 2048;

/// An E.164 phone number: `+` then 8 to 15 digits, the first not 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct E164(String);

impl E164 {
    /// Accepts exactly the E.164 form (surrounding whitespace trimmed);
    /// no spaces, dashes or brackets inside, so what is stored is what a
    /// provider dials.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        let digits = s.strip_prefix('+').ok_or(AddressError::Phone)?;
        let ok = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        ok.then(|| E164(s.to_owned())).ok_or(AddressError::Phone)
    }

    /// The number, `+` included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A URL notifications may be sent to: `https`, or plain `http` to a
/// loopback host (so tools on the same machine work without TLS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HookUrl(String);

impl HookUrl {
    /// Parses and normalises (lower-case scheme and host, `/` path when
    /// empty) an absolute URL. Whitespace and control characters inside
    /// are refused rather than silently dropped.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        if s.is_empty()
            || s.len() > URL_MAX
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(AddressError::Url);
        }
        let url = url::Url::parse(s).map_err(|_| AddressError::Url)?;
        let secure = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(AddressError::Insecure),
        };
        let host = url.host().ok_or(AddressError::Url)?;
        if !secure && !is_loopback(&host) {
            return Err(AddressError::Insecure);
        }
        let out = String::from(url);
        if out.len() > URL_MAX {
            return Err(AddressError::Url);
        }
        Ok(HookUrl(out))
    }

    /// The normalised URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// A contact type with an address that fits it, normalised. The only way
/// to make one is [`ContactAddress::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContactAddress {
    kind: ContactType,
    address: String,
}

impl ContactAddress {
    /// Checks `address` against `kind`: E.164 for `sms` and `phone`, an
    /// email address (lower-cased) for `email`, an https URL for
    /// `webhook`, `slack` and `ntfy`.
    pub fn parse(kind: ContactType, address: &str) -> Result<Self, AddressError> {
        let address = match kind {
            ContactType::Sms | ContactType::Phone => E164::parse(address)?.0,
            ContactType::Email => Email::parse(address)
                .ok_or(AddressError::Email)?
                .into_string(),
            ContactType::Webhook | ContactType::Slack | ContactType::Ntfy => {
                HookUrl::parse(address)?.0
            }
        };
        Ok(ContactAddress { kind, address })
    }

    /// The contact type.
    pub fn kind(&self) -> ContactType {
        self.kind
    }

    /// The normalised address.
    pub fn address(&self) -> &str {
        &self.address
    }
}

/// Longest `start_delay` of a notification rule, in minutes: one week.
pub const MAX_START_DELAY: i64 = 7 * 24 * 60;

/// Minutes after an assignment before a notification rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StartDelay(i64);

impl StartDelay {
    /// Accepts 0 to [`MAX_START_DELAY`] minutes.
    pub fn new(minutes: i64) -> Option<Self> {
        (0..=MAX_START_DELAY)
            .contains(&minutes)
            .then_some(StartDelay(minutes))
    }

    /// The delay in minutes.
    pub fn minutes(self) -> i64 {
        self.0
    }

    /// The message for a delay out of range.
    pub const OUT_OF_RANGE: &'static str = "must be between 0 and 10080";
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(kind: &str, address: &str) -> Result<String, AddressError> {
        let kind = ContactType::parse(kind).expect("known type");
        ContactAddress::parse(kind, address).map(|a| a.address().to_owned())
    }

    #[test]
    fn types() {
        for t in ContactType::ALL {
            assert_eq!(ContactType::parse(t.as_str()), Some(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        for bad in ["", "SMS", "pager", "e-mail", " sms"] {
            assert_eq!(ContactType::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn phone_numbers() {
        for ok in [
            "+15551234567",
            "+4930123456",
            "+12345678",
            "+123456789012345",
        ] {
            assert_eq!(parse("sms", ok).as_deref(), Ok(ok));
            assert_eq!(parse("phone", ok).as_deref(), Ok(ok));
        }
        assert_eq!(
            parse("sms", " +15551234567 ").as_deref(),
            Ok("+15551234567")
        );
        for bad in [
            "",
            "+",
            "15551234567",
            "+1234567",
            "+1234567890123456",
            "+05551234567",
            "+1 555 123 4567",
            "+1-555-1234567",
            "++15551234567",
            "+1555123456a",
            "+１５５５１２３４５６７",
        ] {
            assert_eq!(parse("sms", bad), Err(AddressError::Phone), "{bad:?}");
        }
        assert_eq!(
            AddressError::Phone.to_string(),
            "must be an E.164 phone number like +15551234567"
        );
    }

    #[test]
    fn emails() {
        assert_eq!(
            parse("email", " Ann@Example.COM ").as_deref(),
            Ok("ann@example.com")
        );
        for bad in ["", "ann", "ann@example", "+15551234567", "https://x.test/"] {
            assert_eq!(parse("email", bad), Err(AddressError::Email), "{bad:?}");
        }
    }

    #[test]
    fn urls() {
        for (raw, want) in [
            (
                "https://hooks.slack.com/services/T0/B0/x",
                "https://hooks.slack.com/services/T0/B0/x",
            ),
            ("HTTPS://Ntfy.SH/alerts", "https://ntfy.sh/alerts"),
            ("https://example.com", "https://example.com/"),
            (
                "https://example.com:8443/h?x=1",
                "https://example.com:8443/h?x=1",
            ),
            ("http://localhost:8080/hook", "http://localhost:8080/hook"),
            ("http://LOCALHOST/", "http://localhost/"),
            ("http://127.0.0.1:9000/", "http://127.0.0.1:9000/"),
            ("http://127.1.2.3/", "http://127.1.2.3/"),
            ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ] {
            for kind in ["webhook", "slack", "ntfy"] {
                assert_eq!(parse(kind, raw).as_deref(), Ok(want), "{kind} {raw}");
            }
        }
        for insecure in [
            "http://example.com/hook",
            "http://10.0.0.1/",
            "http://[::2]/",
            "http://localhost.example.com/",
            "http://128.0.0.1/",
            "ftp://example.com/",
            "javascript:alert(1)",
            "mailto:ann@example.com",
        ] {
            assert_eq!(
                parse("webhook", insecure),
                Err(AddressError::Insecure),
                "{insecure}"
            );
        }
        for bad in [
            "",
            "example.com/hook",
            "/hook",
            "https://",
            "https://exa mple.com/",
            "https://example.com/a\tb",
            "https://example.com/a\nb",
            "+15551234567",
        ] {
            assert_eq!(parse("webhook", bad), Err(AddressError::Url), "{bad:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(URL_MAX));
        assert_eq!(parse("ntfy", &long), Err(AddressError::Url));
    }

    #[test]
    fn start_delays() {
        assert_eq!(StartDelay::new(0).map(StartDelay::minutes), Some(0));
        assert_eq!(
            StartDelay::new(MAX_START_DELAY).map(StartDelay::minutes),
            Some(MAX_START_DELAY)
        );
        assert_eq!(StartDelay::new(-1), None);
        assert_eq!(StartDelay::new(MAX_START_DELAY + 1), None);
    }

    fn any_type() -> impl Strategy<Value = ContactType> {
        prop::sample::select(ContactType::ALL.to_vec())
    }

    /// Strings that sometimes look like addresses, so both branches run.
    fn address_like() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "\\+[0-9]{0,17}",
            "[a-zA-Z0-9.+_-]{0,10}@[a-zA-Z0-9.-]{0,12}",
            "(https?|HTTP|ftp)://[a-zA-Z0-9.:\\[\\]@%-]{0,20}(/[ -~]{0,20})?",
            "http://(localhost|127\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}|\\[::1\\])(:[0-9]{1,5})?/[a-z/?=&#%.]{0,12}",
        ]
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(kind in any_type(), raw in address_like()) {
            if let Ok(parsed) = ContactAddress::parse(kind, &raw) {
                prop_assert_eq!(parsed.kind(), kind);
                let again = ContactAddress::parse(kind, parsed.address());
                prop_assert_eq!(again.as_ref(), Ok(&parsed));
                prop_assert!(!parsed.address().is_empty());
                prop_assert!(!parsed.address().chars().any(char::is_control));
            }
        }

        #[test]
        fn valid_phone_numbers_parse(first in 1u8..=9, rest in "[0-9]{7,14}") {
            let number = format!("+{first}{rest}");
            prop_assert_eq!(E164::parse(&number).map(|n| n.as_str().to_owned()), Ok(number));
        }

        #[test]
        fn plain_http_needs_a_loopback_host(a in 0u8..=255, b in 0u8..=255, c in 0u8..=255, d in 0u8..=255) {
            let url = format!("http://{a}.{b}.{c}.{d}/hook");
            let got = HookUrl::parse(&url);
            if a == 127 {
                prop_assert!(got.is_ok());
            } else {
                prop_assert_eq!(got, Err(AddressError::Insecure));
            }
        }
    }
}
