//! [`super`] on PostgreSQL: the run's summary, the test ids of its keys and
//! its failing cases' messages, read in one REPEATABLE READ transaction (so
//! they agree, as SQLite's one read transaction makes them), then made
//! into per-test results by the same Rust ([`per_test`]). The summary is
//! the one the store wrote ([`summary::decode_stored`]).

use sqlx::PgPool;

use super::*;

/// [`super::load_tests`] on PostgreSQL.
pub(crate) async fn load_tests(
    pool: &PgPool,
    run_id: &str,
) -> Result<BTreeMap<String, TestResult>, sqlx::Error> {
    let mut tx = crate::read::pg_snapshot(pool).await?;
    let (stored, run_key, blob): (bool, Option<i64>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = $1), k.run_key, t.tests \
         FROM (SELECT 1) one LEFT JOIN run_keys k ON k.run_id = $1 \
         LEFT JOIN run_tests t ON t.run_key = k.run_key",
    )
    .bind(run_id)
    .fetch_one(&mut *tx)
    .await?;
    let (run_key, summary) = match run_key.zip(blob) {
        Some((key, blob)) => (key, summary::decode_stored(&blob)?),
        None if stored => return Err(summary::missing(run_id)),
        None => return Ok(BTreeMap::new()),
    };
    let keys: Vec<i64> = summary.iter().map(|t| t.key).collect();
    let names: Vec<(i64, String)> =
        sqlx::query_as("SELECT test_key, test_id FROM tests WHERE test_key = ANY($1)")
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
    let mut failing = Vec::new();
    if summary.iter().any(|t| t.worst.is_failure()) {
        failing = sqlx::query_as(
            "SELECT test_key, (SELECT body FROM texts WHERE text_key = c.message_key) \
             FROM cases c WHERE run_key = $1 AND outcome IN (0, 1) ORDER BY outcome, chunk, idx",
        )
        .bind(run_key)
        .fetch_all(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    per_test(&summary, &names.into_iter().collect(), failing)
}
