//! Reads that are not aggregates: they go straight to the read pool (SQLite
//! in WAL mode lets them run beside the writer) instead of through an actor.
//!
//! Every filter is a bound parameter; the only dynamic SQL is the choice of
//! which fixed `AND column = ?` clauses to add.

mod postgres;

use crate::read::ReadPool;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use crate::json_rows;
use crate::model::{
    CaseRecord, Counts, Outcome, Rejection, RunRecord, RunStatus, from_millis, to_millis,
};

/// The columns of `runs` a [`RunRecord`] is made of.
const RUN_FIELDS: [&str; 24] = [
    "run_id",
    "project",
    "branch",
    "commit_sha",
    "worker_id",
    "host",
    "runner",
    "command",
    "started_at",
    "finished_at",
    "duration_secs",
    "exit_code",
    "status",
    "total",
    "passed",
    "failed",
    "error",
    "skipped",
    "xfailed",
    "xpassed",
    "pass_rate",
    "cases_complete",
    "note",
    "quarantined_failures",
];

/// A `runs` row as [`json_rows`] (SQLite) or a typed row (PostgreSQL,
/// `exit_code` cast to INT4) hands it over.
#[derive(Deserialize, sqlx::FromRow)]
struct RunRow {
    run_id: String,
    project: String,
    branch: Option<String>,
    commit_sha: Option<String>,
    worker_id: String,
    host: Option<String>,
    runner: Option<String>,
    command: Option<String>,
    started_at: i64,
    finished_at: i64,
    duration_secs: f64,
    exit_code: Option<i32>,
    #[sqlx(try_from = "String")]
    status: RunStatus,
    total: i64,
    passed: i64,
    failed: i64,
    error: i64,
    skipped: i64,
    xfailed: i64,
    xpassed: i64,
    pass_rate: Option<f64>,
    cases_complete: i64,
    note: Option<String>,
    quarantined_failures: i64,
}

/// A status as stored (PostgreSQL reads it as text).
impl TryFrom<String> for RunStatus {
    type Error = String;

    fn try_from(s: String) -> Result<RunStatus, String> {
        RunStatus::parse(&s)
    }
}

impl From<RunRow> for RunRecord {
    fn from(r: RunRow) -> Self {
        let n = |v: i64| v.max(0) as u64;
        RunRecord {
            run_id: r.run_id,
            project: r.project,
            branch: r.branch,
            commit: r.commit_sha,
            worker_id: r.worker_id,
            host: r.host,
            runner: r.runner,
            command: r.command,
            started_at: from_millis(r.started_at),
            finished_at: from_millis(r.finished_at),
            duration_secs: r.duration_secs,
            exit_code: r.exit_code,
            status: r.status,
            counts: Counts {
                total: n(r.total),
                passed: n(r.passed),
                failed: n(r.failed),
                error: n(r.error),
                skipped: n(r.skipped),
                xfailed: n(r.xfailed),
                xpassed: n(r.xpassed),
            },
            pass_rate: r.pass_rate,
            cases_complete: r.cases_complete != 0,
            note: r.note,
            quarantined_failures: n(r.quarantined_failures),
        }
    }
}

/// The columns of `test_cases` a [`CaseRecord`] is made of.
const CASE_FIELDS: [&str; 15] = [
    "test_id",
    "file",
    "classname",
    "name",
    "outcome",
    "duration_secs",
    "message",
    "traceback",
    "output",
    "retries",
    "flaky",
    "owners",
    "quarantined",
    "chunk",
    "idx",
];

/// A `test_cases` row as [`json_rows`] (SQLite) or a typed row
/// (PostgreSQL) hands it over.
#[derive(Deserialize, sqlx::FromRow)]
struct CaseRow {
    test_id: String,
    file: Option<String>,
    classname: Option<String>,
    name: String,
    outcome: i64,
    duration_secs: f64,
    message: Option<String>,
    traceback: Option<String>,
    output: Option<String>,
    retries: i64,
    flaky: i64,
    owners: Option<String>,
    quarantined: i64,
    chunk: i64,
    idx: i64,
}

