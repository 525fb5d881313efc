//! `TestApp`: a real nats-server child and the real master (the same
//! `ptp_api::run` as `ptp-master`) on port 0 with a temp SQLite file, filled
//! through `POST /results`; and MCP clients that speak to `ptp-mcp` the way
//! editors do (rmcp over an in-process duplex pipe, streamable HTTP, and the
//! official Python SDK over the built binary's stdio).

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ptp_mcp::{Config, PtpMcp};
use ptp_test_support::{NatsServer, eventually};
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, ResourceContents};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous deadline for things that happen in well under a second.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// Deadline for ingesting a 60,000-case run in a debug build.
pub const BIG_DEADLINE: Duration = Duration::from_secs(240);

/// A running master with its broker and database.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub nats: NatsServer,
    _dir: tempfile::TempDir,
    token: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// nats-server + master, healthy.
    pub async fn spawn() -> TestApp {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = ptp_api::Config::for_test(dir.path().join("ptp.sqlite"), nats.url());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let token = CancellationToken::new();
        let task = tokio::spawn(ptp_api::run(config, listener, token.clone()));
        let app = TestApp {
            base,
            http: reqwest::Client::new(),
            nats,
            _dir: dir,
            token,
            task: Some(task),
        };
        let url = format!("{}/health", app.base);
        let http = app.http.clone();
        eventually(DEADLINE, "GET /health to answer 200", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        app
    }

    /// Posts a run (`{"run", "cases"}`) and waits until it is queryable.
    /// A direct read of the master's API (to compare a tool with it).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET reaches the master");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_run(&self, payload: &Value) {
        self.post_run_within(payload, DEADLINE).await
    }

    pub async fn post_run_within(&self, payload: &Value, deadline: Duration) {
        let run_id = payload["run"]["run_id"]
            .as_str()
            .expect("payload has run.run_id")
            .to_string();
        // 503 means "NATS not ready, nothing stored, retry" (e.g. the stream
        // is still being created just after start-up): retry until 202.
        let post_url = format!("{}/results", self.base);
        eventually(
            deadline,
            &format!("POST /results of {run_id} to answer 202"),
            || {
                let (http, url) = (self.http.clone(), post_url.clone());
                async move {
                    let r = http.post(&url).json(payload).send().await.ok()?;
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    match status {
                        202 => Some(()),
                        503 => None,
                        _ => panic!("POST /results answered {status}: {body}"),
                    }
                }
            },
        )
        .await;
        let url = format!("{}/results/{run_id}?cases_limit=0", self.base);
        let http = self.http.clone();
        eventually(deadline, &format!("run {run_id} to be queryable"), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(&url).send().await.ok()?;
                (r.status().as_u16() == 200).then_some(())
            }
        })
        .await;
    }

    /// Publishes heartbeats of a worker in the middle of a run until the
    /// master lists it as running (core NATS drops heartbeats sent before
    /// the master subscribed, so send again until it shows).
    pub async fn worker_running(&self, worker_id: &str, project: &str, run_id: &str) {
        let nats = async_nats::connect(self.nats.url())
            .await
            .expect("connect to nats");
        let url = format!("{}/workers", self.base);
        eventually(DEADLINE, &format!("worker {worker_id} to be running"), || {
            let (nats, http, url) = (nats.clone(), self.http.clone(), url.clone());
            let hb = json!({"schema": 1, "worker_id": worker_id, "project": project, "run_id": run_id,
                            "phase": "start", "interval_secs": 60, "at": Utc::now()});
            async move {
                nats.publish("ptp.heartbeat", hb.to_string().into())
                    .await
                    .ok()?;
                nats.flush().await.ok()?;
                let workers: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
                workers
                    .as_array()?
                    .iter()
                    .any(|w| w["worker_id"] == worker_id && w["status"] == "running")
                    .then_some(())
            }
        })
        .await;
    }

    /// The seed data: four runs of project "shop" on three workers, with
    /// pass rates 100, 100, 80, 90 (oldest first), two failing tests.
    pub async fn seed(&self) -> Seed {
        let now = Utc::now();
        let h = |hours: i64| now - chrono::Duration::hours(hours);
        let passing = |n: usize| -> Vec<Value> {
            (0..n)
                .map(|i| {
                    case(
                        &format!("tests/test_cart.py::test_item_{i}"),
                        "passed",
                        0.01 * i as f64,
                        None,
                        None,
                    )
                })
                .collect()
        };
        let long_tb = format!(
            "tests/test_checkout.py:42: in test_checkout\n{}\nE   AssertionError: expected 200, got 500",
            "    frame line that repeats\n".repeat(400)
        );
        let checkout = |msg: &str| {
            case(
                "tests/test_checkout.py::test_checkout",
                "failed",
                2.5,
                Some(msg),
                Some(&long_tb),
            )
        };
        let db_error = case(
            "tests/test_db.py::test_migrations",
            "error",
            0.3,
            Some("ConnectionError: database is locked"),
            Some("fixture 'db' raised ConnectionError"),
        );

        let old = run_payload("seed-old", "shop", "release", "ci-old", h(72), passing(5));
        let r1 = run_payload("seed-1", "shop", "main", "ci-a", h(5), passing(10));
        let mut c2 = passing(8);
        c2.push(checkout("AssertionError: expected 200, got 500"));
        c2.push(db_error);
        let r2 = run_payload("seed-2", "shop", "main", "ci-b", h(4), c2);
        let mut c3 = passing(9);
        c3.push(checkout("AssertionError: expected 200, got 502"));
        let r3 = run_payload("seed-3", "shop", "main", "ci-a", h(3), c3);
        for r in [&old, &r1, &r2, &r3] {
            self.post_run(r).await;
        }
        Seed {
            oldest_first: vec!["seed-old", "seed-1", "seed-2", "seed-3"],
        }
    }

    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(t) = self.task.take() {
            t.await
                .expect("master task joined")
                .expect("master shut down cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// What [`TestApp::seed`] posted.
pub struct Seed {
    pub oldest_first: Vec<&'static str>,
}

/// One test case in the wire schema.
pub fn case(
    test_id: &str,
    outcome: &str,
    duration: f64,
    message: Option<&str>,
    traceback: Option<&str>,
) -> Value {
    let name = test_id.rsplit("::").next().unwrap_or(test_id);
    json!({
        "test_id": test_id, "name": name, "classname": "tests", "outcome": outcome,
        "duration_secs": duration, "message": message, "traceback": traceback,
        "retries": 0, "flaky": false,
    })
}

/// A full `POST /results` payload with counts computed from `cases`.
pub fn run_payload(
    run_id: &str,
    project: &str,
    branch: &str,
    worker: &str,
    started_at: DateTime<Utc>,
    cases: Vec<Value>,
) -> Value {
    let mut counts = json!({"total": 0, "passed": 0, "failed": 0, "error": 0, "skipped": 0, "xfailed": 0, "xpassed": 0});
    for c in &cases {
        let o = c["outcome"].as_str().expect("outcome").to_string();
        counts["total"] = json!(counts["total"].as_u64().unwrap_or(0) + 1);
        counts[&o] = json!(counts[&o].as_u64().unwrap_or(0) + 1);
    }
    let failed = counts["failed"].as_u64().unwrap_or(0) + counts["error"].as_u64().unwrap_or(0) > 0;
    json!({
        "run": {
            "run_id": run_id, "project": project, "branch": branch,
            "commit": "0123456789abcdef0123", "worker_id": worker, "host": format!("{worker}.ci"),
            "runner": "pytest", "command": "pytest -q",
            "started_at": started_at, "finished_at": started_at + chrono::Duration::seconds(30),
            "duration_secs": 30.0, "exit_code": if failed { 1 } else { 0 },
            "status": if failed { "failed" } else { "passed" },
            "counts": counts, "cases_complete": true,
        },
        "cases": cases,
    })
}

/// An MCP client connected to a fresh `ptp-mcp` server over an in-process
/// pipe, the server answering from `master_url`.
pub async fn mcp_client(master_url: &str, timeout_secs: u64) -> RunningService<RoleClient, ()> {
    let mut config = Config::for_master(master_url);
    config.timeout_secs = timeout_secs;
    mcp_client_for(&config).await
}

/// An MCP client connected to a fresh `ptp-mcp` server built from `config`
/// over an in-process pipe.
pub async fn mcp_client_for(config: &Config) -> RunningService<RoleClient, ()> {
    let server = PtpMcp::from_config(config).expect("usable settings");
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let running = server.serve(server_io).await?;
        running.waiting().await?;
        anyhow::Ok(())
    });
    ().serve(client_io).await.expect("MCP client initialises")
}

