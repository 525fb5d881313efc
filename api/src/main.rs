//! `ptp-master`: parse settings, bind, run until SIGINT/SIGTERM.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let config = ptp_api::Config::from_args();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (set --listen / PTP_LISTEN)",
                config.listen
            )
        })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(ptp_shutdown::cancel_on_signal(shutdown.clone()));
    ptp_api::run(config, listener, shutdown).await
}
