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
//!   It reads no case: the window's runs (newest first) and their per-run
//!   test summaries ([`crate::store::sqlite::run_tests`], one blob per run, written with
//!   the run), merged here per (project, test key) into recent and
//!   baseline durations. A test counts in a run when it has a case that ran
//!   (outcome code 0..=3; skips and expected failures only: not in that
//!   run), with the summed duration of those cases. One judge
//!   ([`judge_slow`]) computes every figure by key; test ids are then read
//!   only for the tests that can be listed: the first `limit` by median
//!   (change) and every test tied with the last of them, since the lists
//!   order ties by test id. An owner or id filter becomes a set of test
//!   keys per project. When some test id has several keys
//!   (`interning::aliases`), a run's durations of its keys are summed under
//!   the smallest of them, so it is one test as before.
//!   Cost: one decode per run and test of the window, one name lookup per
//!   listed test; the answer equals grouping every case of the window (the
//!   property test checks it against that query, kept in `testing.rs`).
//!
//! Backends: each reads its rows (`postgres` for PostgreSQL, which also
//! holds PostgreSQL's alias and name lookups); `history_of` summarizes
//! a history and `SlowMerge` with [`judge_slow`] decides slow tests for
//! both.

mod postgres;

use crate::read::ReadPool;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::model::{Counts, Outcome, from_millis};
use crate::owners::TestSet;
use crate::read::flaky::{Runs, Window, push_scope};

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
    pool: &ReadPool,
    test_id: &str,
    project: Option<&str>,
    branch: Option<&str>,
    limit: u32,
) -> Result<TestHistory, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => test_history_sqlite(p, test_id, project, branch, limit).await,
        ReadPool::Postgres(p) => postgres::test_history(p, test_id, project, branch, limit).await,
    }
}

/// [`test_history`] on SQLite.
pub(crate) async fn test_history_sqlite(
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
        entries.push(HistoryRow {
            run_id: r.try_get("run_id")?,
            started_at: r.try_get("started_at")?,
            project: r.try_get("project")?,
            branch: r.try_get("branch")?,
            commit: r.try_get("commit_sha")?,
            worker_id: r.try_get("worker_id")?,
            outcome: r.try_get("outcome")?,
            secs: r.try_get("secs")?,
            retries: r.try_get("retries")?,
            flaky: r.try_get("flaky")?,
            message: r.try_get("message")?,
        });
    }
    Ok(history_of(test_id, entries))
}

/// A test in one run as both backends read it: the run, and its cases
/// there grouped (worst outcome code, summed duration, retries and
/// flaky marks, the message of the first worst case).
pub(crate) struct HistoryRow {
    pub run_id: String,
    pub started_at: i64,
    pub project: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub worker_id: String,
    pub outcome: i64,
    pub secs: f64,
    pub retries: i64,
    pub flaky: i64,
    pub message: Option<String>,
}

