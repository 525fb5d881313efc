//! `GET /metrics`: the master's state in Prometheus text format, and the
//! middleware that measures every request.
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
//! and `master_info{master="..."}` naming the master that answered (every
//! response also carries `X-Ptp-Master`).
//!
//! Shape: counters are read from where they already live (ingest's health,
//! the actors' faults); only the request histograms are kept here.
//! Guarantees: bounded memory (one histogram per matched route, method and
//! status: unknown paths share the label `unmatched`); scraping never
//! blocks ingest (the consumer lag query waits at most a second and is
//! left out when NATS does not answer).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ptp_ingest::metrics::{Histogram, SECONDS};

use crate::extract::{NoQuery, Query};
use crate::state::AppState;

/// Request histograms by (route, method, status).
type RouteHistograms = BTreeMap<(String, &'static str, u16), Arc<Histogram>>;

/// Request histograms and cache counters of one master.
#[derive(Debug)]
pub struct Metrics {
    /// This master's name (label and `X-Ptp-Master`).
    pub master: String,
    header: Option<HeaderValue>,
    http: Mutex<RouteHistograms>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_shared: AtomicU64,
}

impl Metrics {
    /// Empty metrics of the master named `master`.
    pub fn new(master: String) -> Metrics {
        Metrics {
            header: HeaderValue::from_str(&master).ok(),
            master,
            http: Mutex::new(BTreeMap::new()),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            cache_shared: AtomicU64::new(0),
        }
    }

    fn histogram(&self, route: String, method: &'static str, status: u16) -> Arc<Histogram> {
        let mut http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        http.entry((route, method, status))
            .or_insert_with(|| Arc::new(Histogram::new(SECONDS)))
            .clone()
    }
}

/// The method as a label from a fixed list (bounded cardinality).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Measures the request, counts read-cache hits and misses (the cache's
/// `X-Cache` header), and names this master in `X-Ptp-Master`.
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let mut res = next.run(req).await;
    m.histogram(route, method, res.status().as_u16())
        .observe(started.elapsed().as_secs_f64());
    match res.headers().get("x-cache").map(HeaderValue::as_bytes) {
        Some(b"hit") => m.cache_hits.fetch_add(1, Ordering::Relaxed),
        Some(b"miss") => m.cache_misses.fetch_add(1, Ordering::Relaxed),
        Some(b"shared") => m.cache_shared.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    if let Some(v) = &m.header {
        res.headers_mut().insert("x-ptp-master", v.clone());
    }
    res
}

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
