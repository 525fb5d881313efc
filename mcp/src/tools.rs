//! The MCP server [`PtpMcp`] and its tools: `get_summary`, `get_trend`,
//! `get_failures`, `get_workers`, `get_failure_stats`, `get_report`,
//! `compare_runs`.
//!
//! Shape: each tool parses its own arguments (so a bad argument becomes a
//! tool error naming the argument and what is allowed, not an opaque
//! protocol error), asks the master through [`MasterClient`], and answers
//! compact JSON text for a model to read: no passing-test lists, long texts
//! cut with a `… [trimmed N chars]` marker, pass rates rounded to 0.1.
//!
//! Guarantees: a tool never panics and never ends the session; every
//! failure is a `CallToolResult` with `is_error: true` and one sentence a
//! person can act on (which URL is unreachable and what to check, which run
//! id is unknown, which argument is wrong). Tools only read.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, ResourceContents};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::args::{MAX_RUN_ID_BYTES, given, input_schema};
use crate::config::Config;
use crate::master::{MasterClient, MasterError, Run, RunFilter};
use crate::report::{self, ReportInput};
use crate::report_dir::{ReportDir, ReportDirError};
use crate::text::{short, trim_end, trim_middle};

/// Longest tool error text sent and logged, in characters: a last bound,
/// whatever a message quotes (arguments are bounded before, in
/// [`crate::args`]).
pub const MAX_ERROR_CHARS: usize = 2000;
/// Failed and errored cases fetched for a report: the ones it shows plus
/// one, so the count of those not shown comes from the run's counts.
pub const REPORT_FAILURES_LIMIT: u32 = report::FAILURES_SHOWN as u32 + 1;

/// Why a tool could not answer. Displayed as is to the model and the user.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    /// The master failed or refused.
    #[error(transparent)]
    Master(#[from] MasterError),
    /// An argument is wrong: which, and what is allowed.
    #[error("{0}")]
    Argument(String),
    /// Nothing matches the filters.
    #[error("{0}")]
    Nothing(String),
    /// Writing the report file failed.
    #[error("{0}")]
    Output(String),
}

pub(crate) type ToolResult = Result<CallToolResult, ToolError>;

/// Why a server could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `--master-url` is not usable.
    #[error(transparent)]
    Master(#[from] MasterError),
    /// `--report-dir` cannot be created or resolved.
    #[error(transparent)]
    ReportDir(#[from] ReportDirError),
}

/// The MCP server: read-only tools over one master (runs, analytics,
/// report), plus the local test-run tools of [`crate::local`] when a
/// project root is configured.
#[derive(Clone)]
pub struct PtpMcp {
    pub(crate) master: Arc<MasterClient>,
    /// Local test runs (`--project-root`); `None`: those tools are not offered.
    pub(crate) local: Option<Arc<crate::local::Local>>,
    /// Where `get_report` may write (`--report-dir`); `None`: it writes no
    /// file and refuses `output_path`.
    pub(crate) report_dir: Option<ReportDir>,
}

impl PtpMcp {
    /// A server answering from `master`, writing no files.
    pub fn new(master: MasterClient) -> PtpMcp {
        PtpMcp {
            master: Arc::new(master),
            local: None,
            report_dir: None,
        }
    }

    /// Every tool: the run tools here and the analytics tools of
    /// [`crate::insights`].
    pub fn all_tools() -> rmcp::handler::server::router::tool::ToolRouter<PtpMcp> {
        PtpMcp::tool_router() + PtpMcp::insights_tool_router()
    }

    /// A server for the master named in `config`; creates `--report-dir`
    /// when given and missing.
    pub fn from_config(config: &Config) -> Result<PtpMcp, SetupError> {
        let mut server = PtpMcp::new(MasterClient::new(
            &config.master_url,
            config.timeout(),
            config.api_token.as_deref(),
        )?);
        server.local = crate::local::Local::from_config(config).map(Arc::new);
        server.report_dir = config
            .report_dir
            .as_deref()
            .map(ReportDir::open)
            .transpose()?;
        Ok(server)
    }

    /// Checks `output_path` before any work: a file name inside the report
    /// dir, or a refusal saying why (none configured, outside it, ...).
    fn report_file(&self, raw: &str) -> Result<&ReportDir, ToolError> {
        let Some(dir) = &self.report_dir else {
            return Err(ToolError::Argument(
                "output_path: this server writes no files (no report dir: start ptp-mcp with \
                 --report-dir DIR or PTP_MCP_REPORT_DIR to allow it); leave output_path out to \
                 get the HTML embedded in the answer"
                    .into(),
            ));
        };
        dir.resolve(raw).map_err(ToolError::Argument)?;
        Ok(dir)
    }
}

// ---- arguments --------------------------------------------------------------

/// Arguments of `get_summary`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryArgs {
    /// Only runs of this project (the exact name the agent reported).
    pub project: Option<String>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// Only runs of this CI worker (its worker_id).
    pub worker_id: Option<String>,
    /// Only runs with this status: passed, failed, interrupted, internal_error, usage_error, no_tests, crashed or timed_out.
    pub status: Option<String>,
    /// How many runs, newest first: 1 to 100. Default 10.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
}

