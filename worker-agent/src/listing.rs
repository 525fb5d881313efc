//! `ptp-agent list`: runs a runner's listing command
//! ([`crate::runner::Runner::list_command`]) and reads the test ids it
//! prints ([`crate::runner::Runner::parse_list`]).
//!
//! The listing's stdout is captured (its ids are the answer) and bounded
//! ([`MAX_STDOUT_BYTES`]; beyond it the listing is cut and says so);
//! stderr passes through. The child runs in its own process group, which a
//! timeout kills. Collection errors (pytest's `ERROR <path>` lines) are
//! returned beside the ids. The status is pytest's exit-code table for
//! pytest ([`crate::report::pytest_status`], `ok` for 0) and `ok` /
//! `failed` / `timed_out` / `crashed` for the others.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::report;
use crate::runner::Runner;

/// Bytes of a listing's stdout read (about 300,000 pytest node ids).
pub const MAX_STDOUT_BYTES: usize = 32 * 1024 * 1024;

/// What `ptp-agent list --json` prints.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// Format version (1).
    pub format: u32,
    /// The runner.
    pub runner: &'static str,
    /// The listing command that ran.
    pub command: Vec<String>,
    /// `ok`, or why not (pytest's statuses, `timed_out`, `crashed`).
    pub status: String,
    /// The exit code passed on (124 after a timeout, 127 not found).
    pub exit_code: i32,
    /// The test ids, in the runner's order.
    pub tests: Vec<String>,
    /// Collection errors, and what went wrong when nothing could be listed.
    pub errors: Vec<String>,
    /// Whether the output was cut at [`MAX_STDOUT_BYTES`].
    pub cut: bool,
}

/// Runs `argv` (a listing command of `runner`) in `cwd` until it ends or
/// `timeout` passes.
pub async fn run(
    runner: Runner,
    argv: &[String],
    cwd: &Path,
    timeout: Option<Duration>,
) -> Listing {
    let mut listing = Listing {
        format: 1,
        runner: runner.name(),
        command: argv.to_vec(),
        status: "crashed".into(),
        exit_code: 1,
        tests: Vec::new(),
        errors: Vec::new(),
        cut: false,
    };
    let Some((program, args)) = argv.split_first() else {
        listing.errors.push("no listing command".into());
        return listing;
    };
    let child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            listing.exit_code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            listing
                .errors
                .push(format!("command {program:?} could not be started: {e}"));
            return listing;
        }
    };
    let pgid = child.id().map(|id| nix::unistd::Pid::from_raw(id as i32));
    let mut stdout = child.stdout.take();
    let work = async {
        let mut buf = Vec::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out
                .take(MAX_STDOUT_BYTES as u64 + 1)
                .read_to_end(&mut buf)
                .await;
        }
        // What is left beyond the bound is not read; the child may block
        // on it, so it is killed then.
        if buf.len() > MAX_STDOUT_BYTES
            && let Some(p) = pgid
        {
            let _ = nix::sys::signal::killpg(p, nix::sys::signal::Signal::SIGKILL);
        }
        (buf, child.wait().await)
    };
    let ended = match timeout {
        Some(t) => tokio::time::timeout(t, work).await.ok(),
        None => Some(work.await),
    };
    let Some((mut buf, status)) = ended else {
        if let Some(p) = pgid {
            let _ = nix::sys::signal::killpg(p, nix::sys::signal::Signal::SIGKILL);
        }
        listing.status = "timed_out".into();
        listing.exit_code = 124;
        listing
            .errors
            .push("the listing ran past --timeout; its process group was killed".into());
        return listing;
    };
    if buf.len() > MAX_STDOUT_BYTES {
        buf.truncate(MAX_STDOUT_BYTES);
        listing.cut = true;
    }
    let text = String::from_utf8_lossy(&buf);
    listing.tests = runner.parse_list(&text, cwd);
    if listing.cut {
        listing.tests.pop(); // may be half a line
    }
    if runner == Runner::Pytest {
        listing.errors = text
            .lines()
            .filter(|l| l.starts_with("ERROR "))
            .map(str::to_string)
            .collect();
    }
    use std::os::unix::process::ExitStatusExt;
    let (code, status) = match status {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => (c, None),
            (None, Some(sig)) => (128 + sig, Some("crashed")),
            (None, None) => (1, Some("crashed")),
        },
        Err(e) => {
            listing
                .errors
                .push(format!("waiting for the listing failed: {e}"));
            (1, Some("crashed"))
        }
    };
    listing.exit_code = code;
    listing.status = match (status, code, runner) {
        (Some(s), _, _) => s.to_string(),
        (None, 0, _) => "ok".into(),
        (None, c, Runner::Pytest) => report::pytest_status(c).as_str().to_string(),
        (None, _, _) => "failed".into(),
    };
    listing
}
