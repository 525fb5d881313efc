//! The `get_report` tool and the one path that fetches and renders a
//! report ([`PtpMcp::report_page`]), which the `/report` page uses too.
//!
//! Shape: [`ReportScope`] is the one rule for what a report covers (the
//! tool's arguments and the page's query both go through
//! [`ReportScope::new`]); the rendering itself is [`crate::report`]'s.
//!
//! Guarantees: a report only reads from the master; it writes a file only
//! inside the server's report dir ([`crate::report_dir`]), checked before
//! any work; the analytics sections are extras, so a master that cannot
//! answer them still gets its report, saying so.

use chrono::Utc;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, ResourceContents};
use rmcp::{ErrorData, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::answer::{
    ToolError, ToolResult, bounded, check_one_of, filters_text, finish, no_runs, parse, rate, time,
};
use crate::args::{given, input_schema};
use crate::master::RunFilter;
use crate::report::{self, ReportInput};
use crate::report_dir::ReportDir;
use crate::server::PtpMcp;

/// Failed and errored cases fetched for a report: the ones it shows plus
/// one, so the count of those not shown comes from the run's counts.
pub const REPORT_FAILURES_LIMIT: u32 = report::FAILURES_SHOWN as u32 + 1;

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

const REPORT_DESC: &str = "A self-contained HTML report (no external resources; opens offline): \
headline of the latest run, pass-rate trend chart, failures with tracebacks, most frequent \
failures, slowest tests and workers. Returns a short text summary plus the HTML as an embedded \
resource (mime text/html, uri report://<project>); with output_path (a file name ending in .html) \
it writes the HTML into the server's report dir instead and returns the path. File output is off \
unless the server was started with --report-dir (PTP_MCP_REPORT_DIR). Use it when the user wants a report to open, save or \
share. Prefer get_summary, get_trend and get_failures for answering questions in the chat: \
their JSON is much smaller.";

#[tool_router(router = report_tool_router, vis = "pub(crate)")]
impl PtpMcp {
    #[tool(
        description = REPORT_DESC,
        input_schema = input_schema::<ReportArgs>(),
        annotations(title = "HTML test report", read_only_hint = false, destructive_hint = false, open_world_hint = false)
    )]
    async fn get_report(&self, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        Ok(finish("get_report", self.report(args)).await)
    }
}

impl PtpMcp {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_uri_is_encoded() {
        assert_eq!(report_uri(&None), "report://all");
        assert_eq!(
            report_uri(&Some("a b/<x>".into())),
            "report://a%20b%2F%3Cx%3E"
        );
    }
}
