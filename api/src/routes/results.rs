//! `/results`: publish a run (`POST`), list runs (`GET`), one run with its
//! test cases (`GET /results/{run_id}`).
//!
//! `POST /results` does not write to SQLite: it publishes into the same
//! JetStream stream the agents use, so there is one ingest path and one
//! set of guarantees. It answers 202 once the stream has acknowledged every
//! message of the run.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use ptp_actors::model::{CaseRecord, Outcome, RunRecord, RunStatus};
use ptp_actors::queries::{self, RunFilter};
use ptp_nats::schema::{self, RunInfo, TestCase};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBytes, Path, Query};
use crate::limits::{LARGE_READ_CASES, hold_until_sent};
use crate::routes::{bounded, paging};
use crate::state::AppState;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/results", get(list_runs).post(post_result))
        .route("/results/{run_id}", get(get_run))
}

/// A run as the API shows it. Carries the original system's field names
/// (`timestamp`, `duration`, flat counts) besides our own.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// Run id.
    pub run_id: String,
    /// Project.
    pub project: String,
    /// Branch.
    pub branch: Option<String>,
    /// Commit sha.
    pub commit: Option<String>,
    /// Worker that ran it.
    pub worker_id: String,
    /// Host name of the worker.
    pub host: Option<String>,
    /// Test runner.
    pub runner: Option<String>,
    /// Command line.
    pub command: Option<String>,
    /// Start time (same as `started_at`; the original system's name).
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub timestamp: DateTime<Utc>,
    /// Start time.
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub started_at: DateTime<Utc>,
    /// End time.
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub finished_at: DateTime<Utc>,
    /// Wall time in seconds.
    pub duration: f64,
    /// Exit code of the test command.
    pub exit_code: Option<i32>,
    /// `passed`, `failed`, `interrupted`, `internal_error`, `usage_error`,
    /// `no_tests`, `crashed` or `timed_out`.
    #[schema(value_type = String)]
    pub status: RunStatus,
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
    /// Pass rate in percent over tests that reached a verdict.
    #[serde(serialize_with = "ptp_actors::format::rate_opt")]
    pub pass_rate: Option<f64>,
    /// Whether every test case is stored (false for the original system's
    /// payload, which carried only failures).
    pub cases_complete: bool,
    /// Why the run has its status, when known.
    pub note: Option<String>,
    /// Of `failed` and `error`, the cases that were quarantined when they
    /// ran (their outcomes are the real ones; the agent did not fail the
    /// build for them).
    pub quarantined_failures: u64,
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        RunView {
            run_id: r.run_id,
            project: r.project,
            branch: r.branch,
            commit: r.commit,
            worker_id: r.worker_id,
            host: r.host,
            runner: r.runner,
            command: r.command,
            timestamp: r.started_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration: r.duration_secs,
            exit_code: r.exit_code,
            status: r.status,
            total: r.counts.total,
            passed: r.counts.passed,
            failed: r.counts.failed,
            error: r.counts.error,
            skipped: r.counts.skipped,
            xfailed: r.counts.xfailed,
            xpassed: r.counts.xpassed,
            pass_rate: r.pass_rate,
            cases_complete: r.cases_complete,
            note: r.note,
            quarantined_failures: r.quarantined_failures,
        }
    }
}

/// One test case.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseView {
    /// Stable test id.
    pub test_id: String,
    /// Source file.
    pub file: Option<String>,
    /// JUnit classname.
    pub classname: Option<String>,
    /// JUnit name.
    pub name: String,
    /// `failed`, `error`, `xpassed`, `passed`, `skipped` or `xfailed`.
    pub outcome: String,
    /// Seconds.
    pub duration: f64,
    /// Failure or skip message.
    pub message: Option<String>,
    /// Traceback.
    pub traceback: Option<String>,
    /// Captured output.
    pub output: Option<String>,
    /// Failed attempts before the final outcome.
    pub retries: u32,
    /// Passed after failing within the run.
    pub flaky: bool,
    /// Owners of the test's file from CODEOWNERS, as the agent named them;
    /// absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// Present and true when the test was quarantined when it ran (its
    /// `outcome` is still the real one); absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

