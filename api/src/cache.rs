//! A cache of answers read from SQLite, each valid until a write changes
//! what it depends on, and single-flight for concurrent identical reads.
//!
//! Why: stored results change only when the writer writes, and most reads
//! repeat (a dashboard polling the newest runs, an editor asking for a
//! report and then for its flaky tests, many people opening the same failed
//! run). Answering a repeat from memory costs a hash lookup instead of a
//! query, its JSON and a thread hand-off per query. And when many clients
//! ask the same question at once right after a write, it is computed once
//! and the answer handed to all of them.
//!
//! Shape: an axum middleware on the routes answered from SQLite (`/results`,
//! `/results/{id}`, `/compare`, `/trend`, `/failures/stats`, the analytics
//! of `/flaky`, `/failures/clusters`, `/tests/...`). `/workers` is not
//! cached (heartbeats change it without a write), nor `/health`. Keys are
//! the request's path and query as sent; only `GET` answers `200` of at
//! most an eighth of the capacity are kept.
//!
//! What an answer depends on ([`Scope`]), read from the request by
//! [`scope_of`]: the runs of the project named by `project=`; only the
//! content of runs named by id (`/results/{id}`, `/compare?base=&head=`),
//! which changes only when runs are pruned; or everything. Answers that
//! depend on the clock (`days=`) are never kept.
//!
//! Guarantees: never stale. Every answer is tagged with the writer's
//! [`Stamp`] taken *before* the handler ran and served only while it is
//! still valid for its scope ([`ptp_actors::version`]); a write finishing at
//! any point during or after the read makes it stale. A write to one
//! project leaves the other projects' answers and the run pages cached.
//! Concurrent identical requests share one computation only when their
//! stamps are equal (no write finished between their arrivals), so a
//! shared answer is as fresh as a computed one; answers over
//! [`SHARE_MAX_BYTES`] go to their own request as the handler made them (a
//! large read holds its permit until it is sent) and the others compute
//! their own. Memory is bounded by the
//! capacity (when full, everything is dropped and filling starts over).
//! Capacity 0 turns the cache off (single-flight stays).
//!
//! Several masters on one PostgreSQL database: a write made by another
//! master reaches this one's versions as a bump on NATS (`cluster::changes`),
//! normally within milliseconds; so that a bump lost while NATS was away
//! cannot keep an answer stale, such a master also gives every kept answer
//! a maximum age ([`ReadCache::with_max_age`], 1 s): every master then
//! answers as the database does within 1 s. While it is on,
//! `200` answers carry `X-Cache: hit` (from memory), `miss` (computed for this
//! request) or `shared` (computed once for concurrent identical requests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use ptp_actors::DataVersion;
use ptp_actors::version::{Scope, Stamp};

