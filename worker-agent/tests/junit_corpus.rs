//! Golden corpus for the JUnit parser: every report in `tests/corpus/`
//! (real files from EnricoMi/publish-unit-test-result-action and
//! mikepenz/action-junit-report, Apache-2.0; see `tests/corpus/README.md`)
//! either parses into exactly the counts listed here or is rejected with the
//! listed [`JunitError`] variant.
//!
//! The expected counts were worked out independently of the Rust code by
//! `tests/corpus/count_cases.py` (Python's `xml.etree`, counting
//! `<testcase>` elements and their children by the documented rules), then
//! cross-checked against EnricoMi's `*.results.json` where they exist (see
//! [`agrees_with_enricomi_where_semantics_match`]). A new XML file in the
//! corpus without an entry here fails [`every_corpus_file_has_an_entry`].

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ptp_agent::junit::{self, JunitError, Report};
use ptp_nats::schema::{MAX_OUTPUT_BYTES, Outcome};

/// What a corpus file must produce.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Parses; exact counts by outcome, and the number of `<testsuite>` elements.
    Counts {
        total: u64,
        passed: u64,
        failed: u64,
        error: u64,
        skipped: u64,
        xfailed: u64,
        suites: usize,
    },
    /// Refused with this [`JunitError`] variant.
    Rejected(&'static str),
}

const fn counts(
    total: u64,
    passed: u64,
    failed: u64,
    error: u64,
    skipped: u64,
    xfailed: u64,
    suites: usize,
) -> Expect {
    Expect::Counts {
        total,
        passed,
        failed,
        error,
        skipped,
        xfailed,
        suites,
    }
}

const fn rejected(variant: &'static str) -> Expect {
    Expect::Rejected(variant)
}

