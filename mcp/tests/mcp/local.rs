//! `run_tests`, `run_failed` and `list_tests` with real parts: a pytest
//! project written to a temp dir, the built `ptp-agent`, the venv's pytest,
//! and for published runs a real nats-server and master. Every call goes
//! through the rmcp client; nothing is mocked and nothing waits by sleeping.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ptp_mcp::{Config, PtpMcp};
use ptp_test_support::eventually;
use rmcp::RoleClient;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, TestApp, call, dead_port, err_text, ok_json};

/// The failing tests of [`write_project`], as JUnit ids and as node ids.
const FAILING: [(&str, &str); 4] = [
    (
        "tests.test_fixtures::test_uses_db",
        "tests/test_fixtures.py::test_uses_db",
    ),
    (
        "tests.test_math.TestDivision::test_div_zero",
        "tests/test_math.py::TestDivision::test_div_zero",
    ),
    (
        "tests.test_math::test_odd[2]",
        "tests/test_math.py::test_odd[2]",
    ),
    ("tests.test_math::test_sub", "tests/test_math.py::test_sub"),
];

/// Every test of [`write_project`], as `--collect-only` lists them.
const ALL_IDS: [&str; 9] = [
    "tests/test_fixtures.py::test_plain",
    "tests/test_fixtures.py::test_uses_db",
    "tests/test_math.py::TestDivision::test_div",
    "tests/test_math.py::TestDivision::test_div_zero",
    "tests/test_math.py::test_add",
    "tests/test_math.py::test_odd[1]",
    "tests/test_math.py::test_odd[2]",
    "tests/test_math.py::test_odd[3]",
    "tests/test_math.py::test_sub",
];

const TEST_MATH: &str = r#"import pytest

def test_add():
    assert 1 + 1 == 2

def test_sub():
    assert 3 - 1 == 1, "subtraction is off"

@pytest.mark.parametrize("n", [1, 2, 3])
def test_odd(n):
    assert n % 2 == 1

class TestDivision:
    def test_div(self):
        assert 6 / 3 == 2

    def test_div_zero(self):
        assert 1 / 0 == 0
"#;

/// A pytest project: 9 tests, of which 3 fail (one a method of a class,
/// one a parameter) and 1 errors in a fixture.
fn write_project(root: &Path) {
    std::fs::create_dir_all(root.join("tests")).expect("tests dir");
    std::fs::write(root.join("pytest.ini"), "[pytest]\n").expect("ini");
    std::fs::write(root.join("tests/test_math.py"), TEST_MATH).expect("test_math");
    std::fs::write(
        root.join("tests/test_fixtures.py"),
        r#"import pytest

@pytest.fixture
def db():
    raise RuntimeError("database is down")

def test_uses_db(db):
    pass

def test_plain():
    pass
"#,
    )
    .expect("test_fixtures");
}

/// The built agent; refuses a stale build (the target dir may be shared
/// with a checkout whose agent lacks --results-json).
fn agent_bin() -> PathBuf {
    let bin = ptp_test_support::cargo_bin("ptp-agent");
    let help = Command::new(&bin)
        .args(["run", "--help"])
        .output()
        .expect("ptp-agent --help runs");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--results-json"),
        "{} is an older ptp-agent without --results-json: run `cargo build -p ptp-agent`",
        bin.display()
    );
    bin
}

/// A project root, a cache dir, and settings that run the real agent
/// without NATS.
struct Local {
    dir: tempfile::TempDir,
    config: Config,
}

impl Local {
    fn new(master_url: &str) -> Local {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("project");
        std::fs::create_dir(&root).expect("root");
        let mut config = Config::for_master(master_url);
        config.project_root = Some(root);
        config.agent_bin = Some(agent_bin());
        config.python = Some(ptp_test_support::python());
        config.cache_dir = Some(dir.path().join("cache"));
        config.run_project = Some("local-shop".into());
        config.run_branch = Some("feature-x".into());
        Local { dir, config }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    async fn client(&self) -> RunningService<RoleClient, ()> {
        let server = PtpMcp::from_config(&self.config).expect("valid config");
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let running = server.serve(server_io).await?;
            running.waiting().await?;
            anyhow::Ok(())
        });
        ().serve(client_io).await.expect("MCP client initialises")
    }
}

