//! The rules of the store that do not depend on a dialect, kept once for
//! every backend (`store::sqlite`, `store::postgres`): each backend runs
//! its own SQL and asks these what to write.
//!
//! - webhook events: which questions a completed run's events need
//!   ([`run_asks`]), the events made of the answers ([`run_events`],
//!   [`quarantined_event`], [`released_event`]), the columns an attempt
//!   sets ([`attempt_columns`]), the text of a dropped delivery;
//! - the automatic quarantine's clean-run count ([`RunVerdict`],
//!   [`next_clean_runs`]);
//! - flaky evidence: the default window, the outage rule (as SQL both
//!   dialects read alike) and how far back a newly tracked test's verdicts
//!   are written;
//! - the rollups' day buckets ([`day_of`]);
//! - interning: a batch's distinct values ([`Distinct`]).

use std::collections::HashMap;

use serde_json::json;

use crate::model::{RunRecord, to_millis};
use crate::quarantine::Entry;
use crate::webhooks::{Attempt, EventType, MAX_TEST_EVENTS_PER_RUN, Routes};

// -------- webhook events

/// An event about to be stored.
pub(crate) struct NewEvent {
    pub(crate) kind: EventType,
    pub(crate) project: String,
    pub(crate) branch: Option<String>,
    pub(crate) run_id: Option<String>,
    pub(crate) test_id: Option<String>,
    pub(crate) data: serde_json::Value,
}

/// `last_error` of the deliveries dropped beyond a target's bound `max`.
pub(crate) fn dropped_error(max: i64) -> String {
    format!("dropped: more than {max} undelivered events for this target")
}

/// Logs that `over` deliveries of `target` were dropped.
pub(crate) fn warn_dropped(target: &str, over: i64, max: i64) {
    tracing::warn!(
        target,
        dropped = over,
        max,
        "webhook target has too many undelivered events: the oldest were dropped (marked dead)"
    );
}

/// Logs that the rows of a target no longer configured were deleted.
pub(crate) fn warn_unconfigured(target: &str, deliveries: u64) {
    tracing::warn!(
        target = %target,
        deliveries,
        "webhook target no longer configured: its outbox rows were deleted"
    );
}

/// Whether a run counts as failed for `run.failed`.
fn run_failed(run: &RunRecord) -> bool {
    run.counts.failed + run.counts.error > 0
        || !matches!(run.status.as_str(), "passed" | "no_tests")
}

/// What the events of a completed run need asked of the store.
pub(crate) struct RunAsks {
    /// Its failing tests that passed before (`test.newly_failing`, and
    /// the count in `run.failed`): at most [`crate::webhooks::MAX_FAILING_CONSIDERED`] by
    /// test id, each with the first 300 characters of its first failure's
    /// message, those whose newest result among the [`crate::webhooks::LOOKBACK_RUNS`] runs
    /// of the project and branch completed before it was a pass.
    pub(crate) newly_failing: bool,
    /// Its tests passed on retry and retried in none of those runs
    /// (`test.newly_flaky`), at most [`MAX_TEST_EVENTS_PER_RUN`] by test id.
    pub(crate) newly_flaky: bool,
}

/// What to ask for run `run`'s events; `None` when it has none (no
/// target, or not a default branch).
pub(crate) fn run_asks(routes: &Routes, run: &RunRecord) -> Option<RunAsks> {
    if routes.targets.is_empty() || !routes.is_default_branch(run.branch.as_deref()) {
        return None;
    }
    Some(RunAsks {
        newly_failing: run_failed(run)
            && (routes.wants(EventType::RunFailed) || routes.wants(EventType::TestNewlyFailing)),
        newly_flaky: routes.wants(EventType::TestNewlyFlaky),
    })
}

