//! [`super`] on PostgreSQL. Not ported yet: each function answers that
//! it is not available on PostgreSQL, naming itself.

use sqlx::PgPool;

use super::*;

/// [`super::pending`] on PostgreSQL.
pub(crate) async fn pending(
    _pool: &PgPool,
    _target: &str,
    _limit: u32,
) -> Result<Vec<Pending>, sqlx::Error> {
    Err(crate::read::not_on_postgres("webhooks::pending"))
}

/// [`super::backlog`] on PostgreSQL.
pub(crate) async fn backlog(_pool: &PgPool, _targets: &[String]) -> Result<Backlog, sqlx::Error> {
    Err(crate::read::not_on_postgres("webhooks::backlog"))
}
