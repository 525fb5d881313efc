//! Webhook events: which events a write produces, and the outbox they wait
//! in until the master has delivered them (migration 0011).
//!
//! # Why an outbox written with the data
//! Events are computed and inserted **inside the writer's transaction that
//! stores what they describe**: the one that makes a run visible
//! ([`on_run_completed`], called from the writer's completion of a run) and
//! the ones that change the quarantine list ([`on_quarantined`],
//! [`on_released`], called from the `Quarantine`/`Release` handlers, so a
//! quarantine made by a person or by the flaky detector produces the same
//! event). A crash can therefore never store a run without its events, nor
//! an event for a run that was rolled back. Delivery is the master's
//! business (`ptp_api::webhooks`, over HTTP); this crate only stores,
//! hands out ([`pending`]) and records attempts ([`RecordAttempt`],
//! [`PruneOutbox`]), through the writer like every other write.
//!
//! # Events
//! Only runs on a default branch ([`Routes::default_branches`]) produce
//! events; the rest are computed for the tests of the run being stored:
//! - `run.failed`: the run has failed or errored tests, or a status other
//!   than `passed`/`no_tests` (crashed, timed out, interrupted...).
//! - `test.newly_failing`: a test failed or errored in the run and passed
//!   in the newest earlier run of the same project and branch that has a
//!   result for it, among the [`LOOKBACK_RUNS`] runs before it.
//! - `test.newly_flaky`: the flaky verdict of `crate::flaky` is judged
//!   lazily on read, so this uses the evidence written with the run: a test
//!   *passed on retry* in the run (failed attempts, then a pass) and did not
//!   in any of the [`LOOKBACK_RUNS`] runs of the project and branch before.
//! - `test.quarantined`: a test became quarantined (it was not, or its
//!   entry had expired); re-quarantining an active test sends nothing.
//! - `test.released`: an active entry was released. An entry that expires
//!   by itself sends nothing (expiry is not a write).
//!
//! Bounds: at most [`MAX_TEST_EVENTS_PER_RUN`] `test.newly_failing` and as
//! many `test.newly_flaky` events per run, one event per test (by test id);
//! `run.failed` carries the total newly failing count, so a receiver can
//! tell when the list was cut. At most [`MAX_FAILING_CONSIDERED`] failing
//! tests of a run are examined.
//!
//! # Outbox
//! One `webhook_events` row per event (with a UUIDv7 `id`, the receivers'
//! dedupe key, stable across retries), and one `webhook_deliveries` row per
//! (target, event) for each configured target whose filter wants it, so a
//! receiver that is down delays nobody else. Nothing is stored when no
//! target wants an event. A target delivers its pending rows in event order
//! ([`pending`]). Per target at most [`Routes::max_pending`] rows wait:
//! beyond, the oldest pending rows are marked dead with `last_error`
//! "dropped: ..." and a warning is logged. Dead rows (given up or dropped)
//! stay visible (counted by [`backlog`]) until [`PruneOutbox`] removes them.
//!
//! Several masters on one store would each deliver every row: delivery
//! would then need a lease per target (not done: one master per store).

use std::collections::BTreeSet;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{SqliteConnection, SqlitePool};

use crate::model::{RunRecord, from_millis, to_millis};
use crate::quarantine::Entry;
use crate::version::Changed;
use crate::writer::{StoreError, Writer};

/// Most `test.newly_failing` (and, separately, `test.newly_flaky`) events
/// one run produces.
pub const MAX_TEST_EVENTS_PER_RUN: usize = 100;

/// Runs of the same project and branch looked back at for "passed before"
/// and "retried before".
pub const LOOKBACK_RUNS: i64 = 20;

/// Most failing tests of one run examined for `test.newly_failing`.
pub const MAX_FAILING_CONSIDERED: i64 = 10_000;

