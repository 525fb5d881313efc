//! [`super`] on PostgreSQL: the same rows in the same order as SQLite's
//! ([`crate::store::sqlite::quarantine`]'s `active_in`).

use sqlx::PgPool;

use super::*;
use crate::model::{from_millis, to_millis};

/// [`super::active`] on PostgreSQL.
pub(crate) async fn active(
    pool: &PgPool,
    project: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Entry>, sqlx::Error> {
    let rows: Vec<(String, String, i64, Option<i64>, bool)> = sqlx::query_as(
        "SELECT test_id, reason, since, expires_at, auto <> 0 FROM quarantine \
         WHERE project = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY test_id",
    )
    .bind(project)
    .bind(to_millis(now))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(test_id, reason, since, expires_at, auto)| Entry {
            test_id,
            reason,
            since: from_millis(since),
            expires_at: expires_at.map(from_millis),
            auto,
        })
        .collect())
}

/// [`super::projects`] on PostgreSQL.
pub(crate) async fn projects(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT project FROM quarantine ORDER BY project")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(p,)| p).collect())
}
