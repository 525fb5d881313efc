//! [`super`] on PostgreSQL. Not ported yet: each function answers that
//! it is not available on PostgreSQL, naming itself.

use sqlx::PgPool;

use super::*;

/// [`super::trend`] on PostgreSQL.
pub(crate) async fn trend(
    _pool: &PgPool,
    _project: Option<&str>,
    _branch: Option<&str>,
    _limit: u32,
) -> Result<Vec<TrendPoint>, sqlx::Error> {
    Err(crate::read::not_on_postgres("rollups::trend"))
}

/// [`super::stored_workers`] on PostgreSQL.
pub(crate) async fn stored_workers(
    _pool: &PgPool,
    _limit: usize,
) -> Result<Vec<StoredWorker>, sqlx::Error> {
    Err(crate::read::not_on_postgres("rollups::stored_workers"))
}

/// [`super::failure_stats`] on PostgreSQL.
pub(crate) async fn failure_stats(
    _pool: &PgPool,
    _project: Option<&str>,
    _since: Option<DateTime<Utc>>,
    _tests: &TestSet,
    _limit: u32,
) -> Result<Vec<FailureStat>, sqlx::Error> {
    Err(crate::read::not_on_postgres("rollups::failure_stats"))
}
