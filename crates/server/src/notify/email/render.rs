//! The words and markup of an email page: subject, plain text and HTML.
//!
//! The HTML is written for mail clients, not browsers: tables for layout,
//! inline styles only (clients drop `<style>` and classes), no images, no
//! scripts, a single column at most 600 px wide that narrows on a phone.
//! Everything from the incident is escaped.

use std::fmt::Write;

use klaxon_store::OutgoingMessage;
use serde_json::Value;

use crate::html::{escape, one_line, truncate};
use crate::notify::links::LINK_TTL_MS;
use crate::notify::{LinkAction, Links};

/// Longest subject, in characters (clients show far fewer; the rest of a
/// long message is in the body).
pub const SUBJECT_MAX: usize = 160;
/// Longest details block, in bytes of pretty-printed JSON.
pub const DETAILS_MAX: usize = 16 * 1024;

/// A page or status update, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// The `text/plain` part.
    pub text: String,
    /// The `text/html` part.
    pub html: String,
}

/// How a kind of message presents itself.
struct Look {
    /// Subject prefix.
    tag: &'static str,
    /// The banner over the card.
    banner: &'static str,
    /// The banner's colour.
    color: &'static str,
    /// One sentence on why the reader gets this.
    note: &'static str,
    /// Whether it carries the answer buttons.
    answer: bool,
}

fn look(m: &OutgoingMessage) -> Look {
    let page = |banner, note| Look {
        tag: "ALERT",
        banner,
        color: "#b91c1c",
        note,
        answer: true,
    };
    let update = |tag, banner, color, note| Look {
        tag,
        banner,
        color,
        note,
        answer: false,
    };
    match m.reason.as_str() {
        "assigned" => page("Triggered", "You are on call for this incident."),
        "escalated" => page(
            "Escalated to you",
            "This incident was escalated to you: nobody before you on the policy acknowledged it.",
        ),
        "retriggered" => page(
            "Triggered again",
            "This incident was acknowledged and has triggered again.",
        ),
        "acknowledged" => update(
            "ACKNOWLEDGED",
            "Acknowledged",
            "#b45309",
            "This incident was acknowledged. Paging has stopped until it is resolved or triggers again.",
        ),
        "resolved" => update(
            "RESOLVED",
            "Resolved",
            "#15803d",
            "This incident was resolved. Nothing more is needed from you.",
        ),
        "escalated_away" => update(
            "ESCALATED",
            "Escalated",
            "#4b5563",
            "This incident was escalated to the next responder: it is no longer assigned to you.",
        ),
        _ if !m.is_status_update() => page("Triggered", "You are on call for this incident."),
        _ => update(
            "UPDATE",
            "Updated",
            "#4b5563",
            "This incident has changed.",
        ),
    }
}

/// `ALERT [service] message` for a page, `RESOLVED [service] message`
/// and the like for a status update: one line, capped.
pub fn subject(m: &OutgoingMessage) -> String {
    let text = format!(
        "{} [{}] {}",
        look(m).tag,
        one_line(&m.service_name),
        one_line(&m.message)
    );
    truncate(&text, SUBJECT_MAX)
}

/// The message's three parts; `links` makes the answer buttons.
pub fn render(m: &OutgoingMessage, links: &dyn Links) -> Rendered {
    let look = look(m);
    let answers = look.answer.then(|| {
        (
            links.url(m, LinkAction::Acknowledge),
            links.url(m, LinkAction::Resolve),
        )
    });
    let details = details_text(m);
    Rendered {
        subject: subject(m),
        text: text(m, &look, answers.as_ref(), details.as_deref()),
        html: html(m, &look, answers.as_ref(), details.as_deref()),
    }
}

/// Hours a link works.
fn link_hours() -> i64 {
    LINK_TTL_MS / 3_600_000
}

/// The text of a multi-line field: line breaks kept (as `\n`), other
/// control characters dropped.
fn multi_line(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .map(|c| if c == '\r' { '\n' } else { c })
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The details as shown: a string as it is, anything else as pretty
/// JSON; cut at [`DETAILS_MAX`].
fn details_text(m: &OutgoingMessage) -> Option<String> {
    let value = &m.details.as_ref()?.0;
    let text = match value {
        Value::Null => return None,
        Value::String(s) => multi_line(s),
        Value::Object(o) if o.is_empty() => return None,
        other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
    };
    if text.is_empty() {
        return None;
    }
    if text.len() <= DETAILS_MAX {
        return Some(text);
    }
    let mut end = DETAILS_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!(
        "{}\n… (cut: {} bytes in all)",
        &text[..end],
        text.len()
    ))
}

