//! The versioned wire schema: what the agent (and `POST /results`) publish and
//! what ingest decodes.
//!
//! A run travels as one or more [`CasesChunk`] messages followed by one
//! [`RunFinal`] that says how many chunks make the run. Splitting keeps every
//! message under the server's max payload (1 MB by default) even for runs of
//! tens of thousands of test cases. Every message is a JSON object with a
//! `schema` field ([`SCHEMA_VERSION`]) and a `kind` tag, so a master can refuse
//! a version it does not know with a precise reason instead of guessing.
//!
//! Guarantees:
//! - [`encode_run`] produces messages no larger than the budget it is given,
//!   each with a message id that is stable for the run's content
//!   (`<run_id>:c<n>:<digest>` and `<run_id>:run:<digest>`), so JetStream's
//!   duplicate window and the writer's idempotence both recognise a resend,
//!   while a run id reused for other results is not swallowed as a
//!   duplicate: the writer records it as a conflict ([`CasesChunk::digest`],
//!   [`RunFinal::digest`]).
//! - Every time is inside [`earliest_time`] ..= now + [`MAX_FUTURE`], every
//!   duration finite and at most [`MAX_DURATION_SECS`], every string bounded
//!   (the `MAX_*` constants): values that pass cannot overflow the master's
//!   time arithmetic.
//! - [`decode`] never panics on hostile input; it returns a [`DecodeError`]
//!   naming what is wrong, and [`WireMessage::validate`] refuses impossible
//!   values (negative durations, counts that contradict the cases, oversized
//!   strings) before anything reaches the database.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The version of the wire schema this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest test id kept, in bytes. Longer ids are refused by validation; the
/// agent truncates before publishing.
pub const MAX_TEST_ID_BYTES: usize = 4096;
/// Longest failure message kept, in bytes (longer ones are cut with a marker).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest traceback kept, in bytes (longer ones are cut with a marker).
pub const MAX_TRACEBACK_BYTES: usize = 32 * 1024;
/// Longest captured output kept per test case, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;
/// Longest value for short fields (project, branch, worker id, ...), in bytes.
pub const MAX_SHORT_BYTES: usize = 512;
/// Longest run id, in bytes.
pub const MAX_RUN_ID_BYTES: usize = 128;
/// Most owners one test case may name (`TestCase::owners`).
pub const MAX_OWNERS: usize = 16;
/// Longest owner name, in bytes.
pub const MAX_OWNER_BYTES: usize = 256;
/// Most test cases one run may carry.
pub const MAX_CASES_PER_RUN: u64 = 5_000_000;
/// Most chunks one run may be split into.
pub const MAX_CHUNKS_PER_RUN: u32 = 100_000;
/// Longest duration accepted for a run or a test case: 30 days, in seconds.
pub const MAX_DURATION_SECS: f64 = 30.0 * 86_400.0;
/// Seconds between heartbeats a worker may announce (1 to this).
pub const MAX_HEARTBEAT_INTERVAL_SECS: u64 = 3600;
/// How far ahead of the master's clock a run or heartbeat time may be: one
/// day covers skewed clocks and local times sent as UTC.
pub const MAX_FUTURE: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// Slack allowed between a run's `duration_secs` and its wall span
/// (`finished_at - started_at`): the agent measures the two with different
/// clocks.
const DURATION_SLACK_SECS: f64 = 1.0;

