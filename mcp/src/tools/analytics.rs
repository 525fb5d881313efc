//! The analytics tools: `get_failure_stats`, `get_flaky_tests`,
//! `get_test_history`, `get_failure_clusters`, `get_slow_tests`,
//! `get_quarantine`.
//!
//! Each is one read of the master's analytics API (`/failures/stats`, `/flaky`,
//! `/tests/{id}/history`, `/failures/clusters`, `/tests/slow`,
//! `/quarantine`), checked
//! before it is sent and compacted after: messages trimmed, run lists cut,
//! passing tests never listed, totals always given. The rules themselves
//! (what makes a test flaky, how failures are grouped) live in the master,
//! so these tools answer exactly what its API answers.

use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{ErrorData, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::answer::{ToolError, ToolResult, bounded, finish, json_answer, parse, time};
use crate::args::{given, input_schema};
use crate::master::RunFilter;
use crate::server::PtpMcp;
use crate::text::trim_end;

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

/// The window shared by the analytics tools.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowArgs {
    /// Only this project. Default: all projects.
    pub project: Option<String>,
    /// Only runs of this branch (e.g. "main").
    pub branch: Option<String>,
    /// Only runs of the last N days, 1 to 3650.
    #[schemars(range(min = 1, max = 3650))]
    pub days: Option<i64>,
    /// How many of the newest runs to look at, 1 to 1000. Default 50 (20 for get_slow_tests).
    #[schemars(range(min = 1, max = 1000))]
    pub runs: Option<i64>,
    /// Only tests of this owner, exactly as CODEOWNERS names it (e.g. "@acme/cart" or "qa@example.com"), by the owners the newest run named.
    pub owner: Option<String>,
    /// Most entries listed, 1 to 100. Default 20 (totals are always given).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
}

/// Arguments of `get_slow_tests`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowArgs {
    /// Only this project. Default: all projects.
    pub project: Option<String>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// Only runs of the last N days, 1 to 3650.
    #[schemars(range(min = 1, max = 3650))]
    pub days: Option<i64>,
    /// How many of the newest runs to look at, 2 to 1000. Default 20.
    #[schemars(range(min = 2, max = 1000))]
    pub runs: Option<i64>,
    /// Only tests of this owner, exactly as CODEOWNERS names it (e.g. "@acme/cart" or "qa@example.com"), by the owners the newest run named.
    pub owner: Option<String>,
    /// Of those, how many newest runs are "recent" (compared with the rest). Default 5.
    #[schemars(range(min = 1, max = 999))]
    pub recent: Option<i64>,
    /// Most tests per list, 1 to 100. Default 10.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
}

/// Arguments of `get_test_history`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// The test id exactly as other tools list it (e.g. "tests.test_cart::test_total").
    pub test_id: String,
    /// Only runs of this project.
    pub project: Option<String>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// How many of the test's newest runs, 1 to 200. Default 30.
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<i64>,
}

/// Arguments of `get_quarantine`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineArgs {
    /// The project whose quarantined tests to list.
    pub project: String,
    /// Most tests listed, 1 to 100. Default 50 (the total is always given).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
}

const FAILURE_STATS_DESC: &str = "The tests that failed most often in a window (the last `days` \
days, or all stored runs), most failures first, with the count, when each last failed, its last \
message and run; narrow it to a branch or a worker. Use it to find flaky or chronically broken \
tests and to prioritise fixes. Prefer get_failures for the full tracebacks of one run, and \
compare_runs for what one run broke compared to another.";

const QUARANTINE_DESC: &str = "A project's quarantined tests: tests whose failures do not fail \
the build (the agent exits 0 when they are the only failures; their real outcomes are still \
stored). For each: test id, reason, since when, when it expires, and whether the flaky detector \
quarantined it (auto). Use it for 'why is CI green although this test fails?', 'what is \
quarantined?'. Prefer get_flaky_tests for what might deserve quarantine.";

const FLAKY_DESC: &str = "Flaky tests: tests that both passed and failed on the same commit, \
passed only after a retry, or keep flipping between pass and fail on a branch, over the newest \
runs (runs where most tests failed, i.e. outages, are left out). For each: why (reasons), flip \
rate, runs and failures, the commits where it both passed and failed, when it last happened and \
the last failure message. Use it for 'which tests are flaky?', 'can I trust this red build?', \
'what should we quarantine?'. Prefer get_failure_stats for tests that fail often (flaky or \
broken), get_test_history for one test's runs.";

const HISTORY_DESC: &str = "One test over time, newest run first: outcome, duration, run id, \
branch, commit, worker and failure message per run, with its pass rate and median duration. Use \
it for 'when did this test start failing?', 'is it flaky or broken?', 'did it get slower?', or \
after get_failures/get_flaky_tests named a test. Needs the exact test id as other tools list it. \
Prefer get_failure_stats to rank many tests, compare_runs for two whole runs.";

