//! The subcommands, as readable decision sequences: `run`, `upload`,
//! `flush` (`check` lives in [`crate::check`]). Each returns the process
//! exit code.
//!
//! Time after the test command: everything sent once the command has
//! finished (the run, spooled runs, the last heartbeats) shares one deadline,
//! `PTP_PUBLISH_TIMEOUT` from the command's end; the job summary's queries
//! to the master, made only when a summary is written, have their own
//! bound ([`crate::summary::QUERY_BUDGET`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use ptp_nats::schema::{HeartbeatPhase, RunInfo, TestCase};
use tokio::time::Instant;

use crate::config::{ListArgs, RunArgs, Settings, Transport, UploadArgs};
use crate::master::Master;
use crate::process::{self, Exit};
use crate::publish::{Beats, Publisher, Sender};
use crate::report::{self, Finished, Meta};
use crate::results::{Delivery, RerunLine, ResultsFile};
use crate::runner::{self, Plan, Runner};
use crate::{annotations, junit, listing, owners, quarantine, retry, spool, summary};

/// Exit code with --strict when the tests passed but reporting failed.
pub const EXIT_REPORTING_FAILED: i32 = 75;

/// How the test command's code and reporting trouble combine.
pub fn exit_code(test_code: i32, reporting_ok: bool, strict: bool) -> i32 {
    if strict && !reporting_ok && test_code == 0 {
        EXIT_REPORTING_FAILED
    } else {
        test_code
    }
}

macro_rules! say {
    ($s:expr, $($arg:tt)*) => {
        if !$s.quiet {
            eprintln!("ptp-agent: {}", format!($($arg)*));
        }
    };
}

/// Expands globs; a plain path that does not exist is reported.
fn expand(patterns: &[String]) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in patterns {
        match glob::glob(p) {
            Ok(paths) => {
                let before = files.len();
                files.extend(paths.filter_map(Result::ok).filter(|p| p.is_file()));
                if files.len() == before {
                    problems.push(format!("no report file matches {p:?}"));
                }
            }
            Err(e) => problems.push(format!("bad glob {p:?}: {e}")),
        }
    }
    files.sort();
    files.dedup();
    (files, problems)
}

/// Says the settings' warnings (branch and commit unknown...), once.
pub fn warn(s: &Settings) {
    for w in &s.warnings {
        say!(s, "warning: {w}");
    }
}

/// Parses every file; returns the merged report, or why there is none.
fn read_reports(
    files: &[PathBuf],
    mut problems: Vec<String>,
) -> (Result<junit::Report, String>, Vec<String>) {
    let mut reports = Vec::new();
    for f in files {
        match junit::parse_file(f) {
            Ok(r) => reports.push(r),
            Err(e) => problems.push(format!("{}: {e}", f.display())),
        }
    }
    if reports.is_empty() {
        let why = if problems.is_empty() {
            "no JUnit report was found".to_string()
        } else {
            problems.join("; ")
        };
        return (Err(why), problems);
    }
    (Ok(junit::merge(reports)), problems)
}

fn modified_since(path: &Path, t: SystemTime) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|m| m + Duration::from_secs(2) >= t)
        .unwrap_or(false)
}

/// Where runs go according to the settings, for messages.
fn target(s: &Settings) -> String {
    match s.transport {
        Transport::Nats => format!("NATS at {}", s.nats_url),
        Transport::Http => format!(
            "the master at {}",
            s.master_url.as_deref().unwrap_or("(MASTER_URL unset)")
        ),
    }
}

/// Publishes, or spools on failure.
async fn deliver(
    s: &Settings,
    sender: Option<&Sender>,
    run: &RunInfo,
    cases: &[TestCase],
    deadline: Instant,
) -> Delivery {
    let result = match sender {
        Some(p) => p.publish_run(run, cases, deadline, s.quiet).await,
        None => Err(format!("no connection to {}", target(s))),
    };
    match result {
        Ok(()) => {
            say!(s, "published run {} to {}", run.run_id, target(s));
            Delivery::Published
        }
        Err(e) => {
            eprintln!("ptp-agent: could not publish run {}: {e}", run.run_id);
            match spool::write(&s.spool_dir, run, cases) {
                Ok(path) => {
                    eprintln!(
                        "ptp-agent: the run is saved in the spool at {}; it is sent by the next `ptp-agent run` or by `ptp-agent flush` once {} is reachable",
                        path.display(),
                        target(s)
                    );
                    Delivery::Spooled(path)
                }
                Err(e) => {
                    eprintln!("ptp-agent: could not spool the run either, it is lost: {e}");
                    Delivery::Lost
                }
            }
        }
    }
}

