//! Serving [`PtpMcp`] over MCP's two transports: stdio (the default, what
//! editors spawn) and streamable HTTP at `/mcp` (one server for a team).
//!
//! [`serve_http`] takes a bound listener and a cancellation token, like the
//! master's `run`, so tests serve on port 0 with exactly the production
//! wiring. Cancelling the token stops accepting connections, ends the MCP
//! sessions and lets in-flight requests finish.
//!
//! The HTTP transport checks the `Host` header against an allow-list
//! (loopback by default, as rmcp does) against DNS rebinding: a web page in
//! the user's browser must not be able to reach a local server through a
//! name it controls. With `--http-tokens`, every request to `/mcp` must
//! also carry one of the bearer tokens (compared in constant time, never
//! logged); otherwise 401.

use anyhow::Context;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tools::PtpMcp;

/// Serves one MCP session on stdin/stdout until the client closes it.
/// Logs must go to stderr: stdout carries the protocol.
pub async fn serve_stdio(server: PtpMcp) -> anyhow::Result<()> {
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP initialisation over stdio failed")?;
    running
        .waiting()
        .await
        .context("the stdio MCP session ended with an error")?;
    Ok(())
}

/// Who may use the HTTP transport.
#[derive(Clone, Default)]
pub struct HttpAccess {
    /// `Host` values accepted (`None`: any host).
    pub allowed_hosts: Option<Vec<String>>,
    /// Bearer tokens, as SHA-256 digests (empty: no token needed).
    tokens: Vec<[u8; 32]>,
}

impl HttpAccess {
    /// Access for these hosts and tokens (blank tokens are ignored).
    pub fn new(allowed_hosts: Option<Vec<String>>, tokens: &[String]) -> HttpAccess {
        HttpAccess {
            allowed_hosts,
            tokens: tokens
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        }
    }

    fn admits(&self, req: &Request) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let Some(token) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
        else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every token, whatever matched before.
        self.tokens
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&presented))
            .into()
    }
}

async fn require_token(access: HttpAccess, req: Request, next: Next) -> Response {
    if access.admits(&req) {
        return next.run(req).await;
    }
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "this MCP server needs a bearer token: send `Authorization: Bearer <token>` \
         with one of the server's PTP_MCP_HTTP_TOKENS\n",
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"ptp-mcp\""),
    );
    r
}

/// The axum router serving MCP at `/mcp`, checking `Host` and, when
/// configured, the bearer token.
pub fn http_router(
    server: PtpMcp,
    access: HttpAccess,
    shutdown: CancellationToken,
) -> axum::Router {
    let allowed_hosts = access.allowed_hosts.clone();
    let mut config =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    config = match allowed_hosts {
        Some(hosts) => config.with_allowed_hosts(hosts),
        None => config.disable_allowed_hosts(),
    };
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| require_token(access.clone(), req, next),
        ))
}

/// Serves MCP over streamable HTTP at `http://<listener>/mcp` until
/// `shutdown` is cancelled.
pub async fn serve_http(
    server: PtpMcp,
    listener: TcpListener,
    access: HttpAccess,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(%addr, "ptp-mcp serving streamable HTTP at http://{addr}/mcp");
    if access.tokens.is_empty() {
        tracing::warn!("no PTP_MCP_HTTP_TOKENS: anyone who reaches {addr} can use the tools");
    }
    let app = http_router(server, access, shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("the MCP HTTP server failed")
}
