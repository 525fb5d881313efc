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

use askama::Template;
use chrono::{DateTime, Utc};

use crate::master::{
    Case, ClusterReport, FailureStat, FlakyReport, Run, RunDetail, RunFilter, Worker,
};
use crate::text::{short, trim_end, trim_middle};

/// What `templates/report.html` writes in its `<head>`, within the first
/// [`MARKER_WITHIN`] bytes after `<!doctype html>`: how `get_report` tells a
/// report it wrote (which it may replace) from any other file.
pub const GENERATOR_MARKER: &str = r#"<meta name="generator" content="ptp-mcp">"#;
/// Bytes from the start of a file within which [`GENERATOR_MARKER`] must be.
pub const MARKER_WITHIN: usize = 512;

/// Whether `head` (the first [`MARKER_WITHIN`] bytes of a file, or fewer)
/// starts like a report this module renders.
pub fn is_report(head: &[u8]) -> bool {
    let head = &head[..head.len().min(MARKER_WITHIN)];
    head.starts_with(b"<!doctype html>")
        && head
            .windows(GENERATOR_MARKER.len())
            .any(|w| w == GENERATOR_MARKER.as_bytes())
}

/// The template the report renders; its `<style>` block is the only style
/// [`content_security_policy`] allows.
const TEMPLATE: &str = include_str!("../templates/report.html");

/// The `Content-Security-Policy` a report is served with (the `/report`
/// page): nothing is loaded from anywhere (`default-src 'none'`), so no
/// script runs, inline or not; the one style allowed is the template's own
/// `<style>` block, by its SHA-256 (its text has no template tags, so every
/// rendered report carries it byte for byte); no base URL, no form
/// targets, no framing by other pages.
pub fn content_security_policy() -> &'static str {
    static POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let style = match style_block(TEMPLATE) {
            Some(css) => {
                use base64::Engine;
                use sha2::Digest;
                let digest = sha2::Sha256::digest(css.as_bytes());
                format!(
                    "'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(digest)
                )
            }
            None => "'none'".to_string(),
        };
        format!(
            "default-src 'none'; style-src {style}; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        )
    });
    &POLICY
}

/// The text of the first `<style>` element of `html`.
fn style_block(html: &str) -> Option<&str> {
    let start = html.find("<style>")? + "<style>".len();
    let len = html[start..].find("</style>")?;
    Some(&html[start..start + len])
}

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

/// A run status as shown: a word, a symbol and a CSS class from a fixed set.
#[derive(Clone)]
struct Badge {
    class: &'static str,
    symbol: &'static str,
    word: String,
}

fn run_badge(status: &str) -> Badge {
    let (class, symbol) = match status {
        "passed" => ("ok", "✔"),
        "failed" => ("bad", "✘"),
        "no_tests" => ("muted", "∅"),
        _ => ("warn", "⚠"),
    };
    Badge {
        class,
        symbol,
        word: status.replace('_', " "),
    }
}

fn outcome_badge(outcome: &str) -> Badge {
    let (class, symbol) = match outcome {
        "passed" | "xpassed" => ("ok", "✔"),
        "failed" => ("bad", "✘"),
        "error" => ("warn", "⚠"),
        _ => ("muted", "–"),
    };
    Badge {
        class,
        symbol,
        word: outcome.to_string(),
    }
}

fn worker_badge(status: &str) -> Badge {
    let (class, symbol) = match status {
        "running" => ("ok", "▶"),
        "idle" => ("muted", "●"),
        _ => ("warn", "○"),
    };
    Badge {
        class,
        symbol,
        word: status.to_string(),
    }
}

/// Percent with one decimal, or "n/a".
pub fn pct(rate: Option<f64>) -> String {
    rate.map_or_else(|| "n/a".to_string(), |r| format!("{r:.1}%"))
}