/// `(test_id, node_id)` of an answer's failures, sorted.
fn failures(v: &Value) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = v["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| {
            (
                f["test_id"].as_str().unwrap_or("").to_string(),
                f["node_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    f.sort();
    f
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn counts(v: &Value) -> (u64, u64, u64, u64) {
    let c = &v["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
    (n("total"), n("passed"), n("failed"), n("error"))
}

fn argv(v: &Value) -> Vec<String> {
    v["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect()
}

/// Published through a real broker: the answer lists exactly the failing
/// tests, and the master stores the run under the same id with the same
/// counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_tests_publishes_to_the_master_and_lists_the_failures() {
    let app = TestApp::spawn().await;
    let mut local = Local::new(&app.base);
    local.config.nats_url = Some(app.nats.url());
    write_project(&local.root());
    let client = local.client().await;

    let tools = client.list_all_tools().await.expect("tools/list");
    for name in ["run_tests", "run_failed", "list_tests"] {
        let t = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} is offered with a project root"));
        let a = t.annotations.as_ref().expect("annotations");
        assert_eq!(
            (a.read_only_hint, a.destructive_hint, a.open_world_hint),
            (Some(false), Some(false), Some(false)),
            "{name}"
        );
    }

    let v = ok_json("run_tests", &call(&client, "run_tests", json!({})).await);
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["timed_out"], false);
    assert_eq!(counts(&v), (9, 5, 3, 1));
    assert_eq!(v["failures_total"], 4);
    assert_eq!(failures(&v), pairs(&FAILING));
    let sub = v["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .find(|f| f["node_id"] == "tests/test_math.py::test_sub")
        .cloned()
        .unwrap_or_default();
    assert!(
        sub["message"]
            .as_str()
            .unwrap_or("")
            .contains("subtraction is off"),
        "{sub}"
    );
    assert_eq!(v["published"], true, "{v}");
    let command = argv(&v);
    assert!(
        !command.contains(&"--no-publish".to_string()),
        "{command:?}"
    );
    // The agent builds the runner's command; this server names the
    // interpreter it was configured with, and no command of its own.
    let python = command
        .iter()
        .position(|a| a == "--python")
        .expect("--python in argv");
    assert_eq!(
        command[python + 1],
        ptp_test_support::python().display().to_string(),
        "{command:?}"
    );
    assert!(!command.contains(&"--".to_string()), "{command:?}");
    assert_eq!(v["runner"], "pytest", "detected by the agent");
    assert!(v.get("output_tail").is_none(), "a report explains the run");

    let run_id = v["run_id"].as_str().expect("run_id").to_string();
    let url = format!("{}/results/{run_id}?cases_limit=0", app.base);
    let stored: Value = eventually(DEADLINE, "the run to reach the master", || {
        let (http, url) = (app.http.clone(), url.clone());
        async move {
            let r = http.get(&url).send().await.ok()?;
            if r.status().as_u16() != 200 {
                return None;
            }
            r.json().await.ok()
        }
    })
    .await;
    assert_eq!(
        (
            stored["total"].as_u64(),
            stored["passed"].as_u64(),
            stored["failed"].as_u64(),
            stored["error"].as_u64()
        ),
        (Some(9), Some(5), Some(3), Some(1)),
        "{stored}"
    );
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["project"], "local-shop");
    assert_eq!(stored["branch"], "feature-x");

    client.cancel().await.expect("client closes");
    app.stop().await;
}

/// Without NATS the agent is told not to publish (so there is no retry
/// budget to wait out) and the answer comes from the local report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_tests_without_nats_answers_from_the_local_report() {
    let local = Local::new(&format!("http://127.0.0.1:{}", dead_port().await));
    write_project(&local.root());
    let client = local.client().await;

    let v = ok_json("run_tests", &call(&client, "run_tests", json!({})).await);
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(counts(&v), (9, 5, 3, 1));
    assert_eq!(failures(&v), pairs(&FAILING));
    assert_eq!(v["published"], false);
    assert!(
        v["publish"]
            .as_str()
            .unwrap_or("")
            .contains("no NATS configured"),
        "{v}"
    );
    assert!(
        argv(&v).contains(&"--no-publish".to_string()),
        "the agent never connects: {v}"
    );
    assert!(v["run_id"].as_str().is_some_and(|id| !id.is_empty()));

    // A keyword filter and a node id filter select what they say.
    let v = ok_json(
        "run_tests",
        &call(&client, "run_tests", json!({"filter": "TestDivision"})).await,
    );
    assert_eq!(counts(&v), (2, 1, 1, 0), "{v}");
    assert!(argv(&v).ends_with(&["--filter".into(), "TestDivision".into()]));
    let v = ok_json(
        "run_tests",
        &call(
            &client,
            "run_tests",
            json!({"filter": "tests/test_math.py::test_odd[3]", "runner": "pytest"}),
        )
        .await,
    );
    assert_eq!(
        (v["status"].as_str(), counts(&v)),
        (Some("passed"), (1, 1, 0, 0))
    );
    client.cancel().await.expect("client closes");
}

/// run_failed: an error before any run; then only the last run's failures
/// run again, by node id, until nothing is left to rerun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_failed_reruns_only_the_last_failures() {
    let local = Local::new(&format!("http://127.0.0.1:{}", dead_port().await));
    write_project(&local.root());
    let client = local.client().await;

    let e = err_text("run_failed", &call(&client, "run_failed", json!({})).await);
    assert!(
        e.contains("no previous local run") && e.contains("run_tests first"),
        "{e}"
    );
    assert!(
        !local.dir.path().join("cache").exists(),
        "nothing ran, nothing was written"
    );

    let v = ok_json("run_tests", &call(&client, "run_tests", json!({})).await);
    assert_eq!(counts(&v), (9, 5, 3, 1));

    let v = ok_json("run_failed", &call(&client, "run_failed", json!({})).await);
    assert_eq!(counts(&v), (4, 0, 3, 1), "only the 4 failures ran: {v}");
    assert_eq!(failures(&v), pairs(&FAILING));
    let mut rerun: Vec<&str> = v["rerun"]["tests"]
        .as_array()
        .expect("rerun.tests")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    rerun.sort();
    assert_eq!(rerun, FAILING.map(|(_, node)| node));

    // Fix two of them: the next rerun runs the 4, then only the 2 left.
    std::fs::write(
        local.root().join("tests/test_math.py"),
        TEST_MATH
            .replace("== 1, \"subtraction is off\"", "== 2")
            .replace("1 / 0 == 0", "1 / 1 == 1"),
    )
    .expect("fix");
    let v = ok_json("run_failed", &call(&client, "run_failed", json!({})).await);
    assert_eq!(counts(&v), (4, 2, 1, 1), "{v}");
    let v = ok_json("run_failed", &call(&client, "run_failed", json!({})).await);
    assert_eq!(counts(&v), (2, 0, 1, 1), "{v}");
    assert_eq!(
        failures(&v),
        pairs(&[FAILING[0], FAILING[2]]),
        "the two still failing"
    );

    // Fix the rest: one rerun passes, and then nothing is left.
    std::fs::write(
        local.root().join("tests/test_math.py"),
        "import pytest\n\n@pytest.mark.parametrize(\"n\", [1, 2, 3])\ndef test_odd(n):\n    pass\n",
    )
    .expect("fix");
    std::fs::write(
        local.root().join("tests/test_fixtures.py"),
        "def test_uses_db():\n    pass\n",
    )
    .expect("fix");
    let v = ok_json("run_failed", &call(&client, "run_failed", json!({})).await);
    assert_eq!(v["status"], "passed", "{v}");
    assert_eq!(v["rerun"]["total"], 2);
    let v = ok_json("run_failed", &call(&client, "run_failed", json!({})).await);
    assert_eq!(v["status"], "nothing_to_rerun", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("nothing failed"),
        "{v}"
    );
    client.cancel().await.expect("client closes");
}

