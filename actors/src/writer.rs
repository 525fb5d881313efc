//! The writer actor: the only code that writes to SQLite.
//!
//! Ingest sends it a [`StoreBatch`] holding everything it pulled from the
//! stream in one go (case chunks, run finals, rejections); the writer stores
//! the whole batch in **one transaction** with multi-row `INSERT`s and replies
//! only after the commit, so ingest can ack exactly what is durable.
//!
//! Guarantees:
//! - Idempotent by `(run_id, chunk)` and by `run_id`: a chunk or final seen
//!   before (redelivery, agent retry, spool resend) changes nothing.
//! - A run becomes visible (a row in `runs`) only in the transaction that
//!   stores its last missing piece, and only if its counts agree with its
//!   cases; otherwise its cases are dropped and a rejection says why.
//! - After each commit the aggregates actor is told about the runs that
//!   completed, so trends and statistics stay in step with the database.
//! - A failed transaction rolls back entirely and the error goes back to the
//!   caller, which leaves the messages unacked for redelivery.

use std::collections::{BTreeSet, HashMap};

use actix::prelude::*;
use chrono::Utc;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use crate::model::{CaseRecord, Counts, Outcome, Rejection, RunRecord, to_millis};

/// Rows per multi-row `INSERT` into `test_cases` (14 binds a row, under
/// SQLite's 32,766-variable limit).
const CASE_ROWS_PER_STATEMENT: usize = 2000;

/// One unit of work inside a [`StoreBatch`].
#[derive(Debug, Clone)]
pub enum BatchItem {
    /// A chunk of a run's test cases.
    Chunk {
        /// The run.
        run_id: String,
        /// 0-based chunk number.
        chunk: u32,
        /// Its cases.
        cases: Vec<CaseRecord>,
    },
    /// A run's metadata and how many chunks make it.
    Final {
        /// The run.
        run: Box<RunRecord>,
        /// Number of chunks.
        chunks: u32,
    },
    /// A message refused before reaching the writer; stored for inspection.
    Reject(Rejection),
}

/// Store a batch of items in one transaction. Replies after commit.
#[derive(Debug, Message)]
#[rtype(result = "Result<BatchReport, StoreError>")]
pub struct StoreBatch(pub Vec<BatchItem>);

/// What a committed batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Runs that became complete (visible) in this batch.
    pub completed: Vec<String>,
    /// Items that were already stored and changed nothing.
    pub duplicates: usize,
    /// Rejections stored (items refused upstream plus runs refused here).
    pub rejected: usize,
    /// Test case rows inserted.
    pub cases_inserted: usize,
}

/// The writer could not commit; nothing of the batch is stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused (busy, locked, disk full, I/O error...).
    #[error("SQLite write failed: {0}")]
    Sqlite(#[from] sqlx::Error),
}

/// A run that just became complete, with what the aggregates need.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RunCompleted {
    /// The run.
    pub run: RunRecord,
    /// Its failing cases: (test id, message).
    pub failures: Vec<(String, Option<String>)>,
}

/// The writer actor. Owns the single-connection write pool.
pub struct Writer {
    pool: SqlitePool,
    completed_to: Recipient<RunCompleted>,
}

impl Writer {
    /// A writer over `pool` (one connection) that reports completed runs to
    /// `completed_to`.
    pub fn new(pool: SqlitePool, completed_to: Recipient<RunCompleted>) -> Writer {
        Writer { pool, completed_to }
    }
}

impl Actor for Writer {
    type Context = Context<Self>;
}

impl Handler<StoreBatch> for Writer {
    type Result = AtomicResponse<Self, Result<BatchReport, StoreError>>;

    fn handle(&mut self, msg: StoreBatch, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        AtomicResponse::new(Box::pin(
            async move { store_batch(&pool, msg.0).await }
                .into_actor(self)
                .map(|res, act, _ctx| {
                    res.map(|(report, completed)| {
                        for c in completed {
                            act.completed_to.do_send(c);
                        }
                        report
                    })
                }),
        ))
    }
}

