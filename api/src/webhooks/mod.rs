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
//! Transport: ureq (blocking, rustls on ring) on tokio's blocking pool, one
//! request per attempt with a `--webhook-timeout-secs` deadline for the
//! whole exchange, redirects not followed, non-2xx answers read as answers.
//! reqwest, the workspace's async client, is built without TLS: switching
//! its rustls on would switch it on, without a crypto provider, for every
//! crate built with it. `https://` targets are verified against the system's
//! roots (the platform verifier) or, with `--webhook-ca-file`, against the
//! system's roots plus the file's ([`Client::new`]).
//!
//! Delivery runs only while this master holds the webhook lease
//! (`crate::cluster`, the [`Gate`] given to [`run`]), so of several
//! masters on one store one delivers: a target task waits for the gate
//! before each read of the outbox and checks it before each POST; a POST
//! already sent when the lease is lost completes (at least once, as
//! above). While NATS is away no lease is held and the outbox waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::Recipient;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use ptp_actors::gate::Gate;
use ptp_actors::read::ReadPool;
use ptp_actors::read::webhooks::{backlog, pending};
use ptp_actors::webhooks::{self as outbox, Attempt, EventType, Pending, Route, Routes};
use ptp_actors::writer::{PruneOutbox, RecordAttempt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

mod client;
mod config;
mod payload;

pub use client::*;
pub use config::*;
pub use payload::*;

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
    pub async fn backlog(&self, read: &ReadPool) -> Result<outbox::Backlog, sqlx::Error> {
        backlog(read, &self.targets).await
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
}

impl From<&WebhookArgs> for Settings {
    fn from(a: &WebhookArgs) -> Settings {
        Settings {
            retry_min: Duration::from_millis(a.webhook_retry_min_ms),
            retry_max: Duration::from_millis(a.webhook_retry_max_ms),
            max_age: Duration::from_secs(a.webhook_max_age_hours.saturating_mul(3600)),
            poll: Duration::from_millis(a.webhook_poll_ms),
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

/// Delivers every target's events while `gate` is open, until
/// `shutdown`; see the module docs.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    targets: Vec<Target>,
    http: Client,
    read: ReadPool,
    writer: Writer,
    settings: Settings,
    status: Arc<Status>,
    mut gate: Gate,
    shutdown: CancellationToken,
) {
    if targets.is_empty() {
        return;
    }
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
            gate.clone(),
            shutdown.clone(),
        ));
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = gate.opened() => {}
        }
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

#[allow(clippy::too_many_arguments)]
async fn deliver_target(
    t: Target,
    http: Client,
    read: ReadPool,
    record: Recipient<RecordAttempt>,
    settings: Settings,
    status: Arc<Status>,
    mut gate: Gate,
    shutdown: CancellationToken,
) {
    let name = redacted(&t.url);
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = gate.opened() => {}
        }
        let wait = match pending(&read, &t.key, BATCH).await {
            Ok(batch) => {
                deliver_batch(
                    &t, &name, &http, &record, &settings, &status, batch, &gate, &shutdown,
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
    http: &Client,
    record: &Recipient<RecordAttempt>,
    settings: &Settings,
    status: &Status,
    batch: Vec<Pending>,
    gate: &Gate,
    shutdown: &CancellationToken,
) -> Duration {
    let full = batch.len() == BATCH as usize;
    for p in batch {
        if shutdown.is_cancelled() || !gate.is_open() {
            return settings.poll;
        }
        let now = Utc::now();
        if p.next_attempt_at > now {
            // The target's oldest delivery is not due: nothing of this
            // target may go before it (in order), so sleep until it is due
            // instead of re-reading the batch every poll.
            return (p.next_attempt_at - now).to_std().unwrap_or_default();
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
        assert!(parse_webhook("https://hooks.slack.com/services/T/B/X", None).is_ok());
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
    fn bad_ca_files_are_start_errors_naming_the_option_and_path() {
        let dir = tempfile::tempdir().expect("dir");
        let err = |file: &std::path::Path| {
            let args = WebhookArgs {
                webhook_ca_file: Some(file.to_path_buf()),
                ..WebhookArgs::default()
            };
            let e = Client::new(&args).expect_err("a bad CA file").to_string();
            assert!(
                e.starts_with("--webhook-ca-file ") && e.contains(&file.display().to_string()),
                "{e}"
            );
            e
        };
        let missing = dir.path().join("missing.pem");
        assert!(err(&missing).contains("cannot open"));
        let text = dir.path().join("text.pem");
        std::fs::write(&text, "not a certificate\n").expect("write");
        assert!(err(&text).contains("holds no certificate"));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        assert!(
            err(&garbage).contains("certificate 1 is not a usable CA certificate"),
            "{}",
            err(&garbage)
        );
        let huge = dir.path().join("huge.pem");
        std::fs::write(&huge, vec![b'A'; MAX_CA_FILE_BYTES as usize + 1]).expect("write");
        assert!(err(&huge).contains("larger than"));
        // No file: the platform verifier, nothing to read.
        assert!(Client::new(&WebhookArgs::default()).is_ok());
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
