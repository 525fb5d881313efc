//! Test analytics: flaky tests, per-test history, failure clusters and slow
//! tests.
//!
//! - `GET /flaky`: tests that both passed and failed on one commit, passed
//!   only on retry, or flip between pass and fail on a branch; with the
//!   evidence. `POST /flaky/clear` marks one fixed (a write: it needs a write
//!   token when the master has them, and goes through the writer actor).
//! - `GET /tests/{test_id}/history`: one test run by run (percent-encode the
//!   id: `tests%2Ftest_cart.py%3A%3Atest_total`).
//! - `GET /failures/clusters`: failures grouped by normalised signature.
//! - `GET /tests/slow`: slowest tests and duration regressions.
//!
//! Each reads a window of recent runs (`project`, `branch`, `days`, `runs`;
//! `owner` narrows the tests, see `ptp_actors::owners`) from the read pool through the per-test and failure-first indexes; the
//! rules live in `ptp_actors::read::{flaky, clusters, history}`. This module checks
//! input and shapes answers.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Utc};
use ptp_actors::read::clusters::{self, ClusterReport};
use ptp_actors::read::flaky::{self, FlakyReport, FlipRule, Window};
use ptp_actors::read::history::{self, SlowReport, SlowRule, TestHistory};
use ptp_actors::writer::ClearFlaky;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::routes::{bounded, owner};
use crate::state::AppState;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/flaky", get(flaky_tests))
        .route("/flaky/clear", post(clear_flaky))
        .route("/tests/{test_id}/history", get(test_history))
        .route("/tests/slow", get(slow_tests))
        .route("/failures/clusters", get(failure_clusters))
}

/// Longest test id accepted (the wire schema's bound).
const MAX_TEST_ID: usize = 4096;

fn non_empty(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.trim().is_empty() => Err(ApiError::BadRequest(format!(
            "{name} is empty; leave it out or give a value"
        ))),
        other => Ok(other),
    }
}

/// The window every analytics query reads, narrowed to `owner`'s tests.
fn window(
    project: Option<String>,
    branch: Option<String>,
    days: Option<i64>,
    runs: Option<u32>,
    default_runs: u32,
    owner_: Option<String>,
) -> Result<Window, ApiError> {
    let project = non_empty("project", project)?;
    let branch = non_empty("branch", branch)?;
    let since = match days {
        None => None,
        Some(d) if (1..=3650).contains(&d) => Some(Utc::now() - Duration::days(d)),
        Some(d) => {
            return Err(ApiError::BadRequest(format!(
                "days must be between 1 and 3650, got {d}"
            )));
        }
    };
    Ok(Window {
        project,
        branch,
        since,
        runs: bounded("runs", runs, default_runs, 1, 1000)?,
        tests: owner(owner_)?,
    })
}

/// Query of `GET /flaky`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlakyQuery {
    /// Only this project.
    pub project: Option<String>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// Only runs of the last N days, 1..=3650.
    pub days: Option<i64>,
    /// The newest N runs, 1..=1000 (default 50), outages left out.
    pub runs: Option<u32>,
    /// Only tests of this owner, matched exactly as CODEOWNERS names it
    /// (`@acme/cart`, `qa@example.com`; at most 256 bytes), by the owners
    /// the newest run with each test named.
    pub owner: Option<String>,
    /// Flip rate (flips per transition between consecutive runs on a branch)
    /// that makes a test flaky, 0..=1 (default 0.3).
    pub threshold: Option<f64>,
    /// Fewest flips for the flip-rate rule, 1..=100 (default 2).
    pub min_flips: Option<usize>,
    /// Most tests listed, 1..=1000 (default 100); `total` counts all.
    pub limit: Option<usize>,
}

/// Flaky tests with their evidence.
#[utoipa::path(get, path = "/flaky", params(FlakyQuery), responses(
    (status = 200, description = "Flaky tests, most evidence first: `{runs_considered, \
      outages_excluded, failures_only_excluded, total, tests: [{project, test_id, reasons, flip_rate, flips, runs, \
      failed_runs, retried_runs, commits: [{commit, passed_runs, failed_runs}], evidence_runs, \
      first_seen, last_seen, last_message}]}`", body = Object),
    (status = 400, description = "Bad parameter", body = ErrorBody)))]
