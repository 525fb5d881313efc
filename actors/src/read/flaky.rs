//! Flaky tests: tests whose outcome changes without the code changing.
//!
//! A test is flaky, within a window of recent runs, when any of these holds:
//! - **same commit**: it both passed and failed (or errored) on one commit,
//!   across runs (a re-run of the same CI job, two workers, a retry);
//! - **passed on retry**: a run recorded it passing after failed attempts
//!   (surefire `flakyFailure`, nextest retries, pytest-rerunfailures);
//! - **flip rate**: on a branch, consecutive runs flip between pass and fail
//!   at least `min_flips` times and in at least `threshold` of the
//!   transitions. One flip is a break or a fix, not flakiness.
//!
//! Runs where most tests failed (an outage: broken environment, lost
//! database) are left out of the window, so they make nobody flaky. Runs
//! that carried failures only (the original system's payload) are left out
//! too: a missing pass is not a pass. Skipped and expected-failure cases are
//! no verdict either way.
//!
//! Marking a test fixed (`writer::ClearFlaky`) hides the evidence of
//! runs that started before the mark; the test is flaky again only if it
//! flips after the fix.
//!
//! The judgement is a pure function ([`judge`]) of a test's verdicts over
//! time; [`find_flaky`] loads only the tests that failed or were retried in
//! the window (narrowed to an owner's or to named tests by
//! [`Window::tests`]) (through the failure-first case index and a partial index of
//! retried cases) and then their verdicts.
//!
//! Verdicts are kept by the store (`store::sqlite::evidence`, migration 0007): a
//! test is *tracked* from the first complete, non-outage run in which it
//! failed or passed on retry, and from then on every such run stores its
//! verdict as one small row, appended with the run's other rows (keyed by
//! the run's completion order first, so storing them stays local). A
//! window's candidates (tests that failed or were retried in it) and their
//! verdicts are then read run by run from those rows. When a test becomes
//! tracked, its verdicts in the project's [`BACKFILL_RUNS`] newest evidence
//! runs before that are written too (migration 0017),
//! so a recent window is read from kept rows alone even when its tests
//! started failing inside it. For runs that completed before that range
//! (and runs stored before migration 0007), a candidate's verdict is read
//! from the cases as before: one probe
//! of `cases_by_run_test` per (candidate, run), the join order forced
//! with `CROSS JOIN` (without statistics SQLite would rather read every case
//! of the window's runs). Both paths give the same verdicts; the property
//! test (`props.rs`) checks it on random histories. The kept rows are read
//! for every tracked test of the window's runs, candidate or not: a test
//! that neither failed nor was retried in the window has only passes there
//! and is judged not flaky, and every join is by a key or an index, never
//! by an index SQLite would have to build per query (the bundled SQLite
//! declined to, and read the candidates once per verdict row: 15 s instead
//! of 40 ms on the bench's fixture). The failure messages shown are read
//! last, only for the tests listed.
//!
//! Cost: tracked tests are those that ever failed or were retried in the
//! project; each complete, non-outage run stores one row per tracked test
//! it has a verdict for (small: two keys and two flags).
//!
//! Backends: the window is one SQL for both (`push_scope`, and the
//! counts of what it left out); each backend reads the verdicts its own
//! way (SQLite packed into one JSON value, PostgreSQL as typed rows, in
//! `postgres`), and `rank` judges, orders and cuts for both, so the
//! answers are the same (the parity test asks both).

pub(crate) mod postgres;

use crate::read::ReadPool;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Database, Encode, QueryBuilder, Sqlite, SqliteConnection, SqlitePool, Type};

use crate::json_rows;
use crate::model::{from_millis, to_millis};
use crate::owners::{TestSet, push_filter};
use crate::store::rules::outage_sql;
pub use crate::store::rules::{BACKFILL_RUNS, DEFAULT_RUNS, OUTAGE_MIN_VERDICTS};

