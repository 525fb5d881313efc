//! Reads of the quarantine list (see [`crate::quarantine`]): SQLite's
//! here (the store's own query, which its writes use too), PostgreSQL's
//! in `quarantine/postgres.rs`.

mod postgres;

use crate::read::ReadPool;
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;

use crate::quarantine::Entry;

/// `project`'s entries active at `now`, by test id.
pub async fn active(
    pool: &ReadPool,
    project: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Entry>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => active_sqlite(p, project, now).await,
        ReadPool::Postgres(p) => postgres::active(p, project, now).await,
    }
}

/// [`active`] on SQLite.
pub(crate) async fn active_sqlite(
    pool: &SqlitePool,
    project: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Entry>, sqlx::Error> {
    crate::store::sqlite::quarantine::active_in(pool, project, now).await
}

/// Every project with a row (active or not), for re-mirroring at start;
/// by name.
pub async fn projects(pool: &ReadPool) -> Result<Vec<String>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => projects_sqlite(p).await,
        ReadPool::Postgres(p) => postgres::projects(p).await,
    }
}

/// [`projects`] on SQLite.
pub(crate) async fn projects_sqlite(pool: &SqlitePool) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT project FROM quarantine ORDER BY project")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(p,)| p).collect())
}
