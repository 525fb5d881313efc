//! The read side's proof that both stores answer the same: a history is
//! stored through the SQLite writer, copied row for row into PostgreSQL
//! (`store::postgres::copy`), and every read is asked the same questions
//! of both; the answers must be equal. The histories are the property
//! test's (`props.rs`), so every shape it generates (outcomes, retries,
//! outages, prunes, flaky marks, ties) is compared.
//!
//! - [`core`]: runs, cases, rejections, trend, workers, failure statistics,
//!   the quarantine list, the webhook outbox, comparisons.
//! - [`analytics`]: flaky tests, clusters, history, slow tests, automatic
//!   quarantine decisions.

pub(crate) mod analytics;
pub(crate) mod core;

use crate::read::ReadPool;

/// Every read answers the same on `sqlite` and `pg` (same rows).
pub(crate) async fn check(sqlite: &ReadPool, pg: &ReadPool, when: &str) {
    core::check(sqlite, pg, when).await;
    analytics::check(sqlite, pg, when).await;
}
