//! Deciding the runner and the command for `run` and `list`: `--runner`,
//! the command itself, or detection in the working directory, plus
//! `--filter`.
//!
//! Separate from the subcommands because both share it and because every
//! error here is a usage error said before anything runs (exit code 2).

use std::path::Path;

use crate::runner::{self, Runner};

/// The runner and command a `run` or `list` works with.
#[derive(Debug)]
pub struct Resolved {
    /// The runner, when named, recognised or detected.
    pub runner: Option<Runner>,
    /// The command (the runner's default when none was given).
    pub argv: Vec<String>,
}

/// [`resolve`] for `run`'s and `list`'s options; a usage error is printed
/// and answered with exit code 2.
pub(super) fn resolve_selection(
    select: &crate::config::Selection,
    cwd: &Path,
) -> Result<Resolved, i32> {
    resolve(
        select.runner.as_deref(),
        &select.command,
        select.filter.as_deref(),
        select.python.as_deref(),
        cwd,
    )
    .map_err(|e| {
        eprintln!("ptp-agent: {e}");
        2
    })
}

/// Decides the runner and the command: `--runner` names it, else the
/// command is recognised, else (no command) the project in `cwd` is
/// detected. Errors are usage errors, said before anything runs.
pub fn resolve(
    runner: Option<&str>,
    command: &[String],
    filter: Option<&str>,
    python: Option<&Path>,
    cwd: &Path,
) -> Result<Resolved, String> {
    let named = match runner.map(str::trim).filter(|r| !r.is_empty()) {
        Some(name) => Some(Runner::from_name(name).ok_or_else(|| {
            format!(
                "--runner {name:?} is not a runner the agent knows ({}); leave it out to \
                 recognise the runner from the command",
                runner::names()
            )
        })?),
        None => None,
    };
    let (runner, argv) = if command.is_empty() {
        let r = named.or_else(|| Runner::detect(cwd)).ok_or_else(|| {
            format!(
                "no command given and no test runner detected in {}: none of {} is there. Put \
                 the test command after `--`, or name the runner with --runner",
                cwd.display(),
                Runner::detect_text()
            )
        })?;
        (Some(r), r.default_command(cwd, python))
    } else {
        (
            named.or_else(|| Runner::of_command(command).map(|(r, _)| r)),
            command.to_vec(),
        )
    };
    let argv = match (filter.filter(|f| !f.is_empty()), runner) {
        (None, _) => argv,
        (Some(f), Some(r)) => r.with_args(&argv, r.filter_args(f)),
        (Some(_), None) => {
            return Err(format!(
                "--filter needs a runner the agent knows ({}); {:?} is none of them: put the \
                 selection in the command, or name the runner with --runner",
                runner::names(),
                argv.join(" ")
            ));
        }
    };
    Ok(Resolved { runner, argv })
}