/// Sends what is in the spool until `deadline`. Returns (sent, failed).
async fn send_spool(s: &Settings, sender: &Sender, deadline: Instant) -> (usize, usize) {
    let files = match spool::list(&s.spool_dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ptp-agent: {e}");
            return (0, 1);
        }
    };
    let (mut sent, mut failed) = (0, 0);
    for path in files {
        let spooled = match spool::read(&path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ptp-agent: {e}");
                failed += 1;
                continue;
            }
        };
        match sender
            .publish_run(&spooled.run, &spooled.cases, deadline, s.quiet)
            .await
        {
            Ok(()) => {
                if let Err(e) = spool::remove(&path) {
                    eprintln!("ptp-agent: sent but {e}");
                }
                say!(
                    s,
                    "sent spooled run {} ({})",
                    spooled.run.run_id,
                    path.display()
                );
                sent += 1;
            }
            Err(e) => {
                eprintln!(
                    "ptp-agent: spooled run {} not sent: {e}",
                    spooled.run.run_id
                );
                failed += 1;
                break; // the broker is away: leave the rest for later
            }
        }
    }
    (sent, failed)
}

/// The sender the settings ask for (a NATS connection is made in the
/// background; HTTP connects per request).
pub async fn connect(s: &Settings) -> Option<Sender> {
    match s.transport {
        Transport::Http => match &s.master_url {
            Some(url) => Some(Sender::Http(Master::new(url, s.token.clone()))),
            None => {
                eprintln!(
                    "ptp-agent: --transport http needs the master's URL: set MASTER_URL (or --master-url)"
                );
                None
            }
        },
        Transport::Nats => match Publisher::connect(&s.nats_url, &s.auth).await {
            Ok(p) => Some(Sender::Nats(p)),
            Err(e) => {
                eprintln!("ptp-agent: {e}");
                None
            }
        },
    }
}

/// A sentence on where the run went, for the summary.
fn delivery_sentence(s: &Settings, d: &Delivery) -> String {
    match d {
        Delivery::Published => format!("Published to {}.", target(s)),
        Delivery::NotRequested => "Not published: --no-publish.".into(),
        Delivery::Spooled(p) => format!(
            "Not delivered yet: {} could not be reached in time; the run waits in the spool at {} for the next ptp-agent run or ptp-agent flush.",
            target(s),
            p.display()
        ),
        Delivery::Lost => "Not delivered, and it could not be spooled: the run is lost.".into(),
    }
}

/// The job summary and the annotations; false when the summary could not
/// be written. Asks the master only when a summary is written.
async fn tell_ci(
    s: &Settings,
    run: &RunInfo,
    cases: &[TestCase],
    lines: &[Option<u32>],
    delivery: &Delivery,
) -> bool {
    if s.summary.annotations {
        let workspace = std::env::var("GITHUB_WORKSPACE").ok();
        let (commands, more) = annotations::error_commands(cases, lines, workspace.as_deref());
        for c in commands {
            println!("{c}");
        }
        if more > 0 {
            say!(
                s,
                "{more} more failed tests are not annotated (GitHub shows {} per step); the job summary lists them",
                annotations::MAX_ANNOTATIONS
            );
        }
    }
    let Some(path) = &s.summary.file else {
        return true;
    };
    let insights = match &s.master_url {
        Some(url) => Some(
            summary::gather(
                &Master::new(url, s.token.clone()),
                run,
                cases,
                s.summary.base_branch.as_deref(),
            )
            .await,
        ),
        None => None,
    };
    let text = summary::render(
        run,
        cases,
        &summary::Extras {
            delivery: delivery_sentence(s, delivery),
            insights: insights.as_ref(),
            report_url: s
                .summary
                .report_url
                .as_deref()
                .map(|u| summary::report_link(u, run)),
        },
    );
    match summary::append(path, &text) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("ptp-agent: {e}");
            false
        }
    }
}

