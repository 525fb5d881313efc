//! [`super`]'s reads on PostgreSQL: the same questions in the same SQL
//! but for placeholders; [`super::decide`] holds the rules for both.

use sqlx::PgPool;

/// [`super::run_of`] on PostgreSQL.
pub(crate) async fn run_of(
    pool: &PgPool,
    run_id: &str,
) -> Result<Option<(String, Option<i64>)>, sqlx::Error> {
    sqlx::query_as("SELECT project, seq FROM runs WHERE run_id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await
}

/// [`super::releasable`] on PostgreSQL.
pub(crate) async fn releasable(
    pool: &PgPool,
    project: &str,
    clean_runs: u32,
) -> Result<Vec<(String,)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT test_id FROM quarantine WHERE project = $1 AND auto = 1 \
         AND clean_runs >= $2 ORDER BY test_id",
    )
    .bind(project)
    .bind(i64::from(clean_runs))
    .fetch_all(pool)
    .await
}

/// [`super::candidates`] on PostgreSQL.
pub(crate) async fn candidates(
    pool: &PgPool,
    seq: i64,
    project: &str,
    now: i64,
    held_since: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.test_id, COALESCE(r.after_seq, -1) FROM verdicts v \
         JOIN tracked_tests t ON t.key = v.key \
         LEFT JOIN quarantine_released r ON r.project = t.project AND r.test_id = t.test_id \
         WHERE v.seq = $1 AND t.project = $2 AND NOT EXISTS (SELECT 1 FROM quarantine q \
           WHERE q.project = t.project AND q.test_id = t.test_id \
             AND (q.expires_at IS NULL OR q.expires_at > $3)) \
           AND NOT (COALESCE(r.by_person, 0) = 1 AND COALESCE(r.released_at, 0) > $4) \
         ORDER BY t.test_id",
    )
    .bind(seq)
    .bind(project)
    .bind(now)
    .bind(held_since)
    .fetch_all(pool)
    .await
}
