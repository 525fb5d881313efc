//! pytest-platform's master: the axum facade over the actors, and the
//! composition root that wires SQLite, the actors, NATS and ingest together.
//!
//! [`run`] takes a bound listener and a shutdown token, so the binary and the
//! tests run exactly the same wiring (port 0 and a temp database in tests).
//!
//! Start-up order: lock the SQLite file against a second master on this
//! host ([`cluster::lock_db`]); open SQLite and migrate; start the actors
//! (no history is read); connect to NATS (in the background: the master
//! serves reads while NATS is away); start the masters' registry and the
//! leases ([`cluster`]); spawn ingest (which consumes only once the
//! registry found no other master on the stream), the hourly maintenance
//! task (runs left incomplete, retention; while its lease is held), the
//! quarantine mirror ([`mirror`]), webhook delivery ([`webhooks`], while
//! its lease is held) and, when on, automatic quarantine
//! ([`auto_quarantine`], fed by ingest);
//! serve HTTP ([`server`]: header-read and idle timeouts; [`limits`]:
//! memory for request bodies, large reads).
//! Shutdown order: stop accepting HTTP and finish in-flight requests; stop
//! pulling, finish and ack the batch in hand; release the leases and
//! deregister; drain NATS (flushes the acks); stop the actors. A master
//! refused by the registry shuts down the same way and returns the refusal.

pub mod auth;
pub mod auto_quarantine;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod mirror;
pub mod routes;
pub mod server;
pub mod state;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use ptp_actors::read::ReadPool;
use ptp_actors::{ActorSystem, AggregatesConfig, DbOptions, DbTarget, PgOptions, StoreOptions};
use ptp_ingest::{IngestConfig, IngestHealth};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use config::{Config, TestDb};
pub use state::AppState;

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
        routes::metrics::metrics,
        routes::agent::check,
        routes::agent::post_message,
        routes::quarantine::post_quarantine,
        routes::quarantine::release_quarantine,
        routes::quarantine::list_quarantine,
    ),
    components(schemas(webhooks::WebhookEvent)),
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

