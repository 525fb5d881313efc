//! The API's one error type, mapped to status codes in one place.
//!
//! Every error answers JSON `{"error": "<kind>", "detail": "<sentence>"}`
//! (`detail` is the field the original system used, so its clients keep
//! working). 5xx causes are logged and never sent to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad query parameter, bad cursor, bad JSON.
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but its content is refused.
    #[error("{0}")]
    Unprocessable(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// A token is missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// The body is over the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A dependency (NATS) is unreachable; retrying later can succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The master is at one of its limits on concurrent work (memory for
    /// request bodies, large reads); answered with `Retry-After`.
    #[error("{0}")]
    Overloaded(String),
    /// SQLite failed.
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    /// An actor did not answer.
    #[error("internal error")]
    Mailbox(#[from] actix::MailboxError),
    /// An actor's handler failed on this request and recovered.
    #[error("internal error")]
    Actor(#[from] ptp_actors::supervise::ActorFault),
    /// The request conflicts with what is stored (a run id reused for
    /// other content).
    #[error("{0}")]
    Conflict(String),
}

impl From<ptp_actors::writer::StoreError> for ApiError {
    fn from(e: ptp_actors::writer::StoreError) -> ApiError {
        match e {
            ptp_actors::writer::StoreError::Database(e) => ApiError::Sqlx(e),
            ptp_actors::writer::StoreError::Panicked(reason) => {
                ApiError::Actor(ptp_actors::supervise::ActorFault {
                    actor: "writer",
                    reason,
                })
            }
        }
    }
}

impl From<ptp_actors::aggregates::ReadError> for ApiError {
    fn from(e: ptp_actors::aggregates::ReadError) -> ApiError {
        match e {
            ptp_actors::aggregates::ReadError::Fault(f) => ApiError::Actor(f),
            ptp_actors::aggregates::ReadError::Sqlite(e) => ApiError::Sqlx(e),
        }
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind: `bad_request`, `unauthorized`, `unprocessable`,
    /// `not_found`, `conflict`, `payload_too_large`, `unavailable`, `internal`.
    pub error: &'static str,
    /// What went wrong and what to do about it.
    pub detail: String,
}

/// Seconds an [`ApiError::Overloaded`] answer asks the client to wait
/// (`Retry-After`): about how long a large body or a large read takes.
pub const RETRY_AFTER_SECS: u32 = 2;

impl ApiError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unavailable(_) | ApiError::Overloaded(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Sqlx(_) | ApiError::Mailbox(_) | ApiError::Actor(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_code();
        let detail = match &self {
            ApiError::Sqlx(e) => {
                tracing::error!("database error: {e}");
                "the master's database failed; see the master's log".to_string()
            }
            ApiError::Mailbox(e) => {
                tracing::error!("actor unavailable: {e}");
                "the master is shutting down or overloaded; retry".to_string()
            }
            ApiError::Actor(e) => {
                tracing::error!("{e}");
                "the master failed on this request and recovered (see its log); retry".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: kind,
                detail,
            }),
        )
            .into_response();
        let extra = match self {
            ApiError::Unauthorized(_) => Some((
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"pytest-platform\""),
            )),
            ApiError::Overloaded(_) => Some((
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            )),
            _ => None,
        };
        if let Some((name, value)) = extra {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
