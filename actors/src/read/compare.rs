//! Comparing two runs test by test: what broke, what was fixed, what is
//! still failing, which tests appeared or went away, and which got slower.
//!
//! A test is identified by its test id. A test that appears several times in
//! one run (pytest records a failure and a teardown error as two cases) counts
//! once, with its worst outcome, its summed duration and the first failure
//! message. The comparison itself is a pure function ([`compare`]) over the
//! two runs' per-test results ([`load_tests`]), so its rules are tested
//! without a database.
//!
//! [`load_tests`] reads no passing case: a run's per-test summary
//! ([`crate::store::sqlite::run_tests`]: worst outcome and summed duration per test key,
//! written with the run), the names of its tests, and the messages of its
//! failing cases only, in the order the cases are stored (worst outcome,
//! chunk, index), the first of a test being its message. Durations are
//! SQLite's sum of the test's cases (the property test holds the results
//! to reading every case).
//!
//! On PostgreSQL (`compare/postgres.rs`) the same three reads run in one
//! REPEATABLE READ transaction, and the same Rust makes the results.

mod postgres;

use crate::read::ReadPool;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::SqlitePool;

use crate::model::Outcome;
use crate::store::sqlite::run_tests;
use crate::store::summary::{self, TestSummary};

/// One test's result in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    /// Worst outcome over the test's cases in the run.
    pub outcome: Outcome,
    /// Summed duration in seconds.
    pub duration_secs: f64,
    /// First failure message, when it failed.
    pub message: Option<String>,
}

/// A test whose status changed (or did not) between the runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Test id.
    pub test_id: String,
    /// Outcome in the base run (`None`: the test was not in it).
    pub base: Option<&'static str>,
    /// Outcome in the head run (`None`: not in it).
    pub head: Option<&'static str>,
    /// The head's failure message (else the base's).
    pub message: Option<String>,
}

/// A test whose duration changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// Test id.
    pub test_id: String,
    /// Seconds in the base run.
    pub base_secs: f64,
    /// Seconds in the head run.
    pub head_secs: f64,
}

/// A list cut to a limit, with how many there were.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listed<T> {
    /// How many in all.
    pub total: usize,
    /// The first `limit` of them.
    pub items: Vec<T>,
}

impl<T> Listed<T> {
    fn of(mut all: Vec<T>, limit: usize) -> Listed<T> {
        let total = all.len();
        all.truncate(limit);
        Listed { total, items: all }
    }
}

/// The difference between a base run and a head run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Failing in head, not failing (or absent) in base.
    pub new_failures: Listed<Change>,
    /// Failing in base, present and not failing in head.
    pub fixed: Listed<Change>,
    /// Failing in both.
    pub still_failing: Listed<Change>,
    /// In head only.
    pub new_tests: Listed<Change>,
    /// In base only.
    pub removed_tests: Listed<Change>,
    /// In both, at least `min_change_secs` and 50% slower, most added time first.
    pub slower: Listed<Timing>,
    /// In both, at least `min_change_secs` and a third faster, most saved time first.
    pub faster: Listed<Timing>,
    /// Total seconds of the tests in both runs: (base, head).
    pub common_duration_secs: (f64, f64),
}

