//! Slack contacts: a message posted to an incoming-webhook URL
//! (`https://hooks.slack.com/services/…`).
//!
//! A page is a header (`ALERT [service] message`), the description, a
//! context line (incident id, state, reason) and two URL buttons,
//! Acknowledge and Resolve, that open the signed answer links. A status
//! update is one short section and the context line. `text` is the
//! one-line fallback Slack shows in notifications.
//!
//! Everything that came from an incident is escaped (`&`, `<`, `>`), so an
//! alert cannot mention `@channel` or forge a link, and cut to Slack's
//! block limits.

use std::sync::Arc;

use async_trait::async_trait;
use klaxon_core::time::Millis;
use klaxon_store::{OutgoingMessage, SendOutcome};
use serde_json::{json, Value};

use super::{deliver, headline, target, truncate, Urls, Web};
use crate::notify::Notifier;

/// Slack's limit on a header block's text.
const HEADER_MAX: usize = 150;
/// Slack's limit on a section's text is 3000; escaping may lengthen what
/// is kept, so cut before escaping with room to spare.
const SECTION_MAX: usize = 2_000;

/// Text for a `mrkdwn` field or the fallback: Slack's three control
/// characters escaped.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What a status update says happened, for people.
fn update_label(reason: &str) -> String {
    match reason {
        "acknowledged" => "Acknowledged".to_owned(),
        "resolved" => "Resolved".to_owned(),
        "escalated_away" => "Escalated to the next responder".to_owned(),
        other => other.replace('_', " "),
    }
}

/// The message Slack is sent for `m`.
pub fn payload(m: &OutgoingMessage, urls: &Urls) -> Value {
    let text = escape(&truncate(&headline(m), SECTION_MAX));
    let context = json!({
        "type": "context",
        "elements": [{
            "type": "mrkdwn",
            "text": escape(&format!(
                "Incident {} · {} · {}",
                m.incident_id, m.incident_state, m.reason
            )),
        }],
    });
    let mut blocks = Vec::with_capacity(4);
    if m.is_status_update() {
        let line = format!(
            "*{}*: [{}] {}",
            escape(&update_label(&m.reason)),
            escape(&truncate(&m.service_name, 200)),
            escape(&truncate(&m.message, SECTION_MAX - 250)),
        );
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": line },
        }));
        blocks.push(context);
    } else {
        blocks.push(json!({
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(&headline(m), HEADER_MAX),
                "emoji": false,
            },
        }));
        if let Some(description) = m.description.as_deref().filter(|d| !d.trim().is_empty()) {
            blocks.push(json!({
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": escape(&truncate(description, SECTION_MAX)),
                },
            }));
        }
        blocks.push(context);
        if let Some(answers) = &urls.answers {
            blocks.push(json!({
                "type": "actions",
                "block_id": "klaxon_answers",
                "elements": [
                    button("acknowledge", "Acknowledge", "primary", &answers.acknowledge),
                    button("resolve", "Resolve", "danger", &answers.resolve),
                ],
            }));
        }
    }
    json!({ "text": text, "blocks": blocks })
}

fn button(id: &str, label: &str, style: &str, url: &str) -> Value {
    json!({
        "type": "button",
        "action_id": id,
        "text": { "type": "plain_text", "text": label },
        "style": style,
        "url": url,
    })
}

/// Sends Slack contacts' messages.
pub struct Slack {
    web: Arc<Web>,
}

impl Slack {
    /// A Slack notifier.
    pub fn new(web: Arc<Web>) -> Self {
        Self { web }
    }
}

#[async_trait]
impl Notifier for Slack {
    fn provider(&self, _channel: &str) -> &'static str {
        "slack"
    }

    async fn send(&self, m: &OutgoingMessage, now: Millis) -> SendOutcome {
        let url = match target(m) {
            Ok(url) => url,
            Err(failed) => return failed,
        };
        let request = self
            .web
            .client
            .post(url)
            .json(&payload(m, &self.web.urls(m)));
        deliver(request, m, now, |_| None).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::page;
    use super::super::Answers;
    use super::*;

    fn urls() -> Urls {
        Urls {
            incident: "https://k.test/incidents/inc00001".into(),
            answers: Some(Answers {
                acknowledge: "https://k.test/links/a".into(),
                resolve: "https://k.test/links/r".into(),
            }),
        }
    }

    #[test]
    fn a_page_has_a_header_description_context_and_buttons() {
        let body = payload(&page(), &urls());
        assert_eq!(
            body,
            json!({
                "text": "ALERT [Disks] disk full",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "ALERT [Disks] disk full", "emoji": false}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "/var is at 100%"}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": "Incident inc00001 · triggered · assigned"}]},
                    {"type": "actions", "block_id": "klaxon_answers", "elements": [
                        {"type": "button", "action_id": "acknowledge", "text": {"type": "plain_text", "text": "Acknowledge"}, "style": "primary", "url": "https://k.test/links/a"},
                        {"type": "button", "action_id": "resolve", "text": {"type": "plain_text", "text": "Resolve"}, "style": "danger", "url": "https://k.test/links/r"},
                    ]},
                ],
            })
        );
    }

    #[test]
    fn a_status_update_is_short() {
        let mut m = page();
        m.reason = "resolved".into();
        m.incident_state = "resolved".into();
        let body = payload(
            &m,
            &Urls {
                answers: None,
                ..urls()
            },
        );
        assert_eq!(body["text"], "RESOLVED [Disks] disk full");
        let blocks = body["blocks"].as_array().cloned().unwrap_or_default();
        assert_eq!(blocks.len(), 2, "{blocks:?}");
        assert_eq!(blocks[0]["text"]["text"], "*Resolved*: [Disks] disk full");
        assert_eq!(blocks[1]["type"], "context");
    }

    #[test]
    fn incident_text_cannot_mention_or_link_and_fits_the_limits() {
        let mut m = page();
        m.message = "<!channel> see <https://evil.test|here> & ".to_owned() + &"x".repeat(400);
        m.description = Some("<@U123> ".to_owned() + &"y".repeat(5_000));
        let body = payload(&m, &urls());
        let text = body["text"].as_str().unwrap_or_default();
        assert!(text.starts_with(
            "ALERT [Disks] &lt;!channel&gt; see &lt;https://evil.test|here&gt; &amp; "
        ));
        let header = body["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(header.chars().count(), HEADER_MAX);
        let section = body["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(section.starts_with("&lt;@U123&gt; "));
        assert!(section.chars().count() <= 3_000);
        assert!(!section.contains('<'));
    }
}
