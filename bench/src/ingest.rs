//! Section 1, end-to-end ingest: test cases per second from the first
//! publish until every run is queryable through the API, for runs of each
//! size from 1 and from many concurrent publishers.
//!
//! Method, per (size, publishers): a fresh nats-server and master on an
//! empty database; every publisher has its own NATS connection (as every
//! agent does) and publishes one run of `size` cases; the clock starts when
//! they all start and stops when `GET /results` lists every run. Repeated
//! (more times for small runs) and the median kept.
//!
//! Reference: the `sqlite3` CLI importing the same rows (`.import --csv`,
//! one transaction) into the same schema, dumped from the master's own
//! database, with the master's settings (WAL, `synchronous=NORMAL`), timed
//! from spawn to exit. Target: at least half of its rate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{SubsecRound, Utc};

use crate::data::{self, RunMeta};
use crate::procs::{Bins, Stack};
use crate::publish::{self, Template};
use crate::table::{Row, median, ms, per_sec};
use crate::{Plan, progress};

/// Rows of section 1.
pub async fn run(plan: &Plan, bins: &Bins) -> anyhow::Result<Vec<Row>> {
    let sqlite = crate::tools::ensure_tool("sqlite3", "sqlite3", plan.install)?;
    let mut rows = Vec::new();
    for &size in &plan.sizes {
        for &pubs in &plan.publishers {
            rows.extend(one(plan, bins, &sqlite, size, pubs).await?);
        }
    }
    Ok(rows)
}

/// Repetitions: enough to tame noise for small runs, one for huge ones.
pub fn reps(total_cases: usize) -> usize {
    (300_000 / total_cases.max(1)).clamp(1, 5)
}

async fn one(
    plan: &Plan,
    bins: &Bins,
    sqlite: &Path,
    size: usize,
    pubs: usize,
) -> anyhow::Result<Vec<Row>> {
    let total = size * pubs;
    let reps = reps(total);
    progress!("ingest: {pubs} publisher(s) × {size} cases, {reps} rep(s)");
    let stack = Stack::start(bins, &plan.master_args, plan.keep).await?;
    let m = measure(&stack, size, pubs).await?;
    let master_db = stack.master()?.db.sqlite()?.to_path_buf();
    let schema = schema_of(sqlite, &master_db)?;
    let csv = stack.dir.path().join(format!("cases-{size}x{pubs}.csv"));
    write_csv(&csv, &m.template, &m.last_ids)?;
    let ref_secs = sqlite_import(sqlite, &schema, &csv, stack.dir.path(), reps, total)?;
    let _ = std::fs::remove_file(&csv);
    stack.stop()?;

    let (t, tr) = (median(&m.secs), median(&ref_secs));
    let (rate, ref_rate) = (total as f64 / t, total as f64 / tr);
    let ratio = rate / ref_rate;
    progress!(
        "  => {} end to end vs sqlite3 {} (ratio {ratio:.2}); stream acks alone: {}",
        per_sec(rate),
        per_sec(ref_rate),
        ms(median(&m.acked_secs) * 1e3)
    );
    let label = format!(
        "1 ingest {size} cases × {pubs} publisher{}",
        if pubs == 1 { "" } else { "s" }
    );
    Ok(vec![
        Row::info(label, format!("{} ({})", per_sec(rate), ms(t * 1e3)))
            .vs(
                format!("sqlite3 .import {} ({})", per_sec(ref_rate), ms(tr * 1e3)),
                ratio,
            )
            .goal("≥ 0.50 of sqlite3", ratio >= 0.5),
    ])
}

/// What [`measure`] timed.
pub struct Measured {
    /// Seconds from the first publish until every master listed every run,
    /// one per rep.
    pub secs: Vec<f64>,
    /// Seconds until the stream had acked every message, one per rep.
    pub acked_secs: Vec<f64>,
    /// The last rep's run ids (its rows are the reference's).
    pub last_ids: Vec<String>,
    /// The run every publisher published (under its own id).
    pub template: std::sync::Arc<Template>,
}

