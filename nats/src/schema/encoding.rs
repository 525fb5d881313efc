//! Bytes on the wire: the versioned envelope, [`encode`] and [`decode`]
//! (which also validates), the message ids and subjects, and splitting a
//! run into messages under a payload budget ([`encode_run`]).
//!
//! Guarantees: [`decode`] never panics on hostile input and its errors are
//! bounded in length; [`encode_run`] keeps every message within its budget
//! and gives each a message id stable for its content, so a resend is
//! recognised as such and a reused run id is not.

use serde::{Deserialize, Serialize};

use super::{
    CasesChunk, RunFinal, RunInfo, SCHEMA_VERSION, TestCase, WireMessage, truncate_marked,
};

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    schema: u32,
    #[serde(flatten)]
    body: &'a WireMessage,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    schema: u32,
    #[serde(flatten)]
    body: WireMessage,
}

#[derive(Deserialize)]
struct VersionOnly {
    schema: Option<serde_json::Value>,
}

/// Deserializes `bytes`; a mismatch names the field's JSON path
/// (`run.counts.total: invalid type: ...`), cut to a bounded length.
pub(super) fn with_path<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let text = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        DecodeError::Shape(bounded(text))
    })
}

/// Longest error text kept from a decoder: serde's messages quote the
/// offending value, which may be megabytes long.
const MAX_ERROR_BYTES: usize = 400;

/// `s` cut to [`MAX_ERROR_BYTES`] with a marker.
fn bounded(s: String) -> String {
    truncate_marked(s, MAX_ERROR_BYTES)
}

/// Why a message could not be decoded or was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but without a usable `schema` field.
    #[error(
        "message has no numeric `schema` field; expected {{\"schema\": {SCHEMA_VERSION}, \"kind\": ...}}"
    )]
    NoVersion,
    /// A schema version this master does not know.
    #[error(
        "unknown schema version {0} (this master reads version {SCHEMA_VERSION}); upgrade the master or downgrade the agent"
    )]
    UnknownVersion(u64),
    /// Right version, wrong shape.
    #[error("message does not match schema version {SCHEMA_VERSION}: {0}")]
    Shape(String),
    /// Well-formed but impossible values.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Serializes one message with its envelope.
pub fn encode(msg: &WireMessage) -> Vec<u8> {
    // Serializing our own types to a Vec cannot fail: no maps with non-string
    // keys, no foreign Serialize impls.
    serde_json::to_vec(&EnvelopeOut {
        schema: SCHEMA_VERSION,
        body: msg,
    })
    .unwrap_or_default()
}

/// Decodes and validates one message from the stream.
pub fn decode(bytes: &[u8]) -> Result<WireMessage, DecodeError> {
    let version: VersionOnly =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(bounded(e.to_string())))?;
    match version.schema {
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(v) => return Err(DecodeError::UnknownVersion(v)),
            None => return Err(DecodeError::NoVersion),
        },
        _ => return Err(DecodeError::NoVersion),
    }
    let env: EnvelopeIn = with_path(bytes)?;
    debug_assert_eq!(env.schema, SCHEMA_VERSION);
    env.body
        .validate()
        .map_err(|e| DecodeError::Invalid(bounded(e)))?;
    Ok(env.body)
}

impl WireMessage {
    /// The run this message belongs to.
    pub fn run_id(&self) -> &str {
        match self {
            WireMessage::Cases(c) => &c.run_id,
            WireMessage::Run(r) => &r.run.run_id,
        }
    }

    /// The `Nats-Msg-Id` it is published under: `<run_id>:c<n>:<digest>`
    /// for a chunk, `<run_id>:run:<digest>` for the final message (the
    /// first 12 hex digits of [`CasesChunk::digest`] / [`RunFinal::digest`]).
    /// Stable for the content, so JetStream's duplicate window drops a
    /// resend but not another version under the same run id.
    pub fn msg_id(&self) -> String {
        match self {
            WireMessage::Cases(c) => {
                format!("{}:c{}:{}", c.run_id, c.chunk, short_digest(&c.digest()))
            }
            WireMessage::Run(r) => format!("{}:run:{}", r.run.run_id, short_digest(&r.digest())),
        }
    }

