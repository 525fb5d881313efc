//! pytest-platform's actors: the SQLite [`writer::Writer`] and the in-memory
//! [`aggregates::Aggregates`]. This crate knows nothing of NATS or HTTP:
//! ingest and the API reach it through messages and the read queries in
//! [`queries`].
//!
//! # Layout
//! - [`model`]: the domain types stored and served.
//! - [`db`]: opening SQLite (WAL) and running the embedded migrations.
//! - [`writer`]: the one writer; batches, idempotence, completion of runs.
//! - [`aggregates`]: trend, worker status, failure statistics in memory.
//! - [`queries`]: reads that go straight to the read pool.
//! - [`compare`]: two runs compared test by test.
//! - [`flaky`], [`clusters`], [`history`]: flaky tests, failure clusters,
//!   per-test history and slow tests, read from the database on demand.
//! - [`retention`]: pruning old runs and reclaiming space.
//! - [`maintenance`]: the periodic task that expires incomplete runs and
//!   applies retention.
//! - [`supervise`]: handler panics caught, logged and counted for `/health`.
//!
//! # Threading
//! actix actors need an actix `System`, whose arbiter is a single-threaded
//! runtime. [`ActorSystem::start`] runs that System on a dedicated thread and
//! hands back addresses, so the rest of the master (axum, ingest) stays on an
//! ordinary multi-threaded tokio runtime and talks to the actors with
//! `Addr::send`, and tests can start the very same thing from `#[tokio::test]`.

pub mod aggregates;
pub mod clusters;
pub mod compare;
pub mod db;
pub mod flaky;
pub mod history;
mod json_rows;
pub mod maintenance;
pub mod model;
pub mod queries;
pub mod retention;
pub mod supervise;
pub mod writer;

use std::thread::JoinHandle;

use actix::prelude::*;

pub use aggregates::{Aggregates, AggregatesConfig};
pub use db::{DbError, DbOptions};
pub use writer::{DataVersion, Writer};

/// Addresses of the running actors, and the handle to stop them.
pub struct ActorSystem {
    /// The writer: send it [`writer::StoreBatch`].
    pub writer: Addr<Writer>,
    /// The aggregates: heartbeats and the aggregate queries.
    pub aggregates: Addr<Aggregates>,
    /// Bumped by the writer after every write.
    pub version: DataVersion,
    /// Handler panics of both actors, for `/health`.
    pub faults: supervise::Faults,
    system: actix::System,
    thread: Option<JoinHandle<()>>,
}

impl ActorSystem {
    /// Opens and migrates the database, rebuilds the aggregates from it and
    /// starts both actors on a dedicated thread. Returns once they run.
    pub async fn start(db: DbOptions, config: AggregatesConfig) -> Result<ActorSystem, DbError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let version = DataVersion::default();
        let writer_version = version.clone();
        let faults = supervise::Faults::default();
        let actor_faults = faults.clone();
        let thread = std::thread::Builder::new()
            .name("ptp-actors".into())
            .spawn(move || {
                let sys = actix::System::new();
                let started = sys.block_on(async move {
                    let pool = db::open_writer(&db).await?;
                    let agg =
                        Aggregates::load(&pool, config)
                            .await
                            .map_err(|source| DbError::Load {
                                path: db.path.clone(),
                                source,
                            })?;
                    // Each needs the other's address: the aggregates ask the
                    // writer for a rebuild after a panic.
                    let mut writer = None;
                    let aggregates = Aggregates::create(|ctx| {
                        let w = Writer::new(
                            pool,
                            ctx.address().recipient(),
                            ctx.address().recipient(),
                            writer_version,
                        )
                        .supervised(actor_faults.clone())
                        .start();
                        let agg = agg.supervised(actor_faults, w.clone().recipient());
                        writer = Some(w);
                        agg
                    });
                    let writer = writer.ok_or(DbError::Thread(std::io::Error::other(
                        "the writer did not start",
                    )))?;
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