/// Compares per-test results. Lists are sorted by test id (timings by the
/// size of the change) and cut to `limit`.
pub fn compare(
    base: &BTreeMap<String, TestResult>,
    head: &BTreeMap<String, TestResult>,
    limit: usize,
    min_change_secs: f64,
) -> Comparison {
    let change = |id: &str, b: Option<&TestResult>, h: Option<&TestResult>| Change {
        test_id: id.to_string(),
        base: b.map(|r| r.outcome.as_str()),
        head: h.map(|r| r.outcome.as_str()),
        message: h
            .and_then(|r| r.message.clone())
            .or_else(|| b.and_then(|r| r.message.clone())),
    };
    let (mut new_failures, mut fixed, mut still, mut added, mut removed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut slower, mut faster) = (Vec::new(), Vec::new());
    let mut common = (0.0, 0.0);
    for (id, h) in head {
        let b = base.get(id);
        let failing = h.outcome.is_failure();
        match b {
            None => {
                if failing {
                    new_failures.push(change(id, None, Some(h)));
                }
                added.push(change(id, None, Some(h)));
            }
            Some(b) => {
                match (b.outcome.is_failure(), failing) {
                    (false, true) => new_failures.push(change(id, Some(b), Some(h))),
                    (true, false) => fixed.push(change(id, Some(b), Some(h))),
                    (true, true) => still.push(change(id, Some(b), Some(h))),
                    (false, false) => {}
                }
                common.0 += b.duration_secs;
                common.1 += h.duration_secs;
                let t = Timing {
                    test_id: id.clone(),
                    base_secs: b.duration_secs,
                    head_secs: h.duration_secs,
                };
                let delta = h.duration_secs - b.duration_secs;
                if delta >= min_change_secs && h.duration_secs >= 1.5 * b.duration_secs {
                    slower.push(t);
                } else if -delta >= min_change_secs && h.duration_secs * 1.5 <= b.duration_secs {
                    faster.push(t);
                }
            }
        }
    }
    for (id, b) in base {
        if !head.contains_key(id) {
            removed.push(change(id, Some(b), None));
        }
    }
    let by_delta = |a: &Timing, b: &Timing| {
        let (da, db) = (a.head_secs - a.base_secs, b.head_secs - b.base_secs);
        db.abs()
            .total_cmp(&da.abs())
            .then_with(|| a.test_id.cmp(&b.test_id))
    };
    slower.sort_by(by_delta);
    faster.sort_by(by_delta);
    Comparison {
        new_failures: Listed::of(new_failures, limit),
        fixed: Listed::of(fixed, limit),
        still_failing: Listed::of(still, limit),
        new_tests: Listed::of(added, limit),
        removed_tests: Listed::of(removed, limit),
        slower: Listed::of(slower, limit),
        faster: Listed::of(faster, limit),
        common_duration_secs: common,
    }
}

/// Per-test results of a stored run (empty when no such run is stored):
/// from its test summary ([`crate::store::sqlite::run_tests`]), the names of its tests
/// and the messages of its failing ones only.
pub async fn load_tests(
    pool: &ReadPool,
    run_id: &str,
) -> Result<BTreeMap<String, TestResult>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => load_tests_sqlite(p, run_id).await,
        ReadPool::Postgres(p) => postgres::load_tests(p, run_id).await,
    }
}

