//! Section 2, API reads: throughput and p50/p99 latency of each read
//! endpoint at 32 concurrent connections, driven by `wrk` against the
//! filled master.
//!
//! Method: per endpoint, a short warm-up (which also fills the master's
//! read cache: answers read from SQLite are kept until the next write), then `wrk -t2 -c32 --latency`
//! for the configured duration. `GET /results/{id}` rotates over every
//! stored run (a Lua `request` hook); the other endpoints take their
//! defaults (for `/results/{id}` a page of 100 cases; all of a run's cases
//! is a figure without target). Every endpoint goes through the same Lua hook so wrk's own
//! cost is the same for all. Any non-2xx answer or socket error fails the
//! row. Then the master is restarted with the cache off and every endpoint
//! is measured again (a read right after a write; issue 13 targets p99 under
//! 5 ms for every read route, analytics included). Last, the mixed reads:
//! the master restarted as configured, a second load posts runs of 100
//! cases (the agent's payload, spread over the fixture's projects) at
//! `--mixed-post-rate` a second (500 by default) while the same reads are
//! measured again; then the harness waits until the master has stored
//! every run it accepted, so later sections start from a quiet master.
//!
//! Reference: `GET /health` in the same run, the floor of the HTTP stack
//! (it also pings SQLite through the read pool). Targets: p99 under 5 ms
//! everywhere; `/trend`, `/workers` and `/failures/stats`, answered from the
//! aggregates, within 3x of `/health`'s throughput. The analytics reads
//! (`/flaky`, `/failures/clusters`, `/tests/slow`, a test's history) have no
//! target in the issue: their rows are figures only, for one project's
//! default window.
//!
//! Shape: [`measure_reads`] takes the figures and [`rows`] turns them into
//! rows, so section 7 can measure the same reads on a PostgreSQL master and
//! set each beside SQLite's figure of the same endpoint.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::fixture::Fixture;
use crate::table::{Row, ms, per_sec};
use crate::{Plan, progress};

/// What wrk reported for one endpoint.
#[derive(Debug, Clone, Default)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: String,
}

/// p99 bound, milliseconds.
const P99_TARGET_MS: f64 = 5.0;
/// Aggregate endpoints must reach this share of `/health`'s throughput.
const THROUGHPUT_SHARE: f64 = 1.0 / 3.0;

/// What [`measure_reads`] saw, per endpoint, in the order of the rows.
pub struct Reads {
    /// Each endpoint's label and whether it is answered from the aggregates;
    /// `/health` first.
    endpoints: Vec<(String, bool)>,
    /// Endpoints before this index have targets; the rest are figures.
    targeted: usize,
    /// The loads with the read cache on, one per endpoint.
    loads: Vec<Load>,
    /// Every endpoint but `/health` with the cache off: label, load, judged.
    uncached: Vec<(String, Load, bool)>,
    /// The targeted reads while the second load posts: label, load.
    mixed: Vec<(String, Load)>,
    /// Runs a second the second load asked for.
    rate: u32,
    /// Runs a second the master accepted.
    posted_rate: f64,
}

