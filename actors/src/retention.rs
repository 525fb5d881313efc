//! Retention: deletes runs older than a number of days, or beyond the newest
//! N runs of each project, and gives the space back, so a master that runs
//! for years keeps a bounded database.
//!
//! Shape: [`prune`] drives the writer with small [`PruneSlice`] messages
//! (each one transaction over at most a few hundred runs), so ingest's
//! batches interleave and a large prune never stalls the stream; then one
//! [`FinishPrune`] frees the pages (incremental vacuum, WAL truncated). The
//! rollups behind `/workers` and `/failures/stats` are updated in each
//! slice's transaction ([`crate::store::sqlite::rollups::remove_run`]), so they agree with
//! `/results` at every step.
//!
//! What goes: complete runs that *started* before the cut-off, or that are
//! not among the newest `keep_runs` of their project, with their cases; chunks and finals of runs that never completed, *received* before
//! it; rejections received before it. The JetStream stream has its own,
//! separate limit (`max_age`) on messages not consumed yet.

use actix::Addr;
use chrono::{DateTime, Utc};

use crate::writer::{FinishPrune, PruneReport, PruneSlice, StoreError, Writer};

/// Runs deleted per transaction.
const RUNS_PER_SLICE: u32 = 200;

/// What a whole prune did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneTotals {
    /// Deleted rows, summed over the slices.
    pub deleted: PruneReport,
    /// Database size in bytes before reclaiming.
    pub bytes_before: u64,
    /// Database size in bytes after reclaiming.
    pub bytes_after: u64,
}

/// Why a prune stopped.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The writer could not delete or vacuum.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer actor is gone (the master is stopping).
    #[error("the writer actor is not running: {0}")]
    Mailbox(#[from] actix::MailboxError),
}

/// What to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Runs that started before this go.
    pub cutoff: Option<DateTime<Utc>>,
    /// Only the newest this many runs of each project stay.
    pub keep_runs: Option<u32>,
}

/// Deletes what `policy` does not keep, then reclaims space. When nothing
/// was deleted, it does not reclaim.
pub async fn prune(writer: &Addr<Writer>, policy: Policy) -> Result<PruneTotals, PruneError> {
    let mut totals = PruneTotals::default();
    loop {
        let r = writer
            .send(PruneSlice {
                cutoff: policy.cutoff,
                keep_runs: policy.keep_runs,
                max_runs: RUNS_PER_SLICE,
            })
            .await??;
        if r.is_empty() {
            break;
        }
        let d = &mut totals.deleted;
        d.runs += r.runs;
        d.cases += r.cases;
        d.incomplete += r.incomplete;
        d.rejected += r.rejected;
    }
    if totals.deleted.is_empty() {
        return Ok(totals);
    }
    let (before, after) = writer.send(FinishPrune).await??;
    totals.bytes_before = before;
    totals.bytes_after = after;
    Ok(totals)
}
