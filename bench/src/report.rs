//! Section 4, the HTML report: time for `get_report` to answer for a
//! project whose latest run has 60,000 cases, and the HTML's size.
//!
//! Method: a 60,000-case run is published for `proj-a` (newest, so it is the
//! project's latest run) into the filled master. The real `ptp-mcp` binary
//! is driven over stdio with raw JSON-RPC, as an editor does: initialize,
//! then `tools/call get_report {"project": "proj-a"}`, timed from writing
//! the request to reading the whole answer (which embeds the HTML). One
//! warm-up round, then the median of the repetitions. The master caches
//! answers read from SQLite until a write changes them (per project), so
//! each round first stores a one-case run of the same project, started
//! just before the latest run so it stays the latest (a write, as when CI
//! reports), and times the report then (cache cold: the figure judged), and
//! once more right after (cache warm: what a second look costs).
//!
//! Reference: `GET /results/{latest}?cases_limit=100000`, the whole run as
//! the API serves it (what the report fetched before it asked for the
//! failures and the slowest cases only), read in full by a plain HTTP
//! client. A
//! breakdown (each master call through `ptp_mcp::MasterClient`, then
//! `ptp_mcp::report::render` alone) shows where the time goes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::data::{self, RunMeta};
use crate::fixture::Fixture;
use crate::procs::Bins;
use crate::table::{Row, median, mib, ms, per_sec};
use crate::{Plan, progress, publish};

/// Report time bound, milliseconds (issue 13).
const TIME_TARGET_MS: f64 = 100.0;
/// Report size bound, bytes.
const SIZE_TARGET: u64 = 5_000_000;
/// The project reported on.
const PROJECT: &str = "proj-a";

/// Rows of section 4.
pub async fn run(plan: &Plan, bins: &Bins, fx: &Fixture) -> anyhow::Result<Vec<Row>> {
    let master = fx.stack.master()?;
    let n = plan.report_cases;
    progress!("report: publishing a {n}-case run for {PROJECT}");
    let (client, js) = publish::connect(&fx.stack.nats.url()).await?;
    let started_at = Utc::now().trunc_subsecs(3);
    let meta = RunMeta {
        run_id: data::run_id(),
        project: PROJECT.into(),
        branch: "main".into(),
        worker_id: "worker-00".into(),
        started_at,
    };
    let cases = data::cases(PROJECT, n, 424_242);
    let info = data::run_info(&meta, &cases);
    let t0 = Instant::now();
    publish::publish_run(&js, &info, &cases, publish::max_payload(&client)).await?;
    let http = reqwest::Client::new();
    let done = master
        .wait_listed(
            &http,
            started_at,
            std::slice::from_ref(&meta.run_id),
            Duration::from_secs(600),
        )
        .await?;
    let took = done.duration_since(t0).as_secs_f64();
    progress!(
        "  queryable after {} ({})",
        ms(took * 1e3),
        per_sec(n as f64 / took)
    );

    // Reference: the whole run as the API serves it.
    let url = format!("{}/results/{}?cases_limit=100000", master.base, meta.run_id);
    let mut ref_ms = Vec::new();
    let mut json_bytes = 0;
    for _ in 0..plan.report_reps + 1 {
        let t = Instant::now();
        let body = http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .context("GET /results/{id}")?
            .bytes()
            .await
            .context("reading GET /results/{id}")?;
        ref_ms.push(t.elapsed().as_secs_f64() * 1e3);
        json_bytes = body.len();
    }
    ref_ms.remove(0);
    let ref_ms = median(&ref_ms);
    progress!(
        "  reference GET /results/{{id}} ({}): {}",
        mib(json_bytes as u64),
        ms(ref_ms)
    );

    breakdown(&master.base, &meta.run_id).await?;

    let mut mcp = Mcp::start(bins, &master.base).await?;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let mut html_len = 0u64;
    for i in 0..plan.report_reps + 1 {
        // A write to the project first: its cached answers start over.
        let bump = RunMeta {
            run_id: data::run_id(),
            project: PROJECT.into(),
            branch: "main".into(),
            worker_id: "worker-bump".into(),
            started_at: started_at - chrono::Duration::seconds(i as i64 + 1),
        };
        let one = data::cases(PROJECT, 1, i as u64);
        publish::publish_run(
            &js,
            &data::run_info(&bump, &one),
            &one,
            publish::max_payload(&client),
        )
        .await?;
        let stored = format!("{}/results/{}?cases_limit=0", master.base, bump.run_id);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http
            .get(&stored)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("run {} was not stored within 60 s", bump.run_id);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut timed = [0.0; 2];
        for t_ms in &mut timed {
            let t = Instant::now();
            let result = mcp
                .call("get_report", json!({ "project": PROJECT }))
                .await?;
            *t_ms = t.elapsed().as_secs_f64() * 1e3;
            html_len = html_of(&result)?.len() as u64;
        }
        if i > 0 {
            cold.push(timed[0]);
            warm.push(timed[1]);
        }
        progress!(
            "  get_report #{i}{}: after a write {}, again {} ({})",
            if i == 0 { " (warm-up)" } else { "" },
            ms(timed[0]),
            ms(timed[1]),
            mib(html_len)
        );
    }
    mcp.stop().await;
    let t = median(&cold);
    let t_warm = median(&warm);
    Ok(vec![
        Row::info(
            format!("4 get_report, latest run {n} cases (first after a write)"),
            ms(t),
        )
        .vs(format!("GET /results/{{id}} {}", ms(ref_ms)), t / ref_ms)
        .goal("≤ 100 ms", t <= TIME_TARGET_MS),
        Row::info(
            format!("4 get_report, latest run {n} cases (asked again, cache warm)"),
            ms(t_warm),
        )
        .vs(
            format!("GET /results/{{id}} {}", ms(ref_ms)),
            t_warm / ref_ms,
        ),
        Row::info("4 get_report HTML size", mib(html_len))
            .vs(
                format!("run JSON {}", mib(json_bytes as u64)),
                html_len as f64 / json_bytes as f64,
            )
            .goal("< 5 MB", html_len < SIZE_TARGET),
    ])
}

