//! Webhooks, the master's side: the options that name the targets
//! ([`WebhookArgs`]), the documented payload ([`WebhookEvent`]), the
//! signature ([`sign`]) and the delivery task ([`run`]).
//!
//! The events themselves are chosen and stored by the writer, in the
//! transaction that stores what they describe (`ptp_actors::webhooks`):
//! this module only reads that outbox and POSTs. Shape:
//! - One task per target. It takes the target's oldest pending deliveries
//!   in event order and POSTs them one by one; a failure stops the target
//!   until its retry time, so a target receives its events in order and a
//!   target that is down delays no other.
//! - Every attempt is recorded through the writer (`RecordAttempt`): 2xx
//!   marks the row delivered; anything else (status, timeout, refused
//!   connection) schedules a retry after [`backoff`] (doubling from
//!   `--webhook-retry-min-ms` to `--webhook-retry-max-ms`), until the
//!   delivery is `--webhook-max-age-hours` old: then it is dead, stays
//!   visible (`/health`, `/metrics`) and the next event goes.
//! - At least once: a delivery is marked only after the receiver answered;
//!   a crash between the answer and the mark sends it again, with the same
//!   `X-Ptp-Event-Id` (receivers dedupe on it).
//! - Every few minutes delivered rows older than a day and dead rows older
//!   than a week are deleted, with the rows of targets no longer configured.
//!
//! Signature: `X-Ptp-Signature: sha256=<hex HMAC-SHA256(secret, T + "." +
//! body)>` where `T` is the `X-Ptp-Timestamp` header (Unix seconds of this
//! attempt) and `body` the exact bytes sent, like Stripe's scheme. Without a
//! secret the header is left out.
//!
//! Several masters on one store would each deliver every row: delivery
//! would then need a lease per target (not done: one master per store).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::Recipient;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use ptp_actors::webhooks::{
    self as outbox, Attempt, EventType, Pending, PruneOutbox, RecordAttempt, Route, Routes,
};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// The webhook options, flattened into the master's `Config`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Send webhook events to this URL (http only for now), repeatable; in the
    /// environment, several separated by commas. Options follow a `#`:
    /// `URL#events=run.failed+test.newly_failing&format=slack`. `events`:
    /// `+`-separated, of run.failed, test.newly_failing, test.newly_flaky,
    /// test.quarantined, test.released (default: all); `format`: `json`
    /// (default, the WebhookEvent schema) or `slack` (a Slack incoming
    /// webhook's `{"text": ...}`).
    #[arg(
        long = "webhook",
        env = "PTP_WEBHOOKS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook: Vec<String>,

    /// A JSON file listing more targets: `[{"url": "...", "events":
    /// ["run.failed"], "format": "json", "secret": "..."}]` (`events`,
    /// `format` and `secret` optional).
    #[arg(long, env = "PTP_WEBHOOKS_FILE")]
    pub webhooks_file: Option<std::path::PathBuf>,

    /// Secret for the `X-Ptp-Signature` HMAC of every target that names no
    /// secret of its own. Unset: such targets get unsigned requests.
    #[arg(long, env = "PTP_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// The branches whose runs produce webhook events, comma-separated.
    #[arg(
        long = "default-branch",
        env = "PTP_DEFAULT_BRANCH",
        value_delimiter = ',',
        default_value = "main,master"
    )]
    pub default_branches: Vec<String>,

    /// Most undelivered events kept per target; beyond it the oldest are
    /// dropped (marked dead, logged).
    #[arg(long, env = "PTP_WEBHOOK_MAX_PENDING", default_value_t = outbox::DEFAULT_MAX_PENDING, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub webhook_max_pending: u32,

    /// Hours a delivery is retried before it is given up on (dead).
    #[arg(long, env = "PTP_WEBHOOK_MAX_AGE_HOURS", default_value_t = 72, value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub webhook_max_age_hours: u64,

    /// Seconds a receiver has to answer one POST.
    #[arg(long, env = "PTP_WEBHOOK_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_secs: u64,

    /// First retry delay in milliseconds (doubles per failed attempt).
    #[arg(long, env = "PTP_WEBHOOK_RETRY_MIN_MS", default_value_t = 1000, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_min_ms: u64,

    /// Longest retry delay in milliseconds.
    #[arg(long, env = "PTP_WEBHOOK_RETRY_MAX_MS", default_value_t = 600_000, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_max_ms: u64,

    /// How often an idle target looks for new events, in milliseconds.
    #[arg(long, env = "PTP_WEBHOOK_POLL_MS", default_value_t = 1000, hide = true, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub webhook_poll_ms: u64,
}

