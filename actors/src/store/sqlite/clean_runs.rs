//! The automatic quarantine's counts kept with the data on SQLite: each
//! automatic entry's clean runs in a row, updated in the transaction that
//! completes a run, and the completion order at a release (see
//! `auto_quarantine` for what decides on them).

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use crate::model::to_millis;
use crate::store::rules::{RunVerdict, next_clean_runs};

/// Updates the clean-run counts of `project`'s automatic entries for run
/// `run_id`, just made visible: part of the writer's transaction.
pub(crate) async fn count_clean_runs(
    conn: &mut SqliteConnection,
    run_id: &str,
    project: &str,
) -> Result<(), sqlx::Error> {
    // test_id, count, worst outcome, any retried case.
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT q.test_id, q.clean_runs, MIN(c.outcome), MAX(c.flaky) FROM quarantine q \
         CROSS JOIN tests t CROSS JOIN cases c INDEXED BY cases_by_run_test \
         WHERE q.project = ? AND q.auto = 1 AND t.test_id = q.test_id \
           AND c.run_key = (SELECT run_key FROM run_keys WHERE run_id = ?) AND c.test_key = t.test_key \
           AND c.outcome IN (0, 1, 3) \
         GROUP BY q.test_id",
    )
    .bind(project)
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    for (test_id, count, worst, retried) in rows {
        let next = next_clean_runs(count, RunVerdict::of(worst, retried != 0));
        if next != count {
            sqlx::query("UPDATE quarantine SET clean_runs = ? WHERE project = ? AND test_id = ?")
                .bind(next)
                .bind(project)
                .bind(&test_id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Notes that `test_id` of `project` was just released (`by_person`: by a
/// person's `DELETE /quarantine`): evidence from runs completed until now
/// never quarantines it again by itself, and after a person's release no
/// evidence does for the automatic period ([`decide`]). Part of the
/// release's transaction.
pub(crate) async fn note_release(
    conn: &mut SqliteConnection,
    project: &str,
    test_id: &str,
    by_person: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO quarantine_released (project, test_id, after_seq, by_person, released_at) \
         SELECT ?1, ?2, value, ?3, ?4 FROM rollup_state WHERE name = 'seq' \
         ON CONFLICT (project, test_id) DO UPDATE SET after_seq = excluded.after_seq, \
         by_person = excluded.by_person, released_at = excluded.released_at",
    )
    .bind(project)
    .bind(test_id)
    .bind(by_person)
    .bind(to_millis(now))
    .execute(conn)
    .await?;
    Ok(())
}
