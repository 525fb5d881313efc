//! What every master tool shares: the tool error, argument checks, the
//! JSON answer and [`finish`], which turns a tool's outcome into what the
//! client sees.
//!
//! Shape: one module below the tools (`tools/*`, and the local tools) and
//! the report page, so each rule (a bound's message, what a run id is, how
//! a failure or a panic reaches the client) is written once and nothing here
//! knows a tool or the server.
//!
//! Guarantees: a tool never panics and never ends the session; every
//! failure is a `CallToolResult` with `is_error: true` and one sentence a
//! person can act on, at most [`MAX_ERROR_CHARS`] characters.

use chrono::{DateTime, SecondsFormat, Utc};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::args::MAX_RUN_ID_BYTES;
use crate::master::{MasterError, RunFilter};
use crate::text::trim_end;

/// Longest tool error text sent and logged, in characters: a last bound,
/// whatever a message quotes (arguments are bounded before, in
/// [`crate::args`]).
pub const MAX_ERROR_CHARS: usize = 2000;

/// Why a tool could not answer. Displayed as is to the model and the user.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    /// The master failed or refused.
    #[error(transparent)]
    Master(#[from] MasterError),
    /// An argument is wrong: which, and what is allowed.
    #[error("{0}")]
    Argument(String),
    /// Nothing matches the filters.
    #[error("{0}")]
    Nothing(String),
    /// Writing the report file failed.
    #[error("{0}")]
    Output(String),
}

pub(crate) type ToolResult = Result<CallToolResult, ToolError>;

/// A tool's arguments, bounded and parsed ([`crate::args::parse`]).
pub(crate) fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, ToolError> {
    crate::args::parse(tool, args).map_err(ToolError::Argument)
}

pub(crate) fn bounded(
    name: &str,
    value: Option<i64>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ToolError> {
    match value {
        None => Ok(default),
        Some(v) if v >= i64::from(min) && v <= i64::from(max) => Ok(v as u32),
        Some(v) => Err(ToolError::Argument(format!(
            "{name} must be between {min} and {max}, got {v}; leave it out for the default of {default}"
        ))),
    }
}

pub(crate) fn check_run_id(run_id: &str) -> Result<(), ToolError> {
    let ok = !run_id.is_empty()
        && run_id.len() <= MAX_RUN_ID_BYTES
        && run_id.chars().any(|c| c != '.')
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ToolError::Argument(format!(
            "run_id {:?} is not a run id: ids are 1 to {MAX_RUN_ID_BYTES} letters, digits, '-', '_' \
             or '.'; get_summary lists recent ones",
            crate::args::echo(run_id)
        )))
    }
}

pub(crate) const RUN_STATUSES: [&str; 8] = [
    "passed",
    "failed",
    "interrupted",
    "internal_error",
    "usage_error",
    "no_tests",
    "crashed",
    "timed_out",
];

pub(crate) fn check_one_of(
    name: &str,
    value: &Option<String>,
    allowed: &[&str],
) -> Result<(), ToolError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ToolError::Argument(format!(
            "{name} {v:?} is not one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn rate(r: Option<f64>) -> Option<f64> {
    r.filter(|r| r.is_finite())
        .map(|r| (r * 10.0).round() / 10.0)
}

pub(crate) fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn json_answer(value: &impl Serialize) -> ToolResult {
    let text = serde_json::to_string(value)
        .map_err(|e| ToolError::Output(format!("cannot encode the answer as JSON: {e}")))?;
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

pub(crate) fn filters_text(f: &RunFilter) -> String {
    let parts: Vec<String> = [
        ("project", &f.project),
        ("branch", &f.branch),
        ("worker_id", &f.worker_id),
        ("status", &f.status),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v:?}")))
    .collect();
    if parts.is_empty() {
        "no filters".into()
    } else {
        parts.join(", ")
    }
}

pub(crate) fn no_runs(f: &RunFilter) -> ToolError {
    ToolError::Nothing(format!(
        "no runs match ({}). Check the names with get_summary without filters, or send results \
         to the master first (ptp-agent run -- pytest).",
        filters_text(f)
    ))
}

/// Runs a tool and turns its outcome into what the client sees: failures
/// become tool errors (`is_error: true`) with their sentence, and are logged.
/// A panic (a bug of ours, e.g. on an answer shaped unlike we expect) is
/// caught here too: the client gets an error naming the tool instead of
/// waiting forever for a reply that a dead task would never send.
pub(crate) async fn finish<E: std::fmt::Display>(
    tool: &str,
    run: impl std::future::Future<Output = Result<CallToolResult, E>>,
) -> CallToolResult {
    use futures::FutureExt;
    let result = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            let what = trim_end(what, MAX_ERROR_CHARS);
            tracing::error!(tool, "tool panicked: {what}");
            return CallToolResult::error(vec![ContentBlock::text(format!(
                "{tool} failed: internal error in ptp-mcp ({what}); please report it"
            ))]);
        }
    };
    result.unwrap_or_else(|e| {
        let e = trim_end(&e.to_string(), MAX_ERROR_CHARS);
        tracing::warn!(tool, "tool failed: {e}");
        CallToolResult::error(vec![ContentBlock::text(format!("{tool} failed: {e}"))])
    })
}
