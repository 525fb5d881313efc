//! [`super`] on PostgreSQL. Not ported yet: each function answers that
//! it is not available on PostgreSQL, naming itself.

use sqlx::PgPool;

use super::*;

/// [`super::active`] on PostgreSQL.
pub(crate) async fn active(
    _pool: &PgPool,
    _project: &str,
    _now: DateTime<Utc>,
) -> Result<Vec<Entry>, sqlx::Error> {
    Err(crate::read::not_on_postgres("quarantine::active"))
}

/// [`super::projects`] on PostgreSQL.
pub(crate) async fn projects(_pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    Err(crate::read::not_on_postgres("quarantine::projects"))
}
