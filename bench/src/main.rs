//! `ptp-bench`: pytest-platform's benchmark harness (issue 5).
//!
//! One command, `cargo run --release -p ptp-bench -- all`, builds the
//! binaries under test, starts the real parts on loopback (nats-server,
//! `ptp-master`, `ptp-agent`, `ptp-mcp`), measures, and prints one table.
//! Progress goes to stderr, the table to stdout.
//!
//! Every figure stands beside a reference measured in the same run on the
//! same machine, and their ratio, because absolute figures drift on a
//! shared machine while ratios hold. Benchmarks are not tests: nothing here
//! fails on timing; "met?" only reads the figure against the target.
//!
//! # Layout
//! - [`ingest`] (section 1), [`api`] (2), [`agent`] (3), [`report`] (4),
//!   [`footprint`] (5): one module per section of issue 5; [`targets`] (6):
//!   issue 13's start-up, write and storage targets; [`postgres`] (7):
//!   issue 14's ingest and reads on PostgreSQL, with 1 and 2 masters.
//! - [`fixture`]: the filled master (1,000,000 cases) sections 2, 4 and 5
//!   share, so `all` fills it once.
//! - [`procs`]: the binaries, the master as a child process, `/proc` memory,
//!   installing `wrk` and `sqlite3`.
//! - [`psql`]: PostgreSQL through `psql`: a database per measurement.
//! - [`publish`]: publishing runs the way the agent does.
//! - [`data`]: deterministic synthetic runs.
//! - [`table`]: rows, formatting, medians.

mod agent;
mod api;
mod data;
mod fixture;
mod footprint;
mod ingest;
mod postgres;
mod procs;
mod psql;
mod publish;
mod report;
mod table;
mod targets;
mod tools;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use table::Row;

static START: OnceLock<Instant> = OnceLock::new();

/// Seconds since the harness started, for progress lines.
pub fn elapsed() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Prints a progress line to stderr with the elapsed time.
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!("[{:7.1}s] {}", $crate::elapsed(), format!($($arg)*))
    };
}

/// pytest-platform benchmarks: starts nats-server, ptp-master, ptp-agent
/// and ptp-mcp on loopback, measures the figures and prints them
/// next to same-run references (table on stdout, progress on stderr).
///
/// Run it from the workspace as `cargo run --release -p ptp-bench -- all`
/// (about 15 minutes on 2 cores), or `... -- --quick all` for a smoke run
/// (2 minutes). Needs nats-server (or NATS_SERVER_BIN), the workspace's
/// .venv with pytest (or PTP_PYTHON), and wrk and sqlite3, which it
/// installs with apt-get when missing and run as root.
#[derive(Debug, Parser)]
#[command(name = "ptp-bench", version)]
struct Cli {
    /// Which section to run.
    #[command(subcommand)]
    section: Section,
    /// Sizes and switches.
    #[command(flatten)]
    opts: Opts,
}

/// The sections of issue 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
enum Section {
    /// Every section below, sharing one filled master (the full table).
    All,
    /// 1. End-to-end ingest rate vs the sqlite3 CLI importing the same rows.
    Ingest,
    /// 2. API reads under wrk at 32 connections on a filled master vs /health.
    Api,
    /// 3. Agent wall-time overhead around pytest and its peak RSS.
    Agent,
    /// 4. get_report time and HTML size for a 60,000-case latest run.
    Report,
    /// 5. Master RSS after the fill, and time from start to healthy.
    Footprint,
    /// Section 6 (issue 13): start-up on 5,000 and 50,000 stored runs, writes of the original
    /// payload at 1 and 8 connections, bytes per stored case.
    Targets,
    /// Section 7 (issue 14): ingest on PostgreSQL with 1 and 2 masters (and SQLite) vs
    /// `psql \copy` of the same rows, and section 2's reads on PostgreSQL beside SQLite's. The
    /// server: $PTP_BENCH_POSTGRES [default: postgres://postgres@127.0.0.1:5432/postgres].
    Postgres,
}

