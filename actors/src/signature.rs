//! Failure signatures: what identifies a failure (its exception type, its
//! first message line with the varying parts masked, its top frame), a pure
//! function of a case's message and traceback. The store computes it when it
//! stores a failed or errored case ([`stored_signature`]); the failure
//! clusters (`read::clusters`) group by it. Both use this one
//! definition.

/// What identifies a failure.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Signature {
    /// Exception or error type, when one can be told.
    pub exception: Option<String>,
    /// First message line, variable parts masked.
    pub message: String,
    /// Top frame: file (and function), without line numbers.
    pub frame: Option<String>,
}

impl Signature {
    /// A short stable id: 12 hex digits of a 64-bit FNV-1a hash.
    pub fn id(&self) -> String {
        id_of(self.key())
    }

    /// The id as an integer (the top 48 bits of the hash), as stored.
    pub fn key(&self) -> i64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let parts = [
            self.exception.as_deref().unwrap_or(""),
            &self.message,
            self.frame.as_deref().unwrap_or(""),
        ];
        for (i, p) in parts.iter().enumerate() {
            for b in p.bytes().chain(std::iter::once(i as u8)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        // 48 bits: always a non-negative i64.
        (h >> 16) as i64
    }
}

/// The id of a stored signature key.
pub(crate) fn id_of(key: i64) -> String {
    format!("{key:012x}")
}

/// Longest message read for a signature, in characters.
const SIGNED_MESSAGE_CHARS: usize = 1000;
/// Tracebacks longer than this (characters) are signed from their head and
/// tail, [`SIGNED_TRACEBACK_END_CHARS`] each.
const SIGNED_TRACEBACK_CHARS: usize = 4000;
const SIGNED_TRACEBACK_END_CHARS: usize = 2000;

/// The signature of a stored failure: of its first 1,000 message
/// characters and of its traceback, or of the traceback's first and last
/// 2,000 characters when it is longer than 4,000 (the frame and the
/// exception are at the ends).
pub fn stored_signature(message: Option<&str>, traceback: Option<&str>) -> Signature {
    let message = message.map(|m| match m.char_indices().nth(SIGNED_MESSAGE_CHARS) {
        Some((cut, _)) => &m[..cut],
        None => m,
    });
    let traceback = traceback.map(|t| {
        let n = t.chars().count();
        if n <= SIGNED_TRACEBACK_CHARS {
            return std::borrow::Cow::Borrowed(t);
        }
        let head: String = t.chars().take(SIGNED_TRACEBACK_END_CHARS).collect();
        let tail: String = t.chars().skip(n - SIGNED_TRACEBACK_END_CHARS).collect();
        std::borrow::Cow::Owned(format!("{head}\n{tail}"))
    });
    signature(message, traceback.as_deref())
}

/// Longest masked message kept in a signature.
pub(crate) const MAX_MESSAGE: usize = 200;

/// The signature of a failure from its message and traceback.
pub fn signature(message: Option<&str>, traceback: Option<&str>) -> Signature {
    let message = message.map(str::trim).filter(|m| !m.is_empty());
    let tb = traceback.unwrap_or("");
    // The first meaningful message line; pytest messages may start with a
    // newline, hamcrest ones with "Expected:".
    let exc_line = last_exception_line(tb);
    let first_line = message
        .and_then(|m| m.lines().map(str::trim).find(|l| !l.is_empty()))
        .or(exc_line)
        .or_else(|| tb.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("");
    let (exception, rest) = split_exception(first_line);
    let exception = exception
        .or_else(|| exc_line.and_then(|l| split_exception(l).0))
        .or_else(|| {
            pytest_location(tb)
                .map(|(_, e)| e.to_string())
                .filter(|e| looks_like_exception(e))
        });
    Signature {
        exception,
        message: mask(rest),
        frame: top_frame(tb),
    }
}

/// `ValueError: bad` → (`ValueError`, `bad`); `java.lang.AssertionError:
/// expected` → (`java.lang.AssertionError`, ...). Only names that look like
/// exception types count, so "expected: 3" keeps its word.
fn split_exception(line: &str) -> (Option<String>, &str) {
    let Some((head, rest)) = line.split_once(':') else {
        let name = line.trim();
        return if looks_like_exception(name) {
            (Some(name.to_string()), "")
        } else {
            (None, line)
        };
    };
    let head = head.trim();
    if looks_like_exception(head) {
        (Some(head.to_string()), rest.trim())
    } else {
        (None, line)
    }
}

fn looks_like_exception(name: &str) -> bool {
    let last = name.rsplit(['.', ':']).next().unwrap_or(name);
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | ':'))
        && last.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && [
            "Error",
            "Exception",
            "Failure",
            "Failed",
            "Exit",
            "Interrupt",
            "Timeout",
            "Panic",
        ]
        .iter()
        .any(|s| last.ends_with(s))
}

/// The last traceback line naming an exception: pytest's `E   ValueError:
/// bad`, Python's closing `OSError: ...`, Java's leading
/// `java.lang.AssertionError: ...`.
fn last_exception_line(tb: &str) -> Option<&str> {
    tb.lines()
        .rev()
        .map(|l| {
            let l = l.trim();
            l.strip_prefix("E ").map_or(l, str::trim)
        })
        .find(|l| split_exception(l).0.is_some())
}