impl Default for WebhookArgs {
    fn default() -> WebhookArgs {
        WebhookArgs {
            webhook: Vec::new(),
            webhooks_file: None,
            webhook_secret: None,
            default_branches: vec!["main".into(), "master".into()],
            webhook_max_pending: outbox::DEFAULT_MAX_PENDING,
            webhook_max_age_hours: 72,
            webhook_timeout_secs: 10,
            webhook_retry_min_ms: 1000,
            webhook_retry_max_ms: 600_000,
            webhook_poll_ms: 1000,
        }
    }
}

/// The body a target receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// [`WebhookEvent`] as JSON.
    Json,
    /// `{"text": "..."}`, for Slack incoming webhooks.
    Slack,
}

/// One configured target.
#[derive(Clone)]
pub struct Target {
    /// Where to POST.
    pub url: reqwest::Url,
    /// Stable key in the outbox: a digest of the URL, so a URL (which for
    /// Slack is itself a secret) is never stored nor logged.
    pub key: String,
    /// What it receives.
    pub events: Vec<EventType>,
    /// How.
    pub format: Format,
    /// HMAC secret, if any.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &redacted(&self.url))
            .field("key", &self.key)
            .field("events", &self.events)
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The URL without path, query or credentials, for logs.
fn redacted(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{}{port}/…",
        url.scheme(),
        url.host_str().unwrap_or("?")
    )
}

/// A target in `--webhooks-file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTarget {
    url: String,
    events: Option<Vec<String>>,
    format: Option<Format>,
    secret: Option<String>,
}

/// Most bytes of `--webhooks-file`.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Most targets.
pub const MAX_TARGETS: usize = 100;

fn parse_url(option: &str, raw: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| {
        anyhow::anyhow!("{option}: {raw:?} is not a URL ({e}); give http(s)://host/path")
    })?;
    match url.scheme() {
        "http" => {}
        // reqwest is built without TLS here: enabling its rustls for the
        // master would switch it on for every crate of the workspace built
        // with it (feature unification), where no crypto provider is set.
        "https" => anyhow::bail!(
            "{option}: https:// targets are not supported yet (the master's HTTP client has no \
             TLS); give an http:// URL, e.g. a relay on the same host or network"
        ),
        other => anyhow::bail!("{option}: scheme {other:?} is not supported; give an http:// URL"),
    }
    if url.host_str().is_none_or(str::is_empty) {
        anyhow::bail!("{option}: {raw:?} has no host");
    }
    Ok(url)
}