/// Earliest time accepted for a run or heartbeat: 2000-01-01T00:00:00Z.
pub fn earliest_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Refuses a time outside [`earliest_time`] ..= `now` + [`MAX_FUTURE`],
/// naming the field. Every time that enters the master passes here.
pub fn check_time(field: &str, t: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), String> {
    let latest = now.checked_add_signed(MAX_FUTURE).unwrap_or(now);
    if t < earliest_time() || t > latest {
        return Err(format!(
            "{field} {} is outside the accepted window 2000-01-01T00:00:00Z to {} \
             (the master's clock plus one day); check the worker's clock",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            latest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    Ok(())
}

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
fn not_one_of(what: &str, found: &str, accepted: impl IntoIterator<Item = &'static str>) -> String {
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
    /// Failure, error or skip message (capped at [`MAX_MESSAGE_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Traceback or failure body (capped at [`MAX_TRACEBACK_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// Captured stdout/stderr (capped at [`MAX_OUTPUT_BYTES`]).
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
    /// e-mail), at most [`MAX_OWNERS`] of at most [`MAX_OWNER_BYTES`] bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// The test was on the project's quarantine list when the agent ran it
    /// ([`crate::quarantine`]); its outcome is still the real one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
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

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    schema: u32,
    #[serde(flatten)]
    body: &'a WireMessage,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    schema: u32,
    #[serde(flatten)]
    body: WireMessage,
}

#[derive(Deserialize)]
struct VersionOnly {
    schema: Option<serde_json::Value>,
}

/// A heartbeat, sent on core NATS (not the stream): liveness is only
/// interesting while it is fresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Wire schema version.
    pub schema: u32,
    /// The worker.
    pub worker_id: String,
    /// Its host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Project being tested.
    pub project: String,
    /// The run in progress (or just finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Where in the run the worker is.
    pub phase: HeartbeatPhase,
    /// Seconds until the next heartbeat, so the master knows when it is late.
    pub interval_secs: u64,
    /// When it was sent.
    pub at: DateTime<Utc>,
}

impl Heartbeat {
    /// Refuses impossible values, judging `at` against `now`: the same
    /// limits as a run's (ids and names, the time window), and an interval
    /// of 1 to [`MAX_HEARTBEAT_INTERVAL_SECS`] seconds.
    pub fn validate_at(&self, now: DateTime<Utc>) -> Result<(), String> {
        if self.schema != SCHEMA_VERSION {
            return Err(format!(
                "unknown schema version {} (this master reads version {SCHEMA_VERSION})",
                self.schema
            ));
        }
        check_name("project", &self.project)?;
        check_name("worker_id", &self.worker_id)?;
        check_opt("host", &self.host, MAX_SHORT_BYTES)?;
        if let Some(id) = &self.run_id {
            valid_run_id(id)?;
        }
        if !(1..=MAX_HEARTBEAT_INTERVAL_SECS).contains(&self.interval_secs) {
            return Err(format!(
                "interval_secs is {}; send 1 to {MAX_HEARTBEAT_INTERVAL_SECS} seconds",
                self.interval_secs
            ));
        }
        check_time("at", self.at, now)
    }
}

/// Decodes and validates a heartbeat (core NATS, [`crate::subjects::HEARTBEAT`]).
pub fn decode_heartbeat(bytes: &[u8], now: DateTime<Utc>) -> Result<Heartbeat, DecodeError> {
    let hb: Heartbeat = with_path(bytes)?;
    hb.validate_at(now).map_err(DecodeError::Invalid)?;
    Ok(hb)
}

/// Deserializes `bytes`; a mismatch names the field's JSON path
/// (`run.counts.total: invalid type: ...`), cut to a bounded length.
fn with_path<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let text = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        DecodeError::Shape(bounded(text))
    })
}

/// Longest error text kept from a decoder: serde's messages quote the
/// offending value, which may be megabytes long.
const MAX_ERROR_BYTES: usize = 400;

/// `s` cut to [`MAX_ERROR_BYTES`] with a marker.
fn bounded(s: String) -> String {
    truncate_marked(s, MAX_ERROR_BYTES)
}

/// Where in its run a worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatPhase {
    /// The test command just started.
    Start,
    /// Still running.
    Tick,
    /// The command finished.
    End,
}

