//! The read wing: the queries the API answers from, straight on the read
//! pool, never through the writer. Each module reads what the store keeps
//! (the runs, the cases through their keys, the rollups and summaries
//! written with the data) and never writes; none imports the writer.
//!
//! - [`queries`]: runs, cases, rejections, failure statistics with filters.
//! - [`rollups`]: trends, workers and failure counts from the rollups.
//! - [`flaky`], [`clusters`], [`history`]: flaky tests, failure clusters,
//!   per-test history and slow tests.
//! - [`compare`]: two runs compared test by test.
//! - [`quarantine`], [`webhooks`]: the active quarantine list, the webhook
//!   outbox's pending deliveries and backlog.
//!
//! Both stores behind the same functions: every read takes a [`ReadPool`]
//! and dispatches to SQLite's SQL (in the topic's file) or PostgreSQL's
//! (`<topic>/postgres.rs`); what turns rows into an answer (judging,
//! grouping, merging, ordering, cutting) is written once and shared. The
//! property test in `props.rs` copies random histories into PostgreSQL and
//! asks both stores every read (`parity`).

pub mod clusters;
pub mod compare;
pub mod flaky;
pub mod history;
#[cfg(test)]
pub(crate) mod parity;
pub mod quarantine;
pub mod queries;
pub mod rollups;
pub mod webhooks;

use sqlx::{PgPool, SqlitePool};

/// The read pool of the store the master runs on. Every read takes it and
/// answers the same on both backends; each topic keeps its SQLite SQL in
/// its own file and its PostgreSQL SQL in `<topic>/postgres.rs`, and the
/// rules between (judging flakiness, merging summaries) once, for both.
#[derive(Debug, Clone)]
pub enum ReadPool {
    /// The embedded default: a pool of readers of one SQLite file (WAL).
    Sqlite(SqlitePool),
    /// A PostgreSQL database, possibly shared by several masters.
    Postgres(PgPool),
}

impl ReadPool {
    /// A pool of `connections` readers of the store `opts` names, which
    /// its writer opened (and migrated) first.
    pub async fn open(
        opts: &crate::StoreOptions,
        connections: u32,
    ) -> Result<ReadPool, crate::DbError> {
        Ok(match opts {
            crate::StoreOptions::Sqlite(db) => ReadPool::Sqlite(
                crate::store::sqlite::db::open_reader(&crate::DbOptions {
                    read_connections: connections,
                    ..db.clone()
                })
                .await?,
            ),
            crate::StoreOptions::Postgres(pg) => {
                ReadPool::Postgres(crate::store::postgres::connect(&pg.url, connections).await?)
            }
        })
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        match self {
            ReadPool::Sqlite(p) => p.close().await,
            ReadPool::Postgres(p) => p.close().await,
        }
    }
}

impl From<SqlitePool> for ReadPool {
    fn from(p: SqlitePool) -> ReadPool {
        ReadPool::Sqlite(p)
    }
}

impl From<PgPool> for ReadPool {
    fn from(p: PgPool) -> ReadPool {
        ReadPool::Postgres(p)
    }
}

/// A read-only PostgreSQL transaction seeing one snapshot of the store for
/// all its statements (REPEATABLE READ; a read-only one never fails to
/// serialize), as a SQLite read transaction does: what one statement of a
/// read finds is what the next one reads against.
pub(crate) async fn pg_snapshot(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
}