/// Every `*.xml` / `*.junit-xml` under `tests/corpus/`, by relative path.
/// (The `.junit-xml` files are EnricoMi's re-serialization of the `.xml`
/// file of the same name; they must count the same.)
#[rustfmt::skip]
const TABLE: &[(&str, Expect)] = &[
    ("enricomi/bazel/suite-logs.junit-xml", counts(1, 0, 0, 1, 0, 0, 1)),
    ("enricomi/bazel/suite-logs.xml", counts(1, 0, 0, 1, 0, 0, 1)),
    ("enricomi/empty-system-out-err.junit-xml", counts(1, 1, 0, 0, 0, 0, 1)),
    ("enricomi/empty-system-out-err.xml", counts(1, 1, 0, 0, 0, 0, 1)),
    ("enricomi/jest/jest-junit.junit-xml", counts(2, 2, 0, 0, 0, 0, 1)),
    ("enricomi/jest/jest-junit.xml", counts(2, 2, 0, 0, 0, 0, 1)),
    // A testcase with <skipped>, <failure> and <error> children: error wins,
    // then failure (enricomi counts every child: runs_succ = -2).
    ("enricomi/junit.multiresult.junit-xml", counts(4, 1, 1, 1, 1, 0, 1)),
    ("enricomi/junit.multiresult.xml", counts(4, 1, 1, 1, 1, 0, 1)),
    ("enricomi/minimal-attributes.junit-xml", counts(4, 1, 1, 1, 1, 0, 1)),
    ("enricomi/minimal-attributes.xml", counts(4, 1, 1, 1, 1, 0, 1)),
    ("enricomi/mocha/latex-utensils.junit-xml", counts(109, 109, 0, 0, 0, 0, 1)),
    ("enricomi/mocha/latex-utensils.xml", counts(109, 109, 0, 0, 0, 0, 1)),
    ("enricomi/no-attributes.junit-xml", counts(4, 1, 1, 1, 1, 0, 1)),
    ("enricomi/no-attributes.xml", counts(4, 1, 1, 1, 1, 0, 1)),
    // tests="6" but no <testcase>: 0 cases (enricomi falls back to the
    // suite attributes and reports 6 runs).
    ("enricomi/no-cases-but-tests.junit-xml", counts(0, 0, 0, 0, 0, 0, 1)),
    ("enricomi/no-cases-but-tests.xml", counts(0, 0, 0, 0, 0, 0, 1)),
    ("enricomi/no-cases.junit-xml", counts(0, 0, 0, 0, 0, 0, 1)),
    ("enricomi/no-cases.xml", counts(0, 0, 0, 0, 0, 0, 1)),
    // Root <suites>: enricomi refuses it too ("Invalid format.").
    ("enricomi/non-junit.junit-xml", rejected("NotJunit")),
    ("enricomi/non-junit.xml", rejected("NotJunit")),
    // Cut inside a <skipped> element (enricomi: "Premature end of data").
    ("enricomi/pytest/corrupt-xml.xml", rejected("Truncated")),
    ("enricomi/pytest/junit.fail.junit-xml", counts(5, 3, 1, 0, 1, 0, 1)),
    ("enricomi/pytest/junit.fail.xml", counts(5, 3, 1, 0, 1, 0, 1)),
    ("enricomi/pytest/junit.gloo.elastic.junit-xml", counts(14, 10, 0, 0, 4, 0, 1)),
    ("enricomi/pytest/junit.gloo.elastic.spark.tf.junit-xml", counts(22, 20, 0, 0, 2, 0, 1)),
    ("enricomi/pytest/junit.gloo.elastic.spark.tf.xml", counts(22, 20, 0, 0, 2, 0, 1)),
    ("enricomi/pytest/junit.gloo.elastic.spark.torch.junit-xml", counts(22, 22, 0, 0, 0, 0, 1)),
    ("enricomi/pytest/junit.gloo.elastic.spark.torch.xml", counts(22, 22, 0, 0, 0, 0, 1)),
    ("enricomi/pytest/junit.gloo.elastic.xml", counts(14, 10, 0, 0, 4, 0, 1)),
    ("enricomi/pytest/junit.gloo.standalone.junit-xml", counts(97, 80, 0, 0, 17, 0, 1)),
    ("enricomi/pytest/junit.gloo.standalone.xml", counts(97, 80, 0, 0, 17, 0, 1)),
    ("enricomi/pytest/junit.gloo.static.junit-xml", counts(24, 12, 0, 0, 12, 0, 1)),
    ("enricomi/pytest/junit.gloo.static.xml", counts(24, 12, 0, 0, 12, 0, 1)),
    ("enricomi/pytest/junit.mpi.integration.junit-xml", counts(3, 3, 0, 0, 0, 0, 1)),
    ("enricomi/pytest/junit.mpi.integration.xml", counts(3, 3, 0, 0, 0, 0, 1)),
    ("enricomi/pytest/junit.mpi.standalone.junit-xml", counts(97, 96, 0, 0, 1, 0, 1)),
    ("enricomi/pytest/junit.mpi.standalone.xml", counts(97, 96, 0, 0, 1, 0, 1)),
    ("enricomi/pytest/junit.mpi.static.junit-xml", counts(24, 24, 0, 0, 0, 0, 1)),
    ("enricomi/pytest/junit.mpi.static.xml", counts(24, 24, 0, 0, 0, 0, 1)),
    ("enricomi/pytest/junit.spark.integration.1.junit-xml", counts(35, 33, 0, 0, 2, 0, 1)),
    ("enricomi/pytest/junit.spark.integration.1.xml", counts(35, 33, 0, 0, 2, 0, 1)),
    ("enricomi/pytest/junit.spark.integration.2.junit-xml", counts(35, 33, 0, 0, 2, 0, 1)),
    ("enricomi/pytest/junit.spark.integration.2.xml", counts(35, 33, 0, 0, 2, 0, 1)),
    ("enricomi/scalatest/TEST-uk.co.gresearch.spark.diff.DiffOptionsSuite.junit-xml", counts(5, 5, 0, 0, 0, 0, 1)),
    ("enricomi/scalatest/TEST-uk.co.gresearch.spark.diff.DiffOptionsSuite.xml", counts(5, 5, 0, 0, 0, 0, 1)),
    ("enricomi/testsuite-in-testsuite.junit-xml", counts(5, 5, 0, 0, 0, 0, 4)),
    ("enricomi/testsuite-in-testsuite.xml", counts(5, 5, 0, 0, 0, 0, 4)),
    ("enricomi/testsuite-root.junit-xml", counts(5, 5, 0, 0, 0, 0, 4)),
    ("enricomi/testsuite-root.xml", counts(5, 5, 0, 0, 0, 0, 4)),
    // status="disabled" without a child counts as skipped (enricomi's runs
    // count them as passed; its suite-level tests_skip agrees with our 5).
    ("enricomi/tst/disabled.junit-xml", counts(31, 6, 19, 1, 5, 0, 2)),
    ("enricomi/tst/disabled.xml", counts(31, 6, 19, 1, 5, 0, 2)),
    ("enricomi/unsupported-unicode.junit-xml", counts(7, 1, 2, 2, 2, 0, 1)),
    ("enricomi/unsupported-unicode.xml", counts(7, 1, 2, 2, 2, 0, 1)),
    ("enricomi/with-xml-entities.junit-xml", counts(4, 0, 1, 1, 2, 0, 1)),
    ("enricomi/with-xml-entities.xml", counts(4, 0, 1, 1, 2, 0, 1)),
    ("enricomi/xunit/xunit.junit-xml", counts(2, 2, 0, 0, 0, 0, 1)),
    ("enricomi/xunit/xunit.xml", counts(2, 2, 0, 0, 0, 0, 1)),
    ("mikepenz/catch2/report.xml", counts(1, 0, 1, 0, 0, 0, 1)),
    ("mikepenz/container-structure/test.xml", counts(3, 3, 0, 0, 0, 0, 1)),
    // Cut inside a <system-out> CDATA section.
    ("mikepenz/corrupt-junit/e2e-tests/corrupt/target/sf-reports/TEST-test.CorruptTest.xml", rejected("Truncated")),
    ("mikepenz/cunit/testEmpty.xml", counts(0, 0, 0, 0, 0, 0, 0)),
    ("mikepenz/cunit/testFailure.xml", counts(4, 3, 1, 0, 0, 0, 1)),
    // Retries written as repeated <testcase> elements: one case each.
    ("mikepenz/flaky_retries/flaky_all_failures.xml", counts(3, 0, 2, 1, 0, 0, 1)),
    ("mikepenz/flaky_retries/flaky_success_first.xml", counts(3, 1, 1, 1, 0, 0, 1)),
    ("mikepenz/flaky_retries/flaky_with_classname_file.xml", counts(5, 3, 1, 1, 0, 0, 1)),
    // 10 status="disabled" cases count as skipped.
    ("mikepenz/issues/testDisabled.xml", counts(22, 6, 4, 2, 10, 0, 1)),
    // status="disabled" but a <failure> child: the child wins.
    ("mikepenz/issues/testFailedDisabled.xml", counts(1, 0, 1, 0, 0, 0, 1)),
    ("mikepenz/junit-server-test/report.xml", counts(4, 2, 1, 0, 1, 0, 1)),
    // time="<<computed>>": a raw `<` in an attribute value (expat refuses it,
    // quick-xml reads it); the time is unparseable, so 0.0.
    ("mikepenz/junit-web-test/expected.xml", counts(6, 4, 1, 0, 1, 0, 2)),
    ("mikepenz/junit-web-test/expectedRetries.xml", counts(8, 5, 2, 0, 1, 0, 2)),
    // <flakyFailure>: passed on retry (flaky, retries = 1).
    ("mikepenz/junit_flaky_failure/marathon_junit_report.xml", counts(1, 1, 0, 0, 0, 0, 1)),
    ("mikepenz/junit_flaky_failure/mixed_flaky_and_passed.xml", counts(3, 3, 0, 0, 0, 0, 1)),
    ("mikepenz/marathon_tests/com.mikepenz.DummyTest#test_02_dummy.xml", counts(1, 1, 0, 0, 0, 0, 1)),
    ("mikepenz/marathon_tests/com.mikepenz.DummyTest3#test_01.xml", counts(1, 0, 1, 0, 0, 0, 1)),
    ("mikepenz/marathon_tests/com.mikepenz.DummyUtilTest#test_01_dummy.xml", counts(1, 0, 1, 0, 0, 0, 1)),
    ("mikepenz/maven_surefire_flaky/surefire-report.xml", counts(1, 1, 0, 0, 0, 0, 1)),
    ("mikepenz/mocha/mocha.xml", counts(1, 1, 0, 0, 0, 0, 3)),
    ("mikepenz/multiple/test_10.xml", counts(3, 3, 0, 0, 0, 0, 1)),
    ("mikepenz/multiple/test_11.xml", counts(3, 2, 1, 0, 0, 0, 1)),
    ("mikepenz/multiple/test_12.xml", counts(3, 2, 0, 0, 1, 0, 1)),
    ("mikepenz/multiple_failures/test_multiple_errors.xml", counts(3, 1, 0, 2, 0, 0, 1)),
    ("mikepenz/multiple_failures/test_multiple_failures.xml", counts(4, 1, 2, 0, 1, 0, 1)),
    ("mikepenz/nested/junit.xml", counts(5, 2, 3, 0, 0, 0, 5)),
    ("mikepenz/nested/multi-level.xml", counts(3, 3, 0, 0, 0, 0, 2)),
    ("mikepenz/nextest/basic.xml", counts(3, 2, 1, 0, 0, 0, 1)),
    ("mikepenz/perl/result.xml", counts(1, 1, 0, 0, 0, 0, 1)),
    ("mikepenz/python/report.xml", counts(3, 1, 2, 0, 0, 0, 1)),
    ("mikepenz/python/report_flaky.xml", counts(4, 2, 2, 0, 0, 0, 1)),
    // Maven POMs sitting next to the reports: root <project>.
    ("mikepenz/tests/email/pom.xml", rejected("NotJunit")),
    ("mikepenz/tests/email/target/surefire-reports/TEST-action.surefire.report.email.EmailAddressTest.xml", counts(9, 2, 2, 5, 0, 0, 1)),
    ("mikepenz/tests/pom.xml", rejected("NotJunit")),
    ("mikepenz/tests/utils/pom.xml", rejected("NotJunit")),
    ("mikepenz/tests/utils/target/surefire-reports/TEST-action.surefire.report.calc.AllOkTest.xml", counts(1, 1, 0, 0, 0, 0, 1)),
    ("mikepenz/tests/utils/target/surefire-reports/TEST-action.surefire.report.calc.CalcUtilsTest.xml", counts(2, 0, 2, 0, 0, 0, 1)),
    ("mikepenz/tests/utils/target/surefire-reports/TEST-action.surefire.report.calc.StringUtilsTest.xml", counts(5, 2, 2, 0, 1, 0, 1)),
    ("mikepenz/xunit/report.xml", counts(4, 3, 1, 0, 0, 0, 1)),
    ("mikepenz/xunit/report_fl_on_f.xml", counts(4, 3, 1, 0, 0, 0, 1)),
];

