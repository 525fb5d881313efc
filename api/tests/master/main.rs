//! End-to-end tests of the master on real parts: a nats-server child, the
//! master's own `run` on port 0 with a temp SQLite file, the built
//! `ptp-agent` wrapping a real pytest.

mod agent_flaky;
mod agent_http;
mod bad_input;
mod cache;
mod cluster;
mod faults;
mod formats;
mod helpers;
mod hostile;
mod insights;
mod limits;
mod masters;
mod metrics;
mod owners;
mod quarantine;
mod retention;
mod scale_out;
mod security;
mod webhooks;

use std::collections::BTreeMap;

use helpers::*;
use serde_json::{Value, json};

fn count(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_pytest_run_matches_the_junit_file_case_by_case() {
    let app = TestApp::spawn().await;
    let project = pytest_project();
    let junit = project.path().join("report.xml");
    let out = run_pytest_agent(&app, project.path(), &junit);
    assert_eq!(
        out.status.code(),
        Some(1),
        "pytest's exit code (tests failed) passes through; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_id = run_id_from(&out);
    let run = app.wait_run(&run_id).await;

    let expected = oracle_cases(&junit);
    let mut expected_counts: BTreeMap<String, u64> = BTreeMap::new();
    for (_, o) in &expected {
        *expected_counts.entry(o.clone()).or_default() += 1;
    }
    assert_eq!(count(&run, "total"), expected.len() as u64);
    for outcome in ["passed", "failed", "error", "skipped", "xfailed"] {
        assert_eq!(
            count(&run, outcome),
            expected_counts.get(outcome).copied().unwrap_or(0),
            "count of {outcome}"
        );
    }
    // The suite is built to hold every class; make sure the oracle saw them.
    for outcome in ["passed", "failed", "error", "skipped", "xfailed"] {
        assert!(
            expected_counts.contains_key(outcome),
            "fixture suite lacks {outcome}: {expected_counts:?}"
        );
    }
    let mut got: Vec<(String, String)> = run["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            (
                c["test_id"].as_str().expect("id").to_string(),
                c["outcome"].as_str().expect("outcome").to_string(),
            )
        })
        .collect();
    let mut want = expected.clone();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "stored cases equal the JUnit file's testcase elements"
    );
    // pytest itself escapes non-ASCII in parametrised ids (`\xfc`); the id is
    // kept exactly as pytest wrote it, quotes and brackets included.
    for id in [
        "[quote\"s]",
        "[[brackets]]",
        "[it's]",
        "[\\xfcn\\xefc\\xf6d\\xe9-\\u65e5\\u672c]",
    ] {
        assert!(
            got.iter().any(|(g, _)| g.contains(id)),
            "no stored id contains {id}: {got:?}"
        );
    }

    // Failures first in the listing.
    let outcomes: Vec<&str> = run["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["outcome"].as_str().unwrap_or(""))
        .collect();
    let first_non_failure = outcomes
        .iter()
        .position(|o| *o != "failed" && *o != "error")
        .unwrap_or(outcomes.len());
    assert!(
        outcomes[first_non_failure..]
            .iter()
            .all(|o| *o != "failed" && *o != "error"),
        "{outcomes:?}"
    );
    assert_eq!(run["status"], "failed");
    assert_eq!(run["exit_code"], 1);
    assert_eq!(run["runner"], "pytest");
    assert_eq!(
        (
            run["project"].as_str(),
            run["branch"].as_str(),
            run["commit"].as_str()
        ),
        (Some("demo"), Some("main"), Some("abc123"))
    );
    let failing_msg = run["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| {
            c["test_id"]
                .as_str()
                .is_some_and(|id| id.ends_with("::test_fails"))
        })
        .expect("test_fails stored");
    assert!(
        failing_msg["traceback"]
            .as_str()
            .is_some_and(|t| t.contains("lists differ ✗ ünïcödé-日本")),
        "{failing_msg}"
    );

    // Aggregates reflect the run.
    let (_, trend) = app.get("/trend?project=demo&branch=main").await;
    assert_eq!(trend.as_array().map(Vec::len), Some(1));
    assert_eq!(trend[0]["run_id"], run_id.as_str());
    let (_, workers) = app.get("/workers").await;
    assert_eq!(workers[0]["worker_id"], "ci-worker-1");
    assert_eq!(workers[0]["run_count"], 1);
    assert_eq!(workers[0]["status"], "idle");
    let (_, stats) = app.get("/failures/stats?project=demo").await;
    // One entry per failing test, counting runs: the test that fails and then
    // errors in teardown is one failing test in one run.
    let mut failing: Vec<&str> = expected
        .iter()
        .filter(|(_, o)| o == "failed" || o == "error")
        .map(|(id, _)| id.as_str())
        .collect();
    failing.sort();
    failing.dedup();
    let mut listed: Vec<&str> = stats
        .as_array()
        .expect("stats")
        .iter()
        .map(|s| s["test_id"].as_str().unwrap_or(""))
        .collect();
    listed.sort();
    assert_eq!(listed, failing, "{stats}");
    assert!(
        stats
            .as_array()
            .expect("stats")
            .iter()
            .all(|s| s["fail_count"] == 1),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_down_while_agents_publish_loses_nothing() {
    let mut app = TestApp::spawn().await;
    let project = pytest_project();
    let first = run_pytest_agent(&app, project.path(), &project.path().join("r0.xml"));
    app.wait_run(&run_id_from(&first)).await;

    app.stop_master().await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        let out = run_pytest_agent(
            &app,
            project.path(),
            &project.path().join(format!("r{i}.xml")),
        );
        assert_eq!(out.status.code(), Some(1));
        ids.push(run_id_from(&out));
    }
    app.start_master().await;
    let runs = app.wait_run_count(4).await;
    assert_eq!(runs.len(), 4, "exactly four runs, none twice");
    for id in &ids {
        let run = app.wait_run(id).await;
        assert_eq!(
            count(&run, "total"),
            count(&runs[0], "total"),
            "run {id} complete"
        );
    }
    let (_, workers) = app.get("/workers").await;
    assert_eq!(workers[0]["run_count"], 4);
    let (_, trend) = app.get("/trend?project=demo&limit=10").await;
    let times: Vec<&str> = trend
        .as_array()
        .expect("trend")
        .iter()
        .map(|p| p["timestamp"].as_str().unwrap_or(""))
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "trend ordered by time, oldest first");
    assert_eq!(times.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_systems_payload_is_accepted_unchanged() {
    let app = TestApp::spawn().await;
    let payload = json!({
        "run_id": "5f2b3c1e-8d4a-4f6b-9c2e-1a2b3c4d5e6f",
        "worker_id": "legacy-worker",
        "project": "legacy",
        "branch": "develop",
        "timestamp": "2026-01-02T03:04:05Z",
        "passed": 8, "failed": 2, "error": 0, "skipped": 1, "total": 11,
        "duration": 12.5, "pass_rate": 80.0,
        "failures": [
            {"nodeid": "tests/test_a.py::test_one", "duration": 0.5, "message": "AssertionError: 1 != 2"},
            {"nodeid": "tests/test_b.py::test_two", "duration": 0.1, "message": "KeyError"}
        ]
    });
    let (status, body) = app.post("/results", &payload).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["run_id"], "5f2b3c1e-8d4a-4f6b-9c2e-1a2b3c4d5e6f");
    let run = app.wait_run("5f2b3c1e-8d4a-4f6b-9c2e-1a2b3c4d5e6f").await;
    assert_eq!(
        (
            count(&run, "passed"),
            count(&run, "failed"),
            count(&run, "total")
        ),
        (8, 2, 11)
    );
    assert_eq!(run["pass_rate"], 80.0);
    assert_eq!(run["timestamp"], "2026-01-02T03:04:05.000Z");
    assert_eq!(run["failures"].as_array().map(Vec::len), Some(2));
    assert_eq!(run["failures"][0]["nodeid"], "tests/test_a.py::test_one");

    // Posting the same run again stores it once.
    let (status, _) = app.post("/results", &payload).await;
    assert_eq!(status, 202);
    let other = json!({"run_id": "second-run", "worker_id": "legacy-worker", "project": "legacy", "passed": 1, "total": 1});
    app.post("/results", &other).await;
    app.wait_run("second-run").await;
    let (_, runs) = app.get("/results?project=legacy").await;
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(2),
        "the duplicate post was stored once: {runs}"
    );
    let (_, stats) = app.get("/failures/stats?project=legacy").await;
    assert_eq!(
        stats[0]["fail_count"], 1,
        "duplicate did not double the failures: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_errors() {
    let app = TestApp::spawn().await;
    let cases = [
        ("/results/does-not-exist", 404, "not found"),
        ("/results/bad%20id", 400, "not valid"),
        ("/results?limit=0", 400, "between 1 and 500"),
        ("/results?limit=abc", 400, "limit"),
        ("/results?cursor=garbage", 400, "cursor"),
        ("/results?colour=blue", 400, "unknown field"),
        ("/results?status=exploded", 400, "not one of"),
        ("/trend?limit=5000", 400, "between 1 and 1000"),
        ("/trend?branch=main", 400, "needs project"),
        ("/failures/stats?days=0", 400, "days"),
        ("/nope", 404, "/docs"),
    ];
    for (path, want, needle) in cases {
        let (status, body) = app.get(path).await;
        assert_eq!(status, want, "{path}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{path}: detail {detail:?} should mention {needle:?}"
        );
    }
    let r = app
        .http
        .post(format!("{}/results", app.base()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let (status, body) = app
        .post(
            "/results",
            &json!({"run_id": "x", "worker_id": "w", "passed": 1, "total": 3}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap_or("").contains("total (3)"));
    let (status, _) = app.get("/health").await;
    assert_eq!(status, 200, "the master is still healthy after all that");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_stream_is_rejected_and_the_stream_keeps_flowing() {
    let app = TestApp::spawn().await;
    let client = async_nats::connect(app.nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    for payload in [&b"not json at all"[..], br#"{"schema": 42, "kind": "run"}"#] {
        js.publish(ptp_nats::subjects::RESULTS_RUN, payload.to_vec().into())
            .await
            .expect("publish")
            .await
            .expect("stream ack");
    }
    let (status, _) = app
        .post(
            "/results",
            &json!({"run_id": "after-garbage", "worker_id": "w", "passed": 1, "total": 1}),
        )
        .await;
    assert_eq!(status, 202);
    app.wait_run("after-garbage").await;
    let (_, rejected) = app.get("/rejected").await;
    let reasons: Vec<&str> = rejected
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(reasons.len(), 2, "{rejected}");
    assert!(
        reasons.iter().any(|r| r.contains("not valid JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unknown schema version 42")),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60000_case_run_travels_in_chunks() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("big.xml");
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<testsuites><testsuite name=\"big\">\n");
    for i in 0..60_000 {
        if i % 1000 == 7 {
            xml.push_str(&format!(
                "<testcase classname=\"pkg.mod_{m}\" name=\"test_{i}[x]\" time=\"0.001\"><failure message=\"boom {i}\">Traceback line\nassert False</failure></testcase>\n",
                m = i % 50
            ));
        } else {
            xml.push_str(&format!(
                "<testcase classname=\"pkg.mod_{m}\" name=\"test_{i}[x]\" time=\"0.001\"/>\n",
                m = i % 50
            ));
        }
    }
    xml.push_str("</testsuite></testsuites>\n");
    std::fs::write(&path, xml).expect("write report");
    let out = app
        .agent()
        .args(["upload", "--runner", "synthetic"])
        .arg(&path)
        .output()
        .expect("agent");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_id = run_id_from(&out);
    let run = app.wait_run(&run_id).await;
    assert_eq!(
        (
            count(&run, "total"),
            count(&run, "failed"),
            count(&run, "passed")
        ),
        (60_000, 60, 59_940)
    );
    assert_eq!(run["cases"].as_array().map(Vec::len), Some(60_000));
    assert_eq!(run["cases"][0]["outcome"], "failed", "failures first");
    assert_eq!(run["next_cursor"], Value::Null, "everything in one page");

    // The default is a page of 100, failures first, with a cursor.
    let (status, page) = app.get(&format!("/results/{run_id}")).await;
    assert_eq!(status, 200);
    let cases = page["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 100);
    assert!(cases[..60].iter().all(|c| c["outcome"] == "failed"));
    assert!(cases[60..].iter().all(|c| c["outcome"] == "passed"));
    assert_eq!(page["cases_omitted"], 59_900);
    assert!(page["next_cursor"].is_string());

    // Following the cursors visits every case exactly once, in both orders
    // (every duration is equal here, so the slowest-first order rests on its
    // tie-break across the run's chunks).
    for (order, page_size) in [("failures_first", 7_000), ("duration", 6_999)] {
        let mut seen = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/results/{run_id}?order={order}&cases_limit={page_size}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = app.get(&path).await;
            assert_eq!(status, 200, "{page}");
            pages += 1;
            for c in page["cases"].as_array().expect("cases") {
                let id = c["test_id"].as_str().expect("test_id").to_string();
                assert!(seen.insert(id), "{order}: case seen twice");
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
            assert!(pages < 20, "{order}: cursor does not advance");
        }
        assert_eq!(
            (seen.len(), pages),
            (60_000, 60_000usize.div_ceil(page_size)),
            "{order}"
        );
    }

    // Only failures, slowest first, in pages of 7: 60 failures in 9 pages.
    let mut failures = 0;
    let mut cursor = String::new();
    for _ in 0..9 {
        let (_, page) = app
            .get(&format!(
                "/results/{run_id}?outcome=failed&order=duration&cases_limit=7&cursor={cursor}"
            ))
            .await;
        let cases = page["cases"].as_array().expect("cases");
        assert!(cases.iter().all(|c| c["outcome"] == "failed"));
        failures += cases.len();
        cursor = page["next_cursor"].as_str().unwrap_or_default().to_string();
    }
    assert_eq!((failures, cursor.as_str()), (60, ""));

    // A cursor from another order, or made up, is a 400 saying what to do.
    let (_, first) = app.get(&format!("/results/{run_id}?cases_limit=1")).await;
    let c = first["next_cursor"].as_str().expect("cursor");
    let (status, body) = app
        .get(&format!("/results/{run_id}?order=duration&cursor={c}"))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("order=failures_first"),
        "{body}"
    );
    let (status, body) = app
        .get(&format!("/results/{run_id}?cursor=failures_first.x"))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("next_cursor"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_adds_junitxml_to_pytest_by_itself() {
    let app = TestApp::spawn().await;
    let project = pytest_project();
    let junit = project.path().join("oracle.xml");
    let reference = run_pytest_agent(&app, project.path(), &junit);
    let expected = oracle_cases(&junit).len() as u64;
    app.wait_run(&run_id_from(&reference)).await;

    let out = app
        .agent()
        .current_dir(project.path())
        .args(["run", "--"])
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .output()
        .expect("agent");
    assert_eq!(out.status.code(), Some(1));
    let run = app.wait_run(&run_id_from(&out)).await;
    assert_eq!(count(&run, "total"), expected);
    assert!(
        run["command"]
            .as_str()
            .is_some_and(|c| c.contains("--junitxml=")),
        "{}",
        run["command"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shows_running_while_its_command_runs() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().expect("dir");
    let release = dir.path().join("release");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done", release.display());
    let mut child = app
        .agent()
        .env("WORKER_ID", "busy-worker")
        .args(["run", "--heartbeat-secs", "1", "--", "sh", "-c", &script])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("agent");
    let running = ptp_test_support::eventually(DEADLINE, "busy-worker to show running", || async {
        let (_, w) = app.get("/workers").await;
        w.as_array()?
            .iter()
            .find(|w| w["worker_id"] == "busy-worker" && w["status"] == "running")
            .cloned()
    })
    .await;
    assert!(
        running["current_run"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{running}"
    );
    std::fs::write(&release, b"").expect("release the command");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    // The end heartbeat and the stored run arrive separately; wait for both.
    let idle = ptp_test_support::eventually(
        DEADLINE,
        "busy-worker to show idle with its run stored",
        || async {
            let (_, w) = app.get("/workers").await;
            w.as_array()?
                .iter()
                .find(|w| {
                    w["worker_id"] == "busy-worker" && w["status"] == "idle" && w["run_count"] == 1
                })
                .cloned()
        },
    )
    .await;
    assert_eq!(idle["current_run"], serde_json::Value::Null);
    assert_eq!(idle["run_count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_binary_serves_and_exits_0_on_sigterm() {
    let nats = ptp_test_support::NatsServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut master = std::process::Command::new(ptp_test_support::cargo_bin("ptp-master"))
        .env("NATS_URL", nats.url())
        .env("PTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("PTP_DB", dir.path().join("nested/dir/ptp.sqlite"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("master starts");
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    ptp_test_support::eventually(DEADLINE, "the master binary to be healthy", || async {
        let r = http.get(format!("{url}/health")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let docs = http.get(format!("{url}/docs/")).send().await.expect("docs");
    assert!(
        docs.text().await.unwrap_or_default().contains("swagger"),
        "docs page served locally"
    );
    let spec: serde_json::Value = http
        .get(format!("{url}/openapi.json"))
        .send()
        .await
        .expect("spec")
        .json()
        .await
        .expect("json");
    for path in [
        "/results",
        "/results/{run_id}",
        "/trend",
        "/workers",
        "/failures/stats",
        "/health",
    ] {
        assert!(spec["paths"][path].is_object(), "openapi lacks {path}");
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &master.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || master.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

/// `/failures/stats` narrowed to a branch or a worker counts only those
/// runs (answered by SQL; the project-wide answer comes from the aggregates
/// and must agree with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_stats_narrow_to_a_branch_or_a_worker() {
    let app = TestApp::spawn().await;
    let runs: Vec<_> = (0..5)
        .map(|i| {
            let mut r = synthetic_run("narrow", i, 10);
            if i >= 3 {
                r.0.branch = Some("feature".into());
                r.0.worker_id = "w-feature".into();
                r.1[5].outcome = ptp_nats::schema::Outcome::Failed;
            } else {
                r.0.branch = Some("main".into());
                r.0.worker_id = "w-main".into();
            }
            r.0.counts = ptp_nats::schema::Counts::of(&r.1);
            r
        })
        .collect();
    publish_direct(&app.nats.url(), &runs, true).await;
    app.wait_run_count(5).await;
    let counts = |body: Value| -> BTreeMap<String, u64> {
        body.as_array()
            .expect("list")
            .iter()
            .map(|s| {
                (
                    s["test_id"].as_str().unwrap_or_default().to_string(),
                    s["fail_count"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let want = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    };
    let (_, all) = app.get("/failures/stats?project=synthetic").await;
    assert_eq!(
        counts(all),
        want(&[
            ("tests/test_3.py::test_3", 5),
            ("tests/test_5.py::test_5", 2)
        ])
    );
    let (_, main) = app
        .get("/failures/stats?project=synthetic&branch=main")
        .await;
    assert_eq!(counts(main), want(&[("tests/test_3.py::test_3", 3)]));
    let (_, feature) = app.get("/failures/stats?branch=feature").await;
    let feature_counts = counts(feature.clone());
    assert_eq!(
        feature_counts,
        want(&[
            ("tests/test_3.py::test_3", 2),
            ("tests/test_5.py::test_5", 2)
        ])
    );
    assert_eq!(feature[0]["last_run_id"], "narrow-00004", "{feature}");
    let (_, worker) = app.get("/failures/stats?worker_id=w-main&limit=1").await;
    assert_eq!(counts(worker), want(&[("tests/test_3.py::test_3", 3)]));
    let (_, none) = app
        .get("/failures/stats?branch=main&worker_id=w-feature")
        .await;
    assert_eq!(none, json!([]));
}

/// `GET /compare`: two runs worked out by hand, named by id or by branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_names_what_broke_what_was_fixed_and_what_got_slow() {
    use ptp_nats::schema::{Counts, Outcome};
    let app = TestApp::spawn().await;
    let run = |i: usize, branch: &str, tests: &[(&str, Outcome, f64)]| {
        let mut r = synthetic_run("cmp", i, tests.len());
        for (case, (id, outcome, secs)) in r.1.iter_mut().zip(tests) {
            case.test_id = id.to_string();
            case.outcome = *outcome;
            case.duration_secs = *secs;
            case.message = (*outcome == Outcome::Failed).then(|| format!("{id} broke"));
        }
        r.0.branch = Some(branch.into());
        r.0.counts = Counts::of(&r.1);
        r
    };
    use Outcome::{Failed, Passed, Skipped};
    let base = run(
        0,
        "main",
        &[
            ("t::stable", Passed, 1.0),
            ("t::breaks", Passed, 1.0),
            ("t::fixed", Failed, 1.0),
            ("t::still", Failed, 1.0),
            ("t::slow", Passed, 1.0),
            ("t::removed", Skipped, 0.0),
        ],
    );
    let head = run(
        1,
        "feature",
        &[
            ("t::stable", Passed, 1.0),
            ("t::breaks", Failed, 1.0),
            ("t::fixed", Passed, 1.0),
            ("t::still", Failed, 1.0),
            ("t::slow", Passed, 4.0),
            ("t::added", Failed, 0.2),
        ],
    );
    publish_direct(&app.nats.url(), &[base, head], true).await;
    app.wait_run_count(2).await;
    let names = |v: &Value, list: &str| -> Vec<String> {
        v["changes"][list]["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["test_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    for path in [
        "/compare?base=cmp-00000&head=cmp-00001",
        "/compare?project=synthetic&base_branch=main&head_branch=feature",
    ] {
        let (status, c) = app.get(path).await;
        assert_eq!(status, 200, "{path}: {c}");
        assert_eq!(c["base"]["run_id"], "cmp-00000");
        assert_eq!(c["head"]["run_id"], "cmp-00001");
        assert_eq!(names(&c, "new_failures"), ["t::added", "t::breaks"]);
        assert_eq!(names(&c, "fixed"), ["t::fixed"]);
        assert_eq!(names(&c, "still_failing"), ["t::still"]);
        assert_eq!(names(&c, "new_tests"), ["t::added"]);
        assert_eq!(names(&c, "removed_tests"), ["t::removed"]);
        assert_eq!(names(&c, "slower"), ["t::slow"]);
        assert_eq!(names(&c, "faster"), Vec::<String>::new());
        assert_eq!(
            c["changes"]["new_failures"]["items"][1]["message"],
            "t::breaks broke"
        );
    }
    let (_, cut) = app
        .get("/compare?base=cmp-00000&head=cmp-00001&limit=1")
        .await;
    assert_eq!(cut["changes"]["new_failures"]["total"], 2);
    assert_eq!(names(&cut, "new_failures"), ["t::added"]);
    for (path, status, needle) in [
        ("/compare?head=cmp-00001", 400, "name the base run"),
        (
            "/compare?base=cmp-00000&base_branch=main&head=cmp-00001",
            400,
            "not both",
        ),
        (
            "/compare?base=nope&head=cmp-00001",
            404,
            "base run 'nope' not found",
        ),
        (
            "/compare?base_branch=main&head=cmp-00001",
            400,
            "needs project",
        ),
        (
            "/compare?project=synthetic&base_branch=gone&head=cmp-00001",
            404,
            "branch 'gone'",
        ),
        (
            "/compare?base=cmp-00000&head=cmp-00001&limit=0",
            400,
            "limit",
        ),
    ] {
        let (got, body) = app.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{path}: {detail}");
    }
}
