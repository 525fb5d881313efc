//! Shared pieces of the property-based fuzz targets (the wire decoder,
//! the JUnit parser, ingest): the proptest configuration every target uses
//! and byte-level edits of a valid input. Each target keeps its own
//! strategies (which snippets to splice in, how often), since those are
//! what it is about.

use proptest::sample::Index;
use proptest::test_runner::Config;

/// `default_cases`, unless `PROPTEST_CASES` asks for another count (a
/// longer run). A failure prints its shrunk input; it is not persisted to a
/// file in the tree (fixed bugs get a named regression test instead).
pub fn config(default_cases: u32) -> Config {
    let from_env = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_some() {
        from_env
    } else {
        Config {
            cases: default_cases,
            ..from_env
        }
    }
}

/// One edit of a byte string, at a position chosen by an [`Index`] (so it
/// shrinks and always lands inside the input).
#[derive(Debug, Clone)]
pub enum ByteEdit {
    /// Overwrite one byte.
    Flip(Index, u8),
    /// Cut the input there.
    Truncate(Index),
    /// Insert these bytes there.
    Splice(Index, Vec<u8>),
    /// Remove up to this many bytes from there.
    Delete(Index, usize),
    /// Repeat up to this many bytes from there right after them.
    Duplicate(Index, usize),
}

impl ByteEdit {
    /// Applies the edit to `bytes`.
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
        match self {
            ByteEdit::Flip(i, b) => {
                if !bytes.is_empty() {
                    let p = at(i, bytes.len());
                    bytes[p] = *b;
                }
            }
            ByteEdit::Truncate(i) => {
                let p = at(i, bytes.len());
                bytes.truncate(p);
            }
            ByteEdit::Splice(i, s) => {
                let p = at(i, bytes.len() + 1);
                bytes.splice(p..p, s.iter().copied());
            }
            ByteEdit::Delete(i, n) => {
                let p = at(i, bytes.len());
                let end = (p + n).min(bytes.len());
                bytes.drain(p..end);
            }
            ByteEdit::Duplicate(i, n) => {
                let p = at(i, bytes.len());
                let end = (p + n).min(bytes.len());
                let copy = bytes[p..end].to_vec();
                bytes.splice(end..end, copy);
            }
        }
    }
}
