//! Where a finished run goes and what CI is told: connecting the sender the
//! settings ask for, publishing a run (spooling it when the broker or master
//! cannot be reached), sending the spool, and writing the job summary and
//! `::error` annotations.
//!
//! One place for delivery so `run`, `upload` and `flush` spool and report
//! alike: a run that is not published is spooled, or said to be lost; it is
//! never dropped silently.

use ptp_nats::schema::{RunInfo, TestCase};
use tokio::time::Instant;

use crate::config::{Settings, Transport};
use crate::master::Master;
use crate::publish::{Publisher, Sender};
use crate::results::Delivery;
use crate::{annotations, spool, summary};

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
pub(super) async fn deliver(
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
pub(super) async fn send_spool(s: &Settings, sender: &Sender, deadline: Instant) -> (usize, usize) {
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
pub(super) async fn tell_ci(
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