/// list_tests lists the node ids pytest collects, capped, with the total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tests_returns_the_collected_ids() {
    let local = Local::new(&format!("http://127.0.0.1:{}", dead_port().await));
    write_project(&local.root());
    let client = local.client().await;

    let v = ok_json("list_tests", &call(&client, "list_tests", json!({})).await);
    let ids: BTreeSet<&str> = v["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(ids, BTreeSet::from(ALL_IDS), "{v}");
    assert_eq!(
        (v["total"].as_u64(), v["status"].as_str()),
        (Some(9), Some("ok"))
    );
    assert!(argv(&v).contains(&"--collect-only".to_string()), "{v}");
    assert_eq!(v["runner"], "pytest");

    let v = ok_json(
        "list_tests",
        &call(&client, "list_tests", json!({"limit": 2})).await,
    );
    assert_eq!(
        (v["total"].as_u64(), v["shown"].as_u64(), v["more"].as_u64()),
        (Some(9), Some(2), Some(7))
    );
    let v = ok_json(
        "list_tests",
        &call(&client, "list_tests", json!({"filter": "TestDivision"})).await,
    );
    assert_eq!(
        v["tests"],
        json!([
            "tests/test_math.py::TestDivision::test_div",
            "tests/test_math.py::TestDivision::test_div_zero"
        ])
    );
    assert!(
        !local.dir.path().join("cache").exists(),
        "collecting keeps no run"
    );
    let e = err_text(
        "list_tests",
        &call(&client, "list_tests", json!({"limit": 0})).await,
    );
    assert!(e.contains("limit must be between 1 and 2000"), "{e}");
    client.cancel().await.expect("client closes");
}

