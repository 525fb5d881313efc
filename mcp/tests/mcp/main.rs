//! `ptp-mcp` against the real master (nats-server child, SQLite in a temp
//! dir, `ptp_api::run` on port 0), filled through `POST /results`.
//!
//! Clients: rmcp over an in-process duplex pipe, rmcp's streamable HTTP
//! client against `serve_http`, and the official Python MCP SDK driving the
//! built binary over stdio. No mocks, no sleeps: readiness is polled.
//! `local` runs a real pytest project through the built ptp-agent;
//! `hostile` is what a hostile client tries: paths outside the report dir,
//! malformed JSON-RPC, oversized arguments; `page` opens the report page
//! of `--http` in headless Chromium.

mod helpers;
mod hostile;
mod local;
mod owners;
mod page;

use std::process::Command;

use chrono::Utc;
use helpers::*;
use rmcp::ServiceExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOOLS: [&str; 12] = [
    "compare_runs",
    "get_failure_clusters",
    "get_failure_stats",
    "get_failures",
    "get_flaky_tests",
    "get_quarantine",
    "get_report",
    "get_slow_tests",
    "get_summary",
    "get_test_history",
    "get_trend",
    "get_workers",
];

/// Every tool answers what was posted: counts, order, failure ids, workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_answer_from_the_master() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    app.worker_running("ci-live", "shop", "live-1").await;
    let client = mcp_client(&app.base, 30).await;

    let tools = client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for t in &tools {
        let d = t.description.as_deref().unwrap_or_default();
        assert!(
            d.contains("Use it") && d.contains("Prefer"),
            "{}: {d}",
            t.name
        );
    }

    // get_summary: newest first, counts as posted.
    let s = ok_json(
        "get_summary",
        &call(&client, "get_summary", json!({"project": "shop"})).await,
    );
    let ids: Vec<&str> = s["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run_id"].as_str().unwrap_or(""))
        .collect();
    let mut newest_first = seed.oldest_first.clone();
    newest_first.reverse();
    assert_eq!(ids, newest_first);
    let r2 = &s["runs"][1];
    assert_eq!(
        (
            r2["status"].as_str(),
            r2["total"].as_u64(),
            r2["passed"].as_u64(),
            r2["failed"].as_u64(),
            r2["error"].as_u64()
        ),
        (Some("failed"), Some(10), Some(8), Some(1), Some(1))
    );
    assert_eq!(r2["pass_rate"], json!(80.0));
    assert_eq!(s["by_status"], json!({"failed": 2, "passed": 2}));
    let s = ok_json(
        "get_summary",
        &call(
            &client,
            "get_summary",
            json!({"worker_id": "ci-a", "limit": 1}),
        )
        .await,
    );
    assert_eq!(s["runs"][0]["run_id"], "seed-3");
    assert_eq!(s["shown"], 1);

    // get_trend: oldest first, pass rates 100, 100, 80, 90.
    let t = ok_json(
        "get_trend",
        &call(&client, "get_trend", json!({"project": "shop"})).await,
    );
    let ids: Vec<&str> = t["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["run_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, seed.oldest_first);
    let rates: Vec<f64> = t["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter_map(|p| p["pass_rate"].as_f64())
        .collect();
    assert_eq!(rates, [100.0, 100.0, 80.0, 90.0]);
    assert_eq!(t["pass_rate"]["change"], json!(-10.0));
    assert_eq!(t["pass_rate"]["min"], json!(80.0));
    let t = ok_json(
        "get_trend",
        &call(
            &client,
            "get_trend",
            json!({"project": "shop", "branch": "main", "limit": 2}),
        )
        .await,
    );
    assert_eq!(t["runs"], 2);
    assert_eq!(t["points"][1]["run_id"], "seed-3");

    // get_failures: the latest run by default, or a given run; no passing tests.
    let f = ok_json(
        "get_failures",
        &call(&client, "get_failures", json!({"project": "shop"})).await,
    );
    assert_eq!(f["run"]["run_id"], "seed-3");
    assert_eq!(f["failures_total"], 1);
    assert_eq!(
        f["failures"][0]["test_id"],
        "tests/test_checkout.py::test_checkout"
    );
    assert_eq!(
        f["failures"][0]["message"],
        "AssertionError: expected 200, got 502"
    );
    let tb = f["failures"][0]["traceback"].as_str().expect("traceback");
    assert!(tb.starts_with("tests/test_checkout.py:42"), "{tb}");
    assert!(
        tb.contains("… [trimmed "),
        "long tracebacks are trimmed with a marker"
    );
    assert!(
        tb.ends_with("E   AssertionError: expected 200, got 500"),
        "the end is kept: {tb}"
    );
    let f = ok_json(
        "get_failures",
        &call(
            &client,
            "get_failures",
            json!({"run_id": "seed-2", "traceback_chars": 0}),
        )
        .await,
    );
    let mut failing: Vec<(&str, &str)> = f["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|c| {
            (
                c["test_id"].as_str().unwrap_or(""),
                c["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    failing.sort();
    assert_eq!(
        failing,
        [
            ("tests/test_checkout.py::test_checkout", "failed"),
            ("tests/test_db.py::test_migrations", "error")
        ]
    );
    assert!(
        f["failures"][0].get("traceback").is_none(),
        "traceback_chars 0 leaves them out"
    );
    assert!(
        !f.to_string().contains("test_item_"),
        "passing tests are never listed"
    );
    let f = ok_json(
        "get_failures",
        &call(&client, "get_failures", json!({"run_id": "seed-1"})).await,
    );
    assert_eq!(f["failures"], json!([]));
    assert!(
        f["hint"].as_str().unwrap_or("").contains("no failed"),
        "{f}"
    );

    // get_workers: running (heartbeat), idle (ran 3 h ago), offline (3 days).
    let w = ok_json(
        "get_workers",
        &call(&client, "get_workers", json!({})).await,
    );
    let status = |id: &str| {
        w["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .find(|x| x["worker_id"] == id)
            .map(|x| x["status"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(status("ci-live").as_deref(), Some("running"));
    assert_eq!(status("ci-a").as_deref(), Some("idle"));
    assert_eq!(status("ci-b").as_deref(), Some("idle"));
    assert_eq!(status("ci-old").as_deref(), Some("offline"));
    assert_eq!(
        w["by_status"],
        json!({"idle": 2, "offline": 1, "running": 1})
    );
    let live = w["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|x| x["worker_id"] == "ci-live")
        .cloned()
        .unwrap_or_default();
    assert_eq!(live["current_run"], "live-1");
    let a = w["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|x| x["worker_id"] == "ci-a")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (a["run_count"].as_u64(), a["last_run_id"].as_str()),
        (Some(2), Some("seed-3"))
    );
    let w = ok_json(
        "get_workers",
        &call(&client, "get_workers", json!({"status": "offline"})).await,
    );
    assert_eq!(w["workers"].as_array().map(Vec::len), Some(1));

    // compare_runs: seed-2 -> seed-3, worked out from the seed by hand.
    let c = ok_json(
        "compare_runs",
        &call(
            &client,
            "compare_runs",
            json!({"base_run_id": "seed-2", "head_run_id": "seed-3"}),
        )
        .await,
    );
    let listed = |list: &str| -> Vec<String> {
        c["changes"][list]["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["test_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        (c["base"]["run_id"].as_str(), c["head"]["run_id"].as_str()),
        (Some("seed-2"), Some("seed-3"))
    );
    assert_eq!(
        listed("still_failing"),
        ["tests/test_checkout.py::test_checkout"]
    );
    assert!(
        c["changes"]["still_failing"]["items"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("502"),
        "the head's message: {c}"
    );
    assert_eq!(listed("new_failures"), Vec::<String>::new());
    assert_eq!(listed("fixed"), Vec::<String>::new());
    assert_eq!(
        listed("removed_tests"),
        ["tests/test_db.py::test_migrations"]
    );
    assert_eq!(listed("new_tests"), ["tests/test_cart.py::test_item_8"]);
    let by_branch = err_text(
        "compare_runs",
        &call(&client, "compare_runs", json!({"base_run_id": "seed-1"})).await,
    );
    assert!(by_branch.contains("name the head run"), "{by_branch}");

    // The analytics tools answer what the master's API answers, compacted.
    // The seed by hand: test_checkout failed in seed-2 and seed-3 with
    // "expected 200, got 500/502" (one cluster), test_migrations errored
    // once (another); nothing flipped, so nothing is flaky.
    let cl = ok_json(
        "get_failure_clusters",
        &call(&client, "get_failure_clusters", json!({"project": "shop"})).await,
    );
    let (_, api) = app
        .get_json("/failures/clusters?project=shop&runs=50&limit=20")
        .await;
    assert_eq!(cl["total"], 2, "{cl}");
    assert_eq!(cl["failures"], 3);
    assert_eq!(cl["clusters"][0]["exception"], "AssertionError");
    assert_eq!(cl["clusters"][0]["message"], "expected <n>, got <n>");
    assert_eq!(cl["clusters"][0]["count"], 2);
    assert_eq!(
        cl["clusters"][0]["tests"],
        json!(["tests/test_checkout.py::test_checkout"])
    );
    assert_eq!(cl["clusters"][1]["exception"], "ConnectionError");
    for i in 0..2 {
        assert_eq!(cl["clusters"][i]["id"], api["clusters"][i]["id"]);
        assert_eq!(cl["clusters"][i]["count"], api["clusters"][i]["count"]);
    }
    let fl = ok_json(
        "get_flaky_tests",
        &call(
            &client,
            "get_flaky_tests",
            json!({"project": "shop", "runs": 10}),
        )
        .await,
    );
    assert_eq!(
        (fl["total"].as_u64(), fl["runs_considered"].as_u64()),
        (Some(0), Some(4)),
        "{fl}"
    );
    let h = ok_json(
        "get_test_history",
        &call(
            &client,
            "get_test_history",
            json!({"test_id": "tests/test_checkout.py::test_checkout", "project": "shop"}),
        )
        .await,
    );
    let runs: Vec<&str> = h["entries"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["run_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(runs, ["seed-3", "seed-2"], "{h}");
    assert_eq!(h["outcomes"], json!({"failed": 2}));
    assert!(
        h["entries"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("got 502"),
        "{h}"
    );
    let missing = err_text(
        "get_test_history",
        &call(
            &client,
            "get_test_history",
            json!({"test_id": "tests/nope.py::test_x"}),
        )
        .await,
    );
    assert!(
        missing.contains("no run has test 'tests/nope.py::test_x'"),
        "{missing}"
    );
    let sl = ok_json(
        "get_slow_tests",
        &call(
            &client,
            "get_slow_tests",
            json!({"project": "shop", "limit": 2}),
        )
        .await,
    );
    assert_eq!(
        sl["slowest"][0]["test_id"],
        "tests/test_checkout.py::test_checkout"
    );
    assert_eq!(sl["slowest"][0]["median_secs"], 2.5);
    assert_eq!(sl["slowest"].as_array().map(Vec::len), Some(2));
    assert_eq!(sl["regressions_total"], 0);
    let bad = err_text(
        "get_slow_tests",
        &call(&client, "get_slow_tests", json!({"runs": 5, "recent": 5})).await,
    );
    assert!(bad.contains("recent must be between 1 and 4"), "{bad}");

    // get_failure_stats: test_checkout failed twice, test_migrations once.
    let st = ok_json(
        "get_failure_stats",
        &call(
            &client,
            "get_failure_stats",
            json!({"project": "shop", "days": 30}),
        )
        .await,
    );
    assert_eq!(st["window"], "last 30 days");
    assert_eq!(
        st["tests"][0]["test_id"],
        "tests/test_checkout.py::test_checkout"
    );
    assert_eq!(st["tests"][0]["fail_count"], 2);
    assert_eq!(st["tests"][0]["last_run_id"], "seed-3");
    assert_eq!(
        st["tests"][1]["test_id"],
        "tests/test_db.py::test_migrations"
    );
    assert_eq!(st["tests"][1]["fail_count"], 1);

    // get_report: summary text + embedded HTML; output_path writes a file.
    let r = call(
        &client,
        "get_report",
        json!({"project": "shop", "runs": 10}),
    )
    .await;
    let (uri, mime, html) = html_of(&r);
    assert_eq!(
        (uri.as_str(), mime.as_deref()),
        ("report://shop", Some("text/html"))
    );
    assert!(
        text(&r).contains("latest run seed-3 failed"),
        "{}",
        text(&r)
    );
    for part in [
        "<svg",
        "seed-3",
        "tests/test_checkout.py::test_checkout",
        "<details>",
        "ci-old",
        "Slowest tests",
        "Flaky tests",
        "Failure clusters",
        "at tests/test_checkout.py",
        // The sections cover the report's runs (`runs`: 10; 4 are stored).
        "No flaky tests in the last 4 runs",
        "In the last 4 runs: failures with the same exception",
        "@media print",
    ] {
        assert!(html.contains(part), "report lacks {part:?}");
    }
    for external in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(
            !html.contains(external),
            "report is not self-contained: {external:?}"
        );
    }
    client.cancel().await.expect("client closes");
    app.stop().await;
}

/// Failures are tool errors with a sentence to act on, and the session
/// survives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_tool_errors_that_say_what_to_do() {
    let app = TestApp::spawn().await;
    app.seed().await;
    let client = mcp_client(&app.base, 30).await;

    let e = err_text(
        "get_failures",
        &call(&client, "get_failures", json!({"run_id": "no-such-run"})).await,
    );
    assert!(
        e.contains("no-such-run") && e.contains("not found") && e.contains("get_summary"),
        "{e}"
    );

    for bad in [0, 10_000, -1] {
        let e = err_text(
            "get_summary",
            &call(&client, "get_summary", json!({"limit": bad})).await,
        );
        assert!(
            e.contains(&format!("limit must be between 1 and 100, got {bad}")),
            "{e}"
        );
    }
    let e = err_text(
        "get_trend",
        &call(&client, "get_trend", json!({"limit": 5000})).await,
    );
    assert!(e.contains("limit must be between 1 and 1000"), "{e}");
    let e = err_text(
        "get_summary",
        &call(&client, "get_summary", json!({"status": "broken"})).await,
    );
    assert!(
        e.contains("status \"broken\" is not one of passed, failed"),
        "{e}"
    );
    let e = err_text(
        "get_summary",
        &call(&client, "get_summary", json!({"limit": "ten"})).await,
    );
    assert!(
        e.contains("invalid arguments for get_summary") && e.contains("invalid type"),
        "{e}"
    );
    let e = err_text(
        "get_summary",
        &call(&client, "get_summary", json!({"projet": "shop"})).await,
    );
    assert!(e.contains("unknown field `projet`"), "{e}");
    let e = err_text(
        "get_failures",
        &call(&client, "get_failures", json!({"run_id": "../workers"})).await,
    );
    assert!(e.contains("is not a run id"), "{e}");
    // The master's 400 detail is passed through.
    let e = err_text(
        "get_trend",
        &call(&client, "get_trend", json!({"branch": "main"})).await,
    );
    assert!(
        e.contains("the master refused the request") && e.contains("branch needs project"),
        "{e}"
    );
    let e = err_text(
        "get_failures",
        &call(&client, "get_failures", json!({"project": "nope"})).await,
    );
    assert!(
        e.contains("no runs match") && e.contains("project=\"nope\""),
        "{e}"
    );
    // No --report-dir: no file is written, whatever the path.
    for path in ["report.html", "/no-such-dir-ptp/r.html"] {
        let e = err_text(
            "get_report",
            &call(&client, "get_report", json!({"output_path": path})).await,
        );
        assert!(
            e.contains("output_path: this server writes no files") && e.contains("--report-dir"),
            "{e}"
        );
    }

    // Still serving after all that.
    ok_json(
        "get_workers",
        &call(&client, "get_workers", json!({})).await,
    );
    client.cancel().await.expect("client closes");
    app.stop().await;
}

/// A master that is not there: every tool says which URL and what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_master_is_a_tool_error_naming_the_url() {
    let url = format!("http://127.0.0.1:{}", dead_port().await);
    let client = mcp_client(&url, 5).await;
    for tool in TOOLS {
        let args = match tool {
            "compare_runs" => json!({"base_run_id": "a", "head_run_id": "b"}),
            "get_test_history" => json!({"test_id": "t::x"}),
            "get_quarantine" => json!({"project": "shop"}),
            _ => json!({}),
        };
        let e = err_text(tool, &call(&client, tool, args).await);
        assert!(e.contains(&url), "{tool}: {e}");
        assert!(
            e.contains("ptp-master is running") && e.contains("MASTER_URL"),
            "{tool}: {e}"
        );
    }
    assert_eq!(
        client.list_all_tools().await.expect("still serving").len(),
        TOOLS.len()
    );
    client.cancel().await.expect("client closes");
}

/// The built binary over stdio, driven by the official Python SDK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_binary_answers_the_python_sdk_over_stdio() {
    let python = ptp_test_support::python();
    let has_sdk = Command::new(&python)
        .args(["-c", "import mcp.client.stdio"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_sdk,
        "{} cannot import the MCP Python SDK: run `{} -m pip install 'mcp>=1.10,<2'` \
         (listed in scripts/requirements-test.txt)",
        python.display(),
        python.display()
    );
    let app = TestApp::spawn().await;
    app.seed().await;
    let calls = json!({
        "get_summary": {"project": "shop"},
        "get_trend": {"project": "shop"},
        "get_failures": {"run_id": "seed-2"},
        "get_workers": {},
        "get_failure_stats": {"limit": 5},
        "get_report": {"project": "shop"},
        "compare_runs": {"base_run_id": "seed-2", "head_run_id": "seed-3"},
        "bad_limit": ["get_summary", {"limit": 0}],
    });
    let script = fixtures().join("mcp_stdio_client.py");
    let base = app.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_ptp-mcp"))
            .arg(calls.to_string())
            .env("MASTER_URL", base)
            .env("PTP_MCP_TIMEOUT_SECS", "30")
            .env("RUST_LOG", "warn")
            .output()
            .expect("python runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed: {stderr}\n{stdout}"
    );
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));

    assert_eq!(v["server"], "ptp-mcp");
    assert_eq!(v["tools"], json!(TOOLS));
    let answer = |tool: &str| -> Value {
        let c = &v["calls"][tool];
        assert_eq!(c["is_error"], false, "{tool}: {c}");
        serde_json::from_str(c["content"][0]["text"].as_str().unwrap_or("")).unwrap_or(Value::Null)
    };
    assert_eq!(answer("get_summary")["runs"][0]["run_id"], "seed-3");
    assert_eq!(answer("get_trend")["points"][0]["run_id"], "seed-old");
    assert_eq!(answer("get_failures")["failures_total"], 2);
    assert_eq!(answer("get_workers")["total"], 3);
    assert_eq!(answer("get_failure_stats")["tests"][0]["fail_count"], 2);
    let cmp = answer("compare_runs");
    assert_eq!(
        cmp["changes"]["still_failing"]["items"][0]["test_id"],
        "tests/test_checkout.py::test_checkout"
    );
    let report = &v["calls"]["get_report"];
    assert_eq!(report["is_error"], false, "{report}");
    assert_eq!(report["content"][1]["type"], "resource");
    assert_eq!(report["content"][1]["uri"], "report://shop");
    assert_eq!(report["content"][1]["mimeType"], "text/html");
    assert!(report["content"][1]["text_len"].as_u64().unwrap_or(0) > 1000);
    let bad = &v["calls"]["bad_limit"];
    assert_eq!(bad["is_error"], true, "{bad}");
    assert!(
        bad["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("limit must be between 1 and 100"),
        "{bad}"
    );
    app.stop().await;
}

/// Streamable HTTP through `serve_http`, with rmcp's HTTP client and a
/// bearer token; a missing or wrong token is refused (401), and so is a
/// foreign Host header even with a good token (DNS rebinding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_serves_the_tools() {
    use rmcp::transport::StreamableHttpClientTransport;

    let app = TestApp::spawn().await;
    app.seed().await;
    let server =
        ptp_mcp::PtpMcp::from_config(&ptp_mcp::Config::for_master(&app.base)).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let hosts = ptp_mcp::Config::for_master(&app.base).allowed_hosts();
    let access = ptp_mcp::HttpAccess::new(hosts, &["old-token".into(), "team-token".into()]);
    let serving = tokio::spawn(ptp_mcp::serve_http(
        server,
        listener,
        access,
        shutdown.clone(),
    ));

    let client = ()
        .serve(StreamableHttpClientTransport::from_config(
            rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
                format!("http://{addr}/mcp"),
            )
            .auth_header("team-token"),
        ))
        .await
        .expect("MCP over HTTP initialises with the token");
    assert_eq!(
        client
            .peer_info()
            .and_then(|i| i.server_info.as_ref().map(|s| s.name.clone()))
            .as_deref(),
        Some("ptp-mcp")
    );
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, TOOLS);
    let s = ok_json(
        "get_summary",
        &call(&client, "get_summary", json!({"limit": 2})).await,
    );
    assert_eq!(s["runs"][0]["run_id"], "seed-3");
    assert_eq!(s["shown"], 2);

    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}});
    for token in [None, Some("wrong-token")] {
        let mut req = reqwest::Client::new()
            .post(format!("http://{addr}/mcp"))
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("request sent");
        assert_eq!(r.status().as_u16(), 401, "token {token:?}");
        let text = r.text().await.unwrap_or_default();
        assert!(text.contains("PTP_MCP_HTTP_TOKENS"), "{text}");
    }

    let refused = reqwest::Client::new()
        .post(format!("http://{addr}/mcp"))
        .bearer_auth("old-token")
        .header("Host", "evil.example.com")
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}))
        .send()
        .await
        .expect("request sent");
    assert!(
        refused.status().is_client_error(),
        "foreign Host answered {}",
        refused.status()
    );

    client.cancel().await.expect("client closes");
    shutdown.cancel();
    serving
        .await
        .expect("joined")
        .expect("HTTP server stopped cleanly");
    app.stop().await;
}

