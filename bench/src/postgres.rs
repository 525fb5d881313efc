//! Section 7 (issue 14), PostgreSQL: section 1's ingest and section 2's
//! reads on masters whose store is PostgreSQL, beside SQLite in the same run.
//!
//! Ingest, per (size, publishers) of section 1: the same publishers and
//! clock ([`crate::ingest::measure`]: from the first publish until every
//! master lists every run) on a SQLite master, on one PostgreSQL master, and
//! on two PostgreSQL masters sharing the database and the stream (the
//! durable consumer); each on a fresh nats-server and a fresh database
//! (`$PTP_BENCH_POSTGRES`, created with `psql`, dropped after).
//!
//! Reference: `psql \copy` of the same case rows into the same schema
//! (`actors/migrations-pg/0001_schema.sql` applied to a fresh database),
//! into the tables the store writes them to: `cases` and the rows it points
//! at (`run_keys`, `tests`, `texts`, each distinct row once, as the store
//! interns them), with every constraint and index in place, in one
//! transaction, timed from spawn to exit like the `sqlite3` reference.
//! Target: at least half of its rate. The runs' own rows and aggregates,
//! which the master also writes, are not part of it (as with `sqlite3`).
//!
//! Reads: a PostgreSQL master filled like section 2's SQLite fixture and
//! measured by [`crate::api::measure_reads`]; each row stands beside the same
//! endpoint on SQLite in the same run, and is judged by the same targets.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::api::{self, Reads};
use crate::data;
use crate::fixture;
use crate::ingest::{self, Measured};
use crate::procs::{Bins, Stack, StoreKind};
use crate::psql::Server;
use crate::publish::Template;
use crate::table::{Row, median, ms, per_sec};
use crate::{Plan, progress};

/// Section 2's reads on SQLite in this run, to stand beside.
pub struct SqliteReads {
    /// The reads.
    pub reads: Reads,
    /// Seconds the fill took.
    pub fill_secs: f64,
}

/// Rows of section 7. `sqlite` carries the SQLite reads of this run.
pub async fn run(
    plan: &Plan,
    bins: &Bins,
    server: &Server,
    sqlite: Option<&SqliteReads>,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &size in &plan.sizes {
        for &pubs in &plan.publishers {
            rows.extend(ingest_rows(plan, bins, server, size, pubs).await?);
        }
    }
    rows.extend(read_rows(plan, bins, server, sqlite).await?);
    Ok(rows)
}

/// Times one (size, publishers) on a fresh stack and stops it.
async fn timed(
    plan: &Plan,
    bins: &Bins,
    store: &StoreKind,
    masters: usize,
    size: usize,
    pubs: usize,
) -> anyhow::Result<Measured> {
    let stack = Stack::start_on(bins, &plan.master_args, plan.keep, store, masters).await?;
    let m = ingest::measure(&stack, size, pubs).await?;
    stack.stop()?;
    Ok(m)
}

async fn ingest_rows(
    plan: &Plan,
    bins: &Bins,
    server: &Server,
    size: usize,
    pubs: usize,
) -> anyhow::Result<Vec<Row>> {
    let total = size * pubs;
    let reps = ingest::reps(total);
    let pg = StoreKind::Postgres(server.clone());
    progress!("postgres: ingest {pubs} publisher(s) × {size} cases, {reps} rep(s): SQLite");
    let sqlite = timed(plan, bins, &StoreKind::Sqlite, 1, size, pubs).await?;
    progress!("postgres: the same on PostgreSQL, 1 master");
    let one = timed(plan, bins, &pg, 1, size, pubs).await?;
    progress!("postgres: the same on PostgreSQL, 2 masters");
    let two = timed(plan, bins, &pg, 2, size, pubs).await?;

    let dir = tempfile::Builder::new()
        .prefix("ptp-bench-copy-")
        .tempdir()
        .context("creating a temp dir")?;
    let csv = write_csvs(dir.path(), &one.template, &one.last_ids)?;
    let ref_secs = copy_reference(server, &csv, reps, total)?;
    let tr = median(&ref_secs);
    let ref_rate = total as f64 / tr;
    let reference = format!("psql \\copy {} ({})", per_sec(ref_rate), ms(tr * 1e3));

    let s = if pubs == 1 { "" } else { "s" };
    let mut rows = Vec::new();
    for (store, m, judged) in [
        ("SQLite, 1 master", &sqlite, false),
        ("PostgreSQL, 1 master", &one, true),
        ("PostgreSQL, 2 masters", &two, true),
    ] {
        let t = median(&m.secs);
        let rate = total as f64 / t;
        let ratio = rate / ref_rate;
        progress!(
            "  => {store}: {} end to end vs psql \\copy {} (ratio {ratio:.2})",
            per_sec(rate),
            per_sec(ref_rate)
        );
        let row = Row::info(
            format!("7 ingest {size} cases × {pubs} publisher{s}, {store}"),
            format!("{} ({})", per_sec(rate), ms(t * 1e3)),
        )
        .vs(reference.clone(), ratio);
        rows.push(if judged {
            row.goal("≥ 0.50 of psql \\copy", ratio >= 0.5)
        } else {
            row
        });
    }
    Ok(rows)
}