/// Refused filters and runners are tool errors before any process starts:
/// the agent and the interpreter are scripts that would leave a marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_arguments_start_nothing() {
    let mut local = Local::new(&format!("http://127.0.0.1:{}", dead_port().await));
    write_project(&local.root());
    let markers = local.dir.path().join("markers");
    std::fs::create_dir(&markers).expect("markers dir");
    let script = |name: &str| {
        let path = local.dir.path().join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\ntouch '{}'\n", markers.join(name).display()),
        )
        .expect("script");
        let mut perm = std::fs::metadata(&path).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).expect("chmod");
        path
    };
    local.config.agent_bin = Some(script("agent"));
    local.config.python = Some(script("python"));
    let client = local.client().await;
    let started = || std::fs::read_dir(&markers).expect("markers").count();

    let long = "a".repeat(500);
    for (filter, why) in [
        ("-x", "starts with '-'"),
        ("--collect-only", "starts with '-'"),
        ("a/../b", "contains '..'"),
        ("a\u{7}", "control characters"),
        ("@args.txt", "starts with '@'"),
        ("/etc/passwd", "absolute path"),
        (long.as_str(), "longer than 200 characters"),
    ] {
        for tool in ["run_tests", "list_tests"] {
            let e = err_text(tool, &call(&client, tool, json!({"filter": filter})).await);
            assert!(
                e.contains(why) && e.contains("nothing was run"),
                "{tool} {filter:?}: {e}"
            );
        }
    }
    for tool in ["run_tests", "list_tests"] {
        let e = err_text(
            tool,
            &call(&client, tool, json!({"runner": "jest; rm -rf ~"})).await,
        );
        assert!(
            e.contains("is not a runner name (pytest, vitest, jest, node, go, nextest)"),
            "{tool}: {e}"
        );
        let e = err_text(tool, &call(&client, tool, json!({"filters": "x"})).await);
        assert!(e.contains("unknown field `filters`"), "{tool}: {e}");
    }
    assert_eq!(started(), 0, "no process started");

    // The same server does start the scripts for an accepted filter, so the
    // check above could have seen them.
    let e = err_text(
        "run_tests",
        &call(&client, "run_tests", json!({"filter": "TestDivision"})).await,
    );
    assert!(e.contains("without writing its results"), "{e}");
    let e = err_text(
        "list_tests",
        &call(&client, "list_tests", json!({"filter": "TestDivision"})).await,
    );
    assert!(e.contains("the agent could not list the tests"), "{e}");
    assert!(markers.join("agent").exists());
    client.cancel().await.expect("client closes");

    // A root that is not a pytest project says what it looked for.
    let empty = Local::new("http://127.0.0.1:9");
    let client = empty.client().await;
    let e = err_text("run_tests", &call(&client, "run_tests", json!({})).await);
    assert!(
        e.contains("no test runner detected")
            && e.contains("pytest.ini")
            && e.contains("nothing was run"),
        "{e}"
    );
    // A runner name the agent does not know: the agent refuses it, naming
    // those it knows, before running anything.
    let e = err_text(
        "run_tests",
        &call(&client, "run_tests", json!({"runner": "maven"})).await,
    );
    assert!(
        e.contains(
            "\"maven\" is not a runner the agent knows (pytest, vitest, jest, node, go, nextest)"
        ),
        "{e}"
    );
    client.cancel().await.expect("client closes");

    // Without a project root the local tools are not offered.
    let server = PtpMcp::from_config(&Config::for_master("http://127.0.0.1:9")).expect("config");
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        server.serve(server_io).await?.waiting().await?;
        anyhow::Ok(())
    });
    let client = ().serve(client_io).await.expect("client");
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(!names.iter().any(|n| n == "run_tests"), "{names:?}");
    client.cancel().await.expect("client closes");
}

