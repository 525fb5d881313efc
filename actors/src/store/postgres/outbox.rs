//! The webhook outbox's writes on PostgreSQL: the events a write produces,
//! inserted in the transaction that stores what they describe (see
//! [`crate::webhooks`]). Which events, with what data, and the bound per
//! target are the rules of `store::sqlite::outbox` (`run_asks`,
//! `run_events`, `quarantined_event`, `released_event`,
//! `attempt_columns`, `dropped_error`); only the SQL is here.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgPool};

use super::{pg_opt, pg_text};
use crate::model::{RunRecord, to_millis};
use crate::quarantine::Entry;
use crate::store::rules::{
    NewEvent, attempt_columns, dropped_error, quarantined_event, released_event, run_asks,
    run_events, warn_dropped, warn_unconfigured,
};
use crate::webhooks::{
    Attempt, LOOKBACK_RUNS, MAX_FAILING_CONSIDERED, MAX_TEST_EVENTS_PER_RUN, Routes,
};

/// Stores `events` (in order) with one delivery per target that wants each,
/// then applies the per-target bound once.
async fn store_events(
    conn: &mut PgConnection,
    routes: &Routes,
    events: Vec<NewEvent>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let at = to_millis(now);
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    for ev in events {
        let targets: Vec<&str> = routes.wanting(ev.kind).collect();
        if targets.is_empty() {
            continue;
        }
        let (seq,): (i64,) = sqlx::query_as(
            "INSERT INTO webhook_events (id, type, occurred_at, project, branch, run_id, \
               test_id, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(ev.kind.as_str())
        .bind(at)
        .bind(pg_text(&ev.project))
        .bind(pg_opt(&ev.branch))
        .bind(pg_opt(&ev.run_id))
        .bind(pg_opt(&ev.test_id))
        // JSON escapes U+0000: no pg_text needed.
        .bind(ev.data.to_string())
        .fetch_one(&mut *conn)
        .await?;
        for t in targets {
            sqlx::query(
                "INSERT INTO webhook_deliveries (target, event_seq, created_at, next_attempt_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(pg_text(t))
            .bind(seq)
            .bind(at)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            touched.insert(t);
        }
    }
    let max = routes.max_pending();
    for target in touched {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 0 AND target = $1",
        )
        .bind(pg_text(target))
        .fetch_one(&mut *conn)
        .await?;
        let over = n.saturating_sub(max);
        if over > 0 {
            sqlx::query(
                "UPDATE webhook_deliveries SET state = 2, done_at = $1, last_error = $2 \
                 WHERE target = $3 AND event_seq IN (SELECT event_seq FROM webhook_deliveries \
                 WHERE state = 0 AND target = $3 ORDER BY event_seq LIMIT $4)",
            )
            .bind(at)
            .bind(dropped_error(max))
            .bind(pg_text(target))
            .bind(over)
            .execute(&mut *conn)
            .await?;
            warn_dropped(target, over, max);
        }
    }
    Ok(())
}

/// The events of run `run` (just made visible with completion order
/// `seq`, its texts as stored), stored in the caller's transaction.
pub(super) async fn on_run_completed(
    conn: &mut PgConnection,
    routes: &Routes,
    run: &RunRecord,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let Some(asks) = run_asks(routes, run) else {
        return Ok(());
    };
    let mut newly_failing: Vec<(String, Option<String>)> = Vec::new();
    if asks.newly_failing {
        newly_failing = sqlx::query_as(
            "SELECT f.test_id, \
               (SELECT (SELECT substr(body, 1, 300) FROM texts WHERE text_key = c.message_key) \
                 FROM cases c \
                 WHERE c.run_key = (SELECT run_key FROM run_keys WHERE run_id = $1) \
                 AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = f.test_id) \
                 AND c.outcome IN (0, 1) ORDER BY c.outcome, c.chunk, c.idx LIMIT 1) \
             FROM (SELECT DISTINCT test_id FROM test_cases WHERE run_id = $1 AND outcome IN (0, 1) \
                   ORDER BY test_id LIMIT $5) f \
             WHERE (SELECT MIN(c.outcome) FROM (SELECT run_id, seq FROM runs \
                        WHERE project = $2 AND branch = $3 AND seq < $4 \
                        ORDER BY seq DESC LIMIT $6) p \
                    JOIN run_keys k ON k.run_id = p.run_id \
                    JOIN cases c ON c.run_key = k.run_key \
                    WHERE c.test_key IN (SELECT test_key FROM tests WHERE test_id = f.test_id) \
                    GROUP BY p.seq ORDER BY p.seq DESC LIMIT 1) = 3 \
             ORDER BY f.test_id",
        )
        .bind(&run.run_id)
        .bind(&run.project)
        .bind(&run.branch)
        .bind(seq)
        .bind(MAX_FAILING_CONSIDERED)
        .bind(LOOKBACK_RUNS)
        .fetch_all(&mut *conn)
        .await?;
    }
    let mut newly_flaky: Vec<String> = Vec::new();
    if asks.newly_flaky {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT t.test_id FROM run_keys k \
             JOIN cases c ON c.run_key = k.run_key AND c.flaky = 1 \
             JOIN tests t ON t.test_key = c.test_key \
             WHERE k.run_id = $1 \
             GROUP BY t.test_id HAVING MIN(c.outcome) > 1 \
             AND NOT EXISTS (SELECT 1 FROM (SELECT run_id FROM runs \
                   WHERE project = $2 AND branch = $3 AND seq < $4 ORDER BY seq DESC LIMIT $5) p \
                 JOIN run_keys pk ON pk.run_id = p.run_id \
                 JOIN cases r ON r.run_key = pk.run_key AND r.flaky = 1 \
                 JOIN tests rt ON rt.test_key = r.test_key \
                 WHERE rt.test_id = t.test_id) \
             ORDER BY t.test_id LIMIT $6",
        )
        .bind(&run.run_id)
        .bind(&run.project)
        .bind(&run.branch)
        .bind(seq)
        .bind(LOOKBACK_RUNS)
        .bind(MAX_TEST_EVENTS_PER_RUN as i64)
        .fetch_all(&mut *conn)
        .await?;
        newly_flaky = rows.into_iter().map(|(t,)| t).collect();
    }
    let events = run_events(run, newly_failing, newly_flaky);
    store_events(conn, routes, events, Utc::now()).await
}

