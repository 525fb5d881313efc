//! `/quarantine`: the tests a project's agents must not fail the build for.
//! `POST` quarantines (or re-quarantines) a test, `DELETE` releases it, both
//! with a write token; `GET` lists a project's active entries.
//!
//! Each change is stored through the writer ([`ptp_actors::quarantine`]),
//! then mirrored into the agents' key-value bucket ([`crate::mirror`]); the
//! answer says whether the mirror is up to date (`mirrored`). A change
//! that could not be mirrored is still stored and is retried (see
//! `/health`'s `quarantine_mirror_error`).

use axum::Router;
use axum::extract::State;
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use ptp_actors::quarantine::Entry;
use ptp_actors::read::quarantine;
use ptp_actors::writer::{Quarantine, Release};
use ptp_nats::quarantine::{MAX_REASON_BYTES, MAX_TESTS};
use ptp_nats::schema::{MAX_SHORT_BYTES, MAX_TEST_ID_BYTES, check_len};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Furthest ahead an `expires_at` may be.
const MAX_EXPIRY_DAYS: i64 = 366;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/quarantine", get(list_quarantine).post(post_quarantine))
        .route(
            "/quarantine/{project}/{test_id}",
            delete(release_quarantine),
        )
}

/// Body of `POST /quarantine`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRequest {
    /// Project.
    pub project: String,
    /// Test id, as runs report it.
    pub test_id: String,
    /// Why (at most 512 bytes).
    pub reason: String,
    /// When the quarantine ends by itself (in the future, within 366 days);
    /// absent: until released.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Query of `GET /quarantine`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QuarantineQuery {
    /// The project.
    pub project: String,
}

/// One quarantined test.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineEntry {
    /// Test id.
    pub test_id: String,
    /// Why.
    pub reason: String,
    /// Since when.
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub since: DateTime<Utc>,
    /// When it ends by itself; null: until released.
    #[serde(serialize_with = "ptp_actors::format::time_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Quarantined by the flaky detector.
    pub auto: bool,
}

/// A project's active quarantine list.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineListing {
    /// Project.
    pub project: String,
    /// Active entries (expired ones left out), by test id.
    pub tests: Vec<QuarantineEntry>,
    /// Why the agents' copy (the `ptp_quarantine` bucket) is behind, if it is.
    pub mirror_error: Option<String>,
}

/// The answer to a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineChanged {
    /// Project.
    pub project: String,
    /// Test id.
    pub test_id: String,
    /// `quarantined` or `released`.
    pub state: &'static str,
    /// Whether the agents' copy is up to date; when false the change is
    /// stored and the copy is retried (see `/health`).
    pub mirrored: bool,
}

fn check_ids(project: &str, test_id: &str) -> Result<(), ApiError> {
    if project.trim().is_empty() || test_id.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "project and test_id are required and must not be blank".into(),
        ));
    }
    check_len("project", project, MAX_SHORT_BYTES).map_err(ApiError::BadRequest)?;
    check_len("test_id", test_id, MAX_TEST_ID_BYTES).map_err(ApiError::BadRequest)
}

async fn mirror(st: &AppState, project: &str) -> bool {
    st.quarantine.sync(&st.read, &st.js, project).await;
    st.quarantine.error().is_none()
}

