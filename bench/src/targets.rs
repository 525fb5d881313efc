//! Section 6, issue 13's targets for state kept in the store: start-up that
//! stays flat as history grows, the original system's payload stored end to
//! end, and bytes per stored case. (The reads with the cache off and under
//! a write load are rows of section 2; `get_report` after a write is in
//! section 4.)
//!
//! Method:
//! - **Start-up.** For each history size (5,000 and 50,000 runs of 100
//!   cases; `--quick`: 500 and 5,000), a fresh master is filled through
//!   NATS by 8 publishers (each run's chunks encoded once and patched per
//!   run, as in section 1) until `/health` counts every run completed; then
//!   SIGTERM, spawn again on the same database, and the time from spawn to
//!   the first 200 from `/health`. RSS right after, and after one read of
//!   each aggregate route (`/trend`, `/workers`, `/failures/stats`,
//!   `/results`, `/flaky`). References: the same master's start-up and RSS
//!   on an empty database in the same run.
//! - **Writes.** The original system's `POST /results` payload (counts and
//!   100 failures with ~90-character messages, a timestamp without offset)
//!   for `--post-runs` runs from 1 and from 8 HTTP connections, as fast as
//!   the master answers; the clock runs from the first request until
//!   `/health` counts every run completed (accepted until visible).
//!   Reference: the `sqlite3` CLI importing the same `test_cases` rows
//!   (exported from the master's database) into the same schema with the
//!   master's settings, as in section 1.
//! - **Bytes per case.** `dbstat` over the whole database file (every
//!   table and index, rollups included) divided by the cases stored, for the
//!   largest start-up fill and for the 8-connection write fill. Reference:
//!   the same cases as text columns in one plain table without indexes
//!   (`CREATE TABLE ... AS SELECT`), measured the same way.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;

use crate::data::{self, RunMeta};
use crate::fixture::PROJECTS;
use crate::procs::{Bins, Master, Stack};
use crate::publish::{self, Template};
use crate::table::{Row, mib, ms, per_sec};
use crate::{Plan, progress};

/// Start-up bound, milliseconds.
const START_TARGET_MS: f64 = 1000.0;
/// RSS bound, bytes.
const RSS_TARGET: u64 = 150 * 1024 * 1024;
/// Stored runs per second the writes must reach.
const WRITE_TARGET: f64 = 2700.0;
/// Cases per run of the start-up fills.
const STARTUP_CASES: usize = 100;
/// Concurrent publishers of the start-up fills.
const FILL_PUBLISHERS: usize = 8;
/// Failures per run of the original payload.
const POST_FAILURES: usize = 100;

/// Rows of section 6.
pub async fn run(plan: &Plan, bins: &Bins) -> anyhow::Result<Vec<Row>> {
    let sqlite = crate::tools::ensure_tool("sqlite3", "sqlite3", plan.install)?;
    let mut rows = Vec::new();
    let largest = plan.startup_runs.iter().copied().max().unwrap_or(0);
    for &runs in &plan.startup_runs {
        rows.extend(startup(plan, bins, &sqlite, runs, runs == largest).await?);
    }
    for conns in [1, 8] {
        rows.extend(writes(plan, bins, &sqlite, conns, conns == 8).await?);
    }
    Ok(rows)
}

/// `runs_completed` of the master's `/health`.
async fn completed(http: &reqwest::Client, m: &Master) -> Option<u64> {
    let r = http.get(format!("{}/health", m.base)).send().await.ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    v["runs_completed"].as_u64()
}

/// Polls `/health` until the master counts `n` runs completed since it
/// started; returns when it first did.
async fn wait_completed(
    http: &reqwest::Client,
    m: &Master,
    n: u64,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let t0 = Instant::now();
    loop {
        if completed(http, m).await.is_some_and(|c| c >= n) {
            return Ok(Instant::now());
        }
        if t0.elapsed() > timeout {
            bail!(
                "the master completed {:?} of {n} runs within {timeout:?}",
                completed(http, m).await
            );
        }
        let pause = (t0.elapsed() / 50).clamp(Duration::from_millis(2), Duration::from_millis(50));
        tokio::time::sleep(pause).await;
    }
}

