//! Masters sharing one PostgreSQL database tell each other what they
//! wrote, so a cache of reads on one master hears of a write made by
//! another.
//!
//! Shape: every bump of this master's data versions (a committed write:
//! which projects, whether runs were pruned; or a write of unknown effect)
//! is published on [`SUBJECT`] with this master's id; every message from
//! another master on that subject is applied to this master's versions,
//! which sends nothing on, so bumps never echo. Core NATS, no JetStream: a
//! bump is worth something only now.
//!
//! Guarantees and limits: a peer's write invalidates this master's cached
//! answers as soon as its bump arrives (milliseconds on a healthy broker).
//! A bump can be lost (NATS away, a slow subscriber dropped); the cache's
//! maximum age (`ReadCache::with_max_age`, set for a shared database)
//! bounds how long an answer may then lag the database. When this master
//! falls more than `BUMPS_BUFFERED` bumps behind its own writes it
//! publishes one "unknown" bump instead, which invalidates everything on
//! its peers.

use ptp_actors::DataVersion;
use ptp_actors::version::Bump;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Where masters publish their bumps.
pub const SUBJECT: &str = "ptp.masters.changed";

/// The longest a master sharing a database serves a cached answer: every
/// master answers as the database does within this long of a write.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// One message on [`SUBJECT`].
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The id of the master that wrote (its registry id).
    from: String,
    /// What changed.
    #[serde(flatten)]
    bump: Bump,
}

/// Publishes this master's bumps and applies its peers' until `stop`.
pub async fn run(
    nats: async_nats::Client,
    version: DataVersion,
    me: String,
    stop: CancellationToken,
) {
    let mut local = version.subscribe();
    let mut remote = loop {
        match nats.subscribe(SUBJECT).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!("cannot subscribe to {SUBJECT}: {e}; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            bump = local.recv() => {
                let bump = match bump {
                    Ok(b) => b,
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "behind on this master's own bumps: peers invalidate everything");
                        Bump::Unknown
                    }
                    Err(RecvError::Closed) => break,
                };
                let msg = Message { from: me.clone(), bump };
                match serde_json::to_vec(&msg) {
                    Ok(body) => {
                        if let Err(e) = nats.publish(SUBJECT, body.into()).await {
                            tracing::warn!("cannot tell the other masters of a write: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("cannot encode a bump: {e}"),
                }
            }
            msg = futures::StreamExt::next(&mut remote) => {
                let Some(msg) = msg else { break };
                match serde_json::from_slice::<Message>(&msg.payload) {
                    Ok(m) if m.from == me => {}
                    Ok(m) => version.apply(&m.bump),
                    // Not ours to trust: anything unreadable makes every
                    // cached answer stale, the safe side.
                    Err(e) => {
                        tracing::warn!("unreadable message on {SUBJECT}: {e}");
                        version.apply(&Bump::Unknown);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_the_bump_and_its_origin() {
        let m = Message {
            from: "abc".into(),
            bump: Bump::Changed {
                projects: ["p".to_string()].into(),
                pruned: false,
            },
        };
        let json = serde_json::to_string(&m).expect("encodes");
        assert_eq!(
            json,
            r#"{"from":"abc","bump":"changed","projects":["p"],"pruned":false}"#
        );
        let back: Message = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back.bump, m.bump);
        let unknown: Message =
            serde_json::from_str(r#"{"from":"x","bump":"unknown"}"#).expect("decodes");
        assert_eq!(unknown.bump, Bump::Unknown);
    }
}
