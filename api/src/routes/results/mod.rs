//! `/results`: publish a run (`POST`), list runs (`GET`), one run with its
//! test cases (`GET /results/{run_id}`).
//!
//! `POST /results` does not write to SQLite: it publishes into the same
//! JetStream stream the agents use, so there is one ingest path and one
//! set of guarantees. It answers 202 once the stream has acknowledged every
//! message of the run.

//!
//! Layout: the handlers and their queries here; how runs and cases are
//! shown in [`views`]; the POST bodies and their parsing in [`body`].

mod body;
mod views;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use ptp_actors::model::{Outcome, RunStatus};
use ptp_actors::read::queries::{self, RunFilter};
use ptp_nats::schema;
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

pub use body::{FullRun, LegacyFailure, LegacyRun, MAX_LEGACY_FAILURES, PostBody, parse_post_body};
pub use views::{CaseView, FailureView, RunDetail, RunView};

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

/// Answer of `POST /results`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The run id.
    pub run_id: String,
    /// Always `accepted`: durable in the stream, ingested shortly.
    pub status: &'static str,
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
