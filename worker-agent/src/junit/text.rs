//! Bounded text: the capped buffer that collects tracebacks and output,
//! the capping of ids, and the small string helpers the reader shares.
//!
//! One place for the caps so a 100 MB `<system-out>` costs only its cap and
//! a cut text reads exactly like [`schema::truncate_marked`] applied to the
//! whole (the marker is the schema's, checked by a unit test).

use ptp_nats::schema::{self, MAX_TEST_ID_BYTES};

/// Caps an id-like field so that, marker included, it stays within
/// [`MAX_TEST_ID_BYTES`] (which validation enforces without slack).
pub(super) fn cap_id(s: String) -> String {
    if s.len() <= MAX_TEST_ID_BYTES {
        return s;
    }
    // The marker is at most ~45 bytes; 64 leaves room.
    schema::truncate_marked(s, MAX_TEST_ID_BYTES - 64)
}

/// A text buffer that keeps at most `cap` bytes and counts the rest, so a
/// 100 MB `<system-out>` costs `cap` bytes. Finished, it reads exactly like
/// [`schema::truncate_marked`] applied to the whole text.
pub(super) struct Capped {
    buf: String,
    cap: usize,
    dropped: usize,
    /// Some non-whitespace was pushed.
    content: bool,
}

impl Capped {
    pub(super) fn new(cap: usize) -> Capped {
        Capped {
            buf: String::new(),
            cap,
            dropped: 0,
            content: false,
        }
    }

    pub(super) fn push(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if self.dropped > 0 {
            self.dropped = self.dropped.saturating_add(s.len());
            return;
        }
        if !self.content && !is_xml_blank(s) {
            self.content = true;
        }
        let room = self.cap.saturating_sub(self.buf.len());
        if s.len() <= room {
            self.buf.push_str(s);
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.buf.push_str(&s[..cut]);
            self.dropped = s.len() - cut;
        }
    }

    /// Pushes `sep` if something was written before (joins pieces).
    pub(super) fn separate(&mut self, sep: &str) {
        if self.content {
            self.push(sep);
        }
    }

    /// The text without blank leading lines and trailing whitespace (the
    /// first line keeps its indentation), marked if cut; `None` if blank.
    pub(super) fn finish(self) -> Option<String> {
        if !self.content {
            return None;
        }
        let start = leading_blank_lines(&self.buf);
        if self.dropped == 0 {
            let s = self.buf[start..].trim_end();
            return (!s.is_empty()).then(|| s.to_string());
        }
        // Same marker as `schema::truncate_marked` (checked by a unit test).
        let mut s = self.buf;
        s.drain(..start);
        s.push_str(&format!("\n… [truncated {} bytes]", self.dropped));
        Some(s)
    }
}

/// Length of the whitespace-only lines at the start of `s`.
fn leading_blank_lines(s: &str) -> usize {
    let ws = s.len() - s.trim_start().len();
    s[..ws].rfind('\n').map_or(0, |i| i + 1)
}

pub(super) fn is_xml_blank(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// At most `max` bytes of `s`, cut on a char boundary.
pub(super) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
