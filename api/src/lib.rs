//! pytest-platform's master: the axum facade over the actors, and the
//! composition root that wires SQLite, the actors, NATS and ingest together.
//!
//! [`run`] takes a bound listener and a shutdown token, so the binary and the
//! tests run exactly the same wiring (port 0 and a temp database in tests).
//!
//! Start-up order: open SQLite and migrate; start the actors (rebuilding the
//! aggregates); connect to NATS (in the background: the master serves reads
//! while NATS is away); spawn ingest and the hourly maintenance task (runs
//! left incomplete, retention); serve HTTP.
//! Shutdown order: stop accepting HTTP and finish in-flight requests; stop
//! pulling, finish and ack the batch in hand; drain NATS (flushes the acks);
//! stop the actors.

pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod extract;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use ptp_actors::{ActorSystem, Aggregates, AggregatesConfig, DbOptions};
use ptp_ingest::{IngestConfig, IngestHealth};
use sqlx::SqlitePool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use config::Config;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Read pool (reads that are not aggregates).
    pub read: SqlitePool,
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
}

/// The OpenAPI description of the API, served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pytest-platform master API",
        description = "Test results from CI workers: runs, trends, workers, failure statistics."
    ),
    paths(
        routes::results::post_result,
        routes::results::list_runs,
        routes::results::get_run,
        routes::analytics::trend,
        routes::analytics::workers,
        routes::analytics::failure_stats,
        routes::compare::compare_runs,
        routes::insights::flaky_tests,
        routes::insights::clear_flaky,
        routes::insights::test_history,
        routes::insights::failure_clusters,
        routes::insights::slow_tests,
        routes::health::health,
        routes::health::rejected,
        routes::agent::check,
        routes::agent::post_message,
    ),
    modifiers(&BearerTokens)
)]
pub struct ApiDoc;

/// Declares the bearer tokens (PTP_WRITE_TOKENS / PTP_READ_TOKENS) in the
/// OpenAPI description, so the docs page offers "Authorize".
struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A write token (PTP_WRITE_TOKENS) for POST; a read or write token \
                         (PTP_READ_TOKENS) for GET when the master requires one.",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
    }
}

/// The HTTP app for `state`, with body limit and request timeout.
pub fn app(state: AppState, config: &Config) -> Router {
    // Answers read from SQLite are cached until the next write; the
    // aggregates' (heartbeats change them without a write) and /health are not.
    let from_sqlite = Router::new()
        .merge(routes::results::router())
        .merge(routes::compare::router())
        .merge(routes::insights::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.cache.clone(),
            cache::serve_cached,
        ));
    let api = Router::new()
        .merge(from_sqlite)
        .merge(routes::analytics::router())
        .merge(routes::health::router())
        .merge(routes::agent::router())
        .with_state(state);
    api.route(
        "/openapi.json",
        get(|| async { axum::Json(ApiDoc::openapi()) }),
    )
    .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/docs/openapi.json", ApiDoc::openapi()))
    .route("/", get(index))
    .fallback(|| async {
        crate::error::ApiError::NotFound("no such endpoint; the API is described at /docs".into())
    })
    .layer(axum::middleware::from_fn_with_state(
        Arc::new(auth::Tokens::new(&config.write_tokens, &config.read_tokens)),
        auth::require_tokens,
    ))
    .layer(axum::extract::DefaultBodyLimit::max(
        config.max_body_mb.saturating_mul(1024 * 1024),
    ))
    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        Duration::from_secs(config.request_timeout_secs),
    ))
}

async fn index() -> impl IntoResponse {
    Html(
        "<!doctype html><title>pytest-platform</title><h1>pytest-platform master</h1>\
         <p>API documentation: <a href=\"/docs/\">/docs</a> · OpenAPI: <a href=\"/openapi.json\">/openapi.json</a> · \
         <a href=\"/health\">/health</a></p>",
    )
}