/// Why a message could not be decoded or was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but without a usable `schema` field.
    #[error(
        "message has no numeric `schema` field; expected {{\"schema\": {SCHEMA_VERSION}, \"kind\": ...}}"
    )]
    NoVersion,
    /// A schema version this master does not know.
    #[error(
        "unknown schema version {0} (this master reads version {SCHEMA_VERSION}); upgrade the master or downgrade the agent"
    )]
    UnknownVersion(u64),
    /// Right version, wrong shape.
    #[error("message does not match schema version {SCHEMA_VERSION}: {0}")]
    Shape(String),
    /// Well-formed but impossible values.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Serializes one message with its envelope.
pub fn encode(msg: &WireMessage) -> Vec<u8> {
    // Serializing our own types to a Vec cannot fail: no maps with non-string
    // keys, no foreign Serialize impls.
    serde_json::to_vec(&EnvelopeOut {
        schema: SCHEMA_VERSION,
        body: msg,
    })
    .unwrap_or_default()
}

/// Decodes and validates one message from the stream.
pub fn decode(bytes: &[u8]) -> Result<WireMessage, DecodeError> {
    let version: VersionOnly =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(bounded(e.to_string())))?;
    match version.schema {
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(v) => return Err(DecodeError::UnknownVersion(v)),
            None => return Err(DecodeError::NoVersion),
        },
        _ => return Err(DecodeError::NoVersion),
    }
    let env: EnvelopeIn = with_path(bytes)?;
    debug_assert_eq!(env.schema, SCHEMA_VERSION);
    env.body
        .validate()
        .map_err(|e| DecodeError::Invalid(bounded(e)))?;
    Ok(env.body)
}

/// Refuses an empty name or one longer than [`MAX_SHORT_BYTES`] (project,
/// worker id: required in runs and heartbeats alike).
fn check_name(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    check_len(field, value, MAX_SHORT_BYTES)
}

fn check_opt(field: &str, value: &Option<String>, max: usize) -> Result<(), String> {
    value
        .as_deref()
        .map_or(Ok(()), |v| check_len(field, v, max))
}

/// Refuses a run id that is empty, longer than [`MAX_RUN_ID_BYTES`] or has
/// characters other than ASCII letters, digits, `-`, `_` and `.` (run ids
/// appear in URLs, message ids and file names). The one run-id rule.
pub fn valid_run_id(run_id: &str) -> Result<(), String> {
    if run_id.is_empty() {
        return Err("run_id is empty".into());
    }
    check_len("run_id", run_id, MAX_RUN_ID_BYTES)?;
    if !run_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(format!(
            "run_id {:?} has characters other than letters, digits, '-', '_' and '.'",
            run_id.chars().take(100).collect::<String>()
        ));
    }
    Ok(())
}

/// Refuses a duration that is not a finite number of seconds in
/// 0 ..= [`MAX_DURATION_SECS`], naming the field.
pub fn check_duration(field: &str, d: f64) -> Result<(), String> {
    if !d.is_finite() || d < 0.0 {
        return Err(format!("{field} is {d}; durations must be finite and >= 0"));
    }
    if d > MAX_DURATION_SECS {
        return Err(format!(
            "{field} is {d} seconds, more than the limit of {MAX_DURATION_SECS} (30 days)"
        ));
    }
    Ok(())
}

/// Refuses a string longer than `max` bytes, naming the field (shared with
/// the API's own payload checks).
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "{field} is {} bytes, more than the limit of {max}",
            value.len()
        ));
    }
    Ok(())
}

