//! `ptp-agent`: wraps a test command in CI and publishes its results.
//!
//! How the exit code is decided, in one place ([`exit_code`]): the test
//! command's own code always wins (124 for a timeout, 127/126 when it could
//! not start, 128+N when killed by signal N). Reporting trouble (no report,
//! NATS unreachable) is printed and never changes it, unless `--strict` is
//! given and the tests themselves passed: then the agent exits 75.

use std::process::ExitCode;

use clap::Parser;
use ptp_agent::config::{Cli, Cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ptp-agent: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let settings = cli.common.resolve();
    let code = rt.block_on(async move {
        match cli.command {
            Cmd::Run(args) => ptp_agent::commands::run(&settings, args).await,
            Cmd::Upload(args) => ptp_agent::commands::upload(&settings, args).await,
            Cmd::List(args) => ptp_agent::commands::list(args).await,
            Cmd::Flush => ptp_agent::commands::flush(&settings).await,
            Cmd::Check => ptp_agent::check::check(&settings).await,
        }
    });
    ExitCode::from(code.clamp(0, 255) as u8)
}
