//! Timestamps. Klaxon keeps every instant as milliseconds since the Unix
//! epoch (`i64`), read from the server's virtual clock, and shows them in the
//! seed documents' form: UTC, whole seconds, `2013-05-14T06:17:54Z`.

use jiff::Timestamp;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Milliseconds in one minute (durations in the API are whole minutes).
pub const MINUTE_MS: Millis = 60_000;

/// Milliseconds in one (24-hour) day.
pub const DAY_MS: Millis = 24 * 60 * MINUTE_MS;

/// Formats an instant as `YYYY-MM-DDTHH:MM:SSZ` (sub-seconds dropped).
pub fn format_ts(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    match Timestamp::from_second(secs) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        // Out of jiff's range (beyond year ±9999): clamp rather than panic.
        Err(_) if secs < 0 => "-009999-01-01T00:00:00Z".to_owned(),
        Err(_) => "9999-12-31T23:59:59Z".to_owned(),
    }
}

/// Parses an RFC 3339 instant with an offset (`2026-01-05T09:00:00Z`,
/// `2026-01-05T10:00:00+01:00`) into milliseconds.
pub fn parse_ts(s: &str) -> Option<Millis> {
    let ts: Timestamp = s.trim().parse().ok()?;
    Some(ts.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_seed_documents() {
        let ms = parse_ts("2013-05-14T06:17:54.789Z").expect("valid");
        assert_eq!(format_ts(ms), "2013-05-14T06:17:54Z");
        assert_eq!(format_ts(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ts(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(
            parse_ts("2026-01-05T10:00:00+01:00"),
            parse_ts("2026-01-05T09:00:00Z")
        );
        assert_eq!(parse_ts("yesterday"), None);
        assert_eq!(parse_ts("2026-01-05T09:00:00"), None, "offset required");
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let _ = format_ts(i64::MAX);
        let _ = format_ts(i64::MIN);
    }
}
