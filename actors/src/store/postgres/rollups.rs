//! The rollups' writes on PostgreSQL: `projects`, `worker_stats`,
//! `test_failures` and `test_failure_days`, kept with the data exactly as
//! `store::sqlite::rollups` keeps them (the tables are described in
//! `read::rollups`, which reads them).
//!
//! Guarantees, as on SQLite: [`add_run`] runs in the transaction that makes
//! a run visible, [`remove_run`] in the one that prunes it, so the tables
//! equal a recomputation from the runs stored. Completions are serialized
//! by the `seq` row lock (see [`super`]), and every `ON CONFLICT DO UPDATE`
//! reads the row as committed, so two masters never lose an update.
//!
//! The dialect: `LEAST`/`GREATEST` for SQLite's two-argument `MIN`/`MAX`,
//! columns of the row being updated named with their table (an unqualified
//! name in `DO UPDATE` would be ambiguous with `excluded`), a boolean cast
//! to an integer where SQLite counts a comparison as 0 or 1.

use sqlx::postgres::PgConnection;

use crate::model::{RunRecord, to_millis};
use crate::store::rules::day_of;

/// `col = CASE WHEN (excluded.t, excluded.run) > (table.t, table.run) THEN
/// excluded.col ELSE table.col END` for each column: the newer row's values.
fn take_if_newer(table: &str, t: &str, run: &str, cols: &[&str]) -> String {
    let newer = format!("(excluded.{t}, excluded.{run}) > ({table}.{t}, {table}.{run})");
    cols.iter()
        .map(|c| format!("{c} = CASE WHEN {newer} THEN excluded.{c} ELSE {table}.{c} END"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts `run` (just inserted into `runs`, its cases stored) into the
/// rollups. `received_at` is the master's clock now (epoch ms).
pub(super) async fn add_run(
    conn: &mut PgConnection,
    run: &RunRecord,
    received_at: i64,
) -> Result<(), sqlx::Error> {
    let started = to_millis(run.started_at);
    sqlx::query(
        "INSERT INTO projects (project, runs) VALUES ($1, 1) \
         ON CONFLICT (project) DO UPDATE SET runs = projects.runs + 1",
    )
    .bind(&run.project)
    .execute(&mut *conn)
    .await?;
    let worker_sql = format!(
        "INSERT INTO worker_stats (worker_id, run_count, pass_rate_sum, pass_rate_n, last_seen, \
           last_started_at, last_run_id, last_status, last_project, host) \
         VALUES ($1, 1, COALESCE($2, 0), ($2::float8 IS NOT NULL)::int, LEAST($3, $4), $5, $6, \
           $7, $8, $9) \
         ON CONFLICT (worker_id) DO UPDATE SET \
           run_count = worker_stats.run_count + 1, \
           pass_rate_sum = worker_stats.pass_rate_sum + excluded.pass_rate_sum, \
           pass_rate_n = worker_stats.pass_rate_n + excluded.pass_rate_n, \
           last_seen = GREATEST(worker_stats.last_seen, excluded.last_seen), {}",
        take_if_newer(
            "worker_stats",
            "last_started_at",
            "last_run_id",
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
        .bind(run.status.as_str())
        .bind(&run.project)
        .bind(&run.host)
        .execute(&mut *conn)
        .await?;
    // A test failing twice in one run counts once, with the message of its
    // first failing case (as on SQLite).
    let failures_sql = format!(
        "INSERT INTO test_failures (project, test_id, fail_count, last_failed_at, last_run_id, \
           last_message) \
         SELECT $1, test_id, 1, $2, $3, message FROM ( \
           SELECT test_id, message, \
             ROW_NUMBER() OVER (PARTITION BY test_id ORDER BY outcome, chunk, idx) AS rn \
           FROM test_cases WHERE run_id = $3 AND outcome IN (0, 1)) f \
         WHERE rn = 1 \
         ON CONFLICT (project, test_id) DO UPDATE SET \
           fail_count = test_failures.fail_count + 1, {}",
        take_if_newer(
            "test_failures",
            "last_failed_at",
            "last_run_id",
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
         SELECT DISTINCT $1, $2, test_id, 1 FROM test_cases \
         WHERE run_id = $3 AND outcome IN (0, 1) \
         ON CONFLICT (project, day, test_id) DO UPDATE SET runs = test_failure_days.runs + 1",
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

/// The distinct tests that failed or errored in run `$2`.
const FAILED_IN_RUN: &str =
    "(SELECT test_id FROM test_cases WHERE run_id = $2 AND outcome IN (0, 1))";

/// Takes `run_id` out of the rollups. Call in the pruning transaction
/// *before* its cases and its `runs` row are deleted; a run that is not
/// complete changes nothing.
pub(super) async fn remove_run(conn: &mut PgConnection, run_id: &str) -> Result<(), sqlx::Error> {
    let Some(run): Option<Counted> = sqlx::query_as(
        "SELECT project, worker_id, started_at, LEAST(finished_at, received_at) AS seen, \
         pass_rate FROM runs WHERE run_id = $1",
    )
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(());
    };
    for sql in [
        "UPDATE projects SET runs = runs - 1 WHERE project = $1",
        "DELETE FROM projects WHERE project = $1 AND runs <= 0",
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
             WHERE project = $1 AND test_id IN {FAILED_IN_RUN}"
        ),
        format!(
            "DELETE FROM test_failures WHERE project = $1 AND fail_count <= 0 \
             AND test_id IN {FAILED_IN_RUN}"
        ),
        format!(
            "UPDATE test_failure_days SET runs = runs - 1 \
             WHERE project = $1 AND day = $3 AND test_id IN {FAILED_IN_RUN}"
        ),
        format!(
            "DELETE FROM test_failure_days WHERE project = $1 AND day = $3 AND runs <= 0 \
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
    // one (ties of start time; see SQLite's remove_run).
    let stale: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT test_id FROM test_failures WHERE project = $1 AND last_run_id = $2 \
         AND test_id IN {FAILED_IN_RUN} ORDER BY test_id"
    )))
    .bind(&run.project)
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    for (test_id,) in stale {
        sqlx::query(
            "UPDATE test_failures SET (last_failed_at, last_run_id, last_message) = \
               (SELECT r.started_at, r.run_id, \
                       (SELECT body FROM texts WHERE text_key = c.message_key) \
                FROM runs r JOIN run_keys k ON k.run_id = r.run_id \
                JOIN cases c ON c.run_key = k.run_key \
                WHERE r.project = $1 AND r.run_id <> $2 \
                  AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = $3) \
                  AND c.outcome IN (0, 1) \
                ORDER BY r.started_at DESC, r.run_id DESC, c.outcome, c.chunk, c.idx LIMIT 1) \
             WHERE project = $1 AND test_id = $3",
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
           pass_rate_n = pass_rate_n - ($2::float8 IS NOT NULL)::int, \
           pass_rate_sum = CASE WHEN pass_rate_n - ($2::float8 IS NOT NULL)::int <= 0 THEN 0 \
             ELSE pass_rate_sum - COALESCE($2, 0) END \
         WHERE worker_id = $1",
    )
    .bind(&run.worker_id)
    .bind(run.pass_rate)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM worker_stats WHERE worker_id = $1 AND run_count <= 0")
        .bind(&run.worker_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE worker_stats SET \
           last_seen = (SELECT MAX(LEAST(finished_at, received_at)) FROM runs \
                        WHERE worker_id = $1 AND run_id <> $2), \
           (last_started_at, last_run_id, last_status, last_project, host) = \
             (SELECT started_at, run_id, status, project, host FROM runs \
              WHERE worker_id = $1 AND run_id <> $2 \
              ORDER BY started_at DESC, run_id DESC LIMIT 1) \
         WHERE worker_id = $1 AND (last_run_id = $2 OR last_seen <= $3)",
    )
    .bind(&run.worker_id)
    .bind(run_id)
    .bind(run.seen)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
