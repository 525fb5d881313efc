//! The master's answers as this server reads them: runs, cases, trend
//! points, workers, failure statistics, flaky tests and failure clusters.
//!
//! Shape: plain serde types that mirror the master's JSON and are lenient
//! (fields this server does not need may be missing or added without
//! breaking it), apart from the client that fetches them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A run as `GET /results` lists it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Run {
    /// Run id.
    pub run_id: String,
    /// Project.
    pub project: String,
    /// Branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// Commit sha.
    #[serde(default)]
    pub commit: Option<String>,
    /// Worker that ran it.
    pub worker_id: String,
    /// Host name of the worker.
    #[serde(default)]
    pub host: Option<String>,
    /// Test runner.
    #[serde(default)]
    pub runner: Option<String>,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Wall time, seconds.
    #[serde(default)]
    pub duration: f64,
    /// Exit code of the test command.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// `passed`, `failed`, `interrupted`, ...
    pub status: String,
    /// All cases.
    #[serde(default)]
    pub total: u64,
    /// Passed.
    #[serde(default)]
    pub passed: u64,
    /// Failed.
    #[serde(default)]
    pub failed: u64,
    /// Errored.
    #[serde(default)]
    pub error: u64,
    /// Skipped.
    #[serde(default)]
    pub skipped: u64,
    /// Expected failures.
    #[serde(default)]
    pub xfailed: u64,
    /// Unexpected passes.
    #[serde(default)]
    pub xpassed: u64,
    /// Pass rate in percent, `None` when nothing ran to a verdict.
    #[serde(default)]
    pub pass_rate: Option<f64>,
    /// Whether every case is stored (false for the legacy payload).
    #[serde(default = "yes")]
    pub cases_complete: bool,
    /// Why the run has its status.
    #[serde(default)]
    pub note: Option<String>,
    /// Of the failures, those quarantined when they ran.
    #[serde(default)]
    pub quarantined_failures: u64,
}

fn yes() -> bool {
    true
}

/// One test case of a run.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Case {
    /// Stable test id.
    pub test_id: String,
    /// `failed`, `error`, `xpassed`, `passed`, `skipped` or `xfailed`.
    pub outcome: String,
    /// Seconds.
    #[serde(default)]
    pub duration: f64,
    /// Failure or skip message.
    #[serde(default)]
    pub message: Option<String>,
    /// Traceback.
    #[serde(default)]
    pub traceback: Option<String>,
    /// Failed attempts before the final outcome.
    #[serde(default)]
    pub retries: u32,
    /// Passed only after failing within the run.
    #[serde(default)]
    pub flaky: bool,
    /// Owners of the test's file (CODEOWNERS); absent from the master's
    /// answer when none.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Quarantined when it ran (the outcome is still the real one).
    #[serde(default)]
    pub quarantined: bool,
}

impl Case {
    /// Failed or errored.
    pub fn is_failure(&self) -> bool {
        matches!(self.outcome.as_str(), "failed" | "error")
    }
}

/// `GET /results/{run_id}`: a run with (some of) its cases.
#[derive(Debug, Clone, Deserialize)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// Cases, failures first.
    #[serde(default)]
    pub cases: Vec<Case>,
    /// Cases not in this page (left out by `outcome`, or past `cases_limit`).
    #[serde(default)]
    pub cases_omitted: u64,
}

/// One run on `GET /trend`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TrendPoint {
    /// Run id.
    pub run_id: String,
    /// Start time.
    pub timestamp: DateTime<Utc>,
    /// Project.
    pub project: String,
    /// Branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// Commit.
    #[serde(default)]
    pub commit: Option<String>,
    /// Worker.
    pub worker_id: String,
    /// Run status.
    pub status: String,
    /// Passed.
    #[serde(default)]
    pub passed: u64,
    /// Failed.
    #[serde(default)]
    pub failed: u64,
    /// Errored.
    #[serde(default)]
    pub error: u64,
    /// Skipped.
    #[serde(default)]
    pub skipped: u64,
    /// All cases.
    #[serde(default)]
    pub total: u64,
    /// Pass rate in percent.
    #[serde(default)]
    pub pass_rate: Option<f64>,
    /// Wall time, seconds.
    #[serde(default)]
    pub duration: f64,
}

/// A worker on `GET /workers`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Worker {
    /// Worker id.
    pub worker_id: String,
    /// `running`, `idle` or `offline`.
    pub status: String,
    /// Last heartbeat or run end.
    pub last_seen: DateTime<Utc>,
    /// Run in progress.
    #[serde(default)]
    pub current_run: Option<String>,
    /// Host name.
    #[serde(default)]
    pub host: Option<String>,
    /// Project of the latest run.
    #[serde(default)]
    pub project: Option<String>,
    /// Runs stored.
    #[serde(default)]
    pub run_count: u64,
    /// Mean pass rate, percent.
    #[serde(default)]
    pub avg_pass_rate: Option<f64>,
    /// Latest run.
    #[serde(default)]
    pub last_run_id: Option<String>,
    /// Its status.
    #[serde(default)]
    pub last_run_status: Option<String>,
}

/// A frequently failing test on `GET /failures/stats`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FailureStat {
    /// Test id.
    pub test_id: String,
    /// Project.
    pub project: String,
    /// Failures in the window.
    pub fail_count: u64,
    /// Latest failure.
    pub last_failed_at: DateTime<Utc>,
    /// Its message.
    #[serde(default)]
    pub last_message: Option<String>,
    /// Its run.
    pub last_run_id: String,
}

/// A flaky test on `GET /flaky` (the fields the report shows).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FlakyTest {
    /// Test id.
    pub test_id: String,
    /// Why: `same_commit`, `passed_on_retry`, `flip_rate`.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Flips per transition, 0..=1.
    #[serde(default)]
    pub flip_rate: f64,
    /// Runs with a verdict.
    #[serde(default)]
    pub runs: u64,
    /// Of those, failed.
    #[serde(default)]
    pub failed_runs: u64,
    /// Newest failure or retry.
    pub last_seen: DateTime<Utc>,
    /// Newest failure message.
    #[serde(default)]
    pub last_message: Option<String>,
}

/// `GET /flaky`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FlakyReport {
    /// Runs looked at.
    #[serde(default)]
    pub runs_considered: u64,
    /// Runs of the window left out because they carried failures only.
    #[serde(default)]
    pub failures_only_excluded: u64,
    /// Flaky tests in all.
    #[serde(default)]
    pub total: u64,
    /// The first ones.
    #[serde(default)]
    pub tests: Vec<FlakyTest>,
}

/// A failure cluster on `GET /failures/clusters` (the fields the report shows).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Cluster {
    /// Stable id.
    pub id: String,
    /// Exception type.
    #[serde(default)]
    pub exception: Option<String>,
    /// Masked message.
    #[serde(default)]
    pub message: String,
    /// Top frame.
    #[serde(default)]
    pub frame: Option<String>,
    /// Failures.
    pub count: u64,
    /// Runs.
    #[serde(default)]
    pub runs: u64,
    /// Tests affected.
    #[serde(default)]
    pub tests_total: u64,
    /// The first of them.
    #[serde(default)]
    pub tests: Vec<String>,
    /// Newest occurrence.
    pub last_seen: DateTime<Utc>,
}

/// `GET /failures/clusters`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClusterReport {
    /// Runs looked at.
    #[serde(default)]
    pub runs_considered: u64,
    /// Failures in the window.
    #[serde(default)]
    pub failures: u64,
    /// Clusters in all.
    #[serde(default)]
    pub total: u64,
    /// The biggest.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
}