impl From<CaseRecord> for CaseView {
    fn from(c: CaseRecord) -> Self {
        CaseView {
            test_id: c.test_id,
            file: c.file,
            classname: c.classname,
            name: c.name,
            outcome: c.outcome.as_str().to_string(),
            duration: c.duration_secs,
            message: c.message,
            traceback: c.traceback,
            output: c.output,
            retries: c.retries,
            flaky: c.flaky,
            owners: c.owners,
            quarantined: c.quarantined,
        }
    }
}

/// A failure in the original system's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureView {
    /// Test id.
    pub nodeid: String,
    /// `failed` or `error`.
    pub outcome: String,
    /// Seconds.
    pub duration: f64,
    /// Message.
    pub message: Option<String>,
}

/// A run with its test cases.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: RunView,
    /// Failed and errored tests (the original system's field).
    pub failures: Vec<FailureView>,
    /// Test cases, failures first, then in report order.
    pub cases: Vec<CaseView>,
    /// Cases not in this page: left out by `outcome`, on other pages, or
    /// past `cases_limit`.
    pub cases_omitted: u64,
    /// Cursor of the next page of cases, when more match (also in the
    /// `X-Next-Cursor` header); pass it back as `cursor` with the same
    /// `outcome` and `order`.
    pub next_cursor: Option<String>,
}

/// Query of `GET /results`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this project.
    pub project: Option<String>,
    /// Only this branch.
    pub branch: Option<String>,
    /// Only this worker.
    pub worker_id: Option<String>,
    /// Only runs with this status.
    pub status: Option<String>,
    /// Runs started at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Runs started before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
    /// Continue after the page that returned this cursor (`X-Next-Cursor`).
    pub cursor: Option<String>,
}

/// A run id from a path or query: the wire schema's rule
/// ([`schema::valid_run_id`]), refused with a 400.
pub(crate) fn check_run_id(run_id: &str) -> Result<(), ApiError> {
    schema::valid_run_id(run_id).map_err(|e| {
        ApiError::BadRequest(format!(
            "{e}: not valid as a run id; use 1 to {} letters, digits, '-', '_' or '.'",
            schema::MAX_RUN_ID_BYTES
        ))
    })
}

/// List complete runs, newest first.
///
/// Pagination: when more runs match, the response carries `X-Next-Cursor`
/// and a `Link: <...>; rel="next"` header; pass the cursor back as `cursor`.
#[utoipa::path(get, path = "/results", params(ListQuery), responses(
    (status = 200, description = "Runs, newest first", body = Vec<RunView>,
     headers(("X-Next-Cursor" = String, description = "Cursor of the next page, when there is one"))),
    (status = 400, description = "Bad parameter", body = ErrorBody)))]
pub async fn list_runs(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = q.filter()?;
    let limit = filter.limit - 1;
    let mut runs: Vec<RunView> = queries::list_runs(&st.read, &filter)
        .await?
        .into_iter()
        .map(RunView::from)
        .collect();
    let mut next = None;
    if runs.len() > limit as usize {
        runs.truncate(limit as usize);
        next = runs
            .last()
            .map(|last| paging::encode_run_cursor(last.started_at, &last.run_id));
    }
    let headers = paging::next_page("/results", next.as_deref(), &q.link_params(limit));
    Ok((headers, axum::Json(runs)))
}

impl ListQuery {
    /// The checked filter, asking for one run more than the page so the
    /// handler knows whether there is a next page.
    fn filter(&self) -> Result<RunFilter, ApiError> {
        let limit = bounded("limit", self.limit, 50, 1, 500)?;
        let status = (self.status.as_deref().map(RunStatus::parse))
            .transpose()
            .map_err(ApiError::BadRequest)?;
        Ok(RunFilter {
            project: self.project.clone(),
            branch: self.branch.clone(),
            worker_id: self.worker_id.clone(),
            status,
            since: self.since,
            until: self.until,
            after: self
                .cursor
                .as_deref()
                .map(paging::decode_run_cursor)
                .transpose()?,
            limit: limit + 1,
        })
    }

