//! The one percent-encoding of values put into URLs by the master (a
//! `Link` header's query) and the agent (the report link of its job
//! summary): RFC 3986's unreserved bytes (`A-Z a-z 0-9 - . _ ~`) stay,
//! every other byte of the UTF-8 text is `%XX` in upper-case hex.
//!
//! Why here: it is the one crate both sides already share, and the rule is
//! ten lines, not worth a dependency. Guarantees: the result is ASCII, fits
//! in a query value or a path segment, and decodes to the input.

/// `s` percent-encoded: unreserved bytes kept, every other byte `%XX`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_stay_everything_else_is_escaped() {
        assert_eq!(encode("a-Z_0.~"), "a-Z_0.~");
        assert_eq!(encode("feature/x y&z=1"), "feature%2Fx%20y%26z%3D1");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode(""), "");
    }
}