/// pytest's closing `path/to/test.py:12: ValueError`.
fn pytest_location(tb: &str) -> Option<(&str, &str)> {
    tb.lines().rev().map(str::trim).find_map(|l| {
        let (file, rest) = l.split_once(':')?;
        let (line, exc) = rest.split_once(':')?;
        (file.ends_with(".py") && line.chars().all(|c| c.is_ascii_digit()) && !line.is_empty())
            .then_some((file, exc.trim()))
    })
}

/// The frame where the failure happened, without line numbers.
fn top_frame(tb: &str) -> Option<String> {
    // Python: the last `File "x", line N, in f`.
    if let Some(f) = tb.lines().rev().find_map(|l| {
        let l = l.trim().strip_prefix("File \"")?;
        let (file, rest) = l.split_once('"')?;
        let func = rest.rsplit_once(" in ").map(|(_, f)| f.trim());
        Some(match func {
            Some(func) => format!("{file} in {func}"),
            None => file.to_string(),
        })
    }) {
        return Some(f);
    }
    // pytest: `tests/test_x.py:12: AssertionError`.
    if let Some((file, _)) = pytest_location(tb) {
        return Some(file.to_string());
    }
    for l in tb.lines().map(str::trim) {
        // Java/Kotlin: the first `at pkg.Class.method(File.java:12)`.
        if let Some(rest) = l.strip_prefix("at ")
            && let Some((method, _)) = rest.split_once('(')
            && !method.contains(' ')
        {
            return Some(method.to_string());
        }
        // JavaScript: `at fn (/path/file.js:3:9)` or `at /path/file.js:3:9`.
        // Rust: `panicked at src/lib.rs:10:5`. Go: `foo_test.go:12: ...`.
        if let Some(loc) = l
            .strip_prefix("at ")
            .map(|r| {
                r.rsplit_once('(')
                    .map_or(r, |(_, x)| x.trim_end_matches(')'))
            })
            .or_else(|| l.split_once("panicked at ").map(|(_, r)| r))
            .or(Some(l))
            && let Some(file) = source_location(loc)
        {
            return Some(file);
        }
    }
    None
}

/// `path/file.ext:12` or `path/file.ext:12:5` → `path/file.ext`, for source
/// file extensions only.
fn source_location(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches([',', ':']);
    let mut parts = s.split(':');
    let file = parts.next()?;
    let line = parts.next()?;
    let known = [
        ".go", ".rs", ".js", ".ts", ".mjs", ".cjs", ".tsx", ".jsx", ".java", ".kt", ".cpp", ".c",
        ".cs", ".rb",
    ];
    (known.iter().any(|e| file.ends_with(e))
        && !line.is_empty()
        && line.chars().all(|c| c.is_ascii_digit())
        && !file.contains(' '))
    .then(|| file.to_string())
}

/// Masks what varies between occurrences of one failure.
pub fn mask(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_MESSAGE + 8));
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if out.chars().count() >= MAX_MESSAGE {
            out.push('…');
            break;
        }
        // Temporary paths: up to whitespace or a quote.
        if let Some(p) = ["/tmp/", "/var/folders/", "/private/var/", "/var/tmp/"]
            .iter()
            .find(|p| rest.starts_with(*p))
        {
            let _ = p;
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | ')' | ',' | '>'))
                .unwrap_or(rest.len());
            out.push_str("<tmp>");
            rest = &rest[end..];
            continue;
        }
        // A word: hex address, UUID, long id, number, or a plain word.
        if c.is_ascii_alphanumeric() {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            out.push_str(&mask_word(word));
            rest = &rest[end..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if let Some((cut, _)) = out.char_indices().nth(MAX_MESSAGE) {
        out.truncate(cut);
        out.push('…');
    }
    out
}

fn mask_word(w: &str) -> String {
    let is_hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    if let Some(h) = w.strip_prefix("0x").filter(|h| is_hex(h)) {
        let _ = h;
        return "0x<hex>".into();
    }
    let groups: Vec<&str> = w.split('-').collect();
    if groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| is_hex(g))
    {
        return "<uuid>".into();
    }
    let digits = w.chars().filter(char::is_ascii_digit).count();
    if digits > 0 && digits == w.chars().filter(|c| *c != '_' && *c != '-').count() {
        return "<n>".into();
    }
    // Long tokens mixing letters and digits: ids, hashes, generated names.
    if w.len() >= 8 && digits > 0 && w.chars().any(|c| c.is_ascii_alphabetic()) {
        return "<id>".into();
    }
    // A word with a number glued on (`worker7`, `item_12`, `v2`): mask the
    // digits only.
    if digits > 0 {
        let mut s = String::with_capacity(w.len());
        let mut in_digits = false;
        for c in w.chars() {
            if c.is_ascii_digit() {
                if !in_digits {
                    s.push_str("<n>");
                }
                in_digits = true;
            } else {
                s.push(c);
                in_digits = false;
            }
        }
        return s;
    }
    w.to_string()
}