impl TestCase {
    /// Refuses impossible values.
    pub fn validate(&self) -> Result<(), String> {
        if self.test_id.is_empty() {
            return Err("a test case has an empty test_id".into());
        }
        check_len("test_id", &self.test_id, MAX_TEST_ID_BYTES)?;
        check_len("name", &self.name, MAX_TEST_ID_BYTES)?;
        check_opt("file", &self.file, MAX_TEST_ID_BYTES)?;
        check_opt("classname", &self.classname, MAX_TEST_ID_BYTES)?;
        // A little slack over the caps for the truncation marker.
        check_opt("message", &self.message, MAX_MESSAGE_BYTES + 128)?;
        check_opt("traceback", &self.traceback, MAX_TRACEBACK_BYTES + 128)?;
        check_opt("output", &self.output, MAX_OUTPUT_BYTES + 128)?;
        if self.owners.len() > MAX_OWNERS {
            return Err(format!(
                "test case {:?} names {} owners; at most {MAX_OWNERS} are accepted",
                self.test_id,
                self.owners.len()
            ));
        }
        for o in &self.owners {
            if o.is_empty() {
                return Err(format!("test case {:?} has an empty owner", self.test_id));
            }
            check_len("owner", o, MAX_OWNER_BYTES)?;
        }
        check_duration(
            &format!("duration_secs of {:?}", self.test_id),
            self.duration_secs,
        )
    }
}

impl RunInfo {
    /// Refuses impossible values, judging times against the clock now.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_at(Utc::now())
    }

    /// Refuses impossible values, judging times against `now`.
    pub fn validate_at(&self, now: DateTime<Utc>) -> Result<(), String> {
        valid_run_id(&self.run_id)?;
        check_name("project", &self.project)?;
        check_name("worker_id", &self.worker_id)?;
        check_opt("branch", &self.branch, MAX_SHORT_BYTES)?;
        check_opt("commit", &self.commit, MAX_SHORT_BYTES)?;
        check_opt("host", &self.host, MAX_SHORT_BYTES)?;
        check_opt("runner", &self.runner, MAX_SHORT_BYTES)?;
        check_opt("command", &self.command, MAX_MESSAGE_BYTES + 128)?;
        check_opt("note", &self.note, MAX_MESSAGE_BYTES + 128)?;
        check_duration("duration_secs", self.duration_secs)?;
        check_time("started_at", self.started_at, now)?;
        check_time("finished_at", self.finished_at, now)?;
        if self.finished_at < self.started_at {
            return Err(format!(
                "finished_at {} is before started_at {}",
                self.finished_at, self.started_at
            ));
        }
        // Both times are inside the window, so the span cannot overflow.
        let span = (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0;
        if self.duration_secs > span + DURATION_SLACK_SECS {
            return Err(format!(
                "duration_secs is {} but finished_at is {span} s after started_at; \
                 the duration cannot exceed the time between start and finish",
                self.duration_secs
            ));
        }
        let c = &self.counts;
        // Summed wide: hostile counts near u64::MAX must not overflow (a panic
        // in debug builds, a wrapped sum that passes this check in release).
        let sum: u128 = [c.passed, c.failed, c.error, c.skipped, c.xfailed, c.xpassed]
            .into_iter()
            .map(u128::from)
            .sum();
        if sum != u128::from(c.total) {
            return Err(format!(
                "counts do not add up: passed+failed+error+skipped+xfailed+xpassed = {sum}, total = {}",
                c.total
            ));
        }
        if c.total > MAX_CASES_PER_RUN {
            return Err(format!(
                "total {} exceeds the limit of {MAX_CASES_PER_RUN} cases per run",
                c.total
            ));
        }
        Ok(())
    }
}

impl WireMessage {
    /// The run this message belongs to.
    pub fn run_id(&self) -> &str {
        match self {
            WireMessage::Cases(c) => &c.run_id,
            WireMessage::Run(r) => &r.run.run_id,
        }
    }

    /// The `Nats-Msg-Id` it is published under: `<run_id>:c<n>:<digest>`
    /// for a chunk, `<run_id>:run:<digest>` for the final message (the
    /// first 12 hex digits of [`CasesChunk::digest`] / [`RunFinal::digest`]).
    /// Stable for the content, so JetStream's duplicate window drops a
    /// resend but not another version under the same run id.
    pub fn msg_id(&self) -> String {
        match self {
            WireMessage::Cases(c) => {
                format!("{}:c{}:{}", c.run_id, c.chunk, short_digest(&c.digest()))
            }
            WireMessage::Run(r) => format!("{}:run:{}", r.run.run_id, short_digest(&r.digest())),
        }
    }

