//! The writer actor: the only code that writes to SQLite.
//!
//! Ingest sends it a [`StoreBatch`] holding everything it pulled from the
//! stream in one go (case chunks, run finals, rejections); the writer stores
//! the whole batch in **one transaction** with multi-row `INSERT`s and replies
//! only after the commit, so ingest can ack exactly what is durable.
//!
//! Guarantees:
//! - Idempotent by `(run_id, chunk)` and by `run_id`: a chunk or final seen
//!   before (redelivery, agent retry, spool resend) changes nothing. One
//!   with the same id but other content (a run id reused) changes nothing
//!   either, but is never silently dropped: it is recorded in `rejected`
//!   as a conflict naming both digests.
//! - A run becomes visible (a row in `runs`) only in the transaction that
//!   stores its last missing piece, and only if its counts agree with its
//!   cases; otherwise its cases are dropped and a rejection says why.
//! - The rollups ([`crate::rollups`]: worker statistics, failure counts)
//!   are updated in the transaction that makes a run visible and in the one
//!   that prunes it, so they never disagree with the runs stored. So are the
//!   current owners of its tests ([`crate::owners`]) and the clean-run
//!   counts of its quarantined tests ([`crate::auto_quarantine`]), and its
//!   per-test summary ([`crate::run_tests`]), which goes with its cases.
//! - A failed transaction rolls back entirely and the error goes back to the
//!   caller, which leaves the messages unacked for redelivery.

use std::collections::{BTreeSet, HashMap};

use actix::prelude::*;
use chrono::Utc;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use crate::model::{CaseRecord, Counts, Outcome, Rejection, RunRecord, to_millis};
use crate::supervise::Faults;
use crate::version::{Changed, DataVersion};
use crate::{auto_quarantine, clusters, flaky, interning, owners, rollups, run_tests, webhooks};

/// Rows per multi-row `INSERT` into `cases` (14 binds a row, under
/// SQLite's 32,766-variable limit).
const CASE_ROWS_PER_STATEMENT: usize = 1900;

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
        /// Digest of its content: a resend has the same, another version
        /// of the chunk under a reused run id does not.
        digest: String,
    },
    /// A run's metadata and how many chunks make it.
    Final {
        /// The run.
        run: Box<RunRecord>,
        /// Number of chunks.
        chunks: u32,
        /// Digest of its content (times left out), as for chunks.
        digest: String,
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
    /// The write panicked (a bug met by this data); its transaction was
    /// rolled back. Counted as the data's fault, so ingest isolates the
    /// message and eventually dead-letters it instead of retrying forever.
    #[error("the writer failed on this data and rolled it back: {0}")]
    Panicked(String),
}

impl StoreError {
    /// Whether the failure is about the data written (a constraint or
    /// trigger refused a row, a value too big or of the wrong type) rather
    /// than about the database as a whole (busy, locked, disk full, I/O,
    /// read-only, a broken schema, the connection).
    ///
    /// Ingest uses this to tell a poison message, which must be isolated and
    /// eventually dead-lettered, from an outage, during which every message
    /// must wait unacked.
    pub fn blames_the_data(&self) -> bool {
        let e = match self {
            StoreError::Panicked(_) => return true,
            StoreError::Sqlite(sqlx::Error::Database(e)) => e,
            StoreError::Sqlite(_) => return false,
        };
        let Some(code) = e.code().and_then(|c| c.parse::<i32>().ok()) else {
            return false;
        };
        // Primary result codes: SQLITE_TOOBIG 18, SQLITE_CONSTRAINT 19,
        // SQLITE_MISMATCH 20, SQLITE_RANGE 25. Extended codes keep the
        // primary code in their low byte.
        matches!(code & 0xff, 18 | 19 | 20 | 25)
    }
}

/// The writer actor. Owns the single-connection write pool.
pub struct Writer {
    pub(crate) pool: SqlitePool,
    version: DataVersion,
    faults: Faults,
    /// Which events to put in the webhook outbox, and for whom.
    pub(crate) webhooks: std::sync::Arc<webhooks::Routes>,
    /// Test identities known to be stored (bounded; see
    /// [`interning::KnownTests`]).
    known: interning::Known,
}

