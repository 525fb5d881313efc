//! Ingest: consumes the durable results stream and hands each batch to the
//! writer actor, acking only after the writer has committed it.
//!
//! Shape: pull → convert → store → ack, one batch at a time.
//! - Pull: the durable pull consumer from `ptp-nats`, in batches of whatever
//!   is ready (up to [`IngestConfig::batch_max`] messages).
//! - Convert: every message becomes a [`BatchItem`]. A message that cannot be
//!   decoded or fails validation becomes a `Reject` item carrying the reason,
//!   so it is recorded (visible at `GET /rejected`) and acked: one malformed
//!   report never blocks the stream.
//! - Store: one `StoreBatch` to the writer, one SQLite transaction.
//! - Ack: only after the writer replied `Ok`. If the write failed (disk full,
//!   database locked), every message of the batch is nak'ed with a delay and
//!   redelivered later; nothing acked is ever lost.
//! - Poison: if the database refuses something in the data (a constraint, a
//!   value it cannot hold), the batch is retried one message at a time so
//!   the others are stored; the culprit is retried until it has been
//!   delivered `max_deliveries` times, then kept as a dead letter (whole
//!   payload, `GET /rejected`) and acked. It never blocks the stream.
//!
//! Heartbeats arrive on core NATS and go straight to the aggregates actor.
//!
//! Shutdown: when the token is cancelled, ingest stops pulling, finishes and
//! acks the batch in hand, and returns; the caller then drains the client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod heap;
pub mod metrics;

use actix::Recipient;
use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use futures::StreamExt;
use ptp_actors::aggregates::{RecordHeartbeat, WorkerPhase};
use ptp_actors::model::{self, CaseRecord, Counts, Rejection, RunRecord};
use ptp_actors::writer::{BatchItem, BatchReport, StoreBatch};
use ptp_nats::schema::{self, HeartbeatPhase, WireMessage};
use tokio_util::sync::CancellationToken;

/// Bytes of a refused message kept as an excerpt for diagnosis.
const EXCERPT_BYTES: usize = 512;

/// Ingest settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Most messages stored in one transaction.
    pub batch_max: usize,
    /// Delay before a message whose write failed is redelivered.
    pub retry_delay: Duration,
    /// Settings applied to the stream when ingest (re)connects.
    pub stream: ptp_nats::StreamSettings,
    /// The consumer's ack wait.
    pub ack_wait: Duration,
    /// Deliveries after which a message the database keeps refusing, while
    /// it accepts others, becomes a dead letter.
    pub max_deliveries: i64,
    /// Where the ids of the runs each stored batch completed are sent,
    /// after the ack (the master's automatic quarantine). A full channel
    /// makes ingest wait (results wait in the stream); a closed one is
    /// ignored.
    pub completed: Option<tokio::sync::mpsc::Sender<Vec<String>>>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_max: 32,
            retry_delay: Duration::from_secs(2),
            stream: ptp_nats::StreamSettings::default(),
            ack_wait: ptp_nats::ACK_WAIT,
            max_deliveries: 5,
            completed: None,
        }
    }
}

/// What ingest has seen, for `GET /health`. Shared with the API.
///
/// It starts out "not ready" (the stream and consumer are not ensured yet),
/// so `/health` answers 200 only once results can actually flow.
#[derive(Debug)]
pub struct IngestHealth {
    inner: Mutex<HealthState>,
    /// Messages per stored batch (`/metrics`).
    pub batch_messages: metrics::Histogram,
    /// Seconds from handing a batch to the writer to its commit (`/metrics`).
    pub commit_seconds: metrics::Histogram,
}

impl Default for IngestHealth {
    fn default() -> Self {
        IngestHealth {
            inner: Mutex::new(HealthState {
                consumer_error: Some(
                    "starting: the results stream and consumer are not ready yet".into(),
                ),
                ..HealthState::default()
            }),
            batch_messages: metrics::Histogram::new(metrics::BATCH),
            commit_seconds: metrics::Histogram::new(metrics::SECONDS),
        }
    }
}

/// A snapshot of [`IngestHealth`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HealthState {
    /// Why the consumer is not pulling, when it is not.
    pub consumer_error: Option<String>,
    /// Why the last write failed, until a write succeeds again.
    pub store_error: Option<String>,
    /// Messages acked since start.
    pub acked: u64,
    /// Runs completed since start.
    pub runs_completed: u64,
    /// Messages recorded as rejected since start.
    pub rejected: u64,
    /// Messages kept as dead letters since start.
    pub dead_letters: u64,
    /// Heartbeats refused since start (malformed or impossible values).
    pub heartbeats_refused: u64,
    /// Why the last heartbeat was refused.
    pub last_heartbeat_refusal: Option<String>,
    /// When a refused heartbeat was last logged.
    #[serde(skip)]
    pub heartbeat_logged_at: Option<chrono::DateTime<Utc>>,
}