async fn store_batch(
    pool: &SqlitePool,
    items: Vec<BatchItem>,
) -> Result<(BatchReport, Vec<RunCompleted>), StoreError> {
    let now = to_millis(Utc::now());
    let mut report = BatchReport::default();
    let mut tx = pool.begin().await?;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut new_cases: Vec<(&str, u32, usize, &CaseRecord)> = Vec::new();

    for item in &items {
        match item {
            BatchItem::Chunk {
                run_id,
                chunk,
                cases,
            } => {
                if run_exists(&mut tx, run_id).await? {
                    report.duplicates += 1;
                    continue;
                }
                let inserted = sqlx::query(
                    "INSERT OR IGNORE INTO run_chunks (run_id, chunk, cases, received_at) VALUES (?, ?, ?, ?)",
                )
                .bind(run_id)
                .bind(*chunk)
                .bind(cases.len() as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    report.duplicates += 1;
                    continue;
                }
                new_cases.extend(
                    cases
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (run_id.as_str(), *chunk, i, c)),
                );
                touched.insert(run_id.clone());
            }
            BatchItem::Final { run, chunks } => {
                if run_exists(&mut tx, &run.run_id).await? {
                    report.duplicates += 1;
                    continue;
                }
                let info = serde_json::to_string(run).unwrap_or_default();
                sqlx::query(
                    "INSERT OR REPLACE INTO pending_runs (run_id, chunks, info, received_at) VALUES (?, ?, ?, ?)",
                )
                .bind(&run.run_id)
                .bind(*chunks)
                .bind(info)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                touched.insert(run.run_id.clone());
            }
            BatchItem::Reject(r) => {
                insert_rejection(&mut tx, r).await?;
                report.rejected += 1;
            }
        }
    }

    for rows in new_cases.chunks(CASE_ROWS_PER_STATEMENT) {
        insert_cases(&mut tx, rows).await?;
        report.cases_inserted += rows.len();
    }

    let mut completed = Vec::new();
    for run_id in &touched {
        match try_complete(&mut tx, run_id, now).await? {
            Completion::NotYet => {}
            Completion::Done(c) => {
                report.completed.push(run_id.clone());
                completed.push(*c);
            }
            Completion::Refused => report.rejected += 1,
        }
    }

    tx.commit().await?;
    Ok((report, completed))
}

async fn run_exists(conn: &mut SqliteConnection, run_id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM runs WHERE run_id = ?")
        .bind(run_id)
        .fetch_optional(conn)
        .await?
        .is_some())
}

async fn insert_rejection(conn: &mut SqliteConnection, r: &Rejection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rejected (received_at, subject, msg_id, run_id, reason, excerpt) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(to_millis(r.received_at))
    .bind(&r.subject)
    .bind(&r.msg_id)
    .bind(&r.run_id)
    .bind(&r.reason)
    .bind(&r.excerpt)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_cases(
    conn: &mut SqliteConnection,
    rows: &[(&str, u32, usize, &CaseRecord)],
) -> Result<(), sqlx::Error> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO test_cases (run_id, chunk, idx, test_id, file, classname, name, outcome, \
         duration_secs, message, traceback, output, retries, flaky) ",
    );
    qb.push_values(rows, |mut b, (run_id, chunk, idx, c)| {
        b.push_bind(run_id.to_string())
            .push_bind(*chunk)
            .push_bind(*idx as i64)
            .push_bind(c.test_id.clone())
            .push_bind(c.file.clone())
            .push_bind(c.classname.clone())
            .push_bind(c.name.clone())
            .push_bind(c.outcome.code())
            .push_bind(c.duration_secs)
            .push_bind(c.message.clone())
            .push_bind(c.traceback.clone())
            .push_bind(c.output.clone())
            .push_bind(c.retries)
            .push_bind(c.flaky);
    });
    qb.build().execute(conn).await?;
    Ok(())
}

enum Completion {
    NotYet,
    Done(Box<RunCompleted>),
    Refused,
}