/// Runs the master on `listener` until `shutdown` is cancelled, then shuts
/// down in order (see the module docs).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut db = DbOptions::new(&config.db);
    db.synchronous_full = config.sqlite_sync_full;
    let actors = ActorSystem::start(
        db.clone(),
        AggregatesConfig {
            offline_after: chrono::Duration::minutes(config.offline_after_minutes as i64),
        },
    )
    .await
    .with_context(|| format!("cannot start the actors on {}", config.db.display()))?;
    let read = ptp_actors::db::open_reader(&db)
        .await
        .with_context(|| format!("cannot open {} for reading", config.db.display()))?;

    let nats = config
        .nats_auth
        .apply(async_nats::ConnectOptions::new())
        .await
        .context("NATS settings")?
        .name("ptp-master")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(&config.nats_url)
        .await
        .with_context(|| format!("invalid NATS URL {}", config.nats_url))?;
    let js = async_nats::jetstream::new(nats.clone());

    let health = Arc::new(IngestHealth::default());
    let ingest_config = IngestConfig {
        batch_max: config.ingest_batch as usize,
        stream: ptp_nats::StreamSettings {
            max_age: Duration::from_secs(config.stream_max_age_hours * 3600),
            ..Default::default()
        },
        ack_wait: Duration::from_secs(config.ack_wait_secs),
        max_deliveries: config.max_deliveries as i64,
        ..IngestConfig::default()
    };
    let ingest_token = shutdown.child_token();
    let ingest = tokio::spawn(ptp_ingest::run(
        nats.clone(),
        actors.writer.clone().recipient(),
        actors.aggregates.clone().recipient(),
        ingest_config,
        health.clone(),
        ingest_token,
    ));

    let maintenance = tokio::spawn(run_maintenance(
        actors.writer.clone(),
        Retention {
            days: config.retention_days,
            runs: config.retention_runs,
        },
        Duration::from_secs(config.incomplete_after_minutes * 60),
        shutdown.child_token(),
    ));

    let state = AppState {
        read: read.clone(),
        aggregates: actors.aggregates.clone(),
        writer: actors.writer.clone(),
        nats: nats.clone(),
        js,
        ingest: health,
        nats_url: config.nats_url.clone(),
        cache: Arc::new(cache::ReadCache::new(
            actors.version.clone(),
            config.read_cache_mib.saturating_mul(1024 * 1024),
        )),
    };
    if config.write_tokens.iter().all(|t| t.trim().is_empty()) {
        tracing::warn!(
            "writes are open: anyone who reaches this master can POST /results; set PTP_WRITE_TOKENS"
        );
    }
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(%addr, nats = %config.nats_url, db = %config.db.display(), "ptp-master listening");
    let served = axum::serve(listener, app(state, &config))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("HTTP server failed");
    shutdown.cancel();
    let _ = ingest.await;
    let _ = maintenance.await;
    if let Err(e) = nats.drain().await {
        tracing::warn!("draining NATS: {e}");
    }
    read.close().await;
    tokio::task::spawn_blocking(move || actors.stop())
        .await
        .context("stopping the actors")?;
    tracing::info!("ptp-master stopped");
    served
}

/// How often maintenance (incomplete runs, retention) runs.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);

/// Retention settings (0: no limit).
#[derive(Debug, Clone, Copy)]
struct Retention {
    days: u32,
    runs: u32,
}

/// At start and then hourly until `shutdown`: gives up on runs still
/// incomplete after `incomplete_after` (they become rejections), and, when
/// a retention limit is set, prunes what it does not keep. Failures are
/// logged and retried at the next tick.
async fn run_maintenance(
    writer: actix::Addr<ptp_actors::Writer>,
    retention: Retention,
    incomplete_after: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let work = async {
            expire_incomplete(&writer, incomplete_after).await;
            if retention.days > 0 || retention.runs > 0 {
                prune(&writer, retention).await;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = work => {}
        }
    }
}

async fn expire_incomplete(writer: &actix::Addr<ptp_actors::Writer>, after: Duration) {
    let before = chrono::Utc::now()
        - chrono::Duration::from_std(after).unwrap_or_else(|_| chrono::Duration::days(1));
    let mut total = 0;
    loop {
        match writer
            .send(ptp_actors::writer::ExpireIncomplete {
                received_before: before,
            })
            .await
        {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => {
                tracing::warn!("cannot expire incomplete runs, will retry in an hour: {e}");
                break;
            }
            Err(e) => {
                tracing::warn!("writer unavailable: {e}");
                break;
            }
        }
    }
    if total > 0 {
        tracing::warn!(
            runs = total,
            "dropped incomplete runs (pieces missing for {after:?}); see GET /rejected"
        );
    }
}

async fn prune(writer: &actix::Addr<ptp_actors::Writer>, retention: Retention) {
    let policy = ptp_actors::retention::Policy {
        cutoff: (retention.days > 0)
            .then(|| chrono::Utc::now() - chrono::Duration::days(i64::from(retention.days))),
        keep_runs: (retention.runs > 0).then_some(retention.runs),
    };
    let what = match (retention.days, retention.runs) {
        (0, n) => format!("beyond the newest {n} runs per project"),
        (d, 0) => format!("older than {d} days"),
        (d, n) => format!("older than {d} days or beyond the newest {n} runs per project"),
    };
    match ptp_actors::retention::prune(writer, policy).await {
        Ok(t) if t.deleted.is_empty() => {
            tracing::debug!("retention: nothing {what}");
        }
        Ok(t) => tracing::info!(
            runs = t.deleted.runs,
            cases = t.deleted.cases,
            incomplete = t.deleted.incomplete,
            rejected = t.deleted.rejected,
            mib_before = t.bytes_before / (1 << 20),
            mib_after = t.bytes_after / (1 << 20),
            "retention: pruned runs {what}"
        ),
        Err(e) => tracing::warn!("retention: prune failed, will retry in an hour: {e}"),
    }
}
