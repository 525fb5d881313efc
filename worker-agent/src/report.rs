//! Turning what happened (the command's exit, the reports it wrote) into a
//! run: counts from the parsed `<testcase>` elements, and a status that
//! separates "tests failed" from "the runner broke".
//!
//! pytest's exit codes are authoritative for pytest: 0 passed, 1 tests
//! failed, 2 interrupted, 3 internal error, 4 usage error, 5 no tests
//! collected. For other runners the report decides (any failure or error
//! means failed), and a non-zero exit with a clean report or no report at
//! all means the runner crashed.

use chrono::{DateTime, Utc};
use ptp_nats::schema::{Counts, RunInfo, RunStatus, TestCase};

use crate::process::Exit;

/// What the agent knows about a finished command.
#[derive(Debug)]
pub struct Finished {
    /// `pytest`, or the runner named with --runner, if any.
    pub runner: Option<String>,
    /// How the command ended.
    pub exit: Exit,
    /// The parsed cases, or why no report could be read.
    pub report: Result<Vec<TestCase>, String>,
}

/// pytest's exit code as a run status: the one table of pytest's codes
/// (the run's status here, `ptp-agent list`'s status, and through the
/// agent's results file ptp-mcp's answers).
pub fn pytest_status(code: i32) -> RunStatus {
    match code {
        0 => RunStatus::Passed,
        1 => RunStatus::Failed,
        2 => RunStatus::Interrupted,
        3 => RunStatus::InternalError,
        4 => RunStatus::UsageError,
        5 => RunStatus::NoTests,
        _ => RunStatus::Crashed,
    }
}

/// Whether the command broke rather than reported failing tests: a
/// signal, a timeout, a command that could not start, a missing report,
/// or a status other than passed / failed / no tests (pytest's 2 to 4, a
/// non-zero exit with a clean report). Such a run is never retried and
/// quarantine never hides it.
pub fn crashed(status: RunStatus) -> bool {
    !matches!(
        status,
        RunStatus::Passed | RunStatus::Failed | RunStatus::NoTests
    )
}

/// Decides a run's status and an explanatory note.
pub fn classify(f: &Finished) -> (RunStatus, Option<String>) {
    let failures = |cases: &[TestCase]| cases.iter().any(|c| c.outcome.is_failure());
    match (&f.exit, &f.report) {
        (Exit::TimedOut, _) => (
            RunStatus::TimedOut,
            Some("the command ran past --timeout and was killed".into()),
        ),
        (Exit::NotStarted { reason, .. }, _) => (RunStatus::Crashed, Some(reason.clone())),
        (Exit::Signal(s), _) => {
            let status = if *s == 2 || *s == 15 {
                RunStatus::Interrupted
            } else {
                RunStatus::Crashed
            };
            (
                status,
                Some(format!("the command was killed by signal {s}")),
            )
        }
        (Exit::Code(code), report) if f.runner.as_deref() == Some("pytest") => {
            let note = report.as_ref().err().cloned();
            let status = pytest_status(*code);
            match (status, report) {
                // pytest said pass/fail but left no readable report: broken.
                (RunStatus::Passed | RunStatus::Failed, Err(_)) => (RunStatus::Crashed, note),
                (s, _) => (s, note),
            }
        }
        (Exit::Code(code), Ok(cases)) => {
            if failures(cases) {
                (RunStatus::Failed, None)
            } else if *code != 0 {
                (
                    RunStatus::Crashed,
                    Some(format!(
                        "the command exited {code} but its report holds no failure"
                    )),
                )
            } else if cases.is_empty() {
                (RunStatus::NoTests, None)
            } else {
                (RunStatus::Passed, None)
            }
        }
        (Exit::Code(_), Err(e)) => (RunStatus::Crashed, Some(e.clone())),
    }
}

/// Everything needed to build a [`RunInfo`] besides the cases.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Run id.
    pub run_id: String,
    /// Project.
    pub project: String,
    /// Branch.
    pub branch: Option<String>,
    /// Commit.
    pub commit: Option<String>,
    /// Worker.
    pub worker_id: String,
    /// Host.
    pub host: String,
    /// Command line.
    pub command: Option<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
}

