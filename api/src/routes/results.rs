//! `/results`: publish a run (`POST`), list runs (`GET`), one run with its
//! test cases (`GET /results/{run_id}`).
//!
//! `POST /results` does not write to SQLite: it publishes into the same
//! JetStream stream the agents use, so there is one ingest path and one
//! set of guarantees. It answers 202 once the stream has acknowledged every
//! message of the run.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use ptp_actors::model::{CaseRecord, Outcome, RunRecord};
use ptp_actors::queries::{self, RunCursor, RunFilter};
use ptp_nats::schema::{self, RunInfo, TestCase};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Query};
use crate::limits::{LARGE_READ_CASES, hold_until_sent};
use crate::routes::bounded;

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
    pub timestamp: DateTime<Utc>,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub finished_at: DateTime<Utc>,
    /// Wall time in seconds.
    pub duration: f64,
    /// Exit code of the test command.
    pub exit_code: Option<i32>,
    /// `passed`, `failed`, `interrupted`, `internal_error`, `usage_error`,
    /// `no_tests`, `crashed` or `timed_out`.
    pub status: String,
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
    pub pass_rate: Option<f64>,
    /// Whether every test case is stored (false for the original system's
    /// payload, which carried only failures).
    pub cases_complete: bool,
    /// Why the run has its status, when known.
    pub note: Option<String>,
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

fn encode_cursor(r: &RunView) -> String {
    format!("{}.{}", r.started_at.timestamp_millis(), r.run_id)
}

fn decode_cursor(s: &str) -> Result<RunCursor, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "cursor {s:?} is not one this API issued; pass the X-Next-Cursor value of the previous page unchanged"
        ))
    };
    let (ms, run_id) = s.split_once('.').ok_or_else(bad)?;
    let ms: i64 = ms.parse().map_err(|_| bad())?;
    let started_at = DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(bad)?;
    check_run_id(run_id).map_err(|_| bad())?;
    Ok(RunCursor {
        started_at,
        run_id: run_id.to_string(),
    })
}

pub(crate) fn check_run_id(run_id: &str) -> Result<(), ApiError> {
    let ok = !run_id.is_empty()
        && run_id.len() <= schema::MAX_RUN_ID_BYTES
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "run_id {:?} is not valid: use 1 to {} letters, digits, '-', '_' or '.'",
            run_id.chars().take(200).collect::<String>(),
            schema::MAX_RUN_ID_BYTES
        )))
    }
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
    let limit = bounded("limit", q.limit, 50, 1, 500)?;
    if let Some(s) = &q.status
        && schema::RunStatus::parse(s).is_none()
    {
        let all: Vec<&str> = schema::RunStatus::ALL.map(|r| r.as_str()).to_vec();
        return Err(ApiError::BadRequest(format!(
            "status {s:?} is not one of {}",
            all.join(", ")
        )));
    }
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = RunFilter {
        project: q.project.clone(),
        branch: q.branch.clone(),
        worker_id: q.worker_id.clone(),
        status: q.status.clone(),
        since: q.since,
        until: q.until,
        after,
        limit: limit + 1,
    };
    let mut runs: Vec<RunView> = queries::list_runs(&st.read, &filter)
        .await?
        .into_iter()
        .map(RunView::from)
        .collect();
    let mut headers = HeaderMap::new();
    if runs.len() > limit as usize {
        runs.truncate(limit as usize);
        if let Some(last) = runs.last() {
            let cursor = encode_cursor(last);
            let mut link = format!("</results?limit={limit}&cursor={cursor}");
            for (k, v) in [
                ("project", &q.project),
                ("branch", &q.branch),
                ("worker_id", &q.worker_id),
                ("status", &q.status),
            ] {
                if let Some(v) = v {
                    link.push_str(&format!("&{k}={}", urlencode(v)));
                }
            }
            link.push_str(">; rel=\"next\"");
            if let Ok(v) = HeaderValue::from_str(&cursor) {
                headers.insert("x-next-cursor", v);
            }
            if let Ok(v) = HeaderValue::from_str(&link) {
                headers.insert(header::LINK, v);
            }
        }
    }
    Ok((headers, axum::Json(runs)))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
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

fn order_tag(order: queries::CaseOrder) -> &'static str {
    match order {
        queries::CaseOrder::FailuresFirst => "failures_first",
        queries::CaseOrder::Slowest => "duration",
    }
}

fn encode_case_cursor(order: queries::CaseOrder, p: &queries::CasePosition) -> String {
    format!(
        "{}.{}.{:x}.{}.{}",
        order_tag(order),
        p.outcome,
        p.duration_secs.to_bits(),
        p.chunk,
        p.idx
    )
}