/// The history of `test_id` from its rows, newest first: the entries and
/// their summary, the same for both backends.
pub(crate) fn history_of(test_id: &str, rows: Vec<HistoryRow>) -> TestHistory {
    let entries: Vec<HistoryEntry> = rows
        .into_iter()
        .map(|r| {
            let outcome = Outcome::from_code(r.outcome).unwrap_or(Outcome::Error);
            HistoryEntry {
                run_id: r.run_id,
                started_at: from_millis(r.started_at),
                project: r.project,
                branch: r.branch,
                commit: r.commit,
                worker_id: r.worker_id,
                outcome,
                duration_secs: r.secs,
                retries: r.retries.max(0) as u64,
                flaky: outcome == Outcome::Passed && r.flaky > 0,
                message: if outcome.is_failure() {
                    r.message
                } else {
                    None
                },
            }
        })
        .collect();
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
    TestHistory {
        test_id: test_id.to_string(),
        runs: entries.len(),
        pass_rate,
        median_duration_secs: median(&mut durations),
        outcomes,
        entries,
    }
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

/// The judgement of a window's tests, named by a key `K` (a test key, or
/// the test id itself) until [`SlowJudgement::finish`] names them: so only
/// the tests that can be listed need their names read.
#[derive(Debug)]
pub struct SlowJudgement<K> {
    seen: usize,
    slowest: Vec<(K, SlowTest)>,
    regressions: Vec<(K, Regression)>,
}

/// Descending, for sorting by a figure.
fn desc(a: f64, b: f64) -> std::cmp::Ordering {
    b.total_cmp(&a)
}

/// Which of `figures` can be among the first `limit` in descending order
/// whatever the names that break ties: every one at or above the
/// `limit`-th figure.
fn contenders(mut all: Vec<f64>, limit: usize) -> impl Fn(f64) -> bool {
    let cut = (limit > 0 && all.len() > limit)
        .then(|| *all.select_nth_unstable_by(limit - 1, |a, b| desc(*a, *b)).1);
    move |x| limit > 0 && cut.is_none_or(|c| desc(x, c) != std::cmp::Ordering::Greater)
}

/// A row of either list: what it is ordered by, and its names.
trait Listed {
    /// The figure the list is ordered by, descending.
    fn figure(&self) -> f64;
    /// Its test id, filled in once named.
    fn test_id_mut(&mut self) -> &mut String;
    /// Its project.
    fn project(&self) -> &str;
    /// Its test id.
    fn test_id(&self) -> &str;
}

impl Listed for SlowTest {
    fn figure(&self) -> f64 {
        self.median_secs
    }
    fn test_id_mut(&mut self) -> &mut String {
        &mut self.test_id
    }
    fn project(&self) -> &str {
        &self.project
    }
    fn test_id(&self) -> &str {
        &self.test_id
    }
}

impl Listed for Regression {
    fn figure(&self) -> f64 {
        self.change_secs
    }
    fn test_id_mut(&mut self) -> &mut String {
        &mut self.test_id
    }
    fn project(&self) -> &str {
        &self.project
    }
    fn test_id(&self) -> &str {
        &self.test_id
    }
}

/// The first `limit` of `rows`, named by `name`: by figure descending,
/// then test id, then project. Only the contenders are named; fails with
/// the key of one `name` does not know.
fn first<K, T: Listed>(
    rows: Vec<(K, T)>,
    name: &impl Fn(&K) -> Option<String>,
    limit: usize,
) -> Result<Vec<T>, K> {
    let keep = contenders(rows.iter().map(|r| r.1.figure()).collect(), limit);
    let mut listed = Vec::new();
    for (key, mut row) in rows {
        if keep(row.figure()) {
            *row.test_id_mut() = name(&key).ok_or(key)?;
            listed.push(row);
        }
    }
    listed.sort_by(|a, b| {
        desc(a.figure(), b.figure())
            .then_with(|| a.test_id().cmp(b.test_id()))
            .then_with(|| a.project().cmp(b.project()))
    });
    listed.truncate(limit);
    Ok(listed)
}

/// The pure part of [`slow_tests`]: per (project, test), its per-run
/// durations in the recent and baseline runs. The one rule of what is slow
/// and what regressed; [`SlowJudgement::finish`] orders and cuts.
pub fn judge_slow<K>(
    tests: impl IntoIterator<Item = (String, K, Vec<f64>, Vec<f64>)>,
    rule: SlowRule,
) -> SlowJudgement<K>
where
    K: Clone,
{
    let mut seen = 0;
    let mut slowest = Vec::new();
    let mut regressions = Vec::new();
    for (project, key, mut recent, mut baseline) in tests {
        seen += 1;
        let mut all: Vec<f64> = recent.iter().chain(&baseline).copied().collect();
        let max = all.iter().copied().fold(0.0, f64::max);
        let runs = all.len();
        let Some(m) = median(&mut all) else { continue };
        let (rn, bn) = (recent.len(), baseline.len());
        if let (Some(r), Some(b)) = (median(&mut recent), median(&mut baseline))
            && r - b >= rule.min_secs
            && r >= rule.factor * b
        {
            regressions.push((
                key.clone(),
                Regression {
                    project: project.clone(),
                    test_id: String::new(),
                    recent_median_secs: round3(r),
                    baseline_median_secs: round3(b),
                    change_secs: round3(r - b),
                    factor: (b > 0.0).then(|| (r / b * 100.0).round() / 100.0),
                    recent_runs: rn,
                    baseline_runs: bn,
                },
            ));
        }
        slowest.push((
            key,
            SlowTest {
                project,
                test_id: String::new(),
                median_secs: round3(m),
                max_secs: round3(max),
                runs,
            },
        ));
    }
    SlowJudgement {
        seen,
        slowest,
        regressions,
    }
}

impl<K> SlowJudgement<K> {
    /// The tests whose names decide the first `limit` of either list: the
    /// slowest down to the `limit`-th median and the regressions down to
    /// the `limit`-th change, ties at the cut included (names break them).
    pub fn to_name(&self, limit: usize) -> Vec<&K> {
        fn named<K, T: Listed>(rows: &[(K, T)], limit: usize) -> impl Iterator<Item = &K> {
            let keep = contenders(rows.iter().map(|r| r.1.figure()).collect(), limit);
            rows.iter()
                .filter(move |r| keep(r.1.figure()))
                .map(|r| &r.0)
        }
        named(&self.slowest, limit)
            .chain(named(&self.regressions, limit))
            .collect()
    }

    /// (tests seen, the first `limit` slowest, regressions found, the first
    /// `limit` regressions), named by `name`: by median (change) descending,
    /// then test id, then project. Fails with the key of a test that
    /// [`SlowJudgement::to_name`] listed and `name` does not know.
    pub fn finish(
        self,
        name: impl Fn(&K) -> Option<String>,
        limit: usize,
    ) -> Result<(usize, Vec<SlowTest>, usize, Vec<Regression>), K> {
        let slowest = first(self.slowest, &name, limit)?;
        let total = self.regressions.len();
        let regressions = first(self.regressions, &name, limit)?;
        Ok((self.seen, slowest, total, regressions))
    }
}

/// Hashes the (project, test key) pairs [`slow_tests`] merges by: one
/// multiply per word (the keys are integers SQLite chose, so SipHash's
/// resistance to chosen keys buys nothing, and it cost a third of the merge).
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// Per (project number, test key): its durations in the recent runs and in
/// the baseline runs.
type Merged = HashMap<(usize, i64), (Vec<f64>, Vec<f64>), std::hash::BuildHasherDefault<KeyHasher>>;

/// The slowest tests and the duration regressions of a window's runs, from
/// the runs' test summaries ([`crate::store::sqlite::run_tests`]).
pub async fn slow_tests(
    pool: &ReadPool,
    w: &Window,
    rule: SlowRule,
    limit: usize,
) -> Result<SlowReport, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => slow_tests_sqlite(p, w, rule, limit).await,
        ReadPool::Postgres(p) => postgres::slow_tests(p, w, rule, limit).await,
    }
}