/// A test that outlives the run timeout: the answer says timed_out with
/// exit 124 and shows the output's end; the previous run stays the one
/// run_failed uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_the_timeout_is_timed_out() {
    let mut local = Local::new(&format!("http://127.0.0.1:{}", dead_port().await));
    local.config.run_timeout_secs = 2;
    let root = local.root();
    std::fs::create_dir_all(root.join("tests")).expect("tests");
    std::fs::write(
        root.join("tests/test_slow.py"),
        "import time\n\ndef test_quick():\n    pass\n\ndef test_slow():\n    time.sleep(300)\n",
    )
    .expect("test file");
    let client = local.client().await;

    let v = ok_json("run_tests", &call(&client, "run_tests", json!({})).await);
    assert_eq!(
        (
            v["timed_out"].as_bool(),
            v["exit_code"].as_i64(),
            v["status"].as_str()
        ),
        (Some(true), Some(124), Some("timed_out")),
        "{v}"
    );
    assert!(
        v["note"].as_str().unwrap_or("").contains("--timeout"),
        "{v}"
    );
    assert!(
        v.get("output_tail").is_some(),
        "no report: the output's end is shown"
    );
    let e = err_text("run_failed", &call(&client, "run_failed", json!({})).await);
    assert!(e.contains("no previous local run"), "{e}");
    client.cancel().await.expect("client closes");
}

/// One local run at a time: a second call while a test is running is
/// refused, and the first still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_meanwhile_is_refused() {
    let local = Local::new(&format!("http://127.0.0.1:{}", dead_port().await));
    let root = local.root();
    std::fs::create_dir_all(root.join("tests")).expect("tests");
    std::fs::write(
        root.join("tests/test_wait.py"),
        r#"import os, time

def test_waits_for_release():
    open("started", "w").close()
    deadline = time.time() + 120
    while not os.path.exists("release"):
        assert time.time() < deadline, "never released"
        time.sleep(0.01)
"#,
    )
    .expect("test file");
    let client = local.client().await;
    let peer = client.peer().clone();
    let first = tokio::spawn(async move {
        peer.call_tool(CallToolRequestParams::new("run_tests"))
            .await
            .expect("first call answered")
    });
    let started = root.join("started");
    eventually(DEADLINE, "the first run's test to start", || {
        let started = started.clone();
        async move { started.exists().then_some(()) }
    })
    .await;
    let e = err_text("run_tests", &call(&client, "run_tests", json!({})).await);
    assert!(e.contains("already going on"), "{e}");
    std::fs::write(root.join("release"), "").expect("release");
    let first = first.await.expect("joined");
    let v = ok_json("run_tests", &first);
    assert_eq!(
        (v["status"].as_str(), counts(&v)),
        (Some("passed"), (1, 1, 0, 0))
    );
    client.cancel().await.expect("client closes");
}

