//! Retention and upkeep on PostgreSQL, as `store::sqlite::maintain` does
//! them: pruning a slice of old runs with what was derived from them,
//! expiring runs that will never complete (with the same rejection texts),
//! marking a flaky test fixed, and deleting the tests and texts no case
//! refers to any more.
//!
//! Each is one transaction. Pruning, expiry and reclaiming hold the write
//! gate exclusively (see [`super`]): a batch of another master never
//! completes a run while its pieces are being deleted, nor refers to a test
//! an orphan sweep is deleting.
//!
//! Space: [`reclaim`] runs no `VACUUM`. PostgreSQL keeps deleted rows as
//! dead tuples until (auto)vacuum makes their space reusable for new rows,
//! which it does by itself; giving the space back to the file system would
//! take `VACUUM FULL`, which rewrites every table under an exclusive lock
//! (the store stops meanwhile), so it is left to an operator. The sizes
//! reported are `pg_database_size(current_database())` before and after
//! the sweep: usually equal.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;

use super::{Gate, interning, pg_opt, pg_text};
use crate::model::to_millis;
use crate::store::{Cleared, PruneReport};
use crate::version::Changed;

/// [`crate::store::Store::prune_slice`].
pub(super) async fn prune_slice(
    pool: &PgPool,
    cutoff: Option<DateTime<Utc>>,
    keep_runs: Option<u32>,
    max_runs: u32,
) -> Result<(PruneReport, Changed), sqlx::Error> {
    // Without an age limit, nothing is old: incomplete runs are then left to
    // expire_incomplete and rejections are kept.
    let cutoff = cutoff.map_or(i64::MIN, to_millis);
    let limit = i64::from(max_runs.max(1));
    let mut report = PruneReport::default();
    let mut tx = super::begin(pool).await?;
    super::gate(&mut tx, Gate::Exclusive).await?;
    let runs: Vec<(String, String)> = match keep_runs {
        None => {
            sqlx::query_as(
                "SELECT run_id, project FROM runs WHERE started_at < $1 \
                 ORDER BY started_at, run_id LIMIT $2",
            )
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        }
        Some(keep) => {
            sqlx::query_as(
                "SELECT run_id, project FROM (SELECT run_id, project, started_at, \
                   ROW_NUMBER() OVER (PARTITION BY project \
                                      ORDER BY started_at DESC, run_id DESC) AS newest \
                   FROM runs) r \
                 WHERE started_at < $1 OR newest > $2 ORDER BY started_at, run_id LIMIT $3",
            )
            .bind(cutoff)
            .bind(i64::from(keep))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        }
    };
    // Chunks or finals that never became a run, received before the cut-off.
    let incomplete: Vec<(String,)> = sqlx::query_as(
        "SELECT run_id FROM run_chunks WHERE received_at < $1 \
           AND run_id NOT IN (SELECT run_id FROM runs) \
         UNION SELECT run_id FROM pending_runs WHERE received_at < $1 \
         ORDER BY run_id LIMIT $2",
    )
    .bind(cutoff)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let complete: BTreeSet<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
    let ids = runs
        .iter()
        .map(|(id, _)| id)
        .chain(incomplete.iter().map(|(id,)| id));
    for run_id in ids {
        // One run at a time: what the rollups recompute after taking a run
        // out must not see the runs pruned before it.
        if complete.contains(run_id.as_str()) {
            super::rollups::remove_run(&mut tx, run_id).await?;
            super::evidence::forget_evidence(&mut tx, run_id).await?;
        }
        report.cases += interning::delete_cases(&mut tx, run_id).await?;
        for sql in [
            "DELETE FROM run_chunks WHERE run_id = $1",
            "DELETE FROM pending_runs WHERE run_id = $1",
        ] {
            sqlx::query(sql).bind(run_id).execute(&mut *tx).await?;
        }
        report.runs += sqlx::query("DELETE FROM runs WHERE run_id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    report.incomplete = incomplete.len() as u64;
    report.rejected = sqlx::query(
        "DELETE FROM rejected WHERE id IN \
           (SELECT id FROM rejected WHERE received_at < $1 ORDER BY id LIMIT $2)",
    )
    .bind(cutoff)
    .bind(limit * 10)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    let changed = Changed {
        pruned: !runs.is_empty(),
        projects: runs.into_iter().map(|(_, project)| project).collect(),
    };
    Ok((report, changed))
}

/// [`crate::store::Store::clear_flaky`].
pub(super) async fn clear_flaky(pool: &PgPool, c: Cleared) -> Result<bool, sqlx::Error> {
    let mut tx = super::begin(pool).await?;
    let known: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM runs r JOIN run_keys k ON k.run_id = r.run_id \
         JOIN cases c ON c.run_key = k.run_key \
         WHERE r.project = $1 \
           AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = $2) LIMIT 1",
    )
    .bind(pg_text(&c.project))
    .bind(pg_text(&c.test_id))
    .fetch_optional(&mut *tx)
    .await?;
    if known.is_none() {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO flaky_cleared (project, test_id, cleared_at, note) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (project, test_id) DO UPDATE SET \
         cleared_at = excluded.cleared_at, note = excluded.note",
    )
    .bind(pg_text(&c.project))
    .bind(pg_text(&c.test_id))
    .bind(to_millis(c.at))
    .bind(pg_opt(&c.note))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// [`crate::store::Store::expire_incomplete`].
pub(super) async fn expire_incomplete(
    pool: &PgPool,
    before: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let cutoff = to_millis(before);
    let now = Utc::now();
    let mut tx = super::begin(pool).await?;
    super::gate(&mut tx, Gate::Exclusive).await?;
    // Runs with pieces but no visible run, whose newest piece is old.
    let stale: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT c.run_id, COUNT(*), p.chunks FROM run_chunks c \
         LEFT JOIN pending_runs p ON p.run_id = c.run_id \
         WHERE c.run_id NOT IN (SELECT run_id FROM runs) \
         GROUP BY c.run_id, p.chunks \
         HAVING MAX(c.received_at) < $1 AND COALESCE(MAX(p.received_at), 0) < $1 \
         UNION ALL \
         SELECT p.run_id, 0, p.chunks FROM pending_runs p \
         WHERE p.received_at < $1 \
           AND NOT EXISTS (SELECT 1 FROM run_chunks c WHERE c.run_id = p.run_id) \
         ORDER BY 1 LIMIT 500",
    )
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await?;
    for (run_id, have, declared) in &stale {
        let reason = crate::store::expiry_reason(run_id, *have, *declared);
        interning::delete_cases(&mut tx, run_id).await?;
        for sql in [
            "DELETE FROM run_chunks WHERE run_id = $1",
            "DELETE FROM pending_runs WHERE run_id = $1",
        ] {
            sqlx::query(sql).bind(run_id).execute(&mut *tx).await?;
        }
        let rejection = crate::store::writer_rejection(run_id, reason, now);
        super::batch::insert_rejection(&mut tx, &rejection).await?;
    }
    tx.commit().await?;
    Ok(stale.len() as u64)
}

async fn database_bytes(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let (bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await?;
    Ok(bytes.max(0) as u64)
}

/// [`crate::store::Store::reclaim`]: deletes orphaned tests and texts;
/// returns the database's size before and after (see the module docs for
/// why no `VACUUM`).
pub(super) async fn reclaim(pool: &PgPool) -> Result<(u64, u64), sqlx::Error> {
    let before = database_bytes(pool).await?;
    let mut tx = super::begin(pool).await?;
    super::gate(&mut tx, Gate::Exclusive).await?;
    let (tests, texts) = interning::drop_orphans(&mut tx).await?;
    tx.commit().await?;
    tracing::debug!(tests, texts, "orphaned tests and texts deleted");
    let after = database_bytes(pool).await?;
    Ok((before, after))
}