    /// The filters the next page's `Link` carries.
    fn link_params(&self, limit: u32) -> Vec<(&'static str, String)> {
        let time = |t: &Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        };
        [
            ("limit", Some(limit.to_string())),
            ("project", self.project.clone()),
            ("branch", self.branch.clone()),
            ("worker_id", self.worker_id.clone()),
            ("status", self.status.clone()),
            ("since", time(&self.since)),
            ("until", time(&self.until)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// Query of `GET /results/{run_id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Only cases with these outcomes, comma-separated (e.g. `failed,error`).
    pub outcome: Option<String>,
    /// Most cases returned, 0..=200000 (default 100: a page; follow
    /// `next_cursor` for more, or ask for up to 200000 at once; above 1000,
    /// only a few such answers are served at once, see the 503).
    pub cases_limit: Option<u32>,
    /// `failures_first` (default: failures, then report order) or
    /// `duration` (slowest first: with a small `cases_limit`, the slowest
    /// tests of the run).
    pub order: Option<String>,
    /// Continue after the page that returned this cursor (`next_cursor`).
    pub cursor: Option<String>,
}

/// Default page of cases: enough for a person to read, small enough to
/// serve in a few milliseconds (10,000 cases are ~3 MiB of JSON).
pub const DEFAULT_CASES_LIMIT: u32 = 100;

/// One run with a page of its test cases, failures first.
///
/// Pagination: when more cases match, `next_cursor` (and the
/// `X-Next-Cursor` header) holds the cursor of the next page; pass it back
/// as `cursor` with the same `outcome` and `order`.
///
/// A `cases_limit` above 1000 is a large read: only `--max-large-reads` are
/// served at once; another waits up to 2 seconds, then gets 503 with
/// `Retry-After`.
#[utoipa::path(get, path = "/results/{run_id}", params(("run_id" = String, Path, description = "Run id"), RunQuery),
    responses(
        (status = 200, description = "The run", body = RunDetail,
         headers(("X-Next-Cursor" = String, description = "Cursor of the next page of cases, when there is one"))),
        (status = 400, description = "Bad run id or parameter", body = ErrorBody),
        (status = 404, description = "No complete run with that id", body = ErrorBody),
        (status = 503, description = "Too many large reads at once (cases_limit above 1000); retry after Retry-After seconds", body = ErrorBody)))]
pub async fn get_run(
    State(st): State<AppState>,
    Path(run_id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<impl IntoResponse, ApiError> {
    check_run_id(&run_id)?;
    let want = q.parsed()?;
    // Many cases: wait for a turn, held until the answer is sent.
    let large_read = if want.limit > LARGE_READ_CASES {
        Some(st.large_reads.admit().await?)
    } else {
        None
    };
    let run = queries::get_run(&st.read, &run_id).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "run_id '{run_id}' not found (runs appear once all their results are ingested; check GET /results or GET /rejected)"
        ))
    })?;
    let page = queries::run_cases(
        &st.read,
        &run_id,
        &want.outcomes,
        want.order,
        want.after,
        want.limit,
    )
    .await?;
    let next_cursor = page
        .next
        .map(|p| paging::encode_case_cursor(want.order, &p));
    let params: Vec<(&str, String)> = [
        ("outcome", q.outcome.clone()),
        ("order", q.order.clone()),
        ("cases_limit", q.cases_limit.map(|n| n.to_string())),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let headers = paging::next_page(
        &format!("/results/{run_id}"),
        next_cursor.as_deref(),
        &params,
    );
    let answer = move || {
        (
            headers,
            axum::Json(RunDetail::new(run, page.cases, &want.outcomes, next_cursor)),
        )
            .into_response()
    };
    let Some(permit) = large_read else {
        return Ok(answer());
    };
    // Tens of MiB of JSON: built on a blocking thread so the async workers
    // keep answering /health and small reads meanwhile.
    match tokio::task::spawn_blocking(answer).await {
        Ok(response) => Ok(hold_until_sent(response, permit)),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(ApiError::Unavailable(
                "the master is shutting down; retry".into(),
            )),
        },
    }
}

/// A checked [`RunQuery`].
struct CasesWanted {
    outcomes: Vec<Outcome>,
    order: queries::CaseOrder,
    after: Option<queries::CasePosition>,
    limit: u32,
}