impl Writer {
    /// A writer over `pool` (one connection); `version` is bumped after
    /// every write that changes what readers see.
    pub fn new(pool: SqlitePool, version: DataVersion) -> Writer {
        Writer {
            pool,
            version,
            faults: Faults::default(),
            webhooks: Default::default(),
            known: Default::default(),
        }
    }

    /// Stores the webhook events `routes` asks for with the writes that
    /// cause them (see [`crate::webhooks`]).
    pub fn with_webhooks(mut self, routes: webhooks::Routes) -> Writer {
        self.webhooks = std::sync::Arc::new(routes);
        self
    }

    /// Records panics of its writes in `faults` (shown by `/health`).
    pub fn supervised(mut self, faults: Faults) -> Writer {
        self.faults = faults;
        self
    }
}

impl Writer {
    /// `write` as this actor's future, bumping the data versions of what
    /// it changed when it finishes (everything's, when it failed). Every
    /// handler that writes goes through here, so no cache of reads
    /// outlives a change, and no panic in a write kills the actor: it
    /// becomes [`StoreError::Panicked`] (the dropped transaction rolls
    /// back) and is counted in the faults.
    pub(crate) fn write<
        T: 'static,
        F: Future<Output = Result<(T, Changed), StoreError>> + 'static,
    >(
        &self,
        write: F,
    ) -> impl ActorFuture<Self, Output = Result<T, StoreError>> + 'static + use<T, F> {
        use futures::FutureExt;
        std::panic::AssertUnwindSafe(write)
            .catch_unwind()
            .into_actor(self)
            .map(|res, act: &mut Writer, _ctx| {
                let res = res.unwrap_or_else(|p| {
                    let reason = crate::supervise::panic_reason(p.as_ref());
                    act.faults.record("writer", &"a write", &reason);
                    Err(StoreError::Panicked(reason))
                });
                match res {
                    Ok((value, changed)) => {
                        act.version.changed(&changed);
                        Ok(value)
                    }
                    Err(e) => {
                        act.version.unknown();
                        Err(e)
                    }
                }
            })
    }
}

impl Actor for Writer {
    type Context = Context<Self>;
}

impl Handler<StoreBatch> for Writer {
    type Result = AtomicResponse<Self, Result<BatchReport, StoreError>>;

    fn handle(&mut self, msg: StoreBatch, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        let hooks = self.webhooks.clone();
        let known = self.known.clone();
        AtomicResponse::new(Box::pin(
            self.write(async move { store_batch(&pool, &hooks, &known, msg.0).await }),
        ))
    }
}

/// Retention, step 1: delete up to `max_runs` runs that started before
/// `cutoff` (with their cases), plus incomplete runs, pending finals and
/// rejections received before it. One transaction per message, so ingest's
/// batches interleave with a long prune. Send until it reports nothing left.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<PruneReport, StoreError>")]
pub struct PruneSlice {
    /// Everything older than this goes (`None`: no age limit).
    pub cutoff: Option<chrono::DateTime<Utc>>,
    /// Beyond the newest this many runs of each project, runs go too
    /// (`None`: no count limit).
    pub keep_runs: Option<u32>,
    /// Most runs deleted by this message.
    pub max_runs: u32,
}

/// What one [`PruneSlice`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Complete runs deleted.
    pub runs: u64,
    /// Test case rows deleted (of complete and incomplete runs).
    pub cases: u64,
    /// Incomplete runs (chunks or finals that never made a run) deleted.
    pub incomplete: u64,
    /// Rejections deleted.
    pub rejected: u64,
}

impl PruneReport {
    /// Whether the slice deleted nothing (the prune is done).
    pub fn is_empty(&self) -> bool {
        *self == PruneReport::default()
    }
}

/// Retention, step 2: delete the tests and texts no case refers to any
/// more (see `interning`), then give the freed pages back to the file
/// system (incremental vacuum, WAL truncated). Replies with the file size before
/// and after, in bytes.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(u64, u64), StoreError>")]
pub struct FinishPrune;

impl Handler<PruneSlice> for Writer {
    type Result = AtomicResponse<Self, Result<PruneReport, StoreError>>;

