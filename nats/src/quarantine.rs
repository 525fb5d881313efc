//! The quarantine list's contract: how the master hands each project's list
//! of quarantined tests to the agents, through a JetStream key-value bucket
//! they read with their own credentials, without the HTTP API.
//!
//! # Shape
//!
//! - Bucket [`BUCKET`] (`ptp_quarantine`), created by [`write`] with
//!   [`bucket_stream_config`]: file storage, one revision per key (the
//!   list is always replaced whole), values up to [`MAX_VALUE_BYTES`].
//! - One key per project, [`key`]: `p.` and the first 32 hex digits of the
//!   SHA-256 of the project's name (KV keys allow `[-/_=.a-zA-Z0-9]` only,
//!   project names allow anything). The value carries the project's name,
//!   and [`decode`] refuses a value whose name is not the one asked for, so
//!   a hash collision can never quarantine another project's tests.
//! - The value is JSON, a [`QuarantineList`]:
//!   `{"schema": 1, "project": "shop", "updated_at": "…",
//!     "tests": [{"test_id": "tests.test_cart::test_total", "reason": "…",
//!                "since": "…", "expires_at": "…" | null, "auto": false}]}`.
//!   No key, or a deleted one, means nothing is quarantined.
//!
//! # Guarantees
//!
//! - Bounded: at most [`MAX_TESTS`] tests, test ids within the wire's
//!   [`MAX_TEST_ID_BYTES`], reasons within [`MAX_REASON_BYTES`], the encoded
//!   value under [`MAX_VALUE_BYTES`]; [`QuarantineList::encode`] refuses
//!   more (the writer learns before publishing) and [`decode`] refuses it
//!   (a reader never trusts the bucket's content).
//! - An entry whose `expires_at` has passed is not active
//!   ([`QuarantineList::is_quarantined`]): releasing by time needs no write.
//! - Only the master writes: deploy/nats.conf lets the `agent` user read
//!   the bucket (stream info and direct gets on `KV_ptp_quarantine`) and
//!   nothing else on it.
//!
//! ```no_run
//! # async fn demo(js: async_nats::jetstream::Context) -> Result<(), Box<dyn std::error::Error>> {
//! use ptp_nats::quarantine;
//! // The master, after a change:
//! let list = quarantine::QuarantineList::new("shop", chrono::Utc::now());
//! quarantine::write(&js, &list).await?;
//! // An agent, at start:
//! let list = quarantine::read(&js, "shop").await?; // None: nothing quarantined
//! # Ok(()) }
//! ```

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::schema::{MAX_SHORT_BYTES, MAX_TEST_ID_BYTES};

/// The key-value bucket holding every project's list.
pub const BUCKET: &str = "ptp_quarantine";
/// The value's schema version.
pub const SCHEMA: u32 = 1;
/// Most tests one project may have quarantined.
pub const MAX_TESTS: usize = 1000;
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 512;
/// Largest encoded value, in bytes (under NATS's default 1 MB payload).
pub const MAX_VALUE_BYTES: usize = 900 * 1024;

/// One quarantined test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantinedTest {
    /// The test's id, as runs report it (`TestCase::test_id`).
    pub test_id: String,
    /// Why it is quarantined (free text).
    #[serde(default)]
    pub reason: String,
    /// Since when.
    pub since: DateTime<Utc>,
    /// When the quarantine ends by itself; `None`: until released.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Quarantined automatically (the flaky detector), not by a person.
    #[serde(default)]
    pub auto: bool,
}

/// A project's list, the value under [`key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineList {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The project (checked against the one asked for on read).
    pub project: String,
    /// When the master last changed it.
    pub updated_at: DateTime<Utc>,
    /// The tests, each id once.
    #[serde(default)]
    pub tests: Vec<QuarantinedTest>,
}

/// Why a list cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The value breaks the contract (shape, schema, bounds, project).
    #[error("the quarantine list is invalid: {0}")]
    Invalid(String),
    /// The bucket or key could not be reached (no bucket, no permission,
    /// broker away).
    #[error("cannot read the quarantine bucket {BUCKET}: {0}")]
    Unavailable(String),
    /// Writing failed.
    #[error("cannot write the quarantine bucket {BUCKET}: {0}")]
    Write(String),
}

