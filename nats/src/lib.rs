//! The broker contract of pytest-platform: subjects, the JetStream stream and
//! consumer settings, and the versioned wire schema.
//!
//! Both sides depend on this crate and on nothing of each other: the worker
//! agent publishes what [`schema::encode_run`] produces, the master's ingest
//! consumes with [`consumer_config`] and decodes with [`schema::decode`]. It is
//! a leaf crate (serde, async-nats, chrono) so the agent stays small.
//!
//! # Delivery semantics
//!
//! - Runs are published to the durable stream [`STREAM`] on
//!   [`subjects::RESULTS_CASES`] and [`subjects::RESULTS_RUN`], each message
//!   with a `Nats-Msg-Id` (`<run_id>:c<n>:<digest>`, `<run_id>:run:<digest>`,
//!   see [`schema::WireMessage::msg_id`]). Within the
//!   stream's duplicate window ([`DUPLICATE_WINDOW`]) the server drops a
//!   resend; outside it the master's writer drops it (it is idempotent by run
//!   id and chunk number). Together: exactly once in the database.
//! - The stream keeps messages on disk for [`DEFAULT_MAX_AGE`] whether or not
//!   the master is up, so the master may be down for hours and nothing is
//!   lost.
//! - The master consumes through the durable pull consumer [`CONSUMER`] with
//!   explicit acks, and acks a message only after SQLite has committed it. A
//!   crash before the ack means redelivery, which idempotence absorbs.
//! - Heartbeats go over core NATS on [`subjects::HEARTBEAT`]: they matter only
//!   while fresh, so they are not stored.
//! - On a NATS cluster the stream is replicated ([`StreamSettings::replicas`],
//!   3 for a 3-node cluster): a node may die and nothing acked is lost.
//!   Clients take every node's URL ([`server_addrs`]) and fail over; while
//!   the stream elects a new leader (seconds) publishes fail and are
//!   retried by the agent, or spooled.
//! - Quarantine lists go the other way, master to agents, through the
//!   key-value bucket of [`quarantine`].
//!
//! ```no_run
//! # async fn demo(run: ptp_nats::schema::RunInfo, cases: Vec<ptp_nats::schema::TestCase>)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! use ptp_nats::{schema, subjects};
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let js = async_nats::jetstream::new(client.clone());
//! ptp_nats::ensure_stream(&js, &ptp_nats::StreamSettings::default()).await?;
//! for msg in schema::encode_run(&run, &cases, client.server_info().max_payload)? {
//!     let mut headers = async_nats::HeaderMap::new();
//!     headers.insert("Nats-Msg-Id", msg.msg_id.as_str());
//!     // The first await sends; the second waits for the stream's ack.
//!     js.publish_with_headers(msg.subject, headers, msg.payload.into()).await?.await?;
//! }
//! # Ok(()) }
//! ```

pub mod auth;
pub mod kv;
pub mod percent;
pub mod quarantine;
pub mod schema;

pub use auth::NatsAuth;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

/// Subject names. Agents need publish rights on `ptp.results.>` and
/// `ptp.heartbeat` only.
pub mod subjects {
    /// Wildcard the stream captures.
    pub const RESULTS_ALL: &str = "ptp.results.>";
    /// Chunks of test cases.
    pub const RESULTS_CASES: &str = "ptp.results.cases";
    /// The final message of a run.
    pub const RESULTS_RUN: &str = "ptp.results.run";
    /// Worker heartbeats (core NATS, not stored).
    pub const HEARTBEAT: &str = "ptp.heartbeat";
}

/// Name of the durable stream holding results.
pub const STREAM: &str = "PTP_RESULTS";
/// Name of the master's durable pull consumer.
pub const CONSUMER: &str = "ptp-master";
/// How long the server remembers message ids to drop resends.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long unconsumed results stay in the stream by default (7 days).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the server waits for an ack before redelivering (default). It
/// bounds how late a batch in the hands of a master killed with SIGKILL is
/// redelivered, and must exceed the time to store one batch.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Most unacked messages the consumer hands out at once.
pub const MAX_ACK_PENDING: i64 = 20_000;

/// Stream settings the master applies at start.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Keep unconsumed messages this long.
    pub max_age: Duration,
    /// Cap on the stream's size on disk in bytes (`-1`: no cap).
    pub max_bytes: i64,
    /// Replicas (1 for a single server).
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            max_age: DEFAULT_MAX_AGE,
            max_bytes: -1,
            replicas: 1,
        }
    }
}

/// The stream's configuration: file storage, limits retention, duplicate
/// window. Only settings that nats-server 2.9 understands.
pub fn stream_config(s: &StreamSettings) -> stream::Config {
    stream::Config {
        name: STREAM.to_string(),
        subjects: vec![subjects::RESULTS_ALL.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: s.max_age,
        max_bytes: s.max_bytes,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: s.replicas,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// The master's durable pull consumer: explicit acks, every message
/// delivered until acked (no max_deliver: a database outage must not drop
/// results; undecodable messages are acked by ingest after being recorded).
pub fn consumer_config(ack_wait: Duration) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(CONSUMER.to_string()),
        description: Some("pytest-platform master ingest".to_string()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: MAX_ACK_PENDING,
        deliver_policy: consumer::DeliverPolicy::All,
        filter_subject: subjects::RESULTS_ALL.to_string(),
        ..Default::default()
    }
}

/// Parses a server list as given to `--nats-url` / `NATS_URL`: one URL or
/// several separated by commas (`nats://a:4222,nats://b:4222`), the nodes
/// of one cluster, so a client fails over among them. An error names the
/// URL that is not one.
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>().map_err(|e| {
                format!("{u:?} is not a NATS URL ({e}); give nats://HOST:PORT, several separated by commas")
            })
        })
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err("no NATS URL given; give nats://HOST:PORT, several separated by commas".into());
    }
    Ok(addrs)
}