fn parse_events(option: &str, names: &[&str]) -> anyhow::Result<Vec<EventType>> {
    if names.is_empty() || names == ["all"] {
        return Ok(EventType::ALL.to_vec());
    }
    let mut out = Vec::new();
    for n in names {
        let t = EventType::parse(n.trim()).ok_or_else(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            anyhow::anyhow!(
                "{option}: unknown event {n:?}; known events: {} (or all)",
                known.join(", ")
            )
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn key_of(url: &reqwest::Url) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(url.as_str().as_bytes());
    hex::encode(&d[..8])
}

/// Parses one `--webhook` value: `URL[#events=a+b&format=json|slack]`.
pub fn parse_webhook(value: &str, default_secret: Option<&str>) -> anyhow::Result<Target> {
    const OPT: &str = "--webhook / PTP_WEBHOOKS";
    let (raw, options) = match value.split_once('#') {
        Some((u, o)) => (u, o),
        None => (value, ""),
    };
    let url = parse_url(OPT, raw)?;
    let (mut events, mut format) = (EventType::ALL.to_vec(), Format::Json);
    for pair in options.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("events", v)) => {
                let names: Vec<&str> = v.split('+').filter(|n| !n.is_empty()).collect();
                events = parse_events(OPT, &names)?;
            }
            Some(("format", "json")) => format = Format::Json,
            Some(("format", "slack")) => format = Format::Slack,
            Some(("format", other)) => {
                anyhow::bail!(
                    "{OPT}: format {other:?} is unknown; give format=json or format=slack"
                )
            }
            _ => anyhow::bail!(
                "{OPT}: {pair:?} after '#' is not understood; give URL#events=run.failed+test.newly_failing&format=json"
            ),
        }
    }
    Ok(Target {
        key: key_of(&url),
        url,
        events,
        format,
        secret: default_secret.map(str::to_string),
    })
}

impl WebhookArgs {
    /// Every target of `--webhook` and `--webhooks-file`, validated; errors
    /// name the option and what to change.
    pub fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let secret = self.webhook_secret.as_deref().filter(|s| !s.is_empty());
        let mut out = Vec::new();
        for v in self.webhook.iter().filter(|v| !v.trim().is_empty()) {
            out.push(parse_webhook(v.trim(), secret)?);
        }
        if let Some(path) = &self.webhooks_file {
            out.extend(read_file(path, secret)?);
        }
        if out.len() > MAX_TARGETS {
            anyhow::bail!(
                "{} webhook targets configured; at most {MAX_TARGETS} are allowed",
                out.len()
            );
        }
        let mut keys = std::collections::BTreeSet::new();
        for t in &out {
            if !keys.insert(t.key.clone()) {
                anyhow::bail!(
                    "webhook target {} is configured twice (--webhook / --webhooks-file); name each URL once",
                    redacted(&t.url)
                );
            }
        }
        if self.webhook_retry_min_ms > self.webhook_retry_max_ms {
            anyhow::bail!(
                "--webhook-retry-min-ms ({}) must not exceed --webhook-retry-max-ms ({})",
                self.webhook_retry_min_ms,
                self.webhook_retry_max_ms
            );
        }
        Ok(out)
    }

    /// What the writer needs to know: default branches and, per target,
    /// its key and events.
    pub fn routes(&self, targets: &[Target]) -> Routes {
        Routes {
            default_branches: self
                .default_branches
                .iter()
                .map(|b| b.trim().to_string())
                .filter(|b| !b.is_empty())
                .collect(),
            targets: targets
                .iter()
                .map(|t| Route {
                    target: t.key.clone(),
                    events: t.events.clone(),
                })
                .collect(),
            max_pending: self.webhook_max_pending,
        }
    }
}

fn read_file(path: &std::path::Path, secret: Option<&str>) -> anyhow::Result<Vec<Target>> {
    use std::io::Read;
    let opt = format!("--webhooks-file {}", path.display());
    let f = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{opt}: cannot open: {e}"))?;
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("{opt}: cannot read: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        anyhow::bail!("{opt}: larger than {MAX_FILE_BYTES} bytes");
    }
    let list: Vec<FileTarget> = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{opt}: not a JSON list of {{\"url\", \"events\", \"format\", \"secret\"}}: {e}"
        )
    })?;
    list.into_iter()
        .enumerate()
        .map(|(i, t)| {
            let opt = format!("{opt}, target {i}");
            let url = parse_url(&opt, &t.url)?;
            let names: Vec<&str> = t.events.iter().flatten().map(String::as_str).collect();
            Ok(Target {
                key: key_of(&url),
                url,
                events: parse_events(&opt, &names)?,
                format: t.format.unwrap_or(Format::Json),
                secret: t
                    .secret
                    .filter(|s| !s.is_empty())
                    .or(secret.map(str::to_string)),
            })
        })
        .collect()
}