/// A test's verdict in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The run.
    pub run_id: String,
    /// Its branch.
    pub branch: Option<String>,
    /// Its commit.
    pub commit: Option<String>,
    /// Its start, epoch milliseconds.
    pub started_at: i64,
    /// Whether the test failed or errored in the run (any of its cases).
    pub failed: bool,
    /// Whether the test passed only after failed attempts in the run.
    pub retried: bool,
    /// The first failure message, when it failed.
    pub message: Option<String>,
}

/// When a flip rate makes a test flaky.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlipRule {
    /// Smallest share of transitions that flip, 0..=1.
    pub threshold: f64,
    /// Fewest flips.
    pub min_flips: usize,
}

impl Default for FlipRule {
    fn default() -> FlipRule {
        FlipRule {
            threshold: 0.3,
            min_flips: 2,
        }
    }
}

/// A commit on which a test both passed and failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitEvidence {
    /// Commit sha.
    pub commit: String,
    /// Runs of this commit where the test passed.
    pub passed_runs: Vec<String>,
    /// Runs of this commit where it failed.
    pub failed_runs: Vec<String>,
}

/// A flaky test with the evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlakyTest {
    /// Project.
    pub project: String,
    /// Test id.
    pub test_id: String,
    /// Why: any of `same_commit`, `passed_on_retry`, `flip_rate`.
    pub reasons: Vec<&'static str>,
    /// Flips per transition between consecutive runs on a branch, 0..=1.
    pub flip_rate: f64,
    /// Pass/fail flips between consecutive runs on a branch.
    pub flips: usize,
    /// Runs in the window with a verdict for the test.
    pub runs: usize,
    /// Of those, runs where it failed.
    pub failed_runs: usize,
    /// Runs where it passed only after retries.
    pub retried_runs: usize,
    /// Commits where it both passed and failed (at most 5).
    pub commits: Vec<CommitEvidence>,
    /// Runs where it failed or was retried, newest first (at most 10).
    pub evidence_runs: Vec<String>,
    /// Start of the oldest run with a failure or retry in the window.
    #[serde(serialize_with = "crate::format::time")]
    pub first_seen: DateTime<Utc>,
    /// Start of the newest such run.
    #[serde(serialize_with = "crate::format::time")]
    pub last_seen: DateTime<Utc>,
    /// The newest failure message.
    pub last_message: Option<String>,
}

/// Judges one test from its verdicts (any order). `None`: not flaky.
pub fn judge(
    project: &str,
    test_id: &str,
    obs: &[Observation],
    rule: FlipRule,
) -> Option<FlakyTest> {
    let mut obs: Vec<&Observation> = obs.iter().collect();
    obs.sort_by(|a, b| (a.started_at, &a.run_id).cmp(&(b.started_at, &b.run_id)));

    // Flips along each branch's sequence of runs.
    let mut by_branch: BTreeMap<Option<&str>, Vec<bool>> = BTreeMap::new();
    for o in &obs {
        by_branch
            .entry(o.branch.as_deref())
            .or_default()
            .push(o.failed);
    }
    let (mut flips, mut transitions) = (0usize, 0usize);
    for seq in by_branch.values() {
        transitions += seq.len().saturating_sub(1);
        flips += seq.windows(2).filter(|w| w[0] != w[1]).count();
    }
    let flip_rate = if transitions == 0 {
        0.0
    } else {
        flips as f64 / transitions as f64
    };

    // Both outcomes on one commit.
    let mut by_commit: BTreeMap<&str, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for o in &obs {
        if let Some(c) = o.commit.as_deref().filter(|c| !c.is_empty()) {
            let e = by_commit.entry(c).or_default();
            if o.failed { &mut e.1 } else { &mut e.0 }.push(o.run_id.clone());
        }
    }
    let commits: Vec<CommitEvidence> = by_commit
        .into_iter()
        .filter(|(_, (p, f))| !p.is_empty() && !f.is_empty())
        .map(|(c, (p, f))| CommitEvidence {
            commit: c.to_string(),
            passed_runs: p,
            failed_runs: f,
        })
        .collect();

    let retried_runs = obs.iter().filter(|o| o.retried).count();
    let mut reasons = Vec::new();
    if !commits.is_empty() {
        reasons.push("same_commit");
    }
    if retried_runs > 0 {
        reasons.push("passed_on_retry");
    }
    if flips >= rule.min_flips && flip_rate >= rule.threshold {
        reasons.push("flip_rate");
    }
    if reasons.is_empty() {
        return None;
    }
    let evidence: Vec<&&Observation> = obs.iter().filter(|o| o.failed || o.retried).collect();
    let first = evidence.first()?;
    let last = evidence.last()?;
    Some(FlakyTest {
        project: project.to_string(),
        test_id: test_id.to_string(),
        reasons,
        flip_rate: (flip_rate * 1000.0).round() / 1000.0,
        flips,
        runs: obs.len(),
        failed_runs: obs.iter().filter(|o| o.failed).count(),
        retried_runs,
        commits: commits.into_iter().rev().take(5).collect(),
        evidence_runs: evidence
            .iter()
            .rev()
            .take(10)
            .map(|o| o.run_id.clone())
            .collect(),
        first_seen: from_millis(first.started_at),
        last_seen: from_millis(last.started_at),
        last_message: evidence.iter().rev().find_map(|o| o.message.clone()),
    })
}