/// Makes `run_id` visible if its final and all its chunks are stored and the
/// counts agree with the cases.
async fn try_complete(
    conn: &mut SqliteConnection,
    run_id: &str,
    now: i64,
) -> Result<Completion, sqlx::Error> {
    let pending: Option<(i64, String)> =
        sqlx::query_as("SELECT chunks, info FROM pending_runs WHERE run_id = ?")
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((chunks, info)) = pending else {
        return Ok(Completion::NotYet);
    };
    let (have,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM run_chunks WHERE run_id = ?")
        .bind(run_id)
        .fetch_one(&mut *conn)
        .await?;
    if have < chunks {
        return Ok(Completion::NotYet);
    }
    let run: Result<RunRecord, _> = serde_json::from_str(&info);
    let by_outcome: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT outcome, COUNT(*) FROM test_cases WHERE run_id = ? GROUP BY outcome",
    )
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    let seen: HashMap<i64, u64> = by_outcome
        .into_iter()
        .map(|(o, n)| (o, n.max(0) as u64))
        .collect();
    let verdict = match run {
        Err(e) => Err(format!("stored run metadata is unreadable: {e}")),
        Ok(run) => check_counts(&run, &seen, have, chunks).map(|()| run),
    };
    sqlx::query("DELETE FROM pending_runs WHERE run_id = ?")
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    let run = match verdict {
        Ok(run) => run,
        Err(reason) => {
            sqlx::query("DELETE FROM test_cases WHERE run_id = ?")
                .bind(run_id)
                .execute(&mut *conn)
                .await?;
            let rejection = Rejection {
                received_at: crate::model::from_millis(now),
                subject: None,
                msg_id: None,
                run_id: Some(run_id.to_string()),
                reason,
                excerpt: None,
            };
            insert_rejection(conn, &rejection).await?;
            return Ok(Completion::Refused);
        }
    };
    insert_run(&mut *conn, &run, now).await?;
    let failures: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT test_id, message FROM test_cases WHERE run_id = ? AND outcome IN (0, 1) ORDER BY outcome, chunk, idx",
    )
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Completion::Done(Box::new(RunCompleted { run, failures })))
}

fn check_counts(
    run: &RunRecord,
    seen: &HashMap<i64, u64>,
    have_chunks: i64,
    chunks: i64,
) -> Result<(), String> {
    if have_chunks > chunks {
        return Err(format!(
            "run declares {chunks} chunks but {have_chunks} arrived (a chunk for a run that does not have it)"
        ));
    }
    for o in Outcome::ALL {
        let declared = run.counts.get(o);
        let stored = seen.get(&o.code()).copied().unwrap_or(0);
        let ok = if run.cases_complete {
            declared == stored
        } else {
            declared >= stored
        };
        if !ok {
            return Err(format!(
                "counts contradict the cases: the run says {declared} {}, its chunks hold {stored}",
                o.as_str()
            ));
        }
    }
    Ok(())
}

async fn insert_run(
    conn: &mut SqliteConnection,
    r: &RunRecord,
    now: i64,
) -> Result<(), sqlx::Error> {
    let c: &Counts = &r.counts;
    sqlx::query(
        "INSERT INTO runs (run_id, project, branch, commit_sha, worker_id, host, runner, command, \
         started_at, finished_at, duration_secs, exit_code, status, total, passed, failed, error, \
         skipped, xfailed, xpassed, pass_rate, cases_complete, note, received_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.run_id)
    .bind(&r.project)
    .bind(&r.branch)
    .bind(&r.commit)
    .bind(&r.worker_id)
    .bind(&r.host)
    .bind(&r.runner)
    .bind(&r.command)
    .bind(to_millis(r.started_at))
    .bind(to_millis(r.finished_at))
    .bind(r.duration_secs)
    .bind(r.exit_code)
    .bind(&r.status)
    .bind(c.total as i64)
    .bind(c.passed as i64)
    .bind(c.failed as i64)
    .bind(c.error as i64)
    .bind(c.skipped as i64)
    .bind(c.xfailed as i64)
    .bind(c.xpassed as i64)
    .bind(r.pass_rate)
    .bind(r.cases_complete)
    .bind(&r.note)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
