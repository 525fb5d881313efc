//! Trimming long texts (messages, tracebacks) for a model or a report, with
//! a visible marker saying how much was cut, so nobody mistakes a trimmed
//! text for the whole one.
//!
//! Lengths are counted in characters, never bytes, and cuts fall on char
//! boundaries, so the result is always valid UTF-8.

/// The marker put where text was cut.
pub fn marker(cut_chars: usize) -> String {
    format!("… [trimmed {cut_chars} chars]")
}

/// Keeps the first `max` characters of `s` and appends the marker when
/// anything was cut. For messages: their start says what went wrong.
pub fn trim_end(s: &str, max: usize) -> String {
    let total = s.chars().count();
    if total <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push_str(&marker(total - max));
    out
}

/// Keeps about a third of `max` characters from the start of `s` and the
/// rest from its end, with the marker in between. For tracebacks: the start
/// names the test, the end holds the assertion and the failing line.
pub fn trim_middle(s: &str, max: usize) -> String {
    let total = s.chars().count();
    if total <= max {
        return s.to_string();
    }
    let head = max / 3;
    let tail = max - head;
    let mut out: String = s.chars().take(head).collect();
    out.push_str(&marker(total - max));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.extend(s.chars().skip(total - tail));
    out
}

/// First `n` characters of a commit sha (or anything else).
pub fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_unchanged() {
        assert_eq!(trim_end("abc", 3), "abc");
        assert_eq!(trim_middle("abc", 3), "abc");
    }

    #[test]
    fn trims_with_marker_on_char_boundaries() {
        let s = "é".repeat(1000);
        let t = trim_end(&s, 10);
        assert!(t.starts_with(&"é".repeat(10)));
        assert!(t.ends_with("… [trimmed 990 chars]"), "{t}");
        let t = trim_middle(&format!("HEAD{}TAIL", "x".repeat(5000)), 300);
        assert!(t.starts_with("HEAD") && t.ends_with("TAIL"), "{t}");
        assert!(t.contains("[trimmed 4708 chars]"), "{t}");
    }
}
