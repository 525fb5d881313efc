//! Running the test command as a child process.
//!
//! The agent never imports or links a test framework: the project's pytest,
//! jest or cargo is its own. The child gets the agent's stdin, stdout and
//! stderr (output passes through live) and runs in its own process group, so
//! a `--timeout` can kill everything it started, and SIGINT/SIGTERM sent to
//! the agent are forwarded to that group.
//!
//! For pytest (`pytest`, `py.test`, `python -m pytest`, also behind
//! `uv run`, `poetry run`, `pipenv run`, `pdm run`, `hatch run`) the agent
//! adds `--junitxml=<file>` unless the user passed one, in which case it
//! reads the user's file.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

/// What the runner detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The command to run (possibly with `--junitxml` added).
    pub argv: Vec<String>,
    /// `Some("pytest")` when the command is pytest.
    pub runner: Option<String>,
    /// The report path the agent arranged (pytest) or the user named.
    pub junit_path: Option<PathBuf>,
}

fn basename(s: &str) -> &str {
    Path::new(s)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(s)
}

/// Index of the first pytest argument in `argv` if the command is pytest.
fn pytest_args_start(argv: &[String]) -> Option<usize> {
    let first = basename(argv.first()?);
    if first == "pytest" || first == "py.test" {
        return Some(1);
    }
    if first.starts_with("python") && argv.get(1)? == "-m" {
        let m = argv.get(2)?;
        if m == "pytest" || m == "py.test" {
            return Some(3);
        }
    }
    if ["uv", "poetry", "pipenv", "pdm", "hatch", "rye"].contains(&first)
        && argv.get(1).map(String::as_str) == Some("run")
    {
        return pytest_args_start(&argv[2..]).map(|i| i + 2);
    }
    None
}

/// Decides how to run `argv`: for pytest, where its JUnit report goes.
pub fn plan(argv: &[String], report_dir: &Path) -> Plan {
    let Some(start) = pytest_args_start(argv) else {
        return Plan {
            argv: argv.to_vec(),
            runner: None,
            junit_path: None,
        };
    };
    let args = &argv[start..];
    let user_path = args.iter().enumerate().find_map(|(i, a)| {
        for flag in ["--junitxml", "--junit-xml"] {
            if let Some(v) = a.strip_prefix(flag) {
                if let Some(v) = v.strip_prefix('=') {
                    return Some(PathBuf::from(v));
                }
                if v.is_empty() {
                    return args.get(i + 1).map(PathBuf::from);
                }
            }
        }
        None
    });
    match user_path {
        Some(p) => Plan {
            argv: argv.to_vec(),
            runner: Some("pytest".into()),
            junit_path: Some(p),
        },
        None => {
            let path = report_dir.join("pytest-junit.xml");
            let mut argv = argv.to_vec();
            argv.push(format!("--junitxml={}", path.display()));
            Plan {
                argv,
                runner: Some("pytest".into()),
                junit_path: Some(path),
            }
        }
    }
}

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
pub async fn run(argv: &[String], timeout: Option<Duration>, on_start: impl FnOnce()) -> Exit {
    let Some((program, args)) = argv.split_first() else {
        return Exit::NotStarted {
            code: 2,
            reason: "no command given: put the test command after `--`".into(),
        };
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
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

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn detects_pytest_forms_and_adds_junitxml() {
        let dir = Path::new("/tmp/r");
        for cmd in [
            "pytest -q",
            "py.test",
            "/usr/bin/pytest tests",
            "python -m pytest -x",
            "python3.11 -m pytest",
            "uv run pytest",
            "poetry run python -m pytest",
        ] {
            let p = plan(&v(cmd), dir);
            assert_eq!(p.runner.as_deref(), Some("pytest"), "{cmd}");
            assert_eq!(
                p.argv.last().map(String::as_str),
                Some("--junitxml=/tmp/r/pytest-junit.xml"),
                "{cmd}"
            );
        }
        for cmd in [
            "npm test",
            "cargo nextest run",
            "python script.py",
            "python -m unittest",
        ] {
            let p = plan(&v(cmd), dir);
            assert_eq!((p.runner, p.junit_path), (None, None), "{cmd}");
            assert_eq!(p.argv, v(cmd));
        }
    }

    #[test]
    fn respects_a_user_junitxml() {
        let dir = Path::new("/tmp/r");
        let p = plan(&v("pytest --junitxml=out/r.xml"), dir);
        assert_eq!(p.junit_path, Some(PathBuf::from("out/r.xml")));
        assert_eq!(p.argv, v("pytest --junitxml=out/r.xml"));
        let p = plan(&v("python -m pytest --junit-xml out.xml -q"), dir);
        assert_eq!(p.junit_path, Some(PathBuf::from("out.xml")));
    }

    #[test]
    fn exit_codes_follow_shell_conventions() {
        assert_eq!(Exit::Signal(9).code(), 137);
        assert_eq!(Exit::TimedOut.code(), 124);
        assert_eq!(Exit::Code(5).code(), 5);
    }
}
