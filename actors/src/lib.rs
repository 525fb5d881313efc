//! pytest-platform's actors: the SQLite [`writer::Writer`] and the
//! heartbeat-keeping [`aggregates::Aggregates`]. This crate knows nothing of
//! NATS or HTTP: ingest and the API reach it through messages and the read
//! queries in [`queries`] and [`rollups`].
//!
//! # Layout
//! - [`model`]: the domain types stored and served.
//! - [`format`]: the one form of times and rates in every answer.
//! - [`db`]: opening SQLite (WAL) and running the embedded migrations.
//! - [`writer`]: the one writer; batches, idempotence, completion of runs.
//! - `interning`: the compact layout of the cases (integer keys for runs,
//!   tests and texts) and the writer's batch interning.
//! - [`rollups`]: derived state the writer keeps in the store with the
//!   data (worker statistics, failure counts) and the reads of it.
//! - [`run_tests`]: per-run test summaries (worst outcome, durations),
//!   written with each run, that slow tests and comparisons read.
//! - [`aggregates`]: heartbeats in memory, merged with the stored workers.
//! - [`queries`]: reads that go straight to the read pool.
//! - [`version`]: per-project versions of the stored data, for caches.
//! - [`compare`]: two runs compared test by test.
//! - [`flaky`], [`clusters`], [`history`]: flaky tests, failure clusters,
//!   per-test history and slow tests, read from the database on demand.
//! - [`owners`]: the owners of tests (CODEOWNERS) and the `owner=` filter.
//! - [`quarantine`], [`auto_quarantine`]: quarantined tests, and which the
//!   flaky detector quarantines and releases by itself.
//! - [`retention`]: pruning old runs and reclaiming space.
//! - [`maintenance`]: the periodic task that expires incomplete runs and
//!   applies retention, while its [`gate::Gate`] is open.
//! - [`gate`]: a permission to act that the master gives and takes back
//!   (its leases), without this crate knowing where it comes from.
//! - [`supervise`]: handler panics caught, logged and counted for `/health`.
//! - [`webhooks`]: the events a write produces, stored in an outbox in the
//!   same transaction, and the reads and writes of their delivery.
//!
//! # Threading
//! actix actors need an actix `System`, whose arbiter is a single-threaded
//! runtime. [`ActorSystem::start`] runs that System on a dedicated thread and
//! hands back addresses, so the rest of the master (axum, ingest) stays on an
//! ordinary multi-threaded tokio runtime and talks to the actors with
//! `Addr::send`, and tests can start the very same thing from `#[tokio::test]`.

pub mod aggregates;
pub mod auto_quarantine;
pub mod clusters;
pub mod compare;
pub mod db;
pub mod flaky;
pub mod format;
pub mod gate;
pub mod history;
mod interning;
mod json_rows;
pub mod maintenance;
pub mod model;
pub mod owners;
#[cfg(test)]
mod props;
pub mod quarantine;
pub mod queries;
pub mod retention;
pub mod rollups;
pub mod run_tests;
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
pub use db::{DbError, DbOptions};
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
    pub async fn start(db: DbOptions, config: AggregatesConfig) -> Result<ActorSystem, DbError> {
        ActorSystem::start_with(db, config, webhooks::Routes::default()).await
    }

    /// [`ActorSystem::start`], with the writer storing the webhook events
    /// `routes` asks for.
    pub async fn start_with(
        db: DbOptions,
        config: AggregatesConfig,
        routes: webhooks::Routes,
    ) -> Result<ActorSystem, DbError> {
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
                    let pool = db::open_writer(&db).await?;
                    rollups::ensure_built(&pool)
                        .await
                        .map_err(|source| DbError::Load {
                            path: db.path.clone(),
                            source,
                        })?;
                    run_tests::ensure_built(&pool)
                        .await
                        .map_err(|source| DbError::Load {
                            path: db.path.clone(),
                            source,
                        })?;
                    // Two connections: /workers is one short indexed read.
                    let read = db::open_reader(&DbOptions {
                        read_connections: 2,
                        ..db.clone()
                    })
                    .await?;
                    let writer = Writer::new(pool, writer_version)
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