/// A webhook event as POSTed to `json` targets. `type` says which; `data`
/// holds the type's fields:
/// - `run.failed`: `status`, `commit`, `worker_id`, `started_at`,
///   `finished_at`, `total`, `passed`, `failed`, `error`, `skipped`,
///   `newly_failing` (tests newly failing in the run) and
///   `newly_failing_listed` (how many got their own event, at most 100).
/// - `test.newly_failing`: `commit`, `message` (first 300 characters).
/// - `test.newly_flaky`: `commit`, `reason` (`passed_on_retry`).
/// - `test.quarantined`: `reason`, `expires_at`, `auto`.
/// - `test.released`: `reason` (the entry's).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookEvent {
    /// Unique event id (UUIDv7), also in `X-Ptp-Event-Id`; the same on
    /// every retry: dedupe on it.
    pub id: String,
    /// `run.failed`, `test.newly_failing`, `test.newly_flaky`,
    /// `test.quarantined` or `test.released`; also in `X-Ptp-Event`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the master stored it.
    pub occurred_at: DateTime<Utc>,
    /// Project.
    pub project: String,
    /// Branch (run and newly failing/flaky events).
    pub branch: Option<String>,
    /// Run (run and newly failing/flaky events).
    pub run_id: Option<String>,
    /// Test (test events).
    pub test_id: Option<String>,
    /// The type's fields (see above).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl From<&outbox::StoredEvent> for WebhookEvent {
    fn from(e: &outbox::StoredEvent) -> WebhookEvent {
        WebhookEvent {
            id: e.id.clone(),
            kind: e.kind.as_str().to_string(),
            occurred_at: e.occurred_at,
            project: e.project.clone(),
            branch: e.branch.clone(),
            run_id: e.run_id.clone(),
            test_id: e.test_id.clone(),
            data: e.data.clone(),
        }
    }
}

/// Escapes what Slack's mrkdwn treats as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The one line a Slack target shows for `e`.
pub fn slack_text(e: &WebhookEvent) -> String {
    let d = &e.data;
    let num = |k: &str| d[k].as_u64().unwrap_or(0);
    let text = |k: &str| d[k].as_str().unwrap_or("").to_string();
    let branch = e.branch.as_deref().unwrap_or("?");
    let run = e.run_id.as_deref().unwrap_or("?");
    let test = e.test_id.as_deref().unwrap_or("?");
    let line = match e.kind.as_str() {
        "run.failed" => format!(
            ":x: {} {branch}: run {run} {} ({} failed, {} errors of {}; {} newly failing)",
            e.project,
            text("status"),
            num("failed"),
            num("error"),
            num("total"),
            num("newly_failing")
        ),
        "test.newly_failing" => {
            let m = text("message");
            let m = if m.is_empty() {
                String::new()
            } else {
                format!(": {m}")
            };
            format!(
                ":red_circle: {} {branch}: {test} newly failing in run {run}{m}",
                e.project
            )
        }
        "test.newly_flaky" => format!(
            ":warning: {} {branch}: {test} newly flaky (passed on retry) in run {run}",
            e.project
        ),
        "test.quarantined" => format!(
            ":no_entry: {}: {test} quarantined: {}",
            e.project,
            text("reason")
        ),
        "test.released" => format!(
            ":white_check_mark: {}: {test} released from quarantine",
            e.project
        ),
        other => format!("{}: {other}", e.project),
    };
    slack_escape(&line)
}

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = match hmac::Hmac::<sha2_hmac::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(e) => unreachable!("HMAC accepts any key length: {e}"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delay before attempt `failed + 1`: `min` doubled per failed attempt,
/// at most `max`.
pub fn backoff(failed: u32, min: Duration, max: Duration) -> Duration {
    2u32.checked_pow(failed.saturating_sub(1))
        .and_then(|f| min.checked_mul(f))
        .map_or(max, |d| d.min(max))
}

/// Delivery counters since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Deliveries answered 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed and will be retried.
    pub failed: AtomicU64,
    /// Deliveries given up on.
    pub dead: AtomicU64,
}

