//! `GET /metrics`: the master's state in Prometheus text format.
//!
//! What is exposed (all prefixed `ptp_`): ingest lag (`consumer_pending`,
//! messages in the stream not yet delivered to any master, and
//! `consumer_ack_pending`), `ingest_batch_messages` and
//! `ingest_commit_seconds` histograms, `http_request_duration_seconds` per
//! route, method and status, `read_cache_hits_total` / `_misses_total` / `_shared_total`,
//! `runs_stored_total`, `messages_acked_total`, `rejected_total`,
//! `dead_letters_total`, `heartbeats_refused_total`, `actor_panics_total`,
//! `webhook_deliveries_total{result="delivered|failed|dead"}` and the
//! `webhook_pending` / `webhook_dead` gauges (when webhooks are configured),
//! `lease_held{job="maintenance|webhooks"}` (1 while this master holds the
//! lease) and `other_masters` (other masters seen on the stream),
//! and `master_info{master="..."}` naming the master that answered (every
//! response also carries `X-Ptp-Master`).
//!
//! Shape: a route like the others, reading [`AppState`]; counters are read
//! from where they already live (ingest's health, the actors' faults, the
//! request histograms of [`crate::metrics`]).
//! Guarantees: scraping never blocks ingest (the consumer lag query waits
//! at most a second and is left out when NATS does not answer); label
//! values are escaped as the text format requires.

use std::fmt::Write;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::extract::{NoQuery, Query};
use crate::state::AppState;

fn line(out: &mut String, help: &str, kind: &str, name: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Label value escaped as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The master's metrics in Prometheus text format (open like `/health`).
#[utoipa::path(get, path = "/metrics", params(NoQuery), responses(
    (status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain")))]
pub async fn metrics(State(st): State<AppState>, Query(_): Query<NoQuery>) -> impl IntoResponse {
    let m = &st.metrics;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ptp_master_info The master that answered.\n# TYPE ptp_master_info gauge\nptp_master_info{{master=\"{}\",version=\"{}\"}} 1",
        escape(&m.master),
        env!("CARGO_PKG_VERSION")
    );
    let h = st.ingest.snapshot();
    line(
        &mut out,
        "Runs stored (completed) since start.",
        "counter",
        "ptp_runs_stored_total",
        h.runs_completed,
    );
    line(
        &mut out,
        "Stream messages stored and acked since start.",
        "counter",
        "ptp_messages_acked_total",
        h.acked,
    );
    line(
        &mut out,
        "Messages refused and recorded in /rejected since start.",
        "counter",
        "ptp_rejected_total",
        h.rejected,
    );
    line(
        &mut out,
        "Messages kept as dead letters since start.",
        "counter",
        "ptp_dead_letters_total",
        h.dead_letters,
    );
    line(
        &mut out,
        "Heartbeats refused since start.",
        "counter",
        "ptp_heartbeats_refused_total",
        h.heartbeats_refused,
    );
    line(
        &mut out,
        "Answers served from the read cache.",
        "counter",
        "ptp_read_cache_hits_total",
        m.cache_hits.load(Ordering::Relaxed),
    );
    line(
        &mut out,
        "Cacheable answers computed because the cache had none.",
        "counter",
        "ptp_read_cache_misses_total",
        m.cache_misses.load(Ordering::Relaxed),
    );
    line(
        &mut out,
        "Answers shared with an identical request computing at the same time (single-flight).",
        "counter",
        "ptp_read_cache_shared_total",
        m.cache_shared.load(Ordering::Relaxed),
    );
    let connected = st.nats.connection_state() == async_nats::connection::State::Connected;
    line(
        &mut out,
        "Whether the master is connected to NATS.",
        "gauge",
        "ptp_nats_connected",
        u8::from(connected),
    );
    if connected {
        // One consumer-info request (the consumer comes back with its info).
        let lag = async {
            let consumer: async_nats::jetstream::consumer::PullConsumer = st
                .js
                .get_consumer_from_stream(ptp_nats::CONSUMER, ptp_nats::STREAM)
                .await
                .ok()?;
            let info = consumer.cached_info();
            Some((info.num_pending, info.num_ack_pending))
        };
        if let Ok(Some((pending, ack_pending))) =
            tokio::time::timeout(Duration::from_secs(1), lag).await
        {
            line(
                &mut out,
                "Stream messages not yet delivered to a master (ingest lag).",
                "gauge",
                "ptp_consumer_pending",
                pending,
            );
            line(
                &mut out,
                "Messages delivered to a master and not yet acked.",
                "gauge",
                "ptp_consumer_ack_pending",
                ack_pending,
            );
        }
    }
    if !st.webhooks.targets.is_empty() {
        let c = &st.webhooks.counters;
        let _ = writeln!(
            out,
            "# HELP ptp_webhook_deliveries_total Webhook delivery attempts since start: delivered (2xx), failed (retried), dead (given up).\n# TYPE ptp_webhook_deliveries_total counter"
        );
        for (result, n) in [
            ("delivered", &c.delivered),
            ("failed", &c.failed),
            ("dead", &c.dead),
        ] {
            let _ = writeln!(
                out,
                "ptp_webhook_deliveries_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        if let Ok(b) = st.webhooks.backlog(&st.read).await {
            line(
                &mut out,
                "Webhook deliveries waiting (new or being retried).",
                "gauge",
                "ptp_webhook_pending",
                b.pending,
            );
            line(
                &mut out,
                "Webhook deliveries given up on or dropped, kept a week.",
                "gauge",
                "ptp_webhook_dead",
                b.dead,
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ptp_lease_held Whether this master holds the lease of a job (only the holder does it).\n# TYPE ptp_lease_held gauge"
    );
    for (job, held) in st.masters.leases() {
        let _ = writeln!(out, "ptp_lease_held{{job=\"{job}\"}} {}", u8::from(held));
    }
    line(
        &mut out,
        "Other masters seen consuming the same stream at the last registry beat.",
        "gauge",
        "ptp_other_masters",
        st.masters.others().len(),
    );
    line(
        &mut out,
        "Masters sharing the stream and this master's PostgreSQL database at the last registry beat.",
        "gauge",
        "ptp_peer_masters",
        st.masters.peers().len(),
    );
    let _ = writeln!(
        out,
        "# HELP ptp_actor_panics_total Actor handler panics caught and recovered from.\n# TYPE ptp_actor_panics_total counter"
    );
    let faults = st.faults.snapshot();
    for actor in ["writer", "aggregates"] {
        let n = faults.get(actor).map_or(0, |f| f.panics);
        let _ = writeln!(out, "ptp_actor_panics_total{{actor=\"{actor}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP ptp_ingest_batch_messages Messages per stored batch.\n# TYPE ptp_ingest_batch_messages histogram"
    );
    st.ingest
        .batch_messages
        .render("ptp_ingest_batch_messages", "", &mut out);
    let _ = writeln!(
        out,
        "# HELP ptp_ingest_commit_seconds Time from handing a batch to the writer to its commit.\n# TYPE ptp_ingest_commit_seconds histogram"
    );
    st.ingest
        .commit_seconds
        .render("ptp_ingest_commit_seconds", "", &mut out);
    let _ = writeln!(
        out,
        "# HELP ptp_http_request_duration_seconds HTTP requests by route, method and status.\n# TYPE ptp_http_request_duration_seconds histogram"
    );
    let http: Vec<_> = m
        .http
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for ((route, method, status), hist) in http {
        let labels = format!(
            "route=\"{}\",method=\"{method}\",status=\"{status}\"",
            escape(&route)
        );
        hist.render("ptp_http_request_duration_seconds", &labels, &mut out);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
