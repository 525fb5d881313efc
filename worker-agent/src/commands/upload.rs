//! `ptp-agent upload <files>`: publishing JUnit reports written by some
//! other step, as a run with no command and no exit code.
//!
//! The run is placed as ending now with the reports' total duration as its
//! span, so it passes the master's check that a duration fits between
//! `started_at` and `finished_at`. Exit 0 when published and every file was
//! read, 2 when published with problems, 1 when not published.

use std::path::PathBuf;

use chrono::Utc;
use tokio::time::Instant;

use super::delivery::{connect, deliver, tell_ci};
use super::reports::{expand, read_reports};
use super::warn;
use crate::config::{Settings, UploadArgs};
use crate::owners;
use crate::process::Exit;
use crate::report::{self, Finished, Meta};
use crate::runner::Runner;

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
