//! Publishing runs the way the agent does: the wire schema's chunking
//! (`encode_run`), one `Nats-Msg-Id` per message, and a bounded window of
//! outstanding stream acks ([`ptp_nats::PUBLISH_WINDOW`], as in
//! `ptp_nats::publish_all`).
//!
//! Why a [`Template`]: fifty publishers sending 60,000-case runs move 3
//! million cases. Encoding each of those runs to JSON inside the timed
//! window would charge the harness's CPU to the master on a 2-core machine,
//! and encoding them all beforehand would hold ~600 MB. So a run's chunks
//! are encoded once with a placeholder run id, and each publisher patches
//! its own 36-character run id into a copy of one message at a time, right
//! before sending it (a memcpy). The bytes on the wire are exactly what
//! `encode_run` makes for that run. The final message, which carries the
//! start time, is encoded per run.

use std::collections::VecDeque;

use anyhow::{Context, bail};
use async_nats::jetstream;
use ptp_nats::schema::{self, RunFinal, RunInfo, TestCase, WireMessage};

/// The run id the template is encoded with: the same length as a UUID.
const PLACEHOLDER: &str = "ffffffff-ffff-7fff-bfff-ffffffffffff";

struct ChunkMsg {
    /// The message id after the run id (`:c<n>`).
    id_suffix: String,
    payload: Vec<u8>,
    /// Byte offsets of the placeholder in `payload`.
    holes: Vec<usize>,
    /// Cases in this chunk.
    cases: usize,
}

/// A run's case chunks, encoded once, publishable under any run id.
pub struct Template {
    chunks: Vec<ChunkMsg>,
    /// The cases, for the sqlite3 reference's CSV.
    pub cases: Vec<TestCase>,
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if &hay[i..i + needle.len()] == needle {
            out.push(i);
            i += needle.len();
        } else {
            i += 1;
        }
    }
    out
}

impl Template {
    /// Encodes `cases` into chunks of at most `max_payload` bytes.
    pub fn new(info: &RunInfo, cases: Vec<TestCase>, max_payload: usize) -> anyhow::Result<Self> {
        let mut info = info.clone();
        info.run_id = PLACEHOLDER.to_string();
        let msgs =
            schema::encode_run(&info, &cases, max_payload).context("encoding the template run")?;
        let mut chunks = Vec::new();
        for m in msgs {
            let Some(suffix) = m.msg_id.strip_prefix(PLACEHOLDER) else {
                bail!("message id {} does not start with the run id", m.msg_id);
            };
            if m.subject != ptp_nats::subjects::RESULTS_CASES {
                continue; // the final is encoded per run
            }
            let n = match schema::decode(&m.payload) {
                Ok(WireMessage::Cases(c)) => c.cases.len(),
                other => bail!("template chunk does not decode as cases: {other:?}"),
            };
            chunks.push(ChunkMsg {
                id_suffix: suffix.to_string(),
                holes: find_all(&m.payload, PLACEHOLDER.as_bytes()),
                payload: m.payload,
                cases: n,
            });
        }
        Ok(Template { chunks, cases })
    }

    /// Cases per chunk, in order.
    pub fn chunk_sizes(&self) -> Vec<usize> {
        self.chunks.iter().map(|c| c.cases).collect()
    }

    /// Publishes this run's chunks under `info.run_id`, then its final
    /// message, and returns once the stream acked all of them.
    pub async fn publish(&self, js: &jetstream::Context, info: &RunInfo) -> anyhow::Result<()> {
        if info.run_id.len() != PLACEHOLDER.len() {
            bail!("run id {} must be {} bytes", info.run_id, PLACEHOLDER.len());
        }
        let id = info.run_id.as_bytes();
        let mut window = Window::default();
        for c in &self.chunks {
            let mut payload = c.payload.clone();
            for &h in &c.holes {
                payload[h..h + id.len()].copy_from_slice(id);
            }
            let msg_id = format!("{}{}", info.run_id, c.id_suffix);
            window
                .send(js, ptp_nats::subjects::RESULTS_CASES, &msg_id, payload)
                .await?;
        }
        let fin = schema::encode(&WireMessage::Run(RunFinal {
            run: info.clone(),
            chunks: self.chunks.len() as u32,
        }));
        let msg_id = format!("{}:run", info.run_id);
        window
            .send(js, ptp_nats::subjects::RESULTS_RUN, &msg_id, fin)
            .await?;
        window.finish().await
    }
}

/// Outstanding acks, at most [`ptp_nats::PUBLISH_WINDOW`].
#[derive(Default)]
struct Window {
    pending: VecDeque<jetstream::context::PublishAckFuture>,
}

impl Window {
    async fn send(
        &mut self,
        js: &jetstream::Context,
        subject: &'static str,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> anyhow::Result<()> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let ack = js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .with_context(|| format!("publishing {msg_id}"))?;
        self.pending.push_back(ack);
        if self.pending.len() >= ptp_nats::PUBLISH_WINDOW
            && let Some(a) = self.pending.pop_front()
        {
            a.await.context("waiting for a stream ack")?;
        }
        Ok(())
    }

    async fn finish(self) -> anyhow::Result<()> {
        for a in self.pending {
            a.await.context("waiting for a stream ack")?;
        }
        Ok(())
    }
}

/// Publishes one run exactly as the agent does (`encode_run` +
/// `publish_all`).
pub async fn publish_run(
    js: &jetstream::Context,
    info: &RunInfo,
    cases: &[TestCase],
    max_payload: usize,
) -> anyhow::Result<()> {
    let msgs = schema::encode_run(info, cases, max_payload).context("encoding a run")?;
    ptp_nats::publish_all(js, msgs)
        .await
        .with_context(|| format!("publishing run {}", info.run_id))
}

/// Connects a publisher (one connection, like one agent).
pub async fn connect(url: &str) -> anyhow::Result<(async_nats::Client, jetstream::Context)> {
    let client = async_nats::ConnectOptions::new()
        .name("ptp-bench")
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    let js = jetstream::new(client.clone());
    Ok((client, js))
}

/// The server's max payload (1 MiB when it has not said).
pub fn max_payload(client: &async_nats::Client) -> usize {
    match client.server_info().max_payload {
        0 => 1024 * 1024,
        n => n,
    }
}

/// The master's consumer as the server sees it: how many messages it
/// redelivered (a sign that a delivered batch was dropped and waited out
/// its ack wait) and how many are unacked now. For progress output.
pub async fn consumer_stats(js: &jetstream::Context) -> String {
    let info = async {
        js.get_stream(ptp_nats::STREAM)
            .await
            .map_err(|e| e.to_string())?
            .consumer_info(ptp_nats::CONSUMER)
            .await
            .map_err(|e| e.to_string())
    };
    match info.await {
        Ok(i) => format!(
            "consumer: {} delivered, {} redelivered, {} unacked",
            i.delivered.stream_sequence, i.num_redelivered, i.num_ack_pending
        ),
        Err(e) => format!("consumer info unavailable: {e}"),
    }
}
