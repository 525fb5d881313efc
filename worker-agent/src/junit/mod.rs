//! Reading JUnit XML reports into the wire's [`TestCase`]s.
//!
//! The agent learns what happened in a test run from the JUnit XML file(s)
//! the runner wrote; this module turns such a file into a [`Report`]: one
//! [`TestCase`] per `<testcase>` element, the number of suites, the earliest
//! suite timestamp and a hint at which runner wrote it.
//!
//! # Dialects
//!
//! One streaming reader handles the dialects seen in the wild:
//! - pytest (`xunit1` and `xunit2` families): xfail is
//!   `<skipped type="pytest.xfail">`; a test that fails and then errors in
//!   teardown appears as two `<testcase>` elements with the same name.
//! - Maven Surefire / Gradle / JUnit 5: `<flakyFailure>` / `<flakyError>`
//!   (passed on a retry), `<rerunFailure>` / `<rerunError>` (never passed).
//! - cargo-nextest, Go (go-junit-report, gotestsum), jest-junit,
//!   mocha-junit-reporter, xUnit.net, Catch2, CUnit, Bazel, tst, ScalaTest.
//! - PHPUnit and others that nest `<testsuite>` inside `<testsuite>`.
//! - Node's `--test-reporter=junit`, which puts `<testcase>` directly under
//!   `<testsuites>` and writes its totals only in XML comments.
//!
//! The root element must be `<testsuites>` or `<testsuite>`. `<properties>`,
//! comments, processing instructions and the XML declaration are ignored.
//!
//! # Rules
//!
//! - **Counts come from `<testcase>` elements**, never from the `tests=`,
//!   `failures=`, ... attributes (pytest 9 subtests, go-junit-report and
//!   others make those disagree with the file). Every `<testcase>` whose
//!   ancestors are all `<testsuite>` / `<testsuites>` is one case (one
//!   nested in another testcase or in `<properties>` is not), even when
//!   several share a name: pytest's fail-then-teardown-error pair, or tools
//!   that write each retry as its own element (`flaky_retries`), stay
//!   separate cases, so the counts always equal the file.
//! - **Outcome**, from the testcase's direct children, strongest first:
//!   `<error>` → [`Outcome::Error`]; `<failure>` → [`Outcome::Failed`];
//!   only `<rerunFailure>` / `<rerunError>` (no final failure or error) →
//!   [`Outcome::Failed`]; `<skipped type="pytest.xfail">` →
//!   [`Outcome::Xfailed`]; other `<skipped>` → [`Outcome::Skipped`]; no such
//!   child but `status="disabled"`, `"notrun"` or `"skipped"` (tst, gtest) →
//!   [`Outcome::Skipped`]; otherwise [`Outcome::Passed`]. So when a testcase
//!   holds both `<failure>` and `<error>`, **error wins**: something broke
//!   beyond the assertion (typically teardown), which is the louder signal.
//!   pytest writes a non-strict XPASS as a plain pass and a strict one as
//!   `<failure message="[XPASS(strict)] ...">`; they stay Passed / Failed so
//!   the counts equal the file ([`Outcome::Xpassed`] is never produced here).
//! - **Retries**: `<flakyFailure>` / `<flakyError>` mean the test passed after
//!   failed attempts: the outcome stays Passed, `flaky = true`, `retries` =
//!   the number of those elements. `<rerunFailure>` / `<rerunError>` mean it
//!   never passed: `retries` = their number, the outcome comes from the main
//!   `<failure>` / `<error>`. A flaky test's failure text is not kept (it
//!   passed; message and traceback describe the final outcome only).
//! - **Message** is the `message` attribute of the deciding element (first of
//!   its kind), else the first non-blank line of its text. **Traceback** is
//!   the text (CDATA included) of every element of the deciding kind, joined
//!   by a blank line. **Output** is every `<system-out>` / `<system-err>`
//!   inside the testcase (suite-level ones are ignored), joined. All three
//!   are capped ([`MAX_MESSAGE_BYTES`], [`MAX_TRACEBACK_BYTES`],
//!   [`MAX_OUTPUT_BYTES`]) with the marker of [`schema::truncate_marked`];
//!   text beyond a cap is counted, not buffered. A case failed only by
//!   rerun elements takes its message and traceback from them.
//! - **test_id** is `classname::name` when classname is non-empty, else
//!   `file::name` when a file is known (the testcase's `file`, else the
//!   nearest enclosing suite's), else `name`; parameters are kept verbatim;
//!   an empty name becomes `(unnamed)`. Ids and names are capped so they
//!   stay within [`MAX_TEST_ID_BYTES`] including the marker.
//! - **Durations** (`time`, always taken as seconds: a runner writing
//!   milliseconds cannot be told apart) accept locale separators (`0,03`,
//!   `2,120.532`, `1.234,5`); missing, unparseable, negative or non-finite
//!   values become 0.0, never an error. **Timestamps** may be naive (taken as UTC), `Z`,
//!   with an offset, with fractional seconds, or a bare date; unparseable
//!   ones are ignored.
//!
//! # Guarantees
//!
//! - Never panics, whatever the input; every refusal is a [`JunitError`]
//!   whose message names the problem and what to do about it.
//! - Streams: events are read one at a time from a buffered reader; no DOM
//!   is built. Memory is the cases kept plus the largest single text node.
//!   Files over [`MAX_REPORT_BYTES`] are refused, nesting deeper than
//!   [`MAX_DEPTH`] is refused.
//! - No entity expansion: a `<!DOCTYPE>` that declares entities is refused
//!   ([`JunitError::Entity`]), and only the five predefined entities and
//!   character references are resolved; any other `&name;` is an error.
//! - Invalid UTF-8 never fails a report: bad bytes become U+FFFD. UTF-16
//!   (with a BOM or detectable `<?` prefix) and ISO-8859-1 / windows-1252
//!   (named in the XML declaration) are transcoded.
//!
//! # Layout
//! - this file: the public API ([`parse_file`], [`parse_bytes`], [`merge`],
//!   [`Report`]) and the limits;
//! - `error`: [`JunitError`], every refusal;
//! - `encoding`: transcoding the bytes to UTF-8 and counting them;
//! - `reader`: the streaming XML reader (elements, text, errors);
//! - `case`: one `<testcase>` and its result children to a [`TestCase`];
//! - `attrs`: attribute values (durations, timestamps);
//! - `text`: capped text buffers and id caps.
//!
//! [`Outcome::Error`]: schema::Outcome::Error
//! [`Outcome::Failed`]: schema::Outcome::Failed
//! [`Outcome::Xfailed`]: schema::Outcome::Xfailed
//! [`Outcome::Skipped`]: schema::Outcome::Skipped
//! [`Outcome::Passed`]: schema::Outcome::Passed
//! [`Outcome::Xpassed`]: schema::Outcome::Xpassed
//! [`MAX_MESSAGE_BYTES`]: schema::MAX_MESSAGE_BYTES
//! [`MAX_TRACEBACK_BYTES`]: schema::MAX_TRACEBACK_BYTES
//! [`MAX_OUTPUT_BYTES`]: schema::MAX_OUTPUT_BYTES
//! [`MAX_TEST_ID_BYTES`]: schema::MAX_TEST_ID_BYTES

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use chrono::{DateTime, Utc};
use ptp_nats::schema::{self, TestCase};

