//! Masters that meet on one NATS account: a registry of the running
//! masters, the refusal of a master on SQLite to share the results stream,
//! and leases for the work only one master may do at a time (maintenance,
//! webhook delivery).
//!
//! # Shape
//!
//! - One JetStream key-value bucket, [`BUCKET`] (`ptp_masters`), whose
//!   `max_age` is the TTL (`--master-ttl-secs`, 15 s by default): an entry
//!   vanishes that long after its last write. Its replicas follow
//!   `--stream-replicas`. Created as a plain stream with settings
//!   nats-server 2.9 understands ([`bucket_stream_config`]), as the
//!   quarantine bucket is; a bucket whose `max_age` differs is set to this
//!   master's TTL (masters sharing an account must share the TTL).
//! - [`registry`]: each master writes `master.<id>` every TTL/3 with who
//!   it is (name, host, pid, store, database, start time) and deletes it on
//!   a clean shutdown. The id is a hash of the host and the database's
//!   canonical path, so a master restarted after `kill -9` on the same host
//!   and file finds its predecessor's entry under its own key: itself.
//!   The OS lock [`registry::lock_db`] (next to the database file, released
//!   by the kernel when the process dies) makes that safe: while the lock
//!   is held no other master on this host uses the file.
//! - [`lease`]: one key per job, `lease.<job>`, taken with a KV `create`,
//!   kept with an `update` at the entry's revision every TTL/3, deleted on
//!   shutdown; [`Cluster::gate`] turns it into the [`Gate`] the job waits on.
//!
//! # Guarantees
//!
//! - A master on SQLite consumes nothing until it has listed the live
//!   `master.*` entries and found none but its own; it then registers. If
//!   it finds another, it exits with an error naming that master (name,
//!   host, database, seconds since its last beat) and saying what to do.
//!   Two masters starting within the same instant can both pass the check;
//!   each then sees the other at its next beat, logs an error and reports
//!   `degraded` in `/health` (the runs are then split between the two
//!   files until one is stopped: said loudly, not silently).
//! - A second master on the same SQLite file on the same host is refused
//!   by the lock before it opens the database.
//! - A lease is held by at most one master as long as the clocks' rates
//!   agree and no process stalls for a TTL: the holder counts the TTL from
//!   the moment it *sent* its last successful refresh (before the server
//!   wrote it, so before the entry's own expiry starts) and stops acting
//!   when that runs out, when NATS is away, or when a refresh is refused.
//!   There is no fencing token: a step already handed to the writer (one
//!   delete batch) or a webhook POST already sent completes.
//! - While NATS is unreachable no lease can be taken or kept: maintenance
//!   and webhook delivery wait (what is due stays due; the outbox keeps
//!   every event) and resume once a lease is held. Ingest needs NATS anyway.
//!   A master whose registry check has not completed serves reads and
//!   reports `registry: "checking"` in `/health`.
//! - A lease whose holder died (kill -9, host lost) is free one TTL after
//!   its last refresh; a master restarted on the same host and file takes
//!   over its predecessor's leases at once (same id, and the lock proves
//!   the predecessor dead).

pub mod changes;
pub mod lease;
pub mod registry;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream;
use ptp_actors::gate::Gate;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use lease::{Holder, Lease};
pub use registry::{DbLock, Registration, lock_db};

/// The key-value bucket of the masters' registry and leases.
pub const BUCKET: &str = "ptp_masters";
/// The lease of maintenance (expiry of incomplete runs, retention).
pub const MAINTENANCE: &str = "maintenance";
/// The lease of webhook delivery.
pub const WEBHOOKS: &str = "webhooks";
/// Largest value stored in the bucket.
const MAX_VALUE_BYTES: i32 = 16 * 1024;

/// The bucket's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long an entry lives after its last write; written every TTL/3.
    pub ttl: Duration,
    /// Replicas of the bucket's stream (`--stream-replicas`).
    pub replicas: usize,
}

impl Settings {
    /// How often entries are written: a third of the TTL.
    pub fn beat(&self) -> Duration {
        self.ttl / 3
    }
}

