//! The current owners of tests, written on SQLite with each run that names
//! them (see [`crate::owners`] for the column's form and the filter).

use sqlx::SqliteConnection;

/// Replaces the current owners of every test run `run_id` (of `project`,
/// just completed) carries with the owners it named.
pub(crate) async fn record_owners(
    conn: &mut SqliteConnection,
    run_id: &str,
    project: &str,
) -> Result<(), sqlx::Error> {
    let (known, named): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM test_owners WHERE project = ?1), \
                EXISTS (SELECT 1 FROM test_cases WHERE run_id = ?2 AND owners IS NOT NULL)",
    )
    .bind(project)
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await?;
    if known {
        sqlx::query(
            "DELETE FROM test_owners WHERE project = ?1 \
             AND test_id IN (SELECT test_id FROM test_cases WHERE run_id = ?2)",
        )
        .bind(project)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    }
    if named {
        sqlx::query(
            "INSERT OR IGNORE INTO test_owners (project, test_id, owner) \
             SELECT ?1, c.test_id, j.value FROM test_cases c, json_each(c.owners) j \
             WHERE c.run_id = ?2 AND c.owners IS NOT NULL AND j.type = 'text'",
        )
        .bind(project)
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
