//! Per-run test summaries on PostgreSQL: the `run_tests` row of a run,
//! written in the transaction that makes it visible, in the format and with
//! the values SQLite writes (`store::sqlite::run_tests`: the format, the
//! encoding and the grouping are that module's).
//!
//! PostgreSQL's `SUM(float8)` adds plainly in the order its plan reads,
//! SQLite's adds with compensation in index order; so the cases are read
//! in SQLite's order (test key, outcome, chunk, index) and grouped in Rust
//! by `store::summary::group`, which sums as SQLite does: the blob is
//! byte-identical to SQLite's for the same cases.

use std::borrow::Cow;

use sqlx::postgres::PgConnection;

use crate::store::summary::{encode, group};

/// The summary of the cases stored under `run_key`, encoded.
pub(super) async fn summarize(
    conn: &mut PgConnection,
    run_key: i64,
) -> Result<Vec<u8>, sqlx::Error> {
    let rows: Vec<(i64, i64, f64)> = sqlx::query_as(
        "SELECT test_key, outcome, duration_secs FROM cases WHERE run_key = $1 \
         ORDER BY test_key, outcome, chunk, idx",
    )
    .bind(run_key)
    .fetch_all(conn)
    .await?;
    Ok(encode(&group(rows)?))
}

/// Writes the summary of run `run_id` (its cases stored, its id as
/// stored), replacing any. A run without cases gets a key here and an
/// empty summary, so every run in `runs` has one.
pub(super) async fn record(conn: &mut PgConnection, run_id: &str) -> Result<(), sqlx::Error> {
    let keys = super::interning::run_keys(&mut *conn, &[Cow::Borrowed(run_id)]).await?;
    let Some(&run_key) = keys.first() else {
        return Err(sqlx::Error::Protocol(format!("run {run_id} got no key")));
    };
    let blob = summarize(&mut *conn, run_key).await?;
    sqlx::query(
        "INSERT INTO run_tests (run_key, tests) VALUES ($1, $2) \
         ON CONFLICT (run_key) DO UPDATE SET tests = excluded.tests",
    )
    .bind(run_key)
    .bind(blob)
    .execute(conn)
    .await?;
    Ok(())
}
