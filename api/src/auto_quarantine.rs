//! The master's side of automatic quarantine
//! ([`ptp_actors::auto_quarantine`] holds the rules): judging each completed
//! run and mirroring the lists that changed to the agents' bucket.
//!
//! Shape: ingest hands over the ids of the runs each stored batch completed
//! (after the ack) on a bounded channel; [`run`] judges them one by one,
//! in the order they completed, changes the list through the writer, and
//! syncs each changed project's list to the bucket ([`crate::mirror`]; a
//! failed sync is retried there). Judging after the commit instead of in
//! the writer's transaction keeps ingest's batches as fast as before; the
//! judgement reads only the run's tracked tests.
//!
//! Guarantees: the channel is bounded ([`QUEUE`] batches): when judging
//! falls behind, ingest waits and results wait in the stream. A judgement
//! that fails is logged and skipped (the project's next run judges its
//! tests again). Off (`--auto-quarantine-days 0`), no channel is made and
//! nothing runs; clearing a flaky verdict still releases an automatic
//! entry left from before ([`release_cleared`]).

use std::sync::Arc;

use ptp_actors::auto_quarantine::{self, Settings};
use ptp_actors::read::ReadPool;
use ptp_actors::writer::Release;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::mirror::{self, QuarantineMirror};
use crate::state::AppState;

/// Batches of completed runs waiting to be judged, at most.
pub const QUEUE: usize = 256;

/// What [`run`] needs besides the channel.
pub struct Judge {
    /// The read pool.
    pub read: ReadPool,
    /// The writer, through which every change goes.
    pub writer: actix::Addr<ptp_actors::Writer>,
    /// The agents' copy of the lists.
    pub mirror: Arc<QuarantineMirror>,
    /// JetStream, for the copy.
    pub js: async_nats::jetstream::Context,
    /// The rules' settings.
    pub settings: Settings,
}

/// The ids of the runs one stored batch completed.
pub type Completed = Vec<String>;

/// The channel ingest sends completed runs on, when automatic quarantine is
/// on (`settings.days > 0`).
pub fn channel(settings: Settings) -> Option<(mpsc::Sender<Completed>, mpsc::Receiver<Completed>)> {
    (settings.days > 0).then(|| mpsc::channel(QUEUE))
}

/// Judges completed runs until `stop` or until ingest drops its sender.
pub async fn run(judge: Judge, mut completed: mpsc::Receiver<Completed>, stop: CancellationToken) {
    loop {
        let runs = tokio::select! {
            _ = stop.cancelled() => return,
            runs = completed.recv() => match runs {
                Some(runs) => runs,
                None => return,
            },
        };
        let mut changed = std::collections::BTreeSet::new();
        for run_id in runs {
            match auto_quarantine::after_run(
                &judge.read,
                &judge.writer,
                &run_id,
                judge.settings,
                mirror::fits,
            )
            .await
            {
                Ok(Some(project)) => {
                    changed.insert(project);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(run_id, "automatic quarantine skipped the run: {e}"),
            }
        }
        for project in changed {
            judge.mirror.sync(&judge.read, &judge.js, &project).await;
        }
    }
}

/// After a flaky verdict was cleared: releases the test's automatic entry,
/// if it has one, and mirrors the list. Answers whether it had one.
pub async fn release_cleared(
    st: &AppState,
    project: &str,
    test_id: &str,
) -> Result<bool, ApiError> {
    let released = st
        .writer
        .send(Release {
            project: project.to_string(),
            test_id: test_id.to_string(),
            only_auto: true,
        })
        .await?
        .map_err(ApiError::from)?;
    if released {
        st.quarantine.sync(&st.read, &st.js, project).await;
    }
    Ok(released)
}