/// Calls a tool; protocol errors fail the test (tool errors do not).
pub async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    let args = args.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
}

/// The text blocks of a result, joined.
pub fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A successful result's JSON text.
pub fn ok_json(tool: &str, r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "{tool} failed: {}", text(r));
    serde_json::from_str(&text(r))
        .unwrap_or_else(|e| panic!("{tool} answered non-JSON ({e}): {}", text(r)))
}

/// A tool error's sentence.
pub fn err_text(tool: &str, r: &CallToolResult) -> String {
    assert_eq!(
        r.is_error,
        Some(true),
        "{tool} should have failed: {}",
        text(r)
    );
    text(r)
}

/// The embedded HTML resource of a `get_report` answer: (uri, mime, html).
pub fn html_of(r: &CallToolResult) -> (String, Option<String>, String) {
    assert_ne!(r.is_error, Some(true), "get_report failed: {}", text(r));
    r.content
        .iter()
        .find_map(|c| match c {
            ContentBlock::Resource(res) => match &res.resource {
                ResourceContents::TextResourceContents {
                    uri,
                    mime_type,
                    text,
                    ..
                } => Some((uri.clone(), mime_type.clone(), text.clone())),
                _ => None,
            },
            _ => None,
        })
        .expect("get_report embeds a text resource")
}

