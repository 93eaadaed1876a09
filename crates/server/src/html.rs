//! Escaping for the HTML the server writes by hand (email bodies, the
//! answer-link pages). Everything that comes from an incident, a user or a
//! monitoring system goes through [`escape`].

/// `text` with `& < > " '` replaced by entities: safe in element content
/// and in quoted attribute values. Control characters other than tab and
/// newline (which HTML cannot show and some parsers choke on) are dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `text` on one line: every run of control characters and whitespace
/// becomes one space, and the ends are trimmed.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(|c: char| c.is_control() || c.is_whitespace()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text[end..].chars().nth(1).is_some() => {
            let mut out = text[..end].trim_end().to_owned();
            out.push('…');
            out
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_control_characters() {
        assert_eq!(
            escape("<a href=\"x\" onclick='y'>&</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape("a\u{0}b\u{1b}[31mc\td\ne"), "ab[31mc\td\ne");
        assert_eq!(escape("ünïcode 🔥"), "ünïcode 🔥");
    }

    #[test]
    fn one_line_collapses_breaks_and_control_characters() {
        assert_eq!(
            one_line("  disk\r\nfull\t\u{0}on \u{7}db-1 "),
            "disk full on db-1"
        );
        assert_eq!(one_line("\n\r\t"), "");
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abcde…");
        assert_eq!(truncate("ééééééé", 4), "ééé…");
        assert_eq!(truncate("ab cdefg", 4), "ab…");
        assert_eq!(truncate("", 3), "");
    }
}
