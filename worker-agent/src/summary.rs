//! The job summary: a Markdown account of the run appended to a file, by
//! default `$GITHUB_STEP_SUMMARY`, so GitHub Actions shows it on the job's
//! page (also where no pull request exists); `--summary FILE` anywhere else.
//!
//! # What it holds
//!
//! Status, counts, wall time and where the run went; the failed and errored
//! tests with their message and a trimmed traceback (the first
//! [`MAX_FAILURES`]); the slowest tests. When `MASTER_URL` is set and
//! answers: the failures that are new against the base branch (failing here,
//! not failing in the base branch's latest stored run), which failures are
//! known flaky in the project, and, when `--report-url` names where
//! `ptp-mcp --http` serves it, a link to the HTML report.
//!
//! # Guarantees
//!
//! - Nothing is asked of the master unless a summary is written, and its
//!   queries share one [`QUERY_BUDGET`]: an unreachable master costs a run
//!   at most that, and the summary says why the section is missing.
//! - Test data never becomes Markdown or HTML: inline texts are entity
//!   escaped ([`inline`]), tracebacks sit in a fence longer than any run of
//!   backticks they contain ([`fenced`]).
//! - The text is appended in one write, below what earlier steps wrote.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ptp_nats::schema::{Outcome, RunInfo, RunStatus, TestCase};

use crate::master::Master;

/// Failures shown with their traceback.
pub const MAX_FAILURES: usize = 20;
/// Slowest tests listed.
pub const SLOWEST: usize = 5;
/// Time all the master's queries may take together.
pub const QUERY_BUDGET: Duration = Duration::from_secs(10);
/// Longest message shown, in characters.
const MESSAGE_CHARS: usize = 300;
/// Longest traceback shown, in lines and characters.
const TRACEBACK_LINES: usize = 40;
const TRACEBACK_CHARS: usize = 4000;

/// Escapes text for inline Markdown (GitHub's flavour, HTML allowed): HTML
/// specials and every character Markdown would act on become entities,
/// newlines become spaces, so a test name cannot add markup or break a table.
pub fn inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' | '\n' | '\t' => out.push(' '),
            // Emphasis, code, links (parentheses only matter after `]`), tables,
            // strikethrough, headings (after the `> ` or `- ` we write).
            '|' | '*' | '_' | '`' | '[' | ']' | '\\' | '~' | '#' => {
                out.push_str(&format!("&#{};", c as u32))
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `s` as inline code, escaped.
fn code(s: &str) -> String {
    format!("<code>{}</code>", inline(s))
}

/// Cuts `s` to `max` characters, marking the cut.
fn cut(s: &str, max: usize) -> String {
    let mut t: String = s.chars().take(max).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

/// A fenced code block that `text` cannot close early.
pub fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}text\n{}\n{fence}\n", text.trim_end())
}

fn trim_traceback(tb: &str) -> String {
    let lines: Vec<&str> = tb.lines().collect();
    let start = lines.len().saturating_sub(TRACEBACK_LINES);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("… [{start} lines above]\n"));
    }
    out.push_str(&lines[start..].join("\n"));
    if out.chars().count() > TRACEBACK_CHARS {
        let skip = out.chars().count() - TRACEBACK_CHARS;
        out = format!("…{}", out.chars().skip(skip).collect::<String>());
    }
    out
}

/// What the master added to the summary.
#[derive(Debug, Default, Clone)]
pub struct Insights {
    /// The comparison with the base branch, when one is named and stored.
    pub base: Option<BaseComparison>,
    /// Failing tests of this run that the master knows as flaky, and how
    /// many flaky tests the project has.
    pub flaky: Option<(Vec<String>, usize)>,
    /// What could not be asked, in a sentence.
    pub problems: Vec<String>,
}

/// This run's failures against the latest run of the base branch.
#[derive(Debug, Clone)]
pub struct BaseComparison {
    /// The base branch.
    pub branch: String,
    /// Its latest stored run, when there is one.
    pub run: Option<(String, Option<String>)>,
    /// Failing here, not failing there.
    pub new_failures: Vec<String>,
}

fn failing_ids(cases: &[TestCase]) -> Vec<String> {
    let mut seen = HashSet::new();
    cases
        .iter()
        .filter(|c| c.outcome.is_failure())
        .filter(|c| seen.insert(c.test_id.clone()))
        .map(|c| c.test_id.clone())
        .collect()
}