/// The cache. Share it as `Arc<ReadCache>`.
pub struct ReadCache {
    version: DataVersion,
    capacity: usize,
    /// Kept answers older than this are not served (`None`: no limit).
    max_age: Option<std::time::Duration>,
    inner: Mutex<Inner>,
    /// Answers being computed, by key, with the stamp they were asked at.
    flights: Mutex<HashMap<String, (Stamp, Flight)>>,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// An answer as the handler gave it, in memory.
type Answer = (StatusCode, HeaderMap, Bytes);
/// An answer being computed, awaited by every request that asked for it.
type Flight = Shared<BoxFuture<'static, Arc<Landed>>>;

/// Answers larger than this (or of unknown size) are not shared: they go
/// to the request that computed them as the handler made them (a large
/// read's body holds its permit until it is sent, see `crate::limits`),
/// and each request waiting for them computes its own.
pub const SHARE_MAX_BYTES: u64 = 1 << 20;

/// What a computation gave: an answer every waiting request can have, or
/// a response only its leader can.
struct Landed {
    shared: Option<Answer>,
    own: Mutex<Option<Response>>,
}

/// A computation's role for one request.
enum Role {
    /// It computes; the others asking meanwhile wait for it.
    Lead(Flight),
    /// Another request computes the same answer at the same data version.
    Follow(Flight),
}

#[derive(Debug, Default)]
struct Inner {
    bytes: usize,
    entries: HashMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    headers: HeaderMap,
    body: Bytes,
    stamp: Stamp,
    scope: Scope,
    kept_at: std::time::Instant,
}

impl Entry {
    /// Bytes it holds under `key` (headers estimated).
    fn size(&self, key: &str) -> usize {
        key.len() + self.body.len() + 64 * self.headers.len()
    }
}

/// What the answer to `path` with query `params` depends on; `None` when
/// it depends on the clock and must not be kept.
pub fn scope_of(path: &str, params: &[(String, String)]) -> Option<Scope> {
    let has = |k: &str| params.iter().any(|(n, _)| n == k);
    if has("days") {
        return None;
    }
    if path.starts_with("/results/") || (path == "/compare" && has("base") && has("head")) {
        return Some(Scope::Runs);
    }
    Some(match project_of(params) {
        Some(p) => Scope::Project(p.to_string()),
        None => Scope::All,
    })
}

/// The project a request names, when it names exactly one.
fn project_of(params: &[(String, String)]) -> Option<&str> {
    let mut named = params.iter().filter(|(n, _)| n == "project");
    match (named.next(), named.next()) {
        (Some((_, p)), None) => Some(p),
        _ => None,
    }
}

impl ReadCache {
    /// A cache of at most `capacity` bytes of answers, invalidated by
    /// `version`.
    pub fn new(version: DataVersion, capacity: usize) -> ReadCache {
        ReadCache {
            version,
            capacity,
            max_age: None,
            inner: Mutex::new(Inner::default()),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// Serves no kept answer older than `max_age` (see the module docs).
    pub fn with_max_age(mut self, max_age: std::time::Duration) -> ReadCache {
        self.max_age = Some(max_age);
        self
    }

    fn lookup(&self, key: &str, now: &Stamp) -> Option<Entry> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = inner.entries.get(key)?;
        let young = self.max_age.is_none_or(|m| entry.kept_at.elapsed() <= m);
        if young && entry.stamp.still_valid(now, &entry.scope) {
            return Some(entry.clone());
        }
        let size = entry.size(key);
        inner.entries.remove(key);
        inner.bytes -= size;
        None
    }

    fn store(&self, key: String, project: Option<&str>, entry: Entry) {
        // Taken before the handler ran; a write since makes it unfit.
        if !entry
            .stamp
            .still_valid(&self.version.stamp(project), &entry.scope)
        {
            return;
        }
        let size = entry.size(&key);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.bytes + size > self.capacity {
            inner.entries.clear();
            inner.bytes = 0;
        }
        inner.bytes += size;
        if let Some(old) = inner.entries.insert(key.clone(), entry) {
            inner.bytes -= old.size(&key);
        }
    }

    /// The computation of `key` asked at `stamp`: one already running at
    /// the same stamp to follow, or `start()` registered to lead.
    fn flight(
        &self,
        key: &str,
        stamp: &Stamp,
        start: impl FnOnce() -> BoxFuture<'static, Arc<Landed>>,
    ) -> Role {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((s, f)) = flights.get(key)
            && s == stamp
        {
            return Role::Follow(f.clone());
        }
        let f = start().shared();
        flights.insert(key.to_string(), (stamp.clone(), f.clone()));
        Role::Lead(f)
    }
}

/// Unregisters a computation when its leader finishes or is dropped (a
/// client that went away); requests already waiting keep their handle.
struct Landing<'a> {
    cache: &'a ReadCache,
    key: &'a str,
    flight: Flight,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let mut flights = self
            .cache
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if flights
            .get(self.key)
            .is_some_and(|(_, f)| f.ptr_eq(&self.flight))
        {
            flights.remove(self.key);
        }
    }
}

const X_CACHE: &str = "x-cache";

/// Runs the handler; collects its answer when it is small enough to share.
async fn compute(next: Next, req: Request) -> Arc<Landed> {
    use axum::body::HttpBody;
    let resp = next.run(req).await;
    let small = resp
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= SHARE_MAX_BYTES);
    if !small {
        return Arc::new(Landed {
            shared: None,
            own: Mutex::new(Some(resp)),
        });
    }
    let (parts, body) = resp.into_parts();
    // Its size is known and small, and the routes behind this middleware
    // answer JSON already in memory: collecting it cannot fail or wait in
    // practice.
    let answer = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => (parts.status, parts.headers, b),
        Err(e) => {
            tracing::error!("read cache: could not collect an answer: {e}");
            let mut headers = HeaderMap::new();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                headers,
                Bytes::from_static(b"{\"error\":\"internal\",\"detail\":\"answer lost\"}"),
            )
        }
    };
    Arc::new(Landed {
        shared: Some(answer),
        own: Mutex::new(None),
    })
}

