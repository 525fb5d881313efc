//! The quarantine list on the agent's side: read from the master's
//! key-value bucket at start ([`ptp_nats::quarantine`]), cached on disk,
//! and applied to the finished run.
//!
//! # Reading
//!
//! The list is read with the agent's own NATS connection and credentials
//! while the tests run, within [`READ_BUDGET`] (or `PTP_PUBLISH_TIMEOUT`,
//! whichever is shorter). A list read is cached in `quarantine/` next to
//! the spool directory with the time it was read. When it cannot be read
//! (NATS away, no bucket, no permission, the HTTP transport, an invalid
//! value) the agent says so and uses the cached list, stating its age, or
//! none: an outage can only make the agent hide less, never more.
//!
//! # Applying
//!
//! Every case of a test on the list (not expired) is marked
//! `quarantined`; outcomes stay the real ones. When the run failed only
//! because of quarantined tests, the agent exits 0 and prints which
//! quarantined tests failed. Any other failure still fails the run, and a
//! crash (a signal, a timeout, no report, pytest's exits 2 to 5: see
//! [`crate::report::crashed`]) is never hidden, whatever is quarantined.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ptp_nats::quarantine::{self, QuarantineList};
use ptp_nats::schema::{RunInfo, RunStatus, TestCase};
use serde::{Deserialize, Serialize};

use crate::report;

/// Longest wait for the list.
pub const READ_BUDGET: Duration = Duration::from_secs(10);

/// The list the run is judged by, and where it came from.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The list; `None`: nothing is quarantined.
    pub list: Option<QuarantineList>,
    /// What to say about where it came from.
    pub said: String,
}

/// The cache file's content.
#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    project: String,
    fetched_at: DateTime<Utc>,
    list: Option<QuarantineList>,
}

/// `<spool dir>/../quarantine/<key>.json`.
pub fn cache_path(spool_dir: &Path, project: &str) -> PathBuf {
    let base = spool_dir
        .parent()
        .map_or_else(|| spool_dir.join("quarantine"), |p| p.join("quarantine"));
    base.join(format!("{}.json", quarantine::key(project)))
}

fn write_cache(path: &Path, project: &str, list: Option<&QuarantineList>) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let body = serde_json::to_vec(&Cached {
        project: project.to_string(),
        fetched_at: Utc::now(),
        list: list.cloned(),
    })
    .map_err(|e| e.to_string())?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, &body).map_err(|e| e.to_string())?;
    tmp.persist(path).map_err(|e| e.error.to_string())?;
    Ok(())
}

fn read_cache(path: &Path, project: &str) -> Option<Cached> {
    let bytes = std::fs::read(path).ok()?;
    let c: Cached = serde_json::from_slice(&bytes).ok()?;
    if c.project != project {
        return None;
    }
    if let Some(l) = &c.list
        && (l.project != project || l.validate().is_err())
    {
        return None;
    }
    Some(c)
}

/// `3h 12m`, `45s`.
pub fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

fn count(list: Option<&QuarantineList>) -> usize {
    list.map_or(0, |l| l.active_count(Utc::now()))
}

/// The list from NATS (`client` is the agent's connection) within
/// `budget`, cached on success; on failure the cached list or none, with
/// the reason said.
pub async fn load(
    client: Option<async_nats::Client>,
    project: &str,
    spool_dir: &Path,
    budget: Duration,
) -> Known {
    let path = cache_path(spool_dir, project);
    let why = match client {
        None => "the agent has no NATS connection (HTTP transport)".to_string(),
        Some(client) => {
            let js = async_nats::jetstream::new(client);
            match tokio::time::timeout(budget, quarantine::read(&js, project)).await {
                Ok(Ok(list)) => {
                    let said = format!(
                        "quarantine: {} tests quarantined in project {project} (read from NATS)",
                        count(list.as_ref())
                    );
                    let said = match write_cache(&path, project, list.as_ref()) {
                        Ok(()) => said,
                        Err(e) => format!("{said}; could not cache it: {e}"),
                    };
                    return Known { list, said };
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer from NATS within {} s", budget.as_secs()),
            }
        }
    };
    match read_cache(&path, project) {
        Some(c) => {
            let n = count(c.list.as_ref());
            Known {
                list: c.list,
                said: format!(
                    "warning: cannot read the quarantine list ({why}); using the list cached {} ago ({}, {n} tests quarantined)",
                    age(Utc::now() - c.fetched_at),
                    path.display()
                ),
            }
        }
        None => Known {
            list: None,
            said: format!(
                "warning: cannot read the quarantine list ({why}) and none is cached; no test is quarantined"
            ),
        },
    }
}

/// What applying the list decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Failed quarantined tests (ids, each once), with their reasons.
    pub failed: Vec<(String, String)>,
    /// Every failure was quarantined and the run did not crash: exit 0.
    pub hidden: bool,
}

/// Marks the quarantined cases of `run` and decides whether its failures
/// are all quarantined (see the module doc).
pub fn apply(known: &Known, run: &RunInfo, cases: &mut [TestCase]) -> Verdict {
    let Some(list) = &known.list else {
        return Verdict::default();
    };
    let now = Utc::now();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut other_failure = false;
    for c in cases.iter_mut() {
        let entry = list.active(&c.test_id, now);
        c.quarantined = entry.is_some();
        if c.outcome.is_failure() {
            match entry {
                Some(e) => {
                    if !failed.iter().any(|(id, _)| id == &c.test_id) {
                        failed.push((c.test_id.clone(), e.reason.clone()));
                    }
                }
                None => other_failure = true,
            }
        }
    }
    let hidden = !failed.is_empty()
        && !other_failure
        && run.status == RunStatus::Failed
        && !report::crashed(run.status);
    Verdict { failed, hidden }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        let s = chrono::TimeDelta::seconds;
        assert_eq!(age(s(5)), "5s");
        assert_eq!(age(s(125)), "2m 5s");
        assert_eq!(age(s(3 * 3600 + 720)), "3h 12m");
        assert_eq!(age(s(2 * 86400 + 3600)), "2d 1h");
    }

    #[test]
    fn the_cache_sits_next_to_the_spool_and_belongs_to_one_project() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = dir.path().join("ptp-agent/spool");
        let p = cache_path(&spool, "shop");
        assert!(
            p.starts_with(dir.path().join("ptp-agent/quarantine")),
            "{}",
            p.display()
        );
        let list = QuarantineList::new("shop", Utc::now());
        write_cache(&p, "shop", Some(&list)).expect("cached");
        assert_eq!(read_cache(&p, "shop").and_then(|c| c.list), Some(list));
        assert!(read_cache(&p, "other").is_none());
    }
}
