//! The SQLite store: the embedded default. One file in WAL mode, one
//! writer connection (SQLite has one writer, so the writer actor's
//! transactions never race each other), a pool of readers.
//!
//! Layout: [`db`] opens and migrates the file; [`batch`] stores batches and
//! completes runs; `maintain` prunes, expires and reclaims; the rest are the
//! derived state written with the data, each beside the tables it keeps:
//! [`interning`] (keys of runs, tests and texts), [`run_tests`] (per-run
//! test summaries), [`rollups`], [`evidence`] (flaky verdicts),
//! `clean_runs` (automatic quarantine), `owners`, `outbox` (webhook
//! events) and `quarantine`. SQLite's dialect (`INSERT OR IGNORE`,
//! `INDEXED BY`, `json_each`, PRAGMAs) stays inside this module.

pub mod batch;
pub(crate) mod clean_runs;
pub mod db;
pub mod evidence;
pub(crate) mod interning;
mod maintain;
pub(crate) mod outbox;
mod owners;
pub(crate) mod quarantine;
pub mod rollups;
pub mod run_tests;

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;

use crate::quarantine::Entry;
use crate::store::{BatchItem, BatchReport, Cleared, PruneReport, Store, StoreError};
use crate::version::Changed;
use crate::webhooks::{Attempt, Routes};

/// The SQLite store over the writer's pool (one connection).
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// Test identities known to be stored (bounded; see
    /// [`interning::KnownTests`]).
    known: interning::Known,
}

impl SqliteStore {
    /// A store over `pool`, the writer's pool opened by [`db::open_writer`].
    pub fn new(pool: SqlitePool) -> SqliteStore {
        SqliteStore {
            pool,
            known: Default::default(),
        }
    }
}

impl Store for SqliteStore {
    async fn store_batch(
        &self,
        hooks: &Routes,
        items: Vec<BatchItem>,
    ) -> Result<(BatchReport, Changed), StoreError> {
        batch::store_batch(&self.pool, hooks, &self.known, items).await
    }

    async fn prune_slice(
        &self,
        cutoff: Option<DateTime<Utc>>,
        keep_runs: Option<u32>,
        max_runs: u32,
    ) -> Result<(PruneReport, Changed), StoreError> {
        maintain::prune_slice(&self.pool, cutoff, keep_runs, max_runs).await
    }

    async fn reclaim(&self) -> Result<(u64, u64), StoreError> {
        maintain::reclaim(&self.pool, &self.known).await
    }

    async fn expire_incomplete(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        maintain::expire_incomplete(&self.pool, before).await
    }

    async fn clear_flaky(&self, c: Cleared) -> Result<bool, StoreError> {
        maintain::clear_flaky(&self.pool, c).await
    }

    async fn quarantine(
        &self,
        hooks: &Routes,
        project: &str,
        entry: &Entry,
        fits: fn(&str, &[Entry]) -> Result<(), String>,
        now: DateTime<Utc>,
    ) -> Result<Result<(), String>, StoreError> {
        quarantine::quarantine(&self.pool, hooks, project, entry, fits, now).await
    }

    async fn release(
        &self,
        hooks: &Routes,
        project: &str,
        test_id: &str,
        only_auto: bool,
    ) -> Result<bool, StoreError> {
        quarantine::release(&self.pool, hooks, project, test_id, only_auto).await
    }

    async fn record_attempt(
        &self,
        target: &str,
        event_seq: i64,
        outcome: &Attempt,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        outbox::record_attempt(&self.pool, target, event_seq, outcome, at).await
    }

    async fn prune_outbox(
        &self,
        delivered_before: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        targets: &[String],
    ) -> Result<u64, StoreError> {
        outbox::prune_outbox(&self.pool, delivered_before, dead_before, targets).await
    }
}