impl IngestHealth {
    /// The current state.
    pub fn snapshot(&self) -> HealthState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // A panic while holding this lock cannot leave the counters invalid.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update<T>(&self, f: impl FnOnce(&mut HealthState) -> T) -> T {
        f(&mut self.lock())
    }
}

/// Converts one wire message (or its failure to decode) into a writer item.
pub fn to_item(subject: &str, msg_id: Option<&str>, payload: &[u8]) -> BatchItem {
    match schema::decode(payload) {
        Ok(WireMessage::Cases(c)) => BatchItem::Chunk {
            digest: c.digest(),
            run_id: c.run_id,
            chunk: c.chunk,
            cases: c.cases.into_iter().map(case_record).collect(),
        },
        Ok(WireMessage::Run(r)) => BatchItem::Final {
            digest: r.digest(),
            chunks: r.chunks,
            run: Box::new(run_record(r.run)),
        },
        Err(e) => BatchItem::Reject(Rejection {
            received_at: Utc::now(),
            subject: Some(subject.to_string()),
            msg_id: msg_id.map(str::to_string),
            run_id: run_id_hint(payload),
            reason: e.to_string(),
            excerpt: Some(excerpt(payload)),
            payload: None,
        }),
    }
}

fn excerpt(payload: &[u8]) -> String {
    let cut = payload.len().min(EXCERPT_BYTES);
    let mut s = String::from_utf8_lossy(&payload[..cut]).into_owned();
    if payload.len() > cut {
        s.push_str(&format!("… [{} more bytes]", payload.len() - cut));
    }
    s
}

/// Best effort: the run id of a message that failed validation.
fn run_id_hint(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let id = v
        .get("run_id")
        .or_else(|| v.get("run").and_then(|r| r.get("run_id")))?
        .as_str()?;
    Some(id.chars().take(128).collect())
}

fn outcome(o: schema::Outcome) -> model::Outcome {
    match o {
        schema::Outcome::Failed => model::Outcome::Failed,
        schema::Outcome::Error => model::Outcome::Error,
        schema::Outcome::Xpassed => model::Outcome::Xpassed,
        schema::Outcome::Passed => model::Outcome::Passed,
        schema::Outcome::Skipped => model::Outcome::Skipped,
        schema::Outcome::Xfailed => model::Outcome::Xfailed,
    }
}

fn case_record(c: schema::TestCase) -> CaseRecord {
    CaseRecord {
        test_id: c.test_id,
        file: c.file,
        classname: c.classname,
        name: c.name,
        outcome: outcome(c.outcome),
        duration_secs: c.duration_secs,
        message: c.message,
        traceback: c.traceback,
        output: c.output,
        retries: c.retries,
        flaky: c.flaky,
        owners: c.owners,
        quarantined: c.quarantined,
    }
}

/// The wire's run status as the model's.
fn run_status(s: schema::RunStatus) -> model::RunStatus {
    use model::RunStatus as M;
    use schema::RunStatus as W;
    match s {
        W::Passed => M::Passed,
        W::Failed => M::Failed,
        W::Interrupted => M::Interrupted,
        W::InternalError => M::InternalError,
        W::UsageError => M::UsageError,
        W::NoTests => M::NoTests,
        W::Crashed => M::Crashed,
        W::TimedOut => M::TimedOut,
    }
}

fn run_record(r: schema::RunInfo) -> RunRecord {
    let c = r.counts;
    let counts = Counts {
        total: c.total,
        passed: c.passed,
        failed: c.failed,
        error: c.error,
        skipped: c.skipped,
        xfailed: c.xfailed,
        xpassed: c.xpassed,
    };
    RunRecord {
        run_id: r.run_id,
        project: r.project,
        branch: r.branch,
        commit: r.commit,
        worker_id: r.worker_id,
        host: r.host,
        runner: r.runner,
        command: r.command,
        started_at: r.started_at,
        finished_at: r.finished_at,
        duration_secs: r.duration_secs,
        exit_code: r.exit_code,
        status: run_status(r.status),
        pass_rate: counts.pass_rate(),
        counts,
        cases_complete: r.cases_complete,
        note: r.note,
        // Counted by the writer when the run completes.
        quarantined_failures: 0,
    }
}

