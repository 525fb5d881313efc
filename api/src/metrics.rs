//! The request histograms and read-cache counters of one master, and the
//! middleware that measures every request; `GET /metrics` shows them
//! (`routes::metrics`).
//!
//! Shape: only what is measured here is kept here; the other counters live
//! where they are counted (ingest's health, the actors' faults) and the
//! route reads them there. This module knows no handler state.
//! Guarantees: bounded memory (one histogram per matched route, method and
//! status: unknown paths share the label `unmatched`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use ptp_ingest::metrics::{Histogram, SECONDS};

/// Request histograms by (route, method, status).
pub(crate) type RouteHistograms = BTreeMap<(String, &'static str, u16), Arc<Histogram>>;

/// Request histograms and cache counters of one master.
#[derive(Debug)]
pub struct Metrics {
    /// This master's name (label and `X-Ptp-Master`).
    pub master: String,
    header: Option<HeaderValue>,
    /// The request histograms (rendered by `routes::metrics`).
    pub(crate) http: Mutex<RouteHistograms>,
    /// Answers served from the read cache (`X-Cache: hit`).
    pub(crate) cache_hits: AtomicU64,
    /// Cacheable answers computed (`X-Cache: miss`).
    pub(crate) cache_misses: AtomicU64,
    /// Answers shared with an identical request (`X-Cache: shared`).
    pub(crate) cache_shared: AtomicU64,
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
