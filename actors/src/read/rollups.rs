//! Derived state kept in the store: what `/trend`, `/workers` and
//! `/failures/stats` answer from, written with the data instead of rebuilt
//! in memory at every start.
//!
//! Shape (migration 0006):
//! - **trend**: the `runs` table itself, read newest first through
//!   `runs_by_time`, `runs_by_project_time` or `runs_by_project` and turned
//!   oldest first; a trend point is a run.
//! - `projects`: runs per project.
//! - `worker_stats`: per worker, runs stored, pass-rate sum, newest run and
//!   when it was last seen finishing one.
//! - `test_failures`: per (project, test), the runs it failed in (once per
//!   run) and its newest failure with the message.
//! - `test_failure_days`: the same counts per UTC day of the runs' start,
//!   for windows: whole days are summed, the partial first day is counted
//!   exactly from the runs of that day, so a window answer is exact.
//!
//! The writes live with the store (`store::sqlite::rollups`): they keep the
//! tables equal to a recomputation from the runs stored. This module reads.
//!
//! Guarantees:
//! - Reads are bounded: the trend reads `limit` runs, workers at most the
//!   number asked for, failure statistics read the ranked index (all time)
//!   or the day buckets of the window plus one day of runs.
//!
//! The SQL here is SQLite's; PostgreSQL's is in `rollups/postgres.rs`,
//! over the same tables, into the same rows.

mod postgres;

use crate::read::ReadPool;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use crate::json_rows;
use crate::model::{from_millis, to_millis};
use crate::owners::{TestSet, push_filter};
use crate::store::rules::{DAY_MS, day_of};

/// One point of a pass-rate trend: one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendPoint {
    /// The run.
    pub run_id: String,
    /// When it started (the original system called this `timestamp`).
    pub timestamp: DateTime<Utc>,
    /// Project.
    pub project: String,
    /// Branch.
    pub branch: Option<String>,
    /// Commit.
    pub commit: Option<String>,
    /// Worker.
    pub worker_id: String,
    /// Run status.
    pub status: String,
    /// Passed.
    pub passed: u64,
    /// Failed.
    pub failed: u64,
    /// Errored.
    pub error: u64,
    /// Skipped.
    pub skipped: u64,
    /// All cases.
    pub total: u64,
    /// Pass rate in percent.
    pub pass_rate: Option<f64>,
    /// Wall time, seconds.
    pub duration_secs: f64,
}

/// The most frequent failures of one test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureStat {
    /// Test id (the original system called this `nodeid`).
    pub test_id: String,
    /// Project.
    pub project: String,
    /// Runs in the window in which the test failed or errored.
    pub fail_count: u64,
    /// Most recent failure.
    pub last_failed_at: DateTime<Utc>,
    /// Its message.
    pub last_message: Option<String>,
    /// Its run.
    pub last_run_id: String,
}

/// What the stored runs say about a worker (heartbeats aside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct StoredWorker {
    /// Worker id.
    pub worker_id: String,
    /// Runs stored.
    pub run_count: i64,
    /// Sum of their pass rates (those that have one).
    pub pass_rate_sum: f64,
    /// How many have one.
    pub pass_rate_n: i64,
    /// Newest end of a run, never later than the master's clock when the
    /// run arrived (epoch ms).
    pub last_seen: i64,
    /// Start of its newest run (epoch ms).
    pub last_started_at: i64,
    /// Its newest run.
    pub last_run_id: String,
    /// That run's status.
    pub last_status: String,
    /// That run's project.
    pub last_project: String,
    /// That run's host.
    pub host: Option<String>,
}

// ----------------------------------------------------------------- reads

/// A `runs` row as a trend point, as [`json_rows`] (SQLite) or a typed row
/// (PostgreSQL) hands it over.
#[derive(Deserialize, sqlx::FromRow)]
struct TrendRow {
    run_id: String,
    started_at: i64,
    project: String,
    branch: Option<String>,
    commit_sha: Option<String>,
    worker_id: String,
    status: String,
    passed: i64,
    failed: i64,
    error: i64,
    skipped: i64,
    total: i64,
    pass_rate: Option<f64>,
    duration_secs: f64,
}

const TREND_FIELDS: [&str; 14] = [
    "run_id",
    "started_at",
    "project",
    "branch",
    "commit_sha",
    "worker_id",
    "status",
    "passed",
    "failed",
    "error",
    "skipped",
    "total",
    "pass_rate",
    "duration_secs",
];

