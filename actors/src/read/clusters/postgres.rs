//! [`super`] on PostgreSQL. Not ported yet: each function answers that
//! it is not available on PostgreSQL, naming itself.

use sqlx::PgPool;

use super::*;

/// [`super::clusters`] on PostgreSQL.
pub(crate) async fn clusters(
    _pool: &PgPool,
    _w: &Window,
    _limit: usize,
) -> Result<ClusterReport, sqlx::Error> {
    Err(crate::read::not_on_postgres("clusters::clusters"))
}