    fn handle(&mut self, msg: PruneSlice, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        AtomicResponse::new(Box::pin(
            self.write(async move { prune_slice(&pool, &msg).await }),
        ))
    }
}

impl Handler<FinishPrune> for Writer {
    type Result = AtomicResponse<Self, Result<(u64, u64), StoreError>>;

    fn handle(&mut self, _msg: FinishPrune, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        let known = self.known.clone();
        // Space given back changes nothing a reader sees.
        AtomicResponse::new(Box::pin(self.write(async move {
            Ok((reclaim(&pool, &known).await?, Changed::default()))
        })))
    }
}

async fn prune_slice(
    pool: &SqlitePool,
    msg: &PruneSlice,
) -> Result<(PruneReport, Changed), StoreError> {
    // Without an age limit, nothing is old: incomplete runs are then left to
    // ExpireIncomplete and rejections are kept.
    let cutoff = msg.cutoff.map_or(i64::MIN, to_millis);
    let limit = i64::from(msg.max_runs.max(1));
    let mut report = PruneReport::default();
    let mut tx = pool.begin().await?;
    let runs: Vec<(String, String)> = match msg.keep_runs {
        None => {
            sqlx::query_as(
                "SELECT run_id, project FROM runs WHERE started_at < ? ORDER BY started_at LIMIT ?",
            )
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        }
        Some(keep) => sqlx::query_as(
            "SELECT run_id, project FROM (SELECT run_id, project, started_at, ROW_NUMBER() OVER \
                   (PARTITION BY project ORDER BY started_at DESC, run_id DESC) AS newest \
                   FROM runs) \
                 WHERE started_at < ? OR newest > ? ORDER BY started_at LIMIT ?",
        )
        .bind(cutoff)
        .bind(i64::from(keep))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?,
    };
    // Chunks or finals that never became a run, received before the cut-off.
    let incomplete: Vec<(String,)> = sqlx::query_as(
        "SELECT run_id FROM run_chunks WHERE received_at < ? AND run_id NOT IN (SELECT run_id FROM runs) \
         UNION SELECT run_id FROM pending_runs WHERE received_at < ? LIMIT ?",
    )
    .bind(cutoff)
    .bind(cutoff)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let complete: BTreeSet<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
    let ids = runs
        .iter()
        .map(|(id, _)| id)
        .chain(incomplete.iter().map(|(id,)| id));
    for run_id in ids {
        // One run at a time: what the rollups recompute after taking a run
        // out must not see the runs pruned before it.
        if complete.contains(run_id.as_str()) {
            rollups::remove_run(&mut tx, run_id).await?;
            flaky::forget_evidence(&mut tx, run_id).await?;
        }
        report.cases += interning::delete_cases(&mut tx, run_id).await?;
        for sql in [
            "DELETE FROM run_chunks WHERE run_id = ?",
            "DELETE FROM pending_runs WHERE run_id = ?",
        ] {
            sqlx::query(sql).bind(run_id).execute(&mut *tx).await?;
        }
        report.runs += sqlx::query("DELETE FROM runs WHERE run_id = ?")
            .bind(run_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    report.incomplete = incomplete.len() as u64;
    report.rejected = sqlx::query(
        "DELETE FROM rejected WHERE id IN (SELECT id FROM rejected WHERE received_at < ? LIMIT ?)",
    )
    .bind(cutoff)
    .bind(limit * 10)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    let changed = Changed {
        pruned: !runs.is_empty(),
        projects: runs.into_iter().map(|(_, project)| project).collect(),
    };
    Ok((report, changed))
}

/// Marks a flaky test fixed: evidence from runs started before `at` no
/// longer counts (see [`crate::flaky`]). Replies whether the test had
/// results in the project at all (nothing is stored when it had none).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct ClearFlaky {
    /// Project.
    pub project: String,
    /// Test id.
    pub test_id: String,
    /// When it was fixed (usually now).
    pub at: chrono::DateTime<Utc>,
    /// Why, for the record (a commit, a ticket).
    pub note: Option<String>,
}

impl Handler<ClearFlaky> for Writer {
    type Result = AtomicResponse<Self, Result<bool, StoreError>>;

    fn handle(&mut self, msg: ClearFlaky, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            let known: Option<(i64,)> = sqlx::query_as(
                "SELECT 1 FROM runs r CROSS JOIN run_keys k \
                     CROSS JOIN cases c INDEXED BY cases_by_run_test \
                     WHERE r.project = ? AND k.run_id = r.run_id AND c.run_key = k.run_key \
                       AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = ?) LIMIT 1",
            )
            .bind(&msg.project)
            .bind(&msg.test_id)
            .fetch_optional(&pool)
            .await?;
            if known.is_none() {
                return Ok((false, Changed::default()));
            }
            sqlx::query(
                "INSERT INTO flaky_cleared (project, test_id, cleared_at, note) \
                     VALUES (?, ?, ?, ?) ON CONFLICT (project, test_id) DO UPDATE SET \
                     cleared_at = excluded.cleared_at, note = excluded.note",
            )
            .bind(&msg.project)
            .bind(&msg.test_id)
            .bind(to_millis(msg.at))
            .bind(&msg.note)
            .execute(&pool)
            .await?;
            let changed = Changed {
                projects: [msg.project].into(),
                pruned: false,
            };
            Ok((true, changed))
        })))
    }
}

