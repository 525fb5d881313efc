//! [`super`] on PostgreSQL. Not ported yet: each function answers that
//! it is not available on PostgreSQL, naming itself.

use sqlx::PgPool;

use super::*;

/// [`super::decide`] on PostgreSQL.
pub(crate) async fn decide(
    _pool: &PgPool,
    _run_id: &str,
    _settings: Settings,
    _now: DateTime<Utc>,
) -> Result<Option<Decision>, sqlx::Error> {
    Err(crate::read::not_on_postgres("auto_quarantine::decide"))
}