/// Why the registry or a lease could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The bucket could not be created or opened (NATS away, permissions).
    #[error("cannot open the masters' bucket {BUCKET}: {0}")]
    Bucket(String),
    /// A read or write in the bucket failed.
    #[error("the masters' bucket {BUCKET}: {0}")]
    Kv(String),
    /// Another master consumes the same stream (see [`registry`]).
    #[error("{0}")]
    Refused(String),
    /// Another master uses the same database file on this host.
    #[error("{0}")]
    Locked(String),
    /// The lock file could not be opened.
    #[error("cannot open the lock file {path}: {source}")]
    LockFile {
        /// The lock file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The bucket's stream (`KV_ptp_masters`): one message per key, entries
/// expire after `settings.ttl`, deletes through markers, direct gets.
pub fn bucket_stream_config(settings: Settings) -> jetstream::stream::Config {
    jetstream::stream::Config {
        max_age: settings.ttl,
        // Must not exceed max_age; the bucket never uses message ids.
        duplicate_window: settings.ttl,
        num_replicas: settings.replicas,
        ..ptp_nats::kv::bucket_stream(
            BUCKET,
            "pytest-platform: running masters and their leases",
            MAX_VALUE_BYTES,
        )
    }
}

/// The bucket, created if missing, its `max_age` set to `settings.ttl` if
/// it differs.
pub async fn open_bucket(
    js: &jetstream::Context,
    settings: Settings,
) -> Result<jetstream::kv::Store, ClusterError> {
    let bucket_err = |e: &dyn std::fmt::Display| ClusterError::Bucket(e.to_string());
    let mut stream = js
        .get_or_create_stream(bucket_stream_config(settings))
        .await
        .map_err(|e| bucket_err(&e))?;
    let info = stream.info().await.map_err(|e| bucket_err(&e))?;
    if info.config.max_age != settings.ttl {
        tracing::warn!(
            bucket = BUCKET,
            "the masters' bucket keeps entries {:?}, this master's TTL is {:?}: setting it to {:?} \
             (masters on one NATS account must share --master-ttl-secs)",
            info.config.max_age,
            settings.ttl,
            settings.ttl
        );
        let mut config = info.config.clone();
        config.max_age = settings.ttl;
        config.duplicate_window = config.duplicate_window.min(settings.ttl);
        js.update_stream(config).await.map_err(|e| bucket_err(&e))?;
    }
    js.get_key_value(BUCKET).await.map_err(|e| bucket_err(&e))
}

/// Whether this master may consume: the registry's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Not known yet (NATS away, or the check in progress).
    Checking,
    /// No other master: ingest may consume.
    Admitted,
    /// Another master consumes the stream; this one stops.
    Refused(String),
}

/// What `/health` and `/metrics` read.
#[derive(Debug)]
pub struct Status {
    admission: watch::Sender<Admission>,
    others: Mutex<Vec<String>>,
    peers: Mutex<Vec<String>>,
    error: Mutex<Option<String>>,
    /// When the registry's writes started failing (`None` while they work).
    failing_since: Mutex<Option<std::time::Instant>>,
    /// The entries' TTL: failing this long, this master's entry is gone.
    ttl: Duration,
    leases: Vec<(&'static str, watch::Receiver<bool>)>,
}

impl Status {
    fn new(leases: Vec<(&'static str, watch::Receiver<bool>)>, ttl: Duration) -> Status {
        Status {
            admission: watch::Sender::new(Admission::Checking),
            others: Mutex::new(Vec::new()),
            peers: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            failing_since: Mutex::new(None),
            ttl,
            leases,
        }
    }

    /// Whether the registry's writes have failed for a whole TTL, so this
    /// master's entry has expired and another master could start unseen.
    /// A beat or two lost while a NATS node or the bucket's leader changes
    /// is not that: the entry outlives it, and the error is only reported.
    pub fn entry_lost(&self) -> bool {
        self.failing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() >= self.ttl)
    }

    /// The registry's verdict so far.
    pub fn admission(&self) -> Admission {
        self.admission.borrow().clone()
    }

    /// Completes with `true` once this master may consume, `false` if it
    /// was refused.
    pub async fn admitted(&self) -> bool {
        let mut rx = self.admission.subscribe();
        match rx.wait_for(|a| *a != Admission::Checking).await {
            Ok(a) => *a == Admission::Admitted,
            Err(_) => false,
        }
    }