async fn startup(
    plan: &Plan,
    bins: &Bins,
    sqlite: &Path,
    runs: usize,
    measure_bytes: bool,
) -> anyhow::Result<Vec<Row>> {
    let cases_total = runs * STARTUP_CASES;
    progress!("targets: start-up on {runs} runs × {STARTUP_CASES} cases ({cases_total} cases)");
    let mut stack = Stack::start(bins, &plan.master_args, plan.keep).await?;
    let empty_ms = stack.started_in.as_secs_f64() * 1e3;
    let idle = stack.master()?.mem()?;
    let url = stack.nats.url();
    let (client, _) = publish::connect(&url).await?;
    let max = publish::max_payload(&client);
    let first_start = Utc::now() - chrono::Duration::seconds(10 * runs as i64 + 60);
    let mut templates = Vec::new();
    for (p, project) in PROJECTS.iter().enumerate() {
        let cases = data::cases(project, STARTUP_CASES, p as u64);
        let meta = RunMeta {
            run_id: data::run_id(),
            project: (*project).into(),
            branch: "main".into(),
            worker_id: "worker-00".into(),
            started_at: first_start,
        };
        let info = data::run_info(&meta, &cases);
        templates.push((Arc::new(Template::new(&info, cases, max)?), info));
    }
    let templates = Arc::new(templates);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..FILL_PUBLISHERS {
        let (templates, next, url) = (templates.clone(), next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (_, js) = publish::connect(&url).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= runs {
                    return anyhow::Ok(());
                }
                let (t, base) = &templates[i % templates.len()];
                let mut info = base.clone();
                info.run_id = data::run_id();
                info.worker_id = format!("worker-{:02}", i % 20);
                info.started_at = first_start + chrono::Duration::seconds(10 * i as i64);
                info.finished_at = info.started_at + chrono::Duration::seconds(5);
                t.publish(&js, &info).await?;
            }
        }));
    }
    for t in tasks {
        t.await.context("fill publisher panicked")??;
    }
    let http = reqwest::Client::new();
    let done = wait_completed(
        &http,
        stack.master()?,
        runs as u64,
        Duration::from_secs(3600),
    )
    .await?;
    let fill = done.duration_since(t0).as_secs_f64();
    progress!(
        "  filled in {:.1} s ({} runs, {} cases)",
        fill,
        per_sec(runs as f64 / fill),
        per_sec(cases_total as f64 / fill)
    );

    let start_ms = stack.restart_master().await?.as_secs_f64() * 1e3;
    let master = stack.master()?;
    let started = master.mem()?;
    for path in [
        "/trend".to_string(),
        "/workers".into(),
        "/failures/stats".into(),
        "/results".into(),
        format!("/flaky?project={}", PROJECTS[0]),
    ] {
        let r = http
            .get(format!("{}{path}", master.base))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        if !r.status().is_success() {
            bail!("GET {path} answered {}", r.status());
        }
    }
    let read = master.mem()?;
    progress!(
        "  healthy after {} (empty database {}); RSS {} at start, {} after the first reads (empty: {})",
        ms(start_ms),
        ms(empty_ms),
        mib(started.rss),
        mib(read.rss),
        mib(idle.rss)
    );
    let db = master.db.sqlite()?.to_path_buf();
    stack.stop_master()?;
    let mut rows = vec![
        Row::info(
            format!("6 master start → healthy, {runs} runs / {cases_total} cases"),
            ms(start_ms),
        )
        .vs(format!("empty DB {}", ms(empty_ms)), start_ms / empty_ms)
        .goal("≤ 1 s", start_ms <= START_TARGET_MS),
        Row::info(
            format!(
                "6 master RSS after that start and one read of each aggregate route, {runs} runs"
            ),
            mib(read.rss),
        )
        .vs(
            format!("empty DB {}", mib(idle.rss)),
            read.rss as f64 / idle.rss as f64,
        )
        .goal("≤ 150 MiB", read.rss <= RSS_TARGET),
    ];
    if measure_bytes {
        rows.push(bytes_row(
            sqlite,
            &db,
            stack.dir.path(),
            &format!("{runs} runs × {STARTUP_CASES} cases, 2% failing"),
            cases_total,
        )?);
    }
    Ok(rows)
}