/// Which runs to look at.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Only this project.
    pub project: Option<String>,
    /// Only this branch.
    pub branch: Option<String>,
    /// Only runs started at or after this.
    pub since: Option<DateTime<Utc>>,
    /// At most this many of the newest runs (after leaving out outages).
    pub runs: u32,
    /// Only these tests (an owner's, or named ones of `project`); the runs
    /// considered stay the window's.
    pub tests: TestSet,
}

/// The flaky tests of a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlakyReport {
    /// Runs looked at.
    pub runs_considered: u64,
    /// Runs in the same range left out as outages (most tests failed).
    pub outages_excluded: u64,
    /// Runs in the same range left out because they carried failures only
    /// (the original system's payload): a missing pass is not a pass.
    pub failures_only_excluded: u64,
    /// Flaky tests found.
    pub total: usize,
    /// The first `limit`, most evidence first.
    pub tests: Vec<FlakyTest>,
}

/// Which of a window's runs a question reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runs {
    /// Runs that carried every case and are not outages: evidence that a
    /// test passed as well as failed (flaky tests).
    Evidence,
    /// Runs that carried every case (durations of every test).
    Complete,
    /// Every run, those that carried failures only (the original system's
    /// payload) too: their failures are all there (failure clusters).
    All,
}

/// Pushes `WHERE ...` selecting the window's runs (without the outage rule).
/// The SQL is the same on both backends.
fn push_window<DB: Database>(q: &mut QueryBuilder<DB>, w: &Window, runs: Runs)
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    q.push(" WHERE ");
    q.push(match runs {
        Runs::Evidence | Runs::Complete => "cases_complete = 1",
        Runs::All => "1 = 1",
    });
    if let Some(p) = &w.project {
        q.push(" AND project = ").push_bind(p.clone());
    }
    if let Some(b) = &w.branch {
        q.push(" AND branch = ").push_bind(b.clone());
    }
    if let Some(t) = w.since {
        q.push(" AND started_at >= ").push_bind(to_millis(t));
    }
}

/// Pushes the `scope` CTE: the window's newest `runs`, numbered from 0
/// (newest) in `n`. The SQL is the same on both backends.
pub(crate) fn push_scope<DB: Database>(q: &mut QueryBuilder<DB>, w: &Window, runs: Runs)
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    q.push(
        "WITH scope AS (SELECT *, ROW_NUMBER() OVER (ORDER BY started_at DESC, run_id DESC) - 1 \
         AS n FROM (SELECT run_id, project, branch, commit_sha, started_at, worker_id, seq \
         FROM runs",
    );
    push_window(q, w, runs);
    if runs == Runs::Evidence {
        q.push(" AND NOT ").push(outage_sql());
    }
    q.push(" ORDER BY started_at DESC, run_id DESC LIMIT ")
        .push_bind(i64::from(w.runs))
        .push(") AS newest)");
}

