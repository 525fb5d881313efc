//! Extractors that turn axum's rejections into [`ApiError`]s, so a bad query
//! string or body gets the same JSON error shape as everything else.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::limits::BodyBudgetExceeded;

/// `axum::extract::Query` with our error shape. Query structs use
/// `deny_unknown_fields`, so a misspelt parameter is an error, not ignored.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(ApiError::BadRequest(format!(
                    "{}; see /docs for the parameters this endpoint takes",
                    e.body_text()
                )))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// `axum::Json` with our error shape.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let rejection = match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => return Ok(Json(v)),
            Err(e) => e,
        };
        if let Some(refused) = budget_exceeded(&rejection) {
            return Err(refused.to_api_error());
        }
        match rejection {
            e if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge(
                "request body is over the master's size limit (--max-body-mb / PTP_MAX_BODY_MB); \
                 publish large runs with ptp-agent, which splits them"
                    .into(),
            )),
            e @ JsonRejection::MissingJsonContentType(_) => Err(ApiError::BadRequest(format!(
                "{}; send the header Content-Type: application/json",
                e.body_text()
            ))),
            e => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// The budget refusal a chunked body ended with, if that is why reading it
/// failed (it is wrapped in axum's rejections).
fn budget_exceeded(e: &JsonRejection) -> Option<&BodyBudgetExceeded> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(b) = c.downcast_ref::<BodyBudgetExceeded>() {
            return Some(b);
        }
        cause = c.source();
    }
    None
}
