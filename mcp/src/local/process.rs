//! Running one child process for a local tool: an argv (never a shell), a
//! working directory, a deadline, and bounded captures of its output.
//!
//! Why this shape: in stdio mode ptp-mcp's own stdin and stdout carry the
//! MCP protocol, so a child must never inherit them: its stdin is
//! `/dev/null` and its stdout and stderr are pipes read to the end by two
//! tasks. Only a bounded part is kept (the start of stdout up to a limit,
//! for `--collect-only` listings, and the last [`TAIL_BYTES`] of each
//! stream, for "what went wrong"), so a chatty test suite cannot grow the
//! server's memory.
//!
//! # Guarantees
//!
//! - The child leads its own process group. Past the deadline the whole
//!   group gets SIGTERM, then SIGKILL if the leader is still there after
//!   [`KILL_GRACE`]; the result says `timed_out`. The group is never
//!   signalled after the leader was reaped (its id could belong to someone
//!   else by then). ptp-agent runs the tests in a group of their own and
//!   kills that group itself on SIGTERM or its own `--timeout`.
//! - If the caller stops waiting (the MCP client cancelled the call and the
//!   future is dropped), the group gets SIGTERM as well; for ptp-agent that
//!   means it stops the tests and exits.
//! - A grandchild that keeps the pipes open after the child exited (a
//!   server a test started) does not hold the answer: the readers get
//!   [`DRAIN_GRACE`] to finish, then what they read is used.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Bytes kept from the end of each stream.
pub const TAIL_BYTES: usize = 8 * 1024;
/// Between SIGTERM and SIGKILL after a deadline.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long the output readers may take once the child has exited.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What to run.
pub struct Spec<'a> {
    /// Program and arguments.
    pub argv: &'a [OsString],
    /// Working directory.
    pub cwd: &'a Path,
    /// Environment variables set for the child (the rest is inherited).
    pub env: Vec<(&'static str, String)>,
    /// Environment variables removed from the child's environment.
    pub env_remove: &'a [&'static str],
    /// Past this, the group is killed.
    pub deadline: Duration,
    /// Bytes of stdout kept from its start (0: only the tail).
    pub keep_stdout: usize,
}

/// Part of one output stream.
#[derive(Debug, Default)]
pub struct Captured {
    /// The first `keep` bytes.
    pub head: Vec<u8>,
    /// The last bytes (up to [`TAIL_BYTES`], sometimes up to twice that).
    tail: Vec<u8>,
    /// Bytes read in all.
    pub total: u64,
    keep: usize,
}

impl Captured {
    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.keep {
            let n = (self.keep - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
        }
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
    }

    /// The last `max_chars` characters of the stream, marked when cut.
    pub fn tail_text(&self, max_chars: usize) -> String {
        let text = String::from_utf8_lossy(&self.tail);
        let n = text.chars().count();
        let cut = (self.total - self.tail.len() as u64) as usize + n.saturating_sub(max_chars);
        if cut == 0 {
            return text.into_owned();
        }
        let kept: String = text.chars().skip(n.saturating_sub(max_chars)).collect();
        format!("[… earlier output cut] {kept}")
    }
}

/// How the child ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// Killed after the deadline.
    pub timed_out: bool,
    /// Its stdout.
    pub stdout: Captured,
    /// Its stderr.
    pub stderr: Captured,
}

/// Signals the child's process group when dropped while armed: the call
/// was abandoned before the child was reaped (so the group id is still
/// ours to signal).
struct GroupGuard {
    pgid: Option<Pid>,
    armed: bool,
}

impl GroupGuard {
    fn signal(&self, sig: Signal) {
        if let Some(p) = self.pgid {
            let _ = killpg(p, sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::SIGTERM);
        }
    }
}

async fn drain(mut r: impl AsyncRead + Unpin, into: Arc<Mutex<Captured>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => into
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(&buf[..n]),
        }
    }
}

fn take(c: &Arc<Mutex<Captured>>) -> Captured {
    std::mem::take(&mut *c.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// Runs `spec` to its end or its deadline. Fails only when the program
/// cannot be started (the error is the OS's: not found, not executable).
pub async fn run(spec: Spec<'_>) -> std::io::Result<Finished> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for name in spec.env_remove {
        cmd.env_remove(name);
    }
    for (name, value) in &spec.env {
        cmd.env(name, value);
    }
    let mut child = cmd.spawn()?;
    let mut guard = GroupGuard {
        pgid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
        armed: true,
    };
    let out = Arc::new(Mutex::new(Captured {
        keep: spec.keep_stdout,
        ..Captured::default()
    }));
    let err = Arc::new(Mutex::new(Captured::default()));
    let mut readers = tokio::task::JoinSet::new();
    if let Some(s) = child.stdout.take() {
        readers.spawn(drain(s, out.clone()));
    }
    if let Some(s) = child.stderr.take() {
        readers.spawn(drain(s, err.clone()));
    }

    let (status, timed_out) = tokio::select! {
        st = child.wait() => (st, false),
        _ = tokio::time::sleep(spec.deadline) => {
            guard.signal(Signal::SIGTERM);
            let st = match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(st) => st,
                Err(_) => {
                    guard.signal(Signal::SIGKILL);
                    child.wait().await
                }
            };
            (st, true)
        }
    };
    // Reaped: the group id may be reused from here on.
    guard.armed = false;
    let status = status?;
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        readers.abort_all();
    }
    Ok(Finished {
        code: status.code(),
        timed_out,
        stdout: take(&out),
        stderr: take(&err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_keep_the_head_and_a_bounded_tail() {
        let mut c = Captured {
            keep: 4,
            ..Captured::default()
        };
        for _ in 0..10_000 {
            c.push(b"0123456789");
        }
        assert_eq!(c.head, b"0123");
        assert_eq!(c.total, 100_000);
        assert!(c.tail.len() <= 2 * TAIL_BYTES);
        let t = c.tail_text(25);
        assert!(t.starts_with("[… earlier output cut] "), "{t}");
        assert!(t.ends_with("456789"), "{t}");
        let mut short = Captured::default();
        short.push("héllo".as_bytes());
        assert_eq!(short.tail_text(100), "héllo");
    }
}