/// Times each master call the report makes and the render alone, through
/// the MCP crate's own client and renderer. Progress output only.
async fn breakdown(base: &str, run_id: &str) -> anyhow::Result<()> {
    use ptp_mcp::master::{MasterClient, RunFilter};
    let c = MasterClient::new(base, Duration::from_secs(60), None)
        .context("building the MCP crate's master client")?;
    let filter = RunFilter {
        project: Some(PROJECT.into()),
        ..RunFilter::default()
    };
    let t = Instant::now();
    let mut runs = c.runs(&filter, 20).await.context("runs")?;
    runs.reverse();
    let t_runs = t.elapsed();
    let t = Instant::now();
    let latest = c
        .run(
            run_id,
            Some("failed,error"),
            ptp_mcp::tools::REPORT_FAILURES_LIMIT,
        )
        .await
        .context("run")?;
    let t_run = t.elapsed();
    let t = Instant::now();
    let slowest = c
        .slowest_cases(run_id, ptp_mcp::report::SLOWEST_SHOWN as u32)
        .await
        .context("slowest cases")?;
    let t_slowest = t.elapsed();
    let t = Instant::now();
    let flaky = c.flaky(&filter, 20, 15).await.context("flaky")?;
    let clusters = c.clusters(&filter, 20, 15).await.context("clusters")?;
    let t_analytics = t.elapsed();
    let t = Instant::now();
    let stats = c
        .failure_stats(&filter, &None, None, 10)
        .await
        .context("failure stats")?;
    let t_stats = t.elapsed();
    let t = Instant::now();
    let workers = c.workers().await.context("workers")?;
    let t_workers = t.elapsed();
    let t = Instant::now();
    let html = ptp_mcp::report::render(&ptp_mcp::report::ReportInput {
        filter: &filter,
        runs: &runs,
        latest: &latest,
        slowest: Some(&slowest.cases),
        failure_stats: &stats,
        workers: &workers,
        flaky: Some(&flaky),
        clusters: Some(&clusters),
        group_by_owner: false,
        master_url: base,
        generated_at: Utc::now(),
    })
    .context("rendering")?;
    let t_render = t.elapsed();
    let f = |d: Duration| ms(d.as_secs_f64() * 1e3);
    progress!(
        "  breakdown: GET /results {}, GET /results/{{id}}?outcome=failed,error + decode {} ({} cases), ?order=duration {}, /flaky + /failures/clusters {}, /failures/stats {}, /workers {}, render {} ({})",
        f(t_runs),
        f(t_run),
        latest.cases.len(),
        f(t_slowest),
        f(t_analytics),
        f(t_stats),
        f(t_workers),
        f(t_render),
        mib(html.len() as u64)
    );
    Ok(())
}

/// The HTML embedded in a `get_report` answer.
fn html_of(result: &Value) -> anyhow::Result<&str> {
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        bail!("get_report failed: {result}");
    }
    result
        .get("content")
        .and_then(Value::as_array)
        .and_then(|blocks| {
            blocks.iter().find_map(|b| {
                b.get("resource")
                    .and_then(|r| r.get("text"))
                    .and_then(Value::as_str)
            })
        })
        .with_context(|| {
            format!(
                "get_report answered without an embedded HTML resource: {}",
                result.to_string().chars().take(500).collect::<String>()
            )
        })
}

/// `ptp-mcp` over stdio, spoken to with newline-delimited JSON-RPC.
struct Mcp {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
}

impl Mcp {
    async fn start(bins: &Bins, master_url: &str) -> anyhow::Result<Mcp> {
        let mut child = tokio::process::Command::new(&bins.mcp)
            .arg("--master-url")
            .arg(master_url)
            .arg("--timeout-secs")
            .arg("60")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bins.mcp.display()))?;
        let stdin = child.stdin.take().context("ptp-mcp stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("ptp-mcp stdout")?).lines();
        let mut m = Mcp {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        m.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "ptp-bench", "version": env!("CARGO_PKG_VERSION")}
            }),
        )
        .await?;
        m.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(m)
    }

    async fn send(&mut self, msg: &Value) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(msg).context("encoding JSON-RPC")?;
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .context("writing to ptp-mcp")?;
        self.stdin.flush().await.context("writing to ptp-mcp")
    }

    async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        loop {
            let line = self
                .stdout
                .next_line()
                .await
                .context("reading from ptp-mcp")?
                .context("ptp-mcp closed its stdout")?;
            let v: Value = serde_json::from_str(&line).context("ptp-mcp wrote non-JSON")?;
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                continue; // a notification or log message
            }
            if let Some(e) = v.get("error") {
                bail!("ptp-mcp answered {method} with an error: {e}");
            }
            return v
                .get("result")
                .cloned()
                .context("JSON-RPC answer without result");
        }
    }

    async fn call(&mut self, tool: &str, arguments: Value) -> anyhow::Result<Value> {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }

    async fn stop(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}
