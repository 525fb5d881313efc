//! A lease on a named job in the masters' bucket: `lease.<job>`, held by
//! at most one master at a time (within the limits the [parent
//! module](super) states).
//!
//! Shape: [`Lease::spawn`] starts a task that tries to take the key with a
//! KV `create` every TTL/3 until it succeeds, then keeps it with an
//! `update` at the entry's revision every TTL/3. It gives the lease up (and
//! says so through [`Lease::held`]) when an update is refused (someone
//! else has the key: ours expired) or when no update has succeeded for a
//! TTL, counted from the sending of the last one that did (NATS away or
//! slow); then it tries to take it again. [`Lease::release`] deletes the key
//! (only at our revision); dropping a [`Lease`] stops the task without
//! deleting, as a crash would, and the key then expires one TTL after its
//! last refresh.
//!
//! A key held under this lease's own [`Holder::id`] is taken over at once:
//! it was written by this master's predecessor, killed on the same host and
//! database (the database lock proves that process gone), or by this task
//! itself when the answer to its `create` was lost.

use async_nats::jetstream;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Settings, open_bucket};

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's identity: the same for a master restarted on the same
    /// host and database (`Registration::id`), which may take over.
    pub id: String,
    /// Its name (`--master-name`).
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: u32,
}

/// The value under `lease.<job>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseValue {
    holder_id: String,
    name: String,
    host: String,
    pid: u32,
    acquired_at: DateTime<Utc>,
}

/// A lease being taken and kept by a task; see the module docs.
#[derive(Debug)]
pub struct Lease {
    job: &'static str,
    held: watch::Receiver<bool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Lease {
    /// Starts taking and keeping `job`'s lease for `holder`.
    pub fn spawn(
        js: jetstream::Context,
        job: &'static str,
        holder: Holder,
        settings: Settings,
    ) -> Lease {
        let (tx, held) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep(js, job, holder, settings, tx, stop.clone()));
        Lease {
            job,
            held,
            stop,
            task,
        }
    }

    /// The job's name.
    pub fn job(&self) -> &'static str {
        self.job
    }

    /// `true` while this lease is held.
    pub fn held(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }

    /// Whether it is held now.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Stops keeping the lease and deletes its key if it is still ours.
    pub async fn release(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Lease {
    /// Stops the task without deleting the key (as a crash would).
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The key of `job`'s lease.
pub fn key(job: &str) -> String {
    format!("lease.{job}")
}

/// What one attempt to take the lease found.
enum Taken {
    /// Ours, at this revision.
    Yes(u64),
    /// Held by someone else.
    No,
    /// The bucket did not answer as expected (NATS away, bucket gone).
    Failed,
}

async fn take(
    store: &jetstream::kv::Store,
    key: &str,
    holder: &Holder,
    value: bytes::Bytes,
) -> Taken {
    match store.create(key, value.clone()).await {
        Ok(rev) => Taken::Yes(rev),
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
            // Ours from a previous life (same host and database)?
            let Ok(Some(entry)) = store.entry(key).await else {
                return Taken::No;
            };
            let mine = entry.operation == Operation::Put
                && serde_json::from_slice::<LeaseValue>(&entry.value)
                    .is_ok_and(|v| v.holder_id == holder.id);
            if !mine {
                return Taken::No;
            }
            match store.update(key, value, entry.revision).await {
                Ok(rev) => {
                    tracing::info!(
                        key,
                        "took over the lease left by this master's previous process"
                    );
                    Taken::Yes(rev)
                }
                Err(_) => Taken::No,
            }
        }
        Err(e) => {
            tracing::debug!(key, "cannot take the lease: {e}");
            Taken::Failed
        }
    }
}

async fn keep(
    js: jetstream::Context,
    job: &'static str,
    holder: Holder,
    settings: Settings,
    held: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let key = key(job);
    let value = LeaseValue {
        holder_id: holder.id.clone(),
        name: holder.name.clone(),
        host: holder.host.clone(),
        pid: holder.pid,
        acquired_at: Utc::now(),
    };
    let mut taken_at = Utc::now();
    let mut store: Option<jetstream::kv::Store> = None;
    // While held: the revision, and when the lease must be given up.
    let mut ours: Option<(u64, Instant)> = None;
    loop {
        let Some(s) = store.clone() else {
            tokio::select! {
                _ = stop.cancelled() => return,
                opened = open_bucket(&js, settings) => match opened {
                    Ok(s) => store = Some(s),
                    Err(e) => {
                        tracing::debug!(job, "lease: {e}");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(settings.beat()) => {}
                        }
                    }
                },
            }
            continue;
        };
        let bytes: bytes::Bytes = match serde_json::to_vec(&LeaseValue {
            acquired_at: if ours.is_some() { taken_at } else { Utc::now() },
            ..value.clone()
        }) {
            Ok(b) => b.into(),
            Err(_) => return,
        };
        match ours {
            None => {
                let sent = Instant::now();
                let taken = tokio::select! {
                    _ = stop.cancelled() => return,
                    t = take(&s, &key, &holder, bytes) => t,
                };
                if matches!(taken, Taken::Failed) {
                    // Opened again next time, in case the bucket was removed.
                    store = None;
                }
                if let Taken::Yes(rev) = taken {
                    taken_at = Utc::now();
                    ours = Some((rev, sent + settings.ttl));
                    held.send_replace(true);
                    tracing::info!(job, "lease taken: this master now does {job}");
                }
            }
            Some((rev, expires)) => {
                let sent = Instant::now();
                let refreshed = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(expires) => Err(None),
                    r = s.update(&key, bytes, rev) => r.map_err(Some),
                };
                match refreshed {
                    Ok(rev) => ours = Some((rev, sent + settings.ttl)),
                    Err(Some(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        ours = None;
                        held.send_replace(false);
                        tracing::warn!(
                            job,
                            "lease lost: another master holds it now; {job} stops here"
                        );
                    }
                    Err(e) => {
                        if let Some(e) = e {
                            tracing::debug!(job, "lease refresh failed: {e}");
                        }
                        if Instant::now() >= expires {
                            ours = None;
                            held.send_replace(false);
                            tracing::warn!(
                                job,
                                "lease lost: not refreshed for {:?} (NATS away?); {job} stops until it is held again",
                                settings.ttl
                            );
                        }
                    }
                }
            }
        }
        let next = Instant::now() + settings.beat();
        let wake = match ours {
            Some((_, expires)) => next.min(expires),
            None => next,
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
        if let Some((_, expires)) = ours
            && Instant::now() >= expires
        {
            ours = None;
            held.send_replace(false);
            tracing::warn!(
                job,
                "lease lost: not refreshed for {:?}; {job} stops until it is held again",
                settings.ttl
            );
        }
    }
    held.send_replace(false);
    if let (Some((rev, _)), Some(s)) = (ours, store) {
        let deleted =
            tokio::time::timeout(settings.beat(), s.delete_expect_revision(&key, Some(rev))).await;
        if !matches!(deleted, Ok(Ok(()))) {
            tracing::warn!(
                job,
                "could not release the lease; it expires after {:?}",
                settings.ttl
            );
        }
    }
}

/// The holder of `job`'s lease as the bucket has it, for tests and tools:
/// its holder id, or `None` when nobody holds it.
pub async fn holder_id(store: &jetstream::kv::Store, job: &str) -> Option<String> {
    let entry = store.entry(key(job)).await.ok()??;
    if entry.operation != Operation::Put {
        return None;
    }
    serde_json::from_slice::<LeaseValue>(&entry.value)
        .ok()
        .map(|v| v.holder_id)
}
