//! One run of the test command and the reruns of `--retries`: running a
//! [`Plan`], reading the report it wrote, and merging retried attempts
//! ([`crate::retry`] holds the rules; this file sequences them).
//!
//! Kept apart from [`super::run()`] so the run's decision sequence reads top
//! to bottom. It guarantees that a crash is never retried (a retry would
//! hide it) and that a retry which itself crashes stops retrying with its
//! failures kept.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ptp_nats::schema::TestCase;

use super::reports::{expand, modified_since, read_reports};
use crate::config::{RunArgs, Settings};
use crate::process::{self, Exit};
use crate::report::{self, Finished};
use crate::runner::{self, Plan, Runner};
use crate::{junit, retry};

/// One run of the test command: how it ended and what its report said.
pub(super) struct Attempt {
    pub(super) exit: Exit,
    pub(super) report: Result<junit::Report, String>,
    pub(super) problems: Vec<String>,
}

/// Runs `plan` once and reads the report it wrote (the plan's own file,
/// or the user's `--junit` files written since `started`).
pub(super) async fn attempt(
    s: &Settings,
    plan: &Plan,
    junit_globs: &[String],
    timeout: Option<u64>,
) -> Attempt {
    let started = SystemTime::now();
    let exit = process::run(
        &plan.argv,
        &plan.env,
        timeout.map(Duration::from_secs),
        || {},
    )
    .await;
    match &exit {
        Exit::NotStarted { reason, .. } => eprintln!("ptp-agent: {reason}"),
        Exit::TimedOut => eprintln!(
            "ptp-agent: the command ran past --timeout {}s; its process group was killed (exit 124)",
            timeout.unwrap_or(0)
        ),
        Exit::Signal(sig) => eprintln!("ptp-agent: the command was killed by signal {sig}"),
        Exit::Code(_) => {}
    }
    let runner = plan.runner.map_or("the command", Runner::name);
    let (report, problems) = match &plan.junit_path {
        Some(path) if path.exists() => read_reports(std::slice::from_ref(path), Vec::new()),
        Some(path) => (
            Err(format!(
                "{runner} wrote no JUnit report at {} (it crashed, or was killed before writing it)",
                path.display()
            )),
            Vec::new(),
        ),
        None if junit_globs.is_empty() => (Ok(junit::Report::default()), Vec::new()),
        None => {
            let (files, problems) = expand(junit_globs);
            let (fresh, stale): (Vec<_>, Vec<_>) =
                files.into_iter().partition(|f| modified_since(f, started));
            for f in &stale {
                say!(
                    s,
                    "ignoring {}: it was not written by this run (older than its start)",
                    f.display()
                );
            }
            if fresh.is_empty() && problems.is_empty() {
                (
                    Err(format!(
                        "no report written by this run matches {junit_globs:?}"
                    )),
                    Vec::new(),
                )
            } else {
                read_reports(&fresh, problems)
            }
        }
    };
    Attempt {
        exit,
        report,
        problems,
    }
}

