//! The store boundary: what the writer asks of a database, one
//! implementation per backend behind the [`Store`] trait, so the writer's
//! protocol (`writer`) and the reads (`read`) never name
//! a dialect.
//!
//! Shape: the writer actor owns one store and calls it once per message;
//! every method is one transaction that either commits whole or changes
//! nothing, and reports which projects' data changed ([`Changed`]) so the
//! writer can tell the caches. What a method guarantees is written on the
//! trait; a backend that cannot keep a guarantee does not implement it.
//! SQL lives only in the backend modules: [`sqlite`] (the embedded
//! default) and [`postgres`] ([`postgres::PgStore`], the same rows for the
//! same calls, several masters on one database); the rules both keep are
//! Rust, written once (below, and in the SQLite modules the PostgreSQL ones
//! call).
//!
//! Layering: `store` imports only the domain types ([`crate::model`],
//! [`crate::owners`], [`crate::signature`], [`crate::webhooks`]'s routes);
//! `read` may use the store's layout helpers; `writer` calls the store;
//! nothing here imports `writer`, `read` or `aggregates`.

pub mod postgres;
pub(crate) mod rules;
pub mod sqlite;
pub mod summary;
pub mod target;

use crate::store::sqlite::SqliteStore;
use crate::store::sqlite::db::{DbError, DbOptions};

use std::future::Future;

use chrono::{DateTime, Utc};

use std::collections::HashMap;

use crate::model::{CaseRecord, Outcome, Rejection, RunRecord};
use crate::quarantine::Entry;
use crate::version::Changed;
use crate::webhooks::Attempt;

/// One unit of work inside a batch (`writer::StoreBatch`).
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
    /// The database refused (busy, locked, disk full, I/O error, a lost
    /// connection...).
    #[error("database write failed: {0}")]
    Database(#[from] sqlx::Error),
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
    ///
    /// On PostgreSQL the SQLSTATE class decides: 22 (data exception: a
    /// value out of range, an invalid text), 23 (integrity constraint
    /// violation) and 54 (program limit exceeded: an index row too big for
    /// a very long test id) blame the data; every other class (08
    /// connection, 40 serialization failure and deadlock, 53 insufficient
    /// resources, 57 operator intervention, ...) does not.
    pub fn blames_the_data(&self) -> bool {
        let e = match self {
            StoreError::Panicked(_) => return true,
            StoreError::Database(sqlx::Error::Database(e)) => e,
            StoreError::Database(_) => return false,
        };
        if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            return matches!(pg.code().get(..2), Some("22" | "23" | "54"));
        }
        let Some(code) = e.code().and_then(|c| c.parse::<i32>().ok()) else {
            return false;
        };
        // Primary result codes: SQLITE_TOOBIG 18, SQLITE_CONSTRAINT 19,
        // SQLITE_MISMATCH 20, SQLITE_RANGE 25. Extended codes keep the
        // primary code in their low byte.
        matches!(code & 0xff, 18 | 19 | 20 | 25)
    }
}

/// What one slice of a prune (`writer::PruneSlice`) deleted.
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

/// A flaky test marked fixed ([`Store::clear_flaky`]).
#[derive(Debug, Clone)]
pub struct Cleared {
    /// Project.
    pub project: String,
    /// Test id.
    pub test_id: String,
    /// When it was fixed: evidence from runs started before no longer counts.
    pub at: DateTime<Utc>,
    /// Why, for the record (a commit, a ticket).
    pub note: Option<String>,
}

