//! The `--results-json` file: the parsed run as one JSON document, for a
//! program that started the agent and wants the answer without asking the
//! master (ptp-mcp's `run_tests` reads it to answer the editor).
//!
//! # Format (`"format": 1`)
//!
//! ```json
//! {"format": 1, "run_id": "0190…", "project": "shop", "branch": "main",
//!  "runner": "pytest", "command": "python -m pytest --junitxml=…",
//!  "status": "failed", "exit_code": 1, "duration_secs": 1.92,
//!  "started_at": "…", "finished_at": "…", "note": null,
//!  "report": true,
//!  "counts": {"total": 5, "passed": 3, "failed": 1, "error": 1, "skipped": 0, "xfailed": 0, "xpassed": 0},
//!  "published": false, "delivery": "not_requested", "spool_file": null,
//!  "cases": [{"test_id": "tests.test_cart::test_total", "classname": "tests.test_cart",
//!             "name": "test_total", "outcome": "failed", "duration_secs": 0.01,
//!             "message": "assert 1 == 2", "retries": 2}]}
//! ```
//!
//! - `status` and `counts` are exactly what is (or would have been)
//!   published; `cases` holds every case (passing ones too) without
//!   tracebacks or captured output, which stay on the master.
//! - A case's `retries` (failed attempts before its outcome), `flaky`
//!   (passed on a retry), `owners` (CODEOWNERS) and `quarantined` are
//!   written only when set.
//! - Failed and errored cases carry `selector`: how their runner selects
//!   them alone (pytest node id, test name, nextest filter).
//! - `rerun` (with `--failed-from`): `from_run_id`, the `tests` selected
//!   and the failed tests `not_mapped` to any test here.
//! - `quarantined_failures` lists failed tests on the quarantine list;
//!   `passed_by_quarantine` is true when they were the only failures and
//!   the agent exited 0.
//! - `report` says whether a JUnit report was read; when it is false the
//!   cases are empty and `note` says why (no report written, timed out...).
//! - `delivery` is `published` (JetStream acknowledged every message),
//!   `not_requested` (`--no-publish`), `spooled` (NATS unreachable; the run
//!   waits in `spool_file` for the next run or `ptp-agent flush`) or `lost`
//!   (it could not even be spooled). `published` is true only for the first.
//!
//! # Guarantees
//!
//! The file is written after delivery was decided, through a temporary file
//! in the same directory that is then renamed, so a reader that sees the
//! file sees all of it. It is written for every run that the agent got to
//! the end of, including commands that could not start, crashed or timed
//! out.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ptp_nats::schema::{Counts, Outcome, RunInfo, RunStatus, TestCase};
use serde::{Deserialize, Serialize};

/// The format version written in `"format"`.
pub const FORMAT: u32 = 1;

/// What happened to the run after it was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// JetStream acknowledged every message.
    Published,
    /// `--no-publish`: nothing was sent, nothing spooled.
    NotRequested,
    /// NATS did not acknowledge in time; the run waits in this spool file.
    Spooled(PathBuf),
    /// Neither published nor spooled.
    Lost,
}

impl Delivery {
    /// Whether the master will get the run without further action.
    pub fn published(&self) -> bool {
        matches!(self, Delivery::Published)
    }

    fn name(&self) -> &'static str {
        match self {
            Delivery::Published => "published",
            Delivery::NotRequested => "not_requested",
            Delivery::Spooled(_) => "spooled",
            Delivery::Lost => "lost",
        }
    }
}