/// [`load_tests`] on SQLite.
pub(crate) async fn load_tests_sqlite(
    pool: &SqlitePool,
    run_id: &str,
) -> Result<BTreeMap<String, TestResult>, sqlx::Error> {
    // One read transaction: the summary, the names and the messages agree.
    let mut tx = pool.begin().await?;
    let Some((run_key, summary)) = run_tests::of_run(&mut tx, run_id).await? else {
        return Ok(BTreeMap::new());
    };
    let names = run_tests::names(&mut tx, summary.iter().map(|t| t.key)).await?;
    let mut failing = Vec::new();
    if summary.iter().any(|t| t.worst.is_failure()) {
        failing = sqlx::query_as(
            "SELECT test_key, (SELECT body FROM texts WHERE text_key = c.message_key) \
             FROM cases c WHERE run_key = ? AND outcome IN (0, 1) ORDER BY outcome, chunk, idx",
        )
        .bind(run_key)
        .fetch_all(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    per_test(&summary, &names, failing)
}

/// Per-test results from a run's summary, the test ids of its keys and
/// its failing cases (test key, message) in the order the cases are stored
/// (worst outcome, chunk, index): the rules of [`load_tests`], for both
/// stores.
fn per_test(
    summary: &[TestSummary],
    names: &HashMap<i64, String>,
    failing: Vec<(i64, Option<String>)>,
) -> Result<BTreeMap<String, TestResult>, sqlx::Error> {
    let name = |key: i64| {
        names
            .get(&key)
            .ok_or_else(|| sqlx::Error::Protocol(format!("test key {key} unnamed")))
    };
    // The first failing case of each test has its message.
    let mut messages: HashMap<&str, Option<String>> = HashMap::new();
    for (key, message) in failing {
        messages.entry(name(key)?.as_str()).or_insert(message);
    }
    let mut tests: BTreeMap<String, TestResult> = BTreeMap::new();
    // A test id with several identities (keys) is one test: its worst
    // outcome, its durations added.
    for t in summary {
        let id = name(t.key)?;
        let message = || {
            let m = messages.get(id.as_str()).cloned().flatten();
            m.filter(|_| t.worst.is_failure())
        };
        tests
            .entry(id.clone())
            .and_modify(|r| {
                r.duration_secs += t.all_secs;
                if t.worst < r.outcome {
                    r.outcome = t.worst;
                    r.message = message();
                }
            })
            .or_insert_with(|| TestResult {
                outcome: t.worst,
                duration_secs: t.all_secs,
                message: message(),
            });
    }
    Ok(tests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(o: Outcome, secs: f64) -> TestResult {
        TestResult {
            outcome: o,
            duration_secs: secs,
            message: o.is_failure().then(|| format!("{} msg", o.as_str())),
        }
    }

    fn ids<T>(l: &Listed<T>, f: fn(&T) -> &str) -> Vec<String> {
        l.items.iter().map(|x| f(x).to_string()).collect()
    }

    fn tid(x: &Change) -> &str {
        &x.test_id
    }

    fn t(x: &Timing) -> &str {
        &x.test_id
    }

    #[test]
    fn every_class_of_change() {
        use Outcome::*;
        let base: BTreeMap<String, TestResult> = [
            ("a_keeps_passing", r(Passed, 1.0)),
            ("b_breaks", r(Passed, 1.0)),
            ("c_is_fixed", r(Failed, 1.0)),
            ("d_still_fails", r(Error, 1.0)),
            ("e_removed", r(Passed, 1.0)),
            ("f_gets_slow", r(Passed, 1.0)),
            ("g_gets_fast", r(Passed, 3.0)),
            ("h_skip_to_fail", r(Skipped, 0.0)),
            ("i_slightly_slower", r(Passed, 1.0)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let head: BTreeMap<String, TestResult> = [
            ("a_keeps_passing", r(Passed, 1.0)),
            ("b_breaks", r(Failed, 1.0)),
            ("c_is_fixed", r(Passed, 1.0)),
            ("d_still_fails", r(Failed, 1.0)),
            ("f_gets_slow", r(Passed, 2.5)),
            ("g_gets_fast", r(Passed, 1.0)),
            ("h_skip_to_fail", r(Failed, 0.1)),
            ("i_slightly_slower", r(Passed, 1.3)),
            ("j_new_and_failing", r(Error, 0.1)),
            ("k_new", r(Passed, 0.1)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let c = compare(&base, &head, 100, 0.5);
        assert_eq!(
            ids(&c.new_failures, tid),
            ["b_breaks", "h_skip_to_fail", "j_new_and_failing"]
        );
        assert_eq!(c.new_failures.items[0].base, Some("passed"));
        assert_eq!(c.new_failures.items[2].base, None);
        assert_eq!(
            c.new_failures.items[0].message.as_deref(),
            Some("failed msg")
        );
        assert_eq!(ids(&c.fixed, tid), ["c_is_fixed"]);
        assert_eq!(c.fixed.items[0].message.as_deref(), Some("failed msg"));
        assert_eq!(ids(&c.still_failing, tid), ["d_still_fails"]);
        assert_eq!(ids(&c.new_tests, tid), ["j_new_and_failing", "k_new"]);
        assert_eq!(ids(&c.removed_tests, tid), ["e_removed"]);
        assert_eq!(ids(&c.slower, t), ["f_gets_slow"]);
        assert_eq!(ids(&c.faster, t), ["g_gets_fast"]);
        // Tests in both: a b c d f g h i.
        let (b, h) = c.common_duration_secs;
        assert!((b - 9.0).abs() < 1e-9 && (h - 8.9).abs() < 1e-9, "{b} {h}");

        let cut = compare(&base, &head, 1, 0.5);
        assert_eq!(cut.new_failures.total, 3);
        assert_eq!(cut.new_failures.items.len(), 1);
    }
}