impl CaseRow {
    fn position(&self) -> CasePosition {
        CasePosition {
            outcome: self.outcome,
            duration_secs: self.duration_secs,
            chunk: self.chunk,
            idx: self.idx,
        }
    }
}

impl TryFrom<CaseRow> for CaseRecord {
    type Error = sqlx::Error;

    fn try_from(c: CaseRow) -> Result<Self, sqlx::Error> {
        let outcome = Outcome::from_code(c.outcome).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "outcome".into(),
            source: format!("unknown outcome code {}", c.outcome).into(),
        })?;
        Ok(CaseRecord {
            test_id: c.test_id,
            file: c.file,
            classname: c.classname,
            name: c.name,
            outcome,
            duration_secs: c.duration_secs,
            message: c.message,
            traceback: c.traceback,
            output: c.output,
            retries: c.retries.clamp(0, i64::from(u32::MAX)) as u32,
            flaky: c.flaky != 0,
            owners: crate::owners::from_column(c.owners.as_deref())?,
            quarantined: c.quarantined != 0,
        })
    }
}

/// `SELECT <run fields> FROM runs` as the inner query of [`json_rows`],
/// the rows ordered by `order_by`.
fn select_runs(order_by: &str) -> QueryBuilder<Sqlite> {
    let mut qb = json_rows::select(&RUN_FIELDS, order_by);
    qb.push("SELECT ")
        .push(RUN_FIELDS.join(", "))
        .push(" FROM runs");
    qb
}

async fn fetch_runs(
    qb: QueryBuilder<Sqlite>,
    pool: &SqlitePool,
) -> Result<Vec<RunRecord>, sqlx::Error> {
    let rows: Vec<RunRow> = json_rows::fetch(qb, pool).await?;
    Ok(rows.into_iter().map(RunRecord::from).collect())
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
    pub status: Option<RunStatus>,
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
pub async fn list_runs(pool: &ReadPool, f: &RunFilter) -> Result<Vec<RunRecord>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => list_runs_sqlite(p, f).await,
        ReadPool::Postgres(p) => postgres::list_runs(p, f).await,
    }
}

/// [`list_runs`] on SQLite.
pub(crate) async fn list_runs_sqlite(
    pool: &SqlitePool,
    f: &RunFilter,
) -> Result<Vec<RunRecord>, sqlx::Error> {
    let mut qb = select_runs("started_at DESC, run_id DESC");
    qb.push(" WHERE 1 = 1");
    for (column, value) in [
        ("project", &f.project),
        ("branch", &f.branch),
        ("worker_id", &f.worker_id),
    ] {
        if let Some(v) = value {
            qb.push(format_args!(" AND {column} = "))
                .push_bind(v.clone());
        }
    }
    if let Some(s) = f.status {
        qb.push(" AND status = ").push_bind(s);
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
    fetch_runs(qb, pool).await
}

/// One complete run.
pub async fn get_run(pool: &ReadPool, run_id: &str) -> Result<Option<RunRecord>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => get_run_sqlite(p, run_id).await,
        ReadPool::Postgres(p) => postgres::get_run(p, run_id).await,
    }
}

/// [`get_run`] on SQLite.
pub(crate) async fn get_run_sqlite(
    pool: &SqlitePool,
    run_id: &str,
) -> Result<Option<RunRecord>, sqlx::Error> {
    let mut qb = select_runs("run_id");
    qb.push(" WHERE run_id = ").push_bind(run_id.to_string());
    Ok(fetch_runs(qb, pool).await?.pop())
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

/// Where a case sits in a run's case order: the last case of a page, to
/// continue after it. It carries the keys of both orders, so a position
/// taken in one order is meaningful (if surprising) in the other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CasePosition {
    /// Stored outcome code.
    pub outcome: i64,
    /// Seconds.
    pub duration_secs: f64,
    /// Message (chunk) of the run it arrived in.
    pub chunk: i64,
    /// Its index within the chunk.
    pub idx: i64,
}