mod attrs;
mod case;
mod encoding;
mod error;
mod reader;
mod text;

pub use error::JunitError;
use reader::parse_stream;

/// Largest report read, in bytes; larger files are refused with
/// [`JunitError::TooLarge`].
pub const MAX_REPORT_BYTES: u64 = 256 * 1024 * 1024;

/// Most test cases read from one report: a report of bare `<testcase/>`
/// elements costs ~25 bytes of memory per byte of XML (each case is a
/// struct with its own strings), so the byte limit alone would let a
/// hostile 256 MB file take ~6 GB. At this many cases the agent holds at
/// most a few hundred MB; more are refused with
/// [`JunitError::TooManyCases`]. Real suites stay far below (the largest
/// seen have a few hundred thousand tests).
pub const MAX_REPORT_CASES: usize = 1_000_000;

/// Deepest element nesting accepted (the root element is depth 1); deeper
/// documents are refused with [`JunitError::TooDeep`].
pub const MAX_DEPTH: usize = 64;

/// What one JUnit XML file (or several, [`merge`]d) says about a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// One case per `<testcase>` element, in document order.
    pub cases: Vec<TestCase>,
    /// Number of `<testsuite>` elements, nested ones included.
    pub suites: usize,
    /// The earliest `timestamp` of any `<testsuite>` / `<testsuites>`.
    pub timestamp: Option<DateTime<Utc>>,
    /// The runner the file looks like it came from, when it says so:
    /// `"pytest"` (a `<testsuite name="pytest">`), or from the default
    /// `<testsuites name=...>` of jest-junit (`"jest"`), mocha-junit-reporter
    /// (`"mocha"`) and cargo-nextest (`"nextest"`). `None` otherwise.
    pub runner_hint: Option<String>,
    /// The `line` attribute of each case (pytest's xunit1 family, PHPUnit,
    /// ...), by the case's index in [`Report::cases`]; `None` where absent.
    /// Not on the wire: it only places annotations.
    pub lines: Vec<Option<u32>>,
}

impl Report {
    /// Counts the cases by outcome.
    pub fn counts(&self) -> schema::Counts {
        schema::Counts::of(&self.cases)
    }
}

/// Parses a report held in memory.
pub fn parse_bytes(bytes: &[u8]) -> Result<Report, JunitError> {
    let size = bytes.len() as u64;
    if size > MAX_REPORT_BYTES {
        return Err(JunitError::TooLarge {
            size,
            limit: MAX_REPORT_BYTES,
        });
    }
    parse_stream(bytes, Path::new("<memory>"), MAX_REPORT_BYTES)
}

/// Parses a report file: checks its size first (refusing more than
/// [`MAX_REPORT_BYTES`]), then streams it through a buffered reader.
pub fn parse_file(path: &Path) -> Result<Report, JunitError> {
    let io_err = |source| JunitError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.is_dir() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a directory, not a file",
        )));
    }
    if meta.len() > MAX_REPORT_BYTES {
        return Err(JunitError::TooLarge {
            size: meta.len(),
            limit: MAX_REPORT_BYTES,
        });
    }
    // A FIFO or /proc file reports 0 bytes but may have content: only trust
    // the size of regular files.
    if meta.is_file() && meta.len() == 0 {
        return Err(JunitError::Empty);
    }
    let file = File::open(path).map_err(io_err)?;
    parse_stream(
        BufReader::with_capacity(CHUNK, file),
        path,
        MAX_REPORT_BYTES,
    )
}