/// Measures every read of section 2 on the fixture's master (which it
/// restarts twice and writes to: see the module docs).
pub async fn measure_reads(plan: &Plan, fx: &mut Fixture) -> anyhow::Result<Reads> {
    let wrk = crate::tools::ensure_tool("wrk", "wrk", plan.install)?;
    let base = fx.stack.master()?.base.clone();
    let dir = fx.stack.dir.path().to_path_buf();
    let by_id: Vec<String> = fx
        .run_ids
        .iter()
        .map(|id| format!("/results/{id}"))
        .collect();
    let page = format!(
        "/results/{{id}} (default page: 100 of {} cases)",
        plan.fill_cases
    );
    let full = format!(
        "/results/{{id}}?cases_limit=100000 (all {} cases)",
        plan.fill_cases
    );
    let project = crate::fixture::PROJECTS[0];
    let history = format!(
        "/tests/{}/history?project={project}",
        format!("tests/{project}/test_mod_000.py::TestGroup0::test_case_00000")
            .replace('/', "%2F")
            .replace(':', "%3A")
    );
    let figures = [
        by_id
            .iter()
            .map(|p| format!("{p}?cases_limit=100000"))
            .collect::<Vec<_>>(),
        vec![format!("/flaky?project={project}")],
        vec![format!("/failures/clusters?project={project}")],
        vec![format!("/tests/slow?project={project}")],
        vec![history],
    ];
    // (label, paths, answered from aggregates)
    let mut endpoints: Vec<(&str, Vec<String>, bool)> = vec![
        ("/health", vec!["/health".into()], false),
        ("/results", vec!["/results".into()], false),
        (page.as_str(), by_id.clone(), false),
        (
            "/results/{id}?outcome=failed,error",
            by_id
                .iter()
                .map(|p| format!("{p}?outcome=failed,error"))
                .collect(),
            false,
        ),
        ("/trend", vec!["/trend".into()], true),
        ("/workers", vec!["/workers".into()], true),
        ("/failures/stats", vec!["/failures/stats".into()], true),
    ];
    let targeted = endpoints.len();
    let labels = [
        full.as_str(),
        "/flaky?project=P (50 runs)",
        "/failures/clusters?project=P (50 runs)",
        "/tests/slow?project=P (20 runs)",
        "/tests/{id}/history?project=P",
    ];
    for (label, paths) in labels.iter().zip(figures) {
        endpoints.push((label, paths, false));
    }
    let mut loads = Vec::new();
    for (i, (label, paths, _)) in endpoints.iter().enumerate() {
        let script = dir.join(format!("wrk-{i}.lua"));
        std::fs::write(&script, lua(paths)).context("writing the wrk script")?;
        // The warm-up fills the master's read cache; a read too slow to
        // answer within it is not a failure (the measured run says so).
        let _ = wrk_run(&wrk, &base, &script, plan.connections, 1);
        let load = wrk_run(&wrk, &base, &script, plan.connections, plan.wrk_secs);
        fx.stack.check_alive()?;
        // An analytics read too slow to answer within wrk's run is a figure
        // ("no answer"), not the end of the benchmark.
        let load = match load {
            Ok(l) => l,
            Err(e) if i >= targeted => Load {
                errors: format!(
                    " (no answer within wrk's run: {})",
                    format!("{e:#}").lines().next().unwrap_or("")
                ),
                ..Load::default()
            },
            Err(e) => return Err(e),
        };
        progress!(
            "api: GET {label}: {} p50 {} p99 {}{}",
            per_sec(load.rps),
            ms(load.p50_ms),
            ms(load.p99_ms),
            load.errors
        );
        loads.push(load);
    }
    // The reads again with the read cache off: what a read costs when a
    // write has just invalidated the cache.
    progress!("api: restarting the master with --read-cache-mib=0");
    fx.stack
        .restart_master_with(&["--read-cache-mib=0".to_string()])
        .await?;
    let base_off = fx.stack.master()?.base.clone();
    let mut uncached = Vec::new();
    for (i, (label, _, _)) in endpoints.iter().enumerate().skip(1) {
        let script = dir.join(format!("wrk-{i}.lua"));
        let load = measure(&wrk, &base_off, &script, plan)?;
        fx.stack.check_alive()?;
        progress!(
            "api: GET {label} (cache off): {} p50 {} p99 {}{}",
            per_sec(load.rps),
            ms(load.p50_ms),
            ms(load.p99_ms),
            load.errors
        );
        // Every read route has the target, except reading all of a run's
        // cases at once.
        let judged = *label != full.as_str();
        uncached.push((format!("{label} (read cache off)"), load, judged));
    }
    fx.stack.restart_master().await?;

    // The same reads while a second load writes.
    let rate = plan.mixed_post_rate;
    progress!("api: the same reads while posting {rate} runs of 100 cases a second");
    let base_mixed = fx.stack.master()?.base.clone();
    let poster = crate::targets::Poster::start(&base_mixed, rate)?;
    let mut mixed = Vec::new();
    for (i, (label, _, _)) in endpoints.iter().enumerate().skip(1) {
        if *label == full.as_str() {
            continue;
        }
        let script = dir.join(format!("wrk-{i}.lua"));
        let load = measure(&wrk, &base_mixed, &script, plan)?;
        fx.stack.check_alive()?;
        progress!(
            "api: GET {label} (while posting): {} p50 {} p99 {}{}",
            per_sec(load.rps),
            ms(load.p50_ms),
            ms(load.p99_ms),
            load.errors
        );
        mixed.push((format!("{label} while posting {rate} runs/s"), load));
    }
    let (posted, posted_rate, skipped) = poster.stop().await?;
    crate::targets::wait_stored(fx.stack.master()?, posted).await?;
    fx.cases += posted as usize * 100;
    progress!(
        "api: the second load: {} runs/s accepted ({skipped} posts skipped: 32 in flight); \
         {posted} runs stored after it stopped",
        per_sec(posted_rate)
    );

    Ok(Reads {
        endpoints: endpoints
            .iter()
            .map(|(label, _, aggregate)| (label.to_string(), *aggregate))
            .collect(),
        targeted,
        loads,
        uncached,
        mixed,
        rate,
        posted_rate,
    })
}

