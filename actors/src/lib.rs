//! pytest-platform's actors: the [`writer::Writer`] and the
//! heartbeat-keeping [`aggregates::Aggregates`]. This crate knows nothing of
//! NATS or HTTP: ingest and the API reach it through messages and the read
//! queries in [`read`].
//!
//! # Layout
//! Three wings, and the domain types they share. Imports go one way:
//! `store` ← `read` ← `writer`, `aggregates`; nothing below imports what
//! is above it.
//! - Domain: [`model`] (the types stored and served), [`format`] (times
//!   and rates in answers), [`signature`] (what identifies a failure),
//!   [`owners`] (owners and the `owner=` filter), [`quarantine`] (an
//!   entry), [`webhooks`] (events and routes), [`version`] (per-project
//!   data versions for caches), [`supervise`], [`gate`].
//! - [`store`]: the boundary, one trait ([`store::Store`]) with one
//!   implementation per backend ([`store::sqlite`]): storing batches and
//!   completing runs, the derived state written with the data (rollups,
//!   per-run summaries, flaky evidence, owners, clean-run counts, the
//!   webhook outbox), pruning, expiry and reclaiming space.
//! - [`read`]: the queries the API answers from (runs and cases, rollups,
//!   flaky tests, clusters, history and slow tests, comparisons).
//! - [`writer`]: the writer's protocol, the one actor that writes, with its
//!   messages and thin handlers.
//! - [`aggregates`]: heartbeats in memory, merged with the stored workers.
//! - [`auto_quarantine`]: which flaky tests quarantine and release
//!   themselves, deciding from reads and acting through the writer.
//! - [`retention`], [`maintenance`]: pruning old runs, and the periodic
//!   task that expires incomplete runs and applies retention while its
//!   [`gate::Gate`] is open.
//!
//! # Threading
//! actix actors need an actix `System`, whose arbiter is a single-threaded
//! runtime. [`ActorSystem::start`] runs that System on a dedicated thread and
//! hands back addresses, so the rest of the master (axum, ingest) stays on an
//! ordinary multi-threaded tokio runtime and talks to the actors with
//! `Addr::send`, and tests can start the very same thing from `#[tokio::test]`.

pub mod aggregates;
pub mod auto_quarantine;
pub mod format;
pub mod gate;
mod json_rows;
pub mod maintenance;
pub mod model;
pub mod owners;
#[cfg(test)]
mod props;
pub mod quarantine;
pub mod read;
pub mod retention;
pub mod signature;
pub mod store;
pub mod supervise;
#[cfg(test)]
mod testing;
pub mod version;
pub mod webhooks;
pub mod writer;

use std::thread::JoinHandle;

use actix::prelude::*;

pub use aggregates::{Aggregates, AggregatesConfig};
pub use store::sqlite::db::{self, DbError, DbOptions};
pub use store::target::DbTarget;
pub use store::{Backend, PgOptions, StoreOptions};
pub use version::DataVersion;
pub use writer::Writer;

/// Addresses of the running actors, and the handle to stop them.
pub struct ActorSystem {
    /// The writer: send it [`writer::StoreBatch`].
    pub writer: Addr<Writer>,
    /// The aggregates: heartbeats and the aggregate queries.
    pub aggregates: Addr<Aggregates>,
    /// Bumped by the writer after every write that changes what readers
    /// see, per project.
    pub version: DataVersion,
    /// Handler panics of both actors, for `/health`.
    pub faults: supervise::Faults,
    system: actix::System,
    thread: Option<JoinHandle<()>>,
}

impl ActorSystem {
    /// Opens and migrates the database (filling the rollups once after an
    /// upgrade; otherwise nothing of the history is read) and starts both
    /// actors on a dedicated thread. Returns once they run.
    pub async fn start(
        db: impl Into<StoreOptions>,
        config: AggregatesConfig,
    ) -> Result<ActorSystem, DbError> {
        ActorSystem::start_with(db, config, webhooks::Routes::default()).await
    }

    /// [`ActorSystem::start`], with the writer storing the webhook events
    /// `routes` asks for.
    pub async fn start_with(
        db: impl Into<StoreOptions>,
        config: AggregatesConfig,
        routes: webhooks::Routes,
    ) -> Result<ActorSystem, DbError> {
        let db = db.into();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let version = DataVersion::default();
        let writer_version = version.clone();
        let aggregates_version = version.clone();
        let faults = supervise::Faults::default();
        let actor_faults = faults.clone();
        let thread = std::thread::Builder::new()
            .name("ptp-actors".into())
            .spawn(move || {
                let sys = actix::System::new();
                let started = sys.block_on(async move {
                    let store = store::open(&db).await?;
                    // Two connections: /workers is one short indexed read.
                    let read = read::ReadPool::open(&db, 2).await?;
                    let writer = Writer::new(store, writer_version)
                        .supervised(actor_faults.clone())
                        .with_webhooks(routes)
                        .start();
                    let aggregates = Aggregates::new(config, Some(read))
                        .supervised(actor_faults)
                        .versioned(aggregates_version)
                        .start();
                    Ok::<_, DbError>((writer, aggregates, actix::System::current()))
                });
                let ok = started.is_ok();
                let _ = tx.send(started);
                if ok {
                    let _ = sys.run();
                }
            })
            .map_err(DbError::Thread)?;
        match rx.await {
            Ok(Ok((writer, aggregates, system))) => Ok(ActorSystem {
                writer,
                aggregates,
                version,
                faults,
                system,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(DbError::Thread(std::io::Error::other(
                "the actor thread died while starting",
            ))),
        }
    }

    /// Stops the actors and waits for their thread to end. Callers stop
    /// sending first (ingest stops pulling and awaits its in-flight batch); a
    /// batch never answered was never acked, so JetStream redelivers it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ActorSystem {
    fn drop(&mut self) {
        self.shutdown();
    }
}
