//! Webhook events: which events a write produces, and the outbox they wait
//! in until the master has delivered them (migration 0011).
//!
//! # Why an outbox written with the data
//! Events are computed and inserted **inside the writer's transaction that
//! stores what they describe**: the one that makes a run visible
//! (`on_run_completed` in the store, called where it completes a run) and
//! the ones that change the quarantine list (`on_quarantined`,
//! `on_released`, called from the `Quarantine`/`Release` handlers, so a
//! quarantine made by a person or by the flaky detector produces the same
//! event). A crash can therefore never store a run without its events, nor
//! an event for a run that was rolled back. Delivery is the master's
//! business (`ptp_api::webhooks`, over HTTP); this crate only stores,
//! hands out (`pending`) and records attempts (`RecordAttempt`,
//! `PruneOutbox`), through the writer like every other write.
//!
//! # Events
//! Only runs on a default branch ([`Routes::default_branches`]) produce
//! events; the rest are computed for the tests of the run being stored:
//! - `run.failed`: the run has failed or errored tests, or a status other
//!   than `passed`/`no_tests` (crashed, timed out, interrupted...).
//! - `test.newly_failing`: a test failed or errored in the run and passed
//!   in the newest earlier run of the same project and branch that has a
//!   result for it, among the [`LOOKBACK_RUNS`] runs before it.
//! - `test.newly_flaky`: the flaky verdict of `read::flaky` is judged
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
//! (`pending`). Per target at most [`Routes::max_pending`] rows wait:
//! beyond, the oldest pending rows are marked dead with `last_error`
//! "dropped: ..." and a warning is logged. Dead rows (given up or dropped)
//! stay visible (counted by `backlog`) until `PruneOutbox` removes them.
//!
//! Several masters on one store would each deliver every row: delivery
//! would then need a lease per target (not done: one master per store).
//!

use chrono::{DateTime, Utc};

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
    pub(crate) fn wanting(&self, kind: EventType) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .filter(move |r| r.events.contains(&kind))
            .map(|r| r.target.as_str())
    }

    pub(crate) fn wants(&self, kind: EventType) -> bool {
        self.wanting(kind).next().is_some()
    }

    pub(crate) fn is_default_branch(&self, branch: Option<&str>) -> bool {
        branch.is_some_and(|b| self.default_branches.iter().any(|d| d == b))
    }

    pub(crate) fn max_pending(&self) -> i64 {
        i64::from(if self.max_pending == 0 {
            DEFAULT_MAX_PENDING
        } else {
            self.max_pending
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;
    use crate::read::webhooks::{backlog, pending};
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
        let pool = crate::store::sqlite::db::open_reader(&db)
            .await
            .expect("reader");
        let b = backlog(&pool.clone().into(), &["t".into()])
            .await
            .expect("backlog");
        assert_eq!((b.pending, b.dead), (2, 1));
        let head = pending(&pool.clone().into(), "t", 10)
            .await
            .expect("pending");
        let runs: Vec<_> = head.iter().map(|p| p.event.run_id.clone()).collect();
        assert_eq!(runs, vec![Some("bad1".into()), Some("bad2".into())]);
        let none = backlog(&pool.clone().into(), &["quarantine-only".into()])
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
