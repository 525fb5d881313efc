//! The automatic quarantine's counts on PostgreSQL, kept with the data as
//! `store::sqlite::clean_runs` keeps them: each automatic entry's clean
//! runs in a row, updated in the transaction that completes a run (the
//! rule is that module's `RunVerdict::of` and `next_clean_runs`), and the
//! completion order at a release.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;

use crate::model::to_millis;
use crate::store::rules::{RunVerdict, next_clean_runs};

/// Updates the clean-run counts of `project`'s automatic entries for run
/// `run_id`, just made visible: part of the completing transaction.
pub(super) async fn count_clean_runs(
    conn: &mut PgConnection,
    run_id: &str,
    project: &str,
) -> Result<(), sqlx::Error> {
    // test_id, count, worst outcome, any retried case.
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT q.test_id, q.clean_runs, MIN(c.outcome), MAX(c.flaky) FROM quarantine q \
         JOIN tests t ON t.test_id = q.test_id \
         JOIN cases c ON c.test_key = t.test_key \
           AND c.run_key = (SELECT run_key FROM run_keys WHERE run_id = $2) \
         WHERE q.project = $1 AND q.auto = 1 AND c.outcome IN (0, 1, 3) \
         GROUP BY q.test_id, q.clean_runs ORDER BY q.test_id",
    )
    .bind(project)
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    for (test_id, count, worst, retried) in rows {
        let next = next_clean_runs(count, RunVerdict::of(worst, retried != 0));
        if next != count {
            sqlx::query(
                "UPDATE quarantine SET clean_runs = $1 WHERE project = $2 AND test_id = $3",
            )
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
/// person): the completion order now, so earlier evidence never
/// quarantines it again by itself. Part of the release's transaction.
pub(super) async fn note_release(
    conn: &mut PgConnection,
    project: &str,
    test_id: &str,
    by_person: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO quarantine_released (project, test_id, after_seq, by_person, released_at) \
         SELECT $1, $2, value, $3, $4 FROM rollup_state WHERE name = 'seq' \
         ON CONFLICT (project, test_id) DO UPDATE SET after_seq = excluded.after_seq, \
         by_person = excluded.by_person, released_at = excluded.released_at",
    )
    .bind(project)
    .bind(test_id)
    .bind(i64::from(by_person))
    .bind(to_millis(now))
    .execute(conn)
    .await?;
    Ok(())
}
