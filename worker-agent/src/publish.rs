//! Publishing to NATS: heartbeats on core NATS, runs on JetStream with
//! retries (backon, exponential with jitter) inside a time budget.
//!
//! The connection is opened in the background when the agent starts, so a
//! slow or absent server never delays the test command. Publishing a run is
//! idempotent (every message carries a stable `Nats-Msg-Id` and the master
//! dedups by run id and chunk), so a retry resends the whole run safely.

use std::time::Duration;

use async_nats::jetstream;
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use ptp_nats::schema::{self, Heartbeat, HeartbeatPhase, RunInfo, TestCase};

/// A lazily connected NATS client.
#[derive(Clone)]
pub struct Publisher {
    client: async_nats::Client,
    js: jetstream::Context,
    url: String,
}

/// How long a publish waits for a connection still being made before its
/// first attempt (then it retries with backoff, within its budget).
const CONNECT_GRACE: Duration = Duration::from_secs(1);

/// Default max payload when the server has not said yet.
const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

impl Publisher {
    /// Starts connecting to `url` in the background. Fails only for a URL
    /// that cannot be parsed or credentials/TLS files that cannot be read.
    pub async fn connect(url: &str, auth: &ptp_nats::NatsAuth) -> Result<Publisher, String> {
        let options = auth
            .apply(async_nats::ConnectOptions::new())
            .await
            .map_err(|e| e.to_string())?;
        let client = options
            .name("ptp-agent")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| format!("invalid NATS URL {url:?}: {e} (set --nats-url / NATS_URL)"))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));
        Ok(Publisher {
            client,
            js,
            url: url.to_string(),
        })
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends a heartbeat; best effort (never waits for a server).
    pub async fn heartbeat(&self, hb: Heartbeat) {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        if let Ok(bytes) = serde_json::to_vec(&hb) {
            let _ = self
                .client
                .publish(ptp_nats::subjects::HEARTBEAT, bytes.into())
                .await;
        }
    }

    /// Publishes a run, retrying with exponential backoff for up to
    /// `budget`. On success every message is acknowledged by the stream.
    pub async fn publish_run(
        &self,
        run: &RunInfo,
        cases: &[TestCase],
        budget: Duration,
        quiet: bool,
    ) -> Result<(), String> {
        let attempt = || async {
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return Err(format!("not connected to NATS at {}", self.url));
            }
            let max_payload = match self.client.server_info().max_payload {
                0 => DEFAULT_MAX_PAYLOAD,
                n => n,
            };
            let msgs = schema::encode_run(run, cases, max_payload).map_err(|e| e.to_string())?;
            ptp_nats::publish_all(&self.js, msgs)
                .await
                .map_err(|e| e.to_string())
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        let retried = attempt
            .retry(backoff)
            .when(|e: &String| !e.contains("encodes to"))
            .notify(|e: &String, wait: Duration| {
                if !quiet {
                    eprintln!("ptp-agent: publishing failed ({e}); retrying in {wait:.1?}");
                }
            });
        // The connection is made in the background (the command runs
        // meanwhile); a command faster than the handshake would otherwise
        // fail its first attempt and wait out a backoff step (250-500 ms,
        // seen as +340 ms around an instant test command in the bench). A
        // flush is queued until the connection is up, so it waits for it.
        let ready_then_publish = async {
            if self.client.connection_state() != async_nats::connection::State::Connected {
                let _ = tokio::time::timeout(CONNECT_GRACE, self.client.flush()).await;
            }
            retried.await
        };
        match tokio::time::timeout(budget, ready_then_publish).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "gave up after {}s: NATS at {} did not acknowledge the run",
                budget.as_secs(),
                self.url
            )),
        }
    }

    /// Flushes pending core publishes (heartbeats) and closes, briefly.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
    }
}

/// A heartbeat for `phase`.
pub fn heartbeat(
    worker_id: &str,
    host: &str,
    project: &str,
    run_id: &str,
    phase: HeartbeatPhase,
    interval_secs: u64,
) -> Heartbeat {
    Heartbeat {
        schema: schema::SCHEMA_VERSION,
        worker_id: worker_id.to_string(),
        host: Some(host.to_string()),
        project: project.to_string(),
        run_id: Some(run_id.to_string()),
        phase,
        interval_secs,
        at: Utc::now(),
    }
}