/// The original system's payload for one run: counts and
/// [`POST_FAILURES`] failures, with `RUN_ID` to be replaced.
fn legacy_body(seed: usize) -> String {
    let at = (Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S");
    let failures: Vec<serde_json::Value> = (0..POST_FAILURES)
        .map(|i| {
            serde_json::json!({
                "nodeid": format!("tests/test_orders_{:02}.py::test_order_flow_{i:03}", i % 20),
                "duration": 0.01 * (i % 50) as f64,
                "message": format!(
                    "AssertionError: expected status 200 from /api/orders/{}, got 500 after {} retries",
                    (seed * 7 + i) % 1000,
                    i % 4
                ),
            })
        })
        .collect();
    serde_json::json!({
        "run_id": "RUN_ID", "worker_id": format!("worker-{:02}", seed % 20), "project": "legacy",
        "timestamp": at.to_string(), "passed": 400, "failed": POST_FAILURES, "total": 400 + POST_FAILURES,
        "duration": 12.5, "failures": failures,
    })
    .to_string()
}

async fn writes(
    plan: &Plan,
    bins: &Bins,
    sqlite: &Path,
    conns: usize,
    measure_bytes: bool,
) -> anyhow::Result<Vec<Row>> {
    let runs = plan.post_runs;
    progress!("targets: {runs} original-shape POST /results from {conns} connection(s)");
    let mut stack = Stack::start(bins, &plan.master_args, plan.keep).await?;
    let base = stack.master()?.base.clone();
    let bodies: Arc<Vec<String>> = Arc::new((0..16).map(legacy_body).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (bodies, next, http) = (bodies.clone(), next.clone(), http.clone());
        let url = format!("{base}/results");
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= runs {
                    return anyhow::Ok(());
                }
                let body = bodies[i % bodies.len()].replacen("RUN_ID", &data::run_id(), 1);
                loop {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .context("POST /results")?;
                    match r.status().as_u16() {
                        202 => break,
                        503 => tokio::time::sleep(Duration::from_millis(5)).await,
                        s => bail!(
                            "POST /results answered {s}: {}",
                            r.text().await.unwrap_or_default()
                        ),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("poster panicked")??;
    }
    let accepted = t0.elapsed().as_secs_f64();
    let done = wait_completed(
        &http,
        stack.master()?,
        runs as u64,
        Duration::from_secs(3600),
    )
    .await?;
    let secs = done.duration_since(t0).as_secs_f64();
    let rate = runs as f64 / secs;
    progress!(
        "  accepted in {:.2} s ({} posts), stored in {:.2} s ({} runs)",
        accepted,
        per_sec(runs as f64 / accepted),
        secs,
        per_sec(rate)
    );
    let db = stack.master()?.db.sqlite()?.to_path_buf();
    stack.stop_master()?;

    // Reference: sqlite3 importing the same rows into the same schema.
    let schema = crate::ingest::schema_of(sqlite, &db)?;
    let csv = stack.dir.path().join("legacy-cases.csv");
    let out = std::process::Command::new(sqlite)
        .arg("-csv")
        .arg(&db)
        .arg("SELECT * FROM test_cases")
        .output()
        .context("exporting test_cases")?;
    if !out.status.success() {
        bail!(
            "sqlite3 export failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(&csv, &out.stdout).context("writing the CSV")?;
    let ref_secs = crate::ingest::sqlite_import(
        sqlite,
        &schema,
        &csv,
        stack.dir.path(),
        1,
        runs * POST_FAILURES,
    )?;
    let _ = std::fs::remove_file(&csv);
    let ref_rate = runs as f64 / ref_secs[0];
    let mut rows = vec![
        Row::info(
            format!(
                "6 writes: original POST /results ({POST_FAILURES} failures), {runs} runs, {conns} connection{}, accepted → visible",
                if conns == 1 { "" } else { "s" }
            ),
            format!("{} runs ({:.2} s)", per_sec(rate), secs),
        )
        .vs(
            format!("sqlite3 .import {} runs", per_sec(ref_rate)),
            rate / ref_rate,
        )
        .goal("≥ 2,700 runs/s", rate >= WRITE_TARGET),
    ];
    if measure_bytes {
        rows.push(bytes_row(
            sqlite,
            &db,
            stack.dir.path(),
            &format!("original payload, {runs} runs × {POST_FAILURES} failures"),
            runs * POST_FAILURES,
        )?);
    }
    Ok(rows)
}

/// Bytes per stored case of `db` (whole file by `dbstat`) beside the same
/// cases as text in one plain table.
fn bytes_row(
    sqlite: &Path,
    db: &Path,
    dir: &Path,
    what: &str,
    cases: usize,
) -> anyhow::Result<Row> {
    let query = |db: &Path, sql: &str| -> anyhow::Result<String> {
        let out = std::process::Command::new(sqlite)
            .arg(db)
            .arg(sql)
            .output()
            .with_context(|| format!("running sqlite3 {sql}"))?;
        if !out.status.success() {
            bail!("sqlite3 failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let total: u64 = query(db, "SELECT SUM(pgsize) FROM dbstat")?
        .parse()
        .context("dbstat total")?;
    let by_name = query(
        db,
        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8",
    )?;
    progress!(
        "  {what}: {} in all; largest: {}",
        mib(total),
        by_name.replace('\n', ", ")
    );
    let plain = dir.join("plain.sqlite");
    let _ = std::fs::remove_file(&plain);
    query(
        db,
        &format!(
            "ATTACH '{}' AS p; CREATE TABLE p.cases AS SELECT run_id, chunk, idx, test_id, file, \
             classname, name, outcome, duration_secs, message, traceback, output, retries, flaky \
             FROM test_cases;",
            plain.display()
        ),
    )?;
    let plain_total: u64 = query(&plain, "SELECT SUM(pgsize) FROM dbstat")?
        .parse()
        .context("dbstat of the plain table")?;
    let _ = std::fs::remove_file(&plain);
    let per = total as f64 / cases as f64;
    let plain_per = plain_total as f64 / cases as f64;
    Ok(Row::info(
        format!("6 bytes per stored case, {what} (whole file, dbstat)"),
        format!("{per:.0} B"),
    )
    .vs(
        format!("plain table of the same cases {plain_per:.0} B"),
        per / plain_per,
    ))
}

/// A second load for the mixed reads of section 2: runs of
/// [`STARTUP_CASES`] cases (the agent's payload) posted to `POST /results`
/// at a fixed rate, spread over the fixture's projects, until stopped.
pub struct Poster {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<(u64, u64)>>,
    started: Instant,
}

/// The agent's payload placeholder run id (the length of a UUID).
const POST_PLACEHOLDER: &str = "eeeeeeee-eeee-7eee-beee-eeeeeeeeeeee";

impl Poster {
    /// Starts posting `per_sec` runs a second to the master at `base`.
    pub fn start(base: &str, per_sec: u32) -> anyhow::Result<Poster> {
        let started_at = Utc::now() - chrono::Duration::minutes(5);
        let bodies: Vec<String> = PROJECTS
            .iter()
            .enumerate()
            .map(|(p, project)| {
                let cases = data::cases(project, STARTUP_CASES, 9_000 + p as u64);
                let meta = RunMeta {
                    run_id: POST_PLACEHOLDER.into(),
                    project: (*project).into(),
                    branch: "main".into(),
                    worker_id: format!("poster-{p}"),
                    started_at,
                };
                let info = data::run_info(&meta, &cases);
                serde_json::to_string(&serde_json::json!({"run": info, "cases": cases}))
                    .context("encoding a run")
            })
            .collect::<anyhow::Result<_>>()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let url = format!("{base}/results");
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let in_flight = Arc::new(tokio::sync::Semaphore::new(32));
            let accepted = Arc::new(AtomicUsize::new(0));
            let mut skipped = 0u64;
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_sec.max(1))));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    skipped += 1;
                    continue;
                };
                let body = bodies[i % bodies.len()].replacen(POST_PLACEHOLDER, &data::run_id(), 1);
                i += 1;
                let (http, url, accepted) = (http.clone(), url.clone(), accepted.clone());
                tokio::spawn(async move {
                    let ok = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().as_u16() == 202);
                    if ok {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(permit);
                });
            }
            let _ = in_flight.acquire_many(32).await;
            Ok((accepted.load(Ordering::Relaxed) as u64, skipped))
        });
        Ok(Poster {
            stop,
            task,
            started: Instant::now(),
        })
    }

    /// Stops posting; returns the runs accepted, per second too, and how
    /// many posts were skipped because 32 were already waiting.
    pub async fn stop(self) -> anyhow::Result<(u64, f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let (accepted, skipped) = self.task.await.context("poster panicked")??;
        Ok((accepted, accepted as f64 / secs, skipped))
    }
}

/// Waits until `m` (started before the runs were posted) has stored `n`
/// runs since it started.
pub async fn wait_stored(m: &Master, n: u64) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    wait_completed(&http, m, n, Duration::from_secs(3600)).await?;
    Ok(())
}