/// The rows of `reads`, their metrics starting with `prefix` (the section).
/// Without `vs`, every figure stands beside `/health` in the same run;
/// with `vs` (the same reads on another store in the same run), beside
/// that store's figure of the same endpoint. Targets read `reads` alone.
pub fn rows(plan: &Plan, reads: &Reads, prefix: &str, vs: Option<(&str, &Reads)>) -> Vec<Row> {
    let health = &reads.loads[0];
    let c = plan.connections;
    let reference = |pick: &dyn Fn(&Reads) -> Option<Load>| -> Option<(String, Load)> {
        match vs {
            Some((name, other)) => pick(other).map(|l| (name.to_string(), l)),
            None => Some(("/health".to_string(), health.clone())),
        }
    };
    let mut rows = Vec::new();
    for (i, ((label, aggregate), load)) in reads.endpoints.iter().zip(&reads.loads).enumerate() {
        let r = if i == 0 && vs.is_none() {
            None
        } else {
            reference(&|o: &Reads| o.loads.get(i).cloned())
        };
        let lat = latency_row(prefix, label, c, load, r.as_ref());
        let tput = throughput_row(prefix, label, c, load, r.as_ref());
        if i == 0 {
            rows.push(lat.goal(
                "p99 < 5 ms",
                load.errors.is_empty() && load.p99_ms < P99_TARGET_MS,
            ));
            rows.push(tput);
            continue;
        }
        if i >= reads.targeted {
            rows.extend([lat, tput]);
            continue;
        }
        let ok = load.errors.is_empty();
        rows.push(lat.goal("p99 < 5 ms", ok && load.p99_ms < P99_TARGET_MS));
        rows.push(if *aggregate {
            let goal = if vs.is_some() {
                format!("≥ 0.33 of its /health ({})", per_sec(health.rps))
            } else {
                "≥ 0.33 of /health".to_string()
            };
            tput.goal(goal, ok && load.rps / health.rps >= THROUGHPUT_SHARE)
        } else {
            tput
        });
    }
    for (i, (label, load, judged)) in reads.uncached.iter().enumerate() {
        let r = reference(&|o: &Reads| o.uncached.get(i).map(|u| u.1.clone()));
        let lat = latency_row(prefix, label, c, load, r.as_ref());
        rows.push(if *judged {
            let ok = load.errors.is_empty() && load.p99_ms < P99_TARGET_MS;
            lat.goal("p99 < 5 ms", ok)
        } else {
            lat
        });
        rows.push(throughput_row(prefix, label, c, load, r.as_ref()));
    }
    for (i, (label, load)) in reads.mixed.iter().enumerate() {
        let r = reference(&|o: &Reads| o.mixed.get(i).map(|m| m.1.clone()));
        let ok = load.errors.is_empty() && load.p99_ms < P99_TARGET_MS;
        rows.push(latency_row(prefix, label, c, load, r.as_ref()).goal("p99 < 5 ms", ok));
    }
    let posted = Row::info(
        format!(
            "{prefix} the second load: runs of 100 cases posted (asked {}/s)",
            reads.rate
        ),
        format!("{} accepted", per_sec(reads.posted_rate)),
    );
    rows.push(match vs {
        Some((name, other)) => posted.vs(
            format!("{name} {} accepted", per_sec(other.posted_rate)),
            reads.posted_rate / other.posted_rate,
        ),
        None => posted,
    });
    rows
}

