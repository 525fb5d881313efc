//! [`super`] on PostgreSQL. Not ported yet: each function answers that
//! it is not available on PostgreSQL, naming itself.

use sqlx::PgPool;

use super::*;

/// [`super::load_tests`] on PostgreSQL.
pub(crate) async fn load_tests(
    _pool: &PgPool,
    _run_id: &str,
) -> Result<BTreeMap<String, TestResult>, sqlx::Error> {
    Err(crate::read::not_on_postgres("compare::load_tests"))
}
