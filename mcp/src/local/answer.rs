//! The answer of `run_tests` and `run_failed`: the run's status, counts
//! and failures, whether it reached the master, and the output's end when
//! no report explains it.
//!
//! Shape: built from the agent's results file ([`super::results`]) and the
//! finished process ([`super::process`]), or from the process alone when
//! the agent was killed; it never reads the settings, it is given what it
//! says (the NATS URL, the run timeout).
//!
//! Guarantees: bounded: at most [`MAX_FAILURES`] failures, messages cut at
//! [`MESSAGE_CHARS`], output tails at [`TAIL_CHARS`], the command at
//! [`MAX_SHOWN_ARGS`] arguments; totals are always given.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;

use super::budget::{AGENT_GRACE, PUBLISH_BUDGET_SECS};
use super::error::LocalError;
use super::process;
use super::results::{Case, Counts, Results};
use crate::text::trim_end;

/// Failures listed in an answer; the total is always given.
pub(super) const MAX_FAILURES: usize = 50;
/// Characters kept of each failure message.
pub(super) const MESSAGE_CHARS: usize = 300;
/// Characters kept of the end of stdout and of stderr.
pub(super) const TAIL_CHARS: usize = 2000;
/// Arguments of the command shown in an answer (a rerun of many failures
/// has one per test).
pub(super) const MAX_SHOWN_ARGS: usize = 40;

/// A failed or errored test in an answer.
#[derive(Debug, Serialize)]
pub(super) struct FailureLine {
    pub(super) test_id: String,
    /// The runner-native selector (a pytest node id, a test name), when
    /// the agent could find one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) node_id: Option<String>,
    pub(super) outcome: String,
    /// On the project's quarantine list.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) quarantined: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) message: Option<String>,
    pub(super) duration_s: f64,
}

/// The end of the output, when no report explains the run.
#[derive(Debug, Serialize)]
pub(super) struct Tails {
    pub(super) stdout: String,
    pub(super) stderr: String,
}

/// What `run_failed` selected.
#[derive(Debug, Serialize)]
pub(super) struct Rerun {
    pub(super) from_run_id: String,
    pub(super) total: usize,
    pub(super) tests: Vec<String>,
    /// Failed tests of the last run that map to no file under the root
    /// (moved or deleted since): not rerun.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) not_mapped: Vec<String>,
}

/// The answer of `run_tests` and `run_failed`.
#[derive(Debug, Serialize)]
pub(super) struct RunAnswer {
    pub(super) runner: String,
    pub(super) project_root: String,
    /// What ran, argv by argv (no shell).
    pub(super) command: Vec<String>,
    pub(super) status: String,
    pub(super) exit_code: Option<i32>,
    pub(super) timed_out: bool,
    pub(super) counts: Counts,
    pub(super) failures_total: usize,
    pub(super) failures: Vec<FailureLine>,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) failures_not_shown: usize,
    pub(super) duration_s: f64,
    pub(super) run_id: Option<String>,
    pub(super) published: bool,
    /// How the run reached (or did not reach) the master, in a sentence.
    pub(super) publish: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) output_tail: Option<Tails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rerun: Option<Rerun>,
    /// Failed tests on the project's quarantine list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) quarantined_failures: Vec<String>,
    /// Every failure was quarantined: the agent exited 0.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) passed_by_quarantine: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) hint: Option<String>,
}

pub(super) fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub(super) fn round(secs: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (secs * f).round() / f
}

/// The argv as shown: lossy text, long selections cut.
pub(super) fn shown(argv: &[OsString]) -> Vec<String> {
    let mut v: Vec<String> = argv
        .iter()
        .take(MAX_SHOWN_ARGS)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.len() > MAX_SHOWN_ARGS {
        v.push(format!("… {} more arguments", argv.len() - MAX_SHOWN_ARGS));
    }
    v
}