const HOSTILE: [&str; 5] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "</textarea>",
    "javascript:alert(1)",
    "{{7*7}}",
];

/// Test data holding markup shows as text in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_escapes_hostile_test_data() {
    let app = TestApp::spawn().await;
    let project = format!("evil{}", HOSTILE[0]);
    let all = HOSTILE.join(" ");
    let cases = vec![
        case(
            &format!("tests/t.py::test_a[{}]", HOSTILE[0]),
            "failed",
            1.0,
            Some(&all),
            Some(&all),
        ),
        case(
            &format!("tests/t.py::test_b[{}]", HOSTILE[1]),
            "error",
            2.0,
            Some(HOSTILE[1]),
            Some(HOSTILE[2]),
        ),
        case(
            &format!("tests/t.py::test_c[{}]", HOSTILE[3]),
            "failed",
            3.0,
            Some(HOSTILE[3]),
            None,
        ),
        case(
            &format!("tests/t.py::test_d[{}]", HOSTILE[4]),
            "passed",
            4.0,
            None,
            None,
        ),
    ];
    let mut payload = run_payload(
        "evil-1",
        &project,
        HOSTILE[2],
        HOSTILE[1],
        Utc::now(),
        cases,
    );
    payload["run"]["note"] = json!(HOSTILE[0]);
    app.post_run(&payload).await;
    let client = mcp_client(&app.base, 30).await;

    let r = call(&client, "get_report", json!({"project": project})).await;
    let (uri, _, html) = html_of(&r);
    assert!(uri.starts_with("report://evil%3Cscript%3E"), "{uri}");
    for raw in ["<script", "<img", "</textarea>", "href=\"javascript"] {
        assert!(
            !html.to_lowercase().contains(raw),
            "report contains {raw:?} unescaped"
        );
    }
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "escaped script tag shown as text"
    );
    assert!(
        html.contains("&#60;img src=x onerror=alert(1)&#62;"),
        "escaped img tag shown as text"
    );
    assert!(html.contains("&#60;/textarea&#62;"));
    assert!(
        html.contains("javascript:alert(1)"),
        "javascript: URL shown as text"
    );
    assert!(
        html.contains("{{7*7}}") && !html.contains(">49<"),
        "template syntax in data is not evaluated"
    );
    assert!(!html.contains("href="), "no data-driven links at all");
    // The trend chart with a single run still renders.
    assert!(
        html.contains("<circle") || html.contains("<rect"),
        "one run, one point"
    );
    client.cancel().await.expect("client closes");
    app.stop().await;
}

