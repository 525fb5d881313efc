//! Refusing impossible values before anything reaches the database: the
//! field checks (names, lengths, run ids, durations, times) and the
//! `validate` of test cases, runs and messages.
//!
//! Each check exists once and names the field and what to send instead;
//! the API's own payload checks reuse the public ones ([`check_len`],
//! [`check_duration`], [`valid_run_id`], [`check_time`]).

use chrono::{DateTime, Utc};

use super::limits::DURATION_SLACK_SECS;
use super::{
    MAX_CASES_PER_RUN, MAX_CHUNKS_PER_RUN, MAX_DURATION_SECS, MAX_FUTURE, MAX_MESSAGE_BYTES,
    MAX_OUTPUT_BYTES, MAX_OWNER_BYTES, MAX_OWNERS, MAX_RUN_ID_BYTES, MAX_SHORT_BYTES,
    MAX_TEST_ID_BYTES, MAX_TRACEBACK_BYTES, RunInfo, TestCase, WireMessage, earliest_time,
};

/// Refuses a time outside [`earliest_time`] ..= `now` + [`MAX_FUTURE`],
/// naming the field. Every time that enters the master passes here.
pub fn check_time(field: &str, t: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), String> {
    let latest = now.checked_add_signed(MAX_FUTURE).unwrap_or(now);
    if t < earliest_time() || t > latest {
        return Err(format!(
            "{field} {} is outside the accepted window 2000-01-01T00:00:00Z to {} \
             (the master's clock plus one day); check the worker's clock",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            latest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    Ok(())
}

/// Refuses an empty name or one longer than [`MAX_SHORT_BYTES`] (project,
/// worker id: required in runs and heartbeats alike).
pub(super) fn check_name(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    check_len(field, value, MAX_SHORT_BYTES)
}

pub(super) fn check_opt(field: &str, value: &Option<String>, max: usize) -> Result<(), String> {
    value
        .as_deref()
        .map_or(Ok(()), |v| check_len(field, v, max))
}

/// Refuses a run id that is empty, longer than [`MAX_RUN_ID_BYTES`] or has
/// characters other than ASCII letters, digits, `-`, `_` and `.` (run ids
/// appear in URLs, message ids and file names). The one run-id rule.
pub fn valid_run_id(run_id: &str) -> Result<(), String> {
    if run_id.is_empty() {
        return Err("run_id is empty".into());
    }
    check_len("run_id", run_id, MAX_RUN_ID_BYTES)?;
    if !run_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(format!(
            "run_id {:?} has characters other than letters, digits, '-', '_' and '.'",
            run_id.chars().take(100).collect::<String>()
        ));
    }
    Ok(())
}

/// Refuses a duration that is not a finite number of seconds in
/// 0 ..= [`MAX_DURATION_SECS`], naming the field.
pub fn check_duration(field: &str, d: f64) -> Result<(), String> {
    if !d.is_finite() || d < 0.0 {
        return Err(format!("{field} is {d}; durations must be finite and >= 0"));
    }
    if d > MAX_DURATION_SECS {
        return Err(format!(
            "{field} is {d} seconds, more than the limit of {MAX_DURATION_SECS} (30 days)"
        ));
    }
    Ok(())
}

/// Refuses a string longer than `max` bytes, naming the field (shared with
/// the API's own payload checks).
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "{field} is {} bytes, more than the limit of {max}",
            value.len()
        ));
    }
    Ok(())
}

impl TestCase {
    /// Refuses impossible values.
    pub fn validate(&self) -> Result<(), String> {
        if self.test_id.is_empty() {
            return Err("a test case has an empty test_id".into());
        }
        check_len("test_id", &self.test_id, MAX_TEST_ID_BYTES)?;
        check_len("name", &self.name, MAX_TEST_ID_BYTES)?;
        check_opt("file", &self.file, MAX_TEST_ID_BYTES)?;
        check_opt("classname", &self.classname, MAX_TEST_ID_BYTES)?;
        // A little slack over the caps for the truncation marker.
        check_opt("message", &self.message, MAX_MESSAGE_BYTES + 128)?;
        check_opt("traceback", &self.traceback, MAX_TRACEBACK_BYTES + 128)?;
        check_opt("output", &self.output, MAX_OUTPUT_BYTES + 128)?;
        if self.owners.len() > MAX_OWNERS {
            return Err(format!(
                "test case {:?} names {} owners; at most {MAX_OWNERS} are accepted",
                self.test_id,
                self.owners.len()
            ));
        }
        for o in &self.owners {
            if o.is_empty() {
                return Err(format!("test case {:?} has an empty owner", self.test_id));
            }
            check_len("owner", o, MAX_OWNER_BYTES)?;
        }
        check_duration(
            &format!("duration_secs of {:?}", self.test_id),
            self.duration_secs,
        )
    }
}

