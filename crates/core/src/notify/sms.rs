//! SMS wording and bundling.
//!
//! An alert is `ALERT [service] message`; several alerts to one contact due
//! within [`BUNDLE_WINDOW_MS`] of each other are one text,
//! `N ALERTS: [service] message; [service] message`. Either is cut to one
//! SMS segment: 160 GSM-7 septets, or 70 UCS-2 units when the text holds a
//! character GSM-7 lacks.

use super::{ContactId, UserId};
use crate::time::Millis;

/// Messages to one SMS contact due less than this long after the first of
/// them are sent as one text.
pub const BUNDLE_WINDOW_MS: Millis = 30_000;

/// Septets in one GSM-7 SMS segment.
pub const GSM7_SEGMENT: usize = 160;

/// UTF-16 units in one UCS-2 SMS segment.
pub const UCS2_SEGMENT: usize = 70;

/// GSM 03.38's basic character set: one septet each (line feed, carriage
/// return and escape omitted: [`render`] never emits control characters).
const GSM7_BASIC: &str = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// GSM 03.38's extension table: two septets each (an escape, then the
/// character; form feed omitted).
const GSM7_EXTENSION: &str = "^{}\\[~]|€";

/// The septets `c` takes in GSM-7, `None` if GSM-7 cannot encode it.
fn gsm7_width(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// How a text is encoded in an SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The GSM 03.38 7-bit alphabet (160 septets a segment).
    Gsm7,
    /// UCS-2, in practice UTF-16 (70 units a segment).
    Ucs2,
}

/// The encoding `text` needs and its length in that encoding's units
/// (septets, or UTF-16 units).
pub fn encoded_len(text: &str) -> (Encoding, usize) {
    let septets: Option<usize> = text.chars().map(gsm7_width).sum();
    match septets {
        Some(n) => (Encoding::Gsm7, n),
        None => (Encoding::Ucs2, text.encode_utf16().count()),
    }
}

/// Whether `text` fits one SMS segment.
pub fn fits_one_segment(text: &str) -> bool {
    match encoded_len(text) {
        (Encoding::Gsm7, n) => n <= GSM7_SEGMENT,
        (Encoding::Ucs2, n) => n <= UCS2_SEGMENT,
    }
}

/// `text` cut to one SMS segment, ending in an ellipsis if anything was
/// cut (`...` in GSM-7, which lacks `…`; `…` in UCS-2). Cuts fall between
/// characters, never inside one. A text whose first character outside
/// GSM-7 comes only after the GSM-7 cut point is cut as GSM-7, which keeps
/// more of it.
pub fn cut_to_one_segment(text: &str) -> String {
    if fits_one_segment(text) {
        return text.to_owned();
    }
    let room = GSM7_SEGMENT - "...".len();
    let mut septets = 0;
    for (at, c) in text.char_indices() {
        let Some(width) = gsm7_width(c) else { break };
        if septets + width > room {
            return format!("{}...", text[..at].trim_end());
        }
        septets += width;
    }
    let room = UCS2_SEGMENT - 1;
    let mut units = 0;
    for (at, c) in text.char_indices() {
        let width = c.len_utf16();
        if units + width > room {
            return format!("{}…", text[..at].trim_end());
        }
        units += width;
    }
    // Unreachable: a text that does not fit is cut by one of the loops.
    text.to_owned()
}

/// One alert as an SMS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertText<'a> {
    /// The service's name.
    pub service: &'a str,
    /// The incident's message.
    pub message: &'a str,
}

/// The text of an SMS carrying `alerts` (in the order given), cut to one
/// segment: `ALERT [service] message` for one, `N ALERTS: [service]
/// message; …` for several. Runs of whitespace and control characters in
/// names and messages become one space.
pub fn render(alerts: &[AlertText<'_>]) -> String {
    let items: Vec<String> = alerts
        .iter()
        .map(|a| {
            let service = squash(a.service);
            let message = squash(a.message);
            if message.is_empty() {
                format!("[{service}]")
            } else {
                format!("[{service}] {message}")
            }
        })
        .collect();
    let text = match items.as_slice() {
        [one] => format!("ALERT {one}"),
        many => format!("{} ALERTS: {}", many.len(), many.join("; ")),
    };
    cut_to_one_segment(&text)
}

/// `s` with every run of whitespace or control characters made one space,
/// and trimmed.
fn squash(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A planned SMS, as the sender holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsAlert {
    /// The message's id (its outbox row).
    pub id: String,
    /// The user it is for.
    pub user_id: UserId,
    /// The SMS contact it goes to.
    pub contact_id: ContactId,
    /// When it is due.
    pub due_at: Millis,
    /// The incident's service's name.
    pub service: String,
    /// The incident's message.
    pub message: String,
}

/// One text carrying one or more alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsBundle {
    /// The user it is for.
    pub user_id: UserId,
    /// The SMS contact it goes to.
    pub contact_id: ContactId,
    /// When to send it: the latest due time of its alerts, so none goes
    /// out before it is due (the first waits less than the window).
    pub send_at: Millis,
    /// The ids of the alerts it carries, in order of due time.
    pub alert_ids: Vec<String>,
    /// The text, cut to one segment.
    pub text: String,
}

/// Groups `alerts` into texts: per (user, contact), in order of due time,
/// each bundle takes every alert due less than `window` after its first
/// (use [`BUNDLE_WINDOW_MS`]). Every alert is in exactly one bundle.
/// Bundles come in order of `send_at`, then user and contact.
///
/// Cancelled alerts ([`super::should_send`]) should be left out first. A
/// sender that sends what is due at `now` passes every queued alert due
/// before `now + window` and sends the bundles whose `send_at` has come;
/// the rest are planned again later.
pub fn bundle_sms(alerts: &[SmsAlert], window: Millis) -> Vec<SmsBundle> {
    let mut order: Vec<&SmsAlert> = alerts.iter().collect();
    // Stable: alerts due together keep their given order.
    order.sort_by(|a, b| {
        (&a.user_id, &a.contact_id, a.due_at).cmp(&(&b.user_id, &b.contact_id, b.due_at))
    });
    let mut bundles: Vec<SmsBundle> = Vec::new();
    let mut group: Vec<&SmsAlert> = Vec::new();
    for alert in order {
        if let Some(first) = group.first() {
            let same_contact =
                first.user_id == alert.user_id && first.contact_id == alert.contact_id;
            if !same_contact || alert.due_at.saturating_sub(first.due_at) >= window {
                bundles.push(bundle(&group));
                group.clear();
            }
        }
        group.push(alert);
    }
    if !group.is_empty() {
        bundles.push(bundle(&group));
    }
    bundles.sort_by(|a, b| {
        (a.send_at, &a.user_id, &a.contact_id).cmp(&(b.send_at, &b.user_id, &b.contact_id))
    });
    bundles
}

/// The bundle of a non-empty group of one contact's alerts, sorted by due.
fn bundle(group: &[&SmsAlert]) -> SmsBundle {
    let texts: Vec<AlertText<'_>> = group
        .iter()
        .map(|a| AlertText {
            service: &a.service,
            message: &a.message,
        })
        .collect();
    SmsBundle {
        user_id: group[0].user_id.clone(),
        contact_id: group[0].contact_id.clone(),
        send_at: group.iter().map(|a| a.due_at).max().unwrap_or_default(),
        alert_ids: group.iter().map(|a| a.id.clone()).collect(),
        text: render(&texts),
    }
}
