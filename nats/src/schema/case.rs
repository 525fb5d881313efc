//! One test case on the wire: its [`Outcome`], the [`TestCase`] the agent
//! read from a report, and the [`Counts`] of a run by outcome.
//!
//! Outcomes are read from a string only, so a value of another type is
//! refused as such and an unknown name lists the accepted ones
//! (`not_one_of`, shared with [`super::RunStatus`]).

use serde::{Deserialize, Serialize};

use super::truncate_marked;

/// How a single test case ended. Read from a string only, so a value of
/// another type is refused as such ("expected a string") and an unknown
/// name lists the accepted ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Outcome {
    /// The test failed an assertion.
    Failed,
    /// The test (or its setup/teardown) raised an unexpected error.
    Error,
    /// An expected failure that unexpectedly passed.
    Xpassed,
    /// The test passed.
    Passed,
    /// The test was skipped.
    Skipped,
    /// An expected failure that failed as expected.
    Xfailed,
}

impl Outcome {
    /// All outcomes, failures first (the order the API lists cases in).
    pub const ALL: [Outcome; 6] = [
        Outcome::Failed,
        Outcome::Error,
        Outcome::Xpassed,
        Outcome::Passed,
        Outcome::Skipped,
        Outcome::Xfailed,
    ];

    /// The snake_case name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Failed => "failed",
            Outcome::Error => "error",
            Outcome::Xpassed => "xpassed",
            Outcome::Passed => "passed",
            Outcome::Skipped => "skipped",
            Outcome::Xfailed => "xfailed",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether this outcome counts as a failure of the test (failed or error).
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Error)
    }
}

/// "`x` is not a <what>; send one of a, b, c".
pub(super) fn not_one_of(
    what: &str,
    found: &str,
    accepted: impl IntoIterator<Item = &'static str>,
) -> String {
    let accepted: Vec<&str> = accepted.into_iter().collect();
    format!(
        "{} is not {what}; send one of {}",
        serde_json::Value::from(truncate_marked(found.to_string(), 100)),
        accepted.join(", ")
    )
}

impl TryFrom<String> for Outcome {
    type Error = String;

    fn try_from(s: String) -> Result<Outcome, String> {
        Outcome::parse(&s).ok_or_else(|| {
            not_one_of(
                "an outcome",
                &s,
                Outcome::ALL.into_iter().map(Outcome::as_str),
            )
        })
    }
}

/// Test counts of a run, one field per [`Outcome`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Test cases in all.
    pub total: u64,
    /// Passed.
    pub passed: u64,
    /// Failed an assertion.
    pub failed: u64,
    /// Errored.
    pub error: u64,
    /// Skipped.
    pub skipped: u64,
    /// Expected failures.
    pub xfailed: u64,
    /// Unexpected passes.
    pub xpassed: u64,
}

impl Counts {
    /// Counts the outcomes of `cases`.
    pub fn of<'a>(cases: impl IntoIterator<Item = &'a TestCase>) -> Counts {
        let mut c = Counts::default();
        for case in cases {
            c.add(case.outcome);
        }
        c
    }

    /// Adds one case with `outcome`.
    pub fn add(&mut self, outcome: Outcome) {
        self.total += 1;
        *self.get_mut(outcome) += 1;
    }

    /// The count of one outcome.
    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Passed => self.passed,
            Outcome::Failed => self.failed,
            Outcome::Error => self.error,
            Outcome::Skipped => self.skipped,
            Outcome::Xfailed => self.xfailed,
            Outcome::Xpassed => self.xpassed,
        }
    }

    fn get_mut(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::Passed => &mut self.passed,
            Outcome::Failed => &mut self.failed,
            Outcome::Error => &mut self.error,
            Outcome::Skipped => &mut self.skipped,
            Outcome::Xfailed => &mut self.xfailed,
            Outcome::Xpassed => &mut self.xpassed,
        }
    }
}

/// One test case as the agent read it from the runner's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    /// Stable id: `classname::name` (parameters included), or `file::name`.
    pub test_id: String,
    /// Source file, when the report names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The `classname` attribute (pytest: dotted module and class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classname: Option<String>,
    /// The `name` attribute (pytest: function name with parameters).
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Seconds.
    pub duration_secs: f64,
    /// Failure, error or skip message (capped at [`MAX_MESSAGE_BYTES`](super::MAX_MESSAGE_BYTES)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Traceback or failure body (capped at [`MAX_TRACEBACK_BYTES`](super::MAX_TRACEBACK_BYTES)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// Captured stdout/stderr (capped at [`MAX_OUTPUT_BYTES`](super::MAX_OUTPUT_BYTES)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Failed attempts before the final outcome (surefire `flakyFailure` /
    /// `rerunFailure`, nextest retries).
    #[serde(default)]
    pub retries: u32,
    /// Passed only after at least one failed attempt within this run.
    #[serde(default)]
    pub flaky: bool,
    /// Owners of the test's file from CODEOWNERS (`@user`, `@org/team`,
    /// e-mail), at most [`MAX_OWNERS`](super::MAX_OWNERS) of at most
    /// [`MAX_OWNER_BYTES`](super::MAX_OWNER_BYTES) bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// The test was on the project's quarantine list when the agent ran it
    /// (the `quarantine` module of this crate); its outcome is still the real one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}