/// A 60,000-case run renders a bounded report with an "and N more" line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_of_a_60k_case_run_stays_small() {
    let app = TestApp::spawn().await;
    let tb = format!(
        "Traceback (most recent call last):\n{}AssertionError",
        "  File \"x.py\", line 1\n".repeat(40)
    );
    let cases: Vec<Value> = (0..60_000)
        .map(|i| {
            let id = format!(
                "tests/pkg_{}/test_mod_{}.py::TestClass::test_case_{i}[param-{i}]",
                i % 50,
                i % 400
            );
            if i % 100 == 7 {
                case(
                    &id,
                    "failed",
                    0.5 + (i % 13) as f64,
                    Some(&format!("assert {i} == {}", i + 1)),
                    Some(&tb),
                )
            } else {
                case(&id, "passed", (i % 997) as f64 / 1000.0, None, None)
            }
        })
        .collect();
    let payload = run_payload("big-60k", "big", "main", "ci-big", Utc::now(), cases);
    app.post_run_within(&payload, BIG_DEADLINE).await;
    let client = mcp_client(&app.base, 120).await;

    let r = call(&client, "get_report", json!({"project": "big"})).await;
    let (_, _, html) = html_of(&r);
    eprintln!("60k-case report: {} bytes", html.len());
    assert!(
        html.len() < 5 * 1024 * 1024,
        "report is {} bytes",
        html.len()
    );
    assert!(
        html.contains("and 550 more failures"),
        "600 failures, 50 shown"
    );
    assert!(text(&r).contains("60000 tests"), "{}", text(&r));
    assert!(html.contains("test_case_"), "slowest tests listed");
    let f = ok_json(
        "get_failures",
        &call(
            &client,
            "get_failures",
            json!({"project": "big", "limit": 5}),
        )
        .await,
    );
    assert_eq!(
        (
            f["failures_total"].as_u64(),
            f["shown"].as_u64(),
            f["more"].as_u64()
        ),
        (Some(600), Some(5), Some(595))
    );
    client.cancel().await.expect("client closes");
    app.stop().await;
}

