//! `TestApp`: a real nats-server child, the real master (same `run` as the
//! binary) on port 0 with its own store, and helpers that speak the
//! domain: run the agent, wait for a run, read the API.
//!
//! The store is a temp SQLite file, or, with `PTP_TEST_STORE=postgres`, a
//! PostgreSQL database of the test's own on `$PTP_TEST_POSTGRES`, dropped
//! after ([`TestStore`]): the same suite runs on both. A test of what only
//! one store has (SQLite's file lock and pages) says so and returns early
//! on the other ([`TestStore::only_sqlite`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ptp_test_support::{NatsServer, cargo_bin, eventually, python};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The store a test's master runs on (see the module docs).
pub enum TestStore {
    /// A SQLite file in the test's temp dir.
    Sqlite(PathBuf),
    /// A PostgreSQL database made for the test.
    Postgres(ptp_test_support::PgDatabase),
}

impl TestStore {
    /// The store `PTP_TEST_STORE` asks for (`sqlite`, the default, or
    /// `postgres`), its SQLite file in `dir`.
    pub async fn new(dir: &Path) -> TestStore {
        match std::env::var("PTP_TEST_STORE").as_deref() {
            Ok("postgres") => TestStore::Postgres(ptp_test_support::PgDatabase::create().await),
            Ok("sqlite") | Err(_) => TestStore::Sqlite(dir.join("ptp.sqlite")),
            Ok(other) => panic!("PTP_TEST_STORE={other}: use sqlite or postgres"),
        }
    }

    /// `--db` for the master.
    pub fn target(&self) -> ptp_actors::DbTarget {
        match self {
            TestStore::Sqlite(p) => ptp_actors::DbTarget::Sqlite(p.clone()),
            TestStore::Postgres(db) => ptp_actors::DbTarget::Postgres(db.url().to_string()),
        }
    }

    /// `PTP_DB` for a master process.
    pub fn env_value(&self) -> String {
        match self {
            TestStore::Sqlite(p) => p.display().to_string(),
            TestStore::Postgres(db) => db.url().to_string(),
        }
    }

    /// The SQLite file; `None` on PostgreSQL, after printing that `test`
    /// checks what only SQLite has (the caller returns).
    pub fn only_sqlite(&self, test: &str) -> Option<&Path> {
        match self {
            TestStore::Sqlite(p) => Some(p),
            TestStore::Postgres(_) => {
                eprintln!("SKIPPED on PostgreSQL: {test} checks the SQLite file itself");
                None
            }
        }
    }
}

