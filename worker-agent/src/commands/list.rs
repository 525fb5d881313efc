//! `ptp-agent list`: the tests the runner would run, without running them,
//! as lines or JSON.
//!
//! Only sequencing: the runner's listing command comes from
//! [`crate::runner`], running and parsing it from [`crate::listing`]; the
//! exit code is the listing's.

use std::path::PathBuf;
use std::time::Duration;

use super::resolve::resolve_selection;
use crate::config::ListArgs;
use crate::{listing, runner};

/// `ptp-agent list`: the tests the runner would run, without running them.
pub async fn list(args: ListArgs) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let resolved = match resolve_selection(&args.select, &cwd) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Some(r) = resolved.runner else {
        eprintln!(
            "ptp-agent: cannot list the tests of {:?}: it is no runner the agent knows ({}); name it with --runner",
            resolved.argv.join(" "),
            runner::names()
        );
        return 2;
    };
    let argv = match r.list_command(&resolved.argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ptp-agent: {e}");
            return 2;
        }
    };
    let listed = listing::run(r, &argv, &cwd, args.timeout.map(Duration::from_secs)).await;
    if args.json {
        match serde_json::to_string(&listed) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("ptp-agent: cannot encode the listing: {e}");
                return 70;
            }
        }
    } else {
        for t in &listed.tests {
            println!("{t}");
        }
        for e in &listed.errors {
            eprintln!("ptp-agent: {e}");
        }
    }
    listed.exit_code
}