/// What `/health` and `/metrics` read: the target keys and counters.
#[derive(Debug, Default)]
pub struct Status {
    /// Keys of the configured targets.
    pub targets: Vec<String>,
    /// Counters.
    pub counters: Counters,
}

impl Status {
    /// The outbox rows of the configured targets.
    pub async fn backlog(&self, read: &SqlitePool) -> Result<outbox::Backlog, sqlx::Error> {
        outbox::backlog(read, &self.targets).await
    }
}

/// How the delivery task behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// First retry delay.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Age at which a delivery is given up on.
    pub max_age: Duration,
    /// Idle poll interval.
    pub poll: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl From<&WebhookArgs> for Settings {
    fn from(a: &WebhookArgs) -> Settings {
        Settings {
            retry_min: Duration::from_millis(a.webhook_retry_min_ms),
            retry_max: Duration::from_millis(a.webhook_retry_max_ms),
            max_age: Duration::from_secs(a.webhook_max_age_hours.saturating_mul(3600)),
            poll: Duration::from_millis(a.webhook_poll_ms),
            timeout: Duration::from_secs(a.webhook_timeout_secs),
        }
    }
}

/// Deliveries read per query.
const BATCH: u32 = 50;

/// Delivered rows are kept this long, dead ones [`DEAD_KEPT`].
const DELIVERED_KEPT: Duration = Duration::from_secs(24 * 3600);
const DEAD_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The writer's messages the delivery task sends.
#[derive(Clone)]
pub struct Writer {
    /// Records attempts.
    pub record: Recipient<RecordAttempt>,
    /// Prunes the outbox.
    pub prune: Recipient<PruneOutbox>,
}