/// Runs sent in the original system's payload carry their failures only:
/// the report says the flaky section cannot be judged from them (it said
/// "No flaky tests in the last 0 runs") and clusters their failures (it
/// said "No failures in the last 0 runs" beside a failed run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_of_failures_only_runs_says_what_the_window_holds() {
    let app = TestApp::spawn().await;
    let url = format!("{}/results", app.base);
    for i in 0..3i64 {
        // As the original worker sends it: local time without an offset.
        let at = (Utc::now() - chrono::Duration::minutes(10 - i)).format("%Y-%m-%dT%H:%M:%S");
        let body = json!({"run_id": format!("legacy-{i}"), "worker_id": "old-worker",
            "project": "legacy", "timestamp": at.to_string(),
            "passed": 8, "failed": 2, "total": 10,
            "failures": [{"nodeid": "t.py::test_a", "message": "assert 1 == 2"},
                         {"nodeid": "t.py::test_b", "message": "timeout after 30 s"}]});
        ptp_test_support::eventually(DEADLINE, "POST /results to answer 202", || async {
            let r = app.http.post(&url).json(&body).send().await.ok()?;
            (r.status().as_u16() == 202).then_some(())
        })
        .await;
    }
    ptp_test_support::eventually(DEADLINE, "the three runs listed", || async {
        let (_, runs) = app.get_json("/results?project=legacy").await;
        (runs.as_array()?.len() == 3).then_some(())
    })
    .await;
    let client = mcp_client(&app.base, 30).await;
    let r = call(&client, "get_report", json!({"project": "legacy"})).await;
    let (_, _, html) = html_of(&r);
    for part in [
        "Flaky tests cannot be told from these runs: the last 3 carried their failures only",
        "In the last 3 runs: failures with the same exception",
    ] {
        assert!(html.contains(part), "report lacks {part:?}");
    }
    assert!(!html.contains("last 0 runs"), "the window is not empty");
    client.cancel().await.expect("client closes");
    app.stop().await;
}

