//! The big fixture shared by sections 2, 4 and 5: a master holding
//! `runs × cases` stored test cases (1,000,000 by default: 100 runs of
//! 10,000), filled the way production fills it, by publishing runs through
//! NATS and waiting until `GET /results` lists them all.
//!
//! The runs spread over 4 projects, 3 branches and 20 workers, 10 minutes
//! apart and ending now, so the trend, worker and failure aggregates have
//! realistic shapes. Filling is timed too (an informative ingest figure at
//! scale), and the master's memory is read before and after.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;

use crate::data::{self, RunMeta};
use crate::procs::{Bins, Mem, Stack, StoreKind};
use crate::table::{mib, ms, per_sec};
use crate::{Plan, progress, publish};

/// Projects of the fill.
pub const PROJECTS: [&str; 4] = ["proj-a", "proj-b", "proj-c", "proj-d"];
const BRANCHES: [&str; 3] = ["main", "dev", "feature-x"];
const WORKERS: usize = 20;
/// Concurrent publishers while filling.
const FILL_PUBLISHERS: usize = 4;

/// A filled master.
pub struct Fixture {
    /// The parts.
    pub stack: Stack,
    /// Ids of the stored runs, oldest first.
    pub run_ids: Vec<String>,
    /// Stored test cases.
    pub cases: usize,
    /// Seconds from the first publish until every run was queryable.
    pub fill_secs: f64,
    /// The master's memory right after start, on the empty database.
    pub idle: Mem,
    /// Its memory one second after the fill was queryable.
    pub filled: Mem,
}

/// Starts the parts and fills the master, on SQLite.
pub async fn build(plan: &Plan, bins: &Bins) -> anyhow::Result<Fixture> {
    build_on(plan, bins, &StoreKind::Sqlite).await
}

/// Starts the parts with one master on `store` and fills it.
pub async fn build_on(plan: &Plan, bins: &Bins, store: &StoreKind) -> anyhow::Result<Fixture> {
    let runs = plan.fill_runs;
    let per_run = plan.fill_cases;
    progress!(
        "fixture: filling a master with {runs} runs × {per_run} cases = {} cases",
        runs * per_run
    );
    let stack = Stack::start_on(bins, &plan.master_args, plan.keep, store, 1).await?;
    let master = stack.master()?;
    let idle = master.mem()?;
    let url = stack.nats.url();
    let first_start = Utc::now() - chrono::Duration::minutes(10 * runs as i64 + 10);
    let metas: Vec<RunMeta> = (0..runs)
        .map(|i| RunMeta {
            run_id: data::run_id(),
            project: PROJECTS[i % PROJECTS.len()].into(),
            branch: BRANCHES[(i / PROJECTS.len()) % BRANCHES.len()].into(),
            worker_id: format!("worker-{:02}", i % WORKERS),
            started_at: first_start + chrono::Duration::minutes(10 * i as i64),
        })
        .collect();
    let ids: Vec<String> = metas.iter().map(|m| m.run_id.clone()).collect();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..FILL_PUBLISHERS {
        let mine: Vec<(usize, RunMeta)> = metas
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, _)| i % FILL_PUBLISHERS == p)
            .collect();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let (client, js) = publish::connect(&url).await?;
            let max = publish::max_payload(&client);
            for (i, meta) in mine {
                let cases = data::cases(&meta.project, per_run, i as u64);
                let info = data::run_info(&meta, &cases);
                publish::publish_run(&js, &info, &cases, max).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("fill publisher panicked")??;
    }
    let acked = t0.elapsed();
    let http = reqwest::Client::new();
    let done = master
        .wait_listed(&http, first_start, &ids, Duration::from_secs(1800))
        .await?;
    let fill_secs = done.duration_since(t0).as_secs_f64();
    let total = runs * per_run;
    let (_, js) = publish::connect(&url).await?;
    progress!(
        "  filled: stream acked all in {}, queryable after {} ({}); {}",
        ms(acked.as_secs_f64() * 1e3),
        ms(fill_secs * 1e3),
        per_sec(total as f64 / fill_secs),
        publish::consumer_stats(&js).await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let filled = master.mem()?;
    progress!(
        "  master memory: idle {} → after fill {} (peak {})",
        mib(idle.rss),
        mib(filled.rss),
        mib(filled.hwm)
    );
    Ok(Fixture {
        stack,
        run_ids: ids,
        cases: total,
        fill_secs,
        idle,
        filled,
    })
}
