//! [`super`] on PostgreSQL. Not ported yet: each function answers that
//! it is not available on PostgreSQL, naming itself.

use sqlx::PgPool;

use super::*;

/// [`super::test_history`] on PostgreSQL.
pub(crate) async fn test_history(
    _pool: &PgPool,
    _test_id: &str,
    _project: Option<&str>,
    _branch: Option<&str>,
    _limit: u32,
) -> Result<TestHistory, sqlx::Error> {
    Err(crate::read::not_on_postgres("history::test_history"))
}

/// [`super::slow_tests`] on PostgreSQL.
pub(crate) async fn slow_tests(
    _pool: &PgPool,
    _w: &Window,
    _rule: SlowRule,
    _limit: usize,
) -> Result<SlowReport, sqlx::Error> {
    Err(crate::read::not_on_postgres("history::slow_tests"))
}