/// Arguments of `get_trend`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrendArgs {
    /// Only runs of this project. Default: all projects.
    pub project: Option<String>,
    /// Only runs of this branch (needs `project`).
    pub branch: Option<String>,
    /// How many of the most recent runs: 1 to 1000. Default 20.
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

/// Arguments of `get_failures`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailuresArgs {
    /// The run to inspect (ids come from get_summary). Default: the latest run matching project/branch/worker_id.
    pub run_id: Option<String>,
    /// Pick the latest run of this project (ignored with run_id).
    pub project: Option<String>,
    /// Pick the latest run of this branch (ignored with run_id).
    pub branch: Option<String>,
    /// Pick the latest run of this worker (ignored with run_id).
    pub worker_id: Option<String>,
    /// Most failures listed: 1 to 200. Default 20.
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<i64>,
    /// Characters of each traceback kept (start and end, the middle is cut): 0 to 20000, 0 leaves tracebacks out. Default 1500.
    #[schemars(range(min = 0, max = 20000))]
    pub traceback_chars: Option<i64>,
}

/// Arguments of `get_workers`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkersArgs {
    /// Only workers with this status: running, idle or offline.
    pub status: Option<String>,
}

/// Arguments of `get_failure_stats`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureStatsArgs {
    /// Only tests of this project.
    pub project: Option<String>,
    /// Only failures in runs of this branch (e.g. "main").
    pub branch: Option<String>,
    /// Only failures in runs of this CI worker.
    pub worker_id: Option<String>,
    /// Only tests of this owner, exactly as CODEOWNERS names it (e.g. "@acme/cart" or "qa@example.com"), by the owners the newest run named.
    pub owner: Option<String>,
    /// Window: the last N days, 1 to 3650. Default: all stored runs.
    #[schemars(range(min = 1, max = 3650))]
    pub days: Option<i64>,
    /// Most tests listed, most failures first: 1 to 500. Default 20.
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

/// Arguments of `compare_runs`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareArgs {
    /// Run id of the base (the reference, e.g. the last run on main). Or give base_branch.
    pub base_run_id: Option<String>,
    /// Run id of the head (the run under review). Or give head_branch.
    pub head_run_id: Option<String>,
    /// Project, needed with base_branch / head_branch.
    pub project: Option<String>,
    /// Use the latest run of this branch of `project` as the base (e.g. "main").
    pub base_branch: Option<String>,
    /// Use the latest run of this branch of `project` as the head.
    pub head_branch: Option<String>,
    /// Most tests listed per category: 1 to 200. Default 20 (totals are always given).
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<i64>,
}

/// Arguments of `get_report`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportArgs {
    /// Only runs of this project. Default: all projects.
    pub project: Option<String>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// Only runs of this CI worker.
    pub worker_id: Option<String>,
    /// How many of the newest runs the trend chart and the flaky-test and
    /// failure-cluster sections cover: 1 to 500. Default 20.
    #[schemars(range(min = 1, max = REPORT_RUNS_MAX))]
    pub runs: Option<i64>,
    /// "owner": list the latest run's failures under one heading per owner (CODEOWNERS; a test with several owners is listed under each, one without under "no owner"). Default: one list.
    pub group_by: Option<String>,
    /// A file name ending in .html (e.g. "shop-main.html", or "team/shop.html" for an existing subdirectory) to write the HTML to, inside the server's report dir (--report-dir / PTP_MCP_REPORT_DIR). When given, the tool answers the written path and a summary instead of embedding the HTML. Refused when the server has no report dir (the default), for absolute paths, '..', '~', links leading outside the dir, and existing files that are not reports this server wrote (its own reports are replaced).
    pub output_path: Option<String>,
}

/// Runs a report covers when not told: the trend, flaky tests and clusters.
pub const REPORT_RUNS_DEFAULT: u32 = 20;
/// Most runs a report covers.
pub const REPORT_RUNS_MAX: u32 = 500;

/// What a report covers, checked: the rule `get_report` and the `/report`
/// page share.
#[derive(Debug)]
pub(crate) struct ReportScope {
    /// Project, branch and worker (blank ones are no filter).
    pub(crate) filter: RunFilter,
    /// How many of the newest runs (1 to [`REPORT_RUNS_MAX`]).
    pub(crate) runs: u32,
    /// List the latest run's failures under their owners.
    pub(crate) group_by_owner: bool,
}

impl ReportScope {
    /// The scope of these (already size-bounded) arguments; `runs` out of
    /// range is an argument error naming the range and the default, a
    /// `group_by` other than "owner" (blank is none) one naming the choice.
    pub(crate) fn new(
        project: Option<String>,
        branch: Option<String>,
        worker_id: Option<String>,
        runs: Option<i64>,
        group_by: Option<String>,
    ) -> Result<ReportScope, ToolError> {
        let group_by = given(group_by);
        check_one_of("group_by", &group_by, &["owner"])?;
        Ok(ReportScope {
            runs: bounded("runs", runs, REPORT_RUNS_DEFAULT, 1, REPORT_RUNS_MAX)?,
            group_by_owner: group_by.is_some(),
            filter: RunFilter {
                project: given(project),
                branch: given(branch),
                worker_id: given(worker_id),
                status: None,
            },
        })
    }
}

