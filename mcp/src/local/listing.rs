//! The answer of `list_tests`, from `ptp-agent list --json`: test ids,
//! their total, collection errors, and the output's end when the listing
//! was not clean.
//!
//! Shape: reads the finished process only; starting it is the caller's
//! ([`super::Local`]), so the listing's format lives here once.
//!
//! Guarantees: at most `limit` ids and 20 errors listed (totals always
//! given), the agent's output read up to [`COLLECT_KEEP_BYTES`]; an agent
//! that printed no listing is an error quoting what it said.

use std::path::Path;

use rmcp::model::CallToolResult;
use serde::{Deserialize, Serialize};

use super::answer::{MESSAGE_CHARS, TAIL_CHARS, Tails, is_zero, json_answer};
use super::error::LocalError;
use super::process;
use super::results::agent_says;
use crate::text::trim_end;

/// Bytes of `ptp-agent list --json` output read: the agent reads 32 MiB
/// of a runner's listing (about 300,000 test ids), JSON adds quotes.
pub(super) const COLLECT_KEEP_BYTES: usize = 40 * 1024 * 1024;

/// The listing's answer (`limit` ids at most) from the finished agent.
pub(super) fn answer(
    finished: &process::Finished,
    root: &Path,
    limit: usize,
) -> Result<CallToolResult, LocalError> {
    /// `ptp-agent list --json`.
    #[derive(Deserialize)]
    struct Listing {
        runner: String,
        command: Vec<String>,
        status: String,
        exit_code: i32,
        #[serde(default)]
        tests: Vec<String>,
        #[serde(default)]
        errors: Vec<String>,
        #[serde(default)]
        cut: bool,
    }
    let listing: Listing = match serde_json::from_slice(&finished.stdout.head) {
        Ok(l) => l,
        Err(_) if finished.timed_out => Listing {
            runner: "unknown".into(),
            command: Vec::new(),
            status: "timed_out".into(),
            exit_code: 124,
            tests: Vec::new(),
            errors: Vec::new(),
            cut: false,
        },
        Err(_) => {
            return Err(LocalError::Setup(format!(
                "the agent could not list the tests: {}; nothing was run",
                agent_says(&finished.stderr.tail_text(2000))
            )));
        }
    };
    let ids = &listing.tests;
    let clean = listing.status == "ok" || listing.status == "no_tests";
    #[derive(Serialize)]
    struct Answer<'a> {
        runner: &'a str,
        project_root: String,
        command: Vec<String>,
        status: &'a str,
        exit_code: Option<i32>,
        timed_out: bool,
        total: usize,
        shown: usize,
        tests: &'a [String],
        #[serde(skip_serializing_if = "is_zero")]
        more: usize,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        errors: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        output_tail: Option<Tails>,
        note: String,
    }
    let shown_ids = &ids[..ids.len().min(limit)];
    json_answer(&Answer {
        runner: &listing.runner,
        project_root: root.display().to_string(),
        command: listing.command,
        status: &listing.status,
        exit_code: Some(listing.exit_code),
        timed_out: listing.status == "timed_out",
        total: ids.len(),
        shown: shown_ids.len(),
        tests: shown_ids,
        more: ids.len() - shown_ids.len(),
        errors: listing
            .errors
            .iter()
            .take(20)
            .map(|l| trim_end(l, MESSAGE_CHARS))
            .collect(),
        output_tail: (!clean).then(|| Tails {
            stdout: String::new(),
            stderr: finished.stderr.tail_text(TAIL_CHARS),
        }),
        note: if listing.cut {
            format!(
                "collection only: no test ran, nothing was published; the listing was cut \
                 after {} MiB of output",
                COLLECT_KEEP_BYTES / (1024 * 1024)
            )
        } else {
            "collection only: no test ran, nothing was published".into()
        },
    })
}