    /// The subject it is published on.
    pub fn subject(&self) -> &'static str {
        match self {
            WireMessage::Cases(_) => crate::subjects::RESULTS_CASES,
            WireMessage::Run(_) => crate::subjects::RESULTS_RUN,
        }
    }
}

/// SHA-256 of `value`'s JSON, in hex.
fn digest_of<T: Serialize + ?Sized>(value: &T) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl CasesChunk {
    /// What this chunk says, as a digest of its cases: equal for a resend,
    /// different when the run id was reused for other results.
    pub fn digest(&self) -> String {
        digest_of(&self.cases)
    }
}

impl RunFinal {
    /// What this final message says, as a digest of the run and its chunk
    /// count. The start and finish times are left out: the original
    /// system's payload without a `timestamp` is stamped on arrival, so a
    /// retried POST of it is still the same run.
    pub fn digest(&self) -> String {
        let mut v = serde_json::to_value(&self.run).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.remove("started_at");
            m.remove("finished_at");
        }
        digest_of(&(v, self.chunks))
    }
}

/// The first 12 hex digits of a digest: enough to tell two versions of a
/// message apart in a message id.
fn short_digest(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}

/// A message ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Subject to publish on.
    pub subject: &'static str,
    /// `Nats-Msg-Id` header value, stable for the run.
    pub msg_id: String,
    /// JSON body.
    pub payload: Vec<u8>,
}

/// Why a run could not be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// One test case alone is larger than the payload budget.
    #[error(
        "test case {test_id:?} encodes to {size} bytes, more than the message budget of {budget} bytes"
    )]
    CaseTooLarge {
        /// The offending test.
        test_id: String,
        /// Its encoded size.
        size: usize,
        /// The budget.
        budget: usize,
    },
}

/// Bytes reserved in each message for the envelope around the cases.
const ENVELOPE_SLACK: usize = 1024;

/// Splits a run into chunk messages of at most `max_payload` bytes each and a
/// final [`RunFinal`] message. `max_payload` is usually the server's
/// `max_payload` (1 MB by default).
pub fn encode_run(
    run: &RunInfo,
    cases: &[TestCase],
    max_payload: usize,
) -> Result<Vec<Outgoing>, EncodeError> {
    let budget = max_payload.saturating_sub(ENVELOPE_SLACK).max(1024);
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    let flush = |from: usize, to: usize, out: &mut Vec<Outgoing>| {
        let chunk = out.len() as u32;
        let msg = WireMessage::Cases(CasesChunk {
            run_id: run.run_id.clone(),
            chunk,
            cases: cases[from..to].to_vec(),
        });
        out.push(Outgoing {
            subject: msg.subject(),
            msg_id: msg.msg_id(),
            payload: encode(&msg),
        });
    };
    for (i, case) in cases.iter().enumerate() {
        let len = serde_json::to_vec(case).map(|v| v.len()).unwrap_or(0) + 1;
        if len > budget {
            return Err(EncodeError::CaseTooLarge {
                test_id: case.test_id.clone(),
                size: len,
                budget,
            });
        }
        if size + len > budget {
            flush(start, i, &mut out);
            start = i;
            size = 0;
        }
        size += len;
    }
    if start < cases.len() {
        flush(start, cases.len(), &mut out);
    }
    let chunks = out.len() as u32;
    let fin = WireMessage::Run(RunFinal {
        run: run.clone(),
        chunks,
    });
    out.push(Outgoing {
        subject: fin.subject(),
        msg_id: fin.msg_id(),
        payload: encode(&fin),
    });
    Ok(out)
}