/// A rendered report and one sentence summing it up.
pub(crate) struct RenderedReport {
    /// The self-contained HTML.
    pub(crate) html: String,
    /// The latest run and the trend in one sentence, for the tool answer.
    pub(crate) summary: String,
}

/// A tool's arguments, bounded and parsed ([`crate::args::parse`]).
pub(crate) fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, ToolError> {
    crate::args::parse(tool, args).map_err(ToolError::Argument)
}

pub(crate) fn bounded(
    name: &str,
    value: Option<i64>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ToolError> {
    match value {
        None => Ok(default),
        Some(v) if v >= i64::from(min) && v <= i64::from(max) => Ok(v as u32),
        Some(v) => Err(ToolError::Argument(format!(
            "{name} must be between {min} and {max}, got {v}; leave it out for the default of {default}"
        ))),
    }
}

fn check_run_id(run_id: &str) -> Result<(), ToolError> {
    let ok = !run_id.is_empty()
        && run_id.len() <= MAX_RUN_ID_BYTES
        && run_id.chars().any(|c| c != '.')
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ToolError::Argument(format!(
            "run_id {:?} is not a run id: ids are 1 to {MAX_RUN_ID_BYTES} letters, digits, '-', '_' \
             or '.'; get_summary lists recent ones",
            crate::args::echo(run_id)
        )))
    }
}

const RUN_STATUSES: [&str; 8] = [
    "passed",
    "failed",
    "interrupted",
    "internal_error",
    "usage_error",
    "no_tests",
    "crashed",
    "timed_out",
];