/// `--retries`: reruns the failed tests of `first` up to `args.retries`
/// times and merges the attempts ([`crate::retry`]); returns the merged
/// attempt (exit 0 when every failure passed on a retry, else the first
/// attempt's exit) and a sentence on what was done, if anything was.
#[allow(clippy::too_many_arguments)]
pub(super) async fn retry_failures(
    s: &Settings,
    args: &RunArgs,
    runner_name: Option<&str>,
    runner: Option<Runner>,
    argv: &[String],
    cwd: &Path,
    report_dir: &Path,
    first: Attempt,
) -> (Attempt, Option<String>) {
    if args.retries == 0 {
        return (first, None);
    }
    let status = |a: &Attempt| {
        report::classify(&Finished {
            runner: runner_name.map(String::from),
            exit: a.exit.clone(),
            report: a
                .report
                .as_ref()
                .map(|r| r.cases.clone())
                .map_err(Clone::clone),
        })
        .0
    };
    let first_status = status(&first);
    if report::crashed(first_status) {
        return (
            first,
            Some(format!(
                "not retried: the run ended {} (a crash is never retried: a retry would hide it)",
                first_status.as_str()
            )),
        );
    }
    let Ok(mut report) = first.report else {
        // Not reached: a run without a report is crashed.
        return (first, None);
    };
    let failing = retry::failing_ids(&report.cases);
    if failing.is_empty() {
        return (
            Attempt {
                report: Ok(report),
                ..first
            },
            None,
        );
    }
    if failing.len() > retry::MAX_RETRIED_TESTS {
        let n = format!(
            "not retried: {} tests failed, more than {} (that is no flakiness)",
            failing.len(),
            retry::MAX_RETRIED_TESTS
        );
        return (
            Attempt {
                report: Ok(report),
                ..first
            },
            Some(n),
        );
    }
    if runner.is_none() && args.rerun_command.is_none() {
        let n = format!(
            "not retried: {:?} is no runner the agent knows ({}); give --rerun-command",
            argv.join(" "),
            runner::names()
        );
        return (
            Attempt {
                report: Ok(report),
                ..first
            },
            Some(n),
        );
    }
    let mut problems = first.problems;
    let mut attempts = 1;
    let mut stopped = None;
    let total = failing.len();
    for n in 2..=args.retries + 1 {
        let failing = retry::failing_ids(&report.cases);
        if failing.is_empty() {
            break;
        }
        let cases: Vec<&TestCase> = report
            .cases
            .iter()
            .filter(|c| c.outcome.is_failure())
            .collect();
        let rerun_argv = match (&args.rerun_command, runner) {
            (Some(t), _) => match retry::template(t, &cases, runner, cwd) {
                Ok(a) => a,
                Err(e) => {
                    stopped = Some(e);
                    break;
                }
            },
            (None, Some(r)) => {
                let sel = r.select(argv, &cases, cwd);
                if !sel.unmapped.is_empty() {
                    say!(
                        s,
                        "cannot select {} failed tests to retry them: {}",
                        sel.unmapped.len(),
                        sel.unmapped.join(", ")
                    );
                }
                if sel.selected.is_empty() {
                    break;
                }
                sel.argv
            }
            (None, None) => break,
        };
        let plan = match runner {
            Some(r) if r == Runner::Pytest || args.junit.is_empty() => {
                r.plan(&rerun_argv, report_dir, n)
            }
            _ => Plan {
                argv: rerun_argv,
                runner,
                ..Plan::default()
            },
        };
        say!(
            s,
            "retry {}/{}: rerunning {} failed tests: {}",
            n - 1,
            args.retries,
            failing.len(),
            plan.argv.join(" ")
        );
        let next = attempt(s, &plan, &args.junit, args.timeout).await;
        let next_status = status(&next);
        problems.extend(next.problems.iter().cloned());
        match next.report {
            Ok(r) if !report::crashed(next_status) => {
                report.cases = retry::merge(std::mem::take(&mut report.cases), &r.cases, &failing);
                // Lines were by position in the first report; annotations
                // fall back to the tracebacks.
                report.lines.clear();
                attempts = n;
            }
            Ok(_) | Err(_) => {
                stopped = Some(format!(
                    "retry {} ended {}; its failures stay failures and retrying stops",
                    n - 1,
                    next_status.as_str()
                ));
                break;
            }
        }
    }
    let still = retry::failing_ids(&report.cases).len();
    let flaky = report.cases.iter().filter(|c| c.flaky).count();
    let exit = if still == 0 {
        Exit::Code(0)
    } else {
        first.exit
    };
    let mut note = format!(
        "retried {total} failed tests ({} attempts in all): {flaky} passed on retry (flaky), {still} failed every attempt",
        attempts
    );
    if let Some(why) = stopped {
        note.push_str("; ");
        note.push_str(&why);
    }
    (
        Attempt {
            exit,
            report: Ok(report),
            problems,
        },
        Some(note),
    )
}