const CLUSTERS_DESC: &str = "Failures grouped by cause: failures with the same exception type, \
the same message once numbers, addresses, ids and temp paths are masked, and the same top frame \
form one cluster, with how many failures, runs and tests it covers, when first and last seen, \
and a real example. Use it for 'are these 40 failures one problem?', 'what is breaking the \
build?', to find an infrastructure outage or a shared root cause. Prefer get_failures for one \
run's tracebacks.";

const SLOW_DESC: &str = "Why the suite got slow: the slowest tests by median duration over the \
newest runs, and duration regressions, tests whose median over the most recent runs is at least \
1.5x their earlier median and at least 0.1 s slower (medians, so one stalled run does not count). \
Use it for 'why is CI slower?', 'which tests should we speed up?'. Prefer compare_runs for the \
duration changes between two particular runs.";

fn window_query(
    project: Option<String>,
    branch: Option<String>,
    owner: Option<String>,
    days: Option<i64>,
    runs: (&'static str, Option<i64>, u32, u32),
    limit: (Option<i64>, u32),
) -> Result<Vec<(&'static str, String)>, ToolError> {
    let mut q = vec![
        (
            "runs",
            bounded(runs.0, runs.1, runs.2, runs.3, 1000)?.to_string(),
        ),
        (
            "limit",
            bounded("limit", limit.0, limit.1, 1, 100)?.to_string(),
        ),
    ];
    if let Some(d) = days {
        q.push(("days", bounded("days", Some(d), 1, 1, 3650)?.to_string()));
    }
    if let Some(p) = given(project) {
        q.push(("project", p));
    }
    if let Some(b) = given(branch) {
        q.push(("branch", b));
    }
    if let Some(o) = given(owner) {
        q.push(("owner", o));
    }
    Ok(q)
}

/// Cuts a list of strings to `n`.
fn first(v: &Value, n: usize) -> Value {
    match v.as_array() {
        Some(a) => Value::Array(a.iter().take(n).cloned().collect()),
        None => Value::Null,
    }
}

fn trimmed(v: &Value, n: usize) -> Value {
    match v.as_str() {
        Some(s) => Value::String(trim_end(s, n)),
        None => Value::Null,
    }
}

#[tool_router(router = analytics_tool_router, vis = "pub(crate)")]
impl PtpMcp {
    #[tool(
        description = FAILURE_STATS_DESC,
        input_schema = input_schema::<FailureStatsArgs>(),
        annotations(title = "Most frequent failures", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_failure_stats(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_failure_stats", self.failure_stats(args)).await)
    }

    #[tool(
        description = FLAKY_DESC,
        input_schema = input_schema::<WindowArgs>(),
        annotations(title = "Flaky tests", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_flaky_tests(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_flaky_tests", self.flaky_tests(args)).await)
    }

    #[tool(
        description = HISTORY_DESC,
        input_schema = input_schema::<HistoryArgs>(),
        annotations(title = "Test history", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_test_history(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_test_history", self.test_history(args)).await)
    }

    #[tool(
        description = CLUSTERS_DESC,
        input_schema = input_schema::<WindowArgs>(),
        annotations(title = "Failure clusters", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_failure_clusters(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_failure_clusters", self.failure_clusters(args)).await)
    }

    #[tool(
        description = SLOW_DESC,
        input_schema = input_schema::<SlowArgs>(),
        annotations(title = "Slow tests", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_slow_tests(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_slow_tests", self.slow_tests(args)).await)
    }

    #[tool(
        description = QUARANTINE_DESC,
        input_schema = input_schema::<QuarantineArgs>(),
        annotations(title = "Quarantined tests", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_quarantine(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_quarantine", self.quarantine(args)).await)
    }
}

impl PtpMcp {
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

    async fn quarantine(&self, args: JsonObject) -> ToolResult {
        let a: QuarantineArgs = parse("get_quarantine", args)?;
        let Some(project) = given(Some(a.project)) else {
            return Err(ToolError::Argument(
                "project is required: the project whose quarantined tests to list".into(),
            ));
        };
        let limit = bounded("limit", a.limit, 50, 1, 100)? as usize;
        let v = self
            .master
            .get_value("/quarantine", &[("project", project)])
            .await?;
        let all = v["tests"].as_array().cloned().unwrap_or_default();
        let tests: Vec<Value> = all
            .iter()
            .take(limit)
            .map(|t| {
                json!({
                    "test_id": t["test_id"], "reason": trimmed(&t["reason"], 300),
                    "since": t["since"], "expires_at": t["expires_at"], "auto": t["auto"],
                })
            })
            .collect();
        json_answer(&json!({
            "project": v["project"],
            "total": all.len(),
            "tests": tests,
            "mirror_error": v["mirror_error"],
        }))
    }

    async fn flaky_tests(&self, args: JsonObject) -> ToolResult {
        let a: WindowArgs = parse("get_flaky_tests", args)?;
        let q = window_query(
            a.project,
            a.branch,
            a.owner,
            a.days,
            ("runs", a.runs, 50, 1),
            (a.limit, 20),
        )?;
        let v = self.master.get_value("/flaky", &q).await?;
        let tests: Vec<Value> = v["tests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let commits: Vec<Value> = t["commits"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(3)
                    .map(|c| {
                        json!({
                            "commit": c["commit"],
                            "passed_runs": first(&c["passed_runs"], 3),
                            "failed_runs": first(&c["failed_runs"], 3),
                        })
                    })
                    .collect();
                json!({
                    "test_id": t["test_id"], "project": t["project"], "reasons": t["reasons"],
                    "flip_rate": t["flip_rate"], "flips": t["flips"], "runs": t["runs"],
                    "failed_runs": t["failed_runs"], "retried_runs": t["retried_runs"],
                    "commits": commits, "evidence_runs": first(&t["evidence_runs"], 5),
                    "first_seen": t["first_seen"], "last_seen": t["last_seen"],
                    "last_message": trimmed(&t["last_message"], 300),
                })
            })
            .collect();
        json_answer(&json!({
            "runs_considered": v["runs_considered"],
            "outages_excluded": v["outages_excluded"],
            "failures_only_excluded": v["failures_only_excluded"],
            "total": v["total"],
            "tests": tests,
        }))
    }

    async fn test_history(&self, args: JsonObject) -> ToolResult {
        let a: HistoryArgs = parse("get_test_history", args)?;
        let test_id = a.test_id.trim();
        // Its size is bounded with every argument (`crate::args`).
        if test_id.is_empty() || test_id == "." || test_id == ".." {
            return Err(ToolError::Argument(format!(
                "test_id {:?} is not a test id; take one from get_failures, get_flaky_tests or \
                 get_failure_stats",
                trim_end(test_id, 100)
            )));
        }
        let mut q = vec![("limit", bounded("limit", a.limit, 30, 1, 200)?.to_string())];
        if let Some(p) = given(a.project) {
            q.push(("project", p));
        }
        if let Some(b) = given(a.branch) {
            q.push(("branch", b));
        }
        let v = self.master.test_history(test_id, &q).await?;
        let entries: Vec<Value> = v["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let mut o = json!({
                    "run_id": e["run_id"], "started_at": e["started_at"], "project": e["project"],
                    "branch": e["branch"], "commit": e["commit"], "worker_id": e["worker_id"],
                    "outcome": e["outcome"], "duration_secs": e["duration_secs"],
                });
                if let Some(m) = e["message"].as_str()
                    && let Some(obj) = o.as_object_mut()
                {
                    obj.insert("message".into(), Value::String(trim_end(m, 200)));
                }
                if e["flaky"] == json!(true)
                    && let Some(obj) = o.as_object_mut()
                {
                    obj.insert("passed_on_retry".into(), Value::Bool(true));
                }
                o
            })
            .collect();
        json_answer(&json!({
            "test_id": v["test_id"],
            "runs": v["runs"],
            "outcomes": v["outcomes"],
            "pass_rate": v["pass_rate"],
            "median_duration_secs": v["median_duration_secs"],
            "entries": entries,
        }))
    }

    async fn failure_clusters(&self, args: JsonObject) -> ToolResult {
        let a: WindowArgs = parse("get_failure_clusters", args)?;
        let q = window_query(
            a.project,
            a.branch,
            a.owner,
            a.days,
            ("runs", a.runs, 50, 1),
            (a.limit, 20),
        )?;
        let mut v = self.master.get_value("/failures/clusters", &q).await?;
        let clusters = v.get_mut("clusters").and_then(Value::as_array_mut);
        for c in clusters.into_iter().flatten() {
            if let Some(obj) = c.as_object_mut() {
                if let Some(ex) = obj.get_mut("example").and_then(Value::as_object_mut)
                    && let Some(Value::String(m)) = ex.get_mut("message")
                {
                    *m = trim_end(m, 300);
                }
                if let Some(Value::String(m)) = obj.get_mut("message") {
                    *m = trim_end(m, 200);
                }
            }
        }
        json_answer(&v)
    }

    async fn slow_tests(&self, args: JsonObject) -> ToolResult {
        let a: SlowArgs = parse("get_slow_tests", args)?;
        let runs = bounded("runs", a.runs, 20, 2, 1000)?;
        let mut q = window_query(
            a.project,
            a.branch,
            a.owner,
            a.days,
            ("runs", a.runs, 20, 2),
            (a.limit, 10),
        )?;
        if let Some(r) = a.recent {
            q.push((
                "recent",
                bounded("recent", Some(r), 5, 1, runs - 1)?.to_string(),
            ));
        }
        json_answer(&self.master.get_value("/tests/slow", &q).await?)
    }
}