/// What a database does for the writer. Each method is one transaction.
///
/// Guarantees every backend keeps (the writer's and ingest's contract):
/// - [`Store::store_batch`] is idempotent by `(run_id, chunk)` and by
///   `run_id`; a run becomes visible only in the transaction that stores
///   its last missing piece and only if its counts agree with its cases,
///   together with every rollup, summary and outbox row derived from it;
///   it completes exactly once even when pieces of it are stored
///   concurrently.
/// - Pruning and expiry remove a run and everything derived from it in one
///   transaction, so rollups never disagree with the runs stored.
/// - An error leaves the database as it was: the caller keeps its messages
///   unacked and retries.
pub trait Store: Clone + Unpin + 'static {
    /// Stores a batch (chunks, finals, rejections), completing the runs it
    /// makes whole. `hooks` says which webhook events to put in the outbox.
    fn store_batch(
        &self,
        hooks: &crate::webhooks::Routes,
        items: Vec<BatchItem>,
    ) -> impl Future<Output = Result<(BatchReport, Changed), StoreError>>;

    /// Deletes up to `max_runs` runs started before `cutoff` or beyond the
    /// newest `keep_runs` of their project, with their cases and derived
    /// rows, plus incomplete runs and rejections received before `cutoff`.
    fn prune_slice(
        &self,
        cutoff: Option<DateTime<Utc>>,
        keep_runs: Option<u32>,
        max_runs: u32,
    ) -> impl Future<Output = Result<(PruneReport, Changed), StoreError>>;

    /// After pruning: deletes what no case refers to any more and gives
    /// space back. Returns the store's size before and after, in bytes.
    fn reclaim(&self) -> impl Future<Output = Result<(u64, u64), StoreError>>;

    /// Drops runs that will never complete (pieces received before
    /// `before`), each recorded as a rejection saying what was missing.
    /// Returns how many (at most 500 a call).
    fn expire_incomplete(
        &self,
        before: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>>;

    /// Marks a flaky test fixed; `false` (nothing stored) when the test has
    /// no results in the project.
    fn clear_flaky(&self, c: Cleared) -> impl Future<Output = Result<bool, StoreError>>;

    /// Quarantines `entry.test_id` in `project` unless the resulting active
    /// list breaks `fits` or a person's entry would be replaced by an
    /// automatic one (`Ok(Err(why))`, nothing stored).
    fn quarantine(
        &self,
        hooks: &crate::webhooks::Routes,
        project: &str,
        entry: &Entry,
        fits: fn(&str, &[Entry]) -> Result<(), String>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Result<(), String>, StoreError>>;

    /// Releases `test_id` (`only_auto`: only an automatic entry); whether
    /// it was quarantined.
    fn release(
        &self,
        hooks: &crate::webhooks::Routes,
        project: &str,
        test_id: &str,
        only_auto: bool,
    ) -> impl Future<Output = Result<bool, StoreError>>;

    /// Records an attempt at delivering webhook event `event_seq` to
    /// `target`.
    fn record_attempt(
        &self,
        target: &str,
        event_seq: i64,
        outcome: &Attempt,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>>;

    /// Deletes delivered and dead outbox rows done before the given times,
    /// the rows of targets not in `targets`, and events left without
    /// deliveries; returns the deliveries deleted.
    fn prune_outbox(
        &self,
        delivered_before: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        targets: &[String],
    ) -> impl Future<Output = Result<u64, StoreError>>;
}

// ------------------------------------------------------------ opening

/// How to open a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The database URL.
    pub url: String,
    /// Connections in each pool (the writer's, the reads').
    pub connections: u32,
}

/// Which store to open, and how.
#[derive(Debug, Clone)]
pub enum StoreOptions {
    /// A SQLite file.
    Sqlite(DbOptions),
    /// A PostgreSQL database.
    Postgres(PgOptions),
}

impl From<DbOptions> for StoreOptions {
    fn from(o: DbOptions) -> StoreOptions {
        StoreOptions::Sqlite(o)
    }
}

impl From<PgOptions> for StoreOptions {
    fn from(o: PgOptions) -> StoreOptions {
        StoreOptions::Postgres(o)
    }
}

/// The store the writer runs on, chosen at start: one variant per backend,
/// each call handed to it.
#[derive(Clone)]
pub enum Backend {
    /// The SQLite store.
    Sqlite(SqliteStore),
    /// The PostgreSQL store.
    Postgres(postgres::PgStore),
}

/// Opens and migrates the store `opts` names (SQLite: the rollups and
/// summaries filled once after an upgrade). Its readers open their own pool
/// (`read::ReadPool::open`).
pub(crate) async fn open(opts: &StoreOptions) -> Result<Backend, DbError> {
    match opts {
        StoreOptions::Sqlite(db) => {
            let pool = sqlite::db::open_writer(db).await?;
            let load = |source| DbError::Load {
                path: db.path.clone(),
                source,
            };
            sqlite::rollups::ensure_built(&pool).await.map_err(load)?;
            sqlite::run_tests::ensure_built(&pool).await.map_err(load)?;
            Ok(Backend::Sqlite(SqliteStore::new(pool)))
        }
        StoreOptions::Postgres(pg) => {
            let pool = postgres::open(&pg.url, pg.connections).await?;
            Ok(Backend::Postgres(postgres::PgStore::new(pool)))
        }
    }
}

impl Store for Backend {
    async fn store_batch(
        &self,
        hooks: &crate::webhooks::Routes,
        items: Vec<BatchItem>,
    ) -> Result<(BatchReport, Changed), StoreError> {
        match self {
            Backend::Sqlite(s) => s.store_batch(hooks, items).await,
            Backend::Postgres(s) => s.store_batch(hooks, items).await,
        }
    }

    async fn prune_slice(
        &self,
        cutoff: Option<DateTime<Utc>>,
        keep_runs: Option<u32>,
        max_runs: u32,
    ) -> Result<(PruneReport, Changed), StoreError> {
        match self {
            Backend::Sqlite(s) => s.prune_slice(cutoff, keep_runs, max_runs).await,
            Backend::Postgres(s) => s.prune_slice(cutoff, keep_runs, max_runs).await,
        }
    }

    async fn reclaim(&self) -> Result<(u64, u64), StoreError> {
        match self {
            Backend::Sqlite(s) => s.reclaim().await,
            Backend::Postgres(s) => s.reclaim().await,
        }
    }

    async fn expire_incomplete(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        match self {
            Backend::Sqlite(s) => s.expire_incomplete(before).await,
            Backend::Postgres(s) => s.expire_incomplete(before).await,
        }
    }

    async fn clear_flaky(&self, c: Cleared) -> Result<bool, StoreError> {
        match self {
            Backend::Sqlite(s) => s.clear_flaky(c).await,
            Backend::Postgres(s) => s.clear_flaky(c).await,
        }
    }

    async fn quarantine(
        &self,
        hooks: &crate::webhooks::Routes,
        project: &str,
        entry: &Entry,
        fits: fn(&str, &[Entry]) -> Result<(), String>,
        now: DateTime<Utc>,
    ) -> Result<Result<(), String>, StoreError> {
        match self {
            Backend::Sqlite(s) => s.quarantine(hooks, project, entry, fits, now).await,
            Backend::Postgres(s) => s.quarantine(hooks, project, entry, fits, now).await,
        }
    }

    async fn release(
        &self,
        hooks: &crate::webhooks::Routes,
        project: &str,
        test_id: &str,
        only_auto: bool,
    ) -> Result<bool, StoreError> {
        match self {
            Backend::Sqlite(s) => s.release(hooks, project, test_id, only_auto).await,
            Backend::Postgres(s) => s.release(hooks, project, test_id, only_auto).await,
        }
    }

    async fn record_attempt(
        &self,
        target: &str,
        event_seq: i64,
        outcome: &Attempt,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self {
            Backend::Sqlite(s) => s.record_attempt(target, event_seq, outcome, at).await,
            Backend::Postgres(s) => s.record_attempt(target, event_seq, outcome, at).await,
        }
    }

    async fn prune_outbox(
        &self,
        delivered_before: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        targets: &[String],
    ) -> Result<u64, StoreError> {
        match self {
            Backend::Sqlite(s) => s.prune_outbox(delivered_before, dead_before, targets).await,
            Backend::Postgres(s) => s.prune_outbox(delivered_before, dead_before, targets).await,
        }
    }
}

// ------------------------------------------------ rules both backends keep

/// The rejection recording that `run_id` arrived again with other content
/// (`what`: "run" or "chunk N"); `old` is empty when the stored run has no
/// such chunk at all.
pub(crate) fn conflict(run_id: &str, what: &str, old: &str, new: &str, now: i64) -> Rejection {
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

/// The rejection the writer records for `run_id` itself (refused counts,
/// an expired partial run), received at `at`.
pub(crate) fn writer_rejection(run_id: &str, reason: String, at: DateTime<Utc>) -> Rejection {
    Rejection {
        received_at: at,
        subject: None,
        msg_id: None,
        run_id: Some(run_id.to_string()),
        reason,
        excerpt: None,
        payload: None,
    }
}

/// Why a partial run was dropped by [`Store::expire_incomplete`]: `have`
/// chunks arrived, its final declared `declared` (`None`: no final).
pub(crate) fn expiry_reason(run_id: &str, have: i64, declared: Option<i64>) -> String {
    match declared {
        None => format!(
            "{have} chunk(s) of run {run_id} arrived but its final message never did; \
             the agent was probably stopped while publishing. The partial run was dropped: \
             publish the run again (ptp-agent upload) to store it"
        ),
        Some(n) => format!(
            "run {run_id} names {n} chunk(s) but only {have} arrived; the partial run \
             was dropped: publish the run again (ptp-agent upload) to store it"
        ),
    }
}

/// Why [`Store::quarantine`] refused an automatic entry for a test a
/// person quarantined.
pub(crate) fn kept_persons_entry(project: &str, test_id: &str) -> String {
    format!(
        "'{test_id}' is quarantined by a person in project '{project}'; the automatic entry \
         does not replace it"
    )
}

pub(crate) fn check_counts(
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
