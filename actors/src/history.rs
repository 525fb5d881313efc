//! One test over time, and the tests that take the time.
//!
//! - [`test_history`]: a test's outcome, duration, run, commit and worker in
//!   each run that had it, newest first: the newest [`HISTORY_LOOKBACK`]
//!   runs matching the filters are probed for the test through
//!   `cases_by_run_test`, by the run's and the test's integer keys (an
//!   index keyed by run first, so storing a run's cases stays a local
//!   insert; see migrations 0004 and 0014).
//!   A test recorded several times in one run (pytest writes a failure and a
//!   teardown error as two cases) is one entry: its worst outcome, its summed
//!   duration and the failure message.
//! - [`slow_tests`]: over the newest runs of a window, the slowest tests by
//!   median duration, and **duration regressions**: tests whose median over
//!   the most recent runs is at least `factor` times their median over the
//!   runs before and slower by at least `min_secs`. Medians, not means, so
//!   one stalled run neither makes a test slow nor hides a real slowdown.
//!   SQLite sums each test's cases per run and groups each test's durations
//!   into two JSON arrays (recent, baseline) in one pass; the medians are
//!   taken here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::flaky::{Runs, Window, push_scope};
use crate::model::{Counts, Outcome, from_millis};

/// A test in one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// Run id.
    pub run_id: String,
    /// Start of the run.
    #[serde(serialize_with = "crate::format::time")]
    pub started_at: DateTime<Utc>,
    /// Project.
    pub project: String,
    /// Branch.
    pub branch: Option<String>,
    /// Commit.
    pub commit: Option<String>,
    /// Worker.
    pub worker_id: String,
    /// Worst outcome of the test's cases in the run.
    pub outcome: Outcome,
    /// Summed duration, seconds.
    pub duration_secs: f64,
    /// Failed attempts before the final one.
    pub retries: u64,
    /// Passed only after retries.
    pub flaky: bool,
    /// Failure message (first 500 characters), when it failed.
    pub message: Option<String>,
}

/// A test's history with a summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestHistory {
    /// Test id.
    pub test_id: String,
    /// Entries listed.
    pub runs: usize,
    /// Entries by outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Pass rate of the entries, percent, by the one rule ([`Counts::pass_rate`]).
    #[serde(serialize_with = "crate::format::rate_opt")]
    pub pass_rate: Option<f64>,
    /// Median duration over the entries, seconds.
    pub median_duration_secs: Option<f64>,
    /// Entries, newest first.
    pub entries: Vec<HistoryEntry>,
}

/// Runs looked back over for a test's history.
pub const HISTORY_LOOKBACK: u32 = 2000;

/// The newest `limit` runs of `test_id` (narrowed to a project or branch),
/// among the newest [`HISTORY_LOOKBACK`] runs matching the filters.
pub async fn test_history(
    pool: &SqlitePool,
    test_id: &str,
    project: Option<&str>,
    branch: Option<&str>,
    limit: u32,
) -> Result<TestHistory, sqlx::Error> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "WITH recent AS (SELECT run_id, started_at, project, branch, commit_sha, worker_id \
         FROM runs WHERE 1 = 1",
    );
    if let Some(p) = project {
        q.push(" AND project = ").push_bind(p.to_string());
    }
    if let Some(b) = branch {
        q.push(" AND branch = ").push_bind(b.to_string());
    }
    q.push(" ORDER BY started_at DESC, run_id DESC LIMIT ")
        .push_bind(i64::from(HISTORY_LOOKBACK));
    q.push(
        ") SELECT r.run_id, r.started_at, r.project, r.branch, r.commit_sha, r.worker_id, \
                MIN(c.outcome) AS outcome, SUM(c.duration_secs) AS secs, SUM(c.retries) AS retries, \
                SUM(c.flaky) AS flaky, \
                (SELECT substr(body, 1, 500) FROM texts WHERE text_key = c.message_key) AS message \
         FROM recent r CROSS JOIN run_keys k CROSS JOIN cases c INDEXED BY cases_by_run_test \
         WHERE k.run_id = r.run_id AND c.run_key = k.run_key \
           AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = ",
    );
    q.push_bind(test_id.to_string());
    q.push(")");
    q.push(" GROUP BY r.run_id ORDER BY r.started_at DESC, r.run_id DESC LIMIT ")
        .push_bind(i64::from(limit));
    let rows = q.build().fetch_all(pool).await?;
    let mut entries = Vec::with_capacity(rows.len());
    for r in rows {
        let code: i64 = r.try_get("outcome")?;
        let outcome = Outcome::from_code(code).unwrap_or(Outcome::Error);
        entries.push(HistoryEntry {
            run_id: r.try_get("run_id")?,
            started_at: from_millis(r.try_get("started_at")?),
            project: r.try_get("project")?,
            branch: r.try_get("branch")?,
            commit: r.try_get("commit_sha")?,
            worker_id: r.try_get("worker_id")?,
            outcome,
            duration_secs: r.try_get("secs")?,
            retries: r.try_get::<i64, _>("retries")?.max(0) as u64,
            flaky: outcome == Outcome::Passed && r.try_get::<i64, _>("flaky")? > 0,
            message: if outcome.is_failure() {
                r.try_get("message")?
            } else {
                None
            },
        });
    }
    let mut outcomes = BTreeMap::new();
    for e in &entries {
        *outcomes.entry(e.outcome.as_str()).or_default() += 1;
    }
    let get = |o: Outcome| outcomes.get(o.as_str()).copied().unwrap_or(0);
    let pass_rate = Counts {
        total: entries.len() as u64,
        passed: get(Outcome::Passed),
        failed: get(Outcome::Failed),
        error: get(Outcome::Error),
        skipped: get(Outcome::Skipped),
        xfailed: get(Outcome::Xfailed),
        xpassed: get(Outcome::Xpassed),
    }
    .pass_rate();
    let mut durations: Vec<f64> = entries.iter().map(|e| e.duration_secs).collect();
    Ok(TestHistory {
        test_id: test_id.to_string(),
        runs: entries.len(),
        pass_rate,
        median_duration_secs: median(&mut durations),
        outcomes,
        entries,
    })
}

