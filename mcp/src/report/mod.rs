//! The HTML report: one self-contained file (no external scripts, fonts or
//! styles) that opens offline, in a browser or in an MCP client's viewer.
//!
//! Shape: [`ReportInput`] holds what the master answered; [`render`] turns it
//! into view structs of preformatted strings and renders
//! `templates/report.html` with askama. Sections: headline of the latest
//! run, pass-rate trend as inline SVG, failures of the latest run (message
//! and collapsible traceback, quarantined ones marked; one list, or one per
//! owner with `group_by_owner`), most frequent failures, slowest tests,
//! workers.
//!
//! Guarantees:
//! - Everything that comes from test data is escaped by askama's autoescape
//!   (never `|safe`), and no data goes into an attribute: hrefs, styles and
//!   classes are this module's constants, SVG coordinates its own numbers.
//!   A test id holding `<script>` or `javascript:` shows as text.
//! - Size is bounded whatever the run: lists are cut with an "and N more"
//!   line and long texts with a `… [trimmed N chars]` marker, so a
//!   60,000-case run stays well under a few hundred kilobytes.
//! - Colour is never the only signal: statuses carry a word and a symbol,
//!   chart points a shape.
//!
//! Parts: [`policy`] (the marker and the served page's CSP), [`format`]
//! (badges, percentages, durations), [`chart`] (the SVG trend); this module
//! holds the input, the view and [`render`].

mod chart;
mod format;
mod policy;

use askama::Template;
use chrono::{DateTime, Utc};

use crate::master::{
    Case, ClusterReport, FailureStat, FlakyReport, Run, RunDetail, RunFilter, Worker,
};
use crate::text::{short, trim_end, trim_middle};
use chart::{Chart, chart};
use format::{Badge, outcome_badge, run_badge, when, worker_badge};
pub use format::{pct, secs};
pub use policy::{GENERATOR_MARKER, MARKER_WITHIN, content_security_policy, is_report};

/// Failures of the latest run shown in full (message and traceback).
pub const FAILURES_SHOWN: usize = 50;
/// Characters of a failure message kept.
pub const MESSAGE_CHARS: usize = 800;
/// Characters of a traceback kept (head and tail).
pub const TRACEBACK_CHARS: usize = 4000;
/// Slowest tests listed.
pub const SLOWEST_SHOWN: usize = 10;
/// Workers listed.
pub const WORKERS_SHOWN: usize = 50;
/// Rows of the flaky-test and failure-cluster sections.
pub const SECTION_ROWS: usize = 15;
/// Characters of a test id kept (ids can be 4 KiB of parameters).
pub const TEST_ID_CHARS: usize = 300;

/// What the master answered, for one report.
pub struct ReportInput<'a> {
    /// The filters the report was asked for.
    pub filter: &'a RunFilter,
    /// The runs of the trend, oldest first (the last is the latest run).
    pub runs: &'a [Run],
    /// The latest run with its cases, failures first.
    pub latest: &'a RunDetail,
    /// The latest run's slowest cases, slowest first, when fetched apart
    /// (else they are ranked from `latest`'s cases).
    pub slowest: Option<&'a [Case]>,
    /// Most frequently failing tests.
    pub failure_stats: &'a [FailureStat],
    /// Every worker.
    pub workers: &'a [Worker],
    /// Flaky tests of the project (and branch), when the master answered.
    pub flaky: Option<&'a FlakyReport>,
    /// Failure clusters of the project (and branch), when the master answered.
    pub clusters: Option<&'a ClusterReport>,
    /// List the latest run's failures under their owners (CODEOWNERS).
    pub group_by_owner: bool,
    /// The master the data came from (shown as text).
    pub master_url: &'a str,
    /// When the report was made.
    pub generated_at: DateTime<Utc>,
}