/// The settings in which an existing stream differs from the wanted one
/// ("num_replicas 1 (wanted 3)"), among those this crate sets.
fn differences(have: &stream::Config, want: &stream::Config) -> Vec<String> {
    // Each setting as (name, its Debug text in `have`, in `want`).
    let settings = |c: &stream::Config| {
        [
            ("num_replicas", format!("{:?}", c.num_replicas)),
            ("max_age", format!("{:?}", c.max_age)),
            ("max_bytes", format!("{:?}", c.max_bytes)),
            ("storage", format!("{:?}", c.storage)),
            ("retention", format!("{:?}", c.retention)),
            ("subjects", format!("{:?}", c.subjects)),
            ("duplicate_window", format!("{:?}", c.duplicate_window)),
            ("discard", format!("{:?}", c.discard)),
        ]
    };
    settings(have)
        .into_iter()
        .zip(settings(want))
        .filter(|((_, h), (_, w))| h != w)
        .map(|((name, h), (_, w))| format!("{name} {h} (wanted {w})"))
        .collect()
}

/// Errors from setting up the stream or consumer.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Creating or updating the stream failed.
    #[error("could not create or update stream {STREAM}: {0}")]
    Stream(String),
    /// The stream exists with other settings and the server refused to
    /// change them (e.g. replicas on a server that cannot, or more replicas
    /// than nodes).
    #[error(
        "stream {STREAM} exists with other settings than this master's: {differences}; the server refused to change them ({reason}). \
         Start the master with the stream's settings (--stream-replicas, --stream-max-age-hours), \
         or change the stream (nats stream edit {STREAM}) and restart"
    )]
    Mismatch {
        /// What differs, e.g. "num_replicas 1 (wanted 3)".
        differences: String,
        /// The server's answer.
        reason: String,
    },
    /// Creating the consumer failed.
    #[error("could not create consumer {CONSUMER} on stream {STREAM}: {0}")]
    Consumer(String),
}

/// Creates the stream, or updates it to the current settings.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<stream::Stream, SetupError> {
    let config = stream_config(settings);
    match js.get_stream(STREAM).await {
        Ok(mut existing) => {
            let have = existing
                .info()
                .await
                .map(|i| i.config.clone())
                .map_err(|e| SetupError::Stream(e.to_string()))?;
            let differences = differences(&have, &config);
            if differences.is_empty() {
                return Ok(existing);
            }
            js.update_stream(config)
                .await
                .map_err(|e| SetupError::Mismatch {
                    differences: differences.join(", "),
                    reason: e.to_string(),
                })?;
            js.get_stream(STREAM)
                .await
                .map_err(|e| SetupError::Stream(e.to_string()))
        }
        Err(_) => js
            .create_stream(config)
            .await
            .map_err(|e| SetupError::Stream(e.to_string())),
    }
}

/// Creates the durable consumer, or updates it to `ack_wait`, and returns it.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, SetupError> {
    // Plain create is create-or-update on every server version we support.
    stream
        .create_consumer(consumer_config(ack_wait))
        .await
        .map_err(|e| SetupError::Consumer(e.to_string()))
}

/// Most publishes awaiting their stream ack at once in [`publish_all`].
pub const PUBLISH_WINDOW: usize = 256;

/// Why publishing a run failed. Nothing can be assumed stored; resending the
/// same messages is safe (message ids make it idempotent).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PublishError(pub String);

/// Publishes `msgs` in order with their message ids, keeping up to
/// [`PUBLISH_WINDOW`] acks outstanding, and returns once the stream has
/// acknowledged every one.
pub async fn publish_all(
    js: &jetstream::Context,
    msgs: Vec<schema::Outgoing>,
) -> Result<(), PublishError> {
    use std::collections::VecDeque;
    let mut pending = VecDeque::new();
    for m in msgs {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", m.msg_id.as_str());
        let ack = js
            .publish_with_headers(m.subject, headers, m.payload.into())
            .await
            .map_err(|e| PublishError(e.to_string()))?;
        pending.push_back(ack);
        if pending.len() >= PUBLISH_WINDOW
            && let Some(ack) = pending.pop_front()
        {
            ack.await.map_err(|e| PublishError(e.to_string()))?;
        }
    }
    for ack in pending {
        ack.await.map_err(|e| PublishError(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_split_on_commas_and_name_the_bad_one() {
        let addrs = server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,").expect("two");
        assert_eq!(addrs.len(), 2);
        let err = server_addrs("nats://a:4222,http://[oops").expect_err("bad second");
        assert!(
            err.starts_with("\"http://[oops\" is not a NATS URL"),
            "{err}"
        );
        assert!(server_addrs(" , ").is_err());
    }

    #[test]
    fn differences_name_each_setting() {
        let want = stream_config(&StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        });
        let have = stream_config(&StreamSettings::default());
        assert_eq!(differences(&have, &want), ["num_replicas 1 (wanted 3)"]);
        assert!(differences(&want, &want).is_empty());
    }
}