/// A port nothing listens on.
pub async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr").port()
}

/// The fixture directory.
pub fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// The built `ptp-mcp` binary over stdio, spoken to in raw lines the way a
/// hostile client would: bytes in, JSON-RPC lines out, its stderr kept.
pub struct StdioServer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    stderr: JoinHandle<Vec<u8>>,
}

impl StdioServer {
    /// Starts the binary against `master_url` (default log settings) and
    /// completes the MCP handshake.
    pub async fn start(master_url: &str) -> StdioServer {
        use tokio::io::AsyncReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ptp-mcp"))
            .env("MASTER_URL", master_url)
            .env("PTP_MCP_TIMEOUT_SECS", "5")
            .env_remove("RUST_LOG")
            .env_remove("PTP_MCP_REPORT_DIR")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("ptp-mcp starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut err = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ = err.read_to_end(&mut all).await;
            all
        });
        let mut s = StdioServer {
            child,
            stdin,
            stdout,
            stderr,
        };
        let init = s
            .request(
                json!(0),
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "hostile", "version": "1"}}),
            )
            .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "ptp-mcp", "{init}");
        s.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        s
    }

    /// Writes `bytes` and a newline.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(bytes).await.expect("write stdin");
        self.stdin.write_all(b"\n").await.expect("write stdin");
        self.stdin.flush().await.expect("flush stdin");
    }

    /// The next line the server writes: its length in bytes and its JSON.
    pub async fn recv(&mut self) -> (usize, Value) {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        let read = tokio::time::timeout(DEADLINE, self.stdout.read_line(&mut line))
            .await
            .expect("ptp-mcp answers within the deadline")
            .expect("read stdout");
        assert!(read > 0, "ptp-mcp closed stdout");
        let v = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", helpers_short(&line)));
        (line.len(), v)
    }

    /// Sends a request and returns the reply.
    pub async fn request(&mut self, id: Value, method: &str, params: Value) -> Value {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send(msg.to_string().as_bytes()).await;
        self.recv().await.1
    }

    /// Closes stdin, waits for a clean exit and returns everything the
    /// server logged.
    pub async fn finish(mut self) -> String {
        drop(self.stdin);
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("ptp-mcp exits when stdin closes")
            .expect("wait");
        let stderr = self.stderr.await.expect("stderr joined");
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        assert!(
            status.success(),
            "ptp-mcp exited {status}: {}",
            helpers_short(&stderr)
        );
        stderr
    }
}

