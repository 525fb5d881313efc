//! How `/results` shows runs and cases: [`RunView`], [`CaseView`],
//! [`FailureView`] and [`RunDetail`], made from the actors' records.
//!
//! Shape: one view per record, built by `From`, so every endpoint that
//! shows a run (also `/compare`) shows it alike, with the original
//! system's field names (`timestamp`, `duration`, `nodeid`) besides ours.
//!
//! Guarantees: a view never holds more than its record; `RunDetail` counts
//! the cases a page leaves out only when the run's cases are complete.

use chrono::{DateTime, Utc};
use ptp_actors::model::{CaseRecord, Outcome, RunRecord, RunStatus};
use serde::Serialize;
use utoipa::ToSchema;

/// A run as the API shows it. Carries the original system's field names
/// (`timestamp`, `duration`, flat counts) besides our own.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// Run id.
    pub run_id: String,
    /// Project.
    pub project: String,
    /// Branch.
    pub branch: Option<String>,
    /// Commit sha.
    pub commit: Option<String>,
    /// Worker that ran it.
    pub worker_id: String,
    /// Host name of the worker.
    pub host: Option<String>,
    /// Test runner.
    pub runner: Option<String>,
    /// Command line.
    pub command: Option<String>,
    /// Start time (same as `started_at`; the original system's name).
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub timestamp: DateTime<Utc>,
    /// Start time.
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub started_at: DateTime<Utc>,
    /// End time.
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub finished_at: DateTime<Utc>,
    /// Wall time in seconds.
    pub duration: f64,
    /// Exit code of the test command.
    pub exit_code: Option<i32>,
    /// `passed`, `failed`, `interrupted`, `internal_error`, `usage_error`,
    /// `no_tests`, `crashed` or `timed_out`.
    #[schema(value_type = String)]
    pub status: RunStatus,
    /// All test cases.
    pub total: u64,
    /// Passed.
    pub passed: u64,
    /// Failed.
    pub failed: u64,
    /// Errored.
    pub error: u64,
    /// Skipped.
    pub skipped: u64,
    /// Expected failures.
    pub xfailed: u64,
    /// Unexpected passes.
    pub xpassed: u64,
    /// Pass rate in percent over tests that reached a verdict.
    #[serde(serialize_with = "ptp_actors::format::rate_opt")]
    pub pass_rate: Option<f64>,
    /// Whether every test case is stored (false for the original system's
    /// payload, which carried only failures).
    pub cases_complete: bool,
    /// Why the run has its status, when known.
    pub note: Option<String>,
    /// Of `failed` and `error`, the cases that were quarantined when they
    /// ran (their outcomes are the real ones; the agent did not fail the
    /// build for them).
    pub quarantined_failures: u64,
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        RunView {
            run_id: r.run_id,
            project: r.project,
            branch: r.branch,
            commit: r.commit,
            worker_id: r.worker_id,
            host: r.host,
            runner: r.runner,
            command: r.command,
            timestamp: r.started_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration: r.duration_secs,
            exit_code: r.exit_code,
            status: r.status,
            total: r.counts.total,
            passed: r.counts.passed,
            failed: r.counts.failed,
            error: r.counts.error,
            skipped: r.counts.skipped,
            xfailed: r.counts.xfailed,
            xpassed: r.counts.xpassed,
            pass_rate: r.pass_rate,
            cases_complete: r.cases_complete,
            note: r.note,
            quarantined_failures: r.quarantined_failures,
        }
    }
}

/// One test case.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseView {
    /// Stable test id.
    pub test_id: String,
    /// Source file.
    pub file: Option<String>,
    /// JUnit classname.
    pub classname: Option<String>,
    /// JUnit name.
    pub name: String,
    /// `failed`, `error`, `xpassed`, `passed`, `skipped` or `xfailed`.
    pub outcome: String,
    /// Seconds.
    pub duration: f64,
    /// Failure or skip message.
    pub message: Option<String>,
    /// Traceback.
    pub traceback: Option<String>,
    /// Captured output.
    pub output: Option<String>,
    /// Failed attempts before the final outcome.
    pub retries: u32,
    /// Passed after failing within the run.
    pub flaky: bool,
    /// Owners of the test's file from CODEOWNERS, as the agent named them;
    /// absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// Present and true when the test was quarantined when it ran (its
    /// `outcome` is still the real one); absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

impl From<CaseRecord> for CaseView {
    fn from(c: CaseRecord) -> Self {
        CaseView {
            test_id: c.test_id,
            file: c.file,
            classname: c.classname,
            name: c.name,
            outcome: c.outcome.as_str().to_string(),
            duration: c.duration_secs,
            message: c.message,
            traceback: c.traceback,
            output: c.output,
            retries: c.retries,
            flaky: c.flaky,
            owners: c.owners,
            quarantined: c.quarantined,
        }
    }
}

/// A failure in the original system's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureView {
    /// Test id.
    pub nodeid: String,
    /// `failed` or `error`.
    pub outcome: String,
    /// Seconds.
    pub duration: f64,
    /// Message.
    pub message: Option<String>,
}

/// A run with its test cases.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: RunView,
    /// Failed and errored tests (the original system's field).
    pub failures: Vec<FailureView>,
    /// Test cases, failures first, then in report order.
    pub cases: Vec<CaseView>,
    /// Cases not in this page: left out by `outcome`, on other pages, or
    /// past `cases_limit`.
    pub cases_omitted: u64,
    /// Cursor of the next page of cases, when more match (also in the
    /// `X-Next-Cursor` header); pass it back as `cursor` with the same
    /// `outcome` and `order`.
    pub next_cursor: Option<String>,
}

impl RunDetail {
    /// The answer for `run` with one page of its `cases` (those matching
    /// `outcomes`, all when empty).
    pub(super) fn new(
        run: RunRecord,
        cases: Vec<CaseRecord>,
        outcomes: &[Outcome],
        next_cursor: Option<String>,
    ) -> RunDetail {
        let matching: u64 = if outcomes.is_empty() {
            run.counts.total
        } else {
            outcomes.iter().map(|o| run.counts.get(*o)).sum()
        };
        let failures = cases
            .iter()
            .filter(|c| c.outcome.is_failure())
            .map(|c| FailureView {
                nodeid: c.test_id.clone(),
                outcome: c.outcome.as_str().to_string(),
                duration: c.duration_secs,
                message: c.message.clone(),
            })
            .collect();
        let cases_omitted = if run.cases_complete {
            matching.saturating_sub(cases.len() as u64)
        } else {
            0
        };
        RunDetail {
            run: run.into(),
            failures,
            cases: cases.into_iter().map(CaseView::from).collect(),
            cases_omitted,
            next_cursor,
        }
    }
}
