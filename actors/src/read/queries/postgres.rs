//! [`super`] on PostgreSQL. Not ported yet: each function answers that
//! it is not available on PostgreSQL, naming itself.

use sqlx::PgPool;

use super::*;

/// [`super::list_runs`] on PostgreSQL.
pub(crate) async fn list_runs(
    _pool: &PgPool,
    _f: &RunFilter,
) -> Result<Vec<RunRecord>, sqlx::Error> {
    Err(crate::read::not_on_postgres("queries::list_runs"))
}

/// [`super::get_run`] on PostgreSQL.
pub(crate) async fn get_run(
    _pool: &PgPool,
    _run_id: &str,
) -> Result<Option<RunRecord>, sqlx::Error> {
    Err(crate::read::not_on_postgres("queries::get_run"))
}

/// [`super::run_cases`] on PostgreSQL.
pub(crate) async fn run_cases(
    _pool: &PgPool,
    _run_id: &str,
    _outcomes: &[Outcome],
    _order: CaseOrder,
    _after: Option<CasePosition>,
    _limit: u32,
) -> Result<CasePage, sqlx::Error> {
    Err(crate::read::not_on_postgres("queries::run_cases"))
}

/// [`super::list_rejected`] on PostgreSQL.
pub(crate) async fn list_rejected(
    _pool: &PgPool,
    _limit: u32,
) -> Result<Vec<Rejection>, sqlx::Error> {
    Err(crate::read::not_on_postgres("queries::list_rejected"))
}

/// [`super::stored_digest`] on PostgreSQL.
pub(crate) async fn stored_digest(
    _pool: &PgPool,
    _run_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    Err(crate::read::not_on_postgres("queries::stored_digest"))
}

/// [`super::failure_stats_where`] on PostgreSQL.
pub(crate) async fn failure_stats_where(
    _pool: &PgPool,
    _f: &FailureFilter,
    _limit: u32,
) -> Result<Vec<crate::read::rollups::FailureStat>, sqlx::Error> {
    Err(crate::read::not_on_postgres("queries::failure_stats_where"))
}

/// [`super::ping`] on PostgreSQL.
pub(crate) async fn ping(_pool: &PgPool) -> Result<(), sqlx::Error> {
    Err(crate::read::not_on_postgres("queries::ping"))
}
