//! The rollups' writes on SQLite (the tables are described in
//! `read::rollups`, which reads them).
//!
//! Guarantees:
//! - The store calls [`add_run`] in the transaction that makes a run
//!   visible and [`remove_run`] in the one that prunes it, so the tables
//!   always equal [`rebuild`]'s recomputation from the runs stored (the
//!   tests check it after pruning). Incomplete runs, refused runs and
//!   rejections never reach them.
//! - A start reads none of them whole: [`ensure_built`] reads one row,
//!   except on the first start after migration 0006, which fills them from
//!   the runs already stored (once, O(history)).
//!
//! SQLite-specific SQL (two-argument `MIN`/`MAX`, `INDEXED BY`) stays here.

use sqlx::{SqliteConnection, SqlitePool};

use crate::model::{RunRecord, to_millis};
use crate::store::rules::day_of;

/// "The new row's (time, run) is newer than the stored one's", for the
/// `ON CONFLICT DO UPDATE` of [`add_run`]: `{t}` is the time column.
fn newer(t: &str, run: &str) -> String {
    format!("(excluded.{t}, excluded.{run}) > ({t}, {run})")
}

/// `col = CASE WHEN <newer> THEN excluded.col ELSE col END` for each column.
fn take_if_newer(cond: &str, cols: &[&str]) -> String {
    cols.iter()
        .map(|c| format!("{c} = CASE WHEN {cond} THEN excluded.{c} ELSE {c} END"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts `run` (just inserted into `runs`, its cases stored) into the
/// rollups. `received_at` is the master's clock now (epoch ms). Call in the
/// transaction that inserts the run.
pub(crate) async fn add_run(
    conn: &mut SqliteConnection,
    run: &RunRecord,
    received_at: i64,
) -> Result<(), sqlx::Error> {
    let started = to_millis(run.started_at);
    sqlx::query(
        "INSERT INTO projects (project, runs) VALUES (?, 1) \
         ON CONFLICT (project) DO UPDATE SET runs = runs + 1",
    )
    .bind(&run.project)
    .execute(&mut *conn)
    .await?;
    // Every SET expression reads the row as it was before the update.
    let worker_sql = format!(
        "INSERT INTO worker_stats (worker_id, run_count, pass_rate_sum, pass_rate_n, last_seen, \
           last_started_at, last_run_id, last_status, last_project, host) \
         VALUES (?1, 1, COALESCE(?2, 0), ?2 IS NOT NULL, MIN(?3, ?4), ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (worker_id) DO UPDATE SET \
           run_count = run_count + 1, \
           pass_rate_sum = pass_rate_sum + excluded.pass_rate_sum, \
           pass_rate_n = pass_rate_n + excluded.pass_rate_n, \
           last_seen = MAX(last_seen, excluded.last_seen), {}",
        take_if_newer(
            &newer("last_started_at", "last_run_id"),
            &[
                "last_started_at",
                "last_run_id",
                "last_status",
                "last_project",
                "host",
            ]
        )
    );
    sqlx::query(sqlx::AssertSqlSafe(worker_sql))
        .bind(&run.worker_id)
        .bind(run.pass_rate)
        .bind(to_millis(run.finished_at))
        .bind(received_at)
        .bind(started)
        .bind(&run.run_id)
        .bind(run.status)
        .bind(&run.project)
        .bind(&run.host)
        .execute(&mut *conn)
        .await?;
    // A test failing twice in one run (a failure, then an error in
    // teardown) counts once, with the message of its first failing case.
    let failures_sql = format!(
        "INSERT INTO test_failures (project, test_id, fail_count, last_failed_at, last_run_id, last_message) \
         SELECT ?1, test_id, 1, ?2, ?3, message FROM ( \
           SELECT test_id, message, ROW_NUMBER() OVER (PARTITION BY test_id ORDER BY outcome, chunk, idx) AS rn \
           FROM test_cases WHERE run_id = ?3 AND outcome IN (0, 1)) \
         WHERE rn = 1 \
         ON CONFLICT (project, test_id) DO UPDATE SET fail_count = fail_count + 1, {}",
        take_if_newer(
            &newer("last_failed_at", "last_run_id"),
            &["last_failed_at", "last_message", "last_run_id"]
        )
    );
    sqlx::query(sqlx::AssertSqlSafe(failures_sql))
        .bind(&run.project)
        .bind(started)
        .bind(&run.run_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO test_failure_days (project, day, test_id, runs) \
         SELECT DISTINCT ?1, ?2, test_id, 1 FROM test_cases WHERE run_id = ?3 AND outcome IN (0, 1) \
         ON CONFLICT (project, day, test_id) DO UPDATE SET runs = runs + 1",
    )
    .bind(&run.project)
    .bind(day_of(started))
    .bind(&run.run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The stored run a prune is about to delete, as the rollups counted it.
#[derive(sqlx::FromRow)]
struct Counted {
    project: String,
    worker_id: String,
    started_at: i64,
    seen: i64,
    pass_rate: Option<f64>,
}

/// The distinct tests that failed or errored in run `?2`.
const FAILED_IN_RUN: &str =
    "(SELECT test_id FROM test_cases WHERE run_id = ?2 AND outcome IN (0, 1))";

/// Takes `run_id` out of the rollups. Call in the pruning transaction
/// *before* its cases and its `runs` row are deleted; a run that is not
/// complete (not in `runs`) changes nothing.
pub(crate) async fn remove_run(
    conn: &mut SqliteConnection,
    run_id: &str,
) -> Result<(), sqlx::Error> {
    let Some(run): Option<Counted> = sqlx::query_as(
        "SELECT project, worker_id, started_at, MIN(finished_at, received_at) AS seen, pass_rate \
         FROM runs WHERE run_id = ?",
    )
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(());
    };
    for sql in [
        "UPDATE projects SET runs = runs - 1 WHERE project = ?1",
        "DELETE FROM projects WHERE project = ?1 AND runs <= 0",
    ] {
        sqlx::query(sql)
            .bind(&run.project)
            .execute(&mut *conn)
            .await?;
    }

    // Its failing tests: counts down, rows that reach zero go.
    for sql in [
        format!(
            "UPDATE test_failures SET fail_count = fail_count - 1 \
             WHERE project = ?1 AND test_id IN {FAILED_IN_RUN}"
        ),
        format!(
            "DELETE FROM test_failures WHERE project = ?1 AND fail_count <= 0 \
             AND test_id IN {FAILED_IN_RUN}"
        ),
        format!(
            "UPDATE test_failure_days SET runs = runs - 1 \
             WHERE project = ?1 AND day = ?3 AND test_id IN {FAILED_IN_RUN}"
        ),
        format!(
            "DELETE FROM test_failure_days WHERE project = ?1 AND day = ?3 AND runs <= 0 \
             AND test_id IN {FAILED_IN_RUN}"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&run.project)
            .bind(run_id)
            .bind(day_of(run.started_at))
            .execute(&mut *conn)
            .await?;
    }
    // Tests whose newest failure was this run get their newest remaining
    // one. Pruning goes oldest first, so this is rare: a test's only
    // failure was deleted above; only ties of start time come here.
    let stale: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT test_id FROM test_failures WHERE project = ?1 AND last_run_id = ?2 \
         AND test_id IN {FAILED_IN_RUN}"
    )))
    .bind(&run.project)
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    for (test_id,) in stale {
        sqlx::query(
            "UPDATE test_failures SET (last_failed_at, last_run_id, last_message) = \
               (SELECT r.started_at, r.run_id, \
                       (SELECT body FROM texts WHERE text_key = c.message_key) FROM runs r \
                CROSS JOIN run_keys k CROSS JOIN cases c INDEXED BY cases_by_run_test \
                WHERE r.project = ?1 AND r.run_id != ?2 AND k.run_id = r.run_id \
                  AND c.run_key = k.run_key \
                  AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = ?3) \
                  AND c.outcome IN (0, 1) \
                ORDER BY r.started_at DESC, r.run_id DESC, c.outcome, c.chunk, c.idx LIMIT 1) \
             WHERE project = ?1 AND test_id = ?3",
        )
        .bind(&run.project)
        .bind(run_id)
        .bind(&test_id)
        .execute(&mut *conn)
        .await?;
    }

    // Its worker: counts down; its newest run and last sighting recomputed
    // when they may have come from this run.
    sqlx::query(
        "UPDATE worker_stats SET run_count = run_count - 1, \
           pass_rate_n = pass_rate_n - (?2 IS NOT NULL), \
           pass_rate_sum = CASE WHEN pass_rate_n - (?2 IS NOT NULL) <= 0 THEN 0 \
             ELSE pass_rate_sum - COALESCE(?2, 0) END \
         WHERE worker_id = ?1",
    )
    .bind(&run.worker_id)
    .bind(run.pass_rate)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM worker_stats WHERE worker_id = ? AND run_count <= 0")
        .bind(&run.worker_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE worker_stats SET \
           last_seen = (SELECT MAX(MIN(finished_at, received_at)) FROM runs \
                        WHERE worker_id = ?1 AND run_id != ?2), \
           (last_started_at, last_run_id, last_status, last_project, host) = \
             (SELECT started_at, run_id, status, project, host FROM runs \
              WHERE worker_id = ?1 AND run_id != ?2 \
              ORDER BY started_at DESC, run_id DESC LIMIT 1) \
         WHERE worker_id = ?1 AND (last_run_id = ?2 OR last_seen <= ?3)",
    )
    .bind(&run.worker_id)
    .bind(run_id)
    .bind(run.seen)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Recomputes every rollup from the stored runs. O(history): used once
/// after migration 0006 (see [`ensure_built`]) and as the reference the
/// tests compare the incremental updates with.
pub async fn rebuild(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM projects",
        "DELETE FROM worker_stats",
        "DELETE FROM test_failures",
        "DELETE FROM test_failure_days",
        "INSERT INTO projects (project, runs) SELECT project, COUNT(*) FROM runs GROUP BY project",
        "INSERT INTO worker_stats (worker_id, run_count, pass_rate_sum, pass_rate_n, last_seen, \
           last_started_at, last_run_id, last_status, last_project, host) \
         SELECT w.worker_id, w.n, w.s, w.k, w.seen, l.started_at, l.run_id, l.status, l.project, l.host \
         FROM (SELECT worker_id, COUNT(*) AS n, COALESCE(SUM(pass_rate), 0) AS s, \
                 COUNT(pass_rate) AS k, MAX(MIN(finished_at, received_at)) AS seen \
               FROM runs GROUP BY worker_id) w \
         JOIN (SELECT worker_id, started_at, run_id, status, project, host, \
                 ROW_NUMBER() OVER (PARTITION BY worker_id ORDER BY started_at DESC, run_id DESC) AS rn \
               FROM runs) l ON l.worker_id = w.worker_id AND l.rn = 1",
        "WITH f AS (SELECT r.project, c.test_id, r.run_id, r.started_at, c.message, \
                      ROW_NUMBER() OVER (PARTITION BY r.run_id, c.test_id \
                                         ORDER BY c.outcome, c.chunk, c.idx) AS k \
                    FROM runs r JOIN test_cases c ON c.run_id = r.run_id AND c.outcome IN (0, 1)), \
              g AS (SELECT project, test_id, run_id, started_at, message, \
                      ROW_NUMBER() OVER (PARTITION BY project, test_id \
                                         ORDER BY started_at DESC, run_id DESC) AS rn, \
                      COUNT(*) OVER (PARTITION BY project, test_id) AS n \
                    FROM f WHERE k = 1) \
         INSERT INTO test_failures (project, test_id, fail_count, last_failed_at, last_run_id, last_message) \
         SELECT project, test_id, n, started_at, run_id, message FROM g WHERE rn = 1",
        "INSERT INTO test_failure_days (project, day, test_id, runs) \
         SELECT r.project, r.started_at / 86400000, c.test_id, COUNT(DISTINCT r.run_id) \
         FROM runs r JOIN test_cases c ON c.run_id = r.run_id AND c.outcome IN (0, 1) \
         GROUP BY 1, 2, 3",
        "UPDATE rollup_state SET value = 1 WHERE name = 'built'",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Fills the rollups from the stored runs if they were never built (the
/// first start after migration 0006); otherwise reads one row.
pub(crate) async fn ensure_built(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let built: Option<(i64,)> =
        sqlx::query_as("SELECT value FROM rollup_state WHERE name = 'built'")
            .fetch_optional(pool)
            .await?;
    if built.is_some_and(|(b,)| b != 0) {
        return Ok(());
    }
    tracing::info!("filling the rollup tables from the stored runs (once, after an upgrade)");
    let mut tx = pool.begin().await?;
    rebuild(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}
