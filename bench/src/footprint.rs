//! Section 5, the master's footprint: resident memory after it ingested the
//! fixture's 1,000,000 cases, and the time from spawning it to a healthy
//! `/health` on that database.
//!
//! Method: memory is `VmRSS` from `/proc/<pid>/status` one second after the
//! fill became queryable (the peak, `VmHWM`, is shown too). Start-up: the
//! master is stopped with SIGTERM and spawned again on the same database;
//! the clock runs from spawn to the first 200 from `/health`, polled every
//! 2 ms. That includes migrating (no history is read since issue 13) and
//! connecting to NATS.
//!
//! References: the same master's memory right after start on an empty
//! database, and its start-up time on that empty database.

use crate::fixture::Fixture;
use crate::table::{Row, mib, ms};
use crate::{Plan, progress};

/// RSS bound, bytes.
const RSS_TARGET: u64 = 150 * 1024 * 1024;
/// Start-up bound, milliseconds.
const START_TARGET_MS: f64 = 1000.0;

/// Rows of section 5. Restarts the fixture's master.
pub async fn run(_plan: &Plan, fx: &mut Fixture) -> anyhow::Result<Vec<Row>> {
    let cases = fx.cases;
    progress!("footprint: restarting the master on its {cases}-case database");
    let empty_ms = fx.stack.started_in.as_secs_f64() * 1e3;
    let start_ms = fx.stack.restart_master().await?.as_secs_f64() * 1e3;
    let after_restart = fx.stack.master()?.mem()?;
    progress!(
        "  healthy after {} (empty database: {}); RSS after restart {}",
        ms(start_ms),
        ms(empty_ms),
        mib(after_restart.rss)
    );
    let (idle, filled) = (fx.idle, fx.filled);
    Ok(vec![
        Row::info(
            format!("5 master RSS after ingesting {cases} cases"),
            mib(filled.rss),
        )
        .vs(
            format!("idle, empty DB {}", mib(idle.rss)),
            filled.rss as f64 / idle.rss as f64,
        )
        .goal("≤ 150 MiB", filled.rss <= RSS_TARGET),
        Row::info("5 master peak RSS (VmHWM) during the fill", mib(filled.hwm)).vs(
            format!("idle, empty DB {}", mib(idle.rss)),
            filled.hwm as f64 / idle.rss as f64,
        ),
        Row::info(
            format!("5 master start → healthy, {cases}-case DB"),
            ms(start_ms),
        )
        .vs(format!("empty DB {}", ms(empty_ms)), start_ms / empty_ms)
        .goal("≤ 1 s", start_ms <= START_TARGET_MS),
        Row::info("5 master RSS after that restart", mib(after_restart.rss)).vs(
            format!("idle, empty DB {}", mib(idle.rss)),
            after_restart.rss as f64 / idle.rss as f64,
        ),
    ])
}
