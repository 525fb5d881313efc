//! The MCP tools of [`PtpMcp`], grouped by what they read: [`runs`] (runs
//! and workers), [`compare`] (two runs side by side), [`analytics`] (the
//! master's analytics API), [`report`] (the HTML report) and [`local`]
//! (tests run on this machine); and the `ServerHandler` that offers them.
//!
//! Shape: every group adds its own tool router to [`PtpMcp`]; this module
//! only puts them together ([`PtpMcp::all_tools`]) and names the server.
//! The rules every tool shares (errors, argument checks, [`finish`]) are in
//! [`crate::answer`], below all groups, so no group reads another and
//! nothing below reads this module.
//!
//! Guarantees: a tool never panics and never ends the session; every
//! failure is a `CallToolResult` with `is_error: true` and one sentence a
//! person can act on (which URL is unreachable and what to check, which run
//! id is unknown, which argument is wrong). The master tools only read.
//!
//! [`finish`]: crate::answer::finish

pub mod analytics;
pub mod compare;
pub mod local;
pub mod report;
pub mod runs;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::{ServerHandler, tool_handler};

use crate::server::PtpMcp;

pub use analytics::{FailureStatsArgs, HistoryArgs, QuarantineArgs, SlowArgs, WindowArgs};
pub use compare::CompareArgs;
pub use report::{REPORT_FAILURES_LIMIT, REPORT_RUNS_DEFAULT, REPORT_RUNS_MAX, ReportArgs};
pub use runs::{FailuresArgs, SummaryArgs, TrendArgs, WorkersArgs};

impl PtpMcp {
    /// Every tool that reads the master: runs, comparisons, analytics and
    /// the report.
    pub fn all_tools() -> ToolRouter<PtpMcp> {
        PtpMcp::runs_tool_router()
            + PtpMcp::compare_tool_router()
            + PtpMcp::analytics_tool_router()
            + PtpMcp::report_tool_router()
    }
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
