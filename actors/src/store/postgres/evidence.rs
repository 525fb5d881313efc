//! The flaky evidence on PostgreSQL (`tracked_tests`, `verdicts`), written
//! in the transaction that completes a run and deleted in the one that
//! prunes it, as `store::sqlite::evidence` writes it: the same outage rule
//! (that module's `outage_sql_of`, plain integer SQL) and the same backfill
//! window (`BACKFILL_RUNS`).

use sqlx::postgres::PgConnection;

use crate::store::rules::{BACKFILL_RUNS, outage_sql_of};

/// Records the flaky evidence of run `run_id` (just made visible with
/// completion order `seq`): the tests it failed or retried become tracked
/// (their verdicts in earlier runs backfilled), and every tracked test with
/// a verdict in it gets its verdict row. Only complete runs that are not
/// outages are evidence.
pub(super) async fn record_evidence(
    conn: &mut PgConnection,
    run_id: &str,
    project: &str,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let evidence: Option<(i32,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM runs WHERE run_id = $1 AND cases_complete = 1 AND NOT {}",
        outage_sql_of("")
    )))
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await?;
    if evidence.is_none() {
        return Ok(());
    }
    let newly_tracked = sqlx::query(
        "INSERT INTO tracked_tests (project, test_id, since_seq) \
         SELECT DISTINCT $1, test_id, $2 FROM test_cases \
         WHERE run_id = $3 AND (outcome IN (0, 1) OR flaky = 1) \
         ORDER BY test_id \
         ON CONFLICT (project, test_id) DO NOTHING",
    )
    .bind(project)
    .bind(seq)
    .bind(run_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if newly_tracked > 0 {
        backfill_evidence(conn, project, seq).await?;
    }
    sqlx::query(
        "INSERT INTO verdicts (seq, key, failed, retried) \
         SELECT $1, t.key, (MIN(c.outcome) <= 1)::int, (SUM(c.flaky) > 0)::int \
         FROM test_cases c JOIN tracked_tests t ON t.project = $2 AND t.test_id = c.test_id \
         WHERE c.run_id = $3 AND c.outcome IN (0, 1, 3) GROUP BY t.key",
    )
    .bind(seq)
    .bind(project)
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes, for the tests that became tracked in the run of completion order
/// `seq`, their verdicts in the project's `BACKFILL_RUNS` newest evidence
/// runs before it, and moves their `since_seq` back to the oldest of those
/// (see SQLite's `backfill_evidence` for why).
async fn backfill_evidence(
    conn: &mut PgConnection,
    project: &str,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let evidence = format!("r.cases_complete = 1 AND NOT {}", outage_sql_of("r."));
    let (lo,): (Option<i64>,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT MIN(seq) FROM (SELECT r.seq FROM runs r \
         WHERE r.project = $1 AND r.seq < $2 AND {evidence} ORDER BY r.seq DESC LIMIT $3) s"
    )))
    .bind(project)
    .bind(seq)
    .bind(BACKFILL_RUNS)
    .fetch_one(&mut *conn)
    .await?;
    let Some(lo) = lo else { return Ok(()) };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO verdicts (seq, key, failed, retried) \
         SELECT r.seq, t.key, (MIN(c.outcome) <= 1)::int, (SUM(c.flaky) > 0)::int \
         FROM tracked_tests t \
         JOIN runs r ON r.project = $1 AND r.seq >= $3 AND r.seq < $2 AND {evidence} \
         JOIN run_keys k ON k.run_id = r.run_id \
         JOIN tests tt ON tt.test_id = t.test_id \
         JOIN cases c ON c.run_key = k.run_key AND c.test_key = tt.test_key \
           AND c.outcome IN (0, 1, 3) \
         WHERE t.project = $1 AND t.since_seq = $2 \
         GROUP BY r.seq, t.key"
    )))
    .bind(project)
    .bind(seq)
    .bind(lo)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE tracked_tests SET since_seq = $3 WHERE project = $1 AND since_seq = $2")
        .bind(project)
        .bind(seq)
        .bind(lo)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets the verdicts of run `run_id`, about to be pruned.
pub(super) async fn forget_evidence(
    conn: &mut PgConnection,
    run_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM verdicts WHERE seq = (SELECT seq FROM runs WHERE run_id = $1)")
        .bind(run_id)
        .execute(conn)
        .await?;
    Ok(())
}