/// Converts a wire heartbeat (validated by [`schema::decode_heartbeat`])
/// into the aggregates' message.
pub fn heartbeat_record(hb: schema::Heartbeat) -> RecordHeartbeat {
    RecordHeartbeat {
        worker_id: hb.worker_id,
        host: hb.host,
        project: hb.project,
        run_id: hb.run_id,
        phase: match hb.phase {
            HeartbeatPhase::Start => WorkerPhase::Start,
            HeartbeatPhase::Tick => WorkerPhase::Tick,
            HeartbeatPhase::End => WorkerPhase::End,
        },
        interval_secs: hb.interval_secs,
        at: hb.at,
    }
}

/// Runs ingest until `shutdown` is cancelled: the stream consumer and the
/// heartbeat subscriber. Reconnects by itself when NATS goes away.
pub async fn run(
    client: async_nats::Client,
    writer: Recipient<StoreBatch>,
    heartbeats: Recipient<RecordHeartbeat>,
    config: IngestConfig,
    health: Arc<IngestHealth>,
    shutdown: CancellationToken,
) {
    let hb = tokio::spawn(run_heartbeats(
        client.clone(),
        heartbeats,
        health.clone(),
        shutdown.clone(),
    ));
    run_consumer(client, writer, config, health, shutdown).await;
    let _ = hb.await;
}

async fn run_heartbeats(
    client: async_nats::Client,
    to: Recipient<RecordHeartbeat>,
    health: Arc<IngestHealth>,
    shutdown: CancellationToken,
) {
    let mut sub = match client.subscribe(ptp_nats::subjects::HEARTBEAT).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot subscribe to heartbeats: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = sub.next() => match msg {
                None => break,
                Some(m) => match schema::decode_heartbeat(&m.payload, Utc::now()) {
                    Ok(hb) => to.do_send(heartbeat_record(hb)),
                    Err(e) => refuse_heartbeat(&health, e),
                },
            },
        }
    }
}

/// Counts a refused heartbeat for `/health` and logs it, at most once a
/// minute: heartbeats are frequent and not stored, so a misbehaving worker
/// must not flood the log or the database. The reason is bounded by
/// [`schema::decode_heartbeat`].
fn refuse_heartbeat(health: &IngestHealth, e: schema::DecodeError) {
    let reason = format!("heartbeat refused: {e}");
    let log = health.update(|h| {
        h.heartbeats_refused += 1;
        let now = Utc::now();
        let due = h
            .heartbeat_logged_at
            .is_none_or(|t| now.signed_duration_since(t) >= chrono::TimeDelta::minutes(1));
        if due {
            h.heartbeat_logged_at = Some(now);
        }
        h.last_heartbeat_refusal = Some(reason.clone());
        due.then_some(h.heartbeats_refused)
    });
    if let Some(n) = log {
        tracing::warn!("{reason} ({n} refused since start; logged at most once a minute)");
    }
}