/// Sizes and switches; defaults are the issue's, `--quick` shrinks them.
#[derive(Debug, Clone, Args)]
struct Opts {
    /// Small sizes for a smoke run: ingest 100 and 10,000 cases from 1 and
    /// 10 publishers, a 100,000-case fill, 3 s of load per endpoint, 5 agent
    /// reps. Explicit options below still win.
    #[arg(long, global = true)]
    quick: bool,
    /// Ingest: run sizes in cases [default: 100,10000,60000].
    #[arg(long, global = true, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Ingest: numbers of concurrent publishers [default: 1,50].
    #[arg(long, global = true, value_delimiter = ',')]
    publishers: Option<Vec<usize>>,
    /// Runs stored in the fixture for API reads and footprint, at most 500
    /// [default: 100].
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..=500))]
    fill_runs: Option<u64>,
    /// Cases per stored run.
    #[arg(long, global = true, default_value_t = 10_000)]
    fill_cases: usize,
    /// Cases of the report's latest run.
    #[arg(long, global = true, default_value_t = 60_000)]
    report_cases: usize,
    /// Timed get_report calls (after one warm-up) [default: 5].
    #[arg(long, global = true)]
    report_reps: Option<usize>,
    /// Section 6: stored runs (of 100 cases) the start-up is measured on
    /// [default: 5000,50000].
    #[arg(long, global = true, value_delimiter = ',')]
    startup_runs: Option<Vec<usize>>,
    /// Section 6: original-payload runs posted per connection count
    /// [default: 3000].
    #[arg(long, global = true)]
    post_runs: Option<usize>,
    /// Section 2: runs of 100 cases a second posted during the mixed reads.
    #[arg(long, global = true, default_value_t = 500)]
    mixed_post_rate: u32,
    /// Seconds of wrk load per endpoint [default: 10].
    #[arg(long, global = true)]
    duration: Option<u64>,
    /// Concurrent HTTP connections for wrk.
    #[arg(long, global = true, default_value_t = 32)]
    connections: u32,
    /// Timed agent/bare pytest rounds (after one warm-up) [default: 21].
    #[arg(long, global = true)]
    agent_reps: Option<usize>,
    /// Test functions in the generated pytest suite.
    #[arg(long, global = true, default_value_t = 200)]
    suite_tests: usize,
    /// Do not build ptp-master, ptp-agent and ptp-mcp first (use what is in
    /// the target directory).
    #[arg(long, global = true)]
    no_build: bool,
    /// Do not apt-get install wrk or sqlite3 when missing; fail instead.
    #[arg(long, global = true)]
    no_install: bool,
    /// Extra argument for every ptp-master started (repeatable), for
    /// experiments: `--master-arg=--ingest-batch=100`.
    #[arg(long, global = true, value_name = "ARG", allow_hyphen_values = true)]
    master_arg: Vec<String>,
    /// Keep the temp directories (databases, master logs, wrk scripts).
    #[arg(long, global = true)]
    keep: bool,
    /// Also write the rows as JSON to this file.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Resolved sizes every section reads.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Ingest run sizes.
    pub sizes: Vec<usize>,
    /// Ingest publisher counts.
    pub publishers: Vec<usize>,
    /// Fixture runs.
    pub fill_runs: usize,
    /// Fixture cases per run.
    pub fill_cases: usize,
    /// Cases of the report's latest run.
    pub report_cases: usize,
    /// Timed report calls.
    pub report_reps: usize,
    /// wrk seconds per endpoint.
    pub wrk_secs: u64,
    /// wrk connections.
    pub connections: u32,
    /// Agent reps.
    pub agent_reps: usize,
    /// Pytest suite size.
    pub suite_tests: usize,
    /// May install tools.
    pub install: bool,
    /// Extra ptp-master arguments.
    pub master_args: Vec<String>,
    /// Keep temp directories.
    pub keep: bool,
    /// Start-up history sizes, in runs.
    pub startup_runs: Vec<usize>,
    /// Original-payload runs posted.
    pub post_runs: usize,
    /// Runs posted per second during the mixed reads.
    pub mixed_post_rate: u32,
}

impl Opts {
    fn plan(&self) -> anyhow::Result<Plan> {
        let q = self.quick;
        let plan = Plan {
            sizes: self.sizes.clone().unwrap_or_else(|| {
                if q {
                    vec![100, 10_000]
                } else {
                    vec![100, 10_000, 60_000]
                }
            }),
            publishers: self
                .publishers
                .clone()
                .unwrap_or_else(|| if q { vec![1, 10] } else { vec![1, 50] }),
            fill_runs: self
                .fill_runs
                .map_or(if q { 10 } else { 100 }, |n| n as usize),
            fill_cases: self.fill_cases,
            report_cases: self.report_cases,
            report_reps: self.report_reps.unwrap_or(if q { 2 } else { 5 }),
            wrk_secs: self.duration.unwrap_or(if q { 3 } else { 10 }),
            connections: self.connections,
            agent_reps: self.agent_reps.unwrap_or(if q { 5 } else { 21 }),
            suite_tests: self.suite_tests,
            install: !self.no_install,
            master_args: self.master_arg.clone(),
            keep: self.keep,
            startup_runs: self.startup_runs.clone().unwrap_or_else(|| {
                if q {
                    vec![500, 5_000]
                } else {
                    vec![5_000, 50_000]
                }
            }),
            post_runs: self.post_runs.unwrap_or(if q { 300 } else { 3_000 }),
            mixed_post_rate: self.mixed_post_rate,
        };
        if plan.sizes.contains(&0) || plan.publishers.contains(&0) {
            bail!("--sizes and --publishers must be positive");
        }
        if plan.publishers.iter().any(|&p| p > 500) {
            bail!("at most 500 publishers (runs are checked through one page of GET /results)");
        }
        if plan.fill_cases == 0 || plan.report_cases == 0 || plan.suite_tests == 0 {
            bail!("--fill-cases, --report-cases and --suite-tests must be positive");
        }
        Ok(plan)
    }
}

