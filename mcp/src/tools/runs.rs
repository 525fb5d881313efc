//! The tools that read runs and workers: `get_summary`, `get_trend`,
//! `get_failures`, `get_workers`.
//!
//! Shape: each tool parses its own arguments (so a bad argument becomes a
//! tool error naming the argument and what is allowed, not an opaque
//! protocol error), asks the master through [`crate::master::MasterClient`],
//! and answers compact JSON text for a model to read: no passing-test
//! lists, long texts cut with a `… [trimmed N chars]` marker, pass rates
//! rounded to 0.1. The shared rules are in [`crate::answer`].
//!
//! Guarantees: these tools only read; every failure is a tool error with one
//! sentence a person can act on (which run id is unknown, which argument is
//! wrong).

use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{ErrorData, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::answer::{
    RUN_STATUSES, ToolError, ToolResult, bounded, check_one_of, check_run_id, filters_text, finish,
    json_answer, no_runs, parse, rate, time,
};
use crate::args::{given, input_schema};
use crate::master::{MasterError, Run, RunFilter};
use crate::server::PtpMcp;
use crate::text::{short, trim_end, trim_middle};

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

// ---- answers ----------------------------------------------------------------

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

#[tool_router(router = runs_tool_router, vis = "pub(crate)")]
impl PtpMcp {
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
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

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
}