/// [`slow_tests`] on SQLite.
pub(crate) async fn slow_tests_sqlite(
    pool: &SqlitePool,
    w: &Window,
    rule: SlowRule,
    limit: usize,
) -> Result<SlowReport, sqlx::Error> {
    use futures::TryStreamExt;

    // One read transaction: the runs, their summaries and the names agree.
    let mut tx = pool.begin().await?;
    let allowed = allowed_tests(&mut tx, w).await?;
    // Keys of test ids with several keys, to the smallest key of their id.
    let canonical = if crate::store::sqlite::interning::aliases(&mut tx).await? {
        crate::store::sqlite::interning::alias_keys(&mut tx).await?
    } else {
        HashMap::new()
    };
    let mut merge = SlowMerge::new(allowed, canonical, rule);
    {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_scope(&mut q, w, Runs::Complete);
        q.push(
            " SELECT s.run_id, s.project, s.n, t.tests FROM scope s \
             LEFT JOIN run_keys k ON k.run_id = s.run_id \
             LEFT JOIN run_tests t ON t.run_key = k.run_key ORDER BY s.n",
        );
        let mut rows = q
            .build_query_as::<(String, String, i64, Option<Vec<u8>>)>()
            .fetch(&mut *tx);
        while let Some((run_id, project, n, blob)) = rows.try_next().await? {
            merge.add_run(&run_id, project, n, blob.as_deref())?;
        }
    }
    let (considered, judged) = merge.judge();
    let names =
        crate::store::sqlite::run_tests::names(&mut tx, judged.to_name(limit).into_iter().copied())
            .await?;
    tx.commit().await?;
    slow_report(considered, judged, &names, limit)
}

/// The merge of a window's per-run test summaries into per-test
/// durations, recent and baseline: the rule both backends share of which
/// tests count in a run and how a test id with several keys is one test.
pub(crate) struct SlowMerge {
    /// The tests of the window's test set, as keys per project (`None`:
    /// every test).
    allowed: Option<HashMap<String, HashSet<i64>>>,
    /// Keys of test ids with several keys, to the smallest key of the id.
    canonical: HashMap<i64, i64>,
    rule: SlowRule,
    projects: Vec<String>,
    per: Merged,
    considered: u64,
}