/// EnricoMi's `.results.json` disagree with us on these files, on purpose.
const ENRICOMI_DIFFERS: &[(&str, &str)] = &[
    (
        "enricomi/junit.multiresult",
        "they count every <skipped>/<failure>/<error> child as a run (runs_succ = -2); we count one outcome per <testcase>, error > failure > skipped",
    ),
    (
        "enricomi/no-cases-but-tests",
        "no <testcase> elements: they fall back to the suite's tests=/failures= attributes; we count elements only",
    ),
    (
        "enricomi/tst/disabled",
        "they count status=\"disabled\" cases as passed runs; we count them as skipped (their suite-level tests_skip = 5 agrees)",
    ),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("corpus")
}

fn is_report(name: &str) -> bool {
    name.ends_with(".xml") || name.ends_with(".junit-xml")
}

/// Relative paths (with `/`) of every file under `dir` accepted by `keep`.
fn walk(dir: &Path, base: &Path, keep: &dyn Fn(&str) -> bool, out: &mut BTreeSet<String>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            walk(&path, base, keep, out);
            continue;
        }
        let rel = path
            .strip_prefix(base)
            .expect("under the corpus dir")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        if keep(&rel) {
            out.insert(rel);
        }
    }
}

fn variant(e: &JunitError) -> String {
    format!("{e:?}")
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

fn parse(rel: &str) -> Result<Report, JunitError> {
    junit::parse_file(&corpus_dir().join(rel))
}

fn expectation(rel: &str) -> Expect {
    TABLE
        .iter()
        .find(|(name, _)| *name == rel)
        .map(|(_, e)| *e)
        .unwrap_or_else(|| panic!("{rel} is not in TABLE"))
}

#[test]
fn every_corpus_file_has_an_entry() {
    let mut found = BTreeSet::new();
    let base = corpus_dir();
    walk(&base, &base, &is_report, &mut found);
    let listed: BTreeSet<String> = TABLE.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(listed.len(), TABLE.len(), "TABLE lists a file twice");
    let missing: Vec<_> = found.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&found).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "corpus and TABLE differ.\n  files without an entry (add them, with counts from count_cases.py): {missing:#?}\n  entries without a file: {stale:#?}"
    );
    assert_eq!(found.len(), 97, "the corpus holds 97 reports");
}

