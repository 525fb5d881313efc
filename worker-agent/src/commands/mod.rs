//! The subcommands, as readable decision sequences: `run`, `upload`,
//! `flush` (`check` lives in [`crate::check`]). Each returns the process
//! exit code.
//!
//! Time after the test command: everything sent once the command has
//! finished (the run, spooled runs, the last heartbeats) shares one deadline,
//! `PTP_PUBLISH_TIMEOUT` from the command's end; the job summary's queries
//! to the master, made only when a summary is written, have their own
//! bound ([`crate::summary::QUERY_BUDGET`]).
//!
//! # Layout
//! - `run`, `list`, `upload`, `flush`: one file per subcommand, each a
//!   decision sequence (the functions are re-exported here).
//! - `resolve`: the runner and command for `run` and `list`.
//! - `attempt`: one run of the test command, and `--retries`.
//! - `reports`: finding and reading the JUnit report files.
//! - `delivery`: connecting, publishing or spooling, telling CI.
//!
//! This module keeps what every subcommand shares: the exit-code rule, the
//! settings' warnings and the `say!` macro (defined before the submodules so
//! they can use it).

/// Exit code with --strict when the tests passed but reporting failed.
pub const EXIT_REPORTING_FAILED: i32 = 75;

/// How the test command's code and reporting trouble combine.
pub fn exit_code(test_code: i32, reporting_ok: bool, strict: bool) -> i32 {
    if strict && !reporting_ok && test_code == 0 {
        EXIT_REPORTING_FAILED
    } else {
        test_code
    }
}

macro_rules! say {
    ($s:expr, $($arg:tt)*) => {
        if !$s.quiet {
            eprintln!("ptp-agent: {}", format!($($arg)*));
        }
    };
}

mod attempt;
mod delivery;
mod flush;
mod list;
mod reports;
mod resolve;
mod run;
mod upload;

pub use delivery::connect;
pub use flush::flush;
pub use list::list;
pub use resolve::{Resolved, resolve};
pub use run::run;
pub use upload::upload;

use crate::config::Settings;

/// Says the settings' warnings (branch and commit unknown...), once.
pub fn warn(s: &Settings) {
    for w in &s.warnings {
        say!(s, "warning: {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_code_wins_unless_strict_and_green() {
        assert_eq!(exit_code(1, false, true), 1);
        assert_eq!(exit_code(0, false, false), 0);
        assert_eq!(exit_code(0, false, true), EXIT_REPORTING_FAILED);
        assert_eq!(exit_code(0, true, true), 0);
        assert_eq!(exit_code(124, true, false), 124);
    }
}