/// A warm-up, then wrk's run. A read too slow to answer within the run is
/// reported as such ("no answer"), not the end of the benchmark.
fn measure(wrk: &Path, base: &str, script: &Path, plan: &Plan) -> anyhow::Result<Load> {
    let _ = wrk_run(wrk, base, script, plan.connections, 1);
    match wrk_run(wrk, base, script, plan.connections, plan.wrk_secs) {
        Ok(l) => Ok(l),
        Err(e) => Ok(Load {
            errors: format!(
                " (no answer within wrk's run: {})",
                format!("{e:#}").lines().next().unwrap_or("")
            ),
            ..Load::default()
        }),
    }
}

/// The p99 (p50) row of `label`, against the reference's p99 when given
/// (its name and load).
fn latency_row(
    prefix: &str,
    label: &str,
    connections: u32,
    load: &Load,
    reference: Option<&(String, Load)>,
) -> Row {
    let err = if load.errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", load.errors.trim())
    };
    let row = Row::info(
        format!("{prefix} GET {label} p99 (p50) @{connections}"),
        format!("{} ({}){err}", ms(load.p99_ms), ms(load.p50_ms)),
    );
    match reference {
        Some((name, r)) => row.vs(format!("{name} {}", ms(r.p99_ms)), load.p99_ms / r.p99_ms),
        None => row,
    }
}

/// The throughput row of `label`, against the reference's when given.
fn throughput_row(
    prefix: &str,
    label: &str,
    connections: u32,
    load: &Load,
    reference: Option<&(String, Load)>,
) -> Row {
    let row = Row::info(
        format!("{prefix} GET {label} throughput @{connections}"),
        per_sec(load.rps),
    );
    match reference {
        Some((name, r)) => row.vs(format!("{name} {}", per_sec(r.rps)), load.rps / r.rps),
        None => row,
    }
}

/// A wrk script that cycles through `paths`.
fn lua(paths: &[String]) -> String {
    let list: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "local paths = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
        list.join(", ")
    )
}

fn wrk_run(
    wrk: &Path,
    base: &str,
    script: &Path,
    connections: u32,
    secs: u64,
) -> anyhow::Result<Load> {
    let out = Command::new(wrk)
        .arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .args(["--latency", "--timeout", "10s", "-s"])
        .arg(script)
        .arg(base)
        .output()
        .with_context(|| format!("running {}", wrk.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.00s`, `1.00m`) in ms.
fn duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e3)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|x| x * factor)
}

fn parse_wrk(text: &str) -> anyhow::Result<Load> {
    let mut load = Load::default();
    let mut errors = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            load.rps = v.trim().parse().context("Requests/sec")?;
        } else if let Some(v) = line.strip_prefix("50%") {
            load.p50_ms = duration_ms(v).context("50% latency")?;
        } else if let Some(v) = line.strip_prefix("99%") {
            load.p99_ms = duration_ms(v).context("99% latency")?;
        } else if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            errors.push(line.to_string());
        }
    }
    if load.rps == 0.0 {
        bail!("no Requests/sec line");
    }
    if !errors.is_empty() {
        load.errors = format!(" ERRORS: {}", errors.join("; "));
    }
    Ok(load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_latency_output() {
        let out = "Running 2s test @ http://127.0.0.1:1\n  2 threads and 32 connections\n  Latency Distribution\n     50%  812.00us\n     75%    1.10ms\n     90%    2.00ms\n     99%    3.50ms\n  20000 requests in 2.00s, 3.00MB read\nRequests/sec:  10000.50\nTransfer/sec:      1.50MB\n";
        let l = parse_wrk(out).expect("parses");
        assert_eq!(l.rps, 10000.5);
        assert!((l.p50_ms - 0.812).abs() < 1e-9);
        assert_eq!(l.p99_ms, 3.5);
        assert!(l.errors.is_empty());
        assert_eq!(duration_ms("1.00m"), Some(60_000.0));
    }
}
