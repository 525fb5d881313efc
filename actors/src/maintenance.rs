//! Periodic maintenance of the store: runs left incomplete are given up on
//! (they become rejections, `GET /rejected`) and, when a retention limit
//! is set, what it does not keep is pruned ([`crate::retention`]).
//!
//! Shape: one task, [`run`], at start and then every
//! [`MAINTENANCE_EVERY`], driving the writer with messages, so the work
//! interleaves with ingest's batches. Guarantees: a failure is logged and
//! retried at the next tick, never fatal; the task ends promptly when its
//! shutdown future completes, even in the middle of a pass (each message is
//! its own transaction, so stopping between two loses nothing). A pass that
//! failed (the database busy, the writer restarting) is tried again after
//! [`RETRY_FIRST`], doubling up to [`MAINTENANCE_EVERY`], not an hour later.
//!
//! Only while its [`Gate`] is open: the master opens it while it holds the
//! maintenance lease, so of several masters on one store one prunes at a
//! time. A pass due while the gate is closed waits for it (nothing is lost
//! by waiting: what is due stays due); a gate that closes in the middle of
//! a pass stops it after the message in hand (the writer finishes that
//! one), and the pass is made again, whole, once the gate opens.

use std::future::Future;
use std::time::Duration;

use actix::Addr;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::gate::Gate;
use crate::retention::{self, Policy};
use crate::writer::{ExpireIncomplete, Writer};

/// How often maintenance runs.
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);

/// The first wait before a failed pass is tried again.
pub const RETRY_FIRST: Duration = Duration::from_secs(2);

/// What maintenance does.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Keep runs for this many days (0: no age limit).
    pub retention_days: u32,
    /// Keep the newest this many runs of each project (0: no count limit).
    pub retention_runs: u32,
    /// A run still missing pieces this long after its last piece arrived is
    /// given up on.
    pub incomplete_after: Duration,
}

/// At start and then every [`MAINTENANCE_EVERY`] until `shutdown`
/// completes, each time once `gate` is open: expires incomplete runs and
/// prunes by the retention settings.
pub async fn run(
    writer: Addr<Writer>,
    settings: Settings,
    mut gate: Gate,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut retry = RETRY_FIRST;
    let mut due = Instant::now();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        if !gate.is_open() {
            tracing::debug!("maintenance is due and waits for its lease");
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = gate.opened() => {}
        }
        let pass = async {
            let expired = expire_incomplete(&writer, settings.incomplete_after).await;
            let pruned = if settings.retention_days > 0 || settings.retention_runs > 0 {
                prune(&writer, &settings).await
            } else {
                true
            };
            expired && pruned
        };
        let ok = tokio::select! {
            _ = &mut shutdown => return,
            _ = gate.closed() => {
                tracing::warn!("maintenance interrupted: its lease was lost; the pass runs again once the lease is held");
                continue;
            }
            ok = pass => ok,
        };
        let wait = if ok {
            retry = RETRY_FIRST;
            MAINTENANCE_EVERY
        } else {
            let wait = retry;
            retry = (retry * 2).min(MAINTENANCE_EVERY);
            wait
        };
        due = Instant::now() + wait;
    }
}

/// `now` minus `d`, or the earliest time when that does not exist.
fn ago(d: Option<chrono::TimeDelta>) -> DateTime<Utc> {
    d.and_then(|d| Utc::now().checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Whether the pass completed (false: try again soon).
async fn expire_incomplete(writer: &Addr<Writer>, after: Duration) -> bool {
    let before = ago(chrono::TimeDelta::from_std(after).ok());
    let mut total = 0;
    loop {
        match writer
            .send(ExpireIncomplete {
                received_before: before,
            })
            .await
        {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => {
                tracing::warn!("cannot expire incomplete runs, will retry shortly: {e}");
                return false;
            }
            Err(e) => {
                tracing::warn!("writer unavailable: {e}");
                return false;
            }
        }
    }
    if total > 0 {
        tracing::warn!(
            runs = total,
            "dropped incomplete runs (pieces missing for {after:?}); see GET /rejected"
        );
    }
    true
}

/// Whether the prune completed (false: try again soon).
async fn prune(writer: &Addr<Writer>, settings: &Settings) -> bool {
    let (days, runs) = (settings.retention_days, settings.retention_runs);
    let policy = Policy {
        cutoff: (days > 0).then(|| ago(chrono::TimeDelta::try_days(i64::from(days)))),
        keep_runs: (runs > 0).then_some(runs),
    };
    let what = match (days, runs) {
        (0, n) => format!("beyond the newest {n} runs per project"),
        (d, 0) => format!("older than {d} days"),
        (d, n) => format!("older than {d} days or beyond the newest {n} runs per project"),
    };
    match retention::prune(writer, policy).await {
        Ok(t) if t.deleted.is_empty() => {
            tracing::debug!("retention: nothing {what}");
            true
        }
        Ok(t) => {
            tracing::info!(
                runs = t.deleted.runs,
                cases = t.deleted.cases,
                incomplete = t.deleted.incomplete,
                rejected = t.deleted.rejected,
                mib_before = t.bytes_before / (1 << 20),
                mib_after = t.bytes_after / (1 << 20),
                "retention: pruned runs {what}"
            );
            true
        }
        Err(e) => {
            tracing::warn!("retention: prune failed, will retry shortly: {e}");
            false
        }
    }
}
