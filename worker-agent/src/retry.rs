//! `--retries N`: rerunning only the failed tests, and merging the attempts
//! into one run.
//!
//! # What is retried
//!
//! Only the cases that failed or errored, selected by id through the
//! runner ([`crate::runner::Runner::select`]: pytest node ids in the same
//! interpreter and options, `-t` / `-run` / `--test-name-pattern` / `-E`
//! for the others) or through a `--rerun-command` template
//! ([`template`]). A run that **crashed** (a signal, a timeout, a command
//! that did not start, no readable report, pytest's exits 2 to 5, a
//! non-zero exit with a clean report: [`crate::report::crashed`]) is never
//! retried: a crash is not a flaky test, and a retry would hide it. More
//! than [`MAX_RETRIED_TESTS`] failures are not retried either (that is a
//! broken build, not flakiness). A retry attempt that crashes ends the
//! retries; its failures stay failures.
//!
//! # Merging
//!
//! The attempts become one run ([`merge`]): a retried test takes the
//! entries of its latest attempt, with `retries` = its failed attempts; if
//! that attempt passed, it is `flaky` (passed on retry) and counts as
//! passed. A test absent from a rerun's report, or skipped there, keeps its
//! failure. So a test failing every attempt is a failure, and the run
//! passes only when every failure passed on a retry.

use std::path::Path;

use ptp_nats::schema::{Outcome, TestCase};

use crate::runner::{self, Runner};

/// Most failed tests retried; beyond it the run is not retried.
pub const MAX_RETRIED_TESTS: usize = 1000;

/// Most `--retries`.
pub const MAX_RETRIES: u32 = 10;

/// The attempts merged: `current` with each of `retried` (test ids)
/// replaced by its entries in `rerun` (see the module doc).
pub fn merge(current: Vec<TestCase>, rerun: &[TestCase], retried: &[String]) -> Vec<TestCase> {
    let mut out = current;
    for id in retried {
        let fresh: Vec<&TestCase> = rerun.iter().filter(|c| &c.test_id == id).collect();
        let before: Vec<usize> = (0..out.len()).filter(|&i| &out[i].test_id == id).collect();
        let Some(&at) = before.first() else { continue };
        let tries = before.iter().map(|&i| out[i].retries).max().unwrap_or(0) + 1;
        let passed = !fresh.is_empty() && fresh.iter().all(|c| c.outcome == Outcome::Passed);
        let failed = fresh.iter().any(|c| c.outcome.is_failure());
        if !passed && !failed {
            // Not in the rerun, or skipped there: still the failure it was.
            for &i in &before {
                out[i].retries = tries;
            }
            continue;
        }
        let replacement: Vec<TestCase> = fresh
            .into_iter()
            .map(|c| TestCase {
                retries: tries,
                flaky: passed,
                ..c.clone()
            })
            .collect();
        for &i in before.iter().rev() {
            out.remove(i);
        }
        out.splice(at..at, replacement);
    }
    out
}

/// The failed and errored tests of `cases`, each id once.
pub fn failing_ids(cases: &[TestCase]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for c in cases.iter().filter(|c| c.outcome.is_failure()) {
        if !ids.contains(&c.test_id) {
            ids.push(c.test_id.clone());
        }
    }
    ids
}

