//! The real parts, as child processes on loopback: the built binaries
//! (`ptp-master`, `ptp-agent`, `ptp-mcp`), a master with its own database
//! and log, and reading a process's memory from `/proc`.
//!
//! The master runs as the real binary (not in-process) so its RSS and its
//! start-up are its own, and so the harness's CPU is visibly separate from
//! the master's. Every child is killed on drop; nothing outlives a run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::progress;

/// Paths of the binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `ptp-master`.
    pub master: PathBuf,
    /// `ptp-agent`.
    pub agent: PathBuf,
    /// `ptp-mcp`.
    pub mcp: PathBuf,
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the binaries under test with the harness's own profile (unless
/// `build` is false) and returns their paths, which sit next to the
/// harness's executable.
pub fn bins(build: bool) -> anyhow::Result<Bins> {
    let exe = std::env::current_exe().context("locating the ptp-bench executable")?;
    let dir = exe
        .parent()
        .context("the ptp-bench executable has no directory")?
        .to_path_buf();
    let release = dir.file_name().is_some_and(|n| n == "release");
    if !release {
        progress!(
            "WARNING: ptp-bench is not a release build; figures are meaningless. Use `cargo run --release -p ptp-bench -- ...`"
        );
    }
    if build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(&cargo);
        // The package set of the documented build command, so features
        // unify the same way and nothing is compiled twice.
        cmd.current_dir(workspace_root()).args([
            "build",
            "-p",
            "ptp-bench",
            "-p",
            "ptp-api",
            "-p",
            "ptp-agent",
            "-p",
            "ptp-mcp",
        ]);
        if release {
            cmd.arg("--release");
        }
        // `cargo run` hands the harness its package's CARGO_PKG_*,
        // CARGO_MANIFEST_* ... variables; passed on, they change build-script
        // fingerprints (ring, aws-lc-sys) and force a full rebuild.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "OUT_DIR",
                ]
                .contains(&k.as_ref())
            {
                cmd.env_remove(k.as_ref());
            }
        }
        progress!("building ptp-master, ptp-agent and ptp-mcp ({cmd:?})");
        let status = cmd
            .status()
            .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
        if !status.success() {
            bail!(
                "building the binaries under test failed ({status}); fix the build or pass --no-build"
            );
        }
    }
    let b = Bins {
        master: dir.join("ptp-master"),
        agent: dir.join("ptp-agent"),
        mcp: dir.join("ptp-mcp"),
    };
    for p in [&b.master, &b.agent, &b.mcp] {
        if !p.exists() {
            bail!(
                "{} is missing: run `cargo build --release -p ptp-api -p ptp-agent -p ptp-mcp` (or drop --no-build)",
                p.display()
            );
        }
    }
    Ok(b)
}

/// A free TCP port on loopback (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(l.local_addr().context("probe port address")?.port())
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct Mem {
    /// VmRSS: resident now, bytes.
    pub rss: u64,
    /// VmHWM: the peak resident size so far, bytes.
    pub hwm: u64,
}

/// Reads `VmRSS` and `VmHWM` of `pid`.
pub fn mem(pid: u32) -> anyhow::Result<Mem> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb = |key: &str| -> anyhow::Result<u64> {
        let line = s
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{path} has no {key} (process gone?)"))?;
        let n: u64 = line
            .trim_start_matches(key)
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("parsing {line:?}"))?;
        Ok(n * 1024)
    };
    Ok(Mem {
        rss: kb("VmRSS:")?,
        hwm: kb("VmHWM:")?,
    })
}

/// What a master's `--db` names.
#[derive(Debug, Clone)]
pub enum Db {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl Db {
    /// The SQLite file; fails for PostgreSQL (a figure that reads the
    /// file, such as the sqlite3 reference, has no meaning there).
    pub fn sqlite(&self) -> anyhow::Result<&Path> {
        match self {
            Db::Sqlite(p) => Ok(p),
            Db::Postgres(_) => bail!("this master runs on PostgreSQL, not on a SQLite file"),
        }
    }