/// What the machine is, for the record.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let nats = std::process::Command::new(ptp_test_support::nats_server_bin())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "nats-server not found".into());
    let sqlite = std::process::Command::new("sqlite3")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_else(|_| "not installed".into());
    format!("{cores} cores, {cpu}; {nats}; sqlite3 {sqlite}; load average {load}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = elapsed();
    let cli = Cli::parse();
    let plan = cli.opts.plan()?;
    let s = cli.section;
    let want = |x: Section| s == Section::All || s == x;
    let before = machine();
    progress!("machine: {before}");
    progress!("plan: {plan:?}");
    let bins = procs::bins(!cli.opts.no_build)?;

    let mut rows: Vec<Row> = Vec::new();
    if want(Section::Agent) {
        rows.extend(
            agent::run(&plan, &bins)
                .await
                .context("section 3 (agent)")?,
        );
    }
    if want(Section::Ingest) {
        rows.extend(
            ingest::run(&plan, &bins)
                .await
                .context("section 1 (ingest)")?,
        );
    }
    let mut sqlite_reads = None;
    if want(Section::Api)
        || want(Section::Report)
        || want(Section::Footprint)
        || want(Section::Postgres)
    {
        let mut fx = fixture::build(&plan, &bins)
            .await
            .context("filling the master")?;
        rows.push(Row::info(
            format!(
                "1 ingest fill: {} runs × {} cases, 4 publishers",
                plan.fill_runs, plan.fill_cases
            ),
            format!(
                "{} ({:.1} s)",
                table::per_sec(fx.cases as f64 / fx.fill_secs),
                fx.fill_secs
            ),
        ));
        if want(Section::Api) || want(Section::Postgres) {
            let reads = api::measure_reads(&plan, &mut fx)
                .await
                .context("section 2 (API reads)")?;
            if want(Section::Api) {
                rows.extend(api::rows(&plan, &reads, "2", None));
            }
            sqlite_reads = Some(postgres::SqliteReads {
                reads,
                fill_secs: fx.fill_secs,
            });
        }
        if want(Section::Report) {
            rows.extend(
                report::run(&plan, &bins, &fx)
                    .await
                    .context("section 4 (report)")?,
            );
        }
        if want(Section::Footprint) {
            rows.extend(
                footprint::run(&plan, &mut fx)
                    .await
                    .context("section 5 (footprint)")?,
            );
        }
        fx.stack.stop()?;
    }
    if want(Section::Targets) {
        rows.extend(
            targets::run(&plan, &bins)
                .await
                .context("section 6 (issue 13's targets)")?,
        );
    }
    if want(Section::Postgres) {
        let server = psql::Server::from_env(plan.install)?;
        rows.extend(
            postgres::run(&plan, &bins, &server, sqlite_reads.as_ref())
                .await
                .context("section 7 (PostgreSQL)")?,
        );
    }
    // Sections in the order; rows keep their order within one.
    rows.sort_by_key(|r| r.metric.chars().next());

    let after = machine();
    println!("ptp-bench {} — {}", s_name(s), before);
    println!(
        "load average at the end: {}",
        after.rsplit("load average ").next().unwrap_or("")
    );
    println!();
    print!("{}", table::markdown(&rows));
    let missed = rows.iter().filter(|r| r.met == Some(false)).count();
    let met = rows.iter().filter(|r| r.met == Some(true)).count();
    println!();
    println!("targets met: {met}, missed: {missed}");
    if let Some(path) = &cli.opts.json {
        let json = serde_json::to_string_pretty(&rows).context("encoding the rows")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn s_name(s: Section) -> &'static str {
    match s {
        Section::All => "all",
        Section::Ingest => "ingest",
        Section::Api => "api",
        Section::Agent => "agent",
        Section::Report => "report",
        Section::Footprint => "footprint",
        Section::Targets => "targets",
        Section::Postgres => "postgres",
    }
}
