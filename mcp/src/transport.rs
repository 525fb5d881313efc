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
//! name it controls.

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
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

/// The axum router serving MCP at `/mcp`. `allowed_hosts` lists the `Host`
/// values accepted (`None`: any host).
pub fn http_router(
    server: PtpMcp,
    allowed_hosts: Option<Vec<String>>,
    shutdown: CancellationToken,
) -> axum::Router {
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
    axum::Router::new().nest_service("/mcp", service)
}

/// Serves MCP over streamable HTTP at `http://<listener>/mcp` until
/// `shutdown` is cancelled.
pub async fn serve_http(
    server: PtpMcp,
    listener: TcpListener,
    allowed_hosts: Option<Vec<String>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(%addr, "ptp-mcp serving streamable HTTP at http://{addr}/mcp");
    let app = http_router(server, allowed_hosts, shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("the MCP HTTP server failed")
}