impl RunQuery {
    fn parsed(&self) -> Result<CasesWanted, ApiError> {
        let limit = bounded(
            "cases_limit",
            self.cases_limit,
            DEFAULT_CASES_LIMIT,
            0,
            200_000,
        )?;
        let outcomes = match self.outcome.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|s| {
                    Outcome::parse(s.trim()).ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "outcome {s:?} is not one of failed, error, xpassed, passed, skipped, xfailed"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let order = match self.order.as_deref() {
            None | Some("") => queries::CaseOrder::FailuresFirst,
            Some(tag) => paging::case_order(tag).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "order {tag:?} is not one of failures_first, duration"
                ))
            })?,
        };
        let after = self
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| paging::decode_case_cursor(c, order))
            .transpose()?;
        Ok(CasesWanted {
            outcomes,
            order,
            after,
            limit,
        })
    }
}

impl RunDetail {
    /// The answer for `run` with one page of its `cases` (those matching
    /// `outcomes`, all when empty).
    fn new(
        run: RunRecord,
        cases: Vec<CaseRecord>,
        outcomes: &[Outcome],
        next_cursor: Option<String>,
    ) -> RunDetail {
        let matching: u64 = if outcomes.is_empty() {
            run.counts.total
        } else {
            outcomes.iter().map(|o| run.counts.get(*o)).sum()
        };
        let failures = cases
            .iter()
            .filter(|c| c.outcome.is_failure())
            .map(|c| FailureView {
                nodeid: c.test_id.clone(),
                outcome: c.outcome.as_str().to_string(),
                duration: c.duration_secs,
                message: c.message.clone(),
            })
            .collect();
        let cases_omitted = if run.cases_complete {
            matching.saturating_sub(cases.len() as u64)
        } else {
            0
        };
        RunDetail {
            run: run.into(),
            failures,
            cases: cases.into_iter().map(CaseView::from).collect(),
            cases_omitted,
            next_cursor,
        }
    }
}

/// The original system's payload: counts plus failures only.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LegacyRun {
    /// Run id (the original workers sent a uuid4).
    pub run_id: String,
    /// Worker id.
    pub worker_id: String,
    /// Project (default `default`).
    pub project: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// Start time: RFC 3339 (`2024-05-01T12:00:00Z`), or ISO 8601 without
    /// an offset as the original worker sends it (`2024-05-01T12:00:00`,
    /// read as UTC). Default: when the master receives it.
    #[serde(default, deserialize_with = "lenient_time")]
    #[schema(value_type = Option<String>, example = "2024-05-01T12:00:00")]
    pub timestamp: Option<DateTime<Utc>>,
    /// Passed tests.
    #[serde(default)]
    pub passed: u64,
    /// Failed tests.
    #[serde(default)]
    pub failed: u64,
    /// Errored tests.
    #[serde(default)]
    pub error: u64,
    /// Skipped tests.
    #[serde(default)]
    pub skipped: u64,
    /// All tests (must equal the sum of the four counts when given).
    pub total: Option<u64>,
    /// Seconds.
    #[serde(default)]
    pub duration: f64,
    /// Ignored: the master computes the pass rate from the counts.
    pub pass_rate: Option<f64>,
    /// Failed tests (at most 100,000: [`MAX_LEGACY_FAILURES`]).
    #[serde(default, deserialize_with = "bounded_failures")]
    pub failures: Vec<LegacyFailure>,
}

/// A failure in the original system's payload.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LegacyFailure {
    /// Test id.
    pub nodeid: String,
    /// Seconds.
    #[serde(default)]
    pub duration: f64,
    /// Message.
    pub message: Option<String>,
}

/// Our own payload: a whole run with all its cases, as the agent builds it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FullRun {
    /// Run metadata and counts (the wire schema's `RunInfo`).
    #[schema(value_type = Object)]
    pub run: RunInfo,
    /// Every test case (the wire schema's `TestCase`).
    #[schema(value_type = Vec<Object>)]
    pub cases: Vec<TestCase>,
}

/// Either payload `POST /results` accepts (told apart by the `run` key:
/// present in the agent's shape, absent from the original system's).
#[derive(Debug, ToSchema)]
pub enum PostBody {
    /// `{"run": {...}, "cases": [...]}`.
    Full(FullRun),
    /// The original system's flat payload.
    Legacy(LegacyRun),
}

/// Answer of `POST /results`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The run id.
    pub run_id: String,
    /// Always `accepted`: durable in the stream, ingested shortly.
    pub status: &'static str,
}

/// Most failures one original-shape run may list. Each costs far more in
/// memory than its few bytes of JSON; the original worker sent tens.
pub const MAX_LEGACY_FAILURES: usize = 100_000;

