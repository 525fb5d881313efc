//! [`super`] on PostgreSQL: the same rows as SQLite's, decoded and added up
//! by the same Rust.

use sqlx::PgPool;

use super::*;

/// [`super::pending`] on PostgreSQL.
pub(crate) async fn pending(
    pool: &PgPool,
    target: &str,
    limit: u32,
) -> Result<Vec<Pending>, sqlx::Error> {
    let rows: Vec<PendingRow> = sqlx::query_as(
        "SELECT e.seq, e.id, e.type, e.occurred_at, e.project, e.branch, e.run_id, e.test_id, \
                e.data, d.attempts, d.created_at, d.next_attempt_at \
         FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq \
         WHERE d.state = 0 AND d.target = $1 ORDER BY d.event_seq LIMIT $2",
    )
    .bind(target)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(pending_of).collect()
}

/// [`super::backlog`] on PostgreSQL.
pub(crate) async fn backlog(pool: &PgPool, targets: &[String]) -> Result<Backlog, sqlx::Error> {
    let mut b = Backlog::default();
    for t in targets {
        let (pending, dead, oldest): (i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM webhook_deliveries WHERE state = 0 AND target = $1), \
                    (SELECT COUNT(*) FROM webhook_deliveries WHERE state = 2 AND target = $1), \
                    (SELECT MIN(created_at) FROM webhook_deliveries WHERE state = 0 AND target = $1)",
        )
        .bind(t)
        .fetch_one(pool)
        .await?;
        add_target(&mut b, pending, dead, oldest);
    }
    Ok(b)
}