/// A run of the window, by its number.
#[derive(Deserialize)]
pub(crate) struct ScopeRun {
    /// Its position in the scope, 0 the newest.
    pub n: i64,
    /// The run.
    pub run_id: String,
    /// Its branch.
    pub branch: Option<String>,
    /// Its commit.
    pub commit_sha: Option<String>,
    /// Its start, epoch milliseconds.
    pub started_at: i64,
}

/// A test's verdicts in the window: `n,failed,retried` per run (`n` the
/// run's number, the flags 0 or 1), `;` between runs.
#[derive(Deserialize)]
struct VerdictRow {
    project: String,
    test_id: String,
    obs: String,
}

/// Where a window's verdicts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evidence {
    /// The rows the writer kept, and the cases for what they do not cover.
    Kept,
    /// The cases only: the plain recomputation the tests compare with.
    #[cfg(test)]
    Cases,
}

/// Finds the flaky tests of a window, most evidence first.
pub async fn find_flaky(
    pool: &ReadPool,
    w: &Window,
    rule: FlipRule,
    limit: usize,
) -> Result<FlakyReport, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => find_flaky_sqlite(p, w, rule, limit).await,
        ReadPool::Postgres(p) => postgres::find_flaky(p, w, rule, limit).await,
    }
}

/// [`find_flaky`] on SQLite.
pub(crate) async fn find_flaky_sqlite(
    pool: &SqlitePool,
    w: &Window,
    rule: FlipRule,
    limit: usize,
) -> Result<FlakyReport, sqlx::Error> {
    find_flaky_from(pool, w, rule, limit, Evidence::Kept).await
}