/// Median of `xs` (reordered); `None` when empty.
pub fn median(xs: &mut [f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// How slow-test questions are asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowRule {
    /// The newest this many runs of the window are "recent"; the rest the
    /// baseline.
    pub recent: u32,
    /// A regression is at least this many times the baseline median...
    pub factor: f64,
    /// ...and at least this many seconds slower.
    pub min_secs: f64,
}

impl Default for SlowRule {
    fn default() -> SlowRule {
        SlowRule {
            recent: 5,
            factor: 1.5,
            min_secs: 0.1,
        }
    }
}

/// A slow test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowTest {
    /// Project.
    pub project: String,
    /// Test id.
    pub test_id: String,
    /// Median duration over the window, seconds.
    pub median_secs: f64,
    /// Longest, seconds.
    pub max_secs: f64,
    /// Runs it ran in.
    pub runs: usize,
}

/// A test that got slower.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regression {
    /// Project.
    pub project: String,
    /// Test id.
    pub test_id: String,
    /// Median over the recent runs, seconds.
    pub recent_median_secs: f64,
    /// Median over the baseline runs, seconds.
    pub baseline_median_secs: f64,
    /// Recent minus baseline, seconds.
    pub change_secs: f64,
    /// Recent over baseline (`null` when the baseline is 0 s).
    pub factor: Option<f64>,
    /// Recent runs it ran in.
    pub recent_runs: usize,
    /// Baseline runs it ran in.
    pub baseline_runs: usize,
}

/// Slowest tests and regressions of a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowReport {
    /// Runs looked at (newest first: `recent` of them are recent).
    pub runs_considered: u64,
    /// Tests that ran in them.
    pub tests_seen: usize,
    /// The slowest tests by median, first `limit`.
    pub slowest: Vec<SlowTest>,
    /// Regressions found.
    pub regressions_total: usize,
    /// The biggest regressions (seconds gained), first `limit`.
    pub regressions: Vec<Regression>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The pure part of [`slow_tests`]: per test, its per-run durations in the
/// recent and baseline runs.
pub fn judge_slow(
    tests: Vec<(String, String, Vec<f64>, Vec<f64>)>,
    rule: SlowRule,
    limit: usize,
) -> (usize, Vec<SlowTest>, usize, Vec<Regression>) {
    let seen = tests.len();
    let mut slowest = Vec::with_capacity(seen);
    let mut regressions = Vec::new();
    for (project, test_id, mut recent, mut baseline) in tests {
        let mut all: Vec<f64> = recent.iter().chain(&baseline).copied().collect();
        let max = all.iter().copied().fold(0.0, f64::max);
        let runs = all.len();
        let Some(m) = median(&mut all) else { continue };
        let (rn, bn) = (recent.len(), baseline.len());
        if let (Some(r), Some(b)) = (median(&mut recent), median(&mut baseline))
            && r - b >= rule.min_secs
            && r >= rule.factor * b
        {
            regressions.push(Regression {
                project: project.clone(),
                test_id: test_id.clone(),
                recent_median_secs: round3(r),
                baseline_median_secs: round3(b),
                change_secs: round3(r - b),
                factor: (b > 0.0).then(|| (r / b * 100.0).round() / 100.0),
                recent_runs: rn,
                baseline_runs: bn,
            });
        }
        slowest.push(SlowTest {
            project,
            test_id,
            median_secs: round3(m),
            max_secs: round3(max),
            runs,
        });
    }
    let by = |a: f64, b: f64| b.total_cmp(&a);
    slowest
        .sort_by(|a, b| by(a.median_secs, b.median_secs).then_with(|| a.test_id.cmp(&b.test_id)));
    slowest.truncate(limit);
    regressions
        .sort_by(|a, b| by(a.change_secs, b.change_secs).then_with(|| a.test_id.cmp(&b.test_id)));
    let total = regressions.len();
    regressions.truncate(limit);
    (seen, slowest, total, regressions)
}

