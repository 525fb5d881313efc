//! A cache of answers read from SQLite, valid until the next write.
//!
//! Why: stored results change only when the writer writes, and most reads
//! repeat (a dashboard polling the newest runs, an editor asking for a
//! report and then for its flaky tests, many people opening the same failed
//! run). Answering a repeat from memory costs a hash lookup instead of a
//! query, its JSON and a thread hand-off per query; a page of 100 failed
//! cases with tracebacks is ~80 KiB of JSON built per request otherwise.
//!
//! Shape: an axum middleware on the routes answered from SQLite (`/results`,
//! `/results/{id}`, `/compare`, the analytics of `/flaky`, `/failures/
//! clusters`, `/tests/...`). Routes answered by the aggregates actor are not
//! cached: heartbeats change them without a write. Keys are the request's
//! path and query as sent; only `GET` answers `200` with a known size of at
//! most an eighth of the capacity are kept.
//!
//! Guarantees: never stale. Every answer is tagged with the writer's
//! [`DataVersion`] read *before* the handler ran, and is served only while
//! the version is unchanged; a write finishing at any point during or after
//! the read bumps it, and the whole cache is dropped at the next request.
//! Memory is bounded by the capacity (when full, everything is dropped and
//! filling starts over). Capacity 0 turns it off. Answers carry
//! `X-Cache: hit` or `miss`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use ptp_actors::DataVersion;

/// The cache. Share it as `Arc<ReadCache>`.
#[derive(Debug)]
pub struct ReadCache {
    version: DataVersion,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    version: u64,
    bytes: usize,
    entries: HashMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    headers: HeaderMap,
    body: Bytes,
}

impl Entry {
    /// Bytes it holds under `key` (headers estimated).
    fn size(&self, key: &str) -> usize {
        key.len() + self.body.len() + 64 * self.headers.len()
    }
}

impl ReadCache {
    /// A cache of at most `capacity` bytes of answers, invalidated by
    /// `version`.
    pub fn new(version: DataVersion, capacity: usize) -> ReadCache {
        ReadCache {
            version,
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lookup(&self, key: &str, version: u64) -> Option<Entry> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.version != version {
            inner.entries.clear();
            inner.bytes = 0;
            inner.version = version;
            return None;
        }
        inner.entries.get(key).cloned()
    }

    fn store(&self, key: String, version: u64, entry: Entry) {
        let size = entry.size(&key);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        // Read before the handler ran; a write since makes it unfit.
        if inner.version != version || self.version.get() != version {
            return;
        }
        if inner.bytes + size > self.capacity {
            inner.entries.clear();
            inner.bytes = 0;
        }
        inner.bytes += size;
        if let Some(old) = inner.entries.insert(key.clone(), entry) {
            inner.bytes -= old.size(&key);
        }
    }
}

const X_CACHE: &str = "x-cache";

/// The middleware: answer a repeated `GET` from the cache, else run the
/// handler and keep its answer.
pub async fn serve_cached(
    State(cache): State<Arc<ReadCache>>,
    req: Request,
    next: Next,
) -> Response {
    if cache.capacity == 0 || req.method() != Method::GET {
        return next.run(req).await;
    }
    let key = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_default();
    let version = cache.version.get();
    if let Some(hit) = cache.lookup(&key, version) {
        let mut resp = Response::new(Body::from(hit.body));
        *resp.headers_mut() = hit.headers;
        resp.headers_mut()
            .insert(X_CACHE, HeaderValue::from_static("hit"));
        return resp;
    }
    let resp = next.run(req).await;
    let fits = resp
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n as usize <= cache.capacity / 8);
    if resp.status() != StatusCode::OK || !fits {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // The size is known and small, and the body is in memory already (a
    // JSON answer): collecting it cannot fail or wait in practice.
    let body = match axum::body::to_bytes(body, cache.capacity / 8).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("read cache: could not collect an answer: {e}");
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            return Response::from_parts(
                parts,
                Body::from("{\"error\":\"internal\",\"detail\":\"answer lost\"}"),
            );
        }
    };
    cache.store(
        key,
        version,
        Entry {
            headers: parts.headers.clone(),
            body: body.clone(),
        },
    );
    parts
        .headers
        .insert(X_CACHE, HeaderValue::from_static("miss"));
    Response::from_parts(parts, Body::from(body))
}