#[test]
fn corpus_counts_match_the_table() {
    let mut problems = Vec::new();
    for (rel, expect) in TABLE {
        let got = parse(rel);
        match (expect, &got) {
            (
                Expect::Counts {
                    total,
                    passed,
                    failed,
                    error,
                    skipped,
                    xfailed,
                    suites,
                },
                Ok(r),
            ) => {
                let c = r.counts();
                let want = (
                    *total, *passed, *failed, *error, *skipped, *xfailed, 0, *suites,
                );
                let have = (
                    c.total, c.passed, c.failed, c.error, c.skipped, c.xfailed, c.xpassed, r.suites,
                );
                if want != have {
                    problems.push(format!(
                        "{rel}: want (total, passed, failed, error, skipped, xfailed, xpassed, suites) = {want:?}, got {have:?}"
                    ));
                }
            }
            (Expect::Rejected(v), Err(e)) if variant(e) == *v => {
                // The message must say something useful.
                let msg = e.to_string();
                if msg.len() < 40 {
                    problems.push(format!("{rel}: message too terse: {msg}"));
                }
            }
            (Expect::Rejected(v), Err(e)) => {
                problems.push(format!("{rel}: want {v}, got {}: {e}", variant(e)));
            }
            (Expect::Rejected(v), Ok(r)) => {
                problems.push(format!("{rel}: want {v}, got {} cases", r.cases.len()));
            }
            (Expect::Counts { .. }, Err(e)) => problems.push(format!("{rel}: refused: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_parsed_case_passes_wire_validation() {
    for (rel, _) in TABLE {
        if let Ok(r) = parse(rel) {
            for c in &r.cases {
                if let Err(e) = c.validate() {
                    panic!("{rel}: case {:?} is invalid on the wire: {e}", c.test_id);
                }
            }
        }
    }
}

#[test]
fn agrees_with_enricomi_where_semantics_match() {
    let base = corpus_dir();
    let mut jsons = BTreeSet::new();
    walk(
        &base,
        &base,
        &|n: &str| n.ends_with(".results.json"),
        &mut jsons,
    );
    assert!(jsons.len() >= 28, "expected EnricoMi's .results.json files");
    let mut checked = 0;
    for json in &jsons {
        let stem = json.trim_end_matches(".results.json");
        let text = std::fs::read_to_string(base.join(json)).expect("read results.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("results.json is JSON");
        let stats = &v["stats"];
        let n = |k: &str| {
            stats[k]
                .as_i64()
                .unwrap_or_else(|| panic!("{json}: no {k}"))
        };
        let their_errors = stats["errors"].as_array().map_or(0, Vec::len);
        for ext in ["xml", "junit-xml"] {
            let rel = format!("{stem}.{ext}");
            if !base.join(&rel).exists() {
                continue;
            }
            let ours = parse(&rel);
            if their_errors > 0 {
                assert!(ours.is_err(), "{rel}: EnricoMi refused it, we parsed it");
                assert!(matches!(expectation(&rel), Expect::Rejected(_)));
                checked += 1;
                continue;
            }
            let r = ours.unwrap_or_else(|e| panic!("{rel}: EnricoMi parsed it, we refused: {e}"));
            let c = r.counts();
            let ours = [
                c.total as i64,
                c.passed as i64,
                c.failed as i64,
                c.error as i64,
                (c.skipped + c.xfailed) as i64,
                r.suites as i64,
            ];
            let theirs = [
                n("runs"),
                n("runs_succ"),
                n("runs_fail"),
                n("runs_error"),
                n("runs_skip"),
                n("suites"),
            ];
            match ENRICOMI_DIFFERS.iter().find(|(s, _)| *s == stem) {
                Some((_, why)) => assert_ne!(
                    ours, theirs,
                    "{rel} now agrees with EnricoMi; drop it from ENRICOMI_DIFFERS ({why})"
                ),
                None => assert_eq!(
                    ours, theirs,
                    "{rel}: (runs, succ, fail, error, skip, suites) differ from EnricoMi's"
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked, 56,
        "every .xml and .junit-xml with a .results.json"
    );
}

#[test]
fn exception_neighbours_are_rejected() {
    let base = corpus_dir();
    let mut found = BTreeSet::new();
    walk(
        &base,
        &base,
        &|n: &str| n.ends_with(".exception"),
        &mut found,
    );
    assert_eq!(found.len(), 2);
    for exc in found {
        let rel = format!("{}.xml", exc.trim_end_matches(".exception"));
        assert!(
            matches!(expectation(&rel), Expect::Rejected(_)),
            "{rel} has a .exception neighbour but the table expects counts"
        );
        assert!(parse(&rel).is_err(), "{rel} parsed");
    }
}

fn case<'a>(r: &'a Report, name: &str) -> &'a ptp_nats::schema::TestCase {
    r.cases
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name:?}"))
}

#[test]
fn spot_checks() {
    // pytest: hint, timestamp, message from the attribute with &#10;.
    let r = parse("mikepenz/python/report.xml").expect("parses");
    assert_eq!(r.runner_hint.as_deref(), Some("pytest"));
    assert_eq!(
        r.timestamp.map(|t| t.to_rfc3339()),
        Some("2020-10-12T18:46:11.226119+00:00".to_string())
    );
    let c = case(&r, "test_which_fails");
    assert_eq!(c.test_id, "python.test_sample::test_which_fails");
    assert_eq!(
        c.message.as_deref(),
        Some("AssertionError: assert 'test' == 'xyz'\n  - xyz\n  + test")
    );
    assert!(
        c.traceback
            .as_deref()
            .is_some_and(|t| t.starts_with("def test_which_fails():")
                && t.contains(">       assert event['attr'] == 'xyz'"))
    );

    // nextest: hint from <testsuites name="nextest-run">, output joined.
    let r = parse("mikepenz/nextest/basic.xml").expect("parses");
    assert_eq!(r.runner_hint.as_deref(), Some("nextest"));
    assert!(r.timestamp.is_some());
    let c = case(&r, "test_failure");
    assert_eq!(c.outcome, Outcome::Failed);
    assert_eq!(c.test_id, "oxidized_navigation::parry3d::test_failure");
    assert!(
        c.message
            .as_deref()
            .is_some_and(|m| m.starts_with("thread 'test_failure' panicked"))
    );
    let out = c.output.as_deref().unwrap_or_default();
    assert!(out.contains("running 1 test") && out.contains("note: run with `RUST_BACKTRACE=1`"));
    assert_eq!(case(&r, "test_annotations").duration_secs, 0.945);

    // Surefire flaky: passed, flagged, one retry.
    let r = parse("mikepenz/maven_surefire_flaky/surefire-report.xml").expect("parses");
    let c = case(&r, "createWebhook");
    assert_eq!((c.outcome, c.flaky, c.retries), (Outcome::Passed, true, 1));
    let r = parse("mikepenz/junit_flaky_failure/mixed_flaky_and_passed.xml").expect("parses");
    let flaky: Vec<_> = r
        .cases
        .iter()
        .filter(|c| c.flaky)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(flaky, ["testFlaky"]);

    // Escaped names and messages.
    let r = parse("enricomi/with-xml-entities.xml").expect("parses");
    assert_eq!(r.cases[0].name, "Test with \"quotes\" in the test name");
    assert_eq!(
        r.cases[1].message.as_deref(),
        Some("A message with 'apostrophes'")
    );
    assert_eq!(r.cases[2].traceback.as_deref(), Some("Content with &"));
    assert_eq!(r.cases[3].name, "Test with < and > in the test name");

    // Astral-plane characters survive; file names the test without classname.
    let r = parse("enricomi/unsupported-unicode.xml").expect("parses");
    assert_eq!(r.cases[0].name, "test 1 헴䜝헱홐㣇㿷䔭𒍺𡓿𠄉㦓");
    assert_eq!(
        r.cases[0].test_id,
        "test/test-1.py::test 1 헴䜝헱홐㣇㿷䔭𒍺𡓿𠄉㦓"
    );

    // UTF-8 BOM and CRLF (xUnit.net).
    let r = parse("enricomi/xunit/xunit.xml").expect("parses");
    assert_eq!(
        r.cases[0].name,
        "mytestapp.Tests.AttriubteTests.SetTestNoFeature"
    );

    // Messages from attributes; output of a suite is not a case's.
    let r = parse("mikepenz/catch2/report.xml").expect("parses");
    assert_eq!(
        r.cases[0].message.as_deref(),
        Some("REQUIRE(v == 1) expands to 0 == 10")
    );
    let r = parse("enricomi/bazel/suite-logs.xml").expect("parses");
    assert_eq!(
        r.cases[0].message.as_deref(),
        Some("exited with error code 1")
    );
    assert_eq!(r.cases[0].output, None);

    // <failure> without message: the first line of the CDATA.
    let r = parse("mikepenz/marathon_tests/com.mikepenz.DummyUtilTest#test_01_dummy.xml")
        .expect("parses");
    assert_eq!(
        r.cases[0].message.as_deref(),
        Some("java.io.FileNotFoundException: No content provider: content://com.xyz/photo.jpg")
    );
    // An empty CDATA: failed, with nothing to say.
    let r = parse("mikepenz/marathon_tests/com.mikepenz.DummyTest3#test_01.xml").expect("parses");
    assert_eq!(
        (r.cases[0].outcome, r.cases[0].message.as_deref()),
        (Outcome::Failed, None)
    );

    // Unparseable and huge times.
    let r = parse("mikepenz/junit-web-test/expected.xml").expect("parses");
    assert_eq!(r.cases[0].duration_secs, 0.0);
    // container-structure-test writes 999638317 (nanoseconds as seconds):
    // kept within the master's 30-day limit so the run is not refused.
    let r = parse("mikepenz/container-structure/test.xml").expect("parses");
    assert_eq!(
        r.cases[0].duration_secs,
        ptp_nats::schema::MAX_DURATION_SECS
    );

    // Mocha: the suite's file is inherited; the hint comes from the root.
    let r = parse("mikepenz/mocha/mocha.xml").expect("parses");
    assert_eq!(r.runner_hint.as_deref(), Some("mocha"));
    assert_eq!(r.cases[0].file.as_deref(), Some("/path/test/config.js"));
}

/// Writes a report of about 100 MB and parses it from disk: the count must
/// be exact and one 10 MB `<system-out>` is capped, not kept.
#[test]
fn hundred_megabyte_report() {
    const CASES: usize = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.xml");
    let file = std::fs::File::create(&path).expect("create");
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let filler = "x".repeat(800);
    let mut want = (0u64, 0u64, 0u64);
    let started = Instant::now();
    write!(
        w,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<testsuites>\n<testsuite name=\"pytest\" tests=\"1\" timestamp=\"2024-01-01T00:00:00\">\n"
    )
    .expect("write");
    for i in 0..CASES {
        write!(
            w,
            "<testcase classname=\"tests.test_big.TestBig\" name=\"test_{i}[p-&quot;{i}&quot;]\" time=\"0,001\">"
        )
        .expect("write");
        if i == 0 {
            w.write_all(b"<system-out>").expect("write");
            for _ in 0..10 * 1024 {
                w.write_all(&[b'o'; 1024]).expect("write");
            }
            w.write_all(b"</system-out>").expect("write");
        }
        if i % 10 == 3 {
            want.1 += 1;
            write!(
                w,
                "<failure message=\"assert {i} == 0\">E assert {i} == 0</failure>"
            )
            .expect("write");
        } else if i % 10 == 7 {
            want.2 += 1;
            w.write_all(b"<skipped type=\"pytest.skip\" message=\"later\"/>")
                .expect("write");
        } else {
            want.0 += 1;
        }
        writeln!(
            w,
            "<properties><property name=\"filler\" value=\"{filler}\"/></properties></testcase>"
        )
        .expect("write");
    }
    w.write_all(b"</testsuite>\n</testsuites>\n")
        .expect("write");
    w.flush().expect("flush");
    drop(w);
    let size = std::fs::metadata(&path).expect("metadata").len();
    assert!(size > 100_000_000, "generated only {size} bytes");
    let written = started.elapsed();

    let started = Instant::now();
    let r = junit::parse_file(&path).expect("parses");
    let took = started.elapsed();
    eprintln!("wrote {size} bytes in {written:?}, parsed in {took:?}");

    let c = r.counts();
    assert_eq!(c.total, CASES as u64);
    assert_eq!((c.passed, c.failed, c.skipped), want);
    assert_eq!(
        r.cases[CASES - 1].test_id,
        format!(
            "tests.test_big.TestBig::test_{}[p-\"{}\"]",
            CASES - 1,
            CASES - 1
        )
    );
    assert_eq!(r.cases[3].message.as_deref(), Some("assert 3 == 0"));
    assert_eq!(r.cases[1].duration_secs, 0.001);
    let out = r.cases[0].output.as_deref().unwrap_or_default();
    assert!(
        out.len() <= MAX_OUTPUT_BYTES + 128,
        "output kept {} bytes",
        out.len()
    );
    assert!(out.ends_with(&format!(
        "[truncated {} bytes]",
        10 * 1024 * 1024 - MAX_OUTPUT_BYTES
    )));
}
