//! Reads that are not aggregates: they go straight to the read pool (SQLite
//! in WAL mode lets them run beside the writer) instead of through an actor.
//!
//! Every filter is a bound parameter; the only dynamic SQL is the choice of
//! which fixed `AND column = ?` clauses to add.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::model::{CaseRecord, Counts, Outcome, Rejection, RunRecord, from_millis, to_millis};

const RUN_COLUMNS: &str = "run_id, project, branch, commit_sha, worker_id, host, runner, command, \
     started_at, finished_at, duration_secs, exit_code, status, total, passed, failed, error, \
     skipped, xfailed, xpassed, pass_rate, cases_complete, note";

fn run_from_row(r: &SqliteRow) -> Result<RunRecord, sqlx::Error> {
    let n = |c: &str| -> Result<u64, sqlx::Error> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
    Ok(RunRecord {
        run_id: r.try_get("run_id")?,
        project: r.try_get("project")?,
        branch: r.try_get("branch")?,
        commit: r.try_get("commit_sha")?,
        worker_id: r.try_get("worker_id")?,
        host: r.try_get("host")?,
        runner: r.try_get("runner")?,
        command: r.try_get("command")?,
        started_at: from_millis(r.try_get("started_at")?),
        finished_at: from_millis(r.try_get("finished_at")?),
        duration_secs: r.try_get("duration_secs")?,
        exit_code: r.try_get("exit_code")?,
        status: r.try_get("status")?,
        counts: Counts {
            total: n("total")?,
            passed: n("passed")?,
            failed: n("failed")?,
            error: n("error")?,
            skipped: n("skipped")?,
            xfailed: n("xfailed")?,
            xpassed: n("xpassed")?,
        },
        pass_rate: r.try_get("pass_rate")?,
        cases_complete: r.try_get("cases_complete")?,
        note: r.try_get("note")?,
    })
}

fn case_from_row(r: &SqliteRow) -> Result<CaseRecord, sqlx::Error> {
    let code: i64 = r.try_get("outcome")?;
    let outcome = Outcome::from_code(code).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "outcome".into(),
        source: format!("unknown outcome code {code}").into(),
    })?;
    Ok(CaseRecord {
        test_id: r.try_get("test_id")?,
        file: r.try_get("file")?,
        classname: r.try_get("classname")?,
        name: r.try_get("name")?,
        outcome,
        duration_secs: r.try_get("duration_secs")?,
        message: r.try_get("message")?,
        traceback: r.try_get("traceback")?,
        output: r.try_get("output")?,
        retries: r.try_get::<i64, _>("retries")?.clamp(0, u32::MAX as i64) as u32,
        flaky: r.try_get("flaky")?,
    })
}

/// Every stored run, oldest first (for rebuilding aggregates).
pub async fn all_runs_oldest_first(pool: &SqlitePool) -> Result<Vec<RunRecord>, sqlx::Error> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT ");
    qb.push(RUN_COLUMNS)
        .push(" FROM runs ORDER BY started_at, run_id");
    qb.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(run_from_row)
        .collect()
}

/// Position in the newest-first run list: the last run of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCursor {
    /// Its start time.
    pub started_at: DateTime<Utc>,
    /// Its id.
    pub run_id: String,
}

/// Filters for [`list_runs`].
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Project.
    pub project: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// Worker.
    pub worker_id: Option<String>,
    /// Run status.
    pub status: Option<String>,
    /// Started at or after.
    pub since: Option<DateTime<Utc>>,
    /// Started before.
    pub until: Option<DateTime<Utc>>,
    /// Continue after this run.
    pub after: Option<RunCursor>,
    /// Page size.
    pub limit: u32,
}

/// Complete runs matching `f`, newest first (by start time, then run id).
pub async fn list_runs(pool: &SqlitePool, f: &RunFilter) -> Result<Vec<RunRecord>, sqlx::Error> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT ");
    qb.push(RUN_COLUMNS).push(" FROM runs WHERE 1 = 1");
    for (column, value) in [
        ("project", &f.project),
        ("branch", &f.branch),
        ("worker_id", &f.worker_id),
        ("status", &f.status),
    ] {
        if let Some(v) = value {
            qb.push(format_args!(" AND {column} = "))
                .push_bind(v.clone());
        }
    }
    if let Some(t) = f.since {
        qb.push(" AND started_at >= ").push_bind(to_millis(t));
    }
    if let Some(t) = f.until {
        qb.push(" AND started_at < ").push_bind(to_millis(t));
    }
    if let Some(c) = &f.after {
        qb.push(" AND (started_at, run_id) < (")
            .push_bind(to_millis(c.started_at))
            .push(", ")
            .push_bind(c.run_id.clone())
            .push(")");
    }
    qb.push(" ORDER BY started_at DESC, run_id DESC LIMIT ")
        .push_bind(i64::from(f.limit));
    qb.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(run_from_row)
        .collect()
}

