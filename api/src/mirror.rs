//! The quarantine mirror: copies each project's active quarantine list from
//! SQLite (the truth, [`ptp_actors::quarantine`]) into the JetStream
//! key-value bucket agents read ([`ptp_nats::quarantine`]).
//!
//! Shape: after every change the route calls [`QuarantineMirror::sync`] for
//! the project, which writes the project's whole active list (expired
//! entries left out). A write that fails (NATS down, no permission) leaves
//! the change stored and the project *pending*; [`run`] retries pending
//! projects every [`RETRY_EVERY`] while NATS is connected, so the bucket
//! catches up within that long of NATS coming back. At start [`run`]
//! creates the bucket if missing and marks every project with rows
//! pending, so a master that was down while rows expired or changed
//! rewrites them all.
//!
//! Guarantees: the bucket never holds a list SQLite does not (writes are
//! serialised, each writes what SQLite holds at that moment); while a
//! project is pending, `/health` shows `quarantine_mirror_error` and is
//! degraded.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use ptp_actors::quarantine::Entry;
use ptp_actors::read::ReadPool;
use ptp_actors::read::quarantine;
use ptp_nats::quarantine::{QuarantineList, QuarantinedTest};
use tokio_util::sync::CancellationToken;

/// How often pending projects are retried.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Projects whose bucket entry is behind SQLite, and why.
#[derive(Debug, Default)]
pub struct QuarantineMirror {
    pending: Mutex<BTreeSet<String>>,
    error: Mutex<Option<String>>,
    /// Serialises writes, so an older list never overwrites a newer one.
    writing: tokio::sync::Mutex<()>,
}

/// `project`'s entries as the bucket's value.
pub fn to_list(project: &str, entries: &[Entry]) -> QuarantineList {
    let mut list = QuarantineList::new(project, Utc::now());
    list.tests = entries
        .iter()
        .map(|e| QuarantinedTest {
            test_id: e.test_id.clone(),
            reason: e.reason.clone(),
            since: e.since,
            expires_at: e.expires_at,
            auto: e.auto,
        })
        .collect();
    list
}

/// The bound on a project's list: what the bucket's contract accepts
/// (count and encoded size), checked by the writer before it commits.
pub fn fits(project: &str, entries: &[Entry]) -> Result<(), String> {
    to_list(project, entries)
        .encode()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl QuarantineMirror {
    /// Writes `project`'s active list to the bucket; on failure marks it
    /// pending (retried by [`run`]) and keeps the error for `/health`.
    pub async fn sync(&self, read: &ReadPool, js: &async_nats::jetstream::Context, project: &str) {
        let _one = self.writing.lock().await;
        let res = match quarantine::active(read, project, Utc::now()).await {
            Ok(entries) => ptp_nats::quarantine::write(js, &to_list(project, &entries))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("reading the quarantine table: {e}")),
        };
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        match res {
            Ok(()) => {
                pending.remove(project);
                if pending.is_empty() {
                    *error = None;
                }
            }
            Err(e) => {
                tracing::warn!(project, "quarantine mirror: {e}; retrying");
                pending.insert(project.to_string());
                *error = Some(format!(
                    "{} project(s) not mirrored to the {} bucket: {e}",
                    pending.len(),
                    ptp_nats::quarantine::BUCKET
                ));
            }
        }
    }

    /// Why the bucket is behind, while it is.
    pub fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn mark_pending(&self, projects: impl IntoIterator<Item = String>, why: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.extend(projects);
        if !pending.is_empty() {
            *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
                "{} project(s) not mirrored yet: {why}",
                pending.len()
            ));
        }
    }

    fn pending(&self) -> Vec<String> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// Creates the bucket, marks every project pending, then retries pending
/// projects every [`RETRY_EVERY`] while NATS is connected, until `stop`.
pub async fn run(
    mirror: std::sync::Arc<QuarantineMirror>,
    read: ReadPool,
    nats: async_nats::Client,
    js: async_nats::jetstream::Context,
    stop: CancellationToken,
) {
    match quarantine::projects(&read).await {
        Ok(p) => mirror.mark_pending(p, "the master just started"),
        Err(e) => tracing::warn!("quarantine mirror: cannot list projects: {e}"),
    }
    let mut bucket_ready = false;
    loop {
        if nats.connection_state() == async_nats::connection::State::Connected {
            if !bucket_ready {
                match ptp_nats::quarantine::ensure_bucket(&js).await {
                    Ok(()) => bucket_ready = true,
                    Err(e) => tracing::warn!("quarantine mirror: {e}"),
                }
            }
            for project in mirror.pending() {
                mirror.sync(&read, &js, &project).await;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}