/// Drops runs that will never complete: chunks whose final message never
/// came, and finals whose chunks never all came, received before
/// `received_before`. Each becomes a rejection saying what was missing, so an
/// agent killed mid-publish shows up at `GET /rejected` instead of vanishing.
/// Replies with the number of runs dropped (at most 500 per message).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct ExpireIncomplete {
    /// Pieces received before this are given up on.
    pub received_before: chrono::DateTime<Utc>,
}

impl Handler<ExpireIncomplete> for Writer {
    type Result = AtomicResponse<Self, Result<u64, StoreError>>;

    fn handle(&mut self, msg: ExpireIncomplete, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        AtomicResponse::new(Box::pin(
            // Only rejections are added, which no cached answer shows.
            self.write(async move {
                Ok((
                    expire_incomplete(&pool, msg.received_before).await?,
                    Changed::default(),
                ))
            }),
        ))
    }
}

async fn expire_incomplete(
    pool: &SqlitePool,
    before: chrono::DateTime<Utc>,
) -> Result<u64, StoreError> {
    let cutoff = to_millis(before);
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    // Runs with pieces but no visible run, whose newest piece is old.
    let stale: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT c.run_id, COUNT(*), p.chunks FROM run_chunks c \
         LEFT JOIN pending_runs p ON p.run_id = c.run_id \
         WHERE c.run_id NOT IN (SELECT run_id FROM runs) \
         GROUP BY c.run_id HAVING MAX(c.received_at) < ? AND COALESCE(MAX(p.received_at), 0) < ? \
         UNION ALL \
         SELECT p.run_id, 0, p.chunks FROM pending_runs p \
         WHERE p.received_at < ? AND NOT EXISTS (SELECT 1 FROM run_chunks c WHERE c.run_id = p.run_id) \
         LIMIT 500",
    )
    .bind(cutoff)
    .bind(cutoff)
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await?;
    for (run_id, have, declared) in &stale {
        let reason = match declared {
            None => format!(
                "{have} chunk(s) of run {run_id} arrived but its final message never did; \
                 the agent was probably stopped while publishing. The partial run was dropped: \
                 publish the run again (ptp-agent upload) to store it"
            ),
            Some(n) => format!(
                "run {run_id} names {n} chunk(s) but only {have} arrived; the partial run \
                 was dropped: publish the run again (ptp-agent upload) to store it"
            ),
        };
        interning::delete_cases(&mut tx, run_id).await?;
        for sql in [
            "DELETE FROM run_chunks WHERE run_id = ?",
            "DELETE FROM pending_runs WHERE run_id = ?",
        ] {
            sqlx::query(sql).bind(run_id).execute(&mut *tx).await?;
        }
        let rejection = Rejection {
            received_at: now,
            subject: None,
            msg_id: None,
            run_id: Some(run_id.clone()),
            reason,
            excerpt: None,
            payload: None,
        };
        insert_rejection(&mut tx, &rejection).await?;
    }
    tx.commit().await?;
    Ok(stale.len() as u64)
}