/// The reference's input: one CSV per table, in the order they are copied.
struct Csvs {
    /// `(table, columns, file)`.
    tables: Vec<(&'static str, &'static str, PathBuf)>,
}

/// A CSV field: NULL is an empty unquoted field, text is always quoted (so
/// an empty string stays one).
fn field(out: &mut Vec<u8>, s: Option<&str>) {
    if let Some(s) = s {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    }
}

/// A key for each distinct value, from 1 in order of first sight, as the
/// store's identity columns assign them.
struct Keys<K> {
    keys: HashMap<K, i64>,
    order: Vec<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Keys<K> {
    fn new() -> Self {
        Keys {
            keys: HashMap::new(),
            order: Vec::new(),
        }
    }

    fn key(&mut self, k: &K) -> i64 {
        if let Some(&v) = self.keys.get(k) {
            return v;
        }
        self.order.push(k.clone());
        let v = self.order.len() as i64;
        self.keys.insert(k.clone(), v);
        v
    }
}

fn create(path: &Path) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(std::io::BufWriter::with_capacity(1 << 20, f))
}

/// Writes the rows the store keeps for the cases of `run_ids` (each run
/// `t`'s cases, chunked as published) into `dir`.
fn write_csvs(dir: &Path, t: &Template, run_ids: &[String]) -> anyhow::Result<Csvs> {
    type TestIdentity = (String, Option<String>, Option<String>, String);
    let mut tests: Keys<TestIdentity> = Keys::new();
    let mut texts: Keys<String> = Keys::new();
    let cases_path = dir.join("cases.csv");
    let mut w = create(&cases_path)?;
    let sizes = t.chunk_sizes();
    let mut line = Vec::with_capacity(256);
    for (r, _) in run_ids.iter().enumerate() {
        let run_key = r as i64 + 1;
        let mut cases = t.cases.iter();
        for (chunk, &n) in sizes.iter().enumerate() {
            for (idx, c) in cases.by_ref().take(n).enumerate() {
                let test_key = tests.key(&(
                    c.test_id.clone(),
                    c.file.clone(),
                    c.classname.clone(),
                    c.name.clone(),
                ));
                let mut text = |s: &Option<String>| {
                    s.as_ref()
                        .map_or_else(String::new, |b| texts.key(b).to_string())
                };
                let (message, traceback, output) =
                    (text(&c.message), text(&c.traceback), text(&c.output));
                // The failure signature key: a 48-bit integer for failures,
                // as in section 1's sqlite3 reference.
                let sig = if c.outcome.is_failure() {
                    (data::mix(idx as u64) >> 16).to_string()
                } else {
                    String::new()
                };
                line.clear();
                line.extend_from_slice(
                    format!(
                        "{run_key},{},{chunk},{idx},{test_key},{},{},{},{},{sig},{message},{traceback},{output},\n",
                        data::outcome_code(c.outcome),
                        c.duration_secs,
                        c.retries,
                        u8::from(c.flaky),
                        u8::from(c.quarantined),
                    )
                    .as_bytes(),
                );
                w.write_all(&line).context("writing cases.csv")?;
            }
        }
    }
    w.flush().context("writing cases.csv")?;

    let run_keys_path = dir.join("run_keys.csv");
    let mut w = create(&run_keys_path)?;
    for (r, id) in run_ids.iter().enumerate() {
        line.clear();
        line.extend_from_slice(format!("{},", r + 1).as_bytes());
        field(&mut line, Some(id));
        line.push(b'\n');
        w.write_all(&line).context("writing run_keys.csv")?;
    }
    w.flush().context("writing run_keys.csv")?;

    let tests_path = dir.join("tests.csv");
    let mut w = create(&tests_path)?;
    for (k, (test_id, file, classname, name)) in tests.order.iter().enumerate() {
        line.clear();
        line.extend_from_slice(format!("{},", k + 1).as_bytes());
        for s in [Some(test_id), file.as_ref(), classname.as_ref()] {
            field(&mut line, s.map(String::as_str));
            line.push(b',');
        }
        field(&mut line, Some(name));
        line.push(b'\n');
        w.write_all(&line).context("writing tests.csv")?;
    }
    w.flush().context("writing tests.csv")?;

    let texts_path = dir.join("texts.csv");
    let mut w = create(&texts_path)?;
    for (k, body) in texts.order.iter().enumerate() {
        line.clear();
        line.extend_from_slice(format!("{},", k + 1).as_bytes());
        field(&mut line, Some(body));
        line.push(b'\n');
        w.write_all(&line).context("writing texts.csv")?;
    }
    w.flush().context("writing texts.csv")?;

    Ok(Csvs {
        tables: vec![
            ("run_keys", "run_key, run_id", run_keys_path),
            (
                "tests",
                "test_key, test_id, file, classname, name",
                tests_path,
            ),
            ("texts", "text_key, body", texts_path),
            (
                "cases",
                "run_key, outcome, chunk, idx, test_key, duration_secs, retries, flaky, \
                 quarantined, sig, message_key, traceback_key, output_key, owners_key",
                cases_path,
            ),
        ],
    })
}