/// The HTTP client of every delivery: `timeout` per request, no redirects.
fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ptp-master/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Delivers every target's events until `shutdown`; see the module docs.
pub async fn run(
    targets: Vec<Target>,
    read: SqlitePool,
    writer: Writer,
    settings: Settings,
    status: Arc<Status>,
    shutdown: CancellationToken,
) {
    if targets.is_empty() {
        return;
    }
    let http = match client(settings.timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhooks disabled: cannot build the HTTP client: {e}");
            return;
        }
    };
    let keys: Vec<String> = targets.iter().map(|t| t.key.clone()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for t in targets {
        tasks.spawn(deliver_target(
            t,
            http.clone(),
            read.clone(),
            writer.record.clone(),
            settings.clone(),
            status.clone(),
            shutdown.clone(),
        ));
    }
    loop {
        let now = Utc::now();
        let ago = |d: Duration| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(now)
        };
        let prune = PruneOutbox {
            delivered_before: ago(DELIVERED_KEPT),
            dead_before: ago(DEAD_KEPT),
            targets: keys.clone(),
        };
        match writer.prune.send(prune).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(deleted = n, "webhook outbox pruned"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("pruning the webhook outbox: {e}"),
            Err(e) => tracing::warn!("pruning the webhook outbox: the writer is gone: {e}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn deliver_target(
    t: Target,
    http: reqwest::Client,
    read: SqlitePool,
    record: Recipient<RecordAttempt>,
    settings: Settings,
    status: Arc<Status>,
    shutdown: CancellationToken,
) {
    let name = redacted(&t.url);
    while !shutdown.is_cancelled() {
        let wait = match outbox::pending(&read, &t.key, BATCH).await {
            Ok(batch) => {
                deliver_batch(
                    &t, &name, &http, &record, &settings, &status, batch, &shutdown,
                )
                .await
            }
            Err(e) => {
                tracing::warn!(target = %name, "reading the webhook outbox: {e}");
                settings.poll
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Delivers `batch` in order until one fails or is not due; returns how
/// long to wait before looking again.
#[allow(clippy::too_many_arguments)]
async fn deliver_batch(
    t: &Target,
    name: &str,
    http: &reqwest::Client,
    record: &Recipient<RecordAttempt>,
    settings: &Settings,
    status: &Status,
    batch: Vec<Pending>,
    shutdown: &CancellationToken,
) -> Duration {
    let full = batch.len() == BATCH as usize;
    for p in batch {
        if shutdown.is_cancelled() {
            return settings.poll;
        }
        let now = Utc::now();
        if p.next_attempt_at > now {
            let until = (p.next_attempt_at - now).to_std().unwrap_or_default();
            return until.min(settings.poll);
        }
        let error = post(t, http, &p).await.err();
        let now = Utc::now();
        let outcome = match error {
            None => {
                status.counters.delivered.fetch_add(1, Ordering::Relaxed);
                Attempt::Delivered
            }
            Some(error) => {
                let age = (now - p.created_at).to_std().unwrap_or_default();
                if age >= settings.max_age {
                    status.counters.dead.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target = %name, event = %p.event.id, "webhook given up after {} attempts: {error}", p.attempts + 1);
                    Attempt::GiveUp { error }
                } else {
                    status.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff(p.attempts + 1, settings.retry_min, settings.retry_max);
                    tracing::info!(target = %name, event = %p.event.id, "webhook failed, retrying in {delay:?}: {error}");
                    let next_attempt_at = chrono::Duration::from_std(delay)
                        .ok()
                        .and_then(|d| now.checked_add_signed(d))
                        .unwrap_or(now);
                    Attempt::Retry {
                        error,
                        next_attempt_at,
                    }
                }
            }
        };
        let failed = outcome != Attempt::Delivered && !matches!(outcome, Attempt::GiveUp { .. });
        let msg = RecordAttempt {
            target: t.key.clone(),
            event_seq: p.event.seq,
            outcome,
            at: now,
        };
        match record.send(msg).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(target = %name, "recording a webhook attempt: {e}");
                return settings.poll;
            }
            Err(e) => {
                tracing::warn!(target = %name, "recording a webhook attempt: the writer is gone: {e}");
                return settings.poll;
            }
        }
        if failed {
            return Duration::ZERO;
        }
    }
    if full { Duration::ZERO } else { settings.poll }
}

/// One POST of `p` to `t`; `Err` says why it did not count as delivered.
async fn post(t: &Target, http: &reqwest::Client, p: &Pending) -> Result<(), String> {
    let event = WebhookEvent::from(&p.event);
    let body = match t.format {
        Format::Json => serde_json::to_vec(&event),
        Format::Slack => serde_json::to_vec(&serde_json::json!({ "text": slack_text(&event) })),
    }
    .map_err(|e| format!("cannot encode the event: {e}"))?;
    let ts = Utc::now().timestamp();
    let mut req = http
        .post(t.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Ptp-Event", &event.kind)
        .header("X-Ptp-Event-Id", &event.id)
        .header("X-Ptp-Timestamp", ts.to_string());
    if let Some(secret) = &t.secret {
        req = req.header("X-Ptp-Signature", sign(secret, ts, &body));
    }
    match req.body(body).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!(
            "the receiver answered HTTP {}",
            r.status().as_u16()
        )),
        Err(e) => Err(format!("request failed: {}", e.without_url())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        // Split as timestamp-free data to check the HMAC itself...
        let mut mac = hmac::Hmac::<sha2_hmac::Sha256>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // ...and what is signed: "<timestamp>.<body>", hex, prefixed.
        let s = sign("whsec", 1_700_000_000, b"{\"a\":1}");
        let mut mac = hmac::Hmac::<sha2_hmac::Sha256>::new_from_slice(b"whsec").expect("key");
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            s,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_ne!(s, sign("other", 1_700_000_000, b"{\"a\":1}"));
        assert_ne!(s, sign("whsec", 1_700_000_001, b"{\"a\":1}"));
    }

    #[test]
    fn webhook_values_parse_with_events_and_format() {
        let t = parse_webhook(
            "http://hooks.example.com/x/y#events=run.failed+test.newly_failing&format=slack",
            Some("s"),
        )
        .expect("valid");
        assert_eq!(t.url.as_str(), "http://hooks.example.com/x/y");
        assert_eq!(
            t.events,
            vec![EventType::RunFailed, EventType::TestNewlyFailing]
        );
        assert_eq!(t.format, Format::Slack);
        assert_eq!(t.secret.as_deref(), Some("s"));
        let all = parse_webhook("http://127.0.0.1:9/hook", None).expect("valid");
        assert_eq!(all.events, EventType::ALL.to_vec());
        assert_eq!(all.format, Format::Json);
        // The key is stable and does not contain the URL.
        assert_eq!(
            all.key,
            parse_webhook("http://127.0.0.1:9/hook", None)
                .expect("valid")
                .key
        );
        assert!(!all.key.contains("hook"));
    }

    #[test]
    fn bad_webhook_values_say_what_is_wrong() {
        let err = |v: &str| parse_webhook(v, None).expect_err(v).to_string();
        assert!(
            err("ftp://h/x").contains("scheme \"ftp\""),
            "{}",
            err("ftp://h/x")
        );
        assert!(err("https://h/x").contains("https:// targets are not supported yet"));
        assert!(err("not a url").contains("is not a URL"));
        assert!(err("http://h/x#events=run.done").contains("unknown event \"run.done\""));
        assert!(err("http://h/x#format=xml").contains("format \"xml\""));
        assert!(err("http://h/x#colour=red").contains("not understood"));
    }

    #[test]
    fn args_collect_targets_from_options_and_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("hooks.json");
        std::fs::write(
            &file,
            r#"[{"url": "http://a.example/h", "events": ["test.released"], "format": "slack", "secret": "own"},
                {"url": "http://b.example/h"}]"#,
        )
        .expect("write");
        let args = WebhookArgs {
            webhook: vec!["http://c.example/h#events=run.failed".into()],
            webhooks_file: Some(file.clone()),
            webhook_secret: Some("default".into()),
            ..WebhookArgs::default()
        };
        let t = args.targets().expect("valid");
        assert_eq!(t.len(), 3);
        assert_eq!(t[1].secret.as_deref(), Some("own"));
        assert_eq!(t[1].events, vec![EventType::TestReleased]);
        assert_eq!(t[2].secret.as_deref(), Some("default"));
        let routes = args.routes(&t);
        assert_eq!(routes.default_branches, vec!["main", "master"]);
        assert_eq!(routes.targets[0].events, vec![EventType::RunFailed]);

        std::fs::write(&file, r#"[{"url": "http://a.example/h", "colour": 1}]"#).expect("write");
        let e = args.targets().expect_err("unknown field").to_string();
        assert!(e.contains("--webhooks-file") && e.contains("colour"), "{e}");
        let twice = WebhookArgs {
            webhook: vec!["http://c.example/h".into(), "http://c.example/h".into()],
            ..WebhookArgs::default()
        };
        assert!(
            twice
                .targets()
                .expect_err("dup")
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(600));
        assert_eq!(backoff(1, min, max), Duration::from_secs(1));
        assert_eq!(backoff(2, min, max), Duration::from_secs(2));
        assert_eq!(backoff(5, min, max), Duration::from_secs(16));
        assert_eq!(backoff(11, min, max), max);
        assert_eq!(backoff(u32::MAX, min, max), max);
    }

    #[test]
    fn slack_text_is_one_escaped_line() {
        let e = WebhookEvent {
            id: "x".into(),
            kind: "test.newly_failing".into(),
            occurred_at: Utc::now(),
            project: "demo".into(),
            branch: Some("main".into()),
            run_id: Some("r1".into()),
            test_id: Some("t.py::test_a".into()),
            data: serde_json::json!({"message": "assert 1 < 2"}),
        };
        assert_eq!(
            slack_text(&e),
            ":red_circle: demo main: t.py::test_a newly failing in run r1: assert 1 &lt; 2"
        );
    }
}
