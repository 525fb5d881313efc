//! The webhook outbox's reads: a target's pending deliveries and the
//! backlog counts `/health` shows (see [`crate::webhooks`]). SQLite's SQL
//! here, PostgreSQL's in `webhooks/postgres.rs`; the rows become answers
//! by the same Rust on both.

mod postgres;

use crate::read::ReadPool;
use sqlx::SqlitePool;

use crate::model::from_millis;
use crate::webhooks::{Backlog, EventType, Pending, StoredEvent};

type PendingRow = (
    i64,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
    i64,
);

/// `target`'s oldest `limit` pending deliveries, in event order.
pub async fn pending(
    pool: &ReadPool,
    target: &str,
    limit: u32,
) -> Result<Vec<Pending>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => pending_sqlite(p, target, limit).await,
        ReadPool::Postgres(p) => postgres::pending(p, target, limit).await,
    }
}

/// [`pending`] on SQLite.
pub(crate) async fn pending_sqlite(
    pool: &SqlitePool,
    target: &str,
    limit: u32,
) -> Result<Vec<Pending>, sqlx::Error> {
    let rows: Vec<PendingRow> = sqlx::query_as(
        "SELECT e.seq, e.id, e.type, e.occurred_at, e.project, e.branch, e.run_id, e.test_id, \
                e.data, d.attempts, d.created_at, d.next_attempt_at \
         FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq \
         WHERE d.state = 0 AND d.target = ? ORDER BY d.event_seq LIMIT ?",
    )
    .bind(target)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(pending_of).collect()
}

/// A pending delivery as served; an error names an event whose stored
/// type or data does not decode.
fn pending_of(r: PendingRow) -> Result<Pending, sqlx::Error> {
    let kind = EventType::parse(&r.2).ok_or_else(|| {
        sqlx::Error::Decode(format!("webhook event {}: unknown type {:?}", r.1, r.2).into())
    })?;
    let data = serde_json::from_str(&r.8)
        .map_err(|e| sqlx::Error::Decode(format!("webhook event {}: {e}", r.1).into()))?;
    Ok(Pending {
        event: StoredEvent {
            seq: r.0,
            id: r.1,
            kind,
            occurred_at: from_millis(r.3),
            project: r.4,
            branch: r.5,
            run_id: r.6,
            test_id: r.7,
            data,
        },
        attempts: u32::try_from(r.9).unwrap_or(u32::MAX),
        created_at: from_millis(r.10),
        next_attempt_at: from_millis(r.11),
    })
}

/// Counts of the outbox rows of `targets`.
pub async fn backlog(pool: &ReadPool, targets: &[String]) -> Result<Backlog, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => backlog_sqlite(p, targets).await,
        ReadPool::Postgres(p) => postgres::backlog(p, targets).await,
    }
}

/// [`backlog`] on SQLite.
pub(crate) async fn backlog_sqlite(
    pool: &SqlitePool,
    targets: &[String],
) -> Result<Backlog, sqlx::Error> {
    let mut b = Backlog::default();
    for t in targets {
        let (pending, dead, oldest): (i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM webhook_deliveries WHERE state = 0 AND target = ?1), \
                    (SELECT COUNT(*) FROM webhook_deliveries WHERE state = 2 AND target = ?1), \
                    (SELECT MIN(created_at) FROM webhook_deliveries WHERE state = 0 AND target = ?1)",
        )
        .bind(t)
        .fetch_one(pool)
        .await?;
        add_target(&mut b, pending, dead, oldest);
    }
    Ok(b)
}

/// Adds one target's counts (pending, dead, oldest pending creation) to
/// `b`.
fn add_target(b: &mut Backlog, pending: i64, dead: i64, oldest: Option<i64>) {
    b.pending += pending.max(0) as u64;
    b.dead += dead.max(0) as u64;
    b.oldest_pending = match (b.oldest_pending, oldest.map(from_millis)) {
        (Some(a), Some(o)) => Some(a.min(o)),
        (a, o) => a.or(o),
    };
}