/// The key of `project`'s list: `p.` + 32 hex digits of SHA-256(project).
pub fn key(project: &str) -> String {
    let digest = Sha256::digest(project.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("p.{hex}")
}

/// The bucket's stream (`KV_ptp_quarantine`), as the key-value layer
/// expects it: one message per key, rollups allowed, deletes through
/// markers, direct gets. Created as a plain stream with only settings
/// nats-server 2.9 understands (async-nats's own bucket creation sends
/// newer ones that 2.9 answers in a shape the client cannot read).
pub fn bucket_stream_config() -> jetstream::stream::Config {
    crate::kv::bucket_stream(
        BUCKET,
        "pytest-platform: quarantined tests per project",
        MAX_VALUE_BYTES as i32 + 1024,
    )
}

/// The bucket, created if missing.
async fn bucket(js: &jetstream::Context) -> Result<jetstream::kv::Store, QuarantineError> {
    if let Ok(s) = js.get_key_value(BUCKET).await {
        return Ok(s);
    }
    js.get_or_create_stream(bucket_stream_config())
        .await
        .map_err(|e| QuarantineError::Write(e.to_string()))?;
    js.get_key_value(BUCKET)
        .await
        .map_err(|e| QuarantineError::Write(e.to_string()))
}

/// Creates the bucket if it is missing; for the master at start, so agents
/// find it (and read "nothing quarantined") before any list is written.
pub async fn ensure_bucket(js: &jetstream::Context) -> Result<(), QuarantineError> {
    bucket(js).await.map(|_| ())
}

impl QuarantineList {
    /// An empty list for `project`.
    pub fn new(project: &str, now: DateTime<Utc>) -> QuarantineList {
        QuarantineList {
            schema: SCHEMA,
            project: project.to_string(),
            updated_at: now,
            tests: Vec::new(),
        }
    }

    /// Refuses what breaks the contract (see the module doc).
    pub fn validate(&self) -> Result<(), QuarantineError> {
        let bad = |s: String| Err(QuarantineError::Invalid(s));
        if self.schema != SCHEMA {
            return bad(format!(
                "schema {} (this reader knows schema {SCHEMA})",
                self.schema
            ));
        }
        if self.project.is_empty() || self.project.len() > MAX_SHORT_BYTES {
            return bad(format!(
                "project must be 1 to {MAX_SHORT_BYTES} bytes, got {}",
                self.project.len()
            ));
        }
        if self.tests.len() > MAX_TESTS {
            return bad(format!(
                "{} tests; at most {MAX_TESTS} may be quarantined per project",
                self.tests.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tests {
            if t.test_id.is_empty() || t.test_id.len() > MAX_TEST_ID_BYTES {
                return bad(format!(
                    "a test_id must be 1 to {MAX_TEST_ID_BYTES} bytes, got {}",
                    t.test_id.len()
                ));
            }
            if t.reason.len() > MAX_REASON_BYTES {
                return bad(format!(
                    "the reason of {:?} is {} bytes, over {MAX_REASON_BYTES}",
                    t.test_id,
                    t.reason.len()
                ));
            }
            if !seen.insert(t.test_id.as_str()) {
                return bad(format!("{:?} is listed twice", t.test_id));
            }
        }
        Ok(())
    }

    /// The value to store: validated, and refused over [`MAX_VALUE_BYTES`].
    pub fn encode(&self) -> Result<Vec<u8>, QuarantineError> {
        self.validate()?;
        let bytes =
            serde_json::to_vec(self).map_err(|e| QuarantineError::Invalid(e.to_string()))?;
        if bytes.len() > MAX_VALUE_BYTES {
            return Err(QuarantineError::Invalid(format!(
                "{} bytes encoded, over {MAX_VALUE_BYTES}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// The entry of `test_id` if it is quarantined at `now` (not expired).
    pub fn active(&self, test_id: &str, now: DateTime<Utc>) -> Option<&QuarantinedTest> {
        self.tests
            .iter()
            .find(|t| t.test_id == test_id && t.expires_at.is_none_or(|e| e > now))
    }

    /// Whether `test_id` is quarantined at `now`.
    pub fn is_quarantined(&self, test_id: &str, now: DateTime<Utc>) -> bool {
        self.active(test_id, now).is_some()
    }

    /// How many entries are active at `now`.
    pub fn active_count(&self, now: DateTime<Utc>) -> usize {
        self.tests
            .iter()
            .filter(|t| t.expires_at.is_none_or(|e| e > now))
            .count()
    }
}

/// Decodes a value read under `project`'s key: the shape, the bounds, and
/// that it is `project`'s.
pub fn decode(bytes: &[u8], project: &str) -> Result<QuarantineList, QuarantineError> {
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(QuarantineError::Invalid(format!(
            "{} bytes, over {MAX_VALUE_BYTES}",
            bytes.len()
        )));
    }
    let list: QuarantineList =
        serde_json::from_slice(bytes).map_err(|e| QuarantineError::Invalid(e.to_string()))?;
    list.validate()?;
    if list.project != project {
        return Err(QuarantineError::Invalid(format!(
            "the value under {}'s key belongs to project {:?}",
            project, list.project
        )));
    }
    Ok(list)
}

/// Reads `project`'s list; `None` when the project has none (no key, or a
/// deleted one). Needs only the read rights deploy/nats.conf gives agents.
pub async fn read(
    js: &jetstream::Context,
    project: &str,
) -> Result<Option<QuarantineList>, QuarantineError> {
    let store = js
        .get_key_value(BUCKET)
        .await
        .map_err(|e| QuarantineError::Unavailable(e.to_string()))?;
    let value = store
        .get(key(project))
        .await
        .map_err(|e| QuarantineError::Unavailable(e.to_string()))?;
    value.map(|v| decode(&v, project)).transpose()
}

/// Replaces `list.project`'s list (creating the bucket if needed); for the
/// master. Returns the new revision.
pub async fn write(js: &jetstream::Context, list: &QuarantineList) -> Result<u64, QuarantineError> {
    let bytes = list.encode()?;
    let store = bucket(js).await?;
    store
        .put(key(&list.project), bytes.into())
        .await
        .map_err(|e| QuarantineError::Write(e.to_string()))
}

/// Removes `project`'s list (nothing quarantined); for the master.
pub async fn clear(js: &jetstream::Context, project: &str) -> Result<(), QuarantineError> {
    let store = js
        .get_key_value(BUCKET)
        .await
        .map_err(|e| QuarantineError::Write(e.to_string()))?;
    store
        .delete(key(project))
        .await
        .map_err(|e| QuarantineError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, expires_at: Option<DateTime<Utc>>) -> QuarantinedTest {
        QuarantinedTest {
            test_id: id.into(),
            reason: "flaky on CI".into(),
            since: Utc::now(),
            expires_at,
            auto: false,
        }
    }

    #[test]
    fn keys_are_valid_kv_keys_and_differ_per_project() {
        for p in ["shop", "Shop", "a b/c:ü", ""] {
            let k = key(p);
            assert_eq!(k.len(), 34, "{k}");
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c)),
                "{k}"
            );
        }
        assert_ne!(key("shop"), key("Shop"));
    }

    #[test]
    fn round_trips_and_refuses_what_breaks_the_contract() {
        let now = Utc::now();
        let mut list = QuarantineList::new("shop", now);
        list.tests = vec![
            entry("t::a", None),
            entry("t::gone", Some(now - chrono::TimeDelta::hours(1))),
            entry("t::later", Some(now + chrono::TimeDelta::hours(1))),
        ];
        let bytes = list.encode().expect("encodes");
        let back = decode(&bytes, "shop").expect("decodes");
        assert_eq!(back, list);
        assert!(back.is_quarantined("t::a", now));
        assert!(!back.is_quarantined("t::gone", now), "expired");
        assert!(back.is_quarantined("t::later", now));
        assert!(!back.is_quarantined("t::other", now));
        assert_eq!(back.active_count(now), 2);

        let err = decode(&bytes, "other").expect_err("another project's list");
        assert!(err.to_string().contains("belongs to project"), "{err}");
        let mut twice = list.clone();
        twice.tests.push(entry("t::a", None));
        assert!(twice.encode().is_err());
        let mut many = QuarantineList::new("shop", now);
        many.tests = (0..=MAX_TESTS)
            .map(|i| entry(&format!("t::{i}"), None))
            .collect();
        assert!(
            many.encode()
                .expect_err("too many")
                .to_string()
                .contains("at most")
        );
        let mut wordy = QuarantineList::new("shop", now);
        let mut e = entry("t::a", None);
        e.reason = "x".repeat(MAX_REASON_BYTES + 1);
        wordy.tests.push(e);
        assert!(wordy.encode().is_err());
        let future = br#"{"schema": 2, "project": "shop", "updated_at": "2026-01-01T00:00:00Z"}"#;
        assert!(decode(future, "shop").is_err());
        assert!(decode(b"not json", "shop").is_err());
        assert!(decode(&vec![b' '; MAX_VALUE_BYTES + 1], "shop").is_err());
    }
}