fn text(
    m: &OutgoingMessage,
    look: &Look,
    answers: Option<&(String, String)>,
    details: Option<&str>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", subject(m));
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", look.note);
    let _ = writeln!(out);
    let _ = writeln!(out, "Service:  {}", one_line(&m.service_name));
    let _ = writeln!(out, "Incident: {} ({})", m.incident_id, m.incident_state);
    let _ = writeln!(out, "Message:  {}", one_line(&m.message));
    if let Some(description) = m.description.as_deref().map(multi_line) {
        if !description.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "{description}");
        }
    }
    if let Some((ack, resolve)) = answers {
        let _ = writeln!(out);
        let _ = writeln!(out, "Acknowledge: {ack}");
        let _ = writeln!(out, "Resolve:     {resolve}");
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Each link works once and for {} hours; it opens a page that asks you to confirm.",
            link_hours()
        );
    }
    if let Some(details) = details {
        let _ = writeln!(out);
        let _ = writeln!(out, "Details:");
        let _ = writeln!(out, "{details}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "-- ");
    let _ = writeln!(out, "{}", footer(m, look));
    out
}

/// Why the reader gets this.
fn footer(m: &OutgoingMessage, look: &Look) -> String {
    if look.answer {
        format!(
            "Klaxon paged you because you are on call for {}.",
            one_line(&m.service_name)
        )
    } else {
        "Klaxon sent you this update because you were paged about this incident.".to_owned()
    }
}

const FONT: &str = "-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif";
const MONO: &str = "SFMono-Regular,Menlo,Consolas,'Liberation Mono',monospace";

fn html(
    m: &OutgoingMessage,
    look: &Look,
    answers: Option<&(String, String)>,
    details: Option<&str>,
) -> String {
    let service = escape(&one_line(&m.service_name));
    let message = escape(&one_line(&m.message));
    let description = m
        .description
        .as_deref()
        .map(multi_line)
        .filter(|d| !d.is_empty());
    // The inbox preview line: the note, then the start of the description.
    let preheader = escape(&truncate(
        &one_line(&format!(
            "{} {}",
            look.note,
            description.as_deref().unwrap_or("")
        )),
        140,
    ));
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<meta name="supported-color-schemes" content="light">
<title>{title}</title>
</head>
<body style="margin:0;padding:0;background-color:#f3f4f6;">
<div style="display:none;max-height:0;overflow:hidden;font-size:1px;line-height:1px;color:#f3f4f6;opacity:0;">{preheader}</div>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" bgcolor="#f3f4f6" style="background-color:#f3f4f6;">
<tr><td align="center" style="padding:24px 12px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" bgcolor="#ffffff" style="max-width:600px;background-color:#ffffff;border:1px solid #e5e7eb;border-radius:8px;border-collapse:separate;">
<tr><td bgcolor="{color}" style="background-color:{color};border-radius:7px 7px 0 0;padding:12px 24px;font-family:{FONT};font-size:13px;line-height:18px;font-weight:bold;letter-spacing:1px;text-transform:uppercase;color:#ffffff;">&#9679;&nbsp; {banner}</td></tr>
<tr><td style="padding:24px 24px 0 24px;font-family:{FONT};">
<p style="margin:0 0 6px 0;font-size:13px;line-height:18px;color:#6b7280;">{service}</p>
<h1 style="margin:0 0 12px 0;font-size:22px;line-height:30px;font-weight:bold;color:#111827;word-break:break-word;">{message}</h1>
<p style="margin:0 0 20px 0;font-size:14px;line-height:20px;color:#4b5563;">{note}</p>
</td></tr>
"##,
        title = escape(&subject(m)),
        color = look.color,
        banner = look.banner,
        note = look.note,
    );
    if let Some(description) = &description {
        let _ = writeln!(
            out,
            r##"<tr><td style="padding:0 24px 20px 24px;font-family:{FONT};font-size:15px;line-height:22px;color:#111827;white-space:pre-wrap;word-break:break-word;">{}</td></tr>"##,
            escape(description)
        );
    }
    if let Some((ack, resolve)) = answers {
        let _ = write!(
            out,
            r##"<tr><td style="padding:4px 24px 8px 24px;">
<table role="presentation" cellpadding="0" cellspacing="0" border="0"><tr>
<td bgcolor="#1d4ed8" style="background-color:#1d4ed8;border-radius:6px;"><a href="{ack}" target="_blank" style="display:inline-block;padding:12px 24px;font-family:{FONT};font-size:15px;line-height:20px;font-weight:bold;color:#ffffff;text-decoration:none;border-radius:6px;">Acknowledge</a></td>
<td width="12" style="width:12px;font-size:0;line-height:0;">&nbsp;</td>
<td bgcolor="#15803d" style="background-color:#15803d;border-radius:6px;"><a href="{resolve}" target="_blank" style="display:inline-block;padding:12px 24px;font-family:{FONT};font-size:15px;line-height:20px;font-weight:bold;color:#ffffff;text-decoration:none;border-radius:6px;">Resolve</a></td>
</tr></table>
</td></tr>
<tr><td style="padding:4px 24px 20px 24px;font-family:{FONT};font-size:12px;line-height:18px;color:#6b7280;">Each button works once and for {hours} hours. It opens a page that asks you to confirm.</td></tr>
"##,
            ack = escape(ack),
            resolve = escape(resolve),
            hours = link_hours(),
        );
    }
    if let Some(details) = details {
        let _ = write!(
            out,
            r##"<tr><td style="padding:0 24px 20px 24px;font-family:{FONT};">
<p style="margin:0 0 6px 0;font-size:12px;line-height:16px;font-weight:bold;letter-spacing:1px;text-transform:uppercase;color:#6b7280;">Details</p>
<pre style="margin:0;padding:12px;background-color:#f9fafb;border:1px solid #e5e7eb;border-radius:6px;font-family:{MONO};font-size:12px;line-height:18px;color:#1f2937;white-space:pre-wrap;word-break:break-word;">{}</pre>
</td></tr>
"##,
            escape(details)
        );
    }
    let _ = write!(
        out,
        r##"<tr><td style="padding:0 24px 20px 24px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" style="border-top:1px solid #e5e7eb;">
<tr><td style="padding:12px 0 0 0;font-family:{FONT};font-size:12px;line-height:18px;color:#6b7280;">Incident <span style="font-family:{MONO};color:#374151;">{incident}</span> &middot; {state}</td></tr>
</table>
</td></tr>
</table>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" style="max-width:600px;">
<tr><td align="center" style="padding:16px 24px;font-family:{FONT};font-size:12px;line-height:18px;color:#9ca3af;">{footer}</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
"##,
        incident = escape(&m.incident_id),
        state = escape(&m.incident_state),
        footer = escape(&footer(m, look)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A details column holding `value`.
    fn json_details<T: serde::de::DeserializeOwned>(value: Value) -> Option<T> {
        Some(serde_json::from_value(value).expect("the column type reads JSON"))
    }

    struct FakeLinks;

    impl Links for FakeLinks {
        fn url(&self, m: &OutgoingMessage, action: LinkAction) -> String {
            format!("https://k.test/links/{}-{}?a=1&b=2", m.id, action.as_str())
        }
    }

    fn message(reason: &str) -> OutgoingMessage {
        OutgoingMessage {
            id: "msg00001".into(),
            account_id: "acc00001".into(),
            incident_id: "inc00001".into(),
            user_id: "usr00001".into(),
            contact_id: None,
            reason: reason.into(),
            channel: "email".into(),
            address: "oncall@example.com".into(),
            attempts: 1,
            page_at: 0,
            service_name: "Disks".into(),
            message: "disk full on db-1".into(),
            description: Some("/var is at 99%.\r\nClean up the logs.".into()),
            details: json_details(json!({"host": "db-1", "used": 0.99})),
            incident_state: "triggered".into(),
            bundle: Vec::new(),
        }
    }

    #[test]
    fn subjects_name_the_kind_service_and_message() {
        assert_eq!(
            subject(&message("assigned")),
            "ALERT [Disks] disk full on db-1"
        );
        assert_eq!(
            subject(&message("escalated")),
            "ALERT [Disks] disk full on db-1"
        );
        assert_eq!(
            subject(&message("acknowledged")),
            "ACKNOWLEDGED [Disks] disk full on db-1"
        );
        assert_eq!(
            subject(&message("resolved")),
            "RESOLVED [Disks] disk full on db-1"
        );
        assert_eq!(
            subject(&message("escalated_away")),
            "ESCALATED [Disks] disk full on db-1"
        );
    }

    #[test]
    fn a_subject_is_one_capped_line() {
        let mut m = message("assigned");
        m.service_name = "Dis\r\nks".into();
        m.message = format!(
            "line one\r\nBcc: victim@example.com\u{0}\t{}",
            "x".repeat(500)
        );
        let s = subject(&m);
        assert!(!s.chars().any(char::is_control), "{s:?}");
        assert!(s.starts_with("ALERT [Dis ks] line one Bcc: victim@example.com x"));
        assert_eq!(s.chars().count(), SUBJECT_MAX);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn a_page_carries_both_links_and_an_update_none() {
        let page = render(&message("assigned"), &FakeLinks);
        for part in [&page.text, &page.html] {
            assert!(part.contains("/links/msg00001-acknowledge"), "{part}");
            assert!(part.contains("/links/msg00001-resolve"), "{part}");
        }
        // The URL's `&` is escaped in the attribute.
        assert!(page
            .html
            .contains("href=\"https://k.test/links/msg00001-acknowledge?a=1&amp;b=2\""));
        assert!(page.text.contains("/var is at 99%.\nClean up the logs."));
        assert!(page.text.contains("\"host\": \"db-1\""));
        for reason in ["acknowledged", "resolved", "escalated_away"] {
            let update = render(&message(reason), &FakeLinks);
            assert!(!update.text.contains("/links/"), "{reason}");
            assert!(!update.html.contains("/links/"), "{reason}");
            assert!(!update.html.contains(">Acknowledge<"), "{reason}");
        }
    }

    #[test]
    fn everything_from_the_incident_is_escaped() {
        let mut m = message("assigned");
        m.service_name = "<b>svc</b>".into();
        m.message = "<script>alert(1)</script>".into();
        m.description = Some("\"quoted\" & <img src=x onerror=alert(2)>".into());
        m.details = json_details(json!({"<k>": "</pre><script>x</script>"}));
        m.incident_state = "<i>".into();
        let html = render(&m, &FakeLinks).html;
        for raw in ["<script", "<img", "<b>svc", "</pre><script", "<i>", "<k>"] {
            assert!(!html.contains(raw), "{raw} unescaped in {html}");
        }
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;quoted&quot; &amp; &lt;img"));
        assert!(html.contains("&lt;/pre&gt;&lt;script&gt;"));
    }

    #[test]
    fn details_are_pretty_json_or_text_and_capped() {
        let mut m = message("assigned");
        m.details = json_details(json!("plain\r\ntext"));
        assert_eq!(details_text(&m).as_deref(), Some("plain\ntext"));
        m.details = json_details(json!({}));
        assert_eq!(details_text(&m), None);
        m.details = None;
        assert_eq!(details_text(&m), None);
        m.details = json_details(json!({"a": [1, 2]}));
        assert_eq!(
            details_text(&m).as_deref(),
            Some("{\n  \"a\": [\n    1,\n    2\n  ]\n}")
        );
        m.details = json_details(json!({"big": "é".repeat(DETAILS_MAX)}));
        let cut = details_text(&m).unwrap_or_default();
        assert!(cut.len() < DETAILS_MAX + 100);
        assert!(cut.contains("(cut: "));
    }

    #[test]
    fn missing_description_and_details_leave_no_empty_blocks() {
        let mut m = message("assigned");
        m.description = Some(" \r\n ".into());
        m.details = None;
        let r = render(&m, &FakeLinks);
        assert!(!r.html.contains("color:#111827;white-space:pre-wrap"));
        assert!(!r.html.contains(">Details<"));
        assert!(!r.text.contains("Details:"));
    }
}