    /// The subject it is published on.
    pub fn subject(&self) -> &'static str {
        match self {
            WireMessage::Cases(_) => crate::subjects::RESULTS_CASES,
            WireMessage::Run(_) => crate::subjects::RESULTS_RUN,
        }
    }

    /// Refuses impossible values, judging times against the clock now.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_at(Utc::now())
    }

    /// Refuses impossible values, judging times against `now`.
    pub fn validate_at(&self, now: DateTime<Utc>) -> Result<(), String> {
        match self {
            WireMessage::Cases(c) => {
                valid_run_id(&c.run_id)?;
                if c.chunk >= MAX_CHUNKS_PER_RUN {
                    return Err(format!(
                        "chunk number {} exceeds the limit of {MAX_CHUNKS_PER_RUN}",
                        c.chunk
                    ));
                }
                c.cases.iter().try_for_each(TestCase::validate)
            }
            WireMessage::Run(r) => {
                r.run.validate_at(now)?;
                if r.chunks > MAX_CHUNKS_PER_RUN {
                    return Err(format!(
                        "chunks {} exceeds the limit of {MAX_CHUNKS_PER_RUN}",
                        r.chunks
                    ));
                }
                if r.run.cases_complete && r.chunks == 0 && r.run.counts.total > 0 {
                    return Err(format!(
                        "run declares {} cases but no chunks",
                        r.run.counts.total
                    ));
                }
                Ok(())
            }
        }
    }
}

/// SHA-256 of `value`'s JSON, in hex.
fn digest_of<T: Serialize + ?Sized>(value: &T) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl CasesChunk {
    /// What this chunk says, as a digest of its cases: equal for a resend,
    /// different when the run id was reused for other results.
    pub fn digest(&self) -> String {
        digest_of(&self.cases)
    }
}

impl RunFinal {
    /// What this final message says, as a digest of the run and its chunk
    /// count. The start and finish times are left out: the original
    /// system's payload without a `timestamp` is stamped on arrival, so a
    /// retried POST of it is still the same run.
    pub fn digest(&self) -> String {
        let mut v = serde_json::to_value(&self.run).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.remove("started_at");
            m.remove("finished_at");
        }
        digest_of(&(v, self.chunks))
    }
}

/// The first 12 hex digits of a digest: enough to tell two versions of a
/// message apart in a message id.
fn short_digest(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}

/// A message ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Subject to publish on.
    pub subject: &'static str,
    /// `Nats-Msg-Id` header value, stable for the run.
    pub msg_id: String,
    /// JSON body.
    pub payload: Vec<u8>,
}

/// Why a run could not be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// One test case alone is larger than the payload budget.
    #[error(
        "test case {test_id:?} encodes to {size} bytes, more than the message budget of {budget} bytes"
    )]
    CaseTooLarge {
        /// The offending test.
        test_id: String,
        /// Its encoded size.
        size: usize,
        /// The budget.
        budget: usize,
    },
}

/// Bytes reserved in each message for the envelope around the cases.
const ENVELOPE_SLACK: usize = 1024;