pub(crate) async fn find_flaky_from(
    pool: &SqlitePool,
    w: &Window,
    rule: FlipRule,
    limit: usize,
    evidence: Evidence,
) -> Result<FlakyReport, sqlx::Error> {
    // The window's runs once, numbered; then, as one JSON value, each
    // test's verdicts as a few bytes per run (tens of thousands of them on
    // a suite with many unstable tests) instead of an object repeating the
    // run's fields.
    let mut q = json_rows::select(&["n", "run_id", "branch", "commit_sha", "started_at"], "n");
    push_scope(&mut q, w, Runs::Evidence);
    q.push(" SELECT n, run_id, branch, commit_sha, started_at FROM scope");
    // Every read below in one transaction: one snapshot of the store, so
    // the runs numbered here are the runs the verdicts are numbered against
    // even when a run is stored meanwhile.
    let mut tx = pool.begin().await?;
    let mut runs: Vec<ScopeRun> = json_rows::fetch(q, &mut *tx).await?;
    runs.sort_by_key(|r| r.n);
    let mut q = json_rows::select(&["project", "test_id", "obs"], "project, test_id");
    push_scope(&mut q, w, Runs::Evidence);
    let kept = match evidence {
        Evidence::Kept => "1",
        #[cfg(test)]
        Evidence::Cases => "0",
    };
    q.push(format_args!(
        ", cand0 AS (\
           SELECT DISTINCT s.project, t.test_id FROM scope s \
             CROSS JOIN verdicts v JOIN tracked_tests t ON t.key = v.key \
             WHERE {kept} AND v.seq = s.seq AND (v.failed OR v.retried) \
           UNION \
           SELECT s.project, t.test_id FROM scope s \
             CROSS JOIN run_keys k CROSS JOIN cases c CROSS JOIN tests t \
             WHERE (NOT {kept} OR s.seq IS NULL) AND k.run_id = s.run_id \
               AND c.run_key = k.run_key AND c.outcome IN (0, 1) AND t.test_key = c.test_key \
           UNION \
           SELECT s.project, t.test_id FROM scope s \
             CROSS JOIN run_keys k CROSS JOIN cases c INDEXED BY cases_retried CROSS JOIN tests t \
             WHERE (NOT {kept} OR s.seq IS NULL) AND k.run_id = s.run_id \
               AND c.run_key = k.run_key AND c.flaky = 1 AND t.test_key = c.test_key), \
         cand AS (SELECT project, test_id FROM cand0 WHERE 1 = 1"
    ));
    push_filter(&mut q, &w.tests, "project", "test_id");
    q.push(format_args!(
        "), \
         ck AS (SELECT k.project, k.test_id, t.key, \
                  CASE WHEN {kept} THEN t.since_seq END AS since_seq, \
                  f.cleared_at FROM cand k \
                LEFT JOIN tracked_tests t ON t.project = k.project AND t.test_id = k.test_id \
                LEFT JOIN flaky_cleared f ON f.project = k.project AND f.test_id = k.test_id), \
         seen AS (\
           SELECT s.project, t.test_id, s.n, v.failed, v.retried \
           FROM scope s CROSS JOIN verdicts v CROSS JOIN tracked_tests t \
           LEFT JOIN flaky_cleared f ON f.project = t.project AND f.test_id = t.test_id \
           WHERE {kept} AND v.seq = s.seq AND t.key = v.key AND t.project = s.project \
             AND s.seq >= t.since_seq AND s.started_at > COALESCE(f.cleared_at, -1)"
    ));
    push_filter(&mut q, &w.tests, "t.project", "t.test_id");
    q.push(format_args!(
        " \
           UNION ALL \
           SELECT s.project, ck.test_id, s.n, MIN(c.outcome) <= 1, SUM(c.flaky) > 0 \
           FROM ck \
           CROSS JOIN tests t \
           CROSS JOIN scope s \
           CROSS JOIN run_keys k \
           CROSS JOIN cases c INDEXED BY cases_by_run_test \
           WHERE t.test_id = ck.test_id AND s.project = ck.project AND k.run_id = s.run_id \
             AND c.run_key = k.run_key AND c.test_key = t.test_key \
             AND c.outcome IN (0, 1, 3) AND s.started_at > COALESCE(ck.cleared_at, -1) \
             AND (ck.since_seq IS NULL OR s.seq IS NULL OR s.seq < ck.since_seq) \
           GROUP BY s.project, ck.test_id, s.n) \
         SELECT project, test_id, group_concat(n || ',' || failed || ',' || retried, ';') AS obs \
         FROM seen GROUP BY project, test_id"
    ));
    let rows: Vec<VerdictRow> = json_rows::fetch(q, &mut *tx).await?;
    let bad = |what: &str| sqlx::Error::Decode(format!("flaky verdicts: {what}").into());
    let mut verdicts = Vec::with_capacity(rows.len());
    for r in rows {
        let mut seen = Vec::new();
        for one in r.obs.split(';') {
            let mut parts = one.split(',');
            let (Some(n), Some(f), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad(one));
            };
            seen.push(Verdict {
                n: n.parse::<i64>().map_err(|_| bad(one))?,
                failed: f == "1",
                retried: t == "1",
            });
        }
        verdicts.push(((r.project, r.test_id), seen));
    }
    let (total, found) = rank(&runs, verdicts, rule, limit)?;
    let mut listed = Vec::with_capacity(found.len());
    for (mut f, obs) in found {
        f.last_message = last_message(&mut tx, &f.test_id, &obs).await?;
        listed.push(f);
    }

    let (considered, outages, failures_only) = window_counts(&mut tx, w).await?;
    tx.commit().await?;
    Ok(FlakyReport {
        runs_considered: considered,
        outages_excluded: outages,
        failures_only_excluded: failures_only,
        total,
        tests: listed,
    })
}

/// A test's verdict in the window's run numbered `n` (as read, before
/// [`rank`] makes it an [`Observation`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verdict {
    /// The run's number in the scope (0: newest).
    pub n: i64,
    /// Whether it failed or errored in the run.
    pub failed: bool,
    /// Whether the run recorded it passing after failed attempts.
    pub retried: bool,
}