/// `failures`, refused as soon as it lists more than
/// [`MAX_LEGACY_FAILURES`] (before the rest is read).
fn bounded_failures<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<LegacyFailure>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<LegacyFailure>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a sequence of at most {MAX_LEGACY_FAILURES} failures")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(f) = seq.next_element()? {
                if out.len() == MAX_LEGACY_FAILURES {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_LEGACY_FAILURES} failures; publish large runs with ptp-agent"
                    )));
                }
                out.push(f);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// A time as the original worker may send it: RFC 3339, or ISO 8601 with
/// no offset (Python's `datetime.now().isoformat()`), read as UTC.
fn lenient_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    parse_time(&s).map(Some).map_err(serde::de::Error::custom)
}

/// The one rule for times sent in a body: RFC 3339, or naive ISO 8601 as UTC.
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    // FromStr, unlike parse_from_rfc3339, reads signed extended years
    // (`+262142-…`), which the window check then refuses by name.
    if let Ok(t) = s.parse::<DateTime<chrono::FixedOffset>>() {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    Err(format!(
        "{:?} is not a date and time; send RFC 3339 such as 2024-05-01T12:00:00Z \
         (a time without an offset, such as 2024-05-01T12:00:00, is read as UTC)",
        schema::truncate_marked(s.to_string(), 64)
    ))
}

/// Reads a `POST /results` body: the agent's shape when it has a `run`
/// key, else the original system's. A refusal names the field (its JSON
/// path), what was found and what is accepted.
pub fn parse_post_body(bytes: &[u8]) -> Result<(RunInfo, Vec<TestCase>), ApiError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        run: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not a JSON object: {}; send {{\"run\": ..., \"cases\": [...]}} \
             (the agent's shape) or the original system's flat run (see POST /results at /docs)",
            schema::truncate_marked(e.to_string(), 200)
        ))
    })?;
    fn read<'a, T: Deserialize<'a>>(bytes: &'a [u8], shape: &str) -> Result<T, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            ApiError::BadRequest(format!(
                "{field}: {}; see POST /results at /docs for the fields of {shape}",
                schema::truncate_marked(e.inner().to_string(), 300)
            ))
        })
    }
    if probe.run.is_some() {
        let f: FullRun = read(bytes, "the agent's payload ({\"run\", \"cases\"})")?;
        Ok((f.run, f.cases))
    } else {
        legacy_to_run(read(bytes, "the original system's payload")?, Utc::now())
    }
}

fn legacy_to_run(l: LegacyRun, now: DateTime<Utc>) -> Result<(RunInfo, Vec<TestCase>), ApiError> {
    let bad = |e: String| ApiError::Unprocessable(e);
    // Summed wide: hostile counts near u64::MAX must not overflow.
    let sum = [l.passed, l.failed, l.error, l.skipped]
        .into_iter()
        .try_fold(0u64, u64::checked_add)
        .ok_or_else(|| {
            bad("passed + failed + error + skipped overflows; send real counts".into())
        })?;
    if let Some(total) = l.total
        && total != sum
    {
        return Err(bad(format!(
            "total ({total}) must equal passed + failed + error + skipped ({sum})"
        )));
    }
    schema::check_duration("duration", l.duration).map_err(bad)?;
    let started_at = l.timestamp.unwrap_or(now);
    schema::check_time("timestamp", started_at, now).map_err(bad)?;
    // Both bounded just above, so this cannot fail; checked all the same.
    let finished_at = chrono::TimeDelta::try_milliseconds((l.duration * 1000.0) as i64)
        .and_then(|d| started_at.checked_add_signed(d))
        .ok_or_else(|| bad("timestamp + duration is not a representable time".into()))?;
    let cases: Vec<TestCase> = l
        .failures
        .into_iter()
        .map(|f| TestCase {
            name: f
                .nodeid
                .rsplit("::")
                .next()
                .unwrap_or(&f.nodeid)
                .to_string(),
            test_id: f.nodeid,
            file: None,
            classname: None,
            outcome: schema::Outcome::Failed,
            duration_secs: f.duration,
            message: f
                .message
                .map(|m| schema::truncate_marked(m, schema::MAX_MESSAGE_BYTES)),
            traceback: None,
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        })
        .collect();
    let counts = schema::Counts {
        total: sum,
        passed: l.passed,
        failed: l.failed,
        error: l.error,
        skipped: l.skipped,
        xfailed: 0,
        xpassed: 0,
    };
    let status = if l.failed + l.error > 0 {
        schema::RunStatus::Failed
    } else if sum == 0 {
        schema::RunStatus::NoTests
    } else {
        schema::RunStatus::Passed
    };
    let run = RunInfo {
        run_id: l.run_id,
        project: l.project.unwrap_or_else(|| "default".into()),
        branch: l.branch,
        commit: None,
        worker_id: l.worker_id,
        host: None,
        runner: Some("pytest".into()),
        command: None,
        started_at,
        finished_at,
        duration_secs: l.duration,
        exit_code: None,
        status,
        counts,
        cases_complete: false,
        note: None,
    };
    Ok((run, cases))
}