/// Generous deadline for things that happen in well under a second.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A running master.
pub struct Master {
    pub base: String,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Master {
    /// A master with settings other than the test defaults.
    pub async fn start_with(config: ptp_api::Config) -> Master {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let token = CancellationToken::new();
        let task = tokio::spawn(ptp_api::run(config, listener, token.clone()));
        Master { base, token, task }
    }

    /// Graceful shutdown, as on SIGTERM; asserts it ended cleanly.
    pub async fn stop(self) {
        self.token.cancel();
        self.task
            .await
            .expect("master task joined")
            .expect("master shut down cleanly");
    }
}

pub struct TestApp {
    pub nats: NatsServer,
    pub master: Option<Master>,
    pub store: TestStore,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    /// A master with the test defaults changed by `tweak`.
    pub async fn spawn_with(tweak: impl FnOnce(&mut ptp_api::Config)) -> TestApp {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = TestStore::new(dir.path()).await;
        let mut config = ptp_api::Config::for_test(store.target(), nats.url().to_string());
        tweak(&mut config);
        let master = Master::start_with(config).await;
        let app = TestApp {
            nats,
            master: Some(master),
            store,
            dir,
            http: reqwest::Client::new(),
        };
        app.wait_healthy().await;
        app
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn base(&self) -> &str {
        &self.master.as_ref().expect("master running").base
    }

    pub async fn stop_master(&mut self) {
        if let Some(m) = self.master.take() {
            m.stop().await;
        }
    }

    pub async fn start_master(&mut self) {
        self.start_master_with(|_| {}).await;
    }

    /// Starts the master again with the test defaults changed by `tweak`.
    pub async fn start_master_with(&mut self, tweak: impl FnOnce(&mut ptp_api::Config)) {
        assert!(self.master.is_none(), "master already running");
        let mut config = ptp_api::Config::for_test(self.store.target(), self.nats.url());
        tweak(&mut config);
        self.master = Some(Master::start_with(config).await);
        self.wait_healthy().await;
    }

    /// The durable consumer's (messages not yet delivered, delivered but unacked).
    pub async fn consumer_backlog(&self) -> (u64, usize) {
        consumer_backlog(&self.nats.url()).await
    }

    pub async fn wait_healthy(&self) {
        let url = format!("{}/health", self.base());
        let http = self.http.clone();
        eventually(DEADLINE, "GET /health to answer 200", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base()))
            .send()
            .await
            .expect("GET reaches the master");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base()))
            .json(body)
            .send()
            .await
            .expect("POST reaches the master");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(format!("{}{path}", self.base()))
            .send()
            .await
            .expect("DELETE reaches the master");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET /results/{id}` until the run is there, and `/trend` until
    /// the aggregates have it too (they hear of a run just after its commit).
    pub async fn wait_run(&self, run_id: &str) -> Value {
        let path = format!("/results/{run_id}?cases_limit=200000");
        let run = eventually(
            DEADLINE,
            &format!("run {run_id} to be queryable"),
            || async {
                let (status, body) = self.get(&path).await;
                (status == 200).then_some(body)
            },
        )
        .await;
        let trend = format!(
            "/trend?limit=1000&project={}",
            run["project"].as_str().unwrap_or("")
        );
        eventually(DEADLINE, &format!("run {run_id} on the trend"), || async {
            let (_, body) = self.get(&trend).await;
            body.as_array()?
                .iter()
                .any(|p| p["run_id"] == run_id)
                .then_some(())
        })
        .await;
        run
    }

    /// Polls `GET /results?limit=500` until `n` runs are listed, and
    /// `/trend` until the aggregates have as many.
    pub async fn wait_run_count(&self, n: usize) -> Vec<Value> {
        let runs = eventually(DEADLINE, &format!("{n} runs to be listed"), || async {
            let (_, body) = self.get("/results?limit=500").await;
            let runs = body.as_array()?.clone();
            (runs.len() >= n).then_some(runs)
        })
        .await;
        eventually(DEADLINE, &format!("{n} runs on the trend"), || async {
            let (_, body) = self.get("/trend?limit=1000").await;
            (body.as_array()?.len() >= n.min(1000)).then_some(())
        })
        .await;
        runs
    }

    /// The agent binary with this app's settings.
    pub fn agent(&self) -> Command {
        let mut c = Command::new(cargo_bin("ptp-agent"));
        c.env("NATS_URL", self.nats.url())
            .env("WORKER_ID", "ci-worker-1")
            .env("PROJECT", "demo")
            .env("BRANCH", "main")
            .env("COMMIT", "abc123")
            .env("PTP_SPOOL_DIR", self.spool_dir())
            .env("PTP_PUBLISH_TIMEOUT", "20")
            .env_remove("PTP_STRICT");
        c
    }
}

/// Copies the fixture pytest suite into a fresh directory.
pub fn pytest_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("project dir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytest_suite");
    for e in std::fs::read_dir(&src).expect("fixture suite") {
        let e = e.expect("dir entry");
        std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy fixture");
    }
    dir
}

/// Runs the agent around `python -m pytest` in `project`, with the JUnit
/// file at `junit` so the test can compare; returns the output.
pub fn run_pytest_agent(app: &TestApp, project: &Path, junit: &Path) -> Output {
    app.agent()
        .current_dir(project)
        .args(["run", "--"])
        .arg(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("--junitxml={}", junit.display()))
        .output()
        .expect("agent runs")
}

/// The run id the agent printed ("ptp-agent: run <id> [status]: ...").
pub fn run_id_from(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| {
            l.strip_prefix("ptp-agent: run ")
                .and_then(|r| r.split_whitespace().next())
        })
        .map(str::to_string)
        .unwrap_or_else(|| panic!("agent printed no run id; stderr:\n{err}"))
}

/// `[test_id, outcome]` per testcase element, read by Python's xml.etree.
pub fn oracle_cases(junit: &Path) -> Vec<(String, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/junit_cases.py");
    let out = Command::new(python())
        .arg(script)
        .arg(junit)
        .output()
        .expect("oracle runs");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<(String, String)> = serde_json::from_slice(&out.stdout).expect("oracle JSON");
    v
}

/// A synthetic run with `cases` test cases, every 10th failing.
pub fn synthetic_run(
    tag: &str,
    i: usize,
    cases: usize,
) -> (ptp_nats::schema::RunInfo, Vec<ptp_nats::schema::TestCase>) {
    use ptp_nats::schema::{Outcome, TestCase};
    let cases: Vec<TestCase> = (0..cases)
        .map(|c| TestCase {
            test_id: format!("tests/test_{}.py::test_{c}", c % 20),
            file: None,
            classname: Some(format!("tests.test_{}", c % 20)),
            name: format!("test_{c}"),
            outcome: if c % 10 == 3 {
                Outcome::Failed
            } else {
                Outcome::Passed
            },
            duration_secs: 0.001 * c as f64,
            message: (c % 10 == 3).then(|| format!("assert {c} == 0")),
            traceback: None,
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        })
        .collect();
    let started = chrono::Utc::now() - chrono::Duration::seconds(100_000 - i as i64);
    let (mut run, cases) = run_of_cases(format!("{tag}-{i:05}"), started, cases);
    run.worker_id = format!("w{}", i % 7);
    (run, cases)
}

/// A complete run `run_id` of project "synthetic" on `main`, made of
/// `cases`, started at `started` and lasting one second, worker `w0`, no
/// commit; counts, status and exit code follow the cases. Tests set the
/// other fields they care about.
pub fn run_of_cases(
    run_id: String,
    started: chrono::DateTime<chrono::Utc>,
    cases: Vec<ptp_nats::schema::TestCase>,
) -> (ptp_nats::schema::RunInfo, Vec<ptp_nats::schema::TestCase>) {
    use ptp_nats::schema::{Counts, RunInfo, RunStatus};
    let counts = Counts::of(&cases);
    let run = RunInfo {
        run_id,
        project: "synthetic".into(),
        branch: Some("main".into()),
        commit: None,
        worker_id: "w0".into(),
        host: None,
        runner: Some("pytest".into()),
        command: None,
        started_at: started,
        finished_at: started + chrono::Duration::seconds(1),
        duration_secs: 1.0,
        exit_code: Some(i32::from(counts.failed > 0)),
        status: if counts.failed > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Passed
        },
        counts,
        cases_complete: true,
        note: None,
    };
    (run, cases)
}

/// Publishes runs straight to the stream (as many agents would). With
/// `msg_ids == false` the server's dedup is bypassed, so only the writer's
/// idempotence stands between a resend and a duplicate.
pub async fn publish_direct(
    nats_url: &str,
    runs: &[(ptp_nats::schema::RunInfo, Vec<ptp_nats::schema::TestCase>)],
    msg_ids: bool,
) {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to nats");
    let js = async_nats::jetstream::new(client.clone());
    ptp_nats::ensure_stream(&js, &ptp_nats::StreamSettings::default())
        .await
        .expect("stream");
    let mut all = Vec::new();
    for (run, cases) in runs {
        all.extend(ptp_nats::schema::encode_run(run, cases, 1024 * 1024).expect("encode"));
    }
    if msg_ids {
        ptp_nats::publish_all(&js, all).await.expect("publish");
    } else {
        for m in all {
            js.publish(m.subject, m.payload.into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    }
}

/// The master as a child process (for kill -9 and SIGTERM tests).
pub struct MasterProcess {
    child: std::process::Child,
    pub base: String,
}

impl MasterProcess {
    pub async fn start(db: &TestStore, nats_url: &str) -> MasterProcess {
        MasterProcess::start_with_env(db, nats_url, &[]).await
    }

    /// A master with more environment variables (settings).
    pub async fn start_with_env(
        db: &TestStore,
        nats_url: &str,
        envs: &[(&str, &str)],
    ) -> MasterProcess {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let child = Command::new(cargo_bin("ptp-master"))
            .env("NATS_URL", nats_url)
            .env("PTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("PTP_DB", db.env_value())
            .env("RUST_LOG", "warn")
            // Redeliver a killed master's unacked batch soon, to keep tests short.
            .env("PTP_ACK_WAIT_SECS", "10")
            .envs(envs.iter().copied())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("master binary starts");
        let m = MasterProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let url = format!("{}/health", m.base);
        eventually(DEADLINE, "the master binary to answer /health", || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url).send().await.ok().map(|_| ()) }
        })
        .await;
        m
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM; returns the exit code. A master that has not exited within
    /// [`DEADLINE`] fails the test with what it was doing (its threads'
    /// states and kernel wait channels), then is killed: a hang here must
    /// say why, not stall the suite.
    pub async fn sigterm(mut self) -> Option<i32> {
        self.signal("-TERM");
        let started = std::time::Instant::now();
        loop {
            match self.child.try_wait().expect("wait for the master") {
                Some(status) => return status.code(),
                None if started.elapsed() > DEADLINE => {
                    let pid = self.child.id();
                    let report = threads_of(pid);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "the master (pid {pid}) did not exit within {DEADLINE:?} of SIGTERM; its threads:\n{report}"
                    );
                }
                // Polling a child's exit status; nothing to wait on instead
                // without blocking a runtime thread.
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// Name, state and kernel wait channel of every thread of `pid`, from /proc.
fn threads_of(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("(no /proc/{pid}/task)");
    };
    let mut out = String::new();
    for t in tasks.flatten() {
        let p = t.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        let status = read("status");
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        out.push_str(&format!(
            "  {} {} [{}] wchan={}\n",
            t.file_name().to_string_lossy(),
            field("Name:"),
            field("State:"),
            read("wchan")
        ));
    }
    out
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reqwest GET returning (status, JSON).
pub async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    match http.get(url).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Every run id listed by `GET /results`, following the cursor.
pub async fn all_run_ids(http: &reqwest::Client, base: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut url = format!("{base}/results?limit=500");
    loop {
        let r = http.get(&url).send().await.expect("list runs");
        let next = r
            .headers()
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let page: Vec<Value> = r.json().await.expect("page");
        ids.extend(
            page.iter()
                .filter_map(|r| r["run_id"].as_str().map(str::to_string)),
        );
        match next {
            Some(c) => url = format!("{base}/results?limit=500&cursor={c}"),
            None => return ids,
        }
    }
}

/// The encoded messages of a run, as JSON values to tamper with.
pub fn encoded(
    run: &(ptp_nats::schema::RunInfo, Vec<ptp_nats::schema::TestCase>),
) -> Vec<(&'static str, Value)> {
    ptp_nats::schema::encode_run(&run.0, &run.1, 1024 * 1024)
        .expect("encode")
        .into_iter()
        .map(|m| {
            (
                m.subject,
                serde_json::from_slice(&m.payload).expect("our own JSON"),
            )
        })
        .collect()
}

/// Publishes raw payloads to the stream, without message ids.
pub async fn publish_raw(nats_url: &str, msgs: &[(&'static str, Vec<u8>)]) {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to nats");
    let js = async_nats::jetstream::new(client);
    for (subject, payload) in msgs {
        js.publish(*subject, payload.clone().into())
            .await
            .expect("publish")
            .await
            .expect("stream ack");
    }
}

/// (runs, test case rows, runs whose stored case count differs from their
/// total), read from the store itself.
pub async fn db_census(db: &TestStore) -> (i64, i64, i64) {
    const RUNS: &str = "SELECT COUNT(*) FROM runs";
    const CASES: &str = "SELECT COUNT(*) FROM test_cases c JOIN runs r ON r.run_id = c.run_id";
    const BAD: &str = "SELECT COUNT(*) FROM runs r WHERE r.cases_complete = 1 AND r.total != \
                       (SELECT COUNT(*) FROM test_cases c WHERE c.run_id = r.run_id)";
    match db {
        TestStore::Sqlite(path) => {
            let pool = read_only(path).await;
            let mut out = [0i64; 3];
            for (slot, sql) in out.iter_mut().zip([RUNS, CASES, BAD]) {
                let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.expect(sql);
                *slot = n;
            }
            pool.close().await;
            (out[0], out[1], out[2])
        }
        TestStore::Postgres(pg) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(pg.url())
                .await
                .expect("connect to the test database");
            let mut out = [0i64; 3];
            for (slot, sql) in out.iter_mut().zip([RUNS, CASES, BAD]) {
                let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.expect(sql);
                *slot = n;
            }
            pool.close().await;
            (out[0], out[1], out[2])
        }
    }
}

/// (page_count, freelist_count) of the database file.
pub async fn db_pages(db: &Path) -> (i64, i64) {
    let pool = read_only(db).await;
    let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
        .fetch_one(&pool)
        .await
        .expect("page_count");
    let (free,): (i64,) = sqlx::query_as("PRAGMA freelist_count")
        .fetch_one(&pool)
        .await
        .expect("freelist_count");
    pool.close().await;
    (pages, free)
}

/// The master's durable consumer on the server at `nats_url`: (messages not
/// yet delivered, delivered but unacked).
pub async fn consumer_backlog(nats_url: &str) -> (u64, usize) {
    let client = async_nats::connect(nats_url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(ptp_nats::STREAM)
        .await
        .expect("stream")
        .get_consumer(ptp_nats::CONSUMER)
        .await
        .expect("consumer");
    let info = consumer.info().await.expect("consumer info");
    (info.num_pending, info.num_ack_pending)
}

/// A read-only pool on the database file.
pub async fn read_only(db: &Path) -> sqlx::SqlitePool {
    // No idle timeout and no max lifetime: then sqlx spawns no maintenance
    // task. sqlx-core 0.9.0's can spin forever in `for _ in 0..num_idle()`
    // when the pool is closed during its first pass (seen: a test's tokio
    // worker at 100% CPU after db_census, hanging the runtime's shutdown).
    sqlx::sqlite::SqlitePoolOptions::new()
        .idle_timeout(None)
        .max_lifetime(None)
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(db)
                .read_only(true),
        )
        .await
        .expect("open db")
}

/// A connection pool on the test's store, for the few tests that look
/// at rows the API does not show.
pub enum TestPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl TestPool {
    /// Read-only on SQLite.
    pub async fn open(db: &TestStore) -> TestPool {
        TestPool::connect(db, false).await
    }

    /// For a test's setup (a trigger).
    pub async fn open_writable(db: &TestStore) -> TestPool {
        TestPool::connect(db, true).await
    }

    async fn connect(db: &TestStore, writable: bool) -> TestPool {
        match db {
            TestStore::Sqlite(p) if writable => TestPool::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .max_connections(1)
                    .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(p))
                    .await
                    .expect("open db"),
            ),
            TestStore::Sqlite(p) => TestPool::Sqlite(read_only(p).await),
            TestStore::Postgres(pg) => TestPool::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(pg.url())
                    .await
                    .expect("connect to the test database"),
            ),
        }
    }

    /// The first row of `sql`, its columns as integers.
    pub async fn ints(&self, sql: &'static str) -> Vec<i64> {
        use sqlx::Row;
        match self {
            TestPool::Sqlite(p) => {
                let row = sqlx::query(sql).fetch_one(p).await.expect(sql);
                (0..row.len()).map(|i| row.try_get(i).expect(sql)).collect()
            }
            TestPool::Postgres(p) => {
                let row = sqlx::query(sql).fetch_one(p).await.expect(sql);
                (0..row.len()).map(|i| row.try_get(i).expect(sql)).collect()
            }
        }
    }

    /// The first column of the first row of `sql`, as bytes.
    pub async fn bytes(&self, sql: &'static str) -> Vec<u8> {
        match self {
            TestPool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect(sql),
            TestPool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect(sql),
        }
    }

    /// The first column of the first row of `sql`, as text.
    pub async fn text(&self, sql: &'static str) -> String {
        match self {
            TestPool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect(sql),
            TestPool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect(sql),
        }
    }

    /// Runs statements (a test's setup).
    pub async fn execute(&self, sql: &'static str) {
        match self {
            TestPool::Sqlite(p) => {
                sqlx::raw_sql(sql).execute(p).await.expect(sql);
            }
            TestPool::Postgres(p) => {
                sqlx::raw_sql(sql).execute(p).await.expect(sql);
            }
        }
    }

    pub async fn close(self) {
        match self {
            TestPool::Sqlite(p) => p.close().await,
            TestPool::Postgres(p) => p.close().await,
        }
    }
}
