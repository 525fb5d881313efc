//! `ptp-agent flush`: sending the runs waiting in the spool.
//!
//! Each spooled run gets the publish budget a run gets; sending stops at the
//! first failure (the broker is away) and leaves the rest for later. Exit 0
//! when nothing failed, else 1.

use tokio::time::Instant;

use super::delivery::{connect, send_spool};
use crate::config::Settings;
use crate::spool;

/// `ptp-agent flush`.
pub async fn flush(s: &Settings) -> i32 {
    let pending = match spool::list(&s.spool_dir) {
        Ok(f) => f.len(),
        Err(e) => {
            eprintln!("ptp-agent: {e}");
            return 1;
        }
    };
    if pending == 0 {
        say!(
            s,
            "spool {} is empty; nothing to send",
            s.spool_dir.display()
        );
        return 0;
    }
    let Some(p) = connect(s).await else { return 1 };
    // Each spooled run gets the budget a run gets.
    let deadline = Instant::now() + s.publish_timeout * pending.max(1) as u32;
    let (sent, failed) = send_spool(s, &p, deadline).await;
    p.close(deadline).await;
    say!(
        s,
        "flush: {sent} sent, {failed} not sent, {} left in {}",
        pending - sent,
        s.spool_dir.display()
    );
    if failed == 0 { 0 } else { 1 }
}