fn respond(
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    x_cache: Option<&'static str>,
) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    if let Some(v) = x_cache {
        resp.headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(v));
    }
    resp
}

/// The middleware: answer a repeated `GET` from the cache; else compute it
/// once for every identical request waiting, and keep the answer.
pub async fn serve_cached(
    State(cache): State<Arc<ReadCache>>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != Method::GET {
        return next.run(req).await;
    }
    let key = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_default();
    let params: Vec<(String, String)> =
        axum::extract::Query::try_from_uri(req.uri()).map_or_else(|_| Vec::new(), |q| q.0);
    let scope = scope_of(req.uri().path(), &params);
    let project = project_of(&params).map(str::to_string);
    let stamp = cache.version.stamp(project.as_deref());
    let on = cache.capacity > 0;
    if on
        && scope.is_some()
        && let Some(hit) = cache.lookup(&key, &stamp)
    {
        return respond(StatusCode::OK, hit.headers, hit.body, Some("hit"));
    }
    let mut waiting = Some((req, next));
    let role = cache.flight(&key, &stamp, || match waiting.take() {
        Some((req, next)) => compute(next, req).boxed(),
        None => futures::future::ready(Arc::new(Landed {
            shared: None,
            own: Mutex::new(None),
        }))
        .boxed(),
    });
    let shown = |status: StatusCode, x: &'static str| (on && status == StatusCode::OK).then_some(x);
    let flight = match role {
        Role::Follow(flight) => {
            let landed = flight.await;
            if let Some((status, headers, body)) = landed.shared.clone() {
                return respond(status, headers, body, shown(status, "shared"));
            }
            // Too large to share: this request computes its own.
            let Some((req, next)) = waiting else {
                return next_missing();
            };
            return next.run(req).await;
        }
        Role::Lead(flight) => flight,
    };
    let landing = Landing {
        cache: &cache,
        key: &key,
        flight: flight.clone(),
    };
    let landed = flight.await;
    let Some((status, headers, body)) = landed.shared.clone() else {
        drop(landing);
        let own = landed
            .own
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        return own.unwrap_or_else(next_missing);
    };
    if let (true, Some(scope)) = (on, scope)
        && status == StatusCode::OK
        && body.len() <= cache.capacity / 8
    {
        cache.store(
            key.clone(),
            project.as_deref(),
            Entry {
                headers: headers.clone(),
                body: body.clone(),
                stamp,
                scope,
                kept_at: std::time::Instant::now(),
            },
        );
    }
    // Kept before it is unregistered: a request arriving in between finds
    // one or the other.
    drop(landing);
    // Errors are never kept, and say nothing about the cache.
    respond(status, headers, body, shown(status, "miss"))
}

/// The answer when a request's own computation is gone, which the flow
/// above never lets happen.
fn next_missing() -> Response {
    tracing::error!("read cache: a request lost its own answer");
    respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        HeaderMap::new(),
        Bytes::from_static(b"{\"error\":\"internal\",\"detail\":\"answer lost\"}"),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn what_an_answer_depends_on() {
        let p = |s: &str| Some(Scope::Project(s.into()));
        assert_eq!(scope_of("/results", &q(&[("project", "a")])), p("a"));
        assert_eq!(scope_of("/results", &q(&[])), Some(Scope::All));
        assert_eq!(scope_of("/results/r1", &q(&[])), Some(Scope::Runs));
        let ids = q(&[("base", "r1"), ("head", "r2"), ("project", "a")]);
        assert_eq!(scope_of("/compare", &ids), Some(Scope::Runs));
        let branches = q(&[("project", "a"), ("base_branch", "main"), ("head", "r2")]);
        assert_eq!(scope_of("/compare", &branches), p("a"));
        let two = q(&[("project", "a"), ("project", "b")]);
        assert_eq!(scope_of("/flaky", &two), Some(Scope::All));
        assert_eq!(
            scope_of("/flaky", &q(&[("project", "a"), ("days", "7")])),
            None
        );
    }
}
