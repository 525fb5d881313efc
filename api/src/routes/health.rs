//! `/health` (NATS, SQLite, ingest, webhook delivery and the masters'
//! registry and leases) and `/rejected` (messages the master refused, with
//! the reason).
//!
//! The registry degrades `/health` until it has checked that no other
//! master consumes the stream (ingest waits for that), when it cannot write
//! this master's entry, and when another master appears on the stream
//! (`crate::cluster`). Not holding a lease is normal (another master may).
//!
//! Webhooks degrade `/health` only when a delivery is dead (given up on or
//! dropped, kept a week) or the oldest waiting one is older than
//! [`WEBHOOK_BACKLOG_DEGRADED_AFTER_SECS`]: a receiver that is down for a
//! few minutes is normal and retried, not a fault of the master.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use ptp_actors::read::queries;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::cluster::Admission;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{NoQuery, Query};
use crate::routes::bounded;
use crate::state::AppState;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/rejected", get(rejected))
}

/// Health of the master and what it depends on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when something below is wrong.
    pub status: &'static str,
    /// `connected`, `disconnected` or `pending`.
    pub nats: String,
    /// `ok`, or the error.
    pub database: String,
    /// Why ingest is not pulling, when it is not.
    pub consumer_error: Option<String>,
    /// Why the last SQLite write failed, until one succeeds.
    pub store_error: Option<String>,
    /// Why the agents' quarantine bucket is behind SQLite (NATS away): the
    /// changes are stored and retried every few seconds while connected.
    pub quarantine_mirror_error: Option<String>,
    /// Messages acked since start.
    pub acked: u64,
    /// Runs completed since start.
    pub runs_completed: u64,
    /// Messages rejected since start.
    pub rejected: u64,
    /// Heartbeats refused since start (malformed, oversized, impossible
    /// times); they are not stored.
    pub heartbeats_refused: u64,
    /// Why the last heartbeat was refused.
    pub last_heartbeat_refusal: Option<String>,
    /// Each actor: `up`, or `down` when its mailbox is closed (the master
    /// then answers 503 here and must be restarted), with the handler
    /// panics it caught and recovered from since start.
    pub actors: BTreeMap<&'static str, ActorHealth>,
    /// Webhook delivery; absent when no target is configured.
    pub webhooks: Option<WebhookHealth>,
    /// The masters' registry and this master's leases.
    pub masters: MastersHealth,
}

/// The masters' registry (bucket `ptp_masters`) as this master sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MastersHealth {
    /// `checking` (ingest waits until no other master is found on the
    /// stream; NATS away), `ok`, or `refused` (this master is stopping).
    pub registry: &'static str,
    /// Other masters consuming the same stream on another database, seen
    /// at the last beat: the runs are being split between databases until
    /// one is stopped.
    pub other_masters: Vec<String>,
    /// Masters sharing the stream and this master's PostgreSQL database,
    /// seen at the last beat: they share the work, as meant.
    pub peers: Vec<String>,
    /// Why the registry could not be read or written last time (degraded
    /// only once it has failed for a whole TTL: this master's entry has
    /// then expired).
    pub error: Option<String>,
    /// Whether this master's entry has expired for failed writes.
    pub entry_lost: bool,
    /// Each lease (`maintenance`, `webhooks`) and whether this master holds
    /// it: the work behind a lease runs only on its holder.
    pub leases: BTreeMap<&'static str, bool>,
}

impl MastersHealth {
    fn of(st: &AppState) -> MastersHealth {
        let m = &st.masters;
        MastersHealth {
            registry: match m.admission() {
                Admission::Checking => "checking",
                Admission::Admitted => "ok",
                Admission::Refused(_) => "refused",
            },
            other_masters: m.others(),
            peers: m.peers(),
            error: m.error(),
            entry_lost: m.entry_lost(),
            leases: m.leases(),
        }
    }

    fn ok(&self) -> bool {
        self.registry == "ok" && self.other_masters.is_empty() && !self.entry_lost
    }
}

/// The webhook outbox of the configured targets.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookHealth {
    /// Configured targets.
    pub targets: usize,
    /// Deliveries waiting (new or being retried).
    pub pending: u64,
    /// Deliveries given up on or dropped over the bound, kept a week.
    pub dead: u64,
    /// Age in seconds of the oldest waiting delivery.
    pub oldest_pending_secs: Option<i64>,
    /// Why the outbox could not be read, if it could not.
    pub error: Option<String>,
}

/// A waiting delivery older than this degrades `/health`.
pub const WEBHOOK_BACKLOG_DEGRADED_AFTER_SECS: i64 = 3600;

impl WebhookHealth {
    fn ok(&self) -> bool {
        self.error.is_none()
            && self.dead == 0
            && self
                .oldest_pending_secs
                .is_none_or(|s| s < WEBHOOK_BACKLOG_DEGRADED_AFTER_SECS)
    }
}

