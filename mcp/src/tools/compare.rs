//! `compare_runs`: two runs compared test by test, from the master's
//! `/compare`.
//!
//! Shape: the tool names the two runs (by id, or as the latest runs of two
//! branches), the master compares them; this module checks the names
//! before asking and compacts the answer after (messages trimmed, the
//! runs' essentials only).
//!
//! Guarantees: it only reads; a run named twice or not at all is a tool
//! error saying which argument to give.

use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{ErrorData, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::answer::{ToolError, ToolResult, bounded, check_run_id, finish, json_answer, parse};
use crate::args::{given, input_schema};
use crate::server::PtpMcp;
use crate::text::trim_end;

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

const COMPARE_DESC: &str = "Compares two runs test by test: tests that newly fail (with their \
message), tests fixed, tests still failing, tests added and removed, and tests that got much \
slower or faster, each with a total; plus both runs' status and counts. Name the runs by id \
(base_run_id, head_run_id) or as the latest runs of two branches of a project (project, \
base_branch, head_branch). Use it for 'what did this branch/PR break compared to main?' or \
'what changed since the last green run?'. Prefer get_failures for one run's tracebacks and \
get_failure_stats for tests that fail often.";

#[tool_router(router = compare_tool_router, vis = "pub(crate)")]
impl PtpMcp {
    #[tool(
        description = COMPARE_DESC,
        input_schema = input_schema::<CompareArgs>(),
        annotations(title = "Compare two runs", read_only_hint = true, open_world_hint = false)
    )]
    async fn compare_runs(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("compare_runs", self.compare(args)).await)
    }
}

impl PtpMcp {
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
}
