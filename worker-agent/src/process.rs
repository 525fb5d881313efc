//! Running the test command as a child process.
//!
//! The agent never imports or links a test framework: the project's pytest,
//! jest or cargo is its own. The child gets the agent's stdin, stdout and
//! stderr (output passes through live) and runs in its own process group, so
//! a `--timeout` can kill everything it started, and SIGINT/SIGTERM sent to
//! the agent are forwarded to that group. What to run (which arguments and
//! environment make the runner write a JUnit report) is decided in
//! [`crate::runner`].

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

/// How the child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exited with a code.
    Code(i32),
    /// Killed by a signal (number).
    Signal(i32),
    /// Killed by the agent after `--timeout`.
    TimedOut,
    /// Could not be started (not found, not executable...).
    NotStarted {
        /// Shell-style exit code: 127 not found, 126 not executable.
        code: i32,
        /// What went wrong.
        reason: String,
    },
}

impl Exit {
    /// The exit code the agent passes on: the child's code, 128+signal,
    /// 124 for a timeout, 127/126 when the command could not start.
    pub fn code(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Signal(s) => 128 + s,
            Exit::TimedOut => 124,
            Exit::NotStarted { code, .. } => *code,
        }
    }
}

fn from_status(st: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(1),
    }
}

/// Runs `argv` to completion. `on_start` is called once the child is running.
pub async fn run(
    argv: &[String],
    env: &[(String, String)],
    timeout: Option<Duration>,
    on_start: impl FnOnce(),
) -> Exit {
    let Some((program, args)) = argv.split_first() else {
        return Exit::NotStarted {
            code: 2,
            reason: "no command given: put the test command after `--`".into(),
        };
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let (code, what) = match e.kind() {
                std::io::ErrorKind::NotFound => (127, "not found (check the name and PATH)"),
                std::io::ErrorKind::PermissionDenied => {
                    (126, "not executable (check its permissions)")
                }
                _ => (126, "could not be started"),
            };
            return Exit::NotStarted {
                code,
                reason: format!("command {program:?} {what}: {e}"),
            };
        }
    };
    on_start();
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let kill_group = |sig: Signal| {
        if let Some(p) = pgid {
            let _ = killpg(p, sig);
        }
    };
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        tokio::select! {
            st = child.wait() => {
                return match st {
                    Ok(st) => from_status(st),
                    Err(e) => Exit::NotStarted { code: 1, reason: format!("waiting for the command failed: {e}") },
                };
            }
            _ = &mut deadline => {
                kill_group(Signal::SIGTERM);
                // Give the group a moment to exit cleanly, then make sure.
                if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                    kill_group(Signal::SIGKILL);
                    let _ = child.wait().await;
                } else {
                    kill_group(Signal::SIGKILL);
                }
                return Exit::TimedOut;
            }
            Some(()) = async { match sigint.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                kill_group(Signal::SIGINT);
            }
            Some(()) = async { match sigterm.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                kill_group(Signal::SIGTERM);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_shell_conventions() {
        assert_eq!(Exit::Signal(9).code(), 137);
        assert_eq!(Exit::TimedOut.code(), 124);
        assert_eq!(Exit::Code(5).code(), 5);
    }
}