/// Default bound on a target's pending deliveries.
pub const DEFAULT_MAX_PENDING: u32 = 10_000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// `run.failed`.
    RunFailed,
    /// `test.newly_failing`.
    TestNewlyFailing,
    /// `test.newly_flaky`.
    TestNewlyFlaky,
    /// `test.quarantined`.
    TestQuarantined,
    /// `test.released`.
    TestReleased,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 5] = [
        EventType::RunFailed,
        EventType::TestNewlyFailing,
        EventType::TestNewlyFlaky,
        EventType::TestQuarantined,
        EventType::TestReleased,
    ];

    /// The name receivers see (`type`, `X-Ptp-Event`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RunFailed => "run.failed",
            EventType::TestNewlyFailing => "test.newly_failing",
            EventType::TestNewlyFlaky => "test.newly_flaky",
            EventType::TestQuarantined => "test.quarantined",
            EventType::TestReleased => "test.released",
        }
    }

    /// Back from the name.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One delivery target as the store knows it: an opaque key (the master
/// derives it from the URL) and the events it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Stable key of the target.
    pub target: String,
    /// Event types it receives.
    pub events: Vec<EventType>,
}

/// Where events go; empty (the default) stores no events at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Branches whose runs produce events (`main`, `master`...).
    pub default_branches: Vec<String>,
    /// The targets.
    pub targets: Vec<Route>,
    /// Most pending deliveries per target (0: [`DEFAULT_MAX_PENDING`]).
    pub max_pending: u32,
}

impl Routes {
    fn wanting(&self, kind: EventType) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .filter(move |r| r.events.contains(&kind))
            .map(|r| r.target.as_str())
    }

    fn wants(&self, kind: EventType) -> bool {
        self.wanting(kind).next().is_some()
    }

    fn is_default_branch(&self, branch: Option<&str>) -> bool {
        branch.is_some_and(|b| self.default_branches.iter().any(|d| d == b))
    }

    fn max_pending(&self) -> i64 {
        i64::from(if self.max_pending == 0 {
            DEFAULT_MAX_PENDING
        } else {
            self.max_pending
        })
    }
}

/// An event about to be stored.
struct NewEvent {
    kind: EventType,
    project: String,
    branch: Option<String>,
    run_id: Option<String>,
    test_id: Option<String>,
    data: serde_json::Value,
}

/// Stores `events` (in order) with one delivery per target that wants each,
/// then applies the per-target bound once.
async fn store_events(
    conn: &mut SqliteConnection,
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
            "INSERT INTO webhook_events (id, type, occurred_at, project, branch, run_id, test_id, data) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(ev.kind.as_str())
        .bind(at)
        .bind(&ev.project)
        .bind(&ev.branch)
        .bind(&ev.run_id)
        .bind(&ev.test_id)
        .bind(ev.data.to_string())
        .fetch_one(&mut *conn)
        .await?;
        for t in targets {
            sqlx::query(
                "INSERT INTO webhook_deliveries (target, event_seq, created_at, next_attempt_at) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(t)
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
            "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 0 AND target = ?",
        )
        .bind(target)
        .fetch_one(&mut *conn)
        .await?;
        let over = n.saturating_sub(max);
        if over > 0 {
            sqlx::query(
                "UPDATE webhook_deliveries SET state = 2, done_at = ?1, last_error = ?2 \
                 WHERE target = ?3 AND event_seq IN (SELECT event_seq FROM webhook_deliveries \
                 WHERE state = 0 AND target = ?3 ORDER BY event_seq LIMIT ?4)",
            )
            .bind(at)
            .bind(format!(
                "dropped: more than {max} undelivered events for this target"
            ))
            .bind(target)
            .bind(over)
            .execute(&mut *conn)
            .await?;
            tracing::warn!(
                target,
                dropped = over,
                max,
                "webhook target has too many undelivered events: the oldest were dropped (marked dead)"
            );
        }
    }
    Ok(())
}

/// Whether a run counts as failed for `run.failed`.
fn run_failed(run: &RunRecord) -> bool {
    run.counts.failed + run.counts.error > 0
        || !matches!(run.status.as_str(), "passed" | "no_tests")
}