/// A duration in seconds, readable.
pub fn secs(s: f64) -> String {
    if !s.is_finite() {
        return "n/a".into();
    }
    if s >= 3600.0 {
        format!(
            "{}h {:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    } else if s >= 60.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else if s >= 10.0 {
        format!("{s:.1}s")
    } else {
        format!("{s:.2}s")
    }
}

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
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

struct ChartPoint {
    x: String,
    y: String,
    /// Square for a run that did not pass, circle otherwise.
    square: bool,
    /// No pass rate: drawn hollow on the baseline.
    hollow: bool,
    class: &'static str,
    label: String,
}

struct Tick {
    pos: String,
    label: String,
}

struct XLabel {
    x: String,
    label: String,
    anchor: &'static str,
}

struct Chart {
    width: u32,
    height: u32,
    left: u32,
    right: u32,
    top: u32,
    bottom: u32,
    lines: Vec<String>,
    points: Vec<ChartPoint>,
    y_ticks: Vec<Tick>,
    x_labels: Vec<XLabel>,
    no_rate: usize,
    summary: String,
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

/// The pass-rate chart: y is 0..100 %, x the runs oldest to newest, evenly
/// spaced. Runs without a pass rate break the line and show as hollow marks
/// on the baseline; a single run is one point in the middle.
fn chart(runs: &[Run]) -> Chart {
    let (width, height) = (760u32, 240u32);
    let (left, right, top, bottom) = (48u32, 16u32, 12u32, 46u32);
    let plot_w = f64::from(width - left - right);
    let plot_h = f64::from(height - top - bottom);
    let n = runs.len();
    let x_of = |i: usize| {
        if n <= 1 {
            f64::from(left) + plot_w / 2.0
        } else {
            f64::from(left) + plot_w * i as f64 / (n - 1) as f64
        }
    };
    // The y axis starts at the lowest pass rate rounded down to 10 (at most
    // 90), so a drop from 100 % to 97 % is visible; the labels say where.
    let lowest = runs
        .iter()
        .filter_map(|r| r.pass_rate.filter(|p| p.is_finite()))
        .fold(100.0f64, f64::min);
    let y_min = ((lowest.clamp(0.0, 100.0) / 10.0).floor() * 10.0).min(90.0);
    let y_of = |rate: f64| {
        f64::from(top) + plot_h * (1.0 - (rate.clamp(y_min, 100.0) - y_min) / (100.0 - y_min))
    };
    // Runs without a pass rate sit just under the x axis, off the scale.
    let baseline = f64::from(top) + plot_h + 9.0;

    let mut lines = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut points = Vec::new();
    let mut no_rate = 0;
    for (i, r) in runs.iter().enumerate() {
        let x = x_of(i);
        let badge = run_badge(&r.status);
        let label = format!(
            "{} · {} · {} {} · pass rate {}",
            when(&r.started_at),
            r.run_id,
            badge.symbol,
            badge.word,
            pct(r.pass_rate)
        );
        match r.pass_rate.filter(|p| p.is_finite()) {
            Some(rate) => {
                let y = y_of(rate);
                current.push(format!("{x:.1},{y:.1}"));
                points.push(ChartPoint {
                    x: format!("{x:.1}"),
                    y: format!("{y:.1}"),
                    square: r.status != "passed",
                    hollow: false,
                    class: badge.class,
                    label,
                });
            }
            None => {
                no_rate += 1;
                if current.len() > 1 {
                    lines.push(current.join(" "));
                }
                current.clear();
                points.push(ChartPoint {
                    x: format!("{x:.1}"),
                    y: format!("{baseline:.1}"),
                    square: false,
                    hollow: true,
                    class: "muted",
                    label,
                });
            }
        }
    }
    if current.len() > 1 {
        lines.push(current.join(" "));
    }

    let y_ticks = (0..5)
        .map(|i| {
            let v = y_min + (100.0 - y_min) * f64::from(i) / 4.0;
            Tick {
                pos: format!("{:.1}", y_of(v)),
                label: if v.fract() == 0.0 {
                    format!("{v:.0}%")
                } else {
                    format!("{v:.1}%")
                },
            }
        })
        .collect();
    let mut x_labels = Vec::new();
    let date = |r: &Run| r.started_at.format("%m-%d %H:%M").to_string();
    if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
        if n == 1 {
            x_labels.push(XLabel {
                x: format!("{:.1}", x_of(0)),
                label: date(first),
                anchor: "middle",
            });
        } else {
            x_labels.push(XLabel {
                x: format!("{:.1}", x_of(0)),
                label: date(first),
                anchor: "start",
            });
            if n >= 5 {
                let mid = n / 2;
                x_labels.push(XLabel {
                    x: format!("{:.1}", x_of(mid)),
                    label: date(&runs[mid]),
                    anchor: "middle",
                });
            }
            x_labels.push(XLabel {
                x: format!("{:.1}", x_of(n - 1)),
                label: date(last),
                anchor: "end",
            });
        }
    }
    let rates: Vec<f64> = runs.iter().filter_map(|r| r.pass_rate).collect();
    let summary = match (rates.first(), rates.last()) {
        (Some(a), Some(b)) if rates.len() > 1 => format!(
            "Pass rate over {n} runs went from {} to {} (lowest {}, highest {}).",
            pct(Some(*a)),
            pct(Some(*b)),
            pct(rates.iter().copied().reduce(f64::min)),
            pct(rates.iter().copied().reduce(f64::max)),
        ),
        (Some(a), _) => format!("One run with a pass rate: {}.", pct(Some(*a))),
        _ => "No run in this range has a pass rate (no test reached a verdict).".to_string(),
    };
    Chart {
        width,
        height,
        left,
        right,
        top,
        bottom,
        lines,
        points,
        y_ticks,
        x_labels,
        no_rate,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, status: &str, rate: Option<f64>) -> Run {
        serde_json::from_value(serde_json::json!({
            "run_id": id, "project": "p", "worker_id": "w", "status": status,
            "started_at": "2026-01-02T03:04:05Z", "pass_rate": rate, "total": 2,
        }))
        .expect("run")
    }

    #[test]
    fn chart_handles_one_run_and_missing_rates() {
        let c = chart(&[run("a", "passed", Some(100.0))]);
        assert_eq!(c.points.len(), 1);
        assert!(c.lines.is_empty(), "one point, no line");
        let c = chart(&[
            run("a", "passed", Some(100.0)),
            run("b", "no_tests", None),
            run("c", "failed", Some(50.0)),
            run("d", "failed", Some(40.0)),
        ]);
        assert_eq!(c.no_rate, 1);
        assert_eq!(
            c.lines.len(),
            1,
            "the gap splits the line; a lone point has none"
        );
        assert!(c.points[1].hollow && c.points[2].square);
        assert_eq!(
            c.y_ticks[0].label, "40%",
            "the axis starts at the lowest rate, rounded down"
        );
        let c = chart(&[
            run("a", "passed", Some(100.0)),
            run("b", "failed", Some(97.0)),
        ]);
        let labels: Vec<&str> = c.y_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["90%", "92.5%", "95%", "97.5%", "100%"]);
        let c = chart(&[]);
        assert!(c.points.is_empty() && c.x_labels.is_empty());
    }

    #[test]
    fn the_template_carries_the_marker_at_its_start() {
        assert!(is_report(TEMPLATE.as_bytes()));
        assert!(!is_report(b"<!doctype html><title>notes</title>"));
        assert!(!is_report(b"root:x:0:0:root:/root:/bin/bash"));
        let late = format!("<!doctype html>{}{GENERATOR_MARKER}", " ".repeat(600));
        assert!(!is_report(late.as_bytes()), "too far from the start");
    }

    #[test]
    fn the_policy_allows_the_templates_style_and_nothing_else() {
        let policy = content_security_policy();
        assert!(
            policy.starts_with("default-src 'none'; style-src 'sha256-"),
            "{policy}"
        );
        assert!(
            !policy.contains("unsafe") && !policy.contains("script-src"),
            "{policy}"
        );
        let css = style_block(TEMPLATE).expect("the template has a <style> block");
        assert!(
            !css.contains("{{") && !css.contains("{%"),
            "no template tags in the style: it must render byte for byte"
        );
        assert_eq!(style_block("<p>x</p>"), None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(secs(0.123), "0.12s");
        assert_eq!(secs(75.0), "1m 15s");
        assert_eq!(secs(7322.0), "2h 02m");
    }
}