/// The pass-rate trend of the newest `limit` runs (of a project, of a
/// branch of it, or of all), oldest first.
pub async fn trend(
    pool: &ReadPool,
    project: Option<&str>,
    branch: Option<&str>,
    limit: u32,
) -> Result<Vec<TrendPoint>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => trend_sqlite(p, project, branch, limit).await,
        ReadPool::Postgres(p) => postgres::trend(p, project, branch, limit).await,
    }
}

/// [`trend`] on SQLite.
pub(crate) async fn trend_sqlite(
    pool: &SqlitePool,
    project: Option<&str>,
    branch: Option<&str>,
    limit: u32,
) -> Result<Vec<TrendPoint>, sqlx::Error> {
    let mut qb = json_rows::select(&TREND_FIELDS, "started_at, run_id");
    qb.push("SELECT ")
        .push(TREND_FIELDS.join(", "))
        .push(" FROM runs WHERE 1 = 1");
    if let Some(p) = project {
        qb.push(" AND project = ").push_bind(p.to_string());
    }
    if let Some(b) = branch {
        qb.push(" AND branch = ").push_bind(b.to_string());
    }
    qb.push(" ORDER BY started_at DESC, run_id DESC LIMIT ")
        .push_bind(i64::from(limit));
    let rows: Vec<TrendRow> = json_rows::fetch(qb, pool).await?;
    Ok(rows.into_iter().map(TrendPoint::from).collect())
}

impl From<TrendRow> for TrendPoint {
    fn from(r: TrendRow) -> TrendPoint {
        let n = |v: i64| v.max(0) as u64;
        TrendPoint {
            run_id: r.run_id,
            timestamp: from_millis(r.started_at),
            project: r.project,
            branch: r.branch,
            commit: r.commit_sha,
            worker_id: r.worker_id,
            status: r.status,
            passed: n(r.passed),
            failed: n(r.failed),
            error: n(r.error),
            skipped: n(r.skipped),
            total: n(r.total),
            pass_rate: r.pass_rate,
            duration_secs: r.duration_secs,
        }
    }
}

const WORKER_FIELDS: [&str; 10] = [
    "worker_id",
    "run_count",
    "pass_rate_sum",
    "pass_rate_n",
    "last_seen",
    "last_started_at",
    "last_run_id",
    "last_status",
    "last_project",
    "host",
];

/// The `limit` workers with stored runs seen most recently, newest first.
pub async fn stored_workers(
    pool: &ReadPool,
    limit: usize,
) -> Result<Vec<StoredWorker>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => stored_workers_sqlite(p, limit).await,
        ReadPool::Postgres(p) => postgres::stored_workers(p, limit).await,
    }
}

/// [`stored_workers`] on SQLite.
pub(crate) async fn stored_workers_sqlite(
    pool: &SqlitePool,
    limit: usize,
) -> Result<Vec<StoredWorker>, sqlx::Error> {
    let mut qb = json_rows::select(&WORKER_FIELDS, "last_seen DESC, worker_id");
    qb.push("SELECT ")
        .push(WORKER_FIELDS.join(", "))
        .push(" FROM worker_stats ORDER BY last_seen DESC, worker_id LIMIT ")
        .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    json_rows::fetch(qb, pool).await
}

/// (project, test_id, runs, last failed at ms, last message, last run id).
pub(crate) type StatRow = (String, String, i64, i64, Option<String>, String);

/// The most frequently failing tests (of a project, or of all), counted
/// once per run, among the runs started at or after `since` (all stored
/// runs when `None`); most failures first, then the most recent, then by
/// test id and project: a total order, so ties come back the same on every
/// path (the property test compares this with `failure_stats_where`).
pub async fn failure_stats(
    pool: &ReadPool,
    project: Option<&str>,
    since: Option<DateTime<Utc>>,
    tests: &TestSet,
    limit: u32,
) -> Result<Vec<FailureStat>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => failure_stats_sqlite(p, project, since, tests, limit).await,
        ReadPool::Postgres(p) => postgres::failure_stats(p, project, since, tests, limit).await,
    }
}

