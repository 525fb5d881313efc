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
//! The SQL is SQLite's; the PostgreSQL store's reads join here behind the
//! same functions.

pub mod clusters;
pub mod compare;
pub mod flaky;
pub mod history;
pub mod quarantine;
pub mod queries;
pub mod rollups;
pub mod webhooks;
