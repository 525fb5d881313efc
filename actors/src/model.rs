//! The domain model the actors store and serve: runs, test cases, rejections.
//!
//! These are deliberately not the wire types of `ptp-nats`: ingest converts
//! wire messages into these at the edge, so the actors and the database never
//! depend on how results travelled. They serialize to the JSON the API serves.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// How a test case ended. The discriminant is the stored integer, ordered
/// failures first so `ORDER BY outcome` lists what matters at the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Failed an assertion.
    Failed = 0,
    /// Raised an unexpected error (in the test, setup or teardown).
    Error = 1,
    /// Expected to fail, passed.
    Xpassed = 2,
    /// Passed.
    Passed = 3,
    /// Skipped.
    Skipped = 4,
    /// Expected to fail, failed.
    Xfailed = 5,
}

impl Outcome {
    /// Every outcome in stored order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Failed,
        Outcome::Error,
        Outcome::Xpassed,
        Outcome::Passed,
        Outcome::Skipped,
        Outcome::Xfailed,
    ];

    /// The stored integer.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// Back from the stored integer.
    pub fn from_code(code: i64) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.code() == code)
    }

    /// The snake_case name.
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

    /// Failed or errored.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Error)
    }
}

/// How a run ended, as the model owns it: stored as its snake_case name in
/// `runs.status` (sqlx encodes and decodes it here, so no reader parses the
/// text back) and served under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

    /// The snake_case name, stored and served.
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

    /// Parses the snake_case name; the error names the accepted ones.
    pub fn parse(s: &str) -> Result<RunStatus, String> {
        RunStatus::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = RunStatus::ALL.map(RunStatus::as_str).to_vec();
                format!("status {s:?} is not one of {}", all.join(", "))
            })
    }
}

impl sqlx::Type<sqlx::Sqlite> for RunStatus {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <str as sqlx::Type<sqlx::Sqlite>>::type_info()
    }

    fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
        <str as sqlx::Type<sqlx::Sqlite>>::compatible(ty)
    }
}

impl sqlx::Encode<'_, sqlx::Sqlite> for RunStatus {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::sqlite::SqliteArgumentsBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Sqlite>>::encode_by_ref(&self.as_str(), buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for RunStatus {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let s = <&str as sqlx::Decode<sqlx::Sqlite>>::decode(value)?;
        Ok(RunStatus::parse(s).map_err(|e| format!("stored run {e}"))?)
    }
}

/// Counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// All test cases.
    pub total: u64,
    /// Passed.
    pub passed: u64,
    /// Failed.
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
    /// The count of one outcome.
    pub fn get(&self, o: Outcome) -> u64 {
        match o {
            Outcome::Failed => self.failed,
            Outcome::Error => self.error,
            Outcome::Xpassed => self.xpassed,
            Outcome::Passed => self.passed,
            Outcome::Skipped => self.skipped,
            Outcome::Xfailed => self.xfailed,
        }
    }

    /// Pass rate in percent (0..=100) over the tests that reached a verdict:
    /// passed + xpassed over passed + xpassed + failed + error (skips and
    /// xfails excluded); `None` when nothing reached a verdict. The one
    /// pass-rate rule: ingest stores it with every run, history reuses it,
    /// `format::rate` writes it.
    pub fn pass_rate(&self) -> Option<f64> {
        let good = self.passed + self.xpassed;
        let ran = good + self.failed + self.error;
        (ran > 0).then(|| good as f64 * 100.0 / ran as f64)
    }
}