/// Times `psql` copying `csv` into a fresh database at the store's schema,
/// `reps` times (a database each, dropped after); checks the case count.
fn copy_reference(
    server: &Server,
    csv: &Csvs,
    reps: usize,
    rows: usize,
) -> anyhow::Result<Vec<f64>> {
    let schema = crate::procs::workspace_root().join("actors/migrations-pg/0001_schema.sql");
    let schema = schema.to_string_lossy().into_owned();
    let mut script = String::new();
    for (table, columns, path) in &csv.tables {
        let path = path.display().to_string();
        if path.contains('\'') {
            bail!("the temp path {path} contains a quote");
        }
        script.push_str(&format!(
            "\\copy {table} ({columns}) FROM '{path}' WITH (FORMAT csv)\n"
        ));
    }
    let mut secs = Vec::new();
    for _ in 0..reps {
        let db = server.create()?;
        db.run(&["-f", &schema])
            .context("applying actors/migrations-pg/0001_schema.sql")?;
        let t0 = Instant::now();
        let mut child = Command::new(server.psql())
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"])
            .args(["-d", &db.url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", server.psql().display()))?;
        child
            .stdin
            .take()
            .context("psql stdin")?
            .write_all(script.as_bytes())
            .context("writing to psql")?;
        let out = child.wait_with_output().context("waiting for psql")?;
        secs.push(t0.elapsed().as_secs_f64());
        if !out.status.success() {
            bail!(
                "psql \\copy failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let n = db.count("SELECT count(*) FROM cases")?;
        if n != rows as u64 {
            bail!("psql \\copy stored {n} cases, expected {rows}");
        }
    }
    progress!("  psql \\copy of {rows} cases: {}", ms(median(&secs) * 1e3));
    Ok(secs)
}

/// Section 2's reads on a PostgreSQL master filled the same way, beside
/// SQLite's of this run.
async fn read_rows(
    plan: &Plan,
    bins: &Bins,
    server: &Server,
    sqlite: Option<&SqliteReads>,
) -> anyhow::Result<Vec<Row>> {
    progress!("postgres: section 2's reads on a PostgreSQL master");
    let mut fx = fixture::build_on(plan, bins, &StoreKind::Postgres(server.clone())).await?;
    let fill = Row::info(
        format!(
            "7 ingest fill: {} runs × {} cases, 4 publishers, PostgreSQL",
            plan.fill_runs, plan.fill_cases
        ),
        format!(
            "{} ({:.1} s)",
            per_sec(fx.cases as f64 / fx.fill_secs),
            fx.fill_secs
        ),
    );
    let fill = match sqlite {
        Some(s) => fill.vs(
            format!(
                "SQLite {} ({:.1} s)",
                per_sec(fx.cases as f64 / s.fill_secs),
                s.fill_secs
            ),
            s.fill_secs / fx.fill_secs,
        ),
        None => fill,
    };
    let reads = api::measure_reads(plan, &mut fx).await?;
    fx.stack.stop()?;
    let mut rows = vec![fill];
    rows.extend(api::rows(
        plan,
        &reads,
        "7 PostgreSQL",
        sqlite.map(|s| ("SQLite", &s.reads)),
    ));
    Ok(rows)
}