impl RunInfo {
    /// Refuses impossible values, judging times against the clock now.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_at(Utc::now())
    }

    /// Refuses impossible values, judging times against `now`.
    pub fn validate_at(&self, now: DateTime<Utc>) -> Result<(), String> {
        valid_run_id(&self.run_id)?;
        check_name("project", &self.project)?;
        check_name("worker_id", &self.worker_id)?;
        check_opt("branch", &self.branch, MAX_SHORT_BYTES)?;
        check_opt("commit", &self.commit, MAX_SHORT_BYTES)?;
        check_opt("host", &self.host, MAX_SHORT_BYTES)?;
        check_opt("runner", &self.runner, MAX_SHORT_BYTES)?;
        check_opt("command", &self.command, MAX_MESSAGE_BYTES + 128)?;
        check_opt("note", &self.note, MAX_MESSAGE_BYTES + 128)?;
        check_duration("duration_secs", self.duration_secs)?;
        check_time("started_at", self.started_at, now)?;
        check_time("finished_at", self.finished_at, now)?;
        if self.finished_at < self.started_at {
            return Err(format!(
                "finished_at {} is before started_at {}",
                self.finished_at, self.started_at
            ));
        }
        // Both times are inside the window, so the span cannot overflow.
        let span = (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0;
        if self.duration_secs > span + DURATION_SLACK_SECS {
            return Err(format!(
                "duration_secs is {} but finished_at is {span} s after started_at; \
                 the duration cannot exceed the time between start and finish",
                self.duration_secs
            ));
        }
        let c = &self.counts;
        // Summed wide: hostile counts near u64::MAX must not overflow (a panic
        // in debug builds, a wrapped sum that passes this check in release).
        let sum: u128 = [c.passed, c.failed, c.error, c.skipped, c.xfailed, c.xpassed]
            .into_iter()
            .map(u128::from)
            .sum();
        if sum != u128::from(c.total) {
            return Err(format!(
                "counts do not add up: passed+failed+error+skipped+xfailed+xpassed = {sum}, total = {}",
                c.total
            ));
        }
        if c.total > MAX_CASES_PER_RUN {
            return Err(format!(
                "total {} exceeds the limit of {MAX_CASES_PER_RUN} cases per run",
                c.total
            ));
        }
        Ok(())
    }
}

impl WireMessage {
    /// Refuses impossible values, judging times against the clock now.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_at(Utc::now())
    }

    /// Refuses impossible values, judging times against `now`.
    pub fn validate_at(&self, now: DateTime<Utc>) -> Result<(), String> {
        match self {
            WireMessage::Cases(c) => {
                valid_run_id(&c.run_id)?;
                if c.chunk >= MAX_CHUNKS_PER_RUN {
                    return Err(format!(
                        "chunk number {} exceeds the limit of {MAX_CHUNKS_PER_RUN}",
                        c.chunk
                    ));
                }
                c.cases.iter().try_for_each(TestCase::validate)
            }
            WireMessage::Run(r) => {
                r.run.validate_at(now)?;
                if r.chunks > MAX_CHUNKS_PER_RUN {
                    return Err(format!(
                        "chunks {} exceeds the limit of {MAX_CHUNKS_PER_RUN}",
                        r.chunks
                    ));
                }
                if r.run.cases_complete && r.chunks == 0 && r.run.counts.total > 0 {
                    return Err(format!(
                        "run declares {} cases but no chunks",
                        r.run.counts.total
                    ));
                }
                Ok(())
            }
        }
    }
}