    /// The other masters seen at the last beat (a race at start, or a
    /// master started without the check), described for a person.
    pub fn others(&self) -> Vec<String> {
        self.others
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The masters sharing the stream and the PostgreSQL database with this
    /// one, seen at the last beat.
    pub fn peers(&self) -> Vec<String> {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why the registry could not be read or written last time, if so.
    pub fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Each lease and whether this master holds it now.
    pub fn leases(&self) -> BTreeMap<&'static str, bool> {
        self.leases
            .iter()
            .map(|(job, rx)| (*job, *rx.borrow()))
            .collect()
    }

    fn set_admission(&self, a: Admission) {
        self.admission.send_replace(a);
    }

    fn set_others(&self, others: Vec<String>) {
        *self.others.lock().unwrap_or_else(PoisonError::into_inner) = others;
    }

    fn set_peers(&self, peers: Vec<String>) {
        *self.peers.lock().unwrap_or_else(PoisonError::into_inner) = peers;
    }

    fn set_error(&self, e: Option<String>) {
        let mut since = self
            .failing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *since = match (&e, *since) {
            (None, _) => None,
            (Some(_), Some(t)) => Some(t),
            (Some(_), None) => Some(std::time::Instant::now()),
        };
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = e;
    }
}

/// The registry and the leases of one master, running.
pub struct Cluster {
    /// For `/health` and `/metrics`.
    pub status: Arc<Status>,
    registry: JoinHandle<Result<(), ClusterError>>,
    leases: Vec<Lease>,
    stop: CancellationToken,
}

impl Cluster {
    /// Starts the registry (which cancels `shutdown` when this master is
    /// refused) and the leases of [`MAINTENANCE`] and [`WEBHOOKS`].
    pub fn start(
        js: jetstream::Context,
        settings: Settings,
        me: Registration,
        shutdown: CancellationToken,
    ) -> Cluster {
        let holder = Holder {
            id: me.id(),
            name: me.name.clone(),
            host: me.host.clone(),
            pid: me.pid,
        };
        let leases: Vec<Lease> = [MAINTENANCE, WEBHOOKS]
            .into_iter()
            .map(|job| Lease::spawn(js.clone(), job, holder.clone(), settings))
            .collect();
        let status = Arc::new(Status::new(
            leases.iter().map(|l| (l.job(), l.held())).collect(),
            settings.ttl,
        ));
        let stop = CancellationToken::new();
        let registry = tokio::spawn(registry::run(
            js,
            settings,
            me,
            status.clone(),
            shutdown,
            stop.clone(),
        ));
        Cluster {
            status,
            registry,
            leases,
            stop,
        }
    }

    /// The gate of `job`'s lease: open while this master holds it.
    pub fn gate(&self, job: &str) -> Gate {
        self.leases
            .iter()
            .find(|l| l.job() == job)
            .map_or_else(Gate::always_open, |l| Gate::new(l.held()))
    }

    /// Releases the leases and deregisters (call after the gated work has
    /// stopped), all at once: with NATS away each gives up after a beat.
    /// The error, if any, is why this master was refused.
    pub async fn stop(self) -> Result<(), ClusterError> {
        self.stop.cancel();
        let releases = futures::future::join_all(self.leases.into_iter().map(Lease::release));
        let (_, registry) = tokio::join!(releases, self.registry);
        match registry {
            Ok(result) => result,
            Err(e) => Err(ClusterError::Kv(format!("the registry task failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed beat is reported at once but degrades only after a whole
    /// TTL of failures; one success clears both.
    #[test]
    fn a_failed_beat_is_reported_and_the_entry_is_lost_only_after_a_ttl() {
        let long = Status::new(Vec::new(), Duration::from_secs(3600));
        long.set_error(Some("no stream found".into()));
        assert_eq!(long.error().as_deref(), Some("no stream found"));
        assert!(!long.entry_lost(), "one lost beat is not a lost entry");

        let short = Status::new(Vec::new(), Duration::ZERO);
        short.set_error(Some("first".into()));
        short.set_error(Some("second".into()));
        assert!(short.entry_lost(), "failing for a TTL loses the entry");
        assert_eq!(short.error().as_deref(), Some("second"));
        short.set_error(None);
        assert!(!short.entry_lost() && short.error().is_none());
    }
}
