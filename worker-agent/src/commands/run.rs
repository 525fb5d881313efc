//! `ptp-agent run -- <command>`: resolve the runner, optionally select the
//! failures of an earlier results file (`--failed-from`), run with
//! heartbeats and retries, build the run, apply the quarantine, deliver,
//! write the results file and tell CI.
//!
//! A readable decision sequence: the work is in the sibling modules and the
//! crate's libraries. What it guarantees: the exit code is the test
//! command's unless every failure is quarantined, combined with reporting
//! trouble in one place ([`super::exit_code`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use ptp_nats::schema::{HeartbeatPhase, TestCase};
use tokio::time::Instant;

use super::attempt::{Attempt, attempt, retry_failures};
use super::delivery::{connect, deliver, send_spool, tell_ci};
use super::exit_code;
use super::resolve::resolve_selection;
use super::warn;
use crate::config::{RunArgs, Settings};
use crate::publish::{Beats, Sender};
use crate::report::{self, Finished, Meta};
use crate::results::{Delivery, RerunLine, ResultsFile};
use crate::runner::{self, Plan, Runner};
use crate::{owners, quarantine};

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
