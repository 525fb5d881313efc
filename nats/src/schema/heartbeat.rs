//! Heartbeats: a worker's "still running" on core NATS (not the stream),
//! where in its run it is, and how it is decoded and validated.
//!
//! Separate from runs because liveness is only interesting while fresh and
//! never stored as a run; a heartbeat is held to the same limits as a run's
//! ids, names and times.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::encoding::with_path;
use super::validate::{check_name, check_opt};
use super::{
    DecodeError, MAX_HEARTBEAT_INTERVAL_SECS, MAX_SHORT_BYTES, SCHEMA_VERSION, check_time,
    valid_run_id,
};

/// A heartbeat, sent on core NATS (not the stream): liveness is only
/// interesting while it is fresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Wire schema version.
    pub schema: u32,
    /// The worker.
    pub worker_id: String,
    /// Its host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Project being tested.
    pub project: String,
    /// The run in progress (or just finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Where in the run the worker is.
    pub phase: HeartbeatPhase,
    /// Seconds until the next heartbeat, so the master knows when it is late.
    pub interval_secs: u64,
    /// When it was sent.
    pub at: DateTime<Utc>,
}

impl Heartbeat {
    /// Refuses impossible values, judging `at` against `now`: the same
    /// limits as a run's (ids and names, the time window), and an interval
    /// of 1 to [`MAX_HEARTBEAT_INTERVAL_SECS`] seconds.
    pub fn validate_at(&self, now: DateTime<Utc>) -> Result<(), String> {
        if self.schema != SCHEMA_VERSION {
            return Err(format!(
                "unknown schema version {} (this master reads version {SCHEMA_VERSION})",
                self.schema
            ));
        }
        check_name("project", &self.project)?;
        check_name("worker_id", &self.worker_id)?;
        check_opt("host", &self.host, MAX_SHORT_BYTES)?;
        if let Some(id) = &self.run_id {
            valid_run_id(id)?;
        }
        if !(1..=MAX_HEARTBEAT_INTERVAL_SECS).contains(&self.interval_secs) {
            return Err(format!(
                "interval_secs is {}; send 1 to {MAX_HEARTBEAT_INTERVAL_SECS} seconds",
                self.interval_secs
            ));
        }
        check_time("at", self.at, now)
    }
}

/// Decodes and validates a heartbeat (core NATS, [`crate::subjects::HEARTBEAT`]).
pub fn decode_heartbeat(bytes: &[u8], now: DateTime<Utc>) -> Result<Heartbeat, DecodeError> {
    let hb: Heartbeat = with_path(bytes)?;
    hb.validate_at(now).map_err(DecodeError::Invalid)?;
    Ok(hb)
}

/// Where in its run a worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatPhase {
    /// The test command just started.
    Start,
    /// Still running.
    Tick,
    /// The command finished.
    End,
}