fn ids_in(v: &serde_json::Value, list: &str) -> Vec<String> {
    v.get(list)
        .and_then(|l| l.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("test_id").and_then(|t| t.as_str()).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

async fn compare_with_base(
    master: &Master,
    run: &RunInfo,
    base: &str,
    failing: &[String],
    deadline: tokio::time::Instant,
) -> Result<BaseComparison, String> {
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let runs = master
        .get_json(
            "/results",
            &[("project", &run.project), ("branch", base), ("limit", "5")],
            left(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let latest = runs.as_array().and_then(|a| {
        a.iter()
            .find(|r| r.get("run_id").and_then(|i| i.as_str()) != Some(&run.run_id))
    });
    let Some(latest) = latest else {
        return Ok(BaseComparison {
            branch: base.to_string(),
            run: None,
            new_failures: Vec::new(),
        });
    };
    let id = latest
        .get("run_id")
        .and_then(|i| i.as_str())
        .unwrap_or_default()
        .to_string();
    let commit = latest
        .get("commit")
        .and_then(|c| c.as_str())
        .map(String::from);
    let detail = master
        .get_json(
            &format!("/results/{id}"),
            &[("outcome", "failed,error"), ("cases_limit", "200000")],
            left(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let there: HashSet<String> = ids_in(&detail, "cases").into_iter().collect();
    Ok(BaseComparison {
        branch: base.to_string(),
        run: Some((id, commit)),
        new_failures: failing
            .iter()
            .filter(|t| !there.contains(*t))
            .cloned()
            .collect(),
    })
}

async fn known_flaky(
    master: &Master,
    run: &RunInfo,
    failing: &[String],
    deadline: tokio::time::Instant,
) -> Result<(Vec<String>, usize), String> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let v = master
        .get_json(
            "/flaky",
            &[("project", &run.project), ("limit", "1000")],
            left,
        )
        .await
        .map_err(|e| e.to_string())?;
    let flaky: HashSet<String> = ids_in(&v, "tests").into_iter().collect();
    let total = v
        .get("total")
        .and_then(|t| t.as_u64())
        .unwrap_or(flaky.len() as u64) as usize;
    Ok((
        failing
            .iter()
            .filter(|t| flaky.contains(*t))
            .cloned()
            .collect(),
        total,
    ))
}

/// Asks the master what it knows, within [`QUERY_BUDGET`].
pub async fn gather(
    master: &Master,
    run: &RunInfo,
    cases: &[TestCase],
    base_branch: Option<&str>,
) -> Insights {
    let deadline = tokio::time::Instant::now() + QUERY_BUDGET;
    let failing = failing_ids(cases);
    let base = async {
        match base_branch {
            Some(b) => Some(compare_with_base(master, run, b, &failing, deadline).await),
            None => None,
        }
    };
    let flaky = known_flaky(master, run, &failing, deadline);
    let (base, flaky) = tokio::join!(base, flaky);
    let mut insights = Insights::default();
    match base {
        Some(Ok(b)) => insights.base = Some(b),
        Some(Err(e)) => insights
            .problems
            .push(format!("New failures against the base branch: {e}")),
        None => {}
    }
    match flaky {
        Ok(f) => insights.flaky = Some(f),
        Err(e) => insights.problems.push(format!("Flaky tests: {e}")),
    }
    insights
}

fn status_mark(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Passed => "✅",
        RunStatus::Failed => "❌",
        RunStatus::NoTests => "⚪",
        _ => "⚠️",
    }
}

/// The report page's URL for this run's project and branch.
pub fn report_link(base: &str, run: &RunInfo) -> String {
    let mut url = format!(
        "{base}/report?project={}",
        ptp_nats::percent::encode(&run.project)
    );
    if let Some(b) = &run.branch {
        url.push_str(&format!("&branch={}", ptp_nats::percent::encode(b)));
    }
    url.push_str("&runs=20");
    url
}

/// Everything the summary shows besides the run itself.
#[derive(Debug, Default)]
pub struct Extras<'a> {
    /// Where the run went, in a sentence.
    pub delivery: String,
    /// What the master said, when asked.
    pub insights: Option<&'a Insights>,
    /// The report page, when configured.
    pub report_url: Option<String>,
}

/// The Markdown for one run.
pub fn render(run: &RunInfo, cases: &[TestCase], extras: &Extras<'_>) -> String {
    let c = &run.counts;
    let mut md = format!(
        "## {} Tests of {}: {}\n\n",
        status_mark(run.status),
        inline(&run.project),
        run.status.as_str().replace('_', " ")
    );
    let mut facts = Vec::new();
    if let Some(b) = &run.branch {
        facts.push(format!("branch {}", code(b)));
    }
    if let Some(sha) = &run.commit {
        facts.push(format!(
            "commit {}",
            code(&sha.chars().take(12).collect::<String>())
        ));
    }
    facts.push(format!("worker {}", code(&run.worker_id)));
    facts.push(format!("{:.1} s", run.duration_secs));
    facts.push(format!("run {}", code(&run.run_id)));
    md.push_str(&facts.join(" · "));
    md.push_str("\n\n| total | passed | failed | error | skipped | xfailed | xpassed |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
    md.push_str(&format!(
        "| {} | {} | {} | {} | {} | {} | {} |\n\n",
        c.total, c.passed, c.failed, c.error, c.skipped, c.xfailed, c.xpassed
    ));
    if let Some(note) = &run.note {
        md.push_str(&format!("> {}\n\n", inline(&cut(note, MESSAGE_CHARS))));
    }
    if !extras.delivery.is_empty() {
        md.push_str(&format!("{}\n\n", inline(&extras.delivery)));
    }
    let known_flaky: HashSet<&str> = extras
        .insights
        .and_then(|i| i.flaky.as_ref())
        .map(|(ids, _)| ids.iter().map(String::as_str).collect())
        .unwrap_or_default();

    let failures: Vec<&TestCase> = cases.iter().filter(|c| c.outcome.is_failure()).collect();
    if !failures.is_empty() {
        md.push_str(&format!("### Failures ({})\n\n", failures.len()));
        for f in failures.iter().take(MAX_FAILURES) {
            let mut head = format!("<b>{}</b> {}", f.outcome.as_str(), code(&f.test_id));
            if known_flaky.contains(f.test_id.as_str()) {
                head.push_str(" (known flaky)");
            }
            if let Some(m) = f.message.as_deref().filter(|m| !m.trim().is_empty()) {
                head.push_str(&format!(": {}", inline(&cut(m.trim(), MESSAGE_CHARS))));
            }
            match f.traceback.as_deref().filter(|t| !t.trim().is_empty()) {
                Some(tb) => md.push_str(&format!(
                    "<details><summary>{head}</summary>\n\n{}\n</details>\n\n",
                    fenced(&trim_traceback(tb))
                )),
                None => md.push_str(&format!("- {head}\n\n")),
            }
        }
        if failures.len() > MAX_FAILURES {
            md.push_str(&format!(
                "… and {} more failed tests.\n\n",
                failures.len() - MAX_FAILURES
            ));
        }
    }

    if let Some(i) = extras.insights {
        if let Some(b) = &i.base {
            match &b.run {
                None => md.push_str(&format!(
                    "### New failures against {}\n\nThe master has no run of {} of this project yet.\n\n",
                    code(&b.branch),
                    code(&b.branch)
                )),
                Some((id, commit)) => {
                    md.push_str(&format!(
                        "### New failures against {} ({})\n\nCompared with its latest stored run {}{}.\n\n",
                        code(&b.branch),
                        b.new_failures.len(),
                        code(id),
                        commit
                            .as_deref()
                            .map(|c| format!(" (commit {})", code(&c.chars().take(12).collect::<String>())))
                            .unwrap_or_default()
                    ));
                    if b.new_failures.is_empty() && !failures.is_empty() {
                        md.push_str("None: every test failing here fails there too.\n\n");
                    }
                    for t in b.new_failures.iter().take(MAX_FAILURES) {
                        md.push_str(&format!("- {}\n", code(t)));
                    }
                    if b.new_failures.len() > MAX_FAILURES {
                        md.push_str(&format!(
                            "- … and {} more\n",
                            b.new_failures.len() - MAX_FAILURES
                        ));
                    }
                    if !b.new_failures.is_empty() {
                        md.push('\n');
                    }
                }
            }
        }
        if let Some((ids, total)) = &i.flaky {
            md.push_str(&format!(
                "### Flaky tests\n\n{} of this run's failures {} known flaky; the project has {} flaky {}.\n\n",
                ids.len(),
                if ids.len() == 1 { "is" } else { "are" },
                total,
                if *total == 1 { "test" } else { "tests" }
            ));
        }
        for p in &i.problems {
            md.push_str(&format!("> {}\n\n", inline(&cut(p, MESSAGE_CHARS))));
        }
    }

    let mut slow: Vec<&TestCase> = cases
        .iter()
        .filter(|c| !matches!(c.outcome, Outcome::Skipped | Outcome::Xfailed))
        .collect();
    slow.sort_by(|a, b| b.duration_secs.total_cmp(&a.duration_secs));
    if !slow.is_empty() {
        md.push_str("### Slowest tests\n\n| test | outcome | seconds |\n|---|---|---:|\n");
        for t in slow.iter().take(SLOWEST) {
            md.push_str(&format!(
                "| {} | {} | {:.2} |\n",
                code(&t.test_id),
                t.outcome.as_str(),
                t.duration_secs
            ));
        }
        md.push('\n');
    }
    if let Some(url) = &extras.report_url {
        md.push_str(&format!(
            "[Open the report (trend, flaky tests, failure clusters)]({})\n\n",
            url.replace(' ', "%20").replace(')', "%29")
        ));
    }
    md
}

/// Appends `text` to `path` in one write.
pub fn append(path: &Path, text: &str) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            format!(
                "cannot open the summary file {} ({e}); check --summary / GITHUB_STEP_SUMMARY",
                path.display()
            )
        })?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write the summary file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use ptp_nats::schema::Counts;

    fn case(id: &str, outcome: Outcome, secs: f64, tb: Option<&str>) -> TestCase {
        TestCase {
            test_id: id.into(),
            file: None,
            classname: None,
            name: id.into(),
            outcome,
            duration_secs: secs,
            message: outcome.is_failure().then(|| format!("{id} broke")),
            traceback: tb.map(String::from),
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        }
    }

    fn run(cases: &[TestCase]) -> RunInfo {
        let now = Utc::now();
        RunInfo {
            run_id: "r1".into(),
            project: "shop".into(),
            branch: Some("feature/x".into()),
            commit: Some("0123456789abcdef".into()),
            worker_id: "w1".into(),
            host: None,
            runner: Some("pytest".into()),
            command: None,
            started_at: now,
            finished_at: now,
            duration_secs: 2.5,
            exit_code: Some(1),
            status: RunStatus::Failed,
            counts: Counts::of(cases),
            cases_complete: true,
            note: None,
        }
    }

    #[test]
    fn hostile_names_stay_text() {
        let cases = vec![case(
            "t::test[<script>alert(1)</script>|**b**`x`]",
            Outcome::Failed,
            0.1,
            Some("```\n</details><img src=x>\n```"),
        )];
        let md = render(&run(&cases), &cases, &Extras::default());
        assert!(!md.contains("<script>"), "{md}");
        assert!(!md.contains("**b**"), "{md}");
        assert!(md.contains("&lt;script&gt;"), "{md}");
        // The traceback's own fences cannot close the block around it.
        assert!(md.contains("````text\n"), "{md}");
        assert_eq!(md.matches("</details>").count(), 2, "{md}");
    }

    #[test]
    fn failures_slowest_and_insights() {
        let cases = vec![
            case("a", Outcome::Passed, 3.0, None),
            case("b", Outcome::Failed, 0.5, Some("tb of b")),
            case("c", Outcome::Error, 0.2, None),
            case("d", Outcome::Skipped, 9.0, None),
        ];
        let insights = Insights {
            base: Some(BaseComparison {
                branch: "main".into(),
                run: Some(("r0".into(), Some("fedcba".into()))),
                new_failures: vec!["c".into()],
            }),
            flaky: Some((vec!["b".into()], 4)),
            problems: vec![],
        };
        let md = render(
            &run(&cases),
            &cases,
            &Extras {
                delivery: "Published to NATS.".into(),
                insights: Some(&insights),
                report_url: Some(report_link("https://r.example", &run(&cases))),
            },
        );
        assert!(md.starts_with("## ❌ Tests of shop: failed"), "{md}");
        assert!(md.contains("| 4 | 1 | 1 | 1 | 1 | 0 | 0 |"), "{md}");
        assert!(md.contains("### Failures (2)"), "{md}");
        assert!(md.contains("<code>b</code> (known flaky): b broke"), "{md}");
        assert!(
            md.contains("### New failures against <code>main</code> (1)"),
            "{md}"
        );
        assert!(md.contains("- <code>c</code>\n"), "{md}");
        assert!(md.contains("the project has 4 flaky tests"), "{md}");
        let slow = md.split("### Slowest tests").nth(1).expect("slowest");
        assert!(
            slow.find("<code>a</code>") < slow.find("<code>b</code>"),
            "{md}"
        );
        assert!(
            !slow.contains("<code>d</code>"),
            "skipped tests are not slow: {md}"
        );
        assert!(
            md.contains("(https://r.example/report?project=shop&branch=feature%2Fx&runs=20)"),
            "{md}"
        );
    }
}