/// Times `pubs` publishers, each on its own connection, publishing one run
/// of `size` cases into `stack`, until every master of the stack lists
/// every run; [`reps`] times on the same database.
pub async fn measure(stack: &Stack, size: usize, pubs: usize) -> anyhow::Result<Measured> {
    let total = size * pubs;
    let reps = reps(total);
    let nats_url = stack.nats.url();
    let mut conns = Vec::with_capacity(pubs);
    for _ in 0..pubs {
        conns.push(publish::connect(&nats_url).await?);
    }
    let max_payload = publish::max_payload(&conns[0].0);
    let cases = data::cases("ingest", size, 1);
    let meta = RunMeta {
        run_id: data::run_id(),
        project: "ingest".into(),
        branch: "main".into(),
        worker_id: "worker-00".into(),
        started_at: Utc::now(),
    };
    let info = data::run_info(&meta, &cases);
    let template = std::sync::Arc::new(Template::new(&info, cases, max_payload)?);
    let http = reqwest::Client::new();
    let timeout = Duration::from_secs(600);

    let mut secs = Vec::new();
    let mut acked_secs = Vec::new();
    let mut last_ids = Vec::new();
    for rep in 0..reps {
        // Each rep's runs share a start time later than any before, so
        // `GET /results?since=` lists exactly them.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started_at = Utc::now().trunc_subsecs(3);
        let infos: Vec<_> = (0..pubs)
            .map(|p| {
                let mut i = info.clone();
                i.run_id = data::run_id();
                i.worker_id = format!("worker-{p:02}");
                i.started_at = started_at;
                // As long as the run's own duration: the master refuses a
                // run that lasted longer than its start to its finish.
                i.finished_at = started_at + (info.finished_at - info.started_at);
                i
            })
            .collect();
        let ids: Vec<String> = infos.iter().map(|i| i.run_id.clone()).collect();
        let t0 = Instant::now();
        let tasks: Vec<_> = infos
            .into_iter()
            .zip(&conns)
            .map(|(i, (_, js))| {
                let (t, js) = (template.clone(), js.clone());
                tokio::spawn(async move { t.publish(&js, &i).await })
            })
            .collect();
        for t in tasks {
            t.await.context("publisher task panicked")??;
        }
        let acked = t0.elapsed();
        let done = stack.wait_listed(&http, started_at, &ids, timeout).await?;
        let took = done.duration_since(t0);
        progress!(
            "  rep {rep}: all acked by the stream in {}, queryable in {} ({}); {}",
            ms(acked.as_secs_f64() * 1e3),
            ms(took.as_secs_f64() * 1e3),
            per_sec(total as f64 / took.as_secs_f64()),
            publish::consumer_stats(&conns[0].1).await
        );
        secs.push(took.as_secs_f64());
        acked_secs.push(acked.as_secs_f64());
        last_ids = ids;
    }
    Ok(Measured {
        secs,
        acked_secs,
        last_ids,
        template,
    })
}