/// Report a run. Accepts the agent's full payload (`{"run", "cases"}`) or
/// the original system's flat payload unchanged. Publishes into the results
/// stream and answers 202 once the stream has stored it; the run is visible
/// in `GET /results/{run_id}` as soon as ingest has committed it.
#[utoipa::path(post, path = "/results", request_body = PostBody, responses(
    (status = 202, description = "Durable in the stream; ingested shortly", body = Accepted),
    (status = 400, description = "Malformed JSON or a field of the wrong type (named)", body = ErrorBody),
    (status = 409, description = "The run id is stored with other content", body = ErrorBody),
    (status = 413, description = "Body over the size limit", body = ErrorBody),
    (status = 422, description = "Impossible values (named)", body = ErrorBody),
    (status = 503, description = "NATS unreachable, or no memory left for bodies being read at once (with Retry-After); nothing stored, retry", body = ErrorBody)))]
pub async fn post_result(
    State(st): State<AppState>,
    JsonBytes(body): JsonBytes,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    let (run, cases) = parse_post_body(&body)?;
    drop(body);
    if st.nats.connection_state() != async_nats::connection::State::Connected {
        return Err(ApiError::Unavailable(format!(
            "NATS at {} is unreachable, so the run was not stored; retry when GET /health shows nats connected",
            st.nats_url
        )));
    }
    let max_payload = match st.nats.server_info().max_payload {
        0 => 1024 * 1024,
        n => n,
    };
    let msgs = schema::encode_run(&run, &cases, max_payload)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let mut digest = None;
    for m in &msgs {
        // Validate exactly what ingest will decode, so a refusal happens here
        // with a 422 rather than later as a rejection.
        match schema::decode(&m.payload) {
            Ok(schema::WireMessage::Run(f)) => digest = Some(f.digest()),
            Ok(schema::WireMessage::Cases(_)) => {}
            Err(schema::DecodeError::Invalid(e)) => return Err(ApiError::Unprocessable(e)),
            Err(e) => return Err(ApiError::Unprocessable(e.to_string())),
        }
    }
    // A run id stored with other content is a conflict, not a duplicate.
    // Best effort: publishing must not depend on the database (the writer
    // catches every conflict anyway and records it in /rejected, also for
    // versions still in the stream).
    let stored = match queries::stored_digest(&st.read, &run.run_id).await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!("cannot look up run {} for conflicts: {e}", run.run_id);
            None
        }
    };
    if let (Some(new), Some(old)) = (digest, stored)
        && new != old
    {
        return Err(ApiError::Conflict(format!(
            "run_id {} is already stored with other content (stored digest {old}, this body's \
             digest {new}); the stored run is kept. Give every run its own run_id",
            run.run_id
        )));
    }
    ptp_nats::publish_all(&st.js, msgs)
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!(
                "could not confirm the run with NATS at {}: {e}. Retry: a run is stored once however often it is sent",
                st.nats_url
            ))
        })?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Accepted {
            run_id: run.run_id,
            status: "accepted",
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every leaf of `v` with its path as `serde_path_to_error` writes it.
    fn leaves(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    leaves(x, p, out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    leaves(x, format!("{path}[{i}]"), out);
                }
            }
            _ => out.push(path),
        }
    }

    /// `v` with the leaf at `path` replaced by a value of another type.
    fn spoiled(v: &serde_json::Value, path: &str) -> serde_json::Value {
        let mut v = v.clone();
        let mut at = &mut v;
        for part in path.split('.') {
            let (key, index) = match part.split_once('[') {
                Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            at = &mut at[key];
            if let Some(i) = index {
                at = &mut at[i];
            }
        }
        *at = match at {
            serde_json::Value::String(_) => serde_json::json!(["a list"]),
            _ => serde_json::json!("a string"),
        };
        v
    }

    /// Item 5 of issue 13: every field of both payloads, sent with a value
    /// of the wrong type, is refused as a bad request naming the field,
    /// what was found, what was expected, and where the fields are listed.
    #[test]
    fn every_field_of_both_payloads_is_named_when_refused() {
        let legacy = serde_json::json!({
            "run_id": "8f0c", "worker_id": "w", "project": "p", "branch": "main",
            "timestamp": "2024-05-01T12:00:00", "passed": 3, "failed": 1, "error": 0,
            "skipped": 0, "total": 4, "duration": 2.5, "pass_rate": 75.0,
            "failures": [{"nodeid": "t.py::test_a", "duration": 0.1, "message": "boom"}],
        });
        let agent = serde_json::json!({
            "run": {
                "run_id": "r1", "project": "p", "branch": "main", "commit": "abc",
                "worker_id": "w", "host": "h", "runner": "pytest", "command": "pytest -q",
                "started_at": "2024-05-01T12:00:00Z", "finished_at": "2024-05-01T12:00:30Z",
                "duration_secs": 30.0, "exit_code": 1, "status": "failed",
                "counts": {"total": 1, "passed": 0, "failed": 1, "error": 0, "skipped": 0,
                           "xfailed": 0, "xpassed": 0},
                "cases_complete": true, "note": "n",
            },
            "cases": [{
                "test_id": "t.py::test_a", "file": "t.py", "classname": "t", "name": "test_a",
                "outcome": "failed", "duration_secs": 0.1, "message": "boom",
                "traceback": "tb", "output": "out", "retries": 0, "flaky": false,
            }],
        });
        for (body, shape, fields) in [
            (&legacy, "original system's payload", 15),
            (&agent, "agent's payload", 33),
        ] {
            let bytes = serde_json::to_vec(body).expect("json");
            assert!(
                parse_post_body(&bytes).is_ok(),
                "the {shape} sample is valid"
            );
            let mut paths = Vec::new();
            leaves(body, String::new(), &mut paths);
            assert_eq!(paths.len(), fields, "every field of the {shape}: {paths:?}");
            for path in paths {
                let bad = serde_json::to_vec(&spoiled(body, &path)).expect("json");
                let detail = match parse_post_body(&bad) {
                    Err(ApiError::BadRequest(d)) => d,
                    other => panic!("{path}: {other:?}"),
                };
                assert!(detail.starts_with(&format!("{path}: ")), "{detail}");
                assert!(
                    (detail.contains("invalid type: string \"a string\", expected ")
                        || detail.contains("invalid type: sequence, expected "))
                        || detail.contains("is not a date"),
                    "{path}: what was found and what is accepted: {detail}"
                );
                assert!(detail.contains(shape), "{path}: where to look: {detail}");
            }
        }
        // A name that is not one: the accepted ones are listed.
        for (path, want) in [
            (
                "cases[0].outcome",
                "\"broken\" is not an outcome; send one of failed, error",
            ),
            (
                "run.status",
                "\"broken\" is not a run status; send one of passed, failed",
            ),
        ] {
            let mut body = agent.clone();
            match path {
                "run.status" => body["run"]["status"] = serde_json::json!("broken"),
                _ => body["cases"][0]["outcome"] = serde_json::json!("broken"),
            }
            let bytes = serde_json::to_vec(&body).expect("json");
            match parse_post_body(&bytes) {
                Err(ApiError::BadRequest(d)) => {
                    assert!(d.starts_with(&format!("{path}: {want}")), "{d}")
                }
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn legacy_payload_becomes_a_partial_run() {
        let l: LegacyRun = serde_json::from_str(
            r#"{"run_id":"8f0c","worker_id":"w","passed":3,"failed":1,"total":4,"duration":2.5,
                "pass_rate":75.0,"failures":[{"nodeid":"t.py::test_a","duration":0.1,"message":"boom"}]}"#,
        )
        .expect("seed payload parses");
        let (run, cases) = legacy_to_run(l, Utc::now()).expect("converts");
        assert_eq!(
            (run.counts.total, run.counts.failed, run.cases_complete),
            (4, 1, false)
        );
        assert_eq!(run.project, "default");
        assert_eq!(cases[0].name, "test_a");
        let bad: LegacyRun =
            serde_json::from_str(r#"{"run_id":"x","worker_id":"w","passed":1,"total":5}"#)
                .expect("parses");
        assert!(legacy_to_run(bad, Utc::now()).is_err());
    }

    /// Every field of both shapes, given a value of the wrong type, is
    /// refused with its JSON path first.
    #[test]
    fn every_field_of_both_shapes_is_named_when_wrong() {
        let legacy = serde_json::json!({"run_id": "r", "worker_id": "w", "project": "p",
            "branch": "main", "timestamp": "2024-05-01T12:00:00", "passed": 1, "failed": 1,
            "error": 0, "skipped": 0, "total": 2, "duration": 1.5, "pass_rate": 50.0,
            "failures": [{"nodeid": "t.py::test_a", "duration": 0.1, "message": "boom"}]});
        assert!(parse_post_body(&serde_json::to_vec(&legacy).expect("json")).is_ok());
        let now = Utc::now();
        let full = serde_json::json!({"run": {"run_id": "r", "project": "p", "branch": "b",
            "commit": "c", "worker_id": "w", "host": "h", "runner": "pytest", "command": "pytest",
            "started_at": now, "finished_at": now, "duration_secs": 0.0, "exit_code": 1,
            "status": "failed", "counts": {"total": 1, "passed": 0, "failed": 1, "error": 0,
            "skipped": 0, "xfailed": 0, "xpassed": 0}, "cases_complete": true, "note": "n"},
            "cases": [{"test_id": "t::a", "file": "t.py", "classname": "t", "name": "a",
            "outcome": "failed", "duration_secs": 0.1, "message": "m", "traceback": "tb",
            "output": "o", "retries": 0, "flaky": false}]});
        assert!(parse_post_body(&serde_json::to_vec(&full).expect("json")).is_ok());
        let mut fields: Vec<(serde_json::Value, String)> = Vec::new();
        let object = |v: &serde_json::Value| v.as_object().cloned().unwrap_or_default();
        for k in object(&legacy).keys() {
            fields.push((legacy.clone(), k.clone()));
        }
        for k in object(&legacy["failures"][0]).keys() {
            fields.push((legacy.clone(), format!("failures[0].{k}")));
        }
        for k in object(&full["run"]).keys() {
            fields.push((full.clone(), format!("run.{k}")));
        }
        for k in object(&full["run"]["counts"]).keys() {
            fields.push((full.clone(), format!("run.counts.{k}")));
        }
        for k in object(&full["cases"][0]).keys() {
            fields.push((full.clone(), format!("cases[0].{k}")));
        }
        assert_eq!(fields.len(), 13 + 3 + 16 + 7 + 11);
        for (mut body, path) in fields {
            // Walk to the field and give it a value no field accepts.
            let mut at = &mut body;
            let parts: Vec<&str> = path.split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                let (name, index) = match part.split_once('[') {
                    Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
                    None => (*part, None),
                };
                at = &mut at[name];
                if let Some(n) = index {
                    at = &mut at[n];
                }
                if i == parts.len() - 1 {
                    *at = serde_json::json!({"wrong": "type"});
                }
            }
            let err = parse_post_body(&serde_json::to_vec(&body).expect("json"))
                .expect_err(&path)
                .to_string();
            assert!(err.starts_with(&format!("{path}: ")), "{path}: {err}");
        }
    }

    #[test]
    fn original_shape_failures_are_bounded_while_parsing() {
        let many: Vec<serde_json::Value> = (0..=MAX_LEGACY_FAILURES)
            .map(|i| serde_json::json!({"nodeid": format!("t{i}")}))
            .collect();
        let body = serde_json::json!({"run_id": "r", "worker_id": "w", "failed": 1,
            "failures": many});
        let err = parse_post_body(&serde_json::to_vec(&body).expect("json"))
            .expect_err("over the limit")
            .to_string();
        assert!(
            err.starts_with("failures: more than 100000 failures"),
            "{err}"
        );
    }
}