    fn arg(&self) -> &std::ffi::OsStr {
        match self {
            Db::Sqlite(p) => p.as_os_str(),
            Db::Postgres(url) => url.as_ref(),
        }
    }
}

/// A running `ptp-master`.
pub struct Master {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its database.
    pub db: Db,
    log: PathBuf,
}

impl Master {
    /// Starts the master on a free port with `db`, logging to `log`, and
    /// waits until `GET /health` answers 200. Returns the master and the
    /// time from spawn to that first 200.
    pub async fn start(
        bins: &Bins,
        nats_url: &str,
        db: &Db,
        log: &Path,
        extra_args: &[String],
    ) -> anyhow::Result<(Master, Duration)> {
        let port = free_port()?;
        let logf = std::fs::File::create(log)
            .with_context(|| format!("creating the master log {}", log.display()))?;
        let t0 = Instant::now();
        let child = Command::new(&bins.master)
            .arg("--nats-url")
            .arg(nats_url)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db")
            .arg(db.arg())
            .args(extra_args)
            // The whole-run rows (`cases_limit=100000` at 32 connections)
            // measure how fast such reads are served, not the admission cap
            // that protects a production master (default 2 at once).
            .env("PTP_MAX_LARGE_READS", "64")
            .env(
                "RUST_LOG",
                std::env::var("PTP_BENCH_MASTER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .with_context(|| format!("starting {}", bins.master.display()))?;
        let mut m = Master {
            child,
            base: format!("http://127.0.0.1:{port}"),
            db: db.clone(),
            log: log.to_path_buf(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("building an HTTP client")?;
        let url = format!("{}/health", m.base);
        let deadline = t0 + Duration::from_secs(120);
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok((m, t0.elapsed()));
            }
            if let Some(status) = m.child.try_wait().context("polling the master")? {
                bail!(
                    "ptp-master exited ({status}) before it was healthy; its log:\n{}",
                    m.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "ptp-master was not healthy within 120 s; its log:\n{}",
                    m.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its memory now.
    pub fn mem(&self) -> anyhow::Result<Mem> {
        mem(self.pid())
    }

    /// Fails, with the end of its log, when the master has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("polling the master")? {
            bail!(
                "ptp-master exited ({status}); the end of its log {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after 30 s).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("waiting for the master")? {
                if !status.success() {
                    progress!("ptp-master exited with {status}; log:\n{}", self.log_tail());
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("ptp-master did not stop within 30 s of SIGTERM")
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The Python that has pytest: `$PTP_PYTHON`, else the workspace's
/// `.venv/bin/python`, else `python3`.
pub fn python() -> anyhow::Result<PathBuf> {
    let candidates = [
        std::env::var_os("PTP_PYTHON").map(PathBuf::from),
        Some(workspace_root().join(".venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    for c in candidates.into_iter().flatten() {
        let ok = Command::new(&c)
            .args(["-c", "import pytest"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(c);
        }
    }
    bail!(
        "no Python with pytest found: run scripts/test (it creates .venv with pytest) or set PTP_PYTHON"
    )
}

/// Which store a [`Stack`]'s masters run on.
#[derive(Debug, Clone)]
pub enum StoreKind {
    /// A SQLite file in the stack's directory (one master).
    Sqlite,
    /// A fresh database on this PostgreSQL server, shared by the masters.
    Postgres(crate::psql::Server),
}

/// The stack's database, owned: a PostgreSQL database is dropped with it.
enum OwnedDb {
    Sqlite(PathBuf),
    Postgres(crate::psql::Database),
}

impl OwnedDb {
    fn db(&self) -> Db {
        match self {
            OwnedDb::Sqlite(p) => Db::Sqlite(p.clone()),
            OwnedDb::Postgres(d) => Db::Postgres(d.url.clone()),
        }
    }
}

/// nats-server, one or more masters on a fresh database, and the directory
/// holding the database and logs: everything a section measures against.
/// Several masters share the database and the stream (PostgreSQL only).
pub struct Stack {
    /// The first master (`None` while stopped); the one restarts act on.
    pub master: Option<Master>,
    /// The other masters (PostgreSQL), stopped with the stack.
    pub others: Vec<Master>,
    /// The broker (killed on drop).
    pub nats: ptp_test_support::NatsServer,
    /// Database, logs, generated files.
    pub dir: tempfile::TempDir,
    /// Time from spawning the master to its first healthy `/health`.
    pub started_in: Duration,
    bins: Bins,
    master_args: Vec<String>,
    restarts: u32,
    /// Declared after the masters, so it is dropped after they are killed.
    db: OwnedDb,
}

impl Stack {
    /// Starts nats-server (JetStream, random port, temp store) and a master
    /// on an empty SQLite database, with `master_args` added to its command
    /// line. With `keep`, the directory stays after the run (and is named in
    /// the progress output).
    pub async fn start(bins: &Bins, master_args: &[String], keep: bool) -> anyhow::Result<Stack> {
        Stack::start_on(bins, master_args, keep, &StoreKind::Sqlite, 1).await
    }

    /// [`Self::start`] on `store` with `masters` masters (more than one
    /// only on PostgreSQL), started one after the other, each on its own
    /// port; `started_in` is the first one's start-up.
    pub async fn start_on(
        bins: &Bins,
        master_args: &[String],
        keep: bool,
        store: &StoreKind,
        masters: usize,
    ) -> anyhow::Result<Stack> {
        if masters == 0 || (masters > 1 && matches!(store, StoreKind::Sqlite)) {
            bail!("a stack runs one master on SQLite, one or more on PostgreSQL (asked {masters})");
        }
        let nats = tokio::task::spawn_blocking(ptp_test_support::NatsServer::start)
            .await
            .context("starting nats-server")?;
        let mut dir = tempfile::Builder::new()
            .prefix("ptp-bench-")
            .tempdir()
            .context("creating a temp dir")?;
        if keep {
            dir.disable_cleanup(true);
            progress!("  keeping {}", dir.path().display());
        }
        let owned = match store {
            StoreKind::Sqlite => OwnedDb::Sqlite(dir.path().join("ptp.sqlite")),
            StoreKind::Postgres(server) => OwnedDb::Postgres(server.create()?),
        };
        let db = owned.db();
        let (master, started_in) = Master::start(
            bins,
            &nats.url(),
            &db,
            &dir.path().join("master-0.log"),
            master_args,
        )
        .await?;
        let mut others = Vec::new();
        for i in 1..masters {
            let log = dir.path().join(format!("master-0-{i}.log"));
            let (m, _) = Master::start(bins, &nats.url(), &db, &log, master_args).await?;
            others.push(m);
        }
        Ok(Stack {
            master: Some(master),
            others,
            nats,
            dir,
            started_in,
            bins: bins.clone(),
            master_args: master_args.to_vec(),
            restarts: 0,
            db: owned,
        })
    }

    /// The running master.
    pub fn master(&self) -> anyhow::Result<&Master> {
        self.master.as_ref().context("the master is not running")
    }

    /// Every running master, the first one first.
    pub fn masters(&self) -> impl Iterator<Item = &Master> {
        self.master.iter().chain(&self.others)
    }

    /// Fails, with the end of the master's log, when one has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for m in &mut self.others {
            m.check_alive()?;
        }
        self.master
            .as_mut()
            .context("the master is not running")?
            .check_alive()
    }

    /// Stops the first master gracefully and starts it again on the same
    /// database; returns the time to healthy.
    pub async fn restart_master(&mut self) -> anyhow::Result<Duration> {
        self.restart_master_with(&[]).await
    }

    /// [`Self::restart_master`] with `extra` arguments added this once.
    pub async fn restart_master_with(&mut self, extra: &[String]) -> anyhow::Result<Duration> {
        if let Some(m) = self.master.take() {
            m.stop()?;
        }
        self.restarts += 1;
        let log = self
            .dir
            .path()
            .join(format!("master-{}.log", self.restarts));
        let args: Vec<String> = self.master_args.iter().chain(extra).cloned().collect();
        let (m, t) =
            Master::start(&self.bins, &self.nats.url(), &self.db.db(), &log, &args).await?;
        self.master = Some(m);
        Ok(t)
    }

    /// Stops the first master gracefully and keeps the rest (its database
    /// can then be read).
    pub fn stop_master(&mut self) -> anyhow::Result<()> {
        match self.master.take() {
            Some(m) => m.stop(),
            None => Ok(()),
        }
    }

    /// Stops every master gracefully (the rest goes on drop).
    pub fn stop(mut self) -> anyhow::Result<()> {
        for m in self.others.drain(..) {
            m.stop()?;
        }
        match self.master.take() {
            Some(m) => m.stop(),
            None => Ok(()),
        }
    }

    /// Waits until every running master lists every run in `ids` (see
    /// [`Master::wait_listed`]) and returns when the last one did: a run
    /// counts as stored when whichever master a client asks answers it.
    pub async fn wait_listed(
        &self,
        http: &reqwest::Client,
        since: chrono::DateTime<chrono::Utc>,
        ids: &[String],
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        let mut last = None;
        for m in self.masters() {
            last = Some(m.wait_listed(http, since, ids, timeout).await?);
        }
        last.context("no master is running")
    }
}

impl Master {
    /// Polls `GET /results?since=..&limit=..` until every run in `ids` is
    /// listed (queryable), and returns when that was first seen. Runs
    /// appear there only once complete; `since` must be the runs' start
    /// time, so the page holds only them (at most 500). The poll interval grows with the
    /// wait (2 ms up to 50 ms) so it costs the master little and
    /// resolves short waits finely.
    pub async fn wait_listed(
        &self,
        http: &reqwest::Client,
        since: chrono::DateTime<chrono::Utc>,
        ids: &[String],
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        use std::collections::HashSet;
        let t0 = Instant::now();
        let mut missing: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        loop {
            let limit = ids.len().clamp(1, 500);
            let url = format!("{}/results?since={since}&limit={limit}", self.base);
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                let runs: Vec<serde_json::Value> =
                    r.json().await.context("decoding GET /results")?;
                let now = Instant::now();
                for run in &runs {
                    if let Some(id) = run.get("run_id").and_then(|v| v.as_str()) {
                        missing.remove(id);
                    }
                }
                if missing.is_empty() {
                    return Ok(now);
                }
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{} of {} runs were not queryable after {timeout:?} (master log: {})",
                    missing.len(),
                    ids.len(),
                    self.log.display()
                );
            }
            let pause =
                (t0.elapsed() / 50).clamp(Duration::from_millis(2), Duration::from_millis(50));
            tokio::time::sleep(pause).await;
        }
    }
}