async fn webhook_health(st: &AppState) -> Option<WebhookHealth> {
    if st.webhooks.targets.is_empty() {
        return None;
    }
    let mut h = WebhookHealth {
        targets: st.webhooks.targets.len(),
        pending: 0,
        dead: 0,
        oldest_pending_secs: None,
        error: None,
    };
    match st.webhooks.backlog(&st.read).await {
        Ok(b) => {
            h.pending = b.pending;
            h.dead = b.dead;
            h.oldest_pending_secs = b
                .oldest_pending
                .map(|t| Utc::now().signed_duration_since(t).num_seconds().max(0));
        }
        Err(e) => h.error = Some(e.to_string()),
    }
    Some(h)
}

/// One actor's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorHealth {
    /// `up` or `down`.
    pub state: &'static str,
    /// Handler panics caught since start (each logged with its message).
    pub panics: u64,
    /// The last one's message.
    pub last_panic: Option<String>,
}

/// Liveness and readiness: 200 when NATS, SQLite, ingest and the actors
/// are fine, 503 with the reasons otherwise.
#[utoipa::path(get, path = "/health", params(NoQuery), responses(
    (status = 200, description = "Healthy", body = Health),
    (status = 503, description = "Degraded, with reasons", body = Health)))]
pub async fn health(
    State(st): State<AppState>,
    Query(_): Query<NoQuery>,
) -> (StatusCode, axum::Json<Health>) {
    let nats = match st.nats.connection_state() {
        async_nats::connection::State::Connected => "connected",
        async_nats::connection::State::Disconnected => "disconnected",
        async_nats::connection::State::Pending => "pending",
    }
    .to_string();
    let database = match queries::ping(&st.read).await {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let h = st.ingest.snapshot();
    let quarantine_mirror_error = st.quarantine.error();
    let faults = st.faults.snapshot();
    let actors: BTreeMap<&'static str, ActorHealth> = [
        ("writer", st.writer.connected()),
        ("aggregates", st.aggregates.connected()),
    ]
    .into_iter()
    .map(|(name, up)| {
        let f = faults.get(name).cloned().unwrap_or_default();
        let state = if up { "up" } else { "down" };
        (
            name,
            ActorHealth {
                state,
                panics: f.panics,
                last_panic: f.last,
            },
        )
    })
    .collect();
    let webhooks = webhook_health(&st).await;
    let masters = MastersHealth::of(&st);
    let ok = nats == "connected"
        && masters.ok()
        && webhooks.as_ref().is_none_or(WebhookHealth::ok)
        && database == "ok"
        && h.consumer_error.is_none()
        && h.store_error.is_none()
        && quarantine_mirror_error.is_none()
        && actors.values().all(|a| a.state == "up");
    let body = Health {
        status: if ok { "ok" } else { "degraded" },
        nats,
        database,
        consumer_error: h.consumer_error,
        store_error: h.store_error,
        quarantine_mirror_error,
        acked: h.acked,
        runs_completed: h.runs_completed,
        rejected: h.rejected,
        heartbeats_refused: h.heartbeats_refused,
        last_heartbeat_refusal: h.last_heartbeat_refusal,
        actors,
        webhooks,
        masters,
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

/// Query of `GET /rejected`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RejectedQuery {
    /// Most rows, 1..=500 (default 50).
    pub limit: Option<u32>,
}

/// A refused message.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedView {
    /// When.
    #[serde(serialize_with = "ptp_actors::format::time")]
    pub received_at: DateTime<Utc>,
    /// Subject.
    pub subject: Option<String>,
    /// Message id.
    pub msg_id: Option<String>,
    /// Run id, if readable.
    pub run_id: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// Its first bytes.
    pub excerpt: Option<String>,
    /// A dead letter: the message was valid but the database refused it on
    /// every delivery while accepting others. Its whole payload is kept in
    /// the `rejected` table (column `payload`) for replay.
    pub dead_letter: bool,
}

/// Messages the master refused (not JSON, unknown schema version, counts
/// that contradict the cases...), newest first. They were acked so the
/// stream kept flowing; fix the sender and publish again.
#[utoipa::path(get, path = "/rejected", params(RejectedQuery), responses(
    (status = 200, description = "Rejections, newest first", body = Vec<RejectedView>),
    (status = 400, description = "Bad parameter", body = ErrorBody)))]
pub async fn rejected(
    State(st): State<AppState>,
    Query(q): Query<RejectedQuery>,
) -> Result<axum::Json<Vec<RejectedView>>, ApiError> {
    let limit = bounded("limit", q.limit, 50, 1, 500)?;
    let rows = queries::list_rejected(&st.read, limit).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|r| RejectedView {
                received_at: r.received_at,
                subject: r.subject,
                msg_id: r.msg_id,
                run_id: r.run_id,
                reason: r.reason,
                dead_letter: r.payload.is_some(),
                excerpt: r.excerpt,
            })
            .collect(),
    ))
}