impl RunAnswer {
    pub(super) fn from_results(
        nats_url: Option<&str>,
        root: &Path,
        command: Vec<String>,
        r: Results,
        finished: &process::Finished,
    ) -> RunAnswer {
        let failing: Vec<&Case> = r.cases.iter().filter(|c| c.is_failure()).collect();
        let failures = failing
            .iter()
            .take(MAX_FAILURES)
            .map(|c| FailureLine {
                test_id: c.test_id.clone(),
                node_id: c.selector.clone(),
                outcome: c.outcome.clone(),
                quarantined: c.quarantined,
                message: c.message.as_deref().map(|m| trim_end(m, MESSAGE_CHARS)),
                duration_s: round(c.duration_secs, 3),
            })
            .collect();
        let publish = match (r.delivery.as_str(), nats_url) {
            ("published", Some(url)) => format!(
                "published to NATS at {url}; the master lists it as run {} (get_failures with \
                 this run_id gives tracebacks)",
                r.run_id
            ),
            ("not_requested", _) | (_, None) => "not published: no NATS configured (--nats-url / \
                 NATS_URL); this answer comes from the local report"
                .to_string(),
            ("spooled", Some(url)) => format!(
                "not published: NATS at {url} did not acknowledge within {PUBLISH_BUDGET_SECS} s; \
                 the run waits in {} and is sent by the next ptp-agent run or `ptp-agent flush`",
                r.spool_file.as_deref().unwrap_or("the agent's spool")
            ),
            (_, Some(url)) => format!(
                "not published to NATS at {url} and not spooled either; see the agent's output"
            ),
        };
        let timed_out = r.status == "timed_out" || finished.timed_out;
        let hint = (!failing.is_empty()).then(|| {
            format!(
                "run_failed reruns the {} failed test(s); run_tests with a node_id as filter runs \
                 one",
                failing.len()
            )
        });
        let rerun = r.rerun.map(|l| Rerun {
            from_run_id: l.from_run_id,
            total: l.tests.len(),
            tests: l.tests.into_iter().take(MAX_FAILURES).collect(),
            not_mapped: l.not_mapped,
        });
        RunAnswer {
            runner: r.runner.unwrap_or_else(|| "unknown".into()),
            project_root: root.display().to_string(),
            command,
            status: r.status,
            exit_code: r.exit_code,
            timed_out,
            counts: r.counts,
            failures_total: failing.len(),
            failures_not_shown: failing.len().saturating_sub(MAX_FAILURES),
            failures,
            duration_s: round(r.duration_secs, 2),
            run_id: Some(r.run_id),
            published: r.published,
            publish,
            note: r.note.map(|n| trim_end(&n, 1000)),
            output_tail: (!r.report).then(|| Tails {
                stdout: finished.stdout.tail_text(TAIL_CHARS),
                stderr: finished.stderr.tail_text(TAIL_CHARS),
            }),
            rerun,
            quarantined_failures: r.quarantined_failures,
            passed_by_quarantine: r.passed_by_quarantine,
            hint,
        }
    }

    /// The agent itself ran past its deadline and was killed.
    pub(super) fn killed(
        run_timeout: Duration,
        root: &Path,
        command: Vec<String>,
        finished: &process::Finished,
        started: Instant,
    ) -> RunAnswer {
        RunAnswer {
            runner: "unknown".into(),
            project_root: root.display().to_string(),
            command,
            status: "timed_out".into(),
            exit_code: Some(124),
            timed_out: true,
            counts: Counts::default(),
            failures_total: 0,
            failures: Vec::new(),
            failures_not_shown: 0,
            duration_s: round(started.elapsed().as_secs_f64(), 2),
            run_id: None,
            published: false,
            publish: "not published: the agent was killed before it finished".into(),
            note: Some(format!(
                "ptp-agent did not finish within the run timeout ({} s) plus {} s and was killed",
                run_timeout.as_secs(),
                PUBLISH_BUDGET_SECS + AGENT_GRACE.as_secs()
            )),
            output_tail: Some(Tails {
                stdout: finished.stdout.tail_text(TAIL_CHARS),
                stderr: finished.stderr.tail_text(TAIL_CHARS),
            }),
            rerun: None,
            quarantined_failures: Vec::new(),
            passed_by_quarantine: false,
            hint: None,
        }
    }
}

/// An answer as compact JSON text.
pub(super) fn json_answer(value: &impl Serialize) -> Result<CallToolResult, LocalError> {
    let text = serde_json::to_string(value)
        .map_err(|e| LocalError::Run(format!("cannot encode the answer as JSON: {e}")))?;
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}