fn check_one_of(name: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), ToolError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ToolError::Argument(format!(
            "{name} {v:?} is not one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    }
}

// ---- answers ----------------------------------------------------------------

fn rate(r: Option<f64>) -> Option<f64> {
    r.filter(|r| r.is_finite())
        .map(|r| (r * 10.0).round() / 10.0)
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A run in a tool answer.
#[derive(Serialize)]
struct RunLine {
    run_id: String,
    started_at: String,
    project: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<String>,
    worker_id: String,
    status: String,
    pass_rate: Option<f64>,
    total: u64,
    passed: u64,
    failed: u64,
    error: u64,
    skipped: u64,
    #[serde(skip_serializing_if = "is_zero")]
    xfailed: u64,
    #[serde(skip_serializing_if = "is_zero")]
    xpassed: u64,
    duration_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// Only failures are stored (the original system's payload).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    failures_only: bool,
    /// Failures that were quarantined when they ran.
    #[serde(skip_serializing_if = "is_zero")]
    quarantined_failures: u64,
}

impl From<&Run> for RunLine {
    fn from(r: &Run) -> Self {
        RunLine {
            run_id: r.run_id.clone(),
            started_at: time(&r.started_at),
            project: r.project.clone(),
            branch: r.branch.clone(),
            commit: r.commit.as_deref().map(|c| short(c, 12)),
            worker_id: r.worker_id.clone(),
            status: r.status.clone(),
            pass_rate: rate(r.pass_rate),
            total: r.total,
            passed: r.passed,
            failed: r.failed,
            error: r.error,
            skipped: r.skipped,
            xfailed: r.xfailed,
            xpassed: r.xpassed,
            duration_s: (r.duration * 100.0).round() / 100.0,
            note: r.note.as_deref().map(|n| trim_end(n, 300)),
            failures_only: !r.cases_complete,
            quarantined_failures: r.quarantined_failures,
        }
    }
}

pub(crate) fn json_answer(value: &impl Serialize) -> ToolResult {
    let text = serde_json::to_string(value)
        .map_err(|e| ToolError::Output(format!("cannot encode the answer as JSON: {e}")))?;
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn filters_text(f: &RunFilter) -> String {
    let parts: Vec<String> = [
        ("project", &f.project),
        ("branch", &f.branch),
        ("worker_id", &f.worker_id),
        ("status", &f.status),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v:?}")))
    .collect();
    if parts.is_empty() {
        "no filters".into()
    } else {
        parts.join(", ")
    }
}

fn no_runs(f: &RunFilter) -> ToolError {
    ToolError::Nothing(format!(
        "no runs match ({}). Check the names with get_summary without filters, or send results \
         to the master first (ptp-agent run -- pytest).",
        filters_text(f)
    ))
}

/// `report://<project>` with the project percent-encoded.
fn report_uri(project: &Option<String>) -> String {
    let name = project.as_deref().unwrap_or("all");
    let enc: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("report://{enc}")
}

// ---- the tools --------------------------------------------------------------

const SUMMARY_DESC: &str = "Recent test runs, newest first: for each run its id, time, project, \
branch, commit, worker, status (passed/failed/interrupted/internal_error/usage_error/no_tests/\
crashed/timed_out), pass rate and counts, plus how many runs had each status. Use it first to \
answer 'how are the tests doing?', to find run ids and project names, or to check one worker or \
branch. Prefer get_trend to see whether the pass rate improves over many runs, get_failures for \
which tests failed in a run, and get_report for a shareable HTML overview.";

const TREND_DESC: &str = "Pass rate per run over the last N runs, oldest first, with first/last/\
min/max/mean and the change from the first to the last run. Use it for 'is the suite getting \
better or worse?' and to spot when a regression started. Prefer get_summary for the latest runs' \
details and get_failure_stats to see which tests cause the failures.";

const FAILURES_DESC: &str = "Failed and errored tests of one run (the latest matching run unless \
run_id is given): test id, outcome, duration, message and a trimmed traceback, plus the run's \
status and counts. Passing tests are never listed. Use it to explain why a run failed or to start \
debugging a test. Prefer get_failure_stats for tests that fail repeatedly across runs, and \
get_summary to find run ids.";

const WORKERS_DESC: &str = "Every CI worker the master knows with its status (running: a run in \
progress; idle: finished recently; offline: not heard from), when it was last seen, its current \
run, run count, mean pass rate and latest run. Use it for 'is CI running?', 'which runner is \
stuck or gone?'. Prefer get_summary with worker_id for one worker's recent runs.";

const FAILURE_STATS_DESC: &str = "The tests that failed most often in a window (the last `days` \
days, or all stored runs), most failures first, with the count, when each last failed, its last \
message and run; narrow it to a branch or a worker. Use it to find flaky or chronically broken \
tests and to prioritise fixes. Prefer get_failures for the full tracebacks of one run, and \
compare_runs for what one run broke compared to another.";

const REPORT_DESC: &str = "A self-contained HTML report (no external resources; opens offline): \
headline of the latest run, pass-rate trend chart, failures with tracebacks, most frequent \
failures, slowest tests and workers. Returns a short text summary plus the HTML as an embedded \
resource (mime text/html, uri report://<project>); with output_path (a file name ending in .html) \
it writes the HTML into the server's report dir instead and returns the path. File output is off \
unless the server was started with --report-dir (PTP_MCP_REPORT_DIR). Use it when the user wants a report to open, save or \
share. Prefer get_summary, get_trend and get_failures for answering questions in the chat: \
their JSON is much smaller.";

const COMPARE_DESC: &str = "Compares two runs test by test: tests that newly fail (with their \
message), tests fixed, tests still failing, tests added and removed, and tests that got much \
slower or faster, each with a total; plus both runs' status and counts. Name the runs by id \
(base_run_id, head_run_id) or as the latest runs of two branches of a project (project, \
base_branch, head_branch). Use it for 'what did this branch/PR break compared to main?' or \
'what changed since the last green run?'. Prefer get_failures for one run's tracebacks and \
get_failure_stats for tests that fail often.";

#[tool_router]
impl PtpMcp {
    #[tool(
        description = COMPARE_DESC,
        input_schema = input_schema::<CompareArgs>(),
        annotations(title = "Compare two runs", read_only_hint = true, open_world_hint = false)
    )]
    async fn compare_runs(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("compare_runs", self.compare(args)).await)
    }

    #[tool(
        description = SUMMARY_DESC,
        input_schema = input_schema::<SummaryArgs>(),
        annotations(title = "Recent test runs", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_summary(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_summary", self.summary(args)).await)
    }

    #[tool(
        description = TREND_DESC,
        input_schema = input_schema::<TrendArgs>(),
        annotations(title = "Pass-rate trend", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_trend(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_trend", self.trend(args)).await)
    }

    #[tool(
        description = FAILURES_DESC,
        input_schema = input_schema::<FailuresArgs>(),
        annotations(title = "Failures of a run", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_failures(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_failures", self.failures(args)).await)
    }

    #[tool(
        description = WORKERS_DESC,
        input_schema = input_schema::<WorkersArgs>(),
        annotations(title = "CI workers", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_workers(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_workers", self.workers(args)).await)
    }

    #[tool(
        description = FAILURE_STATS_DESC,
        input_schema = input_schema::<FailureStatsArgs>(),
        annotations(title = "Most frequent failures", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_failure_stats(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_failure_stats", self.failure_stats(args)).await)
    }

    #[tool(
        description = REPORT_DESC,
        input_schema = input_schema::<ReportArgs>(),
        annotations(title = "HTML test report", read_only_hint = false, destructive_hint = false, open_world_hint = false)
    )]
    async fn get_report(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_report", self.report(args)).await)
    }
}

/// Runs a tool and turns its outcome into what the client sees: failures
/// become tool errors (`is_error: true`) with their sentence, and are logged.
/// A panic (a bug of ours, e.g. on an answer shaped unlike we expect) is
/// caught here too: the client gets an error naming the tool instead of
/// waiting forever for a reply that a dead task would never send.
pub(crate) async fn finish<E: std::fmt::Display>(
    tool: &str,
    run: impl std::future::Future<Output = Result<CallToolResult, E>>,
) -> CallToolResult {
    use futures::FutureExt;
    let result = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            let what = trim_end(what, MAX_ERROR_CHARS);
            tracing::error!(tool, "tool panicked: {what}");
            return CallToolResult::error(vec![ContentBlock::text(format!(
                "{tool} failed: internal error in ptp-mcp ({what}); please report it"
            ))]);
        }
    };
    result.unwrap_or_else(|e| {
        let e = trim_end(&e.to_string(), MAX_ERROR_CHARS);
        tracing::warn!(tool, "tool failed: {e}");
        CallToolResult::error(vec![ContentBlock::text(format!("{tool} failed: {e}"))])
    })
}

impl PtpMcp {
    async fn summary(&self, args: JsonObject) -> ToolResult {
        let a: SummaryArgs = parse("get_summary", args)?;
        let limit = bounded("limit", a.limit, 10, 1, 100)?;
        let filter = RunFilter {
            project: given(a.project),
            branch: given(a.branch),
            worker_id: given(a.worker_id),
            status: given(a.status),
        };
        check_one_of("status", &filter.status, &RUN_STATUSES)?;
        let runs = self.master.runs(&filter, limit).await?;
        let mut by_status = std::collections::BTreeMap::<String, u64>::new();
        for r in &runs {
            *by_status.entry(r.status.clone()).or_default() += 1;
        }
        #[derive(Serialize)]
        struct Answer {
            filters: String,
            shown: usize,
            by_status: std::collections::BTreeMap<String, u64>,
            runs: Vec<RunLine>,
            #[serde(skip_serializing_if = "Option::is_none")]
            hint: Option<String>,
        }
        json_answer(&Answer {
            filters: filters_text(&filter),
            shown: runs.len(),
            by_status,
            hint: runs.is_empty().then(|| {
                "no runs match; call get_summary without filters to see project and branch names"
                    .to_string()
            }),
            runs: runs.iter().map(RunLine::from).collect(),
        })
    }

    async fn trend(&self, args: JsonObject) -> ToolResult {
        let a: TrendArgs = parse("get_trend", args)?;
        let limit = bounded("limit", a.limit, 20, 1, 1000)?;
        let (project, branch) = (given(a.project), given(a.branch));
        let points = self.master.trend(&project, &branch, limit).await?;
        #[derive(Serialize)]
        struct Point {
            run_id: String,
            timestamp: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            branch: Option<String>,
            worker_id: String,
            status: String,
            pass_rate: Option<f64>,
            passed: u64,
            failed: u64,
            error: u64,
            total: u64,
        }
        #[derive(Serialize)]
        struct Stats {
            first: Option<f64>,
            last: Option<f64>,
            change: Option<f64>,
            min: Option<f64>,
            max: Option<f64>,
            mean: Option<f64>,
            runs_without_rate: usize,
        }
        #[derive(Serialize)]
        struct Answer {
            project: String,
            runs: usize,
            order: &'static str,
            pass_rate: Stats,
            points: Vec<Point>,
        }
        let rates: Vec<f64> = points.iter().filter_map(|p| rate(p.pass_rate)).collect();
        let first = rates.first().copied();
        let last = rates.last().copied();
        let stats = Stats {
            first,
            last,
            change: first.zip(last).and_then(|(a, b)| rate(Some(b - a))),
            min: rates.iter().copied().reduce(f64::min),
            max: rates.iter().copied().reduce(f64::max),
            mean: rate((!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)),
            runs_without_rate: points.len() - rates.len(),
        };
        json_answer(&Answer {
            project: project.unwrap_or_else(|| "all projects".into()),
            runs: points.len(),
            order: "oldest first",
            pass_rate: stats,
            points: points
                .iter()
                .map(|p| Point {
                    run_id: p.run_id.clone(),
                    timestamp: time(&p.timestamp),
                    branch: p.branch.clone(),
                    worker_id: p.worker_id.clone(),
                    status: p.status.clone(),
                    pass_rate: rate(p.pass_rate),
                    passed: p.passed,
                    failed: p.failed,
                    error: p.error,
                    total: p.total,
                })
                .collect(),
        })
    }

    async fn failures(&self, args: JsonObject) -> ToolResult {
        let a: FailuresArgs = parse("get_failures", args)?;
        let limit = bounded("limit", a.limit, 20, 1, 200)?;
        let tb_chars = bounded("traceback_chars", a.traceback_chars, 1500, 0, 20_000)? as usize;
        let run_id = match given(a.run_id) {
            Some(id) => {
                check_run_id(&id)?;
                id
            }
            None => {
                let filter = RunFilter {
                    project: given(a.project),
                    branch: given(a.branch),
                    worker_id: given(a.worker_id),
                    status: None,
                };
                let latest = self.master.runs(&filter, 1).await?;
                latest
                    .into_iter()
                    .next()
                    .ok_or_else(|| no_runs(&filter))?
                    .run_id
            }
        };
        let detail = match self.master.run(&run_id, Some("failed,error"), limit).await {
            Err(MasterError::NotFound { detail }) => {
                return Err(ToolError::Master(MasterError::NotFound {
                    detail: format!("{detail}. Call get_summary to see recent run ids."),
                }));
            }
            other => other?,
        };
        #[derive(Serialize)]
        struct Failure {
            test_id: String,
            outcome: String,
            duration_s: f64,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            traceback: Option<String>,
            #[serde(skip_serializing_if = "is_zero_u32")]
            retries: u32,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            owners: Vec<String>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            quarantined: bool,
        }
        #[derive(Serialize)]
        struct Answer {
            run: RunLine,
            failures_total: u64,
            shown: usize,
            more: u64,
            failures: Vec<Failure>,
            #[serde(skip_serializing_if = "Option::is_none")]
            hint: Option<String>,
        }
        let failures: Vec<Failure> = detail
            .cases
            .iter()
            .filter(|c| c.is_failure())
            .map(|c| Failure {
                test_id: trim_end(&c.test_id, 500),
                outcome: c.outcome.clone(),
                duration_s: (c.duration * 1000.0).round() / 1000.0,
                message: c.message.as_deref().map(|m| trim_end(m, 1000)),
                traceback: c
                    .traceback
                    .as_deref()
                    .filter(|_| tb_chars > 0)
                    .map(|t| trim_middle(t, tb_chars)),
                retries: c.retries,
                owners: c.owners.iter().take(16).map(|o| trim_end(o, 100)).collect(),
                quarantined: c.quarantined,
            })
            .collect();
        let total = (detail.run.failed + detail.run.error).max(failures.len() as u64);
        let more = total.saturating_sub(failures.len() as u64);
        let hint = if failures.is_empty() {
            Some(format!(
                "run {} has no failed or errored tests (status {})",
                detail.run.run_id, detail.run.status
            ))
        } else if more > 0 {
            Some(format!(
                "{more} more failures not listed; raise limit (max 200) to see more"
            ))
        } else if !detail.run.cases_complete {
            Some("this run was sent in the original system's payload: no tracebacks".into())
        } else {
            None
        };
        json_answer(&Answer {
            run: RunLine::from(&detail.run),
            failures_total: total,
            shown: failures.len(),
            more,
            failures,
            hint,
        })
    }

    async fn workers(&self, args: JsonObject) -> ToolResult {
        let a: WorkersArgs = parse("get_workers", args)?;
        let status = given(a.status);
        check_one_of("status", &status, &["running", "idle", "offline"])?;
        let all = self.master.workers().await?;
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for w in &all {
            *counts.entry(w.status.clone()).or_default() += 1;
        }
        #[derive(Serialize)]
        struct Line {
            worker_id: String,
            status: String,
            last_seen: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            current_run: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            host: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            project: Option<String>,
            run_count: u64,
            avg_pass_rate: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            last_run_id: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            last_run_status: Option<String>,
        }
        #[derive(Serialize)]
        struct Answer {
            total: usize,
            by_status: std::collections::BTreeMap<String, u64>,
            workers: Vec<Line>,
        }
        json_answer(&Answer {
            total: all.len(),
            by_status: counts,
            workers: all
                .iter()
                .filter(|w| status.as_ref().is_none_or(|s| &w.status == s))
                .map(|w| Line {
                    worker_id: w.worker_id.clone(),
                    status: w.status.clone(),
                    last_seen: time(&w.last_seen),
                    current_run: w.current_run.clone(),
                    host: w.host.clone(),
                    project: w.project.clone(),
                    run_count: w.run_count,
                    avg_pass_rate: rate(w.avg_pass_rate),
                    last_run_id: w.last_run_id.clone(),
                    last_run_status: w.last_run_status.clone(),
                })
                .collect(),
        })
    }

    async fn failure_stats(&self, args: JsonObject) -> ToolResult {
        let a: FailureStatsArgs = parse("get_failure_stats", args)?;
        let limit = bounded("limit", a.limit, 20, 1, 500)?;
        let days = match a.days {
            None => None,
            Some(d) => Some(bounded("days", Some(d), 7, 1, 3650)?),
        };
        let filter = RunFilter {
            project: given(a.project),
            branch: given(a.branch),
            worker_id: given(a.worker_id),
            status: None,
        };
        let stats = self
            .master
            .failure_stats(&filter, &given(a.owner), days, limit)
            .await?;
        let project = filter.project.clone();
        #[derive(Serialize)]
        struct Line {
            test_id: String,
            project: String,
            fail_count: u64,
            last_failed_at: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            last_message: Option<String>,
            last_run_id: String,
        }
        #[derive(Serialize)]
        struct Answer {
            window: String,
            project: String,
            shown: usize,
            tests: Vec<Line>,
        }
        json_answer(&Answer {
            window: days.map_or_else(|| "all stored runs".into(), |d| format!("last {d} days")),
            project: project.unwrap_or_else(|| "all projects".into()),
            shown: stats.len(),
            tests: stats
                .iter()
                .map(|s| Line {
                    test_id: trim_end(&s.test_id, 500),
                    project: s.project.clone(),
                    fail_count: s.fail_count,
                    last_failed_at: time(&s.last_failed_at),
                    last_message: s.last_message.as_deref().map(|m| trim_end(m, 300)),
                    last_run_id: s.last_run_id.clone(),
                })
                .collect(),
        })
    }

    async fn compare(&self, args: JsonObject) -> ToolResult {
        let a: CompareArgs = parse("compare_runs", args)?;
        let limit = bounded("limit", a.limit, 20, 1, 200)?;
        let mut q: Vec<(&'static str, String)> = vec![("limit", limit.to_string())];
        for (side, id, branch) in [
            ("base", given(a.base_run_id), given(a.base_branch)),
            ("head", given(a.head_run_id), given(a.head_branch)),
        ] {
            match (id, branch) {
                (Some(id), None) => {
                    check_run_id(&id)?;
                    q.push((side, id));
                }
                (None, Some(b)) => q.push((
                    if side == "base" {
                        "base_branch"
                    } else {
                        "head_branch"
                    },
                    b,
                )),
                (Some(_), Some(_)) => {
                    return Err(ToolError::Argument(format!(
                        "give {side}_run_id or {side}_branch, not both"
                    )));
                }
                (None, None) => {
                    return Err(ToolError::Argument(format!(
                        "name the {side} run: {side}_run_id, or project with {side}_branch \
                         (get_summary lists run ids and branches)"
                    )));
                }
            }
        }
        if let Some(p) = given(a.project) {
            q.push(("project", p));
        }
        let mut v = self.master.compare(&q).await?;
        // Compact for a model: trimmed messages, the runs' essentials only.
        let run = |r: &serde_json::Value| {
            serde_json::json!({
                "run_id": r["run_id"], "project": r["project"], "branch": r["branch"],
                "commit": r["commit"], "worker_id": r["worker_id"], "started_at": r["timestamp"],
                "status": r["status"], "pass_rate": r["pass_rate"], "total": r["total"],
                "failed": r["failed"], "error": r["error"],
            })
        };
        let mut changes = v["changes"].take();
        if let Some(lists) = changes.as_object_mut() {
            // Only the lists (objects with `items`) are touched; scalars such
            // as thresholds pass through as they are.
            let items = lists
                .values_mut()
                .filter_map(|l| l.get_mut("items")?.as_array_mut())
                .flatten();
            for item in items.filter_map(|i| i.as_object_mut()) {
                if let Some(serde_json::Value::String(m)) = item.get_mut("message") {
                    *m = trim_end(m, 300);
                }
            }
        }
        json_answer(&serde_json::json!({
            "base": run(&v["base"]),
            "head": run(&v["head"]),
            "changes": changes,
        }))
    }

    async fn report(&self, args: JsonObject) -> ToolResult {
        let a: ReportArgs = parse("get_report", args)?;
        let scope = ReportScope::new(a.project, a.branch, a.worker_id, a.runs, a.group_by)?;
        let output = match given(a.output_path) {
            Some(raw) => Some((self.report_file(&raw)?, raw)),
            None => None,
        };
        let RenderedReport { html, summary } = self.report_page(&scope).await?;
        let uri = report_uri(&scope.filter.project);
        match output {
            Some((dir, raw)) => {
                let path = dir.write(&raw, &html).map_err(ToolError::Output)?;
                Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                    "Wrote the HTML report ({} bytes) to {}. {summary}",
                    html.len(),
                    path.display()
                ))]))
            }
            None => Ok(CallToolResult::success(vec![
                ContentBlock::text(format!(
                    "{summary} The HTML report ({} bytes, self-contained) is attached as {uri}.",
                    html.len()
                )),
                ContentBlock::resource(
                    ResourceContents::text(html, uri).with_mime_type("text/html"),
                ),
            ])),
        }
    }

    /// Fetches what a report shows from the master and renders it: the one
    /// path of `get_report` and of the `/report` page.
    pub(crate) async fn report_page(
        &self,
        scope: &ReportScope,
    ) -> Result<RenderedReport, ToolError> {
        let (filter, runs_n) = (&scope.filter, scope.runs);
        let mut runs = self.master.runs(filter, runs_n).await?;
        runs.reverse();
        let latest_id = runs.last().ok_or_else(|| no_runs(filter))?.run_id.clone();
        let (main, flaky, clusters) = tokio::join!(
            async {
                tokio::try_join!(
                    // Failures only (one more than shown, so "and N more"
                    // is known from the counts), and the slowest cases
                    // apart: a 60,000-case run is not fetched whole.
                    self.master
                        .run(&latest_id, Some("failed,error"), REPORT_FAILURES_LIMIT),
                    self.master
                        .slowest_cases(&latest_id, report::SLOWEST_SHOWN as u32),
                    self.master.failure_stats(filter, &None, None, 10),
                    self.master.workers(),
                )
            },
            // The sections cover the report's runs, like its trend.
            self.master
                .flaky(filter, runs_n, report::SECTION_ROWS as u32),
            self.master
                .clusters(filter, runs_n, report::SECTION_ROWS as u32),
        );
        let (latest, slowest, stats, workers) = main?;
        // The analytics sections are extras: a master that cannot answer
        // them (older, or busy) still gets its report, saying so.
        let flaky = flaky
            .inspect_err(|e| tracing::warn!("report without flaky tests: {e}"))
            .ok();
        let clusters = clusters
            .inspect_err(|e| tracing::warn!("report without failure clusters: {e}"))
            .ok();
        // The workers table follows the report's filters: the one worker
        // asked for, else the workers whose latest run is of this project.
        let workers: Vec<_> = workers
            .into_iter()
            .filter(|w| match (&filter.worker_id, &filter.project) {
                (Some(id), _) => &w.worker_id == id,
                (None, Some(p)) => w.project.as_deref() == Some(p.as_str()),
                (None, None) => true,
            })
            .collect();
        let html = report::render(&ReportInput {
            filter,
            runs: &runs,
            latest: &latest,
            slowest: Some(&slowest.cases),
            failure_stats: &stats,
            workers: &workers,
            flaky: flaky.as_ref(),
            clusters: clusters.as_ref(),
            group_by_owner: scope.group_by_owner,
            master_url: self.master.base_url(),
            generated_at: Utc::now(),
        })
        .map_err(|e| ToolError::Output(format!("rendering the report failed: {e}")))?;

        let r = &latest.run;
        let rates: Vec<f64> = runs.iter().filter_map(|r| rate(r.pass_rate)).collect();
        let trend = match (rates.first(), rates.last()) {
            (Some(a), Some(b)) if rates.len() > 1 => {
                format!("pass rate over {} runs: {a:.1}% → {b:.1}%", runs.len())
            }
            _ => format!("{} run(s) in the trend", runs.len()),
        };
        let summary = format!(
            "Test report for {} ({}): latest run {} {} on {} at {}: {} tests, {} passed, {} failed, \
             {} errors, {} skipped, pass rate {}; {trend}. {} frequent failures, {} workers.",
            filter.project.as_deref().unwrap_or("all projects"),
            filters_text(filter),
            r.run_id,
            r.status,
            r.worker_id,
            time(&r.started_at),
            r.total,
            r.passed,
            r.failed,
            r.error,
            r.skipped,
            report::pct(rate(r.pass_rate)),
            stats.len(),
            workers.len(),
        );
        Ok(RenderedReport { html, summary })
    }
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

