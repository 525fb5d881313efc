//! Why a JUnit report could not be read: one [`JunitError`] variant per
//! refusal a caller (or a user reading the message) would handle
//! differently.
//!
//! Kept in its own file because every part of the reader refuses through
//! it. Each message names the problem with the file and what to do about
//! it; positions are byte offsets in the UTF-8 text read.

use std::io;
use std::path::PathBuf;

use super::MAX_DEPTH;

/// file and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    /// The file could not be opened or read.
    #[error(
        "cannot read report {}: {source}; check that the file exists and the agent may read it",
        path.display()
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Zero bytes, or only whitespace.
    #[error(
        "report is empty (0 bytes or only whitespace): the test runner probably crashed before writing it; look at its output for the reason"
    )]
    Empty,
    /// Not XML at all, or XML that is not well-formed.
    #[error(
        "report is not well-formed XML (at byte {position}: {detail}); check that the path names the runner's JUnit XML report and not a log or some other file"
    )]
    NotXml {
        /// Byte offset (in the UTF-8 text read) where the problem was found.
        position: u64,
        /// What is wrong.
        detail: String,
    },
    /// Well-formed XML whose root element is not `<testsuites>` / `<testsuite>`.
    #[error(
        "report is XML but not JUnit: its root element is <{root}>, expected <testsuites> or <testsuite>; point the agent at the runner's JUnit XML report (e.g. pytest --junitxml=FILE, Maven target/surefire-reports/TEST-*.xml)"
    )]
    NotJunit {
        /// The root element's name (cut to 100 bytes).
        root: String,
    },
    /// The input ended inside the document: unclosed elements, a cut tag,
    /// CDATA section or comment, or no root element after the prolog.
    #[error(
        "report ends unexpectedly at byte {position} ({detail}): the test runner was probably killed or crashed while writing it; rerun the tests, and raise the runner's timeout if it was killed"
    )]
    Truncated {
        /// Byte offset where the input ended or the cut construct started.
        position: u64,
        /// What was left open.
        detail: String,
    },
    /// Larger than [`MAX_REPORT_BYTES`](super::MAX_REPORT_BYTES).
    #[error(
        "report is {size} bytes, over the limit of {limit} bytes: split the run into several reports or keep less captured output in it (pytest: -o junit_logging=no)"
    )]
    TooLarge {
        /// The size seen (for a file growing while read: the bytes read so far).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More than [`MAX_REPORT_CASES`](super::MAX_REPORT_CASES) test cases.
    #[error(
        "report has more than {limit} test cases: split the run into several reports (one per shard or package)"
    )]
    TooManyCases {
        /// The limit.
        limit: usize,
    },
    /// Elements nested deeper than [`MAX_DEPTH`].
    #[error(
        "report nests elements {depth} levels deep, over the limit of {MAX_DEPTH}: no test runner writes such a file; check where it came from"
    )]
    TooDeep {
        /// The depth reached.
        depth: usize,
    },
    /// A `<!DOCTYPE>` declaring entities: refused, never expanded.
    #[error(
        "report declares XML entities in a <!DOCTYPE>: refused without expanding them (this is how 'billion laughs' attacks exhaust memory) and no test runner writes one; check where the file came from"
    )]
    Entity,
    /// An `&name;` reference to an entity XML does not predefine.
    #[error(
        "report uses the undefined entity reference &{name}; at byte {position}: XML predefines only &lt; &gt; &amp; &quot; &apos; (plus numeric references like &#10;); the reporter wrote invalid XML, fix or replace it"
    )]
    UnknownEntity {
        /// The entity name.
        name: String,
        /// Byte offset near the reference.
        position: u64,
    },
}