pub async fn flaky_tests(
    State(st): State<AppState>,
    Query(q): Query<FlakyQuery>,
) -> Result<axum::Json<FlakyReport>, ApiError> {
    let w = window(
        q.project,
        q.branch,
        q.days,
        q.runs,
        flaky::DEFAULT_RUNS,
        q.owner,
    )?;
    let threshold = q.threshold.unwrap_or(0.3);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(ApiError::BadRequest(format!(
            "threshold must be between 0 and 1, got {threshold}"
        )));
    }
    let rule = FlipRule {
        threshold,
        min_flips: bounded("min_flips", q.min_flips, 2, 1, 100)?,
    };
    let limit = bounded("limit", q.limit, 100, 1, 1000)?;
    Ok(axum::Json(
        flaky::find_flaky(&st.read, &w, rule, limit).await?,
    ))
}

/// Body of `POST /flaky/clear`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// Project of the test.
    pub project: String,
    /// Test id, as `GET /flaky` lists it.
    pub test_id: String,
    /// Why it is fixed (a commit, a ticket), kept with the mark.
    pub note: Option<String>,
}

/// Answer of `POST /flaky/clear`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    /// Project.
    pub project: String,
    /// Test id.
    pub test_id: String,
    /// Evidence from runs that started before this no longer counts.
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub cleared_at: DateTime<Utc>,
    /// Whether an automatic quarantine of the test was released with it
    /// (a person's quarantine stays).
    pub released: bool,
}

/// Marks a flaky test fixed.
#[utoipa::path(post, path = "/flaky/clear", request_body = ClearRequest, responses(
    (status = 200, description = "Marked; the test is flaky again only if it flips after now", body = Cleared),
    (status = 400, description = "Bad body", body = ErrorBody),
    (status = 401, description = "A write token is required", body = ErrorBody),
    (status = 404, description = "The project has no such test", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn clear_flaky(
    State(st): State<AppState>,
    Json(req): Json<ClearRequest>,
) -> Result<axum::Json<Cleared>, ApiError> {
    if req.project.trim().is_empty() || req.test_id.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "project and test_id are required: {\"project\": \"...\", \"test_id\": \"...\"}".into(),
        ));
    }
    ptp_nats::schema::check_len("project", &req.project, ptp_nats::schema::MAX_SHORT_BYTES)
        .map_err(ApiError::BadRequest)?;
    if req.test_id.len() > MAX_TEST_ID || req.note.as_ref().is_some_and(|n| n.len() > 2000) {
        return Err(ApiError::BadRequest(format!(
            "test_id is limited to {MAX_TEST_ID} bytes and note to 2000"
        )));
    }
    let at = Utc::now();
    let known = st
        .writer
        .send(ClearFlaky {
            project: req.project.clone(),
            test_id: req.test_id.clone(),
            at,
            note: req.note,
        })
        .await?
        .map_err(ApiError::from)?;
    if !known {
        return Err(ApiError::NotFound(format!(
            "project '{}' has no test '{}'; GET /flaky?project={} lists the flaky ones",
            req.project, req.test_id, req.project
        )));
    }
    let released = crate::auto_quarantine::release_cleared(&st, &req.project, &req.test_id).await?;
    Ok(axum::Json(Cleared {
        project: req.project,
        test_id: req.test_id,
        cleared_at: at,
        released,
    }))
}

/// Query of `GET /tests/{test_id}/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this project.
    pub project: Option<String>,
    /// Only this branch.
    pub branch: Option<String>,
    /// Newest N runs of the test, 1..=1000 (default 50).
    pub limit: Option<u32>,
}

/// One test over time, newest first.
#[utoipa::path(get, path = "/tests/{test_id}/history", params(
    ("test_id" = String, Path, description = "Test id, percent-encoded (`/` as `%2F`, `:` may stay)"),
    HistoryQuery), responses(
    (status = 200, description = "`{test_id, runs, outcomes, pass_rate, median_duration_secs, \
      entries: [{run_id, started_at, project, branch, commit, worker_id, outcome, duration_secs, \
      retries, flaky, message}]}`", body = Object),
    (status = 400, description = "Bad parameter", body = ErrorBody),
    (status = 404, description = "No run has this test", body = ErrorBody)))]