/// Splits a run into chunk messages of at most `max_payload` bytes each and a
/// final [`RunFinal`] message. `max_payload` is usually the server's
/// `max_payload` (1 MB by default).
pub fn encode_run(
    run: &RunInfo,
    cases: &[TestCase],
    max_payload: usize,
) -> Result<Vec<Outgoing>, EncodeError> {
    let budget = max_payload.saturating_sub(ENVELOPE_SLACK).max(1024);
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    let flush = |from: usize, to: usize, out: &mut Vec<Outgoing>| {
        let chunk = out.len() as u32;
        let msg = WireMessage::Cases(CasesChunk {
            run_id: run.run_id.clone(),
            chunk,
            cases: cases[from..to].to_vec(),
        });
        out.push(Outgoing {
            subject: msg.subject(),
            msg_id: msg.msg_id(),
            payload: encode(&msg),
        });
    };
    for (i, case) in cases.iter().enumerate() {
        let len = serde_json::to_vec(case).map(|v| v.len()).unwrap_or(0) + 1;
        if len > budget {
            return Err(EncodeError::CaseTooLarge {
                test_id: case.test_id.clone(),
                size: len,
                budget,
            });
        }
        if size + len > budget {
            flush(start, i, &mut out);
            start = i;
            size = 0;
        }
        size += len;
    }
    if start < cases.len() {
        flush(start, cases.len(), &mut out);
    }
    let chunks = out.len() as u32;
    let fin = WireMessage::Run(RunFinal {
        run: run.clone(),
        chunks,
    });
    out.push(Outgoing {
        subject: fin.subject(),
        msg_id: fin.msg_id(),
        payload: encode(&fin),
    });
    Ok(out)
}