/// The decision of both backends, from the window's runs (numbered, `n`
/// their position) and each (project, test)'s verdicts: the tests
/// [`judge`] names, most evidence first, and how many; the first `limit`
/// listed with their observations (for [`newest_failures`]).
#[allow(clippy::type_complexity)]
pub(crate) fn rank(
    runs: &[ScopeRun],
    verdicts: impl IntoIterator<Item = ((String, String), Vec<Verdict>)>,
    rule: FlipRule,
    limit: usize,
) -> Result<(usize, Vec<(FlakyTest, Vec<Observation>)>), sqlx::Error> {
    let mut tests: BTreeMap<(String, String), Vec<Observation>> = BTreeMap::new();
    for (test, seen) in verdicts {
        let obs = tests.entry(test).or_default();
        for v in seen {
            let run = usize::try_from(v.n)
                .ok()
                .and_then(|n| runs.get(n))
                .filter(|r| r.n == v.n)
                .ok_or_else(|| {
                    sqlx::Error::Decode(
                        format!("flaky verdicts: run number {} is not in the window", v.n).into(),
                    )
                })?;
            obs.push(Observation {
                run_id: run.run_id.clone(),
                branch: run.branch.clone(),
                commit: run.commit_sha.clone(),
                started_at: run.started_at,
                failed: v.failed,
                retried: !v.failed && v.retried,
                message: None,
            });
        }
    }
    let mut found: Vec<(FlakyTest, Vec<Observation>)> = tests
        .into_iter()
        .filter_map(|((p, t), obs)| judge(&p, &t, &obs, rule).map(|f| (f, obs)))
        .collect();
    found.sort_by(|(a, _), (b, _)| {
        (b.reasons.len(), b.flip_rate, b.last_seen)
            .partial_cmp(&(a.reasons.len(), a.flip_rate, a.last_seen))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.test_id.cmp(&b.test_id))
    });
    let total = found.len();
    found.truncate(limit);
    Ok((total, found))
}

/// The runs of `obs` where the test failed, newest first: where its last
/// message is looked for, in this order, until one has a message.
pub(crate) fn newest_failures(obs: &[Observation]) -> Vec<&Observation> {
    let mut failed: Vec<&Observation> = obs.iter().filter(|o| o.failed).collect();
    failed.sort_by(|a, b| (b.started_at, &b.run_id).cmp(&(a.started_at, &a.run_id)));
    failed
}

