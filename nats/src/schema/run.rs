//! One run on the wire: how it ended ([`RunStatus`]), what it was
//! ([`RunInfo`]), and the two messages that carry it on the results stream
//! ([`CasesChunk`]s then one [`RunFinal`], as a [`WireMessage`]).
//!
//! Plain data: validation lives in `validate`, encoding and message ids in
//! `encoding`, each beside the rule it applies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::case::not_one_of;
use super::{Counts, TestCase};

/// How a whole run ended. Separates "tests failed" from "the runner broke".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum RunStatus {
    /// Every test passed (or was skipped / xfailed).
    Passed,
    /// Some tests failed or errored (pytest exit 1).
    Failed,
    /// The run was interrupted (pytest exit 2, Ctrl-C).
    Interrupted,
    /// The runner hit an internal error (pytest exit 3).
    InternalError,
    /// The runner was invoked wrongly (pytest exit 4).
    UsageError,
    /// No tests were collected (pytest exit 5).
    NoTests,
    /// The command died (signal, missing binary, or no report written).
    Crashed,
    /// The command ran past the agent's `--timeout` and was killed.
    TimedOut,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Passed,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::InternalError,
        RunStatus::UsageError,
        RunStatus::NoTests,
        RunStatus::Crashed,
        RunStatus::TimedOut,
    ];

    /// The snake_case name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::InternalError => "internal_error",
            RunStatus::UsageError => "usage_error",
            RunStatus::NoTests => "no_tests",
            RunStatus::Crashed => "crashed",
            RunStatus::TimedOut => "timed_out",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl TryFrom<String> for RunStatus {
    type Error = String;

    fn try_from(s: String) -> Result<RunStatus, String> {
        RunStatus::parse(&s).ok_or_else(|| {
            not_one_of(
                "a run status",
                &s,
                RunStatus::ALL.into_iter().map(RunStatus::as_str),
            )
        })
    }
}

/// Everything about a run except its test cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Unique id made by the agent (UUID v7) or the API caller.
    pub run_id: String,
    /// Project name.
    pub project: String,
    /// Branch, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit sha, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The CI worker that ran the tests.
    pub worker_id: String,
    /// Host name of the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The runner detected (`pytest`, `jest`, `junit`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// The command line the agent ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// When the command started.
    pub started_at: DateTime<Utc>,
    /// When the command finished.
    pub finished_at: DateTime<Utc>,
    /// Wall time of the run in seconds.
    pub duration_secs: f64,
    /// The command's exit code (`None` when killed by a signal or never started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How the run ended.
    pub status: RunStatus,
    /// Counts by outcome.
    pub counts: Counts,
    /// Whether every test case is included in the chunks (`true` for the
    /// agent). The original system's payload carried only failures, so for
    /// those runs the counts exceed the cases.
    pub cases_complete: bool,
    /// Why the run has this status, when the agent has something to say
    /// (e.g. "no JUnit report was written").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A slice of a run's test cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CasesChunk {
    /// The run these cases belong to.
    pub run_id: String,
    /// 0-based chunk number.
    pub chunk: u32,
    /// The cases.
    pub cases: Vec<TestCase>,
}

/// The message that completes a run: its metadata and how many
/// [`CasesChunk`]s belong to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinal {
    /// Run metadata and counts.
    pub run: RunInfo,
    /// Number of chunks (numbered `0..chunks`).
    pub chunks: u32,
}

/// One message on the results stream.
// Decoded once per message and matched at once: boxing `Run` would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireMessage {
    /// Some test cases of a run.
    Cases(CasesChunk),
    /// The end of a run.
    Run(RunFinal),
}