/// Builds the run and returns it with its cases.
pub fn build(meta: Meta, f: Finished) -> (RunInfo, Vec<TestCase>) {
    let (status, note) = classify(&f);
    let cases = f.report.unwrap_or_default();
    let exit_code = match f.exit {
        Exit::Code(c) => Some(c),
        Exit::TimedOut => Some(124),
        Exit::NotStarted { code, .. } => Some(code),
        Exit::Signal(_) => None,
    };
    let duration = (meta.finished_at - meta.started_at)
        .to_std()
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let run = RunInfo {
        run_id: meta.run_id,
        project: meta.project,
        branch: meta.branch,
        commit: meta.commit,
        worker_id: meta.worker_id,
        host: Some(meta.host),
        runner: f.runner,
        command: meta
            .command
            .map(|c| ptp_nats::schema::truncate_marked(c, ptp_nats::schema::MAX_MESSAGE_BYTES)),
        started_at: meta.started_at,
        finished_at: meta.finished_at,
        duration_secs: duration,
        exit_code,
        status,
        counts: Counts::of(&cases),
        cases_complete: true,
        note: note
            .map(|n| ptp_nats::schema::truncate_marked(n, ptp_nats::schema::MAX_MESSAGE_BYTES)),
    };
    (run, cases)
}

/// A one-line summary for the console.
pub fn summary(run: &RunInfo) -> String {
    let c = &run.counts;
    let mut parts = vec![
        format!("{} passed", c.passed),
        format!("{} failed", c.failed),
    ];
    for (n, label) in [
        (c.error, "error"),
        (c.skipped, "skipped"),
        (c.xfailed, "xfailed"),
        (c.xpassed, "xpassed"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {label}"));
        }
    }
    format!(
        "run {} [{}]: {} ({} cases)",
        run.run_id,
        run.status.as_str(),
        parts.join(", "),
        c.total
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptp_nats::schema::Outcome;

    fn case(outcome: Outcome) -> TestCase {
        TestCase {
            test_id: "t".into(),
            file: None,
            classname: None,
            name: "t".into(),
            outcome,
            duration_secs: 0.0,
            message: None,
            traceback: None,
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        }
    }

    fn status(
        runner: Option<&str>,
        exit: Exit,
        report: Result<Vec<TestCase>, String>,
    ) -> RunStatus {
        classify(&Finished {
            runner: runner.map(String::from),
            exit,
            report,
        })
        .0
    }

    #[test]
    fn pytest_exit_codes_decide() {
        let ok = || Ok(vec![case(Outcome::Passed)]);
        assert_eq!(
            status(Some("pytest"), Exit::Code(0), ok()),
            RunStatus::Passed
        );
        assert_eq!(
            status(Some("pytest"), Exit::Code(1), ok()),
            RunStatus::Failed
        );
        assert_eq!(
            status(Some("pytest"), Exit::Code(2), ok()),
            RunStatus::Interrupted
        );
        assert_eq!(
            status(Some("pytest"), Exit::Code(3), ok()),
            RunStatus::InternalError
        );
        assert_eq!(
            status(Some("pytest"), Exit::Code(4), Err("none".into())),
            RunStatus::UsageError
        );
        assert_eq!(
            status(Some("pytest"), Exit::Code(5), ok()),
            RunStatus::NoTests
        );
        assert_eq!(
            status(Some("pytest"), Exit::Code(1), Err("missing".into())),
            RunStatus::Crashed
        );
        assert_eq!(
            status(Some("pytest"), Exit::TimedOut, ok()),
            RunStatus::TimedOut
        );
        assert_eq!(
            status(Some("pytest"), Exit::Signal(9), ok()),
            RunStatus::Crashed
        );
    }

    #[test]
    fn other_runners_follow_the_report() {
        assert_eq!(
            status(None, Exit::Code(1), Ok(vec![case(Outcome::Failed)])),
            RunStatus::Failed
        );
        assert_eq!(
            status(None, Exit::Code(0), Ok(vec![case(Outcome::Passed)])),
            RunStatus::Passed
        );
        assert_eq!(
            status(None, Exit::Code(2), Ok(vec![case(Outcome::Passed)])),
            RunStatus::Crashed
        );
        assert_eq!(
            status(None, Exit::Code(0), Err("no file".into())),
            RunStatus::Crashed
        );
    }
}