/// The HTTP app for `state`, with body limit, body memory budget and
/// request timeout.
pub fn app(state: AppState, config: &Config) -> Router {
    let max_body = config.max_body_mb.saturating_mul(1024 * 1024);
    // Answers read from SQLite are cached until a write changes them;
    // /workers (heartbeats change it without a write) and /health are not.
    let from_sqlite = Router::new()
        .merge(routes::results::router())
        .merge(routes::compare::router())
        .merge(routes::insights::router())
        .merge(routes::analytics::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.cache.clone(),
            cache::serve_cached,
        ));
    let api = Router::new()
        .merge(from_sqlite)
        .merge(routes::analytics::workers_router())
        .merge(routes::health::router())
        .merge(routes::agent::router())
        .merge(routes::quarantine::router())
        .route("/metrics", get(routes::metrics::metrics))
        .with_state(state.clone());
    api.route(
        "/openapi.json",
        get(|| async { axum::Json(ApiDoc::openapi()) }),
    )
    .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/docs/openapi.json", ApiDoc::openapi()))
    .route("/", get(index))
    .fallback(|| async {
        crate::error::ApiError::NotFound("no such endpoint; the API is described at /docs".into())
    })
    // Inside auth: a request without a valid token is refused before it is
    // charged anything.
    .layer(axum::middleware::from_fn_with_state(
        Arc::new(limits::BodyBudget::new(
            config.max_inflight_body_mb,
            max_body,
        )),
        limits::charge_bodies,
    ))
    .layer(axum::middleware::from_fn_with_state(
        Arc::new(auth::Tokens::new(&config.write_tokens, &config.read_tokens)),
        auth::require_tokens,
    ))
    .layer(axum::extract::DefaultBodyLimit::max(max_body))
    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        Duration::from_secs(config.request_timeout_secs),
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.metrics.clone(),
        metrics::track,
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
    config.check()?;
    let hook_targets = config.webhooks.targets()?;
    let hook_client = webhooks::Client::new(&config.webhooks)?;
    // SQLite: one master per file on this host, by the kernel's lock.
    let lock = match &config.db {
        DbTarget::Sqlite(path) => Some(cluster::lock_db(path)?),
        DbTarget::Postgres(_) => None,
    };
    let store = match &config.db {
        DbTarget::Sqlite(path) => {
            let mut db = DbOptions::new(path);
            db.synchronous_full = config.sqlite_sync_full;
            StoreOptions::Sqlite(db)
        }
        DbTarget::Postgres(url) => StoreOptions::Postgres(PgOptions {
            url: url.clone(),
            connections: ptp_actors::db::READ_CONNECTIONS,
        }),
    };
    let actors = ActorSystem::start_with(
        store.clone(),
        AggregatesConfig {
            offline_after: i64::try_from(config.offline_after_minutes)
                .ok()
                .and_then(chrono::Duration::try_minutes)
                .unwrap_or(chrono::Duration::MAX),
            max_workers: config.max_workers,
        },
        config.webhooks.routes(&hook_targets),
    )
    .await
    .with_context(|| format!("cannot start the actors on {}", config.db))?;
    let read = ReadPool::open(&store, ptp_actors::db::READ_CONNECTIONS)
        .await
        .with_context(|| format!("cannot open {} for reading", config.db))?;

    let nats = config
        .nats_auth
        .apply(async_nats::ConnectOptions::new())
        .await
        .context("NATS settings")?
        .name("ptp-master")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(
            ptp_nats::server_addrs(&config.nats_url)
                .map_err(anyhow::Error::msg)
                .context("--nats-url / NATS_URL")?,
        )
        .await
        .with_context(|| format!("invalid NATS URL {}", config.nats_url))?;
    let js = async_nats::jetstream::new(nats.clone());

    let auto_settings = ptp_actors::auto_quarantine::Settings {
        days: config.auto_quarantine_days,
        release_after_clean_runs: config.release_after_clean_runs,
    };
    let (completed_tx, completed_rx) = auto_quarantine::channel(auto_settings).unzip();

    let me = match (&lock, &config.db) {
        (Some(lock), _) => cluster::Registration::sqlite(config.master_name(), &lock.db),
        (None, db) => cluster::Registration::postgres(
            config.master_name(),
            db.identity(),
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        ),
    };
    // Masters sharing a database hear of each other's writes.
    let shared = matches!(config.db, DbTarget::Postgres(_));
    let changes = shared.then(|| {
        tokio::spawn(cluster::changes::run(
            nats.clone(),
            actors.version.clone(),
            me.id(),
            shutdown.child_token(),
        ))
    });
    let masters = cluster::Cluster::start(
        js.clone(),
        cluster::Settings {
            ttl: Duration::from_secs(config.master_ttl_secs),
            replicas: config.stream_replicas,
        },
        me.clone(),
        shutdown.clone(),
    );

    let health = Arc::new(IngestHealth::default());
    let ingest_config = IngestConfig {
        batch_max: config.ingest_batch as usize,
        stream: ptp_nats::StreamSettings {
            max_age: Duration::from_secs(config.stream_max_age_hours.saturating_mul(3600)),
            replicas: config.stream_replicas,
            ..Default::default()
        },
        ack_wait: Duration::from_secs(config.ack_wait_secs),
        max_deliveries: config.max_deliveries as i64,
        completed: completed_tx,
        ..IngestConfig::default()
    };
    let ingest_token = shutdown.child_token();
    let ingest = tokio::spawn({
        let (nats, registry) = (nats.clone(), masters.status.clone());
        let writer = actors.writer.clone().recipient();
        let heartbeats = actors.aggregates.clone().recipient();
        let health = health.clone();
        async move {
            // Nothing is consumed before the registry found no other master.
            let admitted = tokio::select! {
                _ = ingest_token.cancelled() => false,
                admitted = registry.admitted() => admitted,
            };
            if admitted {
                ptp_ingest::run(
                    nats,
                    writer,
                    heartbeats,
                    ingest_config,
                    health,
                    ingest_token,
                )
                .await;
            }
        }
    });

    let maintenance = tokio::spawn(ptp_actors::maintenance::run(
        actors.writer.clone(),
        ptp_actors::maintenance::Settings {
            retention_days: config.retention_days,
            retention_runs: config.retention_runs,
            incomplete_after: Duration::from_secs(
                config.incomplete_after_minutes.saturating_mul(60),
            ),
        },
        masters.gate(cluster::MAINTENANCE),
        shutdown.child_token().cancelled_owned(),
    ));

    let quarantine = Arc::new(mirror::QuarantineMirror::default());
    let quarantine_mirror = tokio::spawn(mirror::run(
        quarantine.clone(),
        read.clone(),
        nats.clone(),
        js.clone(),
        shutdown.child_token(),
    ));

    let auto_judge = completed_rx.map(|rx| {
        tokio::spawn(auto_quarantine::run(
            auto_quarantine::Judge {
                read: read.clone(),
                writer: actors.writer.clone(),
                mirror: quarantine.clone(),
                js: js.clone(),
                settings: auto_settings,
            },
            rx,
            shutdown.child_token(),
        ))
    });

    let hook_status = Arc::new(webhooks::Status {
        targets: hook_targets.iter().map(|t| t.key.clone()).collect(),
        ..Default::default()
    });
    for t in &hook_targets {
        if t.secret.is_none() {
            tracing::warn!(target = ?t, "webhook target without a secret: its requests are not signed; set --webhook-secret");
        }
    }
    let webhook_delivery = tokio::spawn(webhooks::run(
        hook_targets,
        hook_client,
        read.clone(),
        webhooks::Writer {
            record: actors.writer.clone().recipient(),
            prune: actors.writer.clone().recipient(),
        },
        webhooks::Settings::from(&config.webhooks),
        hook_status.clone(),
        masters.gate(cluster::WEBHOOKS),
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
        cache: Arc::new({
            let cache = cache::ReadCache::new(
                actors.version.clone(),
                config.read_cache_mib.saturating_mul(1024 * 1024),
            );
            if shared {
                cache.with_max_age(cluster::changes::MAX_AGE)
            } else {
                cache
            }
        }),
        faults: actors.faults.clone(),
        large_reads: Arc::new(limits::LargeReads::new(config.max_large_reads)),
        metrics: Arc::new(metrics::Metrics::new(config.master_name())),
        quarantine,
        webhooks: hook_status,
        masters: masters.status.clone(),
    };
    if config.write_tokens.iter().all(|t| t.trim().is_empty()) {
        tracing::warn!(
            "writes are open: anyone who reaches this master can POST /results; set PTP_WRITE_TOKENS"
        );
    }
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(%addr, nats = %config.nats_url, db = %config.db, "ptp-master listening");
    server::serve(
        listener,
        app(state, &config),
        server::Timeouts {
            header_read: Duration::from_secs(config.header_read_timeout_secs),
            idle: Duration::from_secs(config.idle_timeout_secs),
        },
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = ingest.await;
    let _ = maintenance.await;
    let _ = quarantine_mirror.await;
    if let Some(judge) = auto_judge {
        let _ = judge.await;
    }

    let _ = webhook_delivery.await;
    if let Some(changes) = changes {
        let _ = changes.await;
    }
    let refused = masters.stop().await;
    if let Err(e) = nats.drain().await {
        tracing::warn!("draining NATS: {e}");
    }
    read.close().await;
    tokio::task::spawn_blocking(move || actors.stop())
        .await
        .context("stopping the actors")?;
    drop(lock);
    match refused {
        Err(e @ cluster::ClusterError::Refused(_)) => {
            return Err(
                anyhow::Error::new(e).context("this master cannot share the results stream")
            );
        }
        Err(e) => tracing::warn!("masters' registry: {e}"),
        Ok(()) => {}
    }
    tracing::info!("ptp-master stopped");
    Ok(())
}
