//! Parse-don't-validate newtypes for user input.

/// A syntactically plausible email address, trimmed and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Accepts `local@domain.tld`: one `@`, no spaces or control characters,
    /// a dot in the domain, at most 254 bytes.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let (local, domain) = s.split_once('@')?;
        let ok = !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.');
        ok.then(|| Email(s.to_ascii_lowercase()))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Takes the normalised address.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Checks an IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn is_time_zone(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && jiff::tz::TimeZone::get(name).is_ok()
}

/// Which control characters a string from a client may hold.
///
/// PostgreSQL text cannot hold NUL, and no other C0 control character has
/// a place in a name or a key, so input is refused at the boundary and both
/// backends store the same strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// Names, emails, keys, ids, time zones, query parameters: none at all.
    Line,
    /// Free text (messages, descriptions, details): tab, newline and
    /// carriage return only.
    Text,
}

impl TextKind {
    /// Whether `s` holds a control character (U+0000–U+001F, U+007F) this
    /// kind does not allow.
    pub fn refuses(self, s: &str) -> bool {
        s.chars().any(|c| {
            let control = c < ' ' || c == '\u{7f}';
            control && !(self == TextKind::Text && matches!(c, '\t' | '\n' | '\r'))
        })
    }

    /// What a client is told when a string is refused.
    pub fn message(self) -> &'static str {
        match self {
            TextKind::Line => "must not contain control characters",
            TextKind::Text => {
                "must not contain control characters (other than tab, newline and carriage return)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters() {
        for ok in ["", "plain", "é🔥", "a b", "\u{80}"] {
            assert!(!TextKind::Line.refuses(ok), "{ok:?}");
            assert!(!TextKind::Text.refuses(ok), "{ok:?}");
        }
        for free in ["a\tb", "a\nb", "a\r\nb"] {
            assert!(TextKind::Line.refuses(free), "{free:?}");
            assert!(!TextKind::Text.refuses(free), "{free:?}");
        }
        for bad in ["\0", "a\u{0}b", "\u{1}", "\u{1b}[31m", "\u{1f}", "\u{7f}"] {
            assert!(TextKind::Line.refuses(bad), "{bad:?}");
            assert!(TextKind::Text.refuses(bad), "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Ops@Example.com ").map(Email::into_string),
            Some("ops@example.com".into())
        );
        for bad in ["", "a", "a@b", "@b.c", "a@@b.c", "a b@c.d", "a@.c", "a@c."] {
            assert!(Email::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn time_zones() {
        assert!(is_time_zone("Europe/Berlin"));
        assert!(is_time_zone("UTC"));
        assert!(!is_time_zone("Mars/Olympus"));
        assert!(!is_time_zone(""));
    }
}