impl SlowMerge {
    /// An empty merge.
    pub(crate) fn new(
        allowed: Option<HashMap<String, HashSet<i64>>>,
        canonical: HashMap<i64, i64>,
        rule: SlowRule,
    ) -> SlowMerge {
        SlowMerge {
            allowed,
            canonical,
            rule,
            projects: Vec::new(),
            per: Merged::default(),
            considered: 0,
        }
    }

    /// Adds the window's run numbered `n` (0: newest) with its stored
    /// summary; a run without one is an error naming it.
    pub(crate) fn add_run(
        &mut self,
        run_id: &str,
        project: String,
        n: i64,
        blob: Option<&[u8]>,
    ) -> Result<(), sqlx::Error> {
        self.considered += 1;
        let blob = blob.ok_or_else(|| crate::store::summary::missing(run_id))?;
        let p = match self.projects.iter().position(|x| *x == project) {
            Some(p) => p,
            None => {
                self.projects.push(project);
                self.projects.len() - 1
            }
        };
        let keep = self.allowed.as_ref().map(|a| a.get(&self.projects[p]));
        let recent = n < i64::from(self.rule.recent);
        let per = &mut self.per;
        let mut add = |key: i64, secs: f64| {
            let (r, b) = per.entry((p, key)).or_default();
            if recent { r } else { b }.push(secs);
        };
        // A run's durations of an id with several keys, summed (in key
        // order) under its smallest key.
        let mut aliased: BTreeMap<i64, f64> = BTreeMap::new();
        for t in crate::store::summary::decode_stored(blob)? {
            if !t.ran() || keep.is_some_and(|k| k.is_none_or(|k| !k.contains(&t.key))) {
                continue;
            }
            match self.canonical.get(&t.key) {
                None => add(t.key, t.ran_secs),
                Some(&c) => {
                    aliased
                        .entry(c)
                        .and_modify(|s| *s += t.ran_secs)
                        .or_insert(t.ran_secs);
                }
            }
        }
        for (key, secs) in aliased {
            add(key, secs);
        }
        Ok(())
    }

    /// The runs added, and the judgement of their tests ([`judge_slow`]).
    pub(crate) fn judge(self) -> (u64, SlowJudgement<i64>) {
        let projects = self.projects;
        let tests = self.per.into_iter().map(|((p, key), (recent, baseline))| {
            let project = projects.get(p).cloned().unwrap_or_default();
            (project, key, recent, baseline)
        });
        (self.considered, judge_slow(tests, self.rule))
    }
}

/// The report of a window of `considered` runs from its judgement, the
/// tests it lists named by `names` (those of [`SlowJudgement::to_name`]).
pub(crate) fn slow_report(
    considered: u64,
    judged: SlowJudgement<i64>,
    names: &HashMap<i64, String>,
    limit: usize,
) -> Result<SlowReport, sqlx::Error> {
    let (seen, slowest, total, regressions) = judged
        .finish(|k| names.get(k).cloned(), limit)
        .map_err(|k| sqlx::Error::Protocol(format!("test key {k} unnamed")))?;
    Ok(SlowReport {
        runs_considered: considered,
        tests_seen: seen,
        slowest,
        regressions_total: total,
        regressions,
    })
}

/// The tests of the window's owner or id filter, as keys per project;
/// `None` for every test.
async fn allowed_tests(
    conn: &mut sqlx::SqliteConnection,
    w: &Window,
) -> Result<Option<HashMap<String, HashSet<i64>>>, sqlx::Error> {
    if w.tests == TestSet::All {
        return Ok(None);
    }
    let mut q = QueryBuilder::<Sqlite>::new("");
    push_scope(&mut q, w, Runs::Complete);
    q.push(
        " SELECT p.project, t.test_key FROM (SELECT DISTINCT project FROM scope) p          CROSS JOIN tests t WHERE 1 = 1",
    );
    crate::owners::push_filter(&mut q, &w.tests, "p.project", "t.test_id");
    let rows: Vec<(String, i64)> = q.build_query_as().fetch_all(conn).await?;
    let mut allowed: HashMap<String, HashSet<i64>> = HashMap::new();
    for (project, key) in rows {
        allowed.entry(project).or_default().insert(key);
    }
    Ok(Some(allowed))
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
        )
        .finish(|id| Some(id.clone()), 10)
        .expect("named");
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