struct Headline {
    badge: Badge,
    run_id: String,
    started: String,
    duration: String,
    pass_rate: String,
    total: u64,
    passed: u64,
    failed: u64,
    error: u64,
    skipped: u64,
    xfailed: u64,
    xpassed: u64,
    worker: String,
    host: Option<String>,
    branch: String,
    commit: String,
    note: Option<String>,
    partial: bool,
}

struct TrendRow {
    run_id: String,
    started: String,
    branch: String,
    worker: String,
    badge: Badge,
    pass_rate: String,
    passed: u64,
    failed: u64,
    error: u64,
    total: u64,
}

#[derive(Clone)]
struct FailureRow {
    test_id: String,
    badge: Badge,
    duration: String,
    message: Option<String>,
    traceback: Option<String>,
    retries: u32,
    quarantined: bool,
}

/// Failures under one heading: an owner's, "no owner", or (not grouped)
/// all of them without a heading.
struct FailureGroup {
    owner: Option<String>,
    failures: Vec<FailureRow>,
}

struct StatRow {
    test_id: String,
    fail_count: u64,
    last_failed: String,
    message: Option<String>,
    run_id: String,
}

struct FlakyRow {
    test_id: String,
    reasons: String,
    flip_rate: String,
    failed: String,
    last_seen: String,
    message: Option<String>,
}

struct ClusterRow {
    id: String,
    signature: String,
    frame: Option<String>,
    count: u64,
    runs: u64,
    tests: String,
    last_seen: String,
}

struct SlowRow {
    test_id: String,
    badge: Badge,
    duration: String,
}

struct WorkerRow {
    worker_id: String,
    badge: Badge,
    last_seen: String,
    current_run: Option<String>,
    host: Option<String>,
    runs: u64,
    avg_pass_rate: String,
    last_run: Option<String>,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    title: String,
    scope: String,
    generated: String,
    master_url: String,
    headline: Headline,
    chart: Chart,
    trend: Vec<TrendRow>,
    failure_groups: Vec<FailureGroup>,
    failures_shown: usize,
    failures_total: u64,
    failures_more: u64,
    failures_note: Option<String>,
    quarantined_failures: u64,
    stats: Vec<StatRow>,
    flaky: Option<Vec<FlakyRow>>,
    flaky_more: u64,
    flaky_runs: u64,
    /// Runs of the window that carried failures only (no evidence).
    flaky_failures_only: u64,
    clusters: Option<Vec<ClusterRow>>,
    clusters_more: u64,
    clusters_runs: u64,
    slowest: Vec<SlowRow>,
    slowest_note: Option<String>,
    workers: Vec<WorkerRow>,
    workers_more: usize,
}

/// Renders the report. The HTML is self-contained and bounded in size.
pub fn render(input: &ReportInput<'_>) -> Result<String, askama::Error> {
    page(input).render()
}

