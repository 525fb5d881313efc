//! Aggregate reads: `/trend`, `/workers`, `/failures/stats`. Answered from
//! what the writer keeps with the data (`ptp_actors::read::rollups`: the newest
//! runs through an index, worker statistics, per-test failure counts) and,
//! for `/workers`, the heartbeats the aggregates actor holds; never by
//! scanning the history. Only failure statistics narrowed to a branch or a
//! worker (which the rollups do not keep) run one SQL query over the
//! matching runs.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Duration, Utc};
use ptp_actors::aggregates::{GetWorkers, WorkerStatus};
use ptp_actors::read::rollups::{self, FailureStat, TrendPoint};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{NoQuery, Query};
use crate::routes::bounded;
use crate::state::AppState;

/// `/trend` and `/failures/stats`: answered from the store, so the read
/// cache may keep them.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/trend", get(trend))
        .route("/failures/stats", get(failure_stats))
}

/// `/workers`: heartbeats change it without a write, so it is never cached.
pub fn workers_router() -> Router<AppState> {
    Router::new().route("/workers", get(workers))
}

/// Query of `GET /trend`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrendQuery {
    /// Only this project (default: all projects).
    pub project: Option<String>,
    /// Only this branch (requires `project`).
    pub branch: Option<String>,
    /// Number of most recent runs, 1..=1000 (default 10).
    pub limit: Option<usize>,
}

/// One run on the trend.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrendView {
    /// Run id.
    pub run_id: String,
    /// Start time of the run.
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub timestamp: DateTime<Utc>,
    /// Project.
    pub project: String,
    /// Branch.
    pub branch: Option<String>,
    /// Commit.
    pub commit: Option<String>,
    /// Worker.
    pub worker_id: String,
    /// Run status.
    pub status: String,
    /// Passed.
    pub passed: u64,
    /// Failed.
    pub failed: u64,
    /// Errored.
    pub error: u64,
    /// Skipped.
    pub skipped: u64,
    /// All cases.
    pub total: u64,
    /// Pass rate in percent.
    #[serde(serialize_with = "ptp_actors::format::rate_opt")]
    pub pass_rate: Option<f64>,
    /// Wall time, seconds.
    pub duration: f64,
}

impl From<TrendPoint> for TrendView {
    fn from(p: TrendPoint) -> Self {
        TrendView {
            run_id: p.run_id,
            timestamp: p.timestamp,
            project: p.project,
            branch: p.branch,
            commit: p.commit,
            worker_id: p.worker_id,
            status: p.status,
            passed: p.passed,
            failed: p.failed,
            error: p.error,
            skipped: p.skipped,
            total: p.total,
            pass_rate: p.pass_rate,
            duration: p.duration_secs,
        }
    }
}

/// Pass rate per run over time, oldest first.
#[utoipa::path(get, path = "/trend", params(TrendQuery), responses(
    (status = 200, description = "Runs oldest first", body = Vec<TrendView>),
    (status = 400, description = "Bad parameter", body = ErrorBody)))]
pub async fn trend(
    State(st): State<AppState>,
    Query(q): Query<TrendQuery>,
) -> Result<axum::Json<Vec<TrendView>>, ApiError> {
    let limit = bounded("limit", q.limit, 10, 1, 1000)?;
    if q.branch.is_some() && q.project.is_none() {
        return Err(ApiError::BadRequest(
            "branch needs project: pass both".into(),
        ));
    }
    let points = rollups::trend(
        &st.read,
        q.project.as_deref(),
        q.branch.as_deref(),
        limit as u32,
    )
    .await?;
    Ok(axum::Json(
        points.into_iter().map(TrendView::from).collect(),
    ))
}

/// A worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerView {
    /// Worker id.
    pub worker_id: String,
    /// `running`, `idle` or `offline`.
    pub status: String,
    /// Last heartbeat or run end.
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub last_seen: DateTime<Utc>,
    /// Run in progress.
    pub current_run: Option<String>,
    /// Host name.
    pub host: Option<String>,
    /// Project of the latest run.
    pub project: Option<String>,
    /// Runs stored.
    pub run_count: u64,
    /// Mean pass rate over its runs, percent.
    #[serde(serialize_with = "ptp_actors::format::rate_opt")]
    pub avg_pass_rate: Option<f64>,
    /// Latest run.
    pub last_run_id: Option<String>,
    /// Its status.
    pub last_run_status: Option<String>,
}

