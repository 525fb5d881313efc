//! The writer's messages about webhook deliveries (see [`crate::webhooks`]).

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::Writer;
use crate::store::{Store, StoreError};
use crate::version::Changed;
use crate::webhooks::Attempt;

/// Records an attempt at delivering event `event_seq` to `target`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RecordAttempt {
    /// Target key.
    pub target: String,
    /// The event.
    pub event_seq: i64,
    /// How it ended.
    pub outcome: Attempt,
    /// When.
    pub at: DateTime<Utc>,
}

/// Deletes delivered rows done before `delivered_before`, dead rows done
/// before `dead_before`, every row of a target not in `targets` (no longer
/// configured), and events left without deliveries. Replies with the
/// deliveries deleted.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct PruneOutbox {
    /// Delivered rows older than this go.
    pub delivered_before: DateTime<Utc>,
    /// Dead rows older than this go.
    pub dead_before: DateTime<Utc>,
    /// The configured targets.
    pub targets: Vec<String>,
}

impl<S: Store> Handler<RecordAttempt> for Writer<S> {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    fn handle(&mut self, msg: RecordAttempt, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            store
                .record_attempt(&msg.target, msg.event_seq, &msg.outcome, msg.at)
                .await?;
            Ok(((), Changed::default()))
        })))
    }
}

impl<S: Store> Handler<PruneOutbox> for Writer<S> {
    type Result = AtomicResponse<Self, Result<u64, StoreError>>;

    fn handle(&mut self, msg: PruneOutbox, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            let gone = store
                .prune_outbox(msg.delivered_before, msg.dead_before, &msg.targets)
                .await?;
            Ok((gone, Changed::default()))
        })))
    }
}