/// One test case in the file: no traceback nor output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseLine {
    /// Stable id (`classname::name`, or `file::name`).
    pub test_id: String,
    /// The JUnit `file` attribute, when the report has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The JUnit `classname` (pytest: dotted module path and classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classname: Option<String>,
    /// The JUnit `name` (pytest: function name with parameters).
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Seconds.
    pub duration_secs: f64,
    /// Failure, error or skip message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Failed attempts before this outcome (`--retries`, or the runner's
    /// own retries).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Passed on a retry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flaky: bool,
    /// Owners from CODEOWNERS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// On the project's quarantine list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
    /// How the runner selects this test alone (a pytest node id, a test
    /// name, a nextest filter); failed and errored cases only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// What `--failed-from` selected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerunLine {
    /// The run whose failures were rerun.
    pub from_run_id: String,
    /// The selectors passed to the runner.
    pub tests: Vec<String>,
    /// Failed tests of that run that map to no test here (not rerun).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_mapped: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl CaseLine {
    /// The case again, as far as the file keeps it (no traceback nor
    /// output): enough to select the test.
    pub fn into_case(self) -> TestCase {
        TestCase {
            test_id: self.test_id,
            file: self.file,
            classname: self.classname,
            name: self.name,
            outcome: self.outcome,
            duration_secs: self.duration_secs,
            message: self.message,
            traceback: None,
            output: None,
            retries: self.retries,
            flaky: self.flaky,
            owners: self.owners,
            quarantined: self.quarantined,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsFile {
    /// [`FORMAT`].
    pub format: u32,
    /// The run id, as published.
    pub run_id: String,
    /// Project.
    pub project: String,
    /// Branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// `pytest`, or the command's name.
    #[serde(default)]
    pub runner: Option<String>,
    /// The command line that ran (with the `--junitxml` the agent added).
    #[serde(default)]
    pub command: Option<String>,
    /// How the run ended.
    pub status: RunStatus,
    /// The exit code passed on (`None` when killed by a signal).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Wall time.
    pub duration_secs: f64,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// Why the run has this status, when the agent has something to say.
    #[serde(default)]
    pub note: Option<String>,
    /// Whether a JUnit report was read.
    pub report: bool,
    /// Counts by outcome.
    pub counts: Counts,
    /// Whether JetStream acknowledged the run.
    pub published: bool,
    /// `published`, `not_requested`, `spooled` or `lost`.
    pub delivery: String,
    /// Where the run was spooled.
    #[serde(default)]
    pub spool_file: Option<PathBuf>,
    /// Every case.
    pub cases: Vec<CaseLine>,
    /// With `--failed-from`: what was selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun: Option<RerunLine>,
    /// Failed tests that were quarantined (ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined_failures: Vec<String>,
    /// Every failure was quarantined: the agent exited 0 although `status`
    /// says failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passed_by_quarantine: bool,
}

impl ResultsFile {
    /// The file's content for a built run.
    pub fn new(run: &RunInfo, cases: &[TestCase], report: bool, delivery: &Delivery) -> Self {
        ResultsFile {
            format: FORMAT,
            run_id: run.run_id.clone(),
            project: run.project.clone(),
            branch: run.branch.clone(),
            runner: run.runner.clone(),
            command: run.command.clone(),
            status: run.status,
            exit_code: run.exit_code,
            duration_secs: run.duration_secs,
            started_at: run.started_at,
            finished_at: run.finished_at,
            note: run.note.clone(),
            report,
            counts: run.counts,
            published: delivery.published(),
            delivery: delivery.name().to_string(),
            spool_file: match delivery {
                Delivery::Spooled(p) => Some(p.clone()),
                _ => None,
            },
            cases: cases
                .iter()
                .map(|c| CaseLine {
                    test_id: c.test_id.clone(),
                    file: c.file.clone(),
                    classname: c.classname.clone(),
                    name: c.name.clone(),
                    outcome: c.outcome,
                    duration_secs: c.duration_secs,
                    message: c.message.clone(),
                    retries: c.retries,
                    flaky: c.flaky,
                    owners: c.owners.clone(),
                    quarantined: c.quarantined,
                    selector: None,
                })
                .collect(),
            rerun: None,
            quarantined_failures: Vec::new(),
            passed_by_quarantine: false,
        }
    }

    /// Adds each failed or errored case's selector (`cases` are the ones
    /// the file was made from, in order; run in `root`).
    pub fn with_selectors(
        mut self,
        runner: Option<crate::runner::Runner>,
        root: &Path,
        cases: &[TestCase],
    ) -> Self {
        if let Some(r) = runner {
            for (line, c) in self.cases.iter_mut().zip(cases) {
                if c.outcome.is_failure() {
                    line.selector = r.selector(c, root);
                }
            }
        }
        self
    }

    /// Adds what `--failed-from` selected.
    pub fn with_rerun(mut self, rerun: Option<RerunLine>) -> Self {
        self.rerun = rerun;
        self
    }

    /// Adds what the quarantine list decided.
    pub fn with_quarantine(mut self, v: &crate::quarantine::Verdict) -> Self {
        self.quarantined_failures = v.failed.iter().map(|(id, _)| id.clone()).collect();
        self.passed_by_quarantine = v.hidden;
        self
    }

    /// Writes the file at `path` (replacing it) through a temporary file in
    /// the same directory.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let fail = |e: &dyn std::fmt::Display| {
            format!(
                "cannot write --results-json {}: {e}; check that its directory exists and is writable",
                path.display()
            )
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".ptp-results-")
            .tempfile_in(dir)
            .map_err(|e| fail(&e))?;
        serde_json::to_writer(std::io::BufWriter::new(tmp.as_file_mut()), self)
            .map_err(|e| fail(&e))?;
        tmp.as_file_mut().flush().map_err(|e| fail(&e))?;
        tmp.persist(path).map_err(|e| fail(&e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_delivery() {
        let now = Utc::now();
        let case = TestCase {
            test_id: "tests.test_a::test_b[1]".into(),
            file: None,
            classname: Some("tests.test_a".into()),
            name: "test_b[1]".into(),
            outcome: Outcome::Failed,
            duration_secs: 0.5,
            message: Some("assert 1 == 2".into()),
            traceback: Some("long".into()),
            output: Some("printed".into()),
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        };
        let run = RunInfo {
            run_id: "r1".into(),
            project: "p".into(),
            branch: None,
            commit: None,
            worker_id: "w".into(),
            host: None,
            runner: Some("pytest".into()),
            command: Some("pytest".into()),
            started_at: now,
            finished_at: now,
            duration_secs: 1.0,
            exit_code: Some(1),
            status: RunStatus::Failed,
            counts: Counts::of([&case]),
            cases_complete: true,
            note: None,
        };
        let spooled = Delivery::Spooled(PathBuf::from("/s/r1.json"));
        let f = ResultsFile::new(&run, std::slice::from_ref(&case), true, &spooled);
        let text = serde_json::to_string(&f).expect("encodes");
        assert!(text.contains(r#""delivery":"spooled""#), "{text}");
        assert!(text.contains(r#""status":"failed""#), "{text}");
        assert!(
            !text.contains("long") && !text.contains("printed"),
            "{text}"
        );
        let back: ResultsFile = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, f);
        assert!(!back.published);
        assert!(ResultsFile::new(&run, &[], false, &Delivery::Published).published);
    }
}