/// [`failure_stats`] on SQLite.
pub(crate) async fn failure_stats_sqlite(
    pool: &SqlitePool,
    project: Option<&str>,
    since: Option<DateTime<Utc>>,
    tests: &TestSet,
    limit: u32,
) -> Result<Vec<FailureStat>, sqlx::Error> {
    let mut qb: QueryBuilder<Sqlite>;
    match since {
        None => {
            qb = QueryBuilder::new(
                "SELECT project, test_id, fail_count, last_failed_at, last_message, last_run_id \
                 FROM test_failures WHERE 1 = 1",
            );
            if let Some(p) = project {
                qb.push(" AND project = ").push_bind(p.to_string());
            }
            push_filter(&mut qb, tests, "project", "test_id");
            qb.push(" ORDER BY fail_count DESC, last_failed_at DESC, test_id, project LIMIT ");
        }
        Some(since) => {
            // The newest failure of a test that failed in the window is in
            // the window, so last_* come from test_failures as they are.
            let since = to_millis(since);
            let first_day = day_of(since);
            qb = QueryBuilder::new("WITH w (project, test_id, n) AS (");
            qb.push(
                "SELECT d.project, d.test_id, d.runs FROM test_failure_days d WHERE d.project ",
            );
            match project {
                Some(p) => qb.push("= ").push_bind(p.to_string()),
                None => qb.push("IN (SELECT project FROM projects)"),
            };
            qb.push(" AND d.day > ").push_bind(first_day);
            qb.push(
                " UNION ALL SELECT r.project, c.test_id, COUNT(DISTINCT r.run_id) FROM runs r \
                 JOIN test_cases c ON c.run_id = r.run_id AND c.outcome IN (0, 1) \
                 WHERE r.started_at >= ",
            )
            .push_bind(since)
            .push(" AND r.started_at < ")
            .push_bind((first_day + 1).saturating_mul(DAY_MS));
            if let Some(p) = project {
                qb.push(" AND r.project = ").push_bind(p.to_string());
            }
            qb.push(
                " GROUP BY r.project, c.test_id) \
                 SELECT f.project, f.test_id, SUM(w.n) AS n, f.last_failed_at, f.last_message, \
                        f.last_run_id \
                 FROM w JOIN test_failures f ON f.project = w.project AND f.test_id = w.test_id \
                 WHERE 1 = 1",
            );
            push_filter(&mut qb, tests, "f.project", "f.test_id");
            qb.push(
                " GROUP BY f.project, f.test_id \
                 ORDER BY n DESC, f.last_failed_at DESC, f.test_id, f.project LIMIT ",
            );
        }
    }
    qb.push_bind(i64::from(limit));
    let rows: Vec<StatRow> = qb.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(stat).collect())
}

/// A statistics row as served.
pub(crate) fn stat(
    (project, test_id, n, last_at, last_message, last_run_id): StatRow,
) -> FailureStat {
    FailureStat {
        test_id,
        project,
        fail_count: n.max(0) as u64,
        last_failed_at: from_millis(last_at),
        last_message,
        last_run_id,
    }
}

/// Every rollup row, sorted: what the tests compare.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub projects: Vec<(String, i64)>,
    pub workers: Vec<StoredWorker>,
    pub failures: Vec<StatRow>,
    pub days: Vec<(String, i64, String, i64)>,
}

#[cfg(test)]
impl Snapshot {
    pub(crate) async fn read(conn: &mut sqlx::SqliteConnection) -> Snapshot {
        let projects = sqlx::query_as("SELECT project, runs FROM projects ORDER BY project")
            .fetch_all(&mut *conn)
            .await
            .expect("projects");
        let mut qb = json_rows::select(&WORKER_FIELDS, "worker_id");
        qb.push("SELECT ")
            .push(WORKER_FIELDS.join(", "))
            .push(" FROM worker_stats");
        let mut workers: Vec<StoredWorker> =
            json_rows::fetch(qb, &mut *conn).await.expect("workers");
        for w in &mut workers {
            // Sums taken in another order differ in the last bits.
            w.pass_rate_sum = (w.pass_rate_sum * 1e6).round() / 1e6;
        }
        let failures = sqlx::query_as(
            "SELECT project, test_id, fail_count, last_failed_at, last_message, last_run_id \
             FROM test_failures ORDER BY project, test_id",
        )
        .fetch_all(&mut *conn)
        .await
        .expect("failures");
        let days = sqlx::query_as(
            "SELECT project, day, test_id, runs FROM test_failure_days ORDER BY project, day, test_id",
        )
        .fetch_all(&mut *conn)
        .await
        .expect("days");
        Snapshot {
            projects,
            workers,
            failures,
            days,
        }
    }