/// The slowest tests and the duration regressions of a window's runs.
pub async fn slow_tests(
    pool: &SqlitePool,
    w: &Window,
    rule: SlowRule,
    limit: usize,
) -> Result<SlowReport, sqlx::Error> {
    let mut q = QueryBuilder::<Sqlite>::new("");
    push_scope(&mut q, w, Runs::Complete);
    q.push(
        ", ranked AS (SELECT run_id, project, ROW_NUMBER() OVER (ORDER BY started_at DESC, run_id DESC) AS pos FROM scope), \
         per AS (SELECT k.project, c.test_id, k.pos, SUM(c.duration_secs) AS secs \
                 FROM ranked k JOIN test_cases c ON c.run_id = k.run_id AND c.outcome IN (0, 1, 2, 3) \
                 WHERE 1 = 1",
    );
    crate::owners::push_filter(&mut q, &w.tests, "k.project", "c.test_id");
    q.push(
        " GROUP BY k.run_id, c.test_id) \
         SELECT project, test_id, \
                json_group_array(secs) FILTER (WHERE pos <= ",
    );
    q.push_bind(i64::from(rule.recent));
    q.push(") AS recent, json_group_array(secs) FILTER (WHERE pos > ");
    q.push_bind(i64::from(rule.recent));
    q.push(
        ") AS baseline, (SELECT COUNT(*) FROM scope) AS considered \
         FROM per GROUP BY project, test_id",
    );
    let rows = q.build().fetch_all(pool).await?;
    let mut considered = 0i64;
    let mut tests = Vec::with_capacity(rows.len());
    for r in rows {
        considered = r.try_get("considered")?;
        let parse = |col: &str| -> Result<Vec<f64>, sqlx::Error> {
            let s: String = r.try_get(col)?;
            serde_json::from_str::<Vec<Option<f64>>>(&s)
                .map(|v| v.into_iter().flatten().collect())
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))
        };
        tests.push((
            r.try_get("project")?,
            r.try_get("test_id")?,
            parse("recent")?,
            parse("baseline")?,
        ));
    }
    let (seen, slowest, total, regressions) = judge_slow(tests, rule, limit);
    Ok(SlowReport {
        runs_considered: considered.max(0) as u64,
        tests_seen: seen,
        slowest,
        regressions_total: total,
        regressions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn regressions_need_factor_and_seconds_and_ignore_one_stall() {
        let t = |id: &str, recent: &[f64], base: &[f64]| {
            (
                "p".to_string(),
                id.to_string(),
                recent.to_vec(),
                base.to_vec(),
            )
        };
        let (seen, slowest, total, regs) = judge_slow(
            vec![
                // 1 s → 3 s: a regression.
                t("slower", &[3.0, 3.1, 2.9], &[1.0, 1.1, 0.9, 1.0]),
                // 10 ms → 40 ms: 4x but only 30 ms: not one.
                t("tiny", &[0.04, 0.04, 0.04], &[0.01, 0.01, 0.01]),
                // One stalled recent run: the median does not move.
                t("stall", &[9.0, 1.0, 1.0], &[1.0, 1.0, 1.0]),
                // 2 s → 2.5 s: slower by 0.5 s but only 1.25x.
                t("steady", &[2.5, 2.5], &[2.0, 2.0]),
                t("new", &[5.0], &[]),
            ],
            SlowRule::default(),
            10,
        );
        assert_eq!(seen, 5);
        assert_eq!(total, 1);
        assert_eq!(regs[0].test_id, "slower");
        assert_eq!(
            (regs[0].recent_median_secs, regs[0].baseline_median_secs),
            (3.0, 1.0)
        );
        assert_eq!(regs[0].factor, Some(3.0));
        let order: Vec<&str> = slowest.iter().map(|s| s.test_id.as_str()).collect();
        assert_eq!(order, ["new", "steady", "slower", "stall", "tiny"]);
        assert_eq!(slowest[3].max_secs, 9.0);
    }
}