/// One page of a run's cases.
#[derive(Debug, Clone, PartialEq)]
pub struct CasePage {
    /// The cases, in the order asked for.
    pub cases: Vec<CaseRecord>,
    /// Where the next page starts, when more cases match.
    pub next: Option<CasePosition>,
}

/// The cases of a run in `order`, after `after` when given. `outcomes`
/// restricts to those outcomes (all when empty); at most `limit` rows.
pub async fn run_cases(
    pool: &ReadPool,
    run_id: &str,
    outcomes: &[Outcome],
    order: CaseOrder,
    after: Option<CasePosition>,
    limit: u32,
) -> Result<CasePage, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => run_cases_sqlite(p, run_id, outcomes, order, after, limit).await,
        ReadPool::Postgres(p) => {
            postgres::run_cases(p, run_id, outcomes, order, after, limit).await
        }
    }
}

/// [`run_cases`] on SQLite.
pub(crate) async fn run_cases_sqlite(
    pool: &SqlitePool,
    run_id: &str,
    outcomes: &[Outcome],
    order: CaseOrder,
    after: Option<CasePosition>,
    limit: u32,
) -> Result<CasePage, sqlx::Error> {
    let order_by = match order {
        CaseOrder::FailuresFirst => "outcome, chunk, idx",
        CaseOrder::Slowest => "duration_secs DESC, chunk, idx",
    };
    let mut qb = json_rows::select(&CASE_FIELDS, order_by);
    qb.push("SELECT ")
        .push(CASE_FIELDS.join(", "))
        .push(" FROM test_cases WHERE run_id = ")
        .push_bind(run_id.to_string());
    if !outcomes.is_empty() {
        qb.push(" AND outcome IN (");
        let mut sep = qb.separated(", ");
        for o in outcomes {
            sep.push_bind(o.code());
        }
        qb.push(")");
    }
    if let Some(p) = after {
        match order {
            // A range of the (run_id, outcome, chunk, idx) index.
            CaseOrder::FailuresFirst => qb
                .push(" AND (outcome, chunk, idx) > (")
                .push_bind(p.outcome)
                .push(", ")
                .push_bind(p.chunk)
                .push(", ")
                .push_bind(p.idx)
                .push(")"),
            CaseOrder::Slowest => qb
                .push(" AND (duration_secs < ")
                .push_bind(p.duration_secs)
                .push(" OR (duration_secs = ")
                .push_bind(p.duration_secs)
                .push(" AND (chunk, idx) > (")
                .push_bind(p.chunk)
                .push(", ")
                .push_bind(p.idx)
                .push(")))"),
        };
    }
    // One row more than asked tells whether another page follows.
    qb.push(" ORDER BY ")
        .push(order_by)
        .push(" LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows: Vec<CaseRow> = json_rows::fetch(qb, pool).await?;
    case_page(rows, limit)
}

/// The page of `limit` cases from `rows`, fetched one beyond the page:
/// that row, when there, says another page follows.
fn case_page(mut rows: Vec<CaseRow>, limit: u32) -> Result<CasePage, sqlx::Error> {
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(CaseRow::position)
    } else {
        None
    };
    Ok(CasePage {
        cases: rows
            .into_iter()
            .map(CaseRecord::try_from)
            .collect::<Result<_, _>>()?,
        next,
    })
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
pub async fn list_rejected(pool: &ReadPool, limit: u32) -> Result<Vec<Rejection>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => list_rejected_sqlite(p, limit).await,
        ReadPool::Postgres(p) => postgres::list_rejected(p, limit).await,
    }
}