/// The first 300 characters of `s`, for assertion messages.
pub fn helpers_short(s: &str) -> String {
    s.chars().take(300).collect()
}

/// `serve_http` (what `ptp-mcp --http` runs) on `127.0.0.1:0`, answering
/// from a master, accepting loopback hosts and the given tokens.
pub struct HttpServer {
    pub addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl HttpServer {
    pub async fn start(master_url: &str, tokens: &[&str]) -> HttpServer {
        let config = Config::for_master(master_url);
        let server = PtpMcp::from_config(&config).expect("usable settings");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ptp_mcp::serve_http(
            server,
            listener,
            ptp_mcp::HttpAccess::new(config.allowed_hosts(), &tokens),
            shutdown.clone(),
        ));
        HttpServer {
            addr,
            shutdown,
            task,
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("joined")
            .expect("HTTP server stopped cleanly");
    }
}

/// Headless Chromium (Debian's `chromium`), or `PTP_CHROMIUM`.
pub struct Browser {
    bin: std::path::PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    /// The browser, or `None` (after saying why) when none is installed
    /// and `PTP_REQUIRE_BROWSER` is unset; with it set (scripts/test sets
    /// it once chromium is installed) a missing browser fails the test.
    pub fn find() -> Option<Browser> {
        let on_path = |name: &str| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        };
        let bin = std::env::var_os("PTP_CHROMIUM")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                ["chromium", "chromium-browser", "google-chrome"]
                    .into_iter()
                    .find_map(on_path)
            });
        let Some(bin) = bin else {
            let why = "no chromium on PATH (apt-get install chromium, or set PTP_CHROMIUM)";
            if std::env::var_os("PTP_REQUIRE_BROWSER").is_some() {
                panic!("PTP_REQUIRE_BROWSER is set but {why}");
            }
            eprintln!("SKIPPED the browser test: {why}");
            return None;
        };
        let profile = tempfile::tempdir().expect("profile dir");
        Some(Browser { bin, profile })
    }

    /// Runs the browser headless on `url` with `args`; its stdout.
    async fn run(&self, url: &str, args: &[String]) -> String {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(["--headless", "--no-sandbox", "--disable-gpu"])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(args)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("chromium finishes within 120 s")
            .expect("chromium starts");
        assert!(
            out.status.success(),
            "chromium exited {}: {}",
            out.status,
            helpers_short(&String::from_utf8_lossy(&out.stderr))
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The DOM after the page loaded (and any script ran), serialized.
    pub async fn dump_dom(&self, url: &str) -> String {
        self.run(url, &["--dump-dom".to_string()]).await
    }

    /// A PNG of the page in a `width` x `height` window, written to `path`.
    pub async fn screenshot(&self, url: &str, path: &Path, width: u32, height: u32) {
        self.run(
            url,
            &[
                format!("--screenshot={}", path.display()),
                format!("--window-size={width},{height}"),
                "--hide-scrollbars".to_string(),
            ],
        )
        .await;
    }
}
