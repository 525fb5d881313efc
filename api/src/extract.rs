//! Extractors that turn axum's rejections into [`ApiError`]s, so a bad query
//! string or body gets the same JSON error shape as everything else.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
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
            e if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
            e @ JsonRejection::MissingJsonContentType(_) => Err(ApiError::BadRequest(format!(
                "{}; send the header Content-Type: application/json",
                e.body_text()
            ))),
            e => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// A JSON body as raw bytes (Content-Type checked, size limit and body
/// budget applied), for handlers that parse it themselves to name the
/// offending field.
pub struct JsonBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !json {
            return Err(ApiError::BadRequest(
                "Expected request with `Content-Type: application/json`; send the header \
                 Content-Type: application/json"
                    .into(),
            ));
        }
        match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => Ok(JsonBytes(b)),
            Err(e) => {
                if let Some(refused) = budget_exceeded(&e) {
                    return Err(refused.to_api_error());
                }
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    return Err(too_large());
                }
                Err(ApiError::BadRequest(e.body_text()))
            }
        }
    }
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge(
        "request body is over the master's size limit (--max-body-mb / PTP_MAX_BODY_MB); \
         publish large runs with ptp-agent, which splits them"
            .into(),
    )
}

/// The budget refusal a chunked body ended with, if that is why reading it
/// failed (it is wrapped in axum's rejections).
fn budget_exceeded<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyBudgetExceeded> {
    let mut cause: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(b) = c.downcast_ref::<BodyBudgetExceeded>() {
            return Some(b);
        }
        cause = c.source();
    }
    None
}

/// `axum::extract::Path` with our error shape: a segment that is not valid
/// percent-encoded UTF-8 gets the JSON error, not axum's plain text.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::BadRequest(format!(
                    "{}; percent-encode the path segment as UTF-8 (e.g. with encodeURIComponent)",
                    e.body_text()
                )))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// A query that takes no parameters: any parameter is a 400, as the README
/// promises for unknown parameters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}
