//! Extractors that turn axum's rejections into [`ApiError`]s, so a bad query
//! string or body gets the same JSON error shape as everything else.
//!
//! Shape: thin wrappers over axum's `Query`, `Json` and `Path`, each with
//! one mapping from rejection to error; handlers use these, never axum's.
//! A body refused by the in-flight budget ([`crate::limits`]) is found
//! among the body's errors here, so the budget knows no extractor.
//!
//! Guarantees: every refusal is the JSON error shape with a sentence naming
//! what to change (the parameter, the size limit, the encoding); a body
//! over the budget is a 503 with `Retry-After`, not a 400.

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{StatusCode, header};
    use axum::routing::post;
    use tower::ServiceExt;

    use super::Json;
    use crate::limits::{BodyBudget, charge_bodies};

    /// A chunked body is charged chunk by chunk ([`crate::limits`]): one
    /// that does not fit ends, through [`Json`], in 503 with Retry-After;
    /// one that fits is served; every charge is given back afterwards.
    #[tokio::test]
    async fn chunked_bodies_are_charged_as_they_arrive() {
        let budget = Arc::new(BodyBudget::new(1, 1024 * 1024));
        let app = Router::new()
            .route(
                "/",
                post(|Json(v): Json<serde_json::Value>| async move {
                    v.as_str().map(str::len).unwrap_or(0).to_string()
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                budget.clone(),
                charge_bodies,
            ));
        let chunked = |bytes: usize| {
            let json = format!("\"{}\"", "x".repeat(bytes - 2)).into_bytes();
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                json.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect();
            Request::post("/")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .expect("request")
        };
        // 1 MiB budget at 10× admits ~100 KiB of body.
        let r = app
            .clone()
            .oneshot(chunked(200 * 1024))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        let body = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON error");
        assert_eq!(v["error"], "unavailable");
        assert!(
            v["detail"]
                .as_str()
                .is_some_and(|d| d.contains("PTP_MAX_INFLIGHT_BODY_MB")),
            "{v}"
        );
        assert_eq!(
            budget.available_kib(),
            1024,
            "the refused body's charge is back"
        );

        let r = app
            .clone()
            .oneshot(chunked(50 * 1024))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            budget.available_kib(),
            1024,
            "the served body's charge is back"
        );
    }
}
