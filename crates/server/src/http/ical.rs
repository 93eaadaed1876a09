//! iCalendar (RFC 5545) rendering of a schedule's shifts.

use klaxon_core::schedule::Shift;
use klaxon_core::time::Millis;
use klaxon_store::Schedule;

/// `20260105T090000Z`
fn stamp(ms: Millis) -> String {
    klaxon_core::time::format_ts(ms).replace(['-', ':'], "")
}

/// Escapes TEXT values (RFC 5545 §3.3.11).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Folds a content line at 75 octets (RFC 5545 §3.1), on char boundaries.
fn push_line(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

/// A VCALENDAR with one VEVENT per shift.
pub fn calendar(
    schedule: &Schedule,
    shifts: &[Shift],
    now: Millis,
    name_of: impl Fn(&str) -> String,
) -> String {
    let mut out = String::new();
    push_line(&mut out, "BEGIN:VCALENDAR");
    push_line(&mut out, "VERSION:2.0");
    push_line(&mut out, "PRODID:-//Klaxon//On-call schedule//EN");
    push_line(&mut out, "CALSCALE:GREGORIAN");
    push_line(
        &mut out,
        &format!(
            "X-WR-CALNAME:{}",
            escape(&format!("On call: {}", schedule.name))
        ),
    );
    for s in shifts {
        push_line(&mut out, "BEGIN:VEVENT");
        push_line(
            &mut out,
            &format!("UID:{}-{}-{}@klaxon", schedule.id, s.user, s.start),
        );
        push_line(&mut out, &format!("DTSTAMP:{}", stamp(now)));
        push_line(&mut out, &format!("DTSTART:{}", stamp(s.start)));
        push_line(&mut out, &format!("DTEND:{}", stamp(s.end)));
        push_line(
            &mut out,
            &format!(
                "SUMMARY:{}",
                escape(&format!(
                    "On call ({}): {}",
                    schedule.name,
                    name_of(&s.user)
                ))
            ),
        );
        push_line(&mut out, "END:VEVENT");
    }
    push_line(&mut out, "END:VCALENDAR");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_folds() {
        assert_eq!(escape("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
        let mut out = String::new();
        push_line(&mut out, &"x".repeat(160));
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert!(lines.iter().all(|l| l.len() <= 75), "{lines:?}");
        assert_eq!(lines.concat().replace(' ', "").len(), 160);
    }

    #[test]
    fn renders_events() {
        let schedule = Schedule {
            id: "S1234567".into(),
            account_id: "A1234567".into(),
            name: "Ops, primary".into(),
            time_zone: "UTC".into(),
            created_at: 0,
            updated_at: 0,
        };
        let shifts = [Shift {
            user: "U1234567".into(),
            start: 0,
            end: 3_600_000,
        }];
        let cal = calendar(&schedule, &shifts, 0, |_| "Ann".into());
        assert!(cal.contains("DTSTART:19700101T000000Z\r\n"));
        assert!(cal.contains("DTEND:19700101T010000Z\r\n"));
        assert!(cal.contains("SUMMARY:On call (Ops\\, primary): Ann\r\n"));
        assert!(cal.starts_with("BEGIN:VCALENDAR\r\n") && cal.ends_with("END:VCALENDAR\r\n"));
    }
}