/// `test.quarantined` for `entry`, when it was not active at `now` before
/// this change (checked by the caller before writing).
pub(super) async fn on_quarantined(
    conn: &mut PgConnection,
    routes: &Routes,
    project: &str,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    store_events(conn, routes, vec![quarantined_event(project, entry)], now).await
}

/// `test.released` for a released entry that was active.
pub(super) async fn on_released(
    conn: &mut PgConnection,
    routes: &Routes,
    project: &str,
    test_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let ev = released_event(project, test_id, reason);
    store_events(conn, routes, vec![ev], now).await
}

/// [`crate::store::Store::record_attempt`].
pub(super) async fn record_attempt(
    pool: &PgPool,
    target: &str,
    event_seq: i64,
    outcome: &Attempt,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (state, next, error) = attempt_columns(outcome);
    sqlx::query(
        "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, \
         last_error = $2, next_attempt_at = COALESCE($3, next_attempt_at), \
         done_at = CASE WHEN $1 = 0 THEN NULL ELSE $4 END \
         WHERE target = $5 AND event_seq = $6 AND state = 0",
    )
    .bind(state)
    .bind(error.map(|e| pg_text(e)))
    .bind(next)
    .bind(to_millis(at))
    .bind(pg_text(target))
    .bind(event_seq)
    .execute(pool)
    .await?;
    Ok(())
}

/// [`crate::store::Store::prune_outbox`].
pub(super) async fn prune_outbox(
    pool: &PgPool,
    delivered_before: DateTime<Utc>,
    dead_before: DateTime<Utc>,
    targets: &[String],
) -> Result<u64, sqlx::Error> {
    let mut tx = super::begin(pool).await?;
    let mut gone = 0;
    for (state, before) in [(1i64, delivered_before), (2, dead_before)] {
        gone += sqlx::query("DELETE FROM webhook_deliveries WHERE state = $1 AND done_at < $2")
            .bind(state)
            .bind(to_millis(before))
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    let known: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT target FROM webhook_deliveries ORDER BY target")
            .fetch_all(&mut *tx)
            .await?;
    for (t,) in known {
        if !targets.iter().any(|c| pg_text(c) == t.as_str()) {
            let n = sqlx::query("DELETE FROM webhook_deliveries WHERE target = $1")
                .bind(&t)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            warn_unconfigured(&t, n);
            gone += n;
        }
    }
    sqlx::query(
        "DELETE FROM webhook_events e WHERE NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = e.seq)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(gone)
}