async fn run_consumer(
    client: async_nats::Client,
    writer: Recipient<StoreBatch>,
    config: IngestConfig,
    health: Arc<IngestHealth>,
    shutdown: CancellationToken,
) {
    let js = jetstream::new(client);
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match consume(&js, &writer, &config, &health, &shutdown).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!("ingest: {e}; retrying in {backoff:?}");
                health.update(|h| h.consumer_error = Some(e));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Pulls and stores until shutdown (`Ok`) or until the consumer fails (`Err`
/// with a reason, and the caller retries).
///
/// Pulls are explicit batches (no prefetch beyond the batch in hand), so on
/// shutdown nothing has been delivered to this master that it has not
/// stored and acked: the batch being collected is finished first.
async fn consume(
    js: &jetstream::Context,
    writer: &Recipient<StoreBatch>,
    config: &IngestConfig,
    health: &IngestHealth,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let stream = ptp_nats::ensure_stream(js, &config.stream)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = ptp_nats::ensure_consumer(&stream, config.ack_wait)
        .await
        .map_err(|e| e.to_string())?;
    health.update(|h| h.consumer_error = None);
    // Whether a batch was stored since the heap was last trimmed.
    let mut stored_since_trim = false;
    while !shutdown.is_cancelled() {
        // Wait (up to 500 ms) for one message, then take whatever else is
        // already there without waiting: a lone small run is stored at
        // once instead of after the pull's expiry, and a busy stream still
        // fills whole batches. Pulls are bounded by count only: messages
        // are at most NATS's max_payload (1 MiB by default), so the default
        // 32 keeps a pull far under the client's 64 MiB pending limit (an
        // unbounded pull made the server drop the connection as a slow
        // consumer). Not by `max_bytes`: a no-wait pull that ends on its
        // byte budget is not closed by nats-server 2.9, and the client then
        // waits out its timeout (bench: 50 runs of 60,000 cases took 247 s
        // instead of 41 s).
        let mut msgs = Vec::new();
        let mut failure = None;
        let first = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| format!("cannot pull from consumer {}: {e}", ptp_nats::CONSUMER))?;
        collect(first, &mut msgs, &mut failure).await;
        if msgs.is_empty() && failure.is_none() && stored_since_trim {
            // Idle for a whole pull: give the batches' memory back.
            heap::release_free_memory();
            stored_since_trim = false;
        }
        if !msgs.is_empty() && failure.is_none() && config.batch_max > 1 {
            let rest = consumer
                .fetch()
                .max_messages(config.batch_max - 1)
                .messages()
                .await
                .map_err(|e| format!("cannot pull from consumer {}: {e}", ptp_nats::CONSUMER))?;
            collect(rest, &mut msgs, &mut failure).await;
        }
        if !msgs.is_empty() {
            store_and_ack(msgs, writer, config, health).await;
            stored_since_trim = true;
        }
        if let Some(f) = failure {
            return Err(f);
        }
    }
    Ok(())
}

/// The longest a pull may go without a message or its end (on top of its
/// own expiry). A pull request that reached a consumer leader which then
/// died is never answered: without this bound ingest waited on it forever
/// after a NATS node was killed (the R3 cluster test, under load).
pub const PULL_STALL: Duration = Duration::from_secs(10);

/// Drains one pull's messages into `msgs`; a pull error, or no answer for
/// [`PULL_STALL`], ends it in `failure` (what was received is kept: the
/// caller stores and acks it, then pulls again on a fresh consumer handle).
async fn collect(
    mut pull: jetstream::consumer::pull::Batch,
    msgs: &mut Vec<jetstream::Message>,
    failure: &mut Option<String>,
) {
    loop {
        match tokio::time::timeout(PULL_STALL, pull.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(m))) => msgs.push(m),
            Ok(Some(Err(e))) => {
                *failure = Some(format!("pull failed: {e}"));
                break;
            }
            Err(_) => {
                *failure = Some(format!(
                    "a pull got no answer for {PULL_STALL:?} (the consumer's leader may have \
                     changed); pulling again"
                ));
                break;
            }
        }
    }
}

/// Why a store failed, as ingest must react to it.
enum Failure {
    /// The database as a whole is unwell (locked, full, I/O): everything waits.
    Database(String),
    /// The database refused something in the data: isolate the culprit.
    Data(String),
}

async fn store(
    writer: &Recipient<StoreBatch>,
    items: Vec<BatchItem>,
) -> Result<BatchReport, Failure> {
    match writer.send(StoreBatch(items)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) if e.blames_the_data() => Err(Failure::Data(e.to_string())),
        Ok(Err(e)) => Err(Failure::Database(e.to_string())),
        Err(e) => Err(Failure::Database(format!("writer actor unavailable: {e}"))),
    }
}

fn msg_id(m: &jetstream::Message) -> Option<&str> {
    m.headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str())
}

fn item_of(m: &jetstream::Message) -> BatchItem {
    to_item(m.subject.as_str(), msg_id(m), &m.payload)
}

async fn ack_all(msgs: &[jetstream::Message]) {
    for m in msgs {
        if let Err(e) = m.ack().await {
            // Unacked means redelivered; the writer is idempotent.
            tracing::warn!("ack failed (message will be redelivered): {e}");
        }
    }
}

async fn nak_all(msgs: &[jetstream::Message], delay: Duration) {
    for m in msgs {
        let _ = m.ack_with(AckKind::Nak(Some(delay))).await;
    }
}

/// Counts a stored and acked batch, and hands its completed runs on.
async fn record(health: &IngestHealth, config: &IngestConfig, acked: usize, report: &BatchReport) {
    health.update(|h| {
        h.store_error = None;
        h.acked += acked as u64;
        h.runs_completed += report.completed.len() as u64;
        h.rejected += report.rejected as u64;
    });
    if let Some(to) = &config.completed
        && !report.completed.is_empty()
    {
        // Closed: nobody listens any more (shutting down).
        let _ = to.send(report.completed.clone()).await;
    }
}