async fn file_bytes(conn: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
        .fetch_one(&mut *conn)
        .await?;
    let (size,): (i64,) = sqlx::query_as("PRAGMA page_size")
        .fetch_one(&mut *conn)
        .await?;
    Ok((pages.max(0) * size.max(0)) as u64)
}

/// Deletes orphaned tests and texts, then frees the pages pruning left
/// empty. Databases made before incremental auto-vacuum was the default are
/// converted once with a full `VACUUM`.
async fn reclaim(pool: &SqlitePool, known: &interning::Known) -> Result<Sizes, StoreError> {
    let mut tx = pool.begin().await?;
    let (tests, texts) = interning::drop_orphans(&mut tx).await?;
    // Before the commit: a key forgotten too early costs one lookup, a key
    // kept after its row is gone would be a dangling reference.
    interning::lock(known).forget_all();
    tx.commit().await?;
    tracing::debug!(tests, texts, "orphaned tests and texts deleted");
    let mut conn = pool.acquire().await?;
    let before = file_bytes(&mut conn).await?;
    let (mode,): (i64,) = sqlx::query_as("PRAGMA auto_vacuum")
        .fetch_one(&mut *conn)
        .await?;
    if mode != 2 {
        tracing::info!("converting the database to incremental auto-vacuum (one full VACUUM)");
        sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
            .execute(&mut *conn)
            .await?;
        sqlx::query("VACUUM").execute(&mut *conn).await?;
    } else {
        sqlx::query("PRAGMA incremental_vacuum")
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await?;
    let after = file_bytes(&mut conn).await?;
    Ok((before, after))
}

/// Size before and after, in bytes.
type Sizes = (u64, u64);

async fn store_batch(
    pool: &SqlitePool,
    hooks: &webhooks::Routes,
    known: &interning::Known,
    items: Vec<BatchItem>,
) -> Result<(BatchReport, Changed), StoreError> {
    let now = to_millis(Utc::now());
    let mut report = BatchReport::default();
    let mut tx = pool.begin().await?;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut new_cases: Vec<(&str, u32, usize, &CaseRecord)> = Vec::new();
    let mut learned = interning::Learned::new();

    for item in &items {
        match item {
            BatchItem::Chunk {
                run_id,
                chunk,
                cases,
                digest,
            } => {
                let stored: Option<(Option<String>,)> =
                    sqlx::query_as("SELECT digest FROM run_chunks WHERE run_id = ? AND chunk = ?")
                        .bind(run_id)
                        .bind(*chunk)
                        .fetch_optional(&mut *tx)
                        .await?;
                let known = match stored {
                    Some((d,)) => Some(d),
                    // Complete, yet without this chunk: another version.
                    None if run_exists(&mut tx, run_id).await? => Some(Some(String::new())),
                    None => None,
                };
                if let Some(old) = known {
                    match old.filter(|old| old != digest) {
                        None => report.duplicates += 1,
                        Some(old) => {
                            let what = format!("chunk {chunk}");
                            insert_rejection(&mut tx, &conflict(run_id, &what, &old, digest, now))
                                .await?;
                            report.rejected += 1;
                        }
                    }
                    continue;
                }
                sqlx::query(
                    "INSERT INTO run_chunks (run_id, chunk, cases, received_at, digest) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(run_id)
                .bind(*chunk)
                .bind(cases.len() as i64)
                .bind(now)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
                new_cases.extend(
                    cases
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (run_id.as_str(), *chunk, i, c)),
                );
                touched.insert(run_id.clone());
            }
            BatchItem::Final {
                run,
                chunks,
                digest,
            } => {
                let stored: Option<(Option<String>,)> = sqlx::query_as(
                    "SELECT digest FROM runs WHERE run_id = ?1 \
                     UNION ALL SELECT digest FROM pending_runs WHERE run_id = ?1 LIMIT 1",
                )
                .bind(&run.run_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((old,)) = stored {
                    match old.filter(|old| old != digest) {
                        None => report.duplicates += 1,
                        Some(old) => {
                            let c = conflict(&run.run_id, "run", &old, digest, now);
                            insert_rejection(&mut tx, &c).await?;
                            report.rejected += 1;
                        }
                    }
                    continue;
                }
                let info = serde_json::to_string(run).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO pending_runs (run_id, chunks, info, received_at, digest) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&run.run_id)
                .bind(*chunks)
                .bind(info)
                .bind(now)
                .bind(digest)
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
        insert_cases(&mut tx, rows, known, &mut learned).await?;
        report.cases_inserted += rows.len();
    }

    // Only runs that became visible change what readers see.
    let mut changed = Changed::default();
    for run_id in &touched {
        match try_complete(&mut tx, hooks, run_id, now).await? {
            Completion::NotYet => {}
            Completion::Done { project } => {
                report.completed.push(run_id.clone());
                changed.projects.insert(project);
            }
            Completion::Refused => report.rejected += 1,
        }
    }

    tx.commit().await?;
    interning::lock(known).learn(learned);
    Ok((report, changed))
}

/// The rejection recording that `run_id` arrived again with other content
/// (`what`: "run" or "chunk N"); `old` is empty when the stored run has no
/// such chunk at all.
fn conflict(run_id: &str, what: &str, old: &str, new: &str, now: i64) -> Rejection {
    let old = if old.is_empty() {
        "none (the stored run has no such chunk)"
    } else {
        old
    };
    Rejection {
        received_at: crate::model::from_millis(now),
        subject: None,
        msg_id: None,
        run_id: Some(run_id.to_string()),
        reason: format!(
            "conflict: run_id {run_id} was published again with different content ({what}: \
             stored digest {old}, new digest {new}); the first version is kept. \
             Give every run its own run_id (ptp-agent makes a new one per run)"
        ),
        excerpt: None,
        payload: None,
    }
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
        "INSERT INTO rejected (received_at, subject, msg_id, run_id, reason, excerpt, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(to_millis(r.received_at))
    .bind(&r.subject)
    .bind(&r.msg_id)
    .bind(&r.run_id)
    .bind(&r.reason)
    .bind(&r.excerpt)
    .bind(&r.payload)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts cases; failed and errored ones with their failure signature
/// (see [`crate::clusters`]), whose text is stored once per signature.
async fn insert_cases(
    conn: &mut SqliteConnection,
    rows: &[(&str, u32, usize, &CaseRecord)],
    known: &interning::Known,
    learned: &mut interning::Learned,
) -> Result<(), sqlx::Error> {
    let mut signatures: HashMap<i64, clusters::Signature> = HashMap::new();
    let keys: Vec<Option<i64>> = rows
        .iter()
        .map(|(_, _, _, c)| {
            c.outcome.is_failure().then(|| {
                let sig = clusters::stored_signature(c.message.as_deref(), c.traceback.as_deref());
                let key = sig.key();
                signatures.entry(key).or_insert(sig);
                key
            })
        })
        .collect();
    // Intern what repeats: the batch's distinct runs, tests and texts.
    let mut runs = interning::Distinct::new();
    let mut tests = interning::Distinct::new();
    let mut texts = interning::Distinct::new();
    let owners: Vec<Option<String>> = rows
        .iter()
        .map(|(_, _, _, c)| owners::to_column(&c.owners))
        .collect();
    let mut at = Vec::with_capacity(rows.len());
    for ((run_id, _, _, c), owners) in rows.iter().zip(&owners) {
        let mut text = [None; 4];
        let bodies = [&c.message, &c.traceback, &c.output, owners];
        for (slot, body) in text.iter_mut().zip(bodies) {
            *slot = body.as_deref().map(|b| texts.add(b));
        }
        let test = (
            c.test_id.as_str(),
            c.file.as_deref(),
            c.classname.as_deref(),
            c.name.as_str(),
        );
        at.push((runs.add(*run_id), tests.add(test), text));
    }
    let run_keys = interning::run_keys(&mut *conn, &runs.values).await?;
    let test_keys = interning::test_keys(&mut *conn, &tests.values, known, learned).await?;
    let text_keys = interning::text_keys(&mut *conn, &texts.values).await?;
    let key = |keys: &[i64], i: usize| keys.get(i).copied();
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO cases (run_key, outcome, chunk, idx, test_key, duration_secs, retries, \
         flaky, quarantined, sig, message_key, traceback_key, output_key, owners_key) ",
    );
    qb.push_values(
        rows.iter().zip(&keys).zip(&at),
        |mut b, (((_, chunk, idx, c), sig), (run, test, text))| {
            b.push_bind(key(&run_keys, *run))
                .push_bind(c.outcome.code())
                .push_bind(*chunk)
                .push_bind(*idx as i64)
                .push_bind(key(&test_keys, *test))
                .push_bind(c.duration_secs)
                .push_bind(c.retries)
                .push_bind(c.flaky)
                .push_bind(c.quarantined)
                .push_bind(*sig);
            for t in text {
                b.push_bind(t.and_then(|i| key(&text_keys, i)));
            }
        },
    );
    qb.build().execute(&mut *conn).await?;
    if signatures.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<Sqlite> =
        QueryBuilder::new("INSERT OR IGNORE INTO signatures (sig, exception, message, frame) ");
    qb.push_values(signatures, |mut b, (key, sig)| {
        b.push_bind(key)
            .push_bind(sig.exception)
            .push_bind(sig.message)
            .push_bind(sig.frame);
    });
    qb.build().execute(conn).await?;
    Ok(())
}

enum Completion {
    NotYet,
    Done { project: String },
    Refused,
}

/// Makes `run_id` visible if its final and all its chunks are stored and the
/// counts agree with the cases, and counts it into the rollups.
async fn try_complete(
    conn: &mut SqliteConnection,
    hooks: &webhooks::Routes,
    run_id: &str,
    now: i64,
) -> Result<Completion, sqlx::Error> {
    let pending: Option<(i64, String, Option<String>)> =
        sqlx::query_as("SELECT chunks, info, digest FROM pending_runs WHERE run_id = ?")
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((chunks, info, digest)) = pending else {
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
        "SELECT outcome, COUNT(*) FROM cases \
         WHERE run_key = (SELECT run_key FROM run_keys WHERE run_id = ?) GROUP BY outcome",
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
    let mut run = match verdict {
        Ok(run) => run,
        Err(reason) => {
            interning::delete_cases(&mut *conn, run_id).await?;
            let rejection = Rejection {
                received_at: crate::model::from_millis(now),
                subject: None,
                msg_id: None,
                run_id: Some(run_id.to_string()),
                reason,
                excerpt: None,
                payload: None,
            };
            insert_rejection(conn, &rejection).await?;
            return Ok(Completion::Refused);
        }
    };
    // Completion order: what the flaky evidence is keyed by.
    let (seq,): (i64,) = sqlx::query_as(
        "UPDATE rollup_state SET value = value + 1 WHERE name = 'seq' RETURNING value",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (quarantined,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM test_cases WHERE run_id = ? AND outcome IN (0, 1) AND quarantined = 1",
    )
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await?;
    run.quarantined_failures = quarantined.max(0) as u64;
    insert_run(&mut *conn, &run, digest.as_deref(), now, seq).await?;
    rollups::add_run(&mut *conn, &run, now).await?;
    run_tests::record(&mut *conn, run_id).await?;
    owners::record_owners(&mut *conn, run_id, &run.project).await?;
    auto_quarantine::count_clean_runs(&mut *conn, run_id, &run.project).await?;
    flaky::record_evidence(&mut *conn, run_id, &run.project, seq).await?;
    webhooks::on_run_completed(conn, hooks, &run, seq).await?;
    Ok(Completion::Done {
        project: run.project,
    })
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
    digest: Option<&str>,
    now: i64,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let c: &Counts = &r.counts;
    sqlx::query(
        "INSERT INTO runs (run_id, project, branch, commit_sha, worker_id, host, runner, command, \
         started_at, finished_at, duration_secs, exit_code, status, total, passed, failed, error, \
         skipped, xfailed, xpassed, pass_rate, cases_complete, note, received_at, digest, seq, \
         quarantined_failures) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(r.status)
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
    .bind(digest)
    .bind(seq)
    .bind(r.quarantined_failures as i64)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
