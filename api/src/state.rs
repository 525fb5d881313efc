//! What every handler can reach: the one [`AppState`] the composition root
//! ([`crate::run`]) builds and the router clones into each request.
//!
//! Handlers take it with `State(st): State<AppState>` and use only what
//! they need; nothing in it is created per request.

use std::sync::Arc;

use ptp_actors::Aggregates;
use ptp_actors::read::ReadPool;
use ptp_ingest::IngestHealth;

use crate::{cache, cluster, limits, metrics, mirror, webhooks};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Read pool (reads that are not aggregates).
    pub read: ReadPool,
    /// The aggregates actor.
    pub aggregates: actix::Addr<Aggregates>,
    /// The writer actor, for the few writes the API makes itself (marking a
    /// flaky test fixed); results arrive through NATS and ingest.
    pub writer: actix::Addr<ptp_actors::Writer>,
    /// NATS connection (health, publishing).
    pub nats: async_nats::Client,
    /// JetStream context for `POST /results`.
    pub js: async_nats::jetstream::Context,
    /// Ingest's state, for `/health`.
    pub ingest: Arc<IngestHealth>,
    /// The NATS URL, for error messages.
    pub nats_url: String,
    /// Answers read from SQLite, until the next write.
    pub cache: Arc<cache::ReadCache>,
    /// Handler panics the actors caught, for `/health`.
    pub faults: ptp_actors::supervise::Faults,
    /// The cap on concurrent large reads (`GET /results/{id}` with many cases).
    pub large_reads: Arc<limits::LargeReads>,
    /// Request histograms and this master's name (`/metrics`).
    pub metrics: Arc<metrics::Metrics>,
    /// The quarantine list's copy in the agents' bucket: pending projects.
    pub quarantine: Arc<mirror::QuarantineMirror>,
    /// Webhook targets and delivery counters (`/health`, `/metrics`).
    pub webhooks: Arc<webhooks::Status>,
    /// The masters' registry and this master's leases (`/health`, `/metrics`).
    pub masters: Arc<cluster::Status>,
}