fn decode_case_cursor(
    s: &str,
    order: queries::CaseOrder,
) -> Result<queries::CasePosition, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "cursor {:?} is not one this API issued for these cases; pass the next_cursor of the previous page unchanged",
            s.chars().take(100).collect::<String>()
        ))
    };
    let mut parts = s.split('.');
    let tag = parts.next().ok_or_else(bad)?;
    if tag != order_tag(order) {
        return Err(ApiError::BadRequest(format!(
            "cursor was issued for order={tag}, not order={}; ask with the order of the page that returned it",
            order_tag(order)
        )));
    }
    let mut num = || parts.next().ok_or_else(bad);
    let outcome: i64 = num()?.parse().map_err(|_| bad())?;
    let bits = u64::from_str_radix(num()?, 16).map_err(|_| bad())?;
    let chunk: i64 = num()?.parse().map_err(|_| bad())?;
    let idx: i64 = num()?.parse().map_err(|_| bad())?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(queries::CasePosition {
        outcome,
        duration_secs: f64::from_bits(bits),
        chunk,
        idx,
    })
}

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
    let limit = bounded(
        "cases_limit",
        q.cases_limit,
        DEFAULT_CASES_LIMIT,
        0,
        200_000,
    )?;
    let outcomes = match q.outcome.as_deref() {
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
    let order = match q.order.as_deref() {
        None | Some("") | Some("failures_first") => queries::CaseOrder::FailuresFirst,
        Some("duration") => queries::CaseOrder::Slowest,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "order {other:?} is not one of failures_first, duration"
            )));
        }
    };
    // Many cases: wait for a turn, held until the answer is sent.
    let large_read = if limit > LARGE_READ_CASES {
        Some(st.large_reads.admit().await?)
    } else {
        None
    };
    let run = queries::get_run(&st.read, &run_id).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "run_id '{run_id}' not found (runs appear once all their results are ingested; check GET /results or GET /rejected)"
        ))
    })?;
    let after = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| decode_case_cursor(c, order))
        .transpose()?;
    let page = queries::run_cases(&st.read, &run_id, &outcomes, order, after, limit).await?;
    let cases = page.cases;
    let next_cursor = page.next.map(|p| encode_case_cursor(order, &p));
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
    let mut headers = HeaderMap::new();
    if let Some(c) = &next_cursor
        && let Ok(v) = HeaderValue::from_str(c)
    {
        headers.insert("x-next-cursor", v);
    }
    let answer = move || {
        (
            headers,
            axum::Json(RunDetail {
                run: run.into(),
                failures,
                cases: cases.into_iter().map(CaseView::from).collect(),
                cases_omitted,
                next_cursor,
            }),
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
    /// Start time, ISO 8601 (default: now).
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
    /// Failed tests.
    #[serde(default)]
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

/// Either payload `POST /results` accepts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
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

fn legacy_to_run(l: LegacyRun) -> Result<(RunInfo, Vec<TestCase>), ApiError> {
    let sum = l.passed + l.failed + l.error + l.skipped;
    if let Some(total) = l.total
        && total != sum
    {
        return Err(ApiError::Unprocessable(format!(
            "total ({total}) must equal passed + failed + error + skipped ({sum})"
        )));
    }
    if !l.duration.is_finite() || l.duration < 0.0 {
        return Err(ApiError::Unprocessable(format!(
            "duration must be a finite number of seconds >= 0, got {}",
            l.duration
        )));
    }
    let started_at = l.timestamp.unwrap_or_else(Utc::now);
    let finished_at =
        started_at + chrono::Duration::milliseconds((l.duration * 1000.0).min(1e12) as i64);
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
            duration_secs: if f.duration.is_finite() {
                f.duration.max(0.0)
            } else {
                0.0
            },
            message: f
                .message
                .map(|m| schema::truncate_marked(m, schema::MAX_MESSAGE_BYTES)),
            traceback: None,
            output: None,
            retries: 0,
            flaky: false,
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
    (status = 400, description = "Malformed JSON", body = ErrorBody),
    (status = 413, description = "Body over the size limit", body = ErrorBody),
    (status = 422, description = "Impossible values", body = ErrorBody),
    (status = 503, description = "NATS unreachable, or no memory left for bodies being read at once (with Retry-After); nothing stored, retry", body = ErrorBody)))]
pub async fn post_result(
    State(st): State<AppState>,
    Json(body): Json<PostBody>,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    let (run, cases) = match body {
        PostBody::Full(f) => (f.run, f.cases),
        PostBody::Legacy(l) => legacy_to_run(l)?,
    };
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
    for m in &msgs {
        // Validate exactly what ingest will decode, so a refusal happens here
        // with a 422 rather than later as a rejection.
        schema::decode(&m.payload).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
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

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let c = decode_cursor("1700000000000.0190-abc").expect("valid cursor");
        assert_eq!(c.run_id, "0190-abc");
        assert_eq!(c.started_at.timestamp_millis(), 1_700_000_000_000);
        for bad in ["", "abc", "12", "x.y", "1.", "1.a b"] {
            assert!(decode_cursor(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn legacy_payload_becomes_a_partial_run() {
        let l: LegacyRun = serde_json::from_str(
            r#"{"run_id":"8f0c","worker_id":"w","passed":3,"failed":1,"total":4,"duration":2.5,
                "pass_rate":75.0,"failures":[{"nodeid":"t.py::test_a","duration":0.1,"message":"boom"}]}"#,
        )
        .expect("seed payload parses");
        let (run, cases) = legacy_to_run(l).expect("converts");
        assert_eq!(
            (run.counts.total, run.counts.failed, run.cases_complete),
            (4, 1, false)
        );
        assert_eq!(run.project, "default");
        assert_eq!(cases[0].name, "test_a");
        let bad: LegacyRun =
            serde_json::from_str(r#"{"run_id":"x","worker_id":"w","passed":1,"total":5}"#)
                .expect("parses");
        assert!(legacy_to_run(bad).is_err());
    }
}
