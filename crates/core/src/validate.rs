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

#[cfg(test)]
mod tests {
    use super::*;

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
