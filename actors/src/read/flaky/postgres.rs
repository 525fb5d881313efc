//! [`super`] on PostgreSQL. Not ported yet: each function answers that
//! it is not available on PostgreSQL, naming itself.

use sqlx::PgPool;

use super::*;

/// [`super::find_flaky`] on PostgreSQL.
pub(crate) async fn find_flaky(
    _pool: &PgPool,
    _w: &Window,
    _rule: FlipRule,
    _limit: usize,
) -> Result<FlakyReport, sqlx::Error> {
    Err(crate::read::not_on_postgres("flaky::find_flaky"))
}
