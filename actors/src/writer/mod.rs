//! The writer's protocol: the actor that is the only code writing to the
//! store, its messages and their handlers. Each handler is thin: it hands
//! the message to the [`Store`] and reports what changed; the SQL lives in
//! the store's backend modules.
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
//! - The rollups (`read::rollups`: worker statistics, failure counts)
//!   are updated in the transaction that makes a run visible and in the one
//!   that prunes it, so they never disagree with the runs stored. So are the
//!   current owners of its tests ([`crate::owners`]) and the clean-run
//!   counts of its quarantined tests (`auto_quarantine`), and its
//!   per-test summary ([`crate::store::sqlite::run_tests`]), which goes with its cases.
//! - A failed transaction rolls back entirely and the error goes back to the
//!   caller, which leaves the messages unacked for redelivery.

pub mod quarantine;
pub mod webhooks;

use actix::prelude::*;
use chrono::Utc;

use crate::store::Backend;
pub use crate::store::{BatchItem, BatchReport, PruneReport, StoreError};
use crate::store::{Cleared, Store};
use crate::supervise::Faults;
use crate::version::{Changed, DataVersion};
pub use quarantine::{Quarantine, Release};
pub use webhooks::{PruneOutbox, RecordAttempt};

/// Store a batch of items in one transaction. Replies after commit.
#[derive(Debug, Message)]
#[rtype(result = "Result<BatchReport, StoreError>")]
pub struct StoreBatch(pub Vec<BatchItem>);

/// The writer actor. Owns the store, which it knows only through the
/// [`Store`] trait (by default the [`Backend`] chosen at start).
pub struct Writer<S: Store = Backend> {
    pub(crate) store: S,
    version: DataVersion,
    faults: Faults,
    /// Which events to put in the webhook outbox, and for whom.
    pub(crate) webhooks: std::sync::Arc<crate::webhooks::Routes>,
}

impl<S: Store> Writer<S> {
    /// A writer over `store`; `version` is bumped after every write that
    /// changes what readers see.
    pub fn new(store: S, version: DataVersion) -> Writer<S> {
        Writer {
            store,
            version,
            faults: Faults::default(),
            webhooks: Default::default(),
        }
    }

    /// Stores the webhook events `routes` asks for with the writes that
    /// cause them (see [`crate::webhooks`]).
    pub fn with_webhooks(mut self, routes: crate::webhooks::Routes) -> Writer<S> {
        self.webhooks = std::sync::Arc::new(routes);
        self
    }

    /// Records panics of its writes in `faults` (shown by `/health`).
    pub fn supervised(mut self, faults: Faults) -> Writer<S> {
        self.faults = faults;
        self
    }
}

impl<S: Store> Writer<S> {
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
    ) -> impl ActorFuture<Self, Output = Result<T, StoreError>> + 'static + use<S, T, F> {
        use futures::FutureExt;
        std::panic::AssertUnwindSafe(write)
            .catch_unwind()
            .into_actor(self)
            .map(|res, act: &mut Writer<S>, _ctx| {
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

impl<S: Store> Actor for Writer<S> {
    type Context = Context<Self>;
}

impl<S: Store> Handler<StoreBatch> for Writer<S> {
    type Result = AtomicResponse<Self, Result<BatchReport, StoreError>>;

    fn handle(&mut self, msg: StoreBatch, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let hooks = self.webhooks.clone();
        AtomicResponse::new(Box::pin(
            self.write(async move { store.store_batch(&hooks, msg.0).await }),
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

/// Retention, step 2: delete the tests and texts no case refers to any
/// more (see `interning`), then give the freed pages back to the file
/// system (incremental vacuum, WAL truncated). Replies with the file size before
/// and after, in bytes.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(u64, u64), StoreError>")]
pub struct FinishPrune;

impl<S: Store> Handler<PruneSlice> for Writer<S> {
    type Result = AtomicResponse<Self, Result<PruneReport, StoreError>>;

    fn handle(&mut self, msg: PruneSlice, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            store
                .prune_slice(msg.cutoff, msg.keep_runs, msg.max_runs)
                .await
        })))
    }
}

impl<S: Store> Handler<FinishPrune> for Writer<S> {
    type Result = AtomicResponse<Self, Result<(u64, u64), StoreError>>;

    fn handle(&mut self, _msg: FinishPrune, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        // Space given back changes nothing a reader sees.
        AtomicResponse::new(Box::pin(
            self.write(async move { Ok((store.reclaim().await?, Changed::default())) }),
        ))
    }
}

/// Marks a flaky test fixed: evidence from runs started before `at` no
/// longer counts (see `read::flaky`). Replies whether the test had
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

impl<S: Store> Handler<ClearFlaky> for Writer<S> {
    type Result = AtomicResponse<Self, Result<bool, StoreError>>;

    fn handle(&mut self, msg: ClearFlaky, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            let project = msg.project.clone();
            let cleared = store
                .clear_flaky(Cleared {
                    project: msg.project,
                    test_id: msg.test_id,
                    at: msg.at,
                    note: msg.note,
                })
                .await?;
            let changed = Changed {
                projects: if cleared {
                    [project].into()
                } else {
                    Default::default()
                },
                pruned: false,
            };
            Ok((cleared, changed))
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

impl<S: Store> Handler<ExpireIncomplete> for Writer<S> {
    type Result = AtomicResponse<Self, Result<u64, StoreError>>;

    fn handle(&mut self, msg: ExpireIncomplete, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(
            // Only rejections are added, which no cached answer shows.
            self.write(async move {
                Ok((
                    store.expire_incomplete(msg.received_before).await?,
                    Changed::default(),
                ))
            }),
        ))
    }
}

#[cfg(test)]
mod tests;
