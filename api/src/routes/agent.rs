//! `/agent`: the HTTP transport for agents that cannot reach NATS (hosted CI
//! runners, locked-down networks that allow only HTTPS to a reverse proxy).
//!
//! - `POST /agent/check`: nothing stored; answers 200 with the largest wire
//!   message accepted (the NATS server's max payload) when the token is a
//!   write token and NATS is connected, 503 when NATS is away. `ptp-agent
//!   check` and every HTTP delivery start here.
//! - `POST /agent/messages`: one wire message exactly as the agent would
//!   publish it to NATS (`ptp_nats::schema`: a chunk of test cases or a run's
//!   final message). It is decoded and validated as ingest would, then
//!   published unchanged on its subject under the message id derived from it
//!   ([`ptp_nats::schema::WireMessage::msg_id`]), and answered 202 once the
//!   stream has acknowledged it. A resend inside the stream's duplicate
//!   window is acknowledged as a duplicate and not stored again; later, the
//!   writer's idempotence drops it. So a retried upload is stored once, as
//!   over NATS.
//!
//! Both are writes: the token middleware asks for a write token
//! (`PTP_WRITE_TOKENS`) like any other POST.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ptp_nats::schema;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agent/check", post(check))
        .route("/agent/messages", post(post_message))
}

/// Answer of `POST /agent/check`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentCheck {
    /// Largest wire message accepted, in bytes: the NATS server's max payload.
    pub max_message_bytes: usize,
    /// The stream messages are published into.
    pub stream: &'static str,
}

/// Answer of `POST /agent/messages`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    /// The message id it was published under.
    pub msg_id: String,
    /// True when the stream already had this message (a resend).
    pub duplicate: bool,
}

fn nats_ready(st: &AppState) -> Result<usize, ApiError> {
    if st.nats.connection_state() != async_nats::connection::State::Connected {
        return Err(ApiError::Unavailable(format!(
            "NATS at {} is unreachable from the master, so nothing can be stored now; retry later \
             (the agent spools the run and `ptp-agent flush` sends it)",
            st.nats_url
        )));
    }
    Ok(match st.nats.server_info().max_payload {
        0 => 1024 * 1024,
        n => n,
    })
}

/// Checks the token and says how large a message may be.
#[utoipa::path(post, path = "/agent/check", responses(
    (status = 200, description = "Ready to take messages", body = AgentCheck),
    (status = 401, description = "No valid write token", body = ErrorBody),
    (status = 503, description = "NATS unreachable", body = ErrorBody)))]
pub async fn check(State(st): State<AppState>) -> Result<axum::Json<AgentCheck>, ApiError> {
    Ok(axum::Json(AgentCheck {
        max_message_bytes: nats_ready(&st)?,
        stream: ptp_nats::STREAM,
    }))
}

/// Publishes one wire message into the stream.
#[utoipa::path(post, path = "/agent/messages", request_body(content = String,
    description = "One wire message (`{\"schema\": 1, \"kind\": \"cases\" | \"run\", ...}`), as ptp_nats::schema::encode writes it",
    content_type = "application/json"),
    responses(
    (status = 202, description = "In the stream", body = Published),
    (status = 401, description = "No valid write token", body = ErrorBody),
    (status = 413, description = "Larger than the NATS max payload", body = ErrorBody),
    (status = 422, description = "Not a valid wire message", body = ErrorBody),
    (status = 503, description = "NATS unreachable; retry", body = ErrorBody)))]
pub async fn post_message(
    State(st): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Published>), ApiError> {
    let msg = schema::decode(&body).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let max = nats_ready(&st)?;
    if body.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "the message is {} bytes and NATS takes at most {max}; encode the run with the \
             max_message_bytes of POST /agent/check",
            body.len()
        )));
    }
    let msg_id = msg.msg_id();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id.as_str());
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::Unavailable(format!(
            "could not confirm the message with NATS at {}: {e}. Retry: it is stored once however often it is sent",
            st.nats_url
        ))
    };
    let ack = st
        .js
        .publish_with_headers(msg.subject(), headers, body)
        .await
        .map_err(|e| unavailable(&e))?
        .await
        .map_err(|e| unavailable(&e))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Published {
            msg_id,
            duplicate: ack.duplicate,
        }),
    ))
}