/// The message of the test's newest failure in `obs` that has one (the
/// first 300 characters of its worst case's message, first in report
/// order).
async fn last_message(
    conn: &mut SqliteConnection,
    test_id: &str,
    obs: &[Observation],
) -> Result<Option<String>, sqlx::Error> {
    for o in newest_failures(obs) {
        let m: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT (SELECT substr(body, 1, 300) FROM texts WHERE text_key = c.message_key) \
             FROM run_keys k CROSS JOIN cases c INDEXED BY cases_by_run_test \
             WHERE k.run_id = ? AND c.run_key = k.run_key \
               AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = ?) AND c.outcome IN (0, 1) \
             ORDER BY c.outcome, c.chunk, c.idx LIMIT 1",
        )
        .bind(&o.run_id)
        .bind(test_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((Some(m),)) = m {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// The query counting the window's runs and giving the oldest start
/// (`COUNT(*)`, `COALESCE(MIN(started_at), 0)`): the same SQL on both
/// backends.
pub(crate) fn scope_count_sql<DB: Database>(w: &Window) -> QueryBuilder<DB>
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new("");
    push_scope(&mut q, w, Runs::Evidence);
    q.push(" SELECT COUNT(*), COALESCE(MIN(started_at), 0) FROM scope");
    q
}

/// The two queries counting the runs left out of a window that held `n`
/// runs starting from `oldest` ([`scope_count_sql`]): the outages among
/// the complete runs, and the runs that carried failures only. Among the
/// same newest runs when the window is full; of a window holding nothing
/// else, at most its `runs`. The same SQL on both backends.
pub(crate) fn left_out_sql<DB: Database>(w: &Window, n: i64, oldest: i64) -> [QueryBuilder<DB>; 2]
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    let full = n > 0 && i64::from(w.runs) == n;
    [
        (Runs::Complete, outage_sql(), i64::MAX),
        (
            Runs::All,
            "cases_complete = 0".to_string(),
            i64::from(w.runs),
        ),
    ]
    .map(|(which, rule, at_most)| {
        let mut q = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM (SELECT 1 FROM runs");
        push_window(&mut q, w, which);
        q.push(" AND ").push(rule);
        if full {
            q.push(" AND started_at >= ").push_bind(oldest);
        }
        q.push(" LIMIT ").push_bind(at_most).push(") AS left_out");
        q
    })
}

/// Runs in the window, and among the same newest runs the outages and the
/// runs that carried failures only, left out.
async fn window_counts(
    conn: &mut SqliteConnection,
    w: &Window,
) -> Result<(u64, u64, u64), sqlx::Error> {
    let (n, oldest): (i64, i64) = scope_count_sql::<Sqlite>(w)
        .build_query_as()
        .fetch_one(&mut *conn)
        .await?;
    let mut left_out = [0u64; 2];
    for (slot, mut q) in left_out_sql::<Sqlite>(w, n, oldest).into_iter().enumerate() {
        let (k,): (i64,) = q.build_query_as().fetch_one(&mut *conn).await?;
        left_out[slot] = k.max(0) as u64;
    }
    Ok((n.max(0) as u64, left_out[0], left_out[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(run: &str, branch: &str, commit: &str, t: i64, failed: bool) -> Observation {
        Observation {
            run_id: run.into(),
            branch: Some(branch.into()),
            commit: Some(commit.into()),
            started_at: t,
            failed,
            retried: false,
            message: failed.then(|| format!("boom in {run}")),
        }
    }

    #[test]
    fn pass_and_fail_on_one_commit_is_flaky() {
        let obs = [
            o("r1", "main", "c1", 1, false),
            o("r2", "main", "c1", 2, true),
        ];
        let f = judge("p", "t", &obs, FlipRule::default()).expect("flaky");
        assert_eq!(f.reasons, vec!["same_commit"]);
        assert_eq!(f.commits[0].passed_runs, vec!["r1"]);
        assert_eq!(f.commits[0].failed_runs, vec!["r2"]);
        assert_eq!(f.flips, 1);
        assert_eq!(f.last_message.as_deref(), Some("boom in r2"));
    }

    #[test]
    fn a_break_and_a_fix_are_not_flaky() {
        // Fails from c3 to c6, fixed in c7: two flips in nine transitions.
        let obs: Vec<Observation> = (1..=10)
            .map(|i| {
                o(
                    &format!("r{i}"),
                    "main",
                    &format!("c{i}"),
                    i,
                    (3..=6).contains(&i),
                )
            })
            .collect();
        assert_eq!(judge("p", "t", &obs, FlipRule::default()), None);
        // Always failing, or one break: not flaky either.
        let obs: Vec<Observation> = (1..=5)
            .map(|i| o(&format!("r{i}"), "main", &format!("c{i}"), i, i >= 3))
            .collect();
        assert_eq!(judge("p", "t", &obs, FlipRule::default()), None);
    }

    #[test]
    fn flipping_on_a_branch_is_flaky_and_branches_do_not_mix() {
        let obs: Vec<Observation> = (1..=6)
            .map(|i| o(&format!("r{i}"), "main", &format!("c{i}"), i, i % 2 == 0))
            .collect();
        let f = judge("p", "t", &obs, FlipRule::default()).expect("flaky");
        assert_eq!(f.reasons, vec!["flip_rate"]);
        assert_eq!((f.flips, f.runs, f.failed_runs), (5, 6, 3));
        assert_eq!(f.flip_rate, 1.0);
        assert_eq!(f.evidence_runs, vec!["r6", "r4", "r2"]);
        // Failing on a feature branch while passing on main, interleaved in
        // time: each branch is steady, so no flips.
        let obs: Vec<Observation> = (1..=6)
            .map(|i| {
                let b = if i % 2 == 0 { "feature" } else { "main" };
                o(&format!("r{i}"), b, &format!("c{i}"), i, b == "feature")
            })
            .collect();
        assert_eq!(judge("p", "t", &obs, FlipRule::default()), None);
    }

    #[test]
    fn passing_on_retry_is_flaky() {
        let mut r = o("r1", "main", "c1", 1, false);
        r.retried = true;
        let f = judge("p", "t", &[r], FlipRule::default()).expect("flaky");
        assert_eq!(f.reasons, vec!["passed_on_retry"]);
        assert_eq!(f.retried_runs, 1);
        assert_eq!(f.evidence_runs, vec!["r1"]);
    }
}