fn page(input: &ReportInput<'_>) -> ReportPage {
    let run = &input.latest.run;
    let project = input
        .filter
        .project
        .clone()
        .unwrap_or_else(|| "all projects".into());
    let mut scope = vec![format!("project: {project}")];
    scope.push(format!(
        "branch: {}",
        input.filter.branch.as_deref().unwrap_or("all")
    ));
    if let Some(w) = &input.filter.worker_id {
        scope.push(format!("worker: {w}"));
    }
    scope.push(format!("last {} runs", input.runs.len()));

    let headline = Headline {
        badge: run_badge(&run.status),
        run_id: run.run_id.clone(),
        started: when(&run.started_at),
        duration: secs(run.duration),
        pass_rate: pct(run.pass_rate),
        total: run.total,
        passed: run.passed,
        failed: run.failed,
        error: run.error,
        skipped: run.skipped,
        xfailed: run.xfailed,
        xpassed: run.xpassed,
        worker: run.worker_id.clone(),
        host: run.host.clone(),
        branch: run.branch.clone().unwrap_or_else(|| "(none)".into()),
        commit: run
            .commit
            .as_deref()
            .map_or_else(|| "(unknown)".into(), |c| short(c, 12)),
        note: run.note.as_deref().map(|n| trim_end(n, MESSAGE_CHARS)),
        partial: !run.cases_complete,
    };

    let failing: Vec<&Case> = input
        .latest
        .cases
        .iter()
        .filter(|c| c.is_failure())
        .collect();
    let failures_total = (run.failed + run.error).max(failing.len() as u64);
    let shown: Vec<&Case> = failing.iter().take(FAILURES_SHOWN).copied().collect();
    let failures: Vec<FailureRow> = shown
        .iter()
        .map(|c| FailureRow {
            test_id: trim_end(&c.test_id, TEST_ID_CHARS),
            badge: outcome_badge(&c.outcome),
            duration: secs(c.duration),
            message: c.message.as_deref().map(|m| trim_end(m, MESSAGE_CHARS)),
            traceback: c
                .traceback
                .as_deref()
                .filter(|t| !t.trim().is_empty())
                .map(|t| trim_middle(t, TRACEBACK_CHARS)),
            retries: c.retries,
            quarantined: c.quarantined,
        })
        .collect();
    let failures_shown = failures.len();
    let failure_groups = if input.group_by_owner {
        by_owner(&shown, failures)
    } else {
        vec![FailureGroup {
            owner: None,
            failures,
        }]
    };
    let failures_more = failures_total.saturating_sub(failures_shown as u64);
    let failures_note = (!run.cases_complete && failures_total > 0).then(|| {
        "This run came in the original system's payload: failures have messages but no tracebacks."
            .to_string()
    });

    let mut by_duration: Vec<&Case> = match input.slowest {
        Some(s) => s.iter().collect(),
        None => input.latest.cases.iter().collect(),
    };
    by_duration.sort_by(|a, b| b.duration.total_cmp(&a.duration));
    let slowest = by_duration
        .iter()
        .take(SLOWEST_SHOWN)
        .map(|c| SlowRow {
            test_id: trim_end(&c.test_id, TEST_ID_CHARS),
            badge: outcome_badge(&c.outcome),
            duration: secs(c.duration),
        })
        .collect();
    let slowest_note = if !run.cases_complete {
        Some("Only failed tests are stored for this run, so only they are ranked.".to_string())
    } else if input.slowest.is_none() && input.latest.cases_omitted > 0 {
        Some(format!(
            "Ranked among the first {} of {} cases (and {} more not fetched).",
            input.latest.cases.len(),
            run.total,
            input.latest.cases_omitted
        ))
    } else {
        None
    };

    let stats = input
        .failure_stats
        .iter()
        .map(|s| StatRow {
            test_id: trim_end(&s.test_id, TEST_ID_CHARS),
            fail_count: s.fail_count,
            last_failed: when(&s.last_failed_at),
            message: s.last_message.as_deref().map(|m| trim_end(m, 300)),
            run_id: s.last_run_id.clone(),
        })
        .collect();

    let flaky = input.flaky.map(|f| {
        f.tests
            .iter()
            .take(SECTION_ROWS)
            .map(|t| FlakyRow {
                test_id: trim_end(&t.test_id, TEST_ID_CHARS),
                reasons: t.reasons.join(", ").replace('_', " "),
                flip_rate: format!("{:.0}%", t.flip_rate * 100.0),
                failed: format!("{} of {}", t.failed_runs, t.runs),
                last_seen: when(&t.last_seen),
                message: t.last_message.as_deref().map(|m| trim_end(m, 300)),
            })
            .collect()
    });
    let flaky_more = input
        .flaky
        .map_or(0, |f| f.total.saturating_sub(SECTION_ROWS as u64));
    let clusters = input.clusters.map(|c| {
        c.clusters
            .iter()
            .take(SECTION_ROWS)
            .map(|c| ClusterRow {
                id: c.id.clone(),
                signature: trim_end(
                    &match &c.exception {
                        Some(e) if c.message.is_empty() => e.clone(),
                        Some(e) => format!("{e}: {}", c.message),
                        None => c.message.clone(),
                    },
                    300,
                ),
                frame: c.frame.clone(),
                count: c.count,
                runs: c.runs,
                tests: {
                    let mut t: Vec<String> = c
                        .tests
                        .iter()
                        .take(3)
                        .map(|t| trim_end(t, TEST_ID_CHARS))
                        .collect();
                    if c.tests_total > 3 {
                        t.push(format!("… {} tests in all", c.tests_total));
                    }
                    t.join("\n")
                },
                last_seen: when(&c.last_seen),
            })
            .collect()
    });
    let clusters_more = input
        .clusters
        .map_or(0, |c| c.total.saturating_sub(SECTION_ROWS as u64));

    let workers = input
        .workers
        .iter()
        .take(WORKERS_SHOWN)
        .map(|w| WorkerRow {
            worker_id: w.worker_id.clone(),
            badge: worker_badge(&w.status),
            last_seen: when(&w.last_seen),
            current_run: w.current_run.clone(),
            host: w.host.clone(),
            runs: w.run_count,
            avg_pass_rate: pct(w.avg_pass_rate),
            last_run: w.last_run_status.as_deref().map(|s| s.replace('_', " ")),
        })
        .collect();

    let trend = input
        .runs
        .iter()
        .rev()
        .map(|r| TrendRow {
            run_id: r.run_id.clone(),
            started: when(&r.started_at),
            branch: r.branch.clone().unwrap_or_default(),
            worker: r.worker_id.clone(),
            badge: run_badge(&r.status),
            pass_rate: pct(r.pass_rate),
            passed: r.passed,
            failed: r.failed,
            error: r.error,
            total: r.total,
        })
        .collect();

    ReportPage {
        title: format!("Test report: {project}"),
        scope: scope.join(" · "),
        generated: when(&input.generated_at),
        master_url: input.master_url.to_string(),
        headline,
        chart: chart(input.runs),
        trend,
        failure_groups,
        failures_shown,
        failures_total,
        failures_more,
        failures_note,
        quarantined_failures: run.quarantined_failures,
        stats,
        flaky,
        flaky_more,
        flaky_runs: input.flaky.map_or(0, |f| f.runs_considered),
        flaky_failures_only: input.flaky.map_or(0, |f| f.failures_only_excluded),
        clusters,
        clusters_more,
        clusters_runs: input.clusters.map_or(0, |c| c.runs_considered),
        slowest,
        slowest_note,
        workers,
        workers_more: input.workers.len().saturating_sub(WORKERS_SHOWN),
    }
}

/// Owners kept per failure when grouping (the wire's bound), and characters
/// of an owner's name shown.
const OWNERS_PER_TEST: usize = 16;
const OWNER_CHARS: usize = 100;

/// `rows` (made from `cases`, in the same order) under one heading per
/// owner, owners sorted, "no owner" last; a test with several owners is
/// under each.
fn by_owner(cases: &[&Case], rows: Vec<FailureRow>) -> Vec<FailureGroup> {
    let mut groups: std::collections::BTreeMap<String, Vec<FailureRow>> = Default::default();
    let mut unowned = Vec::new();
    for (case, row) in cases.iter().zip(rows) {
        if case.owners.is_empty() {
            unowned.push(row);
            continue;
        }
        for owner in case.owners.iter().take(OWNERS_PER_TEST) {
            groups
                .entry(trim_end(owner, OWNER_CHARS))
                .or_default()
                .push(row.clone());
        }
    }
    let mut out: Vec<FailureGroup> = groups
        .into_iter()
        .map(|(owner, failures)| FailureGroup {
            owner: Some(owner),
            failures,
        })
        .collect();
    if !unowned.is_empty() {
        out.push(FailureGroup {
            owner: Some("no owner".into()),
            failures: unowned,
        });
    }
    out
}