/// Merges several reports (one per file) into one: cases concatenated in
/// order, suites summed, the earliest timestamp, and the runner hint when
/// every report that has one agrees (else `None`).
pub fn merge(reports: Vec<Report>) -> Report {
    let mut out = Report::default();
    let mut hint: Option<Option<String>> = None;
    for r in reports {
        if out.cases.is_empty() {
            out.cases = r.cases;
            out.lines = r.lines;
        } else {
            out.cases.extend(r.cases);
            out.lines.extend(r.lines);
        }
        out.suites += r.suites;
        out.timestamp = earliest(out.timestamp, r.timestamp);
        if let Some(h) = r.runner_hint {
            hint = match hint {
                None => Some(Some(h)),
                Some(Some(prev)) if prev == h => Some(Some(prev)),
                Some(_) => Some(None),
            };
        }
    }
    out.runner_hint = hint.flatten();
    out
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Bytes decoded per refill of the transcoder.
const CHUNK: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::attrs::{parse_duration, parse_timestamp};
    use super::text::Capped;
    use super::*;
    use chrono::TimeZone;
    use ptp_nats::schema::{
        MAX_MESSAGE_BYTES, MAX_OUTPUT_BYTES, MAX_TEST_ID_BYTES, MAX_TRACEBACK_BYTES, Outcome,
    };
    use std::io::BufRead;
    use std::io::{Read, Write};

    fn parse(xml: &str) -> Report {
        parse_bytes(xml.as_bytes()).unwrap_or_else(|e| panic!("parse failed: {e}\n{xml}"))
    }

    fn err(xml: &[u8]) -> JunitError {
        match parse_bytes(xml) {
            Ok(r) => panic!("expected an error, got {} cases", r.cases.len()),
            Err(e) => e,
        }
    }

    fn outcomes(r: &Report) -> Vec<Outcome> {
        r.cases.iter().map(|c| c.outcome).collect()
    }

    #[test]
    fn pytest_outcomes_and_xfail() {
        let r = parse(
            r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="2" skipped="2" tests="99" time="1.5" timestamp="2024-05-01T10:00:00.123456" hostname="h">
  <testcase classname="tests.test_a" name="test_pass" time="0.001"/>
  <testcase classname="tests.test_a" name="test_fail" time="0.002"><failure message="assert 1 == 2">def test_fail():
&gt;       assert 1 == 2
E       assert 1 == 2</failure></testcase>
  <testcase classname="tests.test_a" name="test_skip" time="0"><skipped type="pytest.skip" message="not on linux">tests/test_a.py:9: not on linux</skipped></testcase>
  <testcase classname="tests.test_a" name="test_xfail" time="0"><skipped type="pytest.xfail" message="known bug"/></testcase>
  <testcase classname="tests.test_a" name="test_xpass" time="0"/>
  <testcase classname="tests.test_a" name="test_xpass_strict" time="0"><failure message="[XPASS(strict)] known bug"/></testcase>
</testsuite></testsuites>"#,
        );
        use Outcome::*;
        assert_eq!(
            outcomes(&r),
            [Passed, Failed, Skipped, Xfailed, Passed, Failed]
        );
        assert_eq!(r.suites, 1);
        assert_eq!(r.runner_hint.as_deref(), Some("pytest"));
        let c = r.counts();
        assert_eq!(
            (c.total, c.passed, c.failed, c.skipped, c.xfailed),
            (6, 2, 2, 1, 1)
        );
        let fail = &r.cases[1];
        assert_eq!(fail.test_id, "tests.test_a::test_fail");
        assert_eq!(fail.classname.as_deref(), Some("tests.test_a"));
        assert_eq!(fail.message.as_deref(), Some("assert 1 == 2"));
        assert_eq!(
            fail.traceback.as_deref(),
            Some("def test_fail():\n>       assert 1 == 2\nE       assert 1 == 2")
        );
        assert_eq!(fail.duration_secs, 0.002);
        assert_eq!(r.cases[3].message.as_deref(), Some("known bug"));
        assert_eq!(
            r.cases[5].message.as_deref(),
            Some("[XPASS(strict)] known bug")
        );
    }

    #[test]
    fn fail_then_teardown_error_stays_two_cases() {
        let r = parse(
            r#"<testsuites><testsuite name="pytest">
  <testcase classname="t.test_m" name="test_x" time="0.1"><failure message="assert False">boom</failure></testcase>
  <testcase classname="t.test_m" name="test_x" time="0.2"><error message="failed on teardown with &quot;RuntimeError&quot;">teardown boom</error></testcase>
</testsuite></testsuites>"#,
        );
        assert_eq!(r.cases.len(), 2);
        assert_eq!(outcomes(&r), [Outcome::Failed, Outcome::Error]);
        assert_eq!(r.cases[0].test_id, r.cases[1].test_id);
        assert_eq!(
            r.cases[1].message.as_deref(),
            Some("failed on teardown with \"RuntimeError\"")
        );
    }

    #[test]
    fn error_wins_over_failure_and_skip() {
        let r = parse(
            r#"<testsuite><testcase name="a"><skipped/><failure message="f">F</failure><error message="e">E1</error><error>E2</error></testcase>
<testcase name="b"><skipped/><failure message="f"/></testcase></testsuite>"#,
        );
        assert_eq!(outcomes(&r), [Outcome::Error, Outcome::Failed]);
        assert_eq!(r.cases[0].message.as_deref(), Some("e"));
        // Every element of the deciding kind contributes to the traceback.
        assert_eq!(r.cases[0].traceback.as_deref(), Some("E1\n\nE2"));
    }

    #[test]
    fn node_test_runner_shape() {
        let r = parse(
            r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites>
	<testcase name="top level" time="0.000512" classname="test"/>
	<testsuite name="math" time="0.0011" disabled="0" errors="0" tests="3" failures="1" skipped="1" hostname="box">
		<testcase name="adds" time="0.0001" classname="test"/>
		<testcase name="subtracts" time="0.0002" classname="test">
			<failure type="testCodeFailure" message="Expected values to be strictly equal:&#10;&#10;1 !== 2&#10;">AssertionError [ERR_ASSERTION]: Expected values to be strictly equal:

1 !== 2

    at TestContext.&lt;anonymous&gt; (file:///x/test.mjs:9:10)</failure>
		</testcase>
		<testcase name="later" time="0.00001" classname="test">
			<skipped type="todo" message="TODO"/>
		</testcase>
	</testsuite>
	<!-- tests 4 -->
	<!-- suites 1 -->
	<!-- pass 2 -->
	<!-- fail 1 -->
	<!-- skipped 0 -->
	<!-- todo 1 -->
</testsuites>"#,
        );
        use Outcome::*;
        assert_eq!(outcomes(&r), [Passed, Passed, Failed, Skipped]);
        assert_eq!(r.suites, 1);
        assert_eq!(r.cases[0].test_id, "test::top level");
        assert_eq!(
            r.cases[2].message.as_deref(),
            Some("Expected values to be strictly equal:\n\n1 !== 2")
        );
        assert!(
            r.cases[2]
                .traceback
                .as_deref()
                .is_some_and(|t| t.contains("TestContext.<anonymous>"))
        );
        assert_eq!(r.runner_hint, None);
    }

    #[test]
    fn nested_suites_count_every_level() {
        let r = parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="Project" tests="3" file="">
    <testsuite name="Unit" file="/src/tests/Unit/MathTest.php" tests="2">
      <testsuite name="MathTest::testAdd" tests="2">
        <testcase name="testAdd with data set #0" class="MathTest" classname="MathTest" file="/src/tests/Unit/MathTest.php" line="12" assertions="1" time="0,003"/>
        <testcase name="testAdd with data set #1" assertions="1" time="0.004"><failure type="PHPUnit\Framework\ExpectationFailedException">Failed asserting that 3 matches expected 4.</failure></testcase>
      </testsuite>
    </testsuite>
    <testcase name="loose" time="1"/>
  </testsuite>
</testsuites>"#,
        );
        assert_eq!(r.suites, 3);
        assert_eq!(r.cases.len(), 3);
        assert_eq!(r.cases[0].duration_secs, 0.003);
        // No classname: the nearest suite's file names the test.
        assert_eq!(
            r.cases[1].test_id,
            "/src/tests/Unit/MathTest.php::testAdd with data set #1"
        );
        assert_eq!(
            r.cases[1].message.as_deref(),
            Some("Failed asserting that 3 matches expected 4.")
        );
        assert_eq!(r.cases[2].test_id, "loose");
        assert_eq!(r.cases[2].file, None);
    }

    #[test]
    fn root_testsuite_and_empty_roots() {
        let r = parse(r#"<testsuite name="x"><testcase name="a"/></testsuite>"#);
        assert_eq!((r.suites, r.cases.len()), (1, 1));
        let r = parse("<testsuites/>");
        assert_eq!((r.suites, r.cases.len()), (0, 0));
        let r = parse(r#"<testsuite name="go" tests="0"></testsuite>"#);
        assert_eq!((r.suites, r.cases.len()), (1, 0));
    }

    #[test]
    fn counts_come_from_elements_not_attributes() {
        let r = parse(
            r#"<testsuites tests="10" failures="5"><testsuite tests="7" failures="3" errors="2" skipped="1">
<testcase name="only"/></testsuite></testsuites>"#,
        );
        assert_eq!(r.counts().total, 1);
        assert_eq!(r.counts().passed, 1);
    }

    #[test]
    fn properties_comments_and_pis_are_ignored() {
        let r = parse(
            r#"<?xml version="1.0"?><?xml-stylesheet href="x.xsl"?><!-- hi -->
<testsuites><testsuite><properties><property name="testcase" value="x"/><testcase name="not a case"/></properties>
<!-- <testcase name="commented"/> --><?pi stuff?>
<testcase name="real"><properties><property name="a" value="b"/></properties></testcase>
</testsuite></testsuites><!-- trailing -->
"#,
        );
        assert_eq!(r.cases.len(), 1);
        assert_eq!(r.cases[0].name, "real");
        assert_eq!(r.cases[0].outcome, Outcome::Passed);
    }

    #[test]
    fn surefire_flaky_and_rerun() {
        let r = parse(
            r#"<testsuite name="S">
  <testcase name="flaky" classname="C"><flakyFailure message="m1" type="AssertionError"><stackTrace>trace 1</stackTrace><system-err>err 1</system-err></flakyFailure><flakyError message="m2"><stackTrace>trace 2</stackTrace></flakyError></testcase>
  <testcase name="never" classname="C"><failure message="final">final trace</failure><rerunFailure message="r1"><stackTrace>r1</stackTrace></rerunFailure><rerunFailure message="r2"/></testcase>
  <testcase name="rerun-only" classname="C"><rerunError message="re"><stackTrace>re trace</stackTrace></rerunError></testcase>
  <testcase name="plain" classname="C"/>
</testsuite>"#,
        );
        let c = &r.cases;
        assert_eq!(
            (c[0].outcome, c[0].flaky, c[0].retries),
            (Outcome::Passed, true, 2)
        );
        assert_eq!(
            (c[0].message.as_deref(), c[0].traceback.as_deref()),
            (None, None)
        );
        assert_eq!(c[0].output.as_deref(), Some("err 1"));
        assert_eq!(
            (c[1].outcome, c[1].flaky, c[1].retries),
            (Outcome::Failed, false, 2)
        );
        assert_eq!(c[1].message.as_deref(), Some("final"));
        assert_eq!(c[1].traceback.as_deref(), Some("final trace"));
        assert_eq!(
            (c[2].outcome, c[2].flaky, c[2].retries),
            (Outcome::Failed, false, 1)
        );
        assert_eq!(c[2].message.as_deref(), Some("re"));
        assert_eq!(c[2].traceback.as_deref(), Some("re trace"));
        assert_eq!(
            (c[3].outcome, c[3].flaky, c[3].retries),
            (Outcome::Passed, false, 0)
        );
    }

    #[test]
    fn repeated_testcases_stay_separate() {
        // mikepenz flaky_retries style: each attempt is its own element.
        let r = parse(
            r#"<testsuite><testcase classname="m.T" name="t"><failure message="1st"/></testcase>
<testcase classname="m.T" name="t"><error message="2nd"/></testcase><testcase classname="m.T" name="t"/></testsuite>"#,
        );
        assert_eq!(
            outcomes(&r),
            [Outcome::Failed, Outcome::Error, Outcome::Passed]
        );
        assert!(r.cases.iter().all(|c| !c.flaky && c.retries == 0));
    }

    #[test]
    fn disabled_status_is_skipped_unless_a_child_says_otherwise() {
        let r = parse(
            r#"<testsuites><testsuite><testcase name="d" status="disabled"/><testcase name="n" status="notrun"/>
<testcase name="f" status="disabled"><failure>x</failure></testcase><testcase name="r" status="run"/></testsuite></testsuites>"#,
        );
        use Outcome::*;
        assert_eq!(outcomes(&r), [Skipped, Skipped, Failed, Passed]);
    }

    #[test]
    fn test_ids_keep_parameters_exactly() {
        let r = parse(
            r#"<testsuite>
<testcase classname="tests.test_p" name="test_x[a-&quot;b&quot;]"/>
<testcase classname="tests.test_p" name="test_u[αβ-日本-🙂]"/>
<testcase classname="tests.test_p" name="test_b[[1, 2]-{'k': &apos;v&apos;}-&lt;&gt;&amp;]"/>
<testcase classname="" file="tests/test_f.py" name="test_f[1]"/>
<testcase name="bare"/>
<testcase classname="C"/>
<testcase/>
</testsuite>"#,
        );
        let ids: Vec<&str> = r.cases.iter().map(|c| c.test_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "tests.test_p::test_x[a-\"b\"]",
                "tests.test_p::test_u[αβ-日本-🙂]",
                "tests.test_p::test_b[[1, 2]-{'k': 'v'}-<>&]",
                "tests/test_f.py::test_f[1]",
                "bare",
                "C::(unnamed)",
                "(unnamed)",
            ]
        );
        assert_eq!(r.cases[3].classname, None);
        assert_eq!(r.cases[3].file.as_deref(), Some("tests/test_f.py"));
        assert_eq!(r.cases[6].name, "(unnamed)");
    }

    #[test]
    fn durations_with_locale_commas() {
        for (raw, want) in [
            ("0.03", 0.03),
            ("0,03", 0.03),
            ("2,120.532", 2120.532),
            ("1.234,5", 1234.5),
            ("1,234,567", 1234567.0),
            ("1.234.567", 1234567.0),
            (" 12 ", 12.0),
            ("1.4e-05", 0.000014),
            ("", 0.0),
            ("abc", 0.0),
            ("-1", 0.0),
            ("NaN", 0.0),
            ("inf", 0.0),
            ("<<computed>>", 0.0),
        ] {
            assert_eq!(parse_duration(raw), want, "{raw:?}");
        }
        let r = parse(
            r#"<testsuite><testcase name="a" time="0,5"/><testcase name="b" time="x"/><testcase name="c" time="-3"/></testsuite>"#,
        );
        let d: Vec<f64> = r.cases.iter().map(|c| c.duration_secs).collect();
        assert_eq!(d, [0.5, 0.0, 0.0]);
    }

    #[test]
    fn timestamps_in_every_shape() {
        let at = |y, mo, d, h, mi, s| Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single();
        assert_eq!(
            parse_timestamp("2023-01-01T10:00:00"),
            at(2023, 1, 1, 10, 0, 0)
        );
        assert_eq!(
            parse_timestamp("2023-01-01T10:00:00Z"),
            at(2023, 1, 1, 10, 0, 0)
        );
        assert_eq!(
            parse_timestamp("2023-01-01T12:00:00+02:00"),
            at(2023, 1, 1, 10, 0, 0)
        );
        assert_eq!(
            parse_timestamp("2023-01-01T12:00:00+0200"),
            at(2023, 1, 1, 10, 0, 0)
        );
        assert_eq!(
            parse_timestamp("2023-01-01 10:00:00"),
            at(2023, 1, 1, 10, 0, 0)
        );
        assert_eq!(parse_timestamp("2023-01-01"), at(2023, 1, 1, 0, 0, 0));
        let frac = parse_timestamp("2020-09-04T16:18:04.966371").map(|t| t.timestamp_micros());
        assert_eq!(
            frac,
            at(2020, 9, 4, 16, 18, 4).map(|t| t.timestamp_micros() + 966_371)
        );
        assert!(parse_timestamp("2024-12-02T20:06:10.512+00:00").is_some());
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp(""), None);
        assert_eq!(parse_timestamp("2023-13-45T99:00:00"), None);

        // The report keeps the earliest suite timestamp.
        let r = parse(
            r#"<testsuites timestamp="garbage"><testsuite timestamp="2023-01-01T10:00:00"/><testsuite timestamp="2023-01-01T09:30:00+00:00"/><testsuite timestamp="2023-01-02"/></testsuites>"#,
        );
        assert_eq!(r.timestamp, at(2023, 1, 1, 9, 30, 0));
        assert_eq!(parse("<testsuite/>").timestamp, None);
    }

    #[test]
    fn billion_laughs_is_refused() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ELEMENT lolz (#PCDATA)>
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<testsuites><testsuite><testcase name="&lol9;"/></testsuite></testsuites>"#;
        assert!(matches!(err(xml.as_bytes()), JunitError::Entity));
        // External entities (XXE) too.
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE t [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><testsuite><testcase name="&xxe;"/></testsuite>"#;
        assert!(matches!(err(xxe.as_bytes()), JunitError::Entity));
        // A DOCTYPE without entities is harmless.
        let r = parse(r#"<!DOCTYPE testsuite><testsuite><testcase name="a"/></testsuite>"#);
        assert_eq!(r.cases.len(), 1);
    }

    #[test]
    fn unknown_entities_are_errors() {
        let e = err(br#"<testsuite><testcase name="a"><failure>x &nbsp; y</failure></testcase></testsuite>"#);
        assert!(
            matches!(&e, JunitError::UnknownEntity { name, .. } if name == "nbsp"),
            "{e:?}"
        );
        let e = err(br#"<testsuite><testcase name="a &lol9; b"/></testsuite>"#);
        assert!(
            matches!(&e, JunitError::UnknownEntity { name, .. } if name == "lol9"),
            "{e:?}"
        );
        // Character references are fine, in text and attributes.
        let r = parse(
            r#"<testsuite><testcase name="a&#x20;b&#65;"><failure message="l1&#10;l2">&#x1F642;&#10;</failure></testcase></testsuite>"#,
        );
        assert_eq!(r.cases[0].name, "a bA");
        assert_eq!(r.cases[0].message.as_deref(), Some("l1\nl2"));
        assert_eq!(r.cases[0].traceback.as_deref(), Some("🙂"));
        assert!(matches!(
            err(br#"<testsuite><testcase name="a"><failure>&#0;</failure></testcase></testsuite>"#),
            JunitError::NotXml { .. }
        ));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let depth = 10_000;
        let mut xml = String::from("<testsuites>");
        for _ in 0..depth {
            xml.push_str("<testsuite>");
        }
        for _ in 0..depth {
            xml.push_str("</testsuite>");
        }
        xml.push_str("</testsuites>");
        assert!(matches!(
            err(xml.as_bytes()),
            JunitError::TooDeep { depth } if depth == MAX_DEPTH + 1
        ));
        // Exactly MAX_DEPTH is fine.
        let mut ok = String::new();
        for _ in 0..MAX_DEPTH - 1 {
            ok.push_str("<testsuite>");
        }
        ok.push_str("<testcase/>");
        for _ in 0..MAX_DEPTH - 1 {
            ok.push_str("</testsuite>");
        }
        assert_eq!(parse(&ok).cases.len(), 1);
        // Deep junk inside a testcase counts too.
        let mut junk = String::from("<testsuite><testcase name='a'>");
        for _ in 0..100 {
            junk.push_str("<x>");
        }
        assert!(matches!(err(junk.as_bytes()), JunitError::TooDeep { .. }));
    }

    #[test]
    fn truncated_reports() {
        let full = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"><testcase classname="a" name="b"><failure message="m"><![CDATA[trace]]></failure></testcase></testsuite></testsuites>"#;
        // Cut at every byte: never a panic, always Truncated.
        for n in 1..full.len() {
            let e = err(&full.as_bytes()[..n]);
            assert!(
                matches!(e, JunitError::Truncated { .. }),
                "cut at {n} ({:?}): {e:?}",
                &full[..n]
            );
        }
        assert!(parse_bytes(full.as_bytes()).is_ok());
        assert!(matches!(
            err(br#"<?xml version="1.0"?>"#),
            JunitError::Truncated { .. }
        ));
        assert!(matches!(
            err(b"<testsuites><testsuite>"),
            JunitError::Truncated { .. }
        ));
    }

    #[test]
    fn empty_reports() {
        for input in [
            &b""[..],
            b"   \n\t\r\n",
            b"\xEF\xBB\xBF",
            b"\xEF\xBB\xBF  \n",
        ] {
            assert!(matches!(err(input), JunitError::Empty), "{input:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.xml");
        std::fs::write(&path, b"").expect("write");
        assert!(matches!(parse_file(&path), Err(JunitError::Empty)));
        let msg = JunitError::Empty.to_string();
        assert!(msg.contains("crashed before writing"), "{msg}");
    }

    #[test]
    fn not_xml() {
        for input in [
            &b"Traceback (most recent call last):\n  File \"x.py\", line 1\nSyntaxError"[..],
            b"{\"tests\": 3}",
            b"hello < world",
            b"\x00\x01\x02\xff\xfe garbage",
            b"<testsuite></testcase>",
            b"<testsuite a=b/>",
            b"<testsuite><testcase name='a' name='b'/></testsuite>",
            b"<!x><testsuite/>",
            b"<testsuite><!x></testsuite>",
            b"<testsuite>a &amp b <testcase/></testsuite>",
        ] {
            let e = err(input);
            assert!(matches!(e, JunitError::NotXml { .. }), "{input:?}: {e:?}");
        }
        // Two documents in one file.
        let e = err(b"<?xml version='1.0'?><testsuite/>\n<?xml version='1.0'?><testsuite/>");
        assert!(
            matches!(&e, JunitError::NotXml { detail, .. } if detail.contains("second root")),
            "{e:?}"
        );
        let e = err(b"<testsuite/> trailing words");
        assert!(matches!(e, JunitError::NotXml { .. }), "{e:?}");
    }

    #[test]
    fn other_xml_is_not_junit() {
        let pom = br#"<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion><artifactId>x</artifactId></project>"#;
        assert!(matches!(err(pom), JunitError::NotJunit { root } if root == "project"));
        let html =
            b"<!DOCTYPE html>\n<html><head><title>Test Report</title></head><body></body></html>";
        assert!(matches!(err(html), JunitError::NotJunit { root } if root == "html"));
        let e = err(b"<suites><suite/></suites>");
        assert!(e.to_string().contains("<suites>"), "{e}");
        assert!(
            e.to_string()
                .contains("expected <testsuites> or <testsuite>"),
            "{e}"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let mut xml = b"<testsuite><testcase classname=\"c\" name=\"t\xff\xfe\"><failure message=\"bad \xc3\x28 byte\">trace \xe2\x82 end</failure><system-out>\xf0\x9f\x99\x82 ok \x80</system-out></testcase></testsuite>".to_vec();
        let r = parse_bytes(&xml).expect("lossy");
        let c = &r.cases[0];
        assert_eq!(c.name, "t\u{FFFD}\u{FFFD}");
        assert_eq!(c.message.as_deref(), Some("bad \u{FFFD}( byte"));
        assert_eq!(c.traceback.as_deref(), Some("trace \u{FFFD} end"));
        assert_eq!(c.output.as_deref(), Some("🙂 ok \u{FFFD}"));
        // A multi-byte character split across the transcoder's chunks survives.
        xml.clear();
        xml.extend_from_slice(b"<testsuite><!-- ");
        let head = b" --><testcase name=\"";
        let pad = CHUNK - xml.len() - head.len() - 1;
        xml.extend(std::iter::repeat_n(b'a', pad));
        xml.extend_from_slice(head);
        assert_eq!(xml.len(), CHUNK - 1);
        xml.extend_from_slice("é🙂\"/></testsuite>".as_bytes());
        let r = parse_bytes(&xml).expect("split char");
        assert_eq!(r.cases[0].name, "é🙂");
    }

    #[test]
    fn other_encodings_are_transcoded() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><testsuite><testcase name=\"é🙂\"/></testsuite>";
        let mut le = vec![0xFF, 0xFE];
        le.extend(doc.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(parse_bytes(&le).expect("utf-16le").cases[0].name, "é🙂");
        let mut be = vec![0xFE, 0xFF];
        be.extend(doc.encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(parse_bytes(&be).expect("utf-16be").cases[0].name, "é🙂");
        let no_bom: Vec<u8> = doc.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(
            parse_bytes(&no_bom).expect("utf-16 no bom").cases[0].name,
            "é🙂"
        );

        let latin1 = b"<?xml version='1.0' encoding='ISO-8859-1'?><testsuite><testcase name='caf\xe9'/></testsuite>";
        assert_eq!(parse_bytes(latin1).expect("latin1").cases[0].name, "café");
        let cp = b"<?xml version=\"1.0\" encoding=\"windows-1252\"?><testsuite><testcase name=\"\x93q\x94 \x80\"/></testsuite>";
        assert_eq!(parse_bytes(cp).expect("cp1252").cases[0].name, "“q” €");

        // UTF-8 BOM and CRLF line ends (xUnit.net on Windows).
        let bom = b"\xEF\xBB\xBF<?xml version=\"1.0\"?>\r\n<testsuites>\r\n<testsuite><testcase name=\"a\"><failure>l1\r\nl2\r\n</failure></testcase></testsuite>\r\n</testsuites>\r\n";
        let r = parse_bytes(bom).expect("bom");
        assert_eq!(r.cases[0].traceback.as_deref(), Some("l1\nl2"));
    }

    /// A `BufRead` that hands out at most `step` bytes at a time, like a pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.fill_buf()?.len().min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Trickle<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            Ok(&self.data[..self.data.len().min(self.step)])
        }
        fn consume(&mut self, amt: usize) {
            self.data = &self.data[amt.min(self.data.len())..];
        }
    }

    #[test]
    fn decoding_survives_any_chunking() {
        let doc = "<testsuite><testcase classname=\"κλάση\" name=\"t[é-🙂-日本]\"><failure message=\"💥 boom\">trace 🙂\nline 2</failure></testcase></testsuite>";
        let mut utf8 = b"\xEF\xBB\xBF".to_vec();
        utf8.extend_from_slice(doc.as_bytes());
        utf8.extend_from_slice(b"<!-- \xff\xc3 -->");
        let mut le = vec![0xFF, 0xFE];
        le.extend(doc.encode_utf16().flat_map(u16::to_le_bytes));
        let mut be = vec![0xFE, 0xFF];
        be.extend(doc.encode_utf16().flat_map(u16::to_be_bytes));
        let want = parse(doc);
        for input in [&utf8, &le, &be] {
            for step in 1..=9 {
                let got = parse_stream(
                    Trickle { data: input, step },
                    Path::new("x"),
                    MAX_REPORT_BYTES,
                )
                .unwrap_or_else(|e| panic!("step {step}: {e}"));
                assert_eq!(got, want, "step {step}, input starts {:?}", &input[..2]);
            }
        }
        // A surrogate pair split across the transcoder's 64 KiB chunks.
        let pad = "a".repeat(CHUNK / 2 - 1 - "<testsuite><!--".len());
        let doc = format!("<testsuite><!--{pad}🙂--><testcase name=\"🙂\"/></testsuite>");
        let mut le = vec![0xFF, 0xFE];
        le.extend(doc.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(
            parse_bytes(&le).expect("split surrogate").cases[0].name,
            "🙂"
        );
    }

    #[test]
    fn cdata_traceback_and_output() {
        let r = parse(
            r#"<testsuite><testcase classname="c" name="t" time="1"><failure message="AssertionError: x" type="java.lang.AssertionError"><![CDATA[java.lang.AssertionError: x
	at a.B.c(B.java:1)
	<not a tag> & not an entity]]></failure>
<system-out><![CDATA[line one
]]>more &amp; text</system-out>
<system-err>
    err line
</system-err>
<system-out></system-out>
</testcase></testsuite>"#,
        );
        let c = &r.cases[0];
        assert_eq!(
            c.traceback.as_deref(),
            Some(
                "java.lang.AssertionError: x\n\tat a.B.c(B.java:1)\n\t<not a tag> & not an entity"
            )
        );
        assert_eq!(
            c.output.as_deref(),
            Some("line one\nmore & text\n\n    err line")
        );
        // A failure without message takes the first line of its text.
        let r = parse(
            r#"<testsuite><testcase name="t"><failure><![CDATA[

   first real line
second]]></failure></testcase><testcase name="u"><failure/></testcase></testsuite>"#,
        );
        assert_eq!(r.cases[0].message.as_deref(), Some("first real line"));
        assert_eq!(
            r.cases[0].traceback.as_deref(),
            Some("   first real line\nsecond")
        );
        assert_eq!(
            (
                r.cases[1].message.as_deref(),
                r.cases[1].traceback.as_deref()
            ),
            (None, None)
        );
        assert_eq!(r.cases[1].outcome, Outcome::Failed);
    }

    #[test]
    fn caps_with_truncation_marker() {
        let long_msg = "m".repeat(MAX_MESSAGE_BYTES + 100);
        let long_tb = "t".repeat(MAX_TRACEBACK_BYTES * 3);
        let long_out = "o".repeat(MAX_OUTPUT_BYTES + 7);
        let long_name = "n".repeat(MAX_TEST_ID_BYTES * 2);
        let xml = format!(
            r#"<testsuite><testcase classname="c" name="{long_name}"><failure message="{long_msg}">{long_tb}</failure><system-out>{long_out}</system-out></testcase></testsuite>"#
        );
        let r = parse(&xml);
        let c = &r.cases[0];
        let msg = c.message.as_deref().unwrap_or_default();
        assert!(
            msg.ends_with("[truncated 100 bytes]"),
            "{}",
            &msg[msg.len() - 40..]
        );
        let tb = c.traceback.as_deref().unwrap_or_default();
        assert_eq!(
            tb,
            schema::truncate_marked(long_tb.clone(), MAX_TRACEBACK_BYTES),
            "streamed cap must read like truncate_marked"
        );
        let out = c.output.as_deref().unwrap_or_default();
        assert!(out.ends_with("[truncated 7 bytes]"), "{out:.20}");
        assert!(c.test_id.len() <= MAX_TEST_ID_BYTES);
        assert!(c.name.len() <= MAX_TEST_ID_BYTES);
        assert!(c.test_id.contains("[truncated"));
        // Everything the parser produces passes the wire validation.
        c.validate().expect("valid test case");

        // Multi-byte characters are cut on a boundary.
        let mut cap = Capped::new(5);
        cap.push("ab");
        cap.push("ééé");
        assert_eq!(cap.finish().as_deref(), Some("abé\n… [truncated 4 bytes]"));
        assert_eq!(
            schema::truncate_marked("abééé".into(), 5),
            "abé\n… [truncated 4 bytes]"
        );
    }

    #[test]
    fn parse_file_checks_size_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big.xml");
        let f = File::create(&big).expect("create");
        // Sparse: no disk used, but metadata says it is over the limit.
        f.set_len(MAX_REPORT_BYTES + 1).expect("set_len");
        assert!(matches!(
            parse_file(&big),
            Err(JunitError::TooLarge { size, limit }) if size == MAX_REPORT_BYTES + 1 && limit == MAX_REPORT_BYTES
        ));
        let missing = dir.path().join("missing.xml");
        let e = parse_file(&missing).expect_err("missing");
        assert!(matches!(e, JunitError::Io { .. }));
        assert!(e.to_string().contains("missing.xml"), "{e}");
        assert!(matches!(parse_file(dir.path()), Err(JunitError::Io { .. })));

        let ok = dir.path().join("ok.xml");
        let mut f = File::create(&ok).expect("create");
        f.write_all(br#"<testsuite name="pytest"><testcase name="a"/></testsuite>"#)
            .expect("write");
        drop(f);
        assert_eq!(parse_file(&ok).expect("parses").cases.len(), 1);
    }

    #[test]
    fn limit_is_enforced_while_streaming() {
        let xml = format!(
            "<testsuite>{}</testsuite>",
            "<testcase name='a'/>".repeat(10_000)
        );
        let e = parse_stream(xml.as_bytes(), Path::new("x"), 50_000).expect_err("limit");
        assert!(
            matches!(e, JunitError::TooLarge { limit: 50_000, size } if size > 50_000),
            "{e:?}"
        );
        assert!(parse_stream(xml.as_bytes(), Path::new("x"), 1 << 20).is_ok());
    }

    #[test]
    fn merge_reports() {
        let a = parse(
            r#"<testsuite name="pytest" timestamp="2023-01-01T10:00:00"><testcase name="a"/></testsuite>"#,
        );
        let b = parse(
            r#"<testsuites><testsuite name="pytest" timestamp="2023-01-01T09:00:00Z"><testcase name="b"/></testsuite><testsuite/></testsuites>"#,
        );
        let c = parse(r#"<testsuite><testcase name="c"/></testsuite>"#);
        let m = merge(vec![a.clone(), b, c]);
        let names: Vec<&str> = m.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(m.suites, 4);
        assert_eq!(
            m.timestamp,
            Utc.with_ymd_and_hms(2023, 1, 1, 9, 0, 0).single()
        );
        assert_eq!(m.runner_hint.as_deref(), Some("pytest"));
        let jest = parse(
            r#"<testsuites name="jest tests"><testsuite><testcase name="j"/></testsuite></testsuites>"#,
        );
        assert_eq!(jest.runner_hint.as_deref(), Some("jest"));
        assert_eq!(merge(vec![a, jest]).runner_hint, None);
        assert_eq!(merge(Vec::new()), Report::default());
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let cases = [
            JunitError::NotXml {
                position: 3,
                detail: "x".into(),
            },
            JunitError::NotJunit {
                root: "project".into(),
            },
            JunitError::Truncated {
                position: 9,
                detail: "y".into(),
            },
            JunitError::TooLarge { size: 10, limit: 5 },
            JunitError::TooDeep { depth: 65 },
            JunitError::Entity,
            JunitError::UnknownEntity {
                name: "nbsp".into(),
                position: 1,
            },
            JunitError::Empty,
        ];
        for e in cases {
            let s = e.to_string();
            assert!(s.starts_with("report "), "{s}");
            assert!(s.contains(':') || s.contains(';'), "{s}");
        }
    }

    #[test]
    fn never_panics_on_mangled_input() {
        let base = br#"<?xml version="1.0"?><testsuites><testsuite name="pytest" timestamp="2023-01-01"><testcase classname="a" name="b[&quot;x&quot;]" time="0,1"><failure message="m&#10;n"><![CDATA[tb]]></failure><system-out>o &amp; p</system-out></testcase><testcase name="c"><skipped type="pytest.xfail"/></testcase></testsuite></testsuites>"#;
        // Flip, drop and duplicate bytes at every position.
        for i in 0..base.len() {
            for b in [b'<', b'>', b'&', b'"', b'/', 0xff, b'!', b'?', b';'] {
                let mut v = base.to_vec();
                v[i] = b;
                let _ = parse_bytes(&v);
            }
            let mut v = base.to_vec();
            v.remove(i);
            let _ = parse_bytes(&v);
            let mut v = base.to_vec();
            v.insert(i, base[i]);
            let _ = parse_bytes(&v);
        }
    }
}
