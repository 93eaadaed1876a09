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
        Ok(ts) => {
            let dt = jiff::tz::Offset::UTC.to_datetime(ts);
            match u16::try_from(dt.year()) {
                // Every response carries a few of these: written digit by
                // digit, not through a format string.
                Ok(year) => {
                    let mut out = *b"0000-00-00T00:00:00Z";
                    let mut put = |at: usize, width: usize, mut n: u16| {
                        for i in (at..at + width).rev() {
                            out[i] = b'0' + (n % 10) as u8;
                            n /= 10;
                        }
                    };
                    put(0, 4, year);
                    put(5, 2, dt.month() as u16);
                    put(8, 2, dt.day() as u16);
                    put(11, 2, dt.hour() as u16);
                    put(14, 2, dt.minute() as u16);
                    put(17, 2, dt.second() as u16);
                    out.iter().map(|&b| b as char).collect()
                }
                Err(_) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            }
        }
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

    proptest::proptest! {
        #[test]
        fn formats_as_jiff_does(ms in -62_000_000_000_000i64..253_000_000_000_000i64) {
            let expected = Timestamp::from_millisecond(ms)
                .expect("in range")
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            proptest::prop_assert_eq!(format_ts(ms), expected);
        }
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let _ = format_ts(i64::MAX);
        let _ = format_ts(i64::MIN);
    }
}