/// The runner and command a `run` or `list` works with.
#[derive(Debug)]
pub struct Resolved {
    /// The runner, when named, recognised or detected.
    pub runner: Option<Runner>,
    /// The command (the runner's default when none was given).
    pub argv: Vec<String>,
}

/// [`resolve`] for `run`'s and `list`'s options; a usage error is printed
/// and answered with exit code 2.
fn resolve_selection(select: &crate::config::Selection, cwd: &Path) -> Result<Resolved, i32> {
    resolve(
        select.runner.as_deref(),
        &select.command,
        select.filter.as_deref(),
        select.python.as_deref(),
        cwd,
    )
    .map_err(|e| {
        eprintln!("ptp-agent: {e}");
        2
    })
}

/// Decides the runner and the command: `--runner` names it, else the
/// command is recognised, else (no command) the project in `cwd` is
/// detected. Errors are usage errors, said before anything runs.
pub fn resolve(
    runner: Option<&str>,
    command: &[String],
    filter: Option<&str>,
    python: Option<&Path>,
    cwd: &Path,
) -> Result<Resolved, String> {
    let named = match runner.map(str::trim).filter(|r| !r.is_empty()) {
        Some(name) => Some(Runner::from_name(name).ok_or_else(|| {
            format!(
                "--runner {name:?} is not a runner the agent knows ({}); leave it out to \
                 recognise the runner from the command",
                runner::names()
            )
        })?),
        None => None,
    };
    let (runner, argv) = if command.is_empty() {
        let r = named.or_else(|| Runner::detect(cwd)).ok_or_else(|| {
            format!(
                "no command given and no test runner detected in {}: none of {} is there. Put \
                 the test command after `--`, or name the runner with --runner",
                cwd.display(),
                Runner::detect_text()
            )
        })?;
        (Some(r), r.default_command(cwd, python))
    } else {
        (
            named.or_else(|| Runner::of_command(command).map(|(r, _)| r)),
            command.to_vec(),
        )
    };
    let argv = match (filter.filter(|f| !f.is_empty()), runner) {
        (None, _) => argv,
        (Some(f), Some(r)) => r.with_args(&argv, r.filter_args(f)),
        (Some(_), None) => {
            return Err(format!(
                "--filter needs a runner the agent knows ({}); {:?} is none of them: put the \
                 selection in the command, or name the runner with --runner",
                runner::names(),
                argv.join(" ")
            ));
        }
    };
    Ok(Resolved { runner, argv })
}

/// What `--failed-from` takes from an earlier results file.
struct Earlier {
    runner: Option<String>,
    run_id: String,
    /// Its failed and errored cases.
    failed: Vec<TestCase>,
}

/// The failed and errored cases of an earlier `--results-json` file, its
/// runner's name and its run id.
fn failed_cases(path: &Path) -> Result<Earlier, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read --failed-from {}: {e}", path.display()))?;
    let file: ResultsFile = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "--failed-from {} is not a ptp-agent results file: {e}",
            path.display()
        )
    })?;
    let cases = file
        .cases
        .into_iter()
        .filter(|c| c.outcome.is_failure())
        .map(|c| c.into_case())
        .collect();
    Ok(Earlier {
        runner: file.runner,
        run_id: file.run_id,
        failed: cases,
    })
}

/// One run of the test command: how it ended and what its report said.
struct Attempt {
    exit: Exit,
    report: Result<junit::Report, String>,
    problems: Vec<String>,
}