/// Splits a command template into words as a POSIX shell would, without
/// expanding anything: whitespace separates, `'...'` and `"..."` quote,
/// `\` escapes (outside single quotes).
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("an unclosed ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("an unclosed \" quote".into()),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("an unclosed \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// `s` quoted for a POSIX shell: `'it'\''s'`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command of a `--rerun-command` template for `cases`:
/// - `{tests}` as a whole word becomes one argument per test: its
///   selector when the runner is known (pytest node id, test name, nextest
///   filter), else its JUnit `name`;
/// - `{pattern}` as a whole word becomes one argument, an anchored regular
///   expression matching exactly those names (`-t`, `-run`,
///   `--test-name-pattern`);
/// - `{files}` as a whole word becomes one argument per distinct file;
/// - inside a longer word (`sh -c 'pytest {tests}'`) each value is quoted
///   for a POSIX shell and they are joined by spaces, so a shell reads
///   them back unchanged.
///
/// Never run through a shell itself: the words are the argv.
pub fn template(
    t: &str,
    cases: &[&TestCase],
    runner: Option<Runner>,
    root: &Path,
) -> Result<Vec<String>, String> {
    let words = split_words(t).map_err(|e| format!("--rerun-command has {e}"))?;
    if words.is_empty() {
        return Err("--rerun-command is empty".into());
    }
    let names: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for c in cases {
            if !v.contains(&c.name) {
                v.push(c.name.clone());
            }
        }
        v
    };
    let tests: Vec<String> = match runner {
        Some(r) => r.select(&[], cases, root).selectors,
        None => names.clone(),
    };
    let sep = (runner == Some(Runner::Vitest)).then_some(" > ");
    let pattern = vec![runner::regex_alternation(&names, sep)];
    let files: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for c in cases {
            if let Some(f) = runner::case_file(runner, c, |p| root.join(p).is_file())
                && !v.contains(&f)
            {
                v.push(f);
            }
        }
        v
    };
    let mut argv = Vec::new();
    for w in words {
        let whole = match w.as_str() {
            "{tests}" => Some(&tests),
            "{pattern}" => Some(&pattern),
            "{files}" => Some(&files),
            _ => None,
        };
        if let Some(values) = whole {
            argv.extend(values.iter().cloned());
            continue;
        }
        let quoted = |v: &[String]| {
            v.iter()
                .map(|s| shell_quote(s))
                .collect::<Vec<_>>()
                .join(" ")
        };
        argv.push(
            w.replace("{tests}", &quoted(&tests))
                .replace("{pattern}", &quoted(&pattern))
                .replace("{files}", &quoted(&files)),
        );
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, outcome: Outcome) -> TestCase {
        TestCase {
            test_id: id.into(),
            file: None,
            classname: None,
            name: id.into(),
            outcome,
            duration_secs: 0.0,
            message: Some(format!("{id} {}", outcome.as_str())),
            traceback: None,
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        }
    }

    fn shape(cases: &[TestCase]) -> Vec<(String, &'static str, u32, bool)> {
        cases
            .iter()
            .map(|c| (c.test_id.clone(), c.outcome.as_str(), c.retries, c.flaky))
            .collect()
    }

    #[test]
    fn a_pass_on_retry_is_flaky_and_a_failure_stays_a_failure() {
        let first = vec![
            case("ok", Outcome::Passed),
            case("flaky", Outcome::Failed),
            case("broken", Outcome::Failed),
            case("teardown", Outcome::Failed),
            case("teardown", Outcome::Error),
            case("gone", Outcome::Error),
            case("skips", Outcome::Failed),
        ];
        let ids = failing_ids(&first);
        assert_eq!(ids, ["flaky", "broken", "teardown", "gone", "skips"]);
        let rerun = [
            case("flaky", Outcome::Passed),
            case("broken", Outcome::Failed),
            case("teardown", Outcome::Passed),
            case("skips", Outcome::Skipped),
            case("ok", Outcome::Failed), // not retried: ignored
        ];
        let merged = merge(first, &rerun, &ids);
        assert_eq!(
            shape(&merged),
            [
                ("ok".into(), "passed", 0, false),
                ("flaky".into(), "passed", 1, true),
                ("broken".into(), "failed", 1, false),
                ("teardown".into(), "passed", 1, true),
                ("gone".into(), "error", 1, false),
                ("skips".into(), "failed", 1, false),
            ]
        );
        // A second retry counts on.
        let ids = failing_ids(&merged);
        let merged = merge(merged, &[case("broken", Outcome::Failed)], &ids);
        assert_eq!(merged[2].retries, 2);
        assert_eq!(merged[2].message.as_deref(), Some("broken failed"));
    }

    #[test]
    fn templates_expand_whole_words_and_quote_inside_words() {
        let a = case("t::it's a > test", Outcome::Failed);
        let mut b = case("t::b", Outcome::Failed);
        b.file = Some("src/b.test.js".into());
        let cases = [&a, &b];
        let root = Path::new("/nonexistent");
        assert_eq!(
            template("npx jest -t {pattern}", &cases, None, root).expect("ok"),
            ["npx", "jest", "-t", r"^(?:t::it's a > test|t::b)$"]
        );
        assert_eq!(
            template("run.sh --only {tests}", &cases, None, root).expect("ok"),
            ["run.sh", "--only", "t::it's a > test", "t::b"]
        );
        assert_eq!(
            template(r#"sh -c "pytest {tests}""#, &cases, None, root).expect("ok"),
            ["sh", "-c", r"pytest 't::it'\''s a > test' 't::b'"]
        );
        assert_eq!(
            template("mocha {files}", &cases, None, root).expect("ok"),
            ["mocha", "src/b.test.js"]
        );
        assert!(template("a 'b", &cases, None, root).is_err());
        assert!(template("  ", &cases, None, root).is_err());
    }
}