/// The master's schema, from its own database (so it follows every
/// migration), minus SQLite's internal tables.
pub fn schema_of(sqlite: &Path, db: &Path) -> anyhow::Result<String> {
    let out = Command::new(sqlite)
        .arg(db)
        .arg(".schema")
        .output()
        .with_context(|| format!("running {} {} .schema", sqlite.display(), db.display()))?;
    if !out.status.success() {
        bail!(
            "sqlite3 .schema failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = String::from_utf8(out.stdout).context("schema is not UTF-8")?;
    Ok(s.lines()
        .filter(|l| !l.starts_with("CREATE TABLE sqlite_"))
        .collect::<Vec<_>>()
        .join("\n"))
}

pub fn csv_field(out: &mut Vec<u8>, s: Option<&str>) {
    let s = s.unwrap_or("");
    if s.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Writes the `test_cases` rows the master stores for these runs, in its
/// columns' order.
fn write_csv(path: &Path, t: &Template, run_ids: &[String]) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let sizes = t.chunk_sizes();
    let mut line = Vec::with_capacity(4096);
    for id in run_ids {
        let mut cases = t.cases.iter();
        for (chunk, &n) in sizes.iter().enumerate() {
            for (idx, c) in cases.by_ref().take(n).enumerate() {
                line.clear();
                line.extend_from_slice(format!("{id},{chunk},{idx},").as_bytes());
                for s in [
                    Some(c.test_id.as_str()),
                    c.file.as_deref(),
                    c.classname.as_deref(),
                    Some(c.name.as_str()),
                ] {
                    csv_field(&mut line, s);
                    line.push(b',');
                }
                line.extend_from_slice(
                    format!("{},{},", data::outcome_code(c.outcome), c.duration_secs).as_bytes(),
                );
                for s in [
                    c.message.as_deref(),
                    c.traceback.as_deref(),
                    c.output.as_deref(),
                ] {
                    csv_field(&mut line, s);
                    line.push(b',');
                }
                // The failure signature key (migration 0007): a 48-bit
                // integer for failures, as the master stores, else NULL.
                let sig = if c.outcome.is_failure() {
                    (data::mix(idx as u64) >> 16).to_string()
                } else {
                    String::new()
                };
                // Owners (none in this data) and the quarantine mark
                // (migration 0012), which is NOT NULL: an absent column
                // would import as NULL and fail.
                line.extend_from_slice(
                    format!("{},{},{sig},,0\n", c.retries, u8::from(c.flaky)).as_bytes(),
                );
                w.write_all(&line)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))
}

fn sqlite_stdin(sqlite: &Path, db: &Path, script: &str) -> anyhow::Result<String> {
    let mut child = Command::new(sqlite)
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", sqlite.display()))?;
    child
        .stdin
        .take()
        .context("sqlite3 stdin")?
        .write_all(script.as_bytes())
        .context("writing to sqlite3")?;
    let out = child.wait_with_output().context("waiting for sqlite3")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !err.trim().is_empty() {
        bail!("sqlite3 failed ({}): {err}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Since migration 0014 the master's `test_cases` is a view over interned
/// rows, which `.import` cannot fill: the reference imports into the row
/// layout before it (one table of text columns with its three indexes), the
/// work a stored case cost before interning.
const PLAIN_CASES: &str = "DROP VIEW IF EXISTS test_cases;
CREATE TABLE IF NOT EXISTS test_cases (run_id TEXT NOT NULL, chunk INTEGER NOT NULL,
  idx INTEGER NOT NULL, test_id TEXT NOT NULL, file TEXT, classname TEXT, name TEXT NOT NULL,
  outcome INTEGER NOT NULL, duration_secs REAL NOT NULL, message TEXT, traceback TEXT,
  output TEXT, retries INTEGER NOT NULL, flaky INTEGER NOT NULL, sig INTEGER, owners TEXT,
  quarantined INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS test_cases_by_run ON test_cases (run_id, outcome, chunk, idx);
CREATE INDEX IF NOT EXISTS test_cases_by_run_test ON test_cases (run_id, test_id);
CREATE INDEX IF NOT EXISTS test_cases_retried ON test_cases (run_id) WHERE flaky = 1;";

/// Times `sqlite3` importing `csv` into a fresh database with `schema`
/// (its `test_cases` as [`PLAIN_CASES`]), `reps` times; checks the row
/// count each time.
pub fn sqlite_import(
    sqlite: &Path,
    schema: &str,
    csv: &Path,
    dir: &Path,
    reps: usize,
    rows: usize,
) -> anyhow::Result<Vec<f64>> {
    let db: PathBuf = dir.join("reference.sqlite");
    let mut secs = Vec::new();
    for _ in 0..reps {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        sqlite_stdin(sqlite, &db, &format!("{schema}\n{PLAIN_CASES}\n"))?;
        let script = format!(
            "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=NORMAL;\n.import --csv {} test_cases\n",
            csv.display()
        );
        let t0 = Instant::now();
        sqlite_stdin(sqlite, &db, &script)?;
        secs.push(t0.elapsed().as_secs_f64());
        let n = sqlite_stdin(sqlite, &db, "SELECT count(*) FROM test_cases;\n")?;
        if n.trim() != rows.to_string() {
            bail!("sqlite3 imported {} rows, expected {rows}", n.trim());
        }
    }
    progress!(
        "  sqlite3 .import of {rows} rows: {}",
        ms(median(&secs) * 1e3)
    );
    Ok(secs)
}