/// Runs `plan` once and reads the report it wrote (the plan's own file,
/// or the user's `--junit` files written since `started`).
async fn attempt(
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
async fn retry_failures(
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

/// `ptp-agent run -- <command>`.
pub async fn run(s: &Settings, args: RunArgs) -> i32 {
    let report_dir = match tempfile::Builder::new().prefix("ptp-agent-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("ptp-agent: cannot create a temporary directory for the report: {e}");
            return 70;
        }
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let resolved = match resolve_selection(&args.select, &cwd) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut argv = resolved.argv.clone();
    let mut rerun = None;
    if let Some(path) = &args.failed_from {
        let Earlier {
            runner: prev_runner,
            run_id: from_run_id,
            failed: cases,
        } = match failed_cases(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ptp-agent: {e}");
                return 2;
            }
        };
        let Some(r) = resolved.runner else {
            eprintln!(
                "ptp-agent: --failed-from needs a runner the agent knows ({}); name it with --runner",
                runner::names()
            );
            return 2;
        };
        if let Some(prev) = prev_runner.as_deref().filter(|p| *p != r.name()) {
            eprintln!(
                "ptp-agent: --failed-from {} is a {prev} run; this command runs {}",
                path.display(),
                r.name()
            );
            return 2;
        }
        if cases.is_empty() {
            say!(
                s,
                "nothing failed in {}; no test was started",
                path.display()
            );
            return 0;
        }
        let refs: Vec<&TestCase> = cases.iter().collect();
        let sel = r.select(&argv, &refs, &cwd);
        if !sel.unmapped.is_empty() {
            say!(
                s,
                "not rerun ({} of {} failed tests of {} map to no test here): {}",
                sel.unmapped.len(),
                cases.len(),
                path.display(),
                sel.unmapped.join(", ")
            );
        }
        if sel.selected.is_empty() {
            eprintln!(
                "ptp-agent: none of the {} failed tests of {} can be selected here (moved or \
                 deleted?); nothing was run",
                cases.len(),
                path.display()
            );
            return 2;
        }
        rerun = Some(RerunLine {
            from_run_id,
            tests: sel.selectors.clone(),
            not_mapped: sel.unmapped.clone(),
        });
        argv = sel.argv;
    }
    let plan = match resolved.runner {
        Some(Runner::Pytest) => Runner::Pytest.plan(&argv, report_dir.path(), 1),
        Some(r) if args.junit.is_empty() => r.plan(&argv, report_dir.path(), 1),
        r => Plan {
            argv: argv.clone(),
            runner: r,
            ..Plan::default()
        },
    };
    let runner_name = plan.runner.map(|r| r.name().to_string()).or_else(|| {
        argv.first().map(|c| {
            Path::new(c)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| c.clone())
        })
    });
    if let Some(note) = &plan.note {
        say!(s, "note: {note}");
    } else if plan.junit_path.is_none() && args.junit.is_empty() {
        say!(
            s,
            "note: {:?} is no runner the agent knows ({}) and no --junit was given; the run will be published without test cases",
            argv.join(" "),
            runner::names()
        );
    }
    warn(s);
    // --no-publish: no connection at all, so no heartbeats, no retries.
    let publisher = if args.no_publish {
        None
    } else {
        connect(s).await
    };
    // The quarantine list is read while the tests run.
    let known = if args.no_quarantine {
        None
    } else if args.no_publish {
        Some(tokio::spawn(std::future::ready(quarantine::Known {
            list: None,
            said: "quarantine: not read (--no-publish: no NATS connection); no test is quarantined"
                .into(),
        })))
    } else {
        let client = match &publisher {
            Some(Sender::Nats(p)) => Some(p.client()),
            _ => None,
        };
        let (project, spool) = (s.project.clone(), s.spool_dir.clone());
        let budget = s.publish_timeout.min(quarantine::READ_BUDGET);
        Some(tokio::spawn(async move {
            quarantine::load(client, &project, &spool, budget).await
        }))
    };
    let run_id = uuid::Uuid::now_v7().to_string();
    let started_at = Utc::now();
    let beats = Beats {
        worker_id: s.worker_id.clone(),
        host: s.host.clone(),
        project: s.project.clone(),
        run_id: run_id.clone(),
        interval_secs: args.heartbeat_secs,
    };
    let ticker = publisher.clone().map(|p| {
        let beats = beats.clone();
        tokio::spawn(async move {
            p.heartbeat(beats.beat(HeartbeatPhase::Start)).await;
            let mut t = tokio::time::interval(Duration::from_secs(beats.interval_secs));
            t.tick().await;
            loop {
                t.tick().await;
                p.heartbeat(beats.beat(HeartbeatPhase::Tick)).await;
            }
        })
    });
    let first = attempt(s, &plan, &args.junit, args.timeout).await;
    let (first, retry_note) = retry_failures(
        s,
        &args,
        runner_name.as_deref(),
        plan.runner,
        &argv,
        &cwd,
        report_dir.path(),
        first,
    )
    .await;
    let Attempt {
        exit,
        report,
        problems,
    } = first;
    if let Some(t) = ticker {
        t.abort();
    }
    let finished_at = Utc::now();
    let deadline = Instant::now() + s.publish_timeout;
    if let Some(p) = &publisher {
        p.heartbeat(beats.beat(HeartbeatPhase::End)).await;
    }
    for p in &problems {
        eprintln!("ptp-agent: report problem: {p}");
    }
    let report_ok = report.is_ok() && problems.is_empty();
    let report_read = report.is_ok() && (plan.junit_path.is_some() || !args.junit.is_empty());
    if let Err(e) = &report {
        eprintln!("ptp-agent: {e}");
    }
    let (report, lines) = match report {
        Ok(r) => (Ok(r.cases), r.lines),
        Err(e) => (Err(e), Vec::new()),
    };
    let (run, cases) = report::build(
        Meta {
            run_id,
            project: s.project.clone(),
            branch: s.branch.clone(),
            commit: s.commit.clone(),
            worker_id: s.worker_id.clone(),
            host: s.host.clone(),
            command: Some(plan.argv.join(" ")),
            started_at,
            finished_at,
        },
        Finished {
            runner: runner_name,
            exit: exit.clone(),
            report,
        },
    );
    let mut cases = cases;
    if let Some(w) = owners::fill(&mut cases, plan.runner, &cwd, s.codeowners.as_deref()) {
        say!(s, "warning: {w}");
    }
    let mut run = run;
    if let Some(n) = retry_note {
        say!(s, "{n}");
        if run.note.is_none() {
            run.note = Some(n);
        }
    }
    let verdict = match known {
        None => quarantine::Verdict::default(),
        Some(task) => {
            let known = task.await.unwrap_or_default();
            if known.said.starts_with("warning") {
                eprintln!("ptp-agent: {}", known.said);
            } else {
                say!(s, "{}", known.said);
            }
            quarantine::apply(&known, &run, &mut cases)
        }
    };
    say!(s, "{}", report::summary(&run));
    if !verdict.failed.is_empty() {
        let list = verdict
            .failed
            .iter()
            .map(|(id, reason)| {
                if reason.is_empty() {
                    format!("  {id}")
                } else {
                    format!("  {id} ({reason})")
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        if verdict.hidden {
            eprintln!(
                "ptp-agent: every failing test is quarantined, so the run passes (exit 0); quarantined tests that failed:\n{list}"
            );
        } else {
            eprintln!(
                "ptp-agent: quarantined tests that failed (other failures still fail the run, and a crash is never hidden):\n{list}"
            );
        }
    }
    let delivery = if args.no_publish {
        say!(s, "run {} not published (--no-publish)", run.run_id);
        Delivery::NotRequested
    } else {
        deliver(s, publisher.as_ref(), &run, &cases, deadline).await
    };
    if delivery.published()
        && let Some(p) = &publisher
    {
        send_spool(s, p, deadline).await;
    }
    if let Some(p) = publisher {
        p.close(deadline).await;
    }
    let results_ok = match &args.results_json {
        None => true,
        Some(path) => match ResultsFile::new(&run, &cases, report_read, &delivery)
            .with_selectors(plan.runner, &cwd, &cases)
            .with_rerun(rerun)
            .with_quarantine(&verdict)
            .write(path)
        {
            Ok(()) => true,
            Err(e) => {
                eprintln!("ptp-agent: {e}");
                false
            }
        },
    };
    let told = tell_ci(s, &run, &cases, &lines, &delivery).await;
    let delivered = delivery.published() || delivery == Delivery::NotRequested;
    let test_code = if verdict.hidden { 0 } else { exit.code() };
    exit_code(
        test_code,
        delivered && report_ok && results_ok && told,
        s.strict,
    )
}

/// `ptp-agent list`: the tests the runner would run, without running them.
pub async fn list(args: ListArgs) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let resolved = match resolve_selection(&args.select, &cwd) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Some(r) = resolved.runner else {
        eprintln!(
            "ptp-agent: cannot list the tests of {:?}: it is no runner the agent knows ({}); name it with --runner",
            resolved.argv.join(" "),
            runner::names()
        );
        return 2;
    };
    let argv = match r.list_command(&resolved.argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ptp-agent: {e}");
            return 2;
        }
    };
    let listed = listing::run(r, &argv, &cwd, args.timeout.map(Duration::from_secs)).await;
    if args.json {
        match serde_json::to_string(&listed) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("ptp-agent: cannot encode the listing: {e}");
                return 70;
            }
        }
    } else {
        for t in &listed.tests {
            println!("{t}");
        }
        for e in &listed.errors {
            eprintln!("ptp-agent: {e}");
        }
    }
    listed.exit_code
}