/// The events of run `run`, made of the answers to [`run_asks`] (empty
/// when not asked): `run.failed`, its newly failing tests, its newly flaky
/// tests, in that order.
pub(crate) fn run_events(
    run: &RunRecord,
    newly_failing: Vec<(String, Option<String>)>,
    newly_flaky: Vec<String>,
) -> Vec<NewEvent> {
    let mut events = Vec::new();
    let event = |kind, test_id: Option<String>, data| NewEvent {
        kind,
        project: run.project.clone(),
        branch: run.branch.clone(),
        run_id: Some(run.run_id.clone()),
        test_id,
        data,
    };
    if run_failed(run) {
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
    for test_id in newly_flaky {
        events.push(event(
            EventType::TestNewlyFlaky,
            Some(test_id),
            json!({ "commit": run.commit, "reason": "passed_on_retry" }),
        ));
    }
    events
}

/// `test.quarantined` for `entry` of `project`.
pub(crate) fn quarantined_event(project: &str, entry: &Entry) -> NewEvent {
    NewEvent {
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
    }
}

/// `test.released` for `test_id` of `project`, quarantined for `reason`.
pub(crate) fn released_event(project: &str, test_id: &str, reason: &str) -> NewEvent {
    NewEvent {
        kind: EventType::TestReleased,
        project: project.to_string(),
        branch: None,
        run_id: None,
        test_id: Some(test_id.to_string()),
        data: json!({ "reason": reason }),
    }
}

/// The columns an attempt sets: (state, next attempt at, last error).
pub(crate) fn attempt_columns(outcome: &Attempt) -> (i64, Option<i64>, Option<&String>) {
    match outcome {
        Attempt::Delivered => (1, None, None),
        Attempt::Retry {
            error,
            next_attempt_at,
        } => (0, Some(to_millis(*next_attempt_at)), Some(error)),
        Attempt::GiveUp { error } => (2, None, Some(error)),
    }
}

// -------- automatic quarantine's clean runs

/// A quarantined test's verdict in one run, as the clean-run count sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunVerdict {
    /// Passed, without failed attempts.
    Clean,
    /// Failed, errored, or passed only on retry.
    Unclean,
}

impl RunVerdict {
    /// The verdict of a test whose cases in the run (failed, errored or
    /// passed ones) have the worst outcome code `worst` and include a
    /// retried one (`retried`).
    pub(crate) fn of(worst: i64, retried: bool) -> RunVerdict {
        if worst <= 1 || retried {
            RunVerdict::Unclean
        } else {
            RunVerdict::Clean
        }
    }
}

/// The clean-run count after a run with `verdict`: one more after a clean
/// run, back to 0 after an unclean one. (A run without the test, or where
/// it was skipped, leaves the count as it is.)
pub(crate) fn next_clean_runs(count: i64, verdict: RunVerdict) -> i64 {
    match verdict {
        RunVerdict::Clean => count.max(0).saturating_add(1),
        RunVerdict::Unclean => 0,
    }
}

// -------- flaky evidence

/// Runs a flaky judgement covers when not told (`GET /flaky`, automatic
/// quarantine).
pub const DEFAULT_RUNS: u32 = 50;

/// A run is an outage, not evidence, when more than half of the tests with a
/// verdict failed and at least this many had one.
pub const OUTAGE_MIN_VERDICTS: i64 = 5;

/// SQL true for an outage run.
pub(crate) fn outage_sql() -> String {
    outage_sql_of("")
}

/// [`outage_sql`] over the columns of the runs table named `alias`
/// (`"r."`, or `""` for an unqualified one). Plain integer arithmetic:
/// the same SQL on both backends.
pub(crate) fn outage_sql_of(alias: &str) -> String {
    let (p, f, e) = (
        format!("{alias}passed"),
        format!("{alias}failed"),
        format!("{alias}error"),
    );
    format!("(({p} + {f} + {e}) >= {OUTAGE_MIN_VERDICTS} AND ({f} + {e}) * 2 > ({p} + {f} + {e}))")
}

/// Evidence runs of a project before a test was tracked whose verdicts for
/// it are written when it becomes tracked (each backend's `backfill_evidence`). The
/// default window ([`DEFAULT_RUNS`]) and twice that are then read from kept
/// rows alone; a larger or branch-narrowed window that reaches further back
/// still probes the cases for the older runs. Small in unit tests, so the
/// property test covers both paths.
#[cfg(not(test))]
pub const BACKFILL_RUNS: i64 = 2 * DEFAULT_RUNS as i64;
/// [`BACKFILL_RUNS`] in unit tests: small, so histories reach past it.
#[cfg(test)]
pub const BACKFILL_RUNS: i64 = 3;

// -------- rollup day buckets

/// Milliseconds in a day bucket of `test_failure_days`.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The day bucket of a time in epoch milliseconds.
pub(crate) fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

// -------- interning

/// Positions of distinct values: `distinct` lists each value once, in the
/// order first seen; `index` gives each value's position there.
pub(crate) struct Distinct<T> {
    pub(crate) values: Vec<T>,
    index: HashMap<T, usize>,
}

impl<T: std::hash::Hash + Eq + Clone> Distinct<T> {
    pub(crate) fn new() -> Self {
        Distinct {
            values: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The position of `v`, added if new.
    pub(crate) fn add(&mut self, v: T) -> usize {
        if let Some(&i) = self.index.get(&v) {
            return i;
        }
        let i = self.values.len();
        self.values.push(v.clone());
        self.index.insert(v, i);
        i
    }
}