/// The events of run `run` (just made visible with completion order
/// `seq`), stored in the caller's transaction. See the module docs.
pub(crate) async fn on_run_completed(
    conn: &mut SqliteConnection,
    routes: &Routes,
    run: &RunRecord,
    seq: i64,
) -> Result<(), sqlx::Error> {
    if routes.targets.is_empty() || !routes.is_default_branch(run.branch.as_deref()) {
        return Ok(());
    }
    let failed = run_failed(run);
    let mut events = Vec::new();
    let mut newly_failing: Vec<(String, Option<String>)> = Vec::new();
    if failed && (routes.wants(EventType::RunFailed) || routes.wants(EventType::TestNewlyFailing)) {
        newly_failing = sqlx::query_as(
            "SELECT f.test_id, \
               (SELECT (SELECT substr(body, 1, 300) FROM texts WHERE text_key = c.message_key) \
                 FROM cases c INDEXED BY cases_by_run_test \
                 WHERE c.run_key = (SELECT run_key FROM run_keys WHERE run_id = ?1) \
                 AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = f.test_id) \
                 AND c.outcome IN (0, 1) ORDER BY c.outcome, c.chunk, c.idx LIMIT 1) \
             FROM (SELECT DISTINCT test_id FROM test_cases WHERE run_id = ?1 AND outcome IN (0, 1) \
                   ORDER BY test_id LIMIT ?5) f \
             WHERE (SELECT MIN(c.outcome) FROM (SELECT run_id, seq FROM runs \
                        WHERE project = ?2 AND branch = ?3 AND seq < ?4 \
                        ORDER BY seq DESC LIMIT ?6) p \
                    CROSS JOIN run_keys k CROSS JOIN cases c INDEXED BY cases_by_run_test \
                    WHERE k.run_id = p.run_id AND c.run_key = k.run_key \
                    AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = f.test_id) \
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
    let event = |kind, test_id: Option<String>, data| NewEvent {
        kind,
        project: run.project.clone(),
        branch: run.branch.clone(),
        run_id: Some(run.run_id.clone()),
        test_id,
        data,
    };
    if failed {
        let c = &run.counts;
        events.push(event(
            EventType::RunFailed,
            None,
            json!({
                "status": run.status,
                "commit": run.commit,
                "worker_id": run.worker_id,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "total": c.total,
                "passed": c.passed,
                "failed": c.failed,
                "error": c.error,
                "skipped": c.skipped,
                "newly_failing": newly_failing.len(),
                "newly_failing_listed": newly_failing.len().min(MAX_TEST_EVENTS_PER_RUN),
            }),
        ));
    }
    for (test_id, message) in newly_failing.into_iter().take(MAX_TEST_EVENTS_PER_RUN) {
        events.push(event(
            EventType::TestNewlyFailing,
            Some(test_id),
            json!({ "commit": run.commit, "message": message }),
        ));
    }
    if routes.wants(EventType::TestNewlyFlaky) {
        let flaky: Vec<(String,)> = sqlx::query_as(
            "SELECT t.test_id FROM run_keys k CROSS JOIN cases c INDEXED BY cases_retried \
             CROSS JOIN tests t \
             WHERE k.run_id = ?1 AND c.run_key = k.run_key AND c.flaky = 1 \
               AND t.test_key = c.test_key \
             GROUP BY t.test_id HAVING MIN(c.outcome) > 1 \
             AND NOT EXISTS (SELECT 1 FROM (SELECT run_id FROM runs \
                   WHERE project = ?2 AND branch = ?3 AND seq < ?4 ORDER BY seq DESC LIMIT ?5) p \
                 CROSS JOIN run_keys pk CROSS JOIN cases r INDEXED BY cases_retried \
                 CROSS JOIN tests rt \
                 WHERE pk.run_id = p.run_id AND r.run_key = pk.run_key AND r.flaky = 1 \
                   AND rt.test_key = r.test_key AND rt.test_id = t.test_id) \
             ORDER BY t.test_id LIMIT ?6",
        )
        .bind(&run.run_id)
        .bind(&run.project)
        .bind(&run.branch)
        .bind(seq)
        .bind(LOOKBACK_RUNS)
        .bind(MAX_TEST_EVENTS_PER_RUN as i64)
        .fetch_all(&mut *conn)
        .await?;
        for (test_id,) in flaky {
            events.push(event(
                EventType::TestNewlyFlaky,
                Some(test_id),
                json!({ "commit": run.commit, "reason": "passed_on_retry" }),
            ));
        }
    }
    store_events(conn, routes, events, Utc::now()).await
}

/// `test.quarantined` for `entry`, when it was not active at `now` before
/// this change (checked by the caller before writing).
pub(crate) async fn on_quarantined(
    conn: &mut SqliteConnection,
    routes: &Routes,
    project: &str,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let ev = NewEvent {
        kind: EventType::TestQuarantined,
        project: project.to_string(),
        branch: None,
        run_id: None,
        test_id: Some(entry.test_id.clone()),
        data: json!({
            "reason": entry.reason,
            "expires_at": entry.expires_at,
            "auto": entry.auto,
        }),
    };
    store_events(conn, routes, vec![ev], now).await
}

/// `test.released` for a released entry that was active.
pub(crate) async fn on_released(
    conn: &mut SqliteConnection,
    routes: &Routes,
    project: &str,
    test_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let ev = NewEvent {
        kind: EventType::TestReleased,
        project: project.to_string(),
        branch: None,
        run_id: None,
        test_id: Some(test_id.to_string()),
        data: json!({ "reason": reason }),
    };
    store_events(conn, routes, vec![ev], now).await
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Order of storing.
    pub seq: i64,
    /// Unique id (UUIDv7), the receivers' dedupe key.
    pub id: String,
    /// Its type.
    pub kind: EventType,
    /// When it was stored.
    pub occurred_at: DateTime<Utc>,
    /// Project.
    pub project: String,
    /// Branch (run events).
    pub branch: Option<String>,
    /// Run (run events).
    pub run_id: Option<String>,
    /// Test (test events).
    pub test_id: Option<String>,
    /// Type-specific fields (a JSON object).
    pub data: serde_json::Value,
}

/// A delivery waiting for its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The event.
    pub event: StoredEvent,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// Not to be tried before this.
    pub next_attempt_at: DateTime<Utc>,
}

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
    rows.into_iter()
        .map(|r| {
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
        })
        .collect()
}