/// [`list_rejected`] on SQLite.
pub(crate) async fn list_rejected_sqlite(
    pool: &SqlitePool,
    limit: u32,
) -> Result<Vec<Rejection>, sqlx::Error> {
    let rows: Vec<RejectedRow> = sqlx::query_as(
        "SELECT received_at, subject, msg_id, run_id, reason, excerpt, payload FROM rejected \
             ORDER BY received_at DESC, id DESC LIMIT ?",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(rejection).collect())
}

/// A `rejected` row as served.
fn rejection((at, subject, msg_id, run_id, reason, excerpt, payload): RejectedRow) -> Rejection {
    Rejection {
        received_at: from_millis(at),
        subject,
        msg_id,
        run_id,
        reason,
        excerpt,
        payload,
    }
}

/// The content digest stored for `run_id`: of the complete run, else of
/// its final message still waiting for chunks; `None` when neither is
/// stored (or it was stored before digests were kept).
pub async fn stored_digest(pool: &ReadPool, run_id: &str) -> Result<Option<String>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => stored_digest_sqlite(p, run_id).await,
        ReadPool::Postgres(p) => postgres::stored_digest(p, run_id).await,
    }
}

/// [`stored_digest`] on SQLite.
pub(crate) async fn stored_digest_sqlite(
    pool: &SqlitePool,
    run_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT digest FROM runs WHERE run_id = ?1 \
         UNION ALL SELECT digest FROM pending_runs WHERE run_id = ?1 LIMIT 1",
    )
    .bind(run_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(d,)| d))
}

/// A cheap query proving the database answers.
pub async fn ping(pool: &ReadPool) -> Result<(), sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => ping_sqlite(p).await,
        ReadPool::Postgres(p) => postgres::ping(p).await,
    }
}

/// [`ping`] on SQLite.
pub(crate) async fn ping_sqlite(pool: &SqlitePool) -> Result<(), sqlx::Error> {
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
    /// Only these tests (an owner's).
    pub tests: crate::owners::TestSet,
}

/// The most frequently failing tests among the runs matching `f`, counted
/// once per run, most failures first (then the most recent, then by test id
/// and project); the message is that of the newest run's first failing case
/// in the order cases are stored (worst outcome, chunk, index), as the
/// rollups keep it. The rollups answer the common
/// project-wide question ([`crate::read::rollups::failure_stats`]); this query
/// answers the narrower ones (a branch, a worker) that they do not keep.
pub async fn failure_stats_where(
    pool: &ReadPool,
    f: &FailureFilter,
    limit: u32,
) -> Result<Vec<crate::read::rollups::FailureStat>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => failure_stats_where_sqlite(p, f, limit).await,
        ReadPool::Postgres(p) => postgres::failure_stats_where(p, f, limit).await,
    }
}

/// [`failure_stats_where`] on SQLite.
pub(crate) async fn failure_stats_where_sqlite(
    pool: &SqlitePool,
    f: &FailureFilter,
    limit: u32,
) -> Result<Vec<crate::read::rollups::FailureStat>, sqlx::Error> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "WITH f AS (SELECT r.project, c.test_id, r.run_id, r.started_at, c.message, \
         ROW_NUMBER() OVER (PARTITION BY r.project, c.test_id \
         ORDER BY r.started_at DESC, r.run_id DESC, c.outcome, c.chunk, c.idx) AS rn \
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
    crate::owners::push_filter(&mut qb, &f.tests, "r.project", "c.test_id");
    qb.push(
        ") SELECT project, test_id, COUNT(DISTINCT run_id) AS n, MAX(started_at) AS last_at, \
         MAX(CASE WHEN rn = 1 THEN message END), MAX(CASE WHEN rn = 1 THEN run_id END) \
         FROM f GROUP BY project, test_id ORDER BY n DESC, last_at DESC, test_id, project LIMIT ",
    )
    .push_bind(i64::from(limit));
    let rows: Vec<crate::read::rollups::StatRow> = qb.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(crate::read::rollups::stat).collect())
}

#[cfg(test)]
#[path = "queries_tests.rs"]
mod tests;