impl From<WorkerStatus> for WorkerView {
    fn from(w: WorkerStatus) -> Self {
        WorkerView {
            worker_id: w.worker_id,
            status: serde_json::to_value(w.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            last_seen: w.last_seen,
            current_run: w.current_run,
            host: w.host,
            project: w.project,
            run_count: w.run_count,
            avg_pass_rate: w.avg_pass_rate,
            last_run_id: w.last_run_id,
            last_run_status: w.last_run_status,
        }
    }
}

/// Every worker with its status, most recently seen first.
#[utoipa::path(get, path = "/workers", responses((status = 200, description = "Workers", body = Vec<WorkerView>)))]
pub async fn workers(
    State(st): State<AppState>,
    Query(_): Query<NoQuery>,
) -> Result<axum::Json<Vec<WorkerView>>, ApiError> {
    let w = st.aggregates.send(GetWorkers { now: Utc::now() }).await??;
    Ok(axum::Json(w.into_iter().map(WorkerView::from).collect()))
}

/// Query of `GET /failures/stats`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FailureQuery {
    /// Only this project.
    pub project: Option<String>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// Only runs of this worker.
    pub worker_id: Option<String>,
    /// Only tests of this owner, matched exactly as CODEOWNERS names it
    /// (`@acme/cart`, `qa@example.com`; at most 256 bytes), by the owners
    /// the newest run with each test named.
    pub owner: Option<String>,
    /// Window start, RFC 3339 (overrides `days`).
    pub since: Option<DateTime<Utc>>,
    /// Window: the last N days, 1..=3650 (default: all stored runs).
    pub days: Option<i64>,
    /// Most tests listed, 1..=500 (default 100).
    pub limit: Option<usize>,
}

/// A frequently failing test.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureStatView {
    /// Test id (the original system's name for it).
    pub nodeid: String,
    /// Test id.
    pub test_id: String,
    /// Project.
    pub project: String,
    /// Failures (failed or error) in the window.
    pub fail_count: u64,
    /// Latest failure.
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub last_failed_at: DateTime<Utc>,
    /// Its message.
    pub last_message: Option<String>,
    /// Its run.
    pub last_run_id: String,
}

impl From<FailureStat> for FailureStatView {
    fn from(f: FailureStat) -> Self {
        FailureStatView {
            nodeid: f.test_id.clone(),
            test_id: f.test_id,
            project: f.project,
            fail_count: f.fail_count,
            last_failed_at: f.last_failed_at,
            last_message: f.last_message,
            last_run_id: f.last_run_id,
        }
    }
}

/// The most frequently failing tests in a window, most failures first,
/// counted once per run. `branch` and `worker_id` narrow it to those runs,
/// `owner` to the tests of one owner (CODEOWNERS).
#[utoipa::path(get, path = "/failures/stats", params(FailureQuery), responses(
    (status = 200, description = "Tests by failure count", body = Vec<FailureStatView>),
    (status = 400, description = "Bad parameter", body = ErrorBody)))]
pub async fn failure_stats(
    State(st): State<AppState>,
    Query(q): Query<FailureQuery>,
) -> Result<axum::Json<Vec<FailureStatView>>, ApiError> {
    let limit = bounded("limit", q.limit, 100, 1, 500)?;
    let since = match (q.since, q.days) {
        (Some(s), _) => Some(s),
        (None, Some(d)) if (1..=3650).contains(&d) => Some(Utc::now() - Duration::days(d)),
        (None, Some(d)) => {
            return Err(ApiError::BadRequest(format!(
                "days must be between 1 and 3650, got {d}"
            )));
        }
        (None, None) => None,
    };
    let tests = crate::routes::owner(q.owner)?;
    let stats = if q.branch.is_none() && q.worker_id.is_none() {
        // Project-wide: kept by the writer with the data.
        rollups::failure_stats(&st.read, q.project.as_deref(), since, &tests, limit as u32).await?
    } else {
        // Narrower: one query over the runs that match.
        let filter = ptp_actors::read::queries::FailureFilter {
            project: q.project,
            branch: q.branch,
            worker_id: q.worker_id,
            since,
            tests,
        };
        ptp_actors::read::queries::failure_stats_where(&st.read, &filter, limit as u32).await?
    };
    Ok(axum::Json(
        stats.into_iter().map(FailureStatView::from).collect(),
    ))
}