/// The outbox's state for the given targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Deliveries waiting.
    pub pending: u64,
    /// Deliveries given up on or dropped, kept until pruned.
    pub dead: u64,
    /// When the oldest waiting delivery was queued.
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// Counts of the outbox rows of `targets`.
pub async fn backlog(pool: &SqlitePool, targets: &[String]) -> Result<Backlog, sqlx::Error> {
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
        b.pending += pending.max(0) as u64;
        b.dead += dead.max(0) as u64;
        b.oldest_pending = match (b.oldest_pending, oldest.map(from_millis)) {
            (Some(a), Some(o)) => Some(a.min(o)),
            (a, o) => a.or(o),
        };
    }
    Ok(b)
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; try again at `next_attempt_at`.
    Retry {
        /// What went wrong.
        error: String,
        /// When to try again.
        next_attempt_at: DateTime<Utc>,
    },
    /// It failed and the delivery is too old to retry: dead.
    GiveUp {
        /// What went wrong last.
        error: String,
    },
}

/// Records an attempt at delivering event `event_seq` to `target`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RecordAttempt {
    /// Target key.
    pub target: String,
    /// The event.
    pub event_seq: i64,
    /// How it ended.
    pub outcome: Attempt,
    /// When.
    pub at: DateTime<Utc>,
}

/// Deletes delivered rows done before `delivered_before`, dead rows done
/// before `dead_before`, every row of a target not in `targets` (no longer
/// configured), and events left without deliveries. Replies with the
/// deliveries deleted.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct PruneOutbox {
    /// Delivered rows older than this go.
    pub delivered_before: DateTime<Utc>,
    /// Dead rows older than this go.
    pub dead_before: DateTime<Utc>,
    /// The configured targets.
    pub targets: Vec<String>,
}