/// Quarantines a test: the project's agents exit 0 when it is their only
/// failure. Quarantining it again replaces the entry.
#[utoipa::path(post, path = "/quarantine", request_body = QuarantineRequest, responses(
    (status = 200, description = "Stored (and mirrored, unless `mirrored` is false)", body = QuarantineChanged),
    (status = 400, description = "Bad body", body = ErrorBody),
    (status = 401, description = "A write token is required", body = ErrorBody),
    (status = 409, description = "The project's list is full (1,000 tests, 900 KB encoded)", body = ErrorBody),
    (status = 422, description = "expires_at is not in the future or too far ahead", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn post_quarantine(
    State(st): State<AppState>,
    Json(req): Json<QuarantineRequest>,
) -> Result<axum::Json<QuarantineChanged>, ApiError> {
    check_ids(&req.project, &req.test_id)?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::BadRequest("reason is required".into()));
    }
    check_len("reason", &req.reason, MAX_REASON_BYTES).map_err(ApiError::BadRequest)?;
    let now = Utc::now();
    if let Some(at) = req.expires_at {
        let latest = now + chrono::TimeDelta::days(MAX_EXPIRY_DAYS);
        if at <= now || at > latest {
            return Err(ApiError::Unprocessable(format!(
                "expires_at {} must be after now and within {MAX_EXPIRY_DAYS} days",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )));
        }
    }
    st.writer
        .send(Quarantine {
            project: req.project.clone(),
            entry: Entry {
                test_id: req.test_id.clone(),
                reason: req.reason,
                since: now,
                expires_at: req.expires_at,
                auto: false,
            },
            fits: crate::mirror::fits,
            now,
        })
        .await?
        .map_err(ApiError::from)?
        .map_err(|why| {
            ApiError::Conflict(format!(
                "project '{}' cannot quarantine more (at most {MAX_TESTS} tests, 900 KB): {why}",
                req.project
            ))
        })?;
    let mirrored = mirror(&st, &req.project).await;
    Ok(axum::Json(QuarantineChanged {
        project: req.project,
        test_id: req.test_id,
        state: "quarantined",
        mirrored,
    }))
}

/// Releases a test: its failures fail the build again.
#[utoipa::path(delete, path = "/quarantine/{project}/{test_id}", params(
    ("project" = String, Path, description = "Project, percent-encoded"),
    ("test_id" = String, Path, description = "Test id, percent-encoded (`/` as `%2F`)")),
    responses(
    (status = 200, description = "Released (and mirrored, unless `mirrored` is false)", body = QuarantineChanged),
    (status = 400, description = "Bad path", body = ErrorBody),
    (status = 401, description = "A write token is required", body = ErrorBody),
    (status = 404, description = "The test is not quarantined in the project", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn release_quarantine(
    State(st): State<AppState>,
    Path((project, test_id)): Path<(String, String)>,
) -> Result<axum::Json<QuarantineChanged>, ApiError> {
    check_ids(&project, &test_id)?;
    let was = st
        .writer
        .send(Release {
            project: project.clone(),
            test_id: test_id.clone(),
            only_auto: false,
        })
        .await?
        .map_err(ApiError::from)?;
    if !was {
        return Err(ApiError::NotFound(format!(
            "'{test_id}' is not quarantined in project '{project}'; GET /quarantine?project={project} lists them"
        )));
    }
    let mirrored = mirror(&st, &project).await;
    Ok(axum::Json(QuarantineChanged {
        project,
        test_id,
        state: "released",
        mirrored,
    }))
}

/// A project's quarantined tests (active entries).
#[utoipa::path(get, path = "/quarantine", params(QuarantineQuery), responses(
    (status = 200, description = "The list", body = QuarantineListing),
    (status = 400, description = "Bad parameter", body = ErrorBody)))]
pub async fn list_quarantine(
    State(st): State<AppState>,
    Query(q): Query<QuarantineQuery>,
) -> Result<axum::Json<QuarantineListing>, ApiError> {
    if q.project.trim().is_empty() {
        return Err(ApiError::BadRequest("project is required".into()));
    }
    check_len("project", &q.project, MAX_SHORT_BYTES).map_err(ApiError::BadRequest)?;
    let tests = quarantine::active(&st.read, &q.project, Utc::now())
        .await?
        .into_iter()
        .map(|e| QuarantineEntry {
            test_id: e.test_id,
            reason: e.reason,
            since: e.since,
            expires_at: e.expires_at,
            auto: e.auto,
        })
        .collect();
    Ok(axum::Json(QuarantineListing {
        project: q.project,
        tests,
        mirror_error: st.quarantine.error(),
    }))
}