/// One complete run.
pub async fn get_run(pool: &SqlitePool, run_id: &str) -> Result<Option<RunRecord>, sqlx::Error> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT ");
    qb.push(RUN_COLUMNS)
        .push(" FROM runs WHERE run_id = ")
        .push_bind(run_id.to_string());
    qb.build()
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(run_from_row)
        .transpose()
}

/// The order of a run's cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CaseOrder {
    /// Failures first, then in report order (index order).
    #[default]
    FailuresFirst,
    /// Slowest first (a top-N sort over the run's cases; no index needed
    /// for the few rows a report asks for).
    Slowest,
}

/// The cases of a run in `order`. `outcomes` restricts to those outcomes
/// (all when empty); at most `limit` rows.
pub async fn run_cases(
    pool: &SqlitePool,
    run_id: &str,
    outcomes: &[Outcome],
    order: CaseOrder,
    limit: u32,
) -> Result<Vec<CaseRecord>, sqlx::Error> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "SELECT test_id, file, classname, name, outcome, duration_secs, message, traceback, output, \
         retries, flaky FROM test_cases WHERE run_id = ",
    );
    qb.push_bind(run_id.to_string());
    if !outcomes.is_empty() {
        qb.push(" AND outcome IN (");
        let mut sep = qb.separated(", ");
        for o in outcomes {
            sep.push_bind(o.code());
        }
        qb.push(")");
    }
    qb.push(match order {
        CaseOrder::FailuresFirst => " ORDER BY outcome, chunk, idx LIMIT ",
        CaseOrder::Slowest => " ORDER BY duration_secs DESC, chunk, idx LIMIT ",
    })
    .push_bind(i64::from(limit));
    qb.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(case_from_row)
        .collect()
}

/// A `rejected` row: received_at, subject, msg_id, run_id, reason, excerpt, payload.
type RejectedRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<Vec<u8>>,
);

/// The most recent rejections.
pub async fn list_rejected(pool: &SqlitePool, limit: u32) -> Result<Vec<Rejection>, sqlx::Error> {
    let rows: Vec<RejectedRow> = sqlx::query_as(
        "SELECT received_at, subject, msg_id, run_id, reason, excerpt, payload FROM rejected \
             ORDER BY received_at DESC, id DESC LIMIT ?",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(at, subject, msg_id, run_id, reason, excerpt, payload)| Rejection {
                received_at: from_millis(at),
                subject,
                msg_id,
                run_id,
                reason,
                excerpt,
                payload,
            },
        )
        .collect())
}

/// A cheap query proving the database answers.
pub async fn ping(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// Filters for [`failure_stats_where`].
#[derive(Debug, Clone, Default)]
pub struct FailureFilter {
    /// Only this project.
    pub project: Option<String>,
    /// Only this branch.
    pub branch: Option<String>,
    /// Only this worker.
    pub worker_id: Option<String>,
    /// Only runs started at or after this.
    pub since: Option<DateTime<Utc>>,
}

/// (project, test_id, runs, last failed at ms, last message, last run id).
type FailureRow = (String, String, i64, i64, Option<String>, String);

/// The most frequently failing tests among the runs matching `f`, counted
/// once per run, most failures first. The aggregates answer the common
/// project-wide question from memory; this query answers the narrower ones
/// (a branch, a worker) that they do not keep.
pub async fn failure_stats_where(
    pool: &SqlitePool,
    f: &FailureFilter,
    limit: u32,
) -> Result<Vec<crate::aggregates::FailureStat>, sqlx::Error> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "WITH f AS (SELECT r.project, c.test_id, r.run_id, r.started_at, c.message, \
         ROW_NUMBER() OVER (PARTITION BY r.project, c.test_id ORDER BY r.started_at DESC, r.run_id DESC, c.outcome) AS rn \
         FROM runs r JOIN test_cases c ON c.run_id = r.run_id AND c.outcome IN (0, 1) WHERE 1 = 1",
    );
    if let Some(p) = &f.project {
        qb.push(" AND r.project = ").push_bind(p.clone());
    }
    if let Some(b) = &f.branch {
        qb.push(" AND r.branch = ").push_bind(b.clone());
    }
    if let Some(w) = &f.worker_id {
        qb.push(" AND r.worker_id = ").push_bind(w.clone());
    }
    if let Some(s) = f.since {
        qb.push(" AND r.started_at >= ").push_bind(to_millis(s));
    }
    qb.push(
        ") SELECT project, test_id, COUNT(DISTINCT run_id) AS n, MAX(started_at) AS last_at, \
         MAX(CASE WHEN rn = 1 THEN message END), MAX(CASE WHEN rn = 1 THEN run_id END) \
         FROM f GROUP BY project, test_id ORDER BY n DESC, last_at DESC, test_id LIMIT ",
    )
    .push_bind(i64::from(limit));
    let rows: Vec<FailureRow> = qb.build_query_as().fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(
            |(project, test_id, n, last_at, last_message, last_run_id)| {
                crate::aggregates::FailureStat {
                    test_id,
                    project,
                    fail_count: n.max(0) as u64,
                    last_failed_at: from_millis(last_at),
                    last_message,
                    last_run_id,
                }
            },
        )
        .collect())
}
