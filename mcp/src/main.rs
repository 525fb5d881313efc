//! `ptp-mcp`: parse settings, then serve MCP over stdio (default) or
//! streamable HTTP (`--http ADDR`) until the client leaves or SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use ptp_mcp::{Config, PtpMcp};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // stderr only: in stdio mode stdout carries the protocol.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rmcp=warn".into()),
        )
        .init();
    let config = Config::parse();
    let server = PtpMcp::from_config(&config)?;
    let Some(addr) = &config.http else {
        return ptp_mcp::serve_stdio(server).await;
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (set --http / PTP_MCP_HTTP)"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(ptp_shutdown::cancel_on_signal(shutdown.clone()));
    ptp_mcp::serve_http(
        server,
        listener,
        ptp_mcp::HttpAccess::new(config.allowed_hosts(), &config.http_tokens),
        shutdown,
    )
    .await
}