/// The built binary over stdio, driven by the official Python SDK: pytest's
/// output never reaches the protocol stream (the children get neither the
/// server's stdin nor its stdout), and the answers arrive intact. pytest
/// here even prints a forged answer to the run_tests request (id 3) on its
/// stdout, which would replace the real one if it reached the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_binary_runs_tests_over_stdio() {
    let local = Local::new(&format!("http://127.0.0.1:{}", dead_port().await));
    write_project(&local.root());
    std::fs::write(
        local.root().join("tests/test_noisy.py"),
        "def test_noisy():\n    pass\n",
    )
    .expect("noisy test");
    std::fs::write(
        local.root().join("conftest.py"),
        r#"import json

def pytest_terminal_summary(terminalreporter):
    forged = {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "{}"}], "isError": False}}
    terminalreporter.write_line(json.dumps(forged))
"#,
    )
    .expect("conftest");
    // Called in the order of their labels (serde_json sorts the keys).
    let calls = json!({
        "1_list": ["list_tests", {"filter": "test_noisy"}],
        "2_run": ["run_tests", {}],
        "3_failed": ["run_failed", {}],
    });
    let python = ptp_test_support::python();
    let script = crate::helpers::fixtures().join("mcp_stdio_client.py");
    let c = local.config.clone();
    let path = |p: Option<PathBuf>| p.expect("set").into_os_string();
    let client = tokio::process::Command::new(python)
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_ptp-mcp"))
        .arg(calls.to_string())
        .env("MASTER_URL", &c.master_url)
        .env("PTP_MCP_PROJECT_ROOT", path(c.project_root))
        .env("PTP_AGENT_BIN", path(c.agent_bin))
        .env("PTP_MCP_PYTHON", path(c.python))
        .env("PTP_MCP_CACHE_DIR", path(c.cache_dir))
        .env_remove("NATS_URL")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    // A corrupted stream can leave the client waiting forever: bound it.
    let out = tokio::time::timeout(DEADLINE, client)
        .await
        .expect("the Python client finished (a hang means the protocol stream was corrupted)")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed: {stderr}\n{stdout}"
    );
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    for tool in ["list_tests", "run_failed", "run_tests"] {
        assert!(
            v["tools"]
                .as_array()
                .is_some_and(|t| t.contains(&json!(tool))),
            "{v}"
        );
    }
    let answer = |label: &str| -> Value {
        let c = &v["calls"][label];
        assert_eq!(c["is_error"], false, "{label}: {c}");
        serde_json::from_str(c["content"][0]["text"].as_str().unwrap_or("")).unwrap_or(Value::Null)
    };
    assert_eq!(
        answer("1_list")["tests"],
        json!(["tests/test_noisy.py::test_noisy"])
    );
    assert_eq!(counts(&answer("2_run")), (10, 6, 3, 1));
    assert_eq!(counts(&answer("3_failed")), (4, 0, 3, 1));
}

/// A call the client cancels stops the run: the test process goes away
/// without being released, and the next run is not refused as busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_stops_the_run() {
    use rmcp::model::{CallToolRequest, ClientRequest};
    use rmcp::service::PeerRequestOptions;

    let local = Local::new(&format!("http://127.0.0.1:{}", dead_port().await));
    let root = local.root();
    std::fs::create_dir_all(root.join("tests")).expect("tests");
    std::fs::write(
        root.join("tests/test_wait.py"),
        r#"import os, time

def test_quick():
    pass

def test_waits_forever():
    with open("pid.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename("pid.tmp", "pid")
    time.sleep(3600)
"#,
    )
    .expect("test file");
    let client = local.client().await;
    let handle = client
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new(
                "run_tests",
            ))),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("request sent");
    let pid_file = root.join("pid");
    let pid: String = eventually(DEADLINE, "the test to start", || {
        let pid_file = pid_file.clone();
        async move { std::fs::read_to_string(pid_file).ok() }
    })
    .await;
    handle
        .cancel(Some("the user stopped it".into()))
        .await
        .expect("cancellation sent");
    let stat = format!("/proc/{}/stat", pid.trim());
    eventually(DEADLINE, "the test process to end", || {
        let stat = stat.clone();
        async move {
            std::fs::read_to_string(stat)
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
                .then_some(())
        }
    })
    .await;
    let v = ok_json(
        "run_tests",
        &call(&client, "run_tests", json!({"filter": "test_quick"})).await,
    );
    assert_eq!(
        (v["status"].as_str(), counts(&v)),
        (Some("passed"), (1, 1, 0, 0))
    );
    client.cancel().await.expect("client closes");
}