/// `ptp-agent upload <files>`.
pub async fn upload(s: &Settings, args: UploadArgs) -> i32 {
    warn(s);
    let (files, problems) = expand(&args.files);
    let (report, problems) = read_reports(&files, problems);
    for p in &problems {
        eprintln!("ptp-agent: report problem: {p}");
    }
    let (cases, lines) = match report {
        Ok(r) => (r.cases, r.lines),
        Err(e) => {
            eprintln!("ptp-agent: nothing to upload: {e}");
            return 2;
        }
    };
    let now = Utc::now();
    let (mut run, cases) = report::build(
        Meta {
            run_id: uuid::Uuid::now_v7().to_string(),
            project: s.project.clone(),
            branch: s.branch.clone(),
            commit: s.commit.clone(),
            worker_id: s.worker_id.clone(),
            host: s.host.clone(),
            command: None,
            started_at: now,
            finished_at: now,
        },
        Finished {
            runner: args.runner.or(Some("junit".into())),
            exit: Exit::Code(0),
            report: Ok(cases),
        },
    );
    run.exit_code = None;
    let mut cases = cases;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let runner = run.runner.as_deref().and_then(Runner::from_name);
    if let Some(w) = owners::fill(&mut cases, runner, &cwd, s.codeowners.as_deref()) {
        say!(s, "warning: {w}");
    }
    // The reports say how long the tests took, not when they ran: the run
    // is placed as ending now, so its span matches its duration (the
    // master refuses a duration longer than finished_at - started_at).
    let duration: f64 = cases.iter().map(|c| c.duration_secs).sum();
    run.duration_secs = duration.min(ptp_nats::schema::MAX_DURATION_SECS);
    run.started_at =
        chrono::TimeDelta::try_milliseconds((run.duration_secs * 1000.0).ceil() as i64)
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(now);
    say!(s, "{} from {} file(s)", report::summary(&run), files.len());
    let publisher = connect(s).await;
    let deadline = Instant::now() + s.publish_timeout;
    let delivery = deliver(s, publisher.as_ref(), &run, &cases, deadline).await;
    if let Some(p) = publisher {
        p.close(deadline).await;
    }
    tell_ci(s, &run, &cases, &lines, &delivery).await;
    match (delivery.published(), problems.is_empty()) {
        (true, true) => 0,
        (true, false) => 2,
        (false, _) => 1,
    }
}

/// `ptp-agent flush`.
pub async fn flush(s: &Settings) -> i32 {
    let pending = match spool::list(&s.spool_dir) {
        Ok(f) => f.len(),
        Err(e) => {
            eprintln!("ptp-agent: {e}");
            return 1;
        }
    };
    if pending == 0 {
        say!(
            s,
            "spool {} is empty; nothing to send",
            s.spool_dir.display()
        );
        return 0;
    }
    let Some(p) = connect(s).await else { return 1 };
    // Each spooled run gets the budget a run gets.
    let deadline = Instant::now() + s.publish_timeout * pending.max(1) as u32;
    let (sent, failed) = send_spool(s, &p, deadline).await;
    p.close(deadline).await;
    say!(
        s,
        "flush: {sent} sent, {failed} not sent, {} left in {}",
        pending - sent,
        s.spool_dir.display()
    );
    if failed == 0 { 0 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_code_wins_unless_strict_and_green() {
        assert_eq!(exit_code(1, false, true), 1);
        assert_eq!(exit_code(0, false, false), 0);
        assert_eq!(exit_code(0, false, true), EXIT_REPORTING_FAILED);
        assert_eq!(exit_code(0, true, true), 0);
        assert_eq!(exit_code(124, true, false), 124);
    }
}
