//! Retention and upkeep on SQLite: pruning a slice of old runs with what
//! was derived from them, expiring runs that will never complete, marking a
//! flaky test fixed, and giving pruned pages back to the file system
//! (incremental vacuum, WAL truncated).
//!
//! Each function is one transaction (reclaim: one, then the vacuum, which
//! changes no row).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqlitePool};

use super::interning;
use crate::model::to_millis;
use crate::store::{Cleared, PruneReport, StoreError};
use crate::version::Changed;

/// [`crate::store::Store::prune_slice`].
pub(super) async fn prune_slice(
    pool: &SqlitePool,
    cutoff: Option<DateTime<Utc>>,
    keep_runs: Option<u32>,
    max_runs: u32,
) -> Result<(PruneReport, Changed), StoreError> {
    // Without an age limit, nothing is old: incomplete runs are then left to
    // expire_incomplete and rejections are kept.
    let cutoff = cutoff.map_or(i64::MIN, to_millis);
    let limit = i64::from(max_runs.max(1));
    let mut report = PruneReport::default();
    let mut tx = pool.begin().await?;
    let runs: Vec<(String, String)> = match keep_runs {
        None => {
            sqlx::query_as(
                "SELECT run_id, project FROM runs WHERE started_at < ? ORDER BY started_at LIMIT ?",
            )
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        }
        Some(keep) => sqlx::query_as(
            "SELECT run_id, project FROM (SELECT run_id, project, started_at, ROW_NUMBER() OVER \
                   (PARTITION BY project ORDER BY started_at DESC, run_id DESC) AS newest \
                   FROM runs) \
                 WHERE started_at < ? OR newest > ? ORDER BY started_at LIMIT ?",
        )
        .bind(cutoff)
        .bind(i64::from(keep))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?,
    };
    // Chunks or finals that never became a run, received before the cut-off.
    let incomplete: Vec<(String,)> = sqlx::query_as(
        "SELECT run_id FROM run_chunks WHERE received_at < ? AND run_id NOT IN (SELECT run_id FROM runs) \
         UNION SELECT run_id FROM pending_runs WHERE received_at < ? LIMIT ?",
    )
    .bind(cutoff)
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
            "DELETE FROM run_chunks WHERE run_id = ?",
            "DELETE FROM pending_runs WHERE run_id = ?",
        ] {
            sqlx::query(sql).bind(run_id).execute(&mut *tx).await?;
        }
        report.runs += sqlx::query("DELETE FROM runs WHERE run_id = ?")
            .bind(run_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    report.incomplete = incomplete.len() as u64;
    report.rejected = sqlx::query(
        "DELETE FROM rejected WHERE id IN (SELECT id FROM rejected WHERE received_at < ? LIMIT ?)",
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
pub(super) async fn clear_flaky(pool: &SqlitePool, c: Cleared) -> Result<bool, StoreError> {
    let known: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM runs r CROSS JOIN run_keys k \
             CROSS JOIN cases c INDEXED BY cases_by_run_test \
             WHERE r.project = ? AND k.run_id = r.run_id AND c.run_key = k.run_key \
               AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = ?) LIMIT 1",
    )
    .bind(&c.project)
    .bind(&c.test_id)
    .fetch_optional(pool)
    .await?;
    if known.is_none() {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO flaky_cleared (project, test_id, cleared_at, note) \
             VALUES (?, ?, ?, ?) ON CONFLICT (project, test_id) DO UPDATE SET \
             cleared_at = excluded.cleared_at, note = excluded.note",
    )
    .bind(&c.project)
    .bind(&c.test_id)
    .bind(to_millis(c.at))
    .bind(&c.note)
    .execute(pool)
    .await?;
    Ok(true)
}

/// [`crate::store::Store::expire_incomplete`].
pub(super) async fn expire_incomplete(
    pool: &SqlitePool,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let cutoff = to_millis(before);
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    // Runs with pieces but no visible run, whose newest piece is old.
    let stale: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT c.run_id, COUNT(*), p.chunks FROM run_chunks c \
         LEFT JOIN pending_runs p ON p.run_id = c.run_id \
         WHERE c.run_id NOT IN (SELECT run_id FROM runs) \
         GROUP BY c.run_id HAVING MAX(c.received_at) < ? AND COALESCE(MAX(p.received_at), 0) < ? \
         UNION ALL \
         SELECT p.run_id, 0, p.chunks FROM pending_runs p \
         WHERE p.received_at < ? AND NOT EXISTS (SELECT 1 FROM run_chunks c WHERE c.run_id = p.run_id) \
         LIMIT 500",
    )
    .bind(cutoff)
    .bind(cutoff)
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await?;
    for (run_id, have, declared) in &stale {
        let reason = crate::store::expiry_reason(run_id, *have, *declared);
        interning::delete_cases(&mut tx, run_id).await?;
        for sql in [
            "DELETE FROM run_chunks WHERE run_id = ?",
            "DELETE FROM pending_runs WHERE run_id = ?",
        ] {
            sqlx::query(sql).bind(run_id).execute(&mut *tx).await?;
        }
        let rejection = crate::store::writer_rejection(run_id, reason, now);
        super::batch::insert_rejection(&mut tx, &rejection).await?;
    }
    tx.commit().await?;
    Ok(stale.len() as u64)
}

async fn file_bytes(conn: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
        .fetch_one(&mut *conn)
        .await?;
    let (size,): (i64,) = sqlx::query_as("PRAGMA page_size")
        .fetch_one(&mut *conn)
        .await?;
    Ok((pages.max(0) * size.max(0)) as u64)
}

/// Deletes orphaned tests and texts, then frees the pages pruning left
/// empty. Databases made before incremental auto-vacuum was the default are
/// converted once with a full `VACUUM`.
pub(super) async fn reclaim(
    pool: &SqlitePool,
    known: &interning::Known,
) -> Result<Sizes, StoreError> {
    let mut tx = pool.begin().await?;
    let (tests, texts) = interning::drop_orphans(&mut tx).await?;
    // Before the commit: a key forgotten too early costs one lookup, a key
    // kept after its row is gone would be a dangling reference.
    interning::lock(known).forget_all();
    tx.commit().await?;
    tracing::debug!(tests, texts, "orphaned tests and texts deleted");
    let mut conn = pool.acquire().await?;
    let before = file_bytes(&mut conn).await?;
    let (mode,): (i64,) = sqlx::query_as("PRAGMA auto_vacuum")
        .fetch_one(&mut *conn)
        .await?;
    if mode != 2 {
        tracing::info!("converting the database to incremental auto-vacuum (one full VACUUM)");
        sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
            .execute(&mut *conn)
            .await?;
        sqlx::query("VACUUM").execute(&mut *conn).await?;
    } else {
        sqlx::query("PRAGMA incremental_vacuum")
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await?;
    let after = file_bytes(&mut conn).await?;
    Ok((before, after))
}

/// Size before and after, in bytes.
type Sizes = (u64, u64);