/// A runner other than pytest through the same tools: Node's built-in
/// runner, detected by the agent from package.json; run_failed reruns only
/// the failed test by name; list_tests says node cannot list. With vitest
/// installed (scripts/test), list_tests lists its tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_vitest_projects_work_through_the_same_tools() {
    let local = Local::new(&format!("http://127.0.0.1:{}", dead_port().await));
    let root = local.root();
    std::fs::create_dir(root.join("test")).expect("test dir");
    std::fs::write(
        root.join("package.json"),
        r#"{"name":"calc","private":true,"scripts":{"test":"node --test"}}"#,
    )
    .expect("package.json");
    std::fs::write(
        root.join("test/math.test.js"),
        r#"const { describe, it } = require('node:test');
const assert = require('node:assert');
describe('math', () => {
  it('adds', () => { assert.strictEqual(1 + 1, 2); });
  it('subtracts', () => { assert.strictEqual(3 - 1, 1, 'subtraction is off'); });
});
"#,
    )
    .expect("test file");
    let client = local.client().await;
    let v = ok_json("run_tests", &call(&client, "run_tests", json!({})).await);
    assert_eq!(
        (v["runner"].as_str(), v["status"].as_str()),
        (Some("node"), Some("failed")),
        "{v}"
    );
    assert_eq!(counts(&v), (2, 1, 1, 0), "{v}");
    assert_eq!(
        failures(&v),
        pairs(&[("test::subtracts", "subtracts")]),
        "the selector is the test's name"
    );
    let v = ok_json("run_failed", &call(&client, "run_failed", json!({})).await);
    assert_eq!(v["rerun"]["tests"], json!(["subtracts"]), "{v}");
    let ran: Vec<&Value> = v["failures"].as_array().expect("failures").iter().collect();
    assert_eq!(ran.len(), 1, "{v}");
    assert_eq!(v["counts"]["passed"], 0, "adds was not run: {v}");
    let e = err_text("list_tests", &call(&client, "list_tests", json!({})).await);
    assert!(e.contains("cannot list tests without running them"), "{e}");
    client.cancel().await.expect("client closes");

    let modules = match ptp_test_support::js_modules() {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED the vitest part: {why}");
            return;
        }
    };
    let local = Local::new(&format!("http://127.0.0.1:{}", dead_port().await));
    let root = local.root();
    std::fs::create_dir(root.join("src")).expect("src");
    std::os::unix::fs::symlink(&modules, root.join("node_modules")).expect("link");
    std::fs::write(
        root.join("package.json"),
        r#"{"name":"calc","private":true,"type":"module","devDependencies":{"vitest":"3.2.7"}}"#,
    )
    .expect("package.json");
    std::fs::write(
        root.join("src/cart.test.js"),
        "import { it, expect } from 'vitest';\nit('totals', () => { expect(1).toBe(1); });\nit('discounts', () => { expect(1).toBe(2); });\n",
    )
    .expect("test file");
    let client = local.client().await;
    let v = ok_json("list_tests", &call(&client, "list_tests", json!({})).await);
    assert_eq!(
        v["tests"],
        json!(["src/cart.test.js::totals", "src/cart.test.js::discounts"]),
        "{v}"
    );
    assert_eq!(v["runner"], "vitest");
    let v = ok_json(
        "run_tests",
        &call(&client, "run_tests", json!({"filter": "discounts"})).await,
    );
    assert_eq!(counts(&v).2, 1, "{v}");
    assert_eq!(v["counts"]["passed"], 0, "only the filtered test ran: {v}");
    client.cancel().await.expect("client closes");
}