/// Stores a pulled batch in one transaction and acks it. If the database
/// as a whole fails, every message is nak'ed for later. If it refuses
/// something in the data, the batch is split into single messages so the
/// healthy ones are stored and acked and only the culprit waits (see
/// [`isolate`]).
async fn store_and_ack(
    msgs: Vec<jetstream::Message>,
    writer: &Recipient<StoreBatch>,
    config: &IngestConfig,
    health: &IngestHealth,
) {
    let items = msgs.iter().map(item_of).collect();
    let started = std::time::Instant::now();
    let stored = store(writer, items).await;
    health
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    match stored {
        Ok(report) => {
            health.batch_messages.observe(msgs.len() as f64);
            ack_all(&msgs).await;
            record(health, config, msgs.len(), &report).await;
            tracing::debug!(
                messages = msgs.len(),
                completed = report.completed.len(),
                duplicates = report.duplicates,
                rejected = report.rejected,
                "stored batch"
            );
        }
        Err(Failure::Database(reason)) => {
            tracing::error!(
                "storing {} messages failed, will retry: {reason}",
                msgs.len()
            );
            health.update(|h| h.store_error = Some(reason));
            nak_all(&msgs, config.retry_delay).await;
            tokio::time::sleep(config.retry_delay).await;
        }
        Err(Failure::Data(reason)) => {
            tracing::warn!(
                "the database refused data in a batch of {} messages ({reason}); storing them one by one",
                msgs.len()
            );
            isolate(msgs, writer, config, health).await;
        }
    }
}

/// Stores messages one at a time after the database refused data in their
/// batch. A message refused on its own is nak'ed and retried; once it has
/// been delivered [`IngestConfig::max_deliveries`] times it is stored as a
/// dead letter (a rejection that keeps the whole payload, `GET /rejected`)
/// and acked, so a poison message never blocks the stream. Dead-lettering
/// is itself a write: if the database fails as a whole meanwhile, nothing is
/// dead-lettered and everything left waits unacked.
async fn isolate(
    msgs: Vec<jetstream::Message>,
    writer: &Recipient<StoreBatch>,
    config: &IngestConfig,
    health: &IngestHealth,
) {
    for (i, m) in msgs.iter().enumerate() {
        let reason = match store(writer, vec![item_of(m)]).await {
            Ok(report) => {
                ack_all(std::slice::from_ref(m)).await;
                record(health, config, 1, &report).await;
                continue;
            }
            Err(Failure::Database(reason)) => {
                tracing::error!("storing failed, will retry: {reason}");
                health.update(|h| h.store_error = Some(reason));
                nak_all(&msgs[i..], config.retry_delay).await;
                return;
            }
            Err(Failure::Data(reason)) => reason,
        };
        let delivered = m.info().map(|info| info.delivered).unwrap_or(1);
        let id = msg_id(m).unwrap_or("(no message id)");
        if delivered < config.max_deliveries {
            tracing::warn!(
                "message {id} refused by the database (delivery {delivered} of {}): {reason}",
                config.max_deliveries
            );
            let _ = m.ack_with(AckKind::Nak(Some(config.retry_delay))).await;
            continue;
        }
        let dead = Rejection {
            received_at: Utc::now(),
            subject: Some(m.subject.to_string()),
            msg_id: msg_id(m).map(str::to_string),
            run_id: run_id_hint(&m.payload),
            reason: format!(
                "dead letter: the database refused this message on {delivered} deliveries \
                 while accepting others ({reason}); its payload is kept for replay"
            ),
            excerpt: Some(excerpt(&m.payload)),
            payload: Some(m.payload.to_vec()),
        };
        match store(writer, vec![BatchItem::Reject(dead)]).await {
            Ok(report) => {
                tracing::error!(
                    "message {id} dead-lettered after {delivered} deliveries: {reason}"
                );
                ack_all(std::slice::from_ref(m)).await;
                record(health, config, 1, &report).await;
                health.update(|h| h.dead_letters += 1);
            }
            Err(Failure::Database(e) | Failure::Data(e)) => {
                tracing::error!("cannot dead-letter message {id}, will retry: {e}");
                nak_all(&msgs[i..], config.retry_delay).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_becomes_a_rejection_with_reason() {
        match to_item("ptp.results.run", Some("x:run"), b"{not json") {
            BatchItem::Reject(r) => {
                assert!(r.reason.contains("not valid JSON"), "{}", r.reason);
                assert_eq!(r.msg_id.as_deref(), Some("x:run"));
                assert_eq!(r.excerpt.as_deref(), Some("{not json"));
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        match to_item(
            "s",
            None,
            br#"{"schema": 7, "kind": "run", "run": {"run_id": "abc"}}"#,
        ) {
            BatchItem::Reject(r) => {
                assert!(
                    r.reason.contains("unknown schema version 7"),
                    "{}",
                    r.reason
                );
                assert_eq!(r.run_id.as_deref(), Some("abc"));
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}
