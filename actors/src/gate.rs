//! A permission to act that the master can give and take back: periodic
//! work that only one master of several may do at a time (maintenance
//! here, webhook delivery in the API crate) runs only while its [`Gate`] is
//! open.
//!
//! Why this shape: who opens the gate (a lease in a NATS key-value bucket,
//! held by the API crate's `cluster` module) is none of this crate's
//! business, so the gate is a plain `tokio::sync::watch` receiver of a
//! `bool` and this crate stays free of NATS.
//!
//! Guarantees: [`Gate::opened`] returns once the gate is open (at once if
//! it is); [`Gate::closed`] once it is closed. When the sender is gone the
//! gate keeps its last state for good: an open gate stays open (see
//! [`Gate::always_open`]), a closed one never opens (those futures then
//! never complete, so a caller selects them against its shutdown).

use tokio::sync::watch;

/// A permission to act, given and taken back through a watch channel.
#[derive(Debug, Clone)]
pub struct Gate(watch::Receiver<bool>);

impl Gate {
    /// A gate that follows `rx` (`true`: open).
    pub fn new(rx: watch::Receiver<bool>) -> Gate {
        Gate(rx)
    }

    /// A gate that is open for good (a single master, tests).
    pub fn always_open() -> Gate {
        let (_, rx) = watch::channel(true);
        Gate(rx)
    }

    /// Whether the gate is open now.
    pub fn is_open(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the gate is open.
    pub async fn opened(&mut self) {
        if self.0.wait_for(|open| *open).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Completes once the gate is closed.
    pub async fn closed(&mut self) {
        if self.0.wait_for(|open| !*open).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn follows_its_sender_and_keeps_the_last_state_when_it_is_gone() {
        let (tx, rx) = watch::channel(false);
        let mut gate = Gate::new(rx);
        assert!(!gate.is_open());
        let mut waiting = gate.clone();
        let opened = tokio::spawn(async move { waiting.opened().await });
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), opened)
            .await
            .expect("opened completes")
            .expect("joined");
        assert!(gate.is_open());
        tx.send_replace(false);
        tokio::time::timeout(Duration::from_secs(5), gate.closed())
            .await
            .expect("closed completes");
        drop(tx);
        let never = tokio::time::timeout(Duration::from_millis(50), gate.opened()).await;
        assert!(never.is_err(), "a closed gate without sender never opens");

        let mut open = Gate::always_open();
        assert!(open.is_open());
        tokio::time::timeout(Duration::from_secs(5), open.opened())
            .await
            .expect("open at once");
        let never = tokio::time::timeout(Duration::from_millis(50), open.closed()).await;
        assert!(never.is_err(), "an open gate without sender never closes");
    }
}