/// Cuts `s` to at most `max` bytes (on a char boundary) and appends a marker
/// saying how much was cut. Returns `s` unchanged when it fits.
pub fn truncate_marked(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    let mut t = s;
    t.truncate(cut);
    t.push_str(&format!("\n… [truncated {dropped} bytes]"));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(i: usize, outcome: Outcome) -> TestCase {
        TestCase {
            test_id: format!("tests.test_mod::test_{i}[α-\"q\"]"),
            file: None,
            classname: Some("tests.test_mod".into()),
            name: format!("test_{i}[α-\"q\"]"),
            outcome,
            duration_secs: 0.01,
            message: outcome.is_failure().then(|| "assert 1 == 2".into()),
            traceback: None,
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        }
    }

    fn run(cases: &[TestCase]) -> RunInfo {
        let now = Utc::now();
        RunInfo {
            run_id: "0190f5c2-1111-7000-8000-000000000001".into(),
            project: "demo".into(),
            branch: Some("main".into()),
            commit: None,
            worker_id: "w1".into(),
            host: None,
            runner: Some("pytest".into()),
            command: None,
            started_at: now,
            finished_at: now,
            duration_secs: 1.0,
            exit_code: Some(1),
            status: RunStatus::Failed,
            counts: Counts::of(cases),
            cases_complete: true,
            note: None,
        }
    }

    #[test]
    fn owners_and_quarantine_marks_are_optional_and_bounded() {
        let mut c = case(1, Outcome::Failed);
        let plain = serde_json::to_string(&c).expect("encodes");
        assert!(
            !plain.contains("owners") && !plain.contains("quarantined"),
            "absent when unset, so older readers see the same JSON: {plain}"
        );
        c.owners = vec!["@acme/cart".into(), "qa@example.com".into()];
        c.quarantined = true;
        let text = serde_json::to_string(&c).expect("encodes");
        let back: TestCase = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, c);
        assert_eq!(c.validate(), Ok(()));
        c.owners = (0..=MAX_OWNERS).map(|i| format!("@t{i}")).collect();
        assert!(c.validate().expect_err("17 owners").contains("owners"));
        c.owners = vec!["x".repeat(MAX_OWNER_BYTES + 1)];
        assert!(c.validate().is_err(), "an over-long owner is refused");
        c.owners = vec![String::new()];
        assert!(c.validate().is_err(), "an empty owner is refused");
    }

    #[test]
    fn round_trip_through_chunks() {
        let cases: Vec<_> = (0..5000)
            .map(|i| {
                case(
                    i,
                    if i % 7 == 0 {
                        Outcome::Failed
                    } else {
                        Outcome::Passed
                    },
                )
            })
            .collect();
        let r = run(&cases);
        let msgs = encode_run(&r, &cases, 64 * 1024).expect("encodes");
        assert!(msgs.len() > 3, "5000 cases must need several 64 KiB chunks");
        let mut back = Vec::new();
        let mut fin = None;
        for m in &msgs {
            assert!(m.payload.len() <= 64 * 1024, "chunk over budget");
            match decode(&m.payload).expect("decodes") {
                WireMessage::Cases(c) => back.extend(c.cases),
                WireMessage::Run(f) => fin = Some(f),
            }
        }
        let fin = fin.expect("final message");
        assert_eq!(fin.chunks as usize, msgs.len() - 1);
        assert_eq!(back, cases);
        assert_eq!(fin.run.counts, Counts::of(&back));
    }

    #[test]
    fn refuses_unknown_version_and_garbage() {
        assert!(matches!(decode(b"not json"), Err(DecodeError::NotJson(_))));
        assert_eq!(
            decode(br#"{"schema": 99, "kind": "run"}"#),
            Err(DecodeError::UnknownVersion(99))
        );
        assert_eq!(decode(br#"{"kind": "run"}"#), Err(DecodeError::NoVersion));
        assert!(matches!(
            decode(br#"{"schema": 1, "kind": "cases", "run_id": "x"}"#),
            Err(DecodeError::Shape(_))
        ));
    }

    #[test]
    fn refuses_impossible_values() {
        let mut c = case(1, Outcome::Passed);
        c.duration_secs = -1.0;
        let msg = WireMessage::Cases(CasesChunk {
            run_id: "r1".into(),
            chunk: 0,
            cases: vec![c],
        });
        let err = decode(&encode(&msg)).expect_err("negative duration");
        assert!(
            err.to_string().contains("durations must be finite"),
            "{err}"
        );

        let cases = vec![case(1, Outcome::Passed)];
        let mut r = run(&cases);
        r.counts.total = 5;
        let err = decode(&encode(&WireMessage::Run(RunFinal { run: r, chunks: 1 })))
            .expect_err("bad counts");
        assert!(err.to_string().contains("do not add up"), "{err}");

        // Found by tests/fuzz_wire.rs: this sum overflowed (a panic in debug
        // builds; in release it wrapped to 1 and passed).
        let mut r = run(&cases);
        r.counts = Counts {
            total: 1,
            passed: u64::MAX,
            failed: 2,
            ..Counts::default()
        };
        let err = decode(&encode(&WireMessage::Run(RunFinal { run: r, chunks: 1 })))
            .expect_err("overflowing counts");
        assert!(err.to_string().contains("do not add up"), "{err}");

        let mut r = run(&cases);
        r.run_id = "../../etc/passwd".into();
        assert!(r.validate().is_err());
    }

    #[test]
    fn times_outside_the_window_are_refused() {
        let cases = vec![case(1, Outcome::Passed)];
        let now = Utc::now();
        let parse = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("valid RFC 3339")
                .with_timezone(&Utc)
        };
        // The hostile tester's years: 9999, +100000 and -262143.
        for t in [
            parse("9999-12-31T23:59:59Z"),
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MIN_UTC,
            parse("1999-12-31T23:59:59Z"),
        ] {
            let mut r = run(&cases);
            r.started_at = t;
            r.finished_at = t;
            r.duration_secs = 0.0;
            let err = r.validate_at(now).expect_err("outside the window");
            assert!(
                err.contains("started_at") && err.contains("window"),
                "{err}"
            );
        }
        let mut r = run(&cases);
        r.started_at = now + chrono::TimeDelta::hours(23);
        r.finished_at = r.started_at;
        assert_eq!(
            r.validate_at(now),
            Ok(()),
            "a skewed clock within a day is fine"
        );
    }

    #[test]
    fn durations_must_fit_the_span() {
        let cases = vec![case(1, Outcome::Passed)];
        let mut r = run(&cases);
        r.finished_at = r.started_at + chrono::TimeDelta::seconds(5);
        r.duration_secs = 1e300;
        let err = r.validate().expect_err("1e300 s");
        assert!(err.contains("30 days"), "{err}");
        r.duration_secs = 60.0;
        let err = r.validate().expect_err("longer than the span");
        assert!(err.contains("cannot exceed"), "{err}");
        r.duration_secs = 5.5;
        assert_eq!(r.validate(), Ok(()), "within the slack");
        let mut c = case(1, Outcome::Passed);
        c.duration_secs = 1e17;
        assert!(c.validate().is_err());
    }

    #[test]
    fn heartbeats_are_bounded() {
        let now = Utc::now();
        let ok = Heartbeat {
            schema: SCHEMA_VERSION,
            worker_id: "w1".into(),
            host: None,
            project: "p".into(),
            run_id: Some("r-1".into()),
            phase: HeartbeatPhase::Tick,
            interval_secs: 10,
            at: now,
        };
        assert_eq!(ok.validate_at(now), Ok(()));
        let bad = [
            Heartbeat {
                interval_secs: 100_000_000_000_000_000,
                ..ok.clone()
            },
            Heartbeat {
                interval_secs: 0,
                ..ok.clone()
            },
            Heartbeat {
                at: DateTime::<Utc>::MAX_UTC,
                ..ok.clone()
            },
            Heartbeat {
                worker_id: "w".repeat(500_000),
                ..ok.clone()
            },
            Heartbeat {
                project: String::new(),
                ..ok.clone()
            },
            Heartbeat {
                run_id: Some("../x".into()),
                ..ok.clone()
            },
        ];
        for hb in bad {
            let bytes = serde_json::to_vec(&hb).expect("serializes");
            let err = decode_heartbeat(&bytes, now).expect_err("refused");
            assert!(err.to_string().len() < 600, "error text is bounded");
        }
        let huge = format!(r#"{{"schema":1,"worker_id":{}}}"#, "7".repeat(1_000_000));
        let err = decode_heartbeat(huge.as_bytes(), now).expect_err("not a heartbeat");
        assert!(err.to_string().len() < 600, "{}", err.to_string().len());
    }

    #[test]
    fn digests_tell_versions_apart_and_ignore_arrival_time() {
        let cases = vec![case(1, Outcome::Passed)];
        let fin = RunFinal {
            run: run(&cases),
            chunks: 1,
        };
        let mut later = fin.clone();
        later.run.started_at += chrono::TimeDelta::seconds(90);
        later.run.finished_at += chrono::TimeDelta::seconds(90);
        assert_eq!(fin.digest(), later.digest(), "times are not content");
        let mut other = fin.clone();
        other.run.counts.passed = 0;
        other.run.counts.failed = 1;
        assert_ne!(fin.digest(), other.digest());
        let msgs = encode_run(&fin.run, &cases, 64 * 1024).expect("encodes");
        let other_msgs = encode_run(&other.run, &cases, 64 * 1024).expect("encodes");
        assert_eq!(
            msgs[0].msg_id, other_msgs[0].msg_id,
            "same cases, same chunk id"
        );
        assert_ne!(msgs[1].msg_id, other_msgs[1].msg_id, "other run, other id");
    }

    #[test]
    fn durations_round_trip_exactly() {
        // Found by tests/fuzz_wire.rs: without serde_json's `float_roundtrip`
        // these came back one ulp off.
        for d in [1536.2681838163435, 2541811.489727811] {
            let mut c = case(1, Outcome::Passed);
            c.duration_secs = d;
            let msg = WireMessage::Cases(CasesChunk {
                run_id: "r1".into(),
                chunk: 0,
                cases: vec![c],
            });
            assert_eq!(decode(&encode(&msg)), Ok(msg));
        }
    }

    #[test]
    fn truncation_marks_and_keeps_utf8() {
        let s = "é".repeat(100);
        let t = truncate_marked(s, 11);
        assert!(t.starts_with("ééééé"));
        assert!(t.contains("[truncated 190 bytes]"), "{t}");
        assert_eq!(truncate_marked("short".into(), 10), "short");
    }
}