    /// The rollups as kept, and as recomputed from the runs (in a
    /// transaction rolled back, so the store is left as it was).
    pub(crate) async fn kept_and_recomputed(pool: &SqlitePool) -> (Snapshot, Snapshot) {
        let mut tx = pool.begin().await.expect("begin");
        let kept = Snapshot::read(&mut tx).await;
        crate::store::sqlite::rollups::rebuild(&mut tx)
            .await
            .expect("rebuild");
        let recomputed = Snapshot::read(&mut tx).await;
        tx.rollback().await.expect("rollback");
        (kept, recomputed)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::model::Outcome;
    use crate::read::queries::{self, FailureFilter};
    use crate::store::BatchItem;
    use crate::testing::{case, prune, run, start, store, t0};

    /// Runs over three days and two projects: a test failing twice in one
    /// run, runs without a verdict (no pass rate), two runs starting at the
    /// same time, runs arriving out of time order, one worker in both
    /// projects.
    fn history() -> Vec<Vec<BatchItem>> {
        let mut runs = Vec::new();
        for i in 0..24i64 {
            let started = t0() + Duration::hours(3 * ((i * 7) % 24));
            let project = if i % 3 == 0 { "b" } else { "a" };
            let worker = format!("w{}", i % 4);
            let mut cases = vec![case("t::stable", Outcome::Passed, None)];
            if i % 2 == 0 {
                cases.push(case(
                    "t::flaky",
                    Outcome::Failed,
                    Some(&format!("boom {i}")),
                ));
            }
            if i % 5 == 0 {
                cases.push(case("t::twice", Outcome::Failed, Some("first")));
                cases.push(case("t::twice", Outcome::Error, Some("teardown")));
            }
            if i % 7 == 0 {
                cases = vec![case("t::skipped", Outcome::Skipped, None)];
            }
            runs.push(run(&format!("r{i:02}"), project, &worker, started, cases));
        }
        // Same start as r10 (the newest), another run id.
        runs.push(run(
            "r99",
            "a",
            "w0",
            t0() + Duration::hours(66),
            vec![case("t::flaky", Outcome::Error, Some("tie"))],
        ));
        // Worker wc: its newest run (in a) goes when a keeps only its
        // newest runs, its older one (c's only run) stays.
        let pass = || vec![case("t::stable", Outcome::Passed, None)];
        runs.push(run("c1", "c", "wc", t0() + Duration::hours(40), pass()));
        runs.push(run("c2", "a", "wc", t0() + Duration::hours(41), pass()));
        runs
    }

    async fn assert_exact(pool: &SqlitePool, when: &str) -> Snapshot {
        let (kept, recomputed) = Snapshot::kept_and_recomputed(pool).await;
        assert_eq!(kept, recomputed, "rollups kept vs recomputed {when}");
        kept
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rollups_equal_a_recomputation_after_writes_and_prunes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (actors, pool) = start(&dir.path().join("r.db")).await;
        store(&actors, history()).await;
        let all = assert_exact(&pool, "after storing").await;
        assert_eq!(
            all.projects,
            [("a".into(), 18), ("b".into(), 8), ("c".into(), 1)]
        );
        let twice = all
            .failures
            .iter()
            .find(|f| f.1 == "t::twice" && f.0 == "a")
            .expect("t::twice failed in a");
        assert_eq!(twice.4.as_deref(), Some("first"), "first failing case");
        // The tie with r10: r99 is the larger id, so it is the newest.
        let flaky_a = all
            .failures
            .iter()
            .find(|f| f.1 == "t::flaky" && f.0 == "a");
        assert_eq!(flaky_a.map(|f| f.5.as_str()), Some("r99"));

        // By age: everything that started before the second day.
        let cutoff = t0() + Duration::hours(26);
        prune(&actors, Some(cutoff), None).await;
        let aged = assert_exact(&pool, "after pruning by age").await;
        assert!(aged.days.iter().all(|d| d.1 >= day_of(to_millis(cutoff))));
        // By count: the newest three runs of each project.
        prune(&actors, None, Some(3)).await;
        let kept = assert_exact(&pool, "after pruning by count").await;
        assert_eq!(
            kept.projects,
            [("a".into(), 3), ("b".into(), 3), ("c".into(), 1)]
        );
        assert_eq!(kept.workers.iter().map(|w| w.run_count).sum::<i64>(), 7);
        let wc = kept.workers.iter().find(|w| w.worker_id == "wc");
        assert_eq!(wc.map(|w| w.last_run_id.as_str()), Some("c1"));
        // Everything: nothing left anywhere.
        prune(&actors, Some(t0() + Duration::days(30)), None).await;
        let none = assert_exact(&pool, "after pruning everything").await;
        assert!(none.workers.is_empty() && none.failures.is_empty() && none.days.is_empty());
        pool.close().await;
        actors.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn windowed_failure_stats_equal_the_plain_query() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (actors, pool) = start(&dir.path().join("w.db")).await;
        store(&actors, history()).await;
        // Windows starting mid-day, at a day boundary, before and after all.
        let starts = [
            None,
            Some(t0() - Duration::days(1)),
            Some(t0() + Duration::hours(5)),
            Some(t0() + Duration::hours(26)),
            Some(t0() + Duration::hours(50) + Duration::minutes(7)),
            Some(t0() + Duration::days(9)),
        ];
        for since in starts {
            for project in [None, Some("a"), Some("b")] {
                let filter = FailureFilter {
                    project: project.map(str::to_string),
                    since,
                    ..FailureFilter::default()
                };
                let plain = queries::failure_stats_where(&pool.clone().into(), &filter, 100)
                    .await
                    .expect("plain");
                let rolled =
                    failure_stats(&pool.clone().into(), project, since, &TestSet::All, 100)
                        .await
                        .expect("rollup");
                assert_eq!(rolled, plain, "since {since:?}, project {project:?}");
            }
        }
        let top = failure_stats(&pool.clone().into(), Some("a"), None, &TestSet::All, 1)
            .await
            .expect("top");
        assert_eq!(
            (top[0].test_id.as_str(), top[0].fail_count),
            ("t::flaky", 8)
        );
        pool.close().await;
        actors.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_trend_is_ordered_by_start_time_not_arrival() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (actors, pool) = start(&dir.path().join("t.db")).await;
        let pass = || vec![case("t::x", Outcome::Passed, None)];
        let fail = || vec![case("t::x", Outcome::Failed, None)];
        store(
            &actors,
            vec![
                run("late", "p", "w", t0() + Duration::minutes(30), fail()),
                run("early", "p", "w", t0() + Duration::minutes(10), pass()),
                run("middle", "p", "w", t0() + Duration::minutes(20), pass()),
                run("other", "q", "w", t0() + Duration::minutes(40), pass()),
            ],
        )
        .await;
        let ids = |t: Vec<TrendPoint>| t.into_iter().map(|p| p.run_id).collect::<Vec<_>>();
        let t = trend(&pool.clone().into(), Some("p"), Some("main"), 2)
            .await
            .expect("trend");
        assert_eq!(t[1].pass_rate, Some(0.0));
        assert_eq!(ids(t), ["middle", "late"]);
        let t = trend(&pool.clone().into(), Some("p"), None, 10)
            .await
            .expect("trend");
        assert_eq!(ids(t), ["early", "middle", "late"]);
        let t = trend(&pool.clone().into(), None, None, 2)
            .await
            .expect("trend");
        assert_eq!(ids(t), ["late", "other"]);
        pool.close().await;
        actors.stop();
    }

    /// A database written before migration 0006 gets its rollups filled
    /// at the first start after it, from the runs it holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_start_after_the_migration_fills_the_rollups() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("m.db");
        let (actors, pool) = start(&path).await;
        store(&actors, history()).await;
        let before = Snapshot::read(&mut pool.acquire().await.expect("conn")).await;
        // As migration 0006 left a database written before it: empty
        // rollup tables, not built yet. (Going back further, to before
        // migration 0007, is no longer possible: 0014 replaced the table
        // it altered by a view.)
        for sql in [
            "DELETE FROM projects",
            "DELETE FROM worker_stats",
            "DELETE FROM test_failures",
            "DELETE FROM test_failure_days",
            "UPDATE rollup_state SET value = 0 WHERE name = 'built'",
        ] {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        pool.close().await;
        actors.stop();
        let (actors, pool) = start(&path).await;
        let after = Snapshot::read(&mut pool.acquire().await.expect("conn")).await;
        assert_eq!(after, before);
        assert!(!after.failures.is_empty());
        pool.close().await;
        actors.stop();
    }
}