/// A run's metadata as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique id.
    pub run_id: String,
    /// Project.
    pub project: String,
    /// Branch.
    pub branch: Option<String>,
    /// Commit sha.
    pub commit: Option<String>,
    /// Worker that ran it.
    pub worker_id: String,
    /// Worker's host name.
    pub host: Option<String>,
    /// Test runner (pytest, jest, ...).
    pub runner: Option<String>,
    /// Command line.
    pub command: Option<String>,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub finished_at: DateTime<Utc>,
    /// Wall time, seconds.
    pub duration_secs: f64,
    /// Exit code of the test command.
    pub exit_code: Option<i32>,
    /// How it ended.
    pub status: RunStatus,
    /// Counts by outcome.
    pub counts: Counts,
    /// Pass rate in percent, when any test reached a verdict.
    pub pass_rate: Option<f64>,
    /// Whether every case is stored (false for the original system's
    /// payload, which carried failures only).
    pub cases_complete: bool,
    /// Why the run has its status, when the agent said.
    pub note: Option<String>,
    /// Failed or errored cases that were quarantined when they ran: the
    /// writer counts them when the run completes (0 until then).
    #[serde(default)]
    pub quarantined_failures: u64,
}

/// One test case as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Stable test id.
    pub test_id: String,
    /// Source file.
    pub file: Option<String>,
    /// JUnit classname.
    pub classname: Option<String>,
    /// JUnit name.
    pub name: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Seconds.
    pub duration_secs: f64,
    /// Failure/skip message.
    pub message: Option<String>,
    /// Traceback.
    pub traceback: Option<String>,
    /// Captured output.
    pub output: Option<String>,
    /// Failed attempts before the final outcome.
    pub retries: u32,
    /// Passed after failing within the run.
    pub flaky: bool,
    /// Owners of the test's file (CODEOWNERS), as the agent named them.
    #[serde(default)]
    pub owners: Vec<String>,
    /// The test was quarantined when it ran; `outcome` is still the real one.
    #[serde(default)]
    pub quarantined: bool,
}

/// A message the master refused, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// When it was refused.
    pub received_at: DateTime<Utc>,
    /// Subject it arrived on.
    pub subject: Option<String>,
    /// Its `Nats-Msg-Id`.
    pub msg_id: Option<String>,
    /// Run id, if it could be read.
    pub run_id: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// The first bytes of the message, for diagnosis.
    pub excerpt: Option<String>,
    /// The whole message, kept for dead letters (valid messages the database
    /// refused) so they can be replayed; `None` for plain rejections.
    #[serde(default, skip_serializing)]
    pub payload: Option<Vec<u8>>,
}

/// Milliseconds since the epoch, as stored.
pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Back from stored milliseconds (out-of-range values clamp to the epoch).
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_rate_counts_verdicts_only() {
        let c = Counts {
            total: 6,
            passed: 1,
            xpassed: 1,
            failed: 1,
            error: 1,
            skipped: 1,
            xfailed: 1,
        };
        assert_eq!(c.pass_rate(), Some(50.0));
        let skips_only = Counts {
            total: 2,
            skipped: 1,
            xfailed: 1,
            ..Counts::default()
        };
        assert_eq!(skips_only.pass_rate(), None);
        assert_eq!(Counts::default().pass_rate(), None);
    }

    #[test]
    fn run_status_names_round_trip_and_unknown_names_are_refused() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Ok(s));
            let json = serde_json::to_value(s).expect("json");
            assert_eq!(json, s.as_str());
        }
        let err = RunStatus::parse("broken").expect_err("not a status");
        assert!(
            err.contains("\"broken\"") && err.contains("timed_out"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn run_status_is_stored_as_its_name() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("in-memory sqlite");
        let (text, back): (String, RunStatus) = sqlx::query_as("SELECT CAST(?1 AS TEXT), ?1")
            .bind(RunStatus::InternalError)
            .fetch_one(&pool)
            .await
            .expect("round trip");
        assert_eq!(
            (text.as_str(), back),
            ("internal_error", RunStatus::InternalError)
        );
        let err = sqlx::query_as::<_, (RunStatus,)>("SELECT 'exploded'")
            .fetch_one(&pool)
            .await
            .expect_err("not a status");
        assert!(err.to_string().contains("exploded"), "{err}");
    }
}