pub async fn test_history(
    State(st): State<AppState>,
    Path(test_id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<axum::Json<TestHistory>, ApiError> {
    if test_id.trim().is_empty() || test_id.len() > MAX_TEST_ID {
        return Err(ApiError::BadRequest(format!(
            "test_id must be 1 to {MAX_TEST_ID} bytes"
        )));
    }
    let project = non_empty("project", q.project)?;
    let branch = non_empty("branch", q.branch)?;
    let limit = bounded("limit", q.limit, 50, 1, 1000)?;
    let h = history::test_history(
        &st.read,
        &test_id,
        project.as_deref(),
        branch.as_deref(),
        limit,
    )
    .await?;
    if h.entries.is_empty() {
        let scope = match (&project, &branch) {
            (Some(p), Some(b)) => format!(" in project '{p}' on branch '{b}'"),
            (Some(p), None) => format!(" in project '{p}'"),
            (None, Some(b)) => format!(" on branch '{b}'"),
            (None, None) => String::new(),
        };
        return Err(ApiError::NotFound(format!(
            "no run has test '{test_id}'{scope}; test ids are listed by GET /results/{{run_id}} \
             (percent-encode '/' as %2F in the path)"
        )));
    }
    Ok(axum::Json(h))
}

/// Query of `GET /failures/clusters`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClustersQuery {
    /// Only this project.
    pub project: Option<String>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// Only runs of the last N days, 1..=3650.
    pub days: Option<i64>,
    /// The newest N runs, 1..=1000 (default 50).
    pub runs: Option<u32>,
    /// Only tests of this owner, matched exactly as CODEOWNERS names it
    /// (`@acme/cart`, `qa@example.com`; at most 256 bytes), by the owners
    /// the newest run with each test named.
    pub owner: Option<String>,
    /// Most clusters listed, 1..=1000 (default 50); `total` counts all.
    pub limit: Option<usize>,
}

/// Failures grouped by signature.
#[utoipa::path(get, path = "/failures/clusters", params(ClustersQuery), responses(
    (status = 200, description = "Biggest first: `{runs_considered, failures, total, clusters: \
      [{id, exception, message, frame, count, runs, tests_total, tests, first_seen, last_seen, \
      example: {test_id, run_id, message}}]}`", body = Object),
    (status = 400, description = "Bad parameter", body = ErrorBody)))]
pub async fn failure_clusters(
    State(st): State<AppState>,
    Query(q): Query<ClustersQuery>,
) -> Result<axum::Json<ClusterReport>, ApiError> {
    let w = window(q.project, q.branch, q.days, q.runs, 50, q.owner)?;
    let limit = bounded("limit", q.limit, 50, 1, 1000)?;
    Ok(axum::Json(clusters::clusters(&st.read, &w, limit).await?))
}

/// Query of `GET /tests/slow`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SlowQuery {
    /// Only this project.
    pub project: Option<String>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// Only runs of the last N days, 1..=3650.
    pub days: Option<i64>,
    /// The newest N runs, 2..=1000 (default 20).
    pub runs: Option<u32>,
    /// Only tests of this owner, matched exactly as CODEOWNERS names it
    /// (`@acme/cart`, `qa@example.com`; at most 256 bytes), by the owners
    /// the newest run with each test named.
    pub owner: Option<String>,
    /// Of those, the newest N are "recent", the rest the baseline
    /// (1..runs, default 5).
    pub recent: Option<u32>,
    /// A regression's recent median is at least this many times the
    /// baseline's, 1..=100 (default 1.5)...
    pub factor: Option<f64>,
    /// ...and at least this many seconds more, 0..=3600 (default 0.1).
    pub min_secs: Option<f64>,
    /// Most tests per list, 1..=1000 (default 20).
    pub limit: Option<usize>,
}

/// Slowest tests and duration regressions.
#[utoipa::path(get, path = "/tests/slow", params(SlowQuery), responses(
    (status = 200, description = "`{runs_considered, tests_seen, slowest: [{project, test_id, \
      median_secs, max_secs, runs}], regressions_total, regressions: [{project, test_id, \
      recent_median_secs, baseline_median_secs, change_secs, factor, recent_runs, \
      baseline_runs}]}`", body = Object),
    (status = 400, description = "Bad parameter", body = ErrorBody)))]
pub async fn slow_tests(
    State(st): State<AppState>,
    Query(q): Query<SlowQuery>,
) -> Result<axum::Json<SlowReport>, ApiError> {
    let w = window(q.project, q.branch, q.days, q.runs, 20, q.owner)?;
    if w.runs < 2 {
        return Err(ApiError::BadRequest(
            "runs must be at least 2 (recent runs plus a baseline)".into(),
        ));
    }
    let rule = SlowRule {
        recent: bounded("recent", q.recent, 5.min(w.runs - 1), 1, w.runs - 1)?,
        factor: bounded("factor", q.factor, 1.5, 1.0, 100.0)?,
        min_secs: bounded("min_secs", q.min_secs, 0.1, 0.0, 3600.0)?,
    };
    let limit = bounded("limit", q.limit, 20, 1, 1000)?;
    Ok(axum::Json(
        history::slow_tests(&st.read, &w, rule, limit).await?,
    ))
}
