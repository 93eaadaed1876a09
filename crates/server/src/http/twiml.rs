//! TwiML: the XML answers Twilio's webhooks expect.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

/// A `200` TwiML document holding `verbs` (already escaped markup).
pub fn twiml(verbs: &str) -> Response {
    (
        [(CONTENT_TYPE, "text/xml; charset=utf-8")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{verbs}</Response>"),
    )
        .into_response()
}

/// `text` as XML character data or an attribute value: markup characters
/// escaped, and the characters XML 1.0 cannot hold at all (control
/// characters other than tab and line breaks, U+FFFE, U+FFFF) dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_what_xml_cannot_hold() {
        assert_eq!(
            escape(r#"<b>"Tom" & 'Jerry'</b>"#),
            "&lt;b&gt;&quot;Tom&quot; &amp; &apos;Jerry&apos;&lt;/b&gt;"
        );
        assert_eq!(escape("a\u{0}b\u{1b}c\u{FFFF}d\te\u{7f}"), "abcd\te\u{7f}");
        assert_eq!(escape("ünïcødé ✓"), "ünïcødé ✓");
    }

    #[tokio::test]
    async fn documents_are_xml() {
        let response = twiml("<Say>hi</Say>");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/xml; charset=utf-8");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(
            &body[..],
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>hi</Say></Response>"
        );
    }
}
