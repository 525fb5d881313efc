//! `GET /compare`: two runs test by test (new failures, fixed, still
//! failing, new and removed tests, slower and faster tests).
//!
//! The runs are named by id (`base`, `head`), or as the latest runs of two
//! branches of a project (`project`, `base_branch`, `head_branch`): "what
//! does my branch break compared to main?". The comparison rules live in
//! `ptp_actors::read::compare`; this module resolves the runs and checks input.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use ptp_actors::read::compare::{self, Comparison};
use ptp_actors::read::queries::{self, RunFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::Query;
use crate::routes::bounded;
use crate::routes::results::{RunView, check_run_id};
use crate::state::AppState;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/compare", get(compare_runs))
}

/// Query of `GET /compare`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// Base run id (the reference, e.g. the last run on main).
    pub base: Option<String>,
    /// Head run id (the run under review).
    pub head: Option<String>,
    /// With `base_branch`/`head_branch` instead of run ids: the project.
    pub project: Option<String>,
    /// The base is the latest run of this branch of `project`.
    pub base_branch: Option<String>,
    /// The head is the latest run of this branch of `project`.
    pub head_branch: Option<String>,
    /// Most entries per list, 1..=1000 (default 100); totals are always given.
    pub limit: Option<usize>,
    /// Smallest duration change, in seconds, listed as slower or faster
    /// (default 0.5); a test must also be 50% slower (or a third faster).
    pub min_change_secs: Option<f64>,
}

/// The two runs and how they differ.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompareView {
    /// The base run.
    pub base: RunView,
    /// The head run.
    pub head: RunView,
    /// `new_failures`, `fixed`, `still_failing`, `new_tests`,
    /// `removed_tests` (each `{total, items: [{test_id, base, head,
    /// message}]}`), `slower`, `faster` (`{total, items: [{test_id,
    /// base_secs, head_secs}]}`) and `common_duration_secs` `[base, head]`.
    #[schema(value_type = Object)]
    pub changes: Comparison,
}

async fn resolve(
    st: &AppState,
    id: Option<String>,
    project: &Option<String>,
    branch: Option<String>,
    which: &str,
) -> Result<ptp_actors::model::RunRecord, ApiError> {
    match (id, branch) {
        (Some(id), None) => {
            check_run_id(&id)?;
            queries::get_run(&st.read, &id).await?.ok_or_else(|| {
                ApiError::NotFound(format!(
                    "{which} run '{id}' not found; list runs with GET /results"
                ))
            })
        }
        (None, Some(branch)) => {
            let Some(project) = project.clone() else {
                return Err(ApiError::BadRequest(format!(
                    "{which}_branch needs project: pass project=<name> too"
                )));
            };
            let f = RunFilter {
                project: Some(project.clone()),
                branch: Some(branch.clone()),
                limit: 1,
                ..RunFilter::default()
            };
            queries::list_runs(&st.read, &f)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "no run of project '{project}' on branch '{branch}' ({which}_branch)"
                    ))
                })
        }
        (Some(_), Some(_)) => Err(ApiError::BadRequest(format!(
            "give either {which} (a run id) or {which}_branch, not both"
        ))),
        (None, None) => Err(ApiError::BadRequest(format!(
            "name the {which} run: {which}=<run id>, or project=<name>&{which}_branch=<branch>"
        ))),
    }
}

/// Compares two runs test by test.
#[utoipa::path(get, path = "/compare", params(CompareQuery), responses(
    (status = 200, description = "How head differs from base", body = CompareView),
    (status = 400, description = "Bad parameter", body = ErrorBody),
    (status = 404, description = "No such run", body = ErrorBody)))]
pub async fn compare_runs(
    State(st): State<AppState>,
    Query(q): Query<CompareQuery>,
) -> Result<axum::Json<CompareView>, ApiError> {
    let limit = bounded("limit", q.limit, 100, 1, 1000)?;
    let min_change = q.min_change_secs.unwrap_or(0.5);
    if !(min_change.is_finite() && min_change >= 0.0) {
        return Err(ApiError::BadRequest(format!(
            "min_change_secs must be a number >= 0, got {min_change}"
        )));
    }
    let base = resolve(&st, q.base, &q.project, q.base_branch, "base").await?;
    let head = resolve(&st, q.head, &q.project, q.head_branch, "head").await?;
    let (b, h) = tokio::try_join!(
        compare::load_tests(&st.read, &base.run_id),
        compare::load_tests(&st.read, &head.run_id),
    )?;
    let changes = compare::compare(&b, &h, limit, min_change);
    Ok(axum::Json(CompareView {
        base: base.into(),
        head: head.into(),
        changes,
    }))
}
