//! The agent's results file (`ptp-agent run --results-json`): what a local
//! run answers from, and what `run_failed` hands back to the agent.
//!
//! Shape: the file's types as this server reads them (only the fields it
//! uses), and [`read_results`], the one place the file is read and its
//! format checked.
//!
//! Guarantees: a missing file is `None` (the run produced no report), an
//! unreadable or foreign one an error naming the path and what to do.

use std::io::ErrorKind;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Counts by outcome (the agent's `counts`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(default)]
pub(super) struct Counts {
    pub(super) total: u64,
    pub(super) passed: u64,
    pub(super) failed: u64,
    pub(super) error: u64,
    pub(super) skipped: u64,
    pub(super) xfailed: u64,
    pub(super) xpassed: u64,
}

/// A case of the agent's results file.
#[derive(Debug, Deserialize)]
pub(super) struct Case {
    pub(super) test_id: String,
    pub(super) outcome: String,
    #[serde(default)]
    pub(super) duration_secs: f64,
    #[serde(default)]
    pub(super) message: Option<String>,
    #[serde(default)]
    pub(super) selector: Option<String>,
    #[serde(default)]
    pub(super) quarantined: bool,
}

impl Case {
    pub(super) fn is_failure(&self) -> bool {
        matches!(self.outcome.as_str(), "failed" | "error")
    }
}

/// The agent's explanation in its stderr: its `ptp-agent: ` lines that
/// are not progress, or the whole tail.
pub(super) fn agent_says(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("ptp-agent: "))
        .filter(|l| !l.starts_with("warning: branch and commit unknown"))
        .collect();
    if lines.is_empty() {
        stderr.trim().to_string()
    } else {
        lines.join("; ")
    }
}

/// What `ptp-agent run --failed-from` selected (the results file's
/// `rerun`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RerunLine {
    pub(super) from_run_id: String,
    pub(super) tests: Vec<String>,
    pub(super) not_mapped: Vec<String>,
}

/// The agent's `--results-json` file, format 1 (ptp-agent's `results`
/// module documents it). Lenient: fields this server does not use may
/// change.
#[derive(Debug, Deserialize)]
pub(super) struct Results {
    pub(super) format: u32,
    pub(super) run_id: String,
    #[serde(default)]
    pub(super) runner: Option<String>,
    pub(super) status: String,
    #[serde(default)]
    pub(super) exit_code: Option<i32>,
    #[serde(default)]
    pub(super) duration_secs: f64,
    #[serde(default)]
    pub(super) note: Option<String>,
    #[serde(default)]
    pub(super) report: bool,
    #[serde(default)]
    pub(super) counts: Counts,
    #[serde(default)]
    pub(super) published: bool,
    #[serde(default)]
    pub(super) delivery: String,
    #[serde(default)]
    pub(super) spool_file: Option<String>,
    #[serde(default)]
    pub(super) cases: Vec<Case>,
    #[serde(default)]
    pub(super) rerun: Option<RerunLine>,
    #[serde(default)]
    pub(super) quarantined_failures: Vec<String>,
    #[serde(default)]
    pub(super) passed_by_quarantine: bool,
}

/// The results file at `path`: `None` when there is none.
pub(super) fn read_results(path: &Path) -> Result<Option<Results>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let results: Results = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not a ptp-agent results file ({e}); delete it and call run_tests",
            path.display()
        )
    })?;
    if results.format != 1 {
        return Err(format!(
            "{} has results format {}, this ptp-mcp reads format 1: use a ptp-agent of the same \
             version",
            path.display(),
            results.format
        ));
    }
    Ok(Some(results))
}
