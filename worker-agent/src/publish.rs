//! Publishing to NATS: heartbeats on core NATS, runs on JetStream with
//! retries (backon, exponential with jitter) until a deadline.
//!
//! The deadline bounds everything the agent does with NATS once the test
//! command has finished: the run, the spooled runs sent after it, and the
//! final flush of heartbeats ([`Publisher::close`] never waits past it), so
//! `PTP_PUBLISH_TIMEOUT=N` means the agent exits at most N seconds after its
//! command did.
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
use tokio::time::Instant;

/// Where runs go: NATS JetStream, or the master over HTTP
/// ([`crate::master`]), which publishes into the same stream.
// One per agent process, never in a collection: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Sender {
    /// Publish to JetStream.
    Nats(Publisher),
    /// Send to the master's `/agent/messages`.
    Http(crate::master::Master),
}

impl Sender {
    /// Where runs go, for messages: `NATS at <url>` / `the master at <url>`.
    pub fn target(&self) -> String {
        match self {
            Sender::Nats(p) => format!("NATS at {}", p.url()),
            Sender::Http(m) => format!("the master at {}", m.url()),
        }
    }

    /// A heartbeat (NATS only: the HTTP transport sends none).
    pub async fn heartbeat(&self, hb: Heartbeat) {
        if let Sender::Nats(p) = self {
            p.heartbeat(hb).await;
        }
    }

    /// Delivers a run into the stream, retrying until `deadline`.
    pub async fn publish_run(
        &self,
        run: &RunInfo,
        cases: &[TestCase],
        deadline: Instant,
        quiet: bool,
    ) -> Result<(), String> {
        match self {
            Sender::Nats(p) => p.publish_run(run, cases, deadline, quiet).await,
            Sender::Http(m) => m.publish_run(run, cases, deadline, quiet).await,
        }
    }

    /// Closes, never waiting past `deadline`.
    pub async fn close(self, deadline: Instant) {
        if let Sender::Nats(p) = self {
            p.close(deadline).await;
        }
    }
}

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

/// Longest wait for heartbeats to be flushed when closing.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

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
            .connect(
                ptp_nats::server_addrs(url)
                    .map_err(|e| format!("{e} (set --nats-url / NATS_URL)"))?,
            )
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

    /// The connection (opened in the background), for reads such as the
    /// quarantine list.
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
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

    /// Publishes a run, retrying with exponential backoff until `deadline`.
    /// On success every message is acknowledged by the stream.
    pub async fn publish_run(
        &self,
        run: &RunInfo,
        cases: &[TestCase],
        deadline: Instant,
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
        match tokio::time::timeout_at(deadline, ready_then_publish).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "gave up at the publish deadline (PTP_PUBLISH_TIMEOUT): NATS at {} did not acknowledge the run",
                self.url
            )),
        }
    }

    /// Flushes pending core publishes (heartbeats) and closes: for at most
    /// [`CLOSE_GRACE`], never past `deadline`, and not at all when not
    /// connected (a flush would only wait for a server that is away).
    pub async fn close(self, deadline: Instant) {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let until = deadline.min(Instant::now() + CLOSE_GRACE);
        let _ = tokio::time::timeout_at(until, self.client.flush()).await;
    }
}

/// The heartbeats of one run: the fields every beat repeats, so each beat
/// names only its phase.
#[derive(Debug, Clone)]
pub struct Beats {
    /// Worker id.
    pub worker_id: String,
    /// Host name.
    pub host: String,
    /// Project.
    pub project: String,
    /// The run beating.
    pub run_id: String,
    /// Seconds between ticks, told to the master so it knows when a worker
    /// is overdue.
    pub interval_secs: u64,
}

impl Beats {
    /// The heartbeat of `phase`, stamped now.
    pub fn beat(&self, phase: HeartbeatPhase) -> Heartbeat {
        Heartbeat {
            schema: schema::SCHEMA_VERSION,
            worker_id: self.worker_id.clone(),
            host: Some(self.host.clone()),
            project: self.project.clone(),
            run_id: Some(self.run_id.clone()),
            phase,
            interval_secs: self.interval_secs,
            at: Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PTP_PUBLISH_TIMEOUT=3 took 5.2 s and =1 took 3.0 s: after the
    /// publish gave up, closing waited 2 s more for a server that was not
    /// there. In virtual time (paused clock), so the bound is exact and
    /// nothing depends on the machine's speed.
    #[tokio::test(start_paused = true)]
    async fn publishing_and_closing_end_at_the_deadline() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let p = Publisher::connect(
            &format!("nats://127.0.0.1:{port}"),
            &ptp_nats::NatsAuth::default(),
        )
        .await
        .expect("a valid URL connects in the background");
        let now = chrono::Utc::now();
        let run = RunInfo {
            run_id: "r1".into(),
            project: "p".into(),
            branch: None,
            commit: None,
            worker_id: "w".into(),
            host: None,
            runner: None,
            command: None,
            started_at: now,
            finished_at: now,
            duration_secs: 0.0,
            exit_code: Some(0),
            status: schema::RunStatus::NoTests,
            counts: schema::Counts::default(),
            cases_complete: true,
            note: None,
        };
        let start = Instant::now();
        let deadline = start + Duration::from_secs(1);
        let err = p
            .publish_run(&run, &[], deadline, true)
            .await
            .expect_err("nothing listens");
        assert!(err.contains("deadline"), "{err}");
        p.close(deadline).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }
}