#[tool_handler(
    name = "ptp-mcp",
    router = (Self::all_tools() + self.local_tools()),
    instructions = "pytest-platform: test results from CI workers. Start with get_summary (recent \
runs, run ids, project names); get_failures explains a failed run; get_trend shows whether the \
pass rate improves; get_failure_stats finds chronically failing tests; get_flaky_tests finds tests \
that pass and fail on the same code; get_failure_clusters groups failures by cause; \
get_test_history follows one test; get_slow_tests explains a slower suite; get_quarantine lists \
a project's quarantined tests; compare_runs says what \
a run broke; get_workers shows CI runners; get_report makes a self-contained HTML report. These \
tools only read. When a project root is configured, run_tests runs its tests on this machine \
(published to the master when NATS is configured), run_failed reruns the last local failures and \
list_tests lists test ids."
)]
impl ServerHandler for PtpMcp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_with_clear_messages() {
        let e = bounded("limit", Some(0), 10, 1, 100).expect_err("0");
        assert_eq!(
            e.to_string(),
            "limit must be between 1 and 100, got 0; leave it out for the default of 10"
        );
        assert_eq!(bounded("limit", None, 10, 1, 100).ok(), Some(10));
        assert!(check_run_id("0190-abc_1.2").is_ok());
        for bad in ["", "..", "../workers", "a b", &"x".repeat(129)] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
        let e = parse::<SummaryArgs>(
            "get_summary",
            serde_json::json!({"limits": 3})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `limits`"), "{e}");
    }