impl Handler<RecordAttempt> for Writer {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    fn handle(&mut self, msg: RecordAttempt, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            let (state, next, error) = match &msg.outcome {
                Attempt::Delivered => (1, None, None),
                Attempt::Retry {
                    error,
                    next_attempt_at,
                } => (0, Some(to_millis(*next_attempt_at)), Some(error)),
                Attempt::GiveUp { error } => (2, None, Some(error)),
            };
            sqlx::query(
                "UPDATE webhook_deliveries SET state = ?1, attempts = attempts + 1, \
                 last_error = ?2, next_attempt_at = COALESCE(?3, next_attempt_at), \
                 done_at = CASE WHEN ?1 = 0 THEN NULL ELSE ?4 END \
                 WHERE target = ?5 AND event_seq = ?6 AND state = 0",
            )
            .bind(state)
            .bind(error)
            .bind(next)
            .bind(to_millis(msg.at))
            .bind(&msg.target)
            .bind(msg.event_seq)
            .execute(&pool)
            .await?;
            Ok(((), Changed::default()))
        })))
    }
}

impl Handler<PruneOutbox> for Writer {
    type Result = AtomicResponse<Self, Result<u64, StoreError>>;

    fn handle(&mut self, msg: PruneOutbox, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            let mut tx = pool.begin().await?;
            let mut gone = 0;
            for (state, before) in [(1, msg.delivered_before), (2, msg.dead_before)] {
                gone +=
                    sqlx::query("DELETE FROM webhook_deliveries WHERE state = ? AND done_at < ?")
                        .bind(state)
                        .bind(to_millis(before))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
            }
            let known: Vec<(String,)> =
                sqlx::query_as("SELECT DISTINCT target FROM webhook_deliveries")
                    .fetch_all(&mut *tx)
                    .await?;
            for (t,) in known {
                if !msg.targets.contains(&t) {
                    let n = sqlx::query("DELETE FROM webhook_deliveries WHERE target = ?")
                        .bind(&t)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    tracing::warn!(
                        target = %t,
                        deliveries = n,
                        "webhook target no longer configured: its outbox rows were deleted"
                    );
                    gone += n;
                }
            }
            sqlx::query(
                "DELETE FROM webhook_events WHERE NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = webhook_events.seq)",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((gone, Changed::default()))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;
    use crate::testing::{case, run, store, t0};
    use crate::{ActorSystem, AggregatesConfig, DbOptions};

    /// Over the per-target bound, the oldest pending deliveries are marked
    /// dead ("dropped"), newest kept; a target that wants nothing of it
    /// gets no row; a passing run sends nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_outbox_keeps_at_most_max_pending_per_target() {
        let dir = tempfile::tempdir().expect("dir");
        let db = DbOptions::new(dir.path().join("w.db"));
        let routes = Routes {
            default_branches: vec!["main".into()],
            targets: vec![
                Route {
                    target: "t".into(),
                    events: vec![EventType::RunFailed],
                },
                Route {
                    target: "quarantine-only".into(),
                    events: vec![EventType::TestQuarantined],
                },
            ],
            max_pending: 2,
        };
        let actors = ActorSystem::start_with(db.clone(), AggregatesConfig::default(), routes)
            .await
            .expect("start");
        let start = t0();
        let mut runs = vec![run(
            "ok",
            "p",
            "w",
            start,
            vec![case("a", Outcome::Passed, None)],
        )];
        for i in 0..3 {
            let at = start + chrono::Duration::seconds(i + 1);
            let cases = vec![case("a", Outcome::Failed, Some("boom"))];
            runs.push(run(&format!("bad{i}"), "p", "w", at, cases));
        }
        store(&actors, runs).await;
        let pool = crate::db::open_reader(&db).await.expect("reader");
        let b = backlog(&pool, &["t".into()]).await.expect("backlog");
        assert_eq!((b.pending, b.dead), (2, 1));
        let head = pending(&pool, "t", 10).await.expect("pending");
        let runs: Vec<_> = head.iter().map(|p| p.event.run_id.clone()).collect();
        assert_eq!(runs, vec![Some("bad1".into()), Some("bad2".into())]);
        let none = backlog(&pool, &["quarantine-only".into()])
            .await
            .expect("backlog");
        assert_eq!((none.pending, none.dead), (0, 0));
        let (why,): (String,) =
            sqlx::query_as("SELECT last_error FROM webhook_deliveries WHERE state = 2")
                .fetch_one(&pool)
                .await
                .expect("dead row");
        assert!(why.starts_with("dropped"), "{why}");
        pool.close().await;
        actors.stop();
    }

    #[test]
    fn event_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("run.passed"), None);
    }
}
