//! The bounds of the wire: the longest strings, the most cases and
//! chunks, the longest duration, the accepted time window, and the one way
//! a too-long text is cut ([`truncate_marked`]).
//!
//! Numbers only (and the cut), in one place, so the agent that caps and the
//! master that validates read the same limits; values within them cannot
//! overflow the master's time arithmetic.

use chrono::{DateTime, Utc};

/// Longest test id kept, in bytes. Longer ids are refused by validation; the
/// agent truncates before publishing.
pub const MAX_TEST_ID_BYTES: usize = 4096;
/// Longest failure message kept, in bytes (longer ones are cut with a marker).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest traceback kept, in bytes (longer ones are cut with a marker).
pub const MAX_TRACEBACK_BYTES: usize = 32 * 1024;
/// Longest captured output kept per test case, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;
/// Longest value for short fields (project, branch, worker id, ...), in bytes.
pub const MAX_SHORT_BYTES: usize = 512;
/// Longest run id, in bytes.
pub const MAX_RUN_ID_BYTES: usize = 128;
/// Most owners one test case may name (`TestCase::owners`).
pub const MAX_OWNERS: usize = 16;
/// Longest owner name, in bytes.
pub const MAX_OWNER_BYTES: usize = 256;
/// Most test cases one run may carry.
pub const MAX_CASES_PER_RUN: u64 = 5_000_000;
/// Most chunks one run may be split into.
pub const MAX_CHUNKS_PER_RUN: u32 = 100_000;
/// Longest duration accepted for a run or a test case: 30 days, in seconds.
pub const MAX_DURATION_SECS: f64 = 30.0 * 86_400.0;
/// Seconds between heartbeats a worker may announce (1 to this).
pub const MAX_HEARTBEAT_INTERVAL_SECS: u64 = 3600;
/// How far ahead of the master's clock a run or heartbeat time may be: one
/// day covers skewed clocks and local times sent as UTC.
pub const MAX_FUTURE: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// Slack allowed between a run's `duration_secs` and its wall span
/// (`finished_at - started_at`): the agent measures the two with different
/// clocks.
pub(super) const DURATION_SLACK_SECS: f64 = 1.0;

/// Earliest time accepted for a run or heartbeat: 2000-01-01T00:00:00Z.
pub fn earliest_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Cuts `s` to at most `max` bytes (on a char boundary) and appends a marker
/// saying how much was cut. Returns `s` unchanged when it fits.
pub fn truncate_marked(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    let mut t = s;
    t.truncate(cut);
    t.push_str(&format!("\n… [truncated {dropped} bytes]"));
    t
}
