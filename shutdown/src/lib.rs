//! The one shutdown signal of the servers (`ptp-master`, `ptp-mcp`):
//! SIGINT or SIGTERM cancels a [`CancellationToken`], and the server's own
//! graceful shutdown follows from the token.
//!
//! Why a crate of its own: both binaries need exactly this, and they share
//! no other crate (`ptp-mcp` talks to the master over HTTP only and must not
//! depend on `ptp-api`; the broker contract `ptp-nats` is no place for
//! process signals). It depends on tokio alone.
//!
//! Guarantees: the token is cancelled once, on the first SIGINT or SIGTERM;
//! when SIGTERM cannot be watched (no signal driver) SIGINT still works.

use tokio_util::sync::CancellationToken;

/// Waits for SIGINT or SIGTERM, logs it and cancels `token`. Spawn it:
/// `tokio::spawn(ptp_shutdown::cancel_on_signal(token.clone()))`.
pub async fn cancel_on_signal(token: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested: finishing in-flight work");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let token = CancellationToken::new();
        let task = tokio::spawn(cancel_on_signal(token.clone()));
        // The handler is installed when the task first runs; send until the
        // token is cancelled (a SIGTERM before installation would end the
        // test process, so install a handler of our own first: signals are
        // then delivered to every registered listener, never the default).
        let mut own = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal driver");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !token.is_cancelled() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "token never cancelled"
            );
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).expect("raise");
            own.recv().await;
            tokio::task::yield_now().await;
            let _ = tokio::time::timeout(Duration::from_millis(50), token.cancelled()).await;
        }
        task.await.expect("signal task ends once it cancelled");
    }
}