    #[test]
    fn report_uri_is_encoded() {
        assert_eq!(report_uri(&None), "report://all");
        assert_eq!(
            report_uri(&Some("a b/<x>".into())),
            "report://a%20b%2F%3Cx%3E"
        );
    }

    #[test]
    fn every_tool_has_a_documented_schema() {
        let tools = (PtpMcp::all_tools() + PtpMcp::local_tool_router()).list_all();
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "compare_runs",
                "get_failure_clusters",
                "get_failure_stats",
                "get_failures",
                "get_flaky_tests",
                "get_quarantine",
                "get_report",
                "get_slow_tests",
                "get_summary",
                "get_test_history",
                "get_trend",
                "get_workers",
                "list_tests",
                "run_failed",
                "run_tests"
            ]
        );
        for t in &tools {
            let props = t.input_schema.get("properties").and_then(|p| p.as_object());
            for (name, p) in props.into_iter().flatten() {
                assert!(
                    p.get("description").is_some(),
                    "{}: argument {name} has no description",
                    t.name
                );
            }
        }
        let report = tools
            .iter()
            .find(|t| t.name == "get_report")
            .expect("get_report");
        assert_eq!(
            report.input_schema["properties"]["runs"]["maximum"],
            serde_json::json!(REPORT_RUNS_MAX),
            "the schema states the bound the tool and the page apply"
        );
    }
}