/// `get_quarantine` reads `GET /quarantine`: what the API quarantined,
/// bounded by `limit` with the total given; a blank project is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_quarantine_lists_what_the_api_quarantined() {
    let app = TestApp::spawn().await;
    for (id, reason) in [("t::a", "flaky on CI"), ("t::b", "waits on the cache fix")] {
        let r = app
            .http
            .post(format!("{}/quarantine", app.base))
            .json(&json!({"project": "shop", "test_id": id, "reason": reason}))
            .send()
            .await
            .expect("POST /quarantine");
        assert_eq!(r.status().as_u16(), 200);
    }
    let client = mcp_client(&app.base, 30).await;
    let q = ok_json(
        "get_quarantine",
        &call(&client, "get_quarantine", json!({"project": "shop"})).await,
    );
    assert_eq!(q["total"], 2, "{q}");
    assert_eq!(q["tests"][0]["test_id"], "t::a");
    assert_eq!(q["tests"][0]["reason"], "flaky on CI");
    assert_eq!(q["tests"][0]["auto"], false);
    assert_eq!(q["mirror_error"], Value::Null);
    let one = ok_json(
        "get_quarantine",
        &call(
            &client,
            "get_quarantine",
            json!({"project": "shop", "limit": 1}),
        )
        .await,
    );
    assert_eq!(
        (one["total"].as_u64(), one["tests"].as_array().map(Vec::len)),
        (Some(2), Some(1)),
        "{one}"
    );
    let none = ok_json(
        "get_quarantine",
        &call(&client, "get_quarantine", json!({"project": "other"})).await,
    );
    assert_eq!(none["total"], 0, "{none}");
    let blank = err_text(
        "get_quarantine",
        &call(&client, "get_quarantine", json!({"project": " "})).await,
    );
    assert!(blank.contains("project is required"), "{blank}");
    let bad = err_text(
        "get_quarantine",
        &call(
            &client,
            "get_quarantine",
            json!({"project": "shop", "limit": 0}),
        )
        .await,
    );
    assert!(bad.contains("limit must be between 1 and 100"), "{bad}");
}
