//! The agent without NATS: `MASTER_URL` and a write token, the run sent over
//! HTTP (`/agent/check`, `/agent/messages`) and published by the master into
//! the stream; a large run in chunks; a resent run stored once; the spool
//! and `flush` when the master cannot be reached. And the job summary's
//! master sections (new failures against the base branch, known flaky
//! tests, the report link) with the annotations, through the real binary.

use std::path::Path;
use std::process::{Command, Output};

use ptp_test_support::python;
use serde_json::Value;

use crate::helpers::*;

const TOKEN: &str = "agent-write-token";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A master that requires write tokens.
async fn app_with_tokens() -> TestApp {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    app.start_master_with(|c| c.write_tokens = vec![TOKEN.into()])
        .await;
    app
}

/// The agent with no NATS at all: only MASTER_URL and the token.
fn http_agent(app: &TestApp, master_url: &str) -> Command {
    let mut c = app.agent();
    c.env_remove("NATS_URL")
        .env("MASTER_URL", master_url)
        .env("PTP_API_TOKEN", TOKEN)
        .env("PTP_PUBLISH_TIMEOUT", "5");
    c
}

async fn stream_messages(app: &TestApp) -> u64 {
    let client = async_nats::connect(app.nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(ptp_nats::STREAM).await.expect("stream");
    s.info().await.expect("info").state.messages
}

fn spooled(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

fn dead_http_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pytest_run_reaches_the_master_over_http_without_nats() {
    let app = app_with_tokens().await;
    let base = app.base().to_string();

    // check first, as a CI author would: the token is refused, then accepted.
    let refused = http_agent(&app, &base)
        .env("PTP_API_TOKEN", "not-the-token")
        .arg("check")
        .output()
        .expect("agent");
    let out = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{out}");
    assert!(out.contains("refused the token"), "{out}");
    assert!(out.contains("PTP_WRITE_TOKENS"), "{out}");
    let ok = http_agent(&app, &base)
        .arg("check")
        .output()
        .expect("agent");
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}{}", stderr(&ok));
    assert!(out.contains("transport: http"), "{out}");

    let project = pytest_project();
    let junit = project.path().join("report.xml");
    let out = http_agent(&app, &base)
        .current_dir(project.path())
        .args(["run", "--"])
        .arg(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("--junitxml={}", junit.display()))
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("to the master at {base}")),
        "{}",
        stderr(&out)
    );
    let run_id = run_id_from(&out);
    let run = app.wait_run(&run_id).await;
    let oracle = oracle_cases(&junit);
    assert_eq!(run["total"].as_u64(), Some(oracle.len() as u64), "{run}");
    assert_eq!(run["branch"], "main");
    assert!(spooled(&app.spool_dir()).is_empty(), "nothing spooled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_spool_flush_and_a_resend_stored_once() {
    let app = app_with_tokens().await;
    let base = app.base().to_string();
    // 6,000 cases with long names: several chunks under the 1 MiB payload.
    let dir = tempfile::tempdir().expect("dir");
    let report = dir.path().join("big.xml");
    let mut xml = String::from("<testsuite>");
    for i in 0..6000 {
        xml.push_str(&format!(
            "<testcase classname=\"tests.test_{m}\" name=\"test_{i}_{pad}\" time=\"0.001\">{f}</testcase>",
            m = i % 50,
            pad = "x".repeat(150),
            f = if i % 100 == 7 { "<failure message=\"boom\">trace</failure>" } else { "" }
        ));
    }
    xml.push_str("</testsuite>");
    std::fs::write(&report, xml).expect("report");

    // The master cannot be reached: the run is spooled.
    let out = http_agent(&app, &dead_http_url())
        .env("PTP_PUBLISH_TIMEOUT", "1")
        .arg("upload")
        .arg(&report)
        .output()
        .expect("agent");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("saved in the spool"),
        "{}",
        stderr(&out)
    );
    let files = spooled(&app.spool_dir());
    assert_eq!(files.len(), 1);
    let copy = dir.path().join("copy.json");
    std::fs::copy(&files[0], &copy).expect("copy the spooled run");

    // flush sends it once the master is reachable.
    let before = stream_messages(&app).await;
    let out = http_agent(&app, &base)
        .arg("flush")
        .output()
        .expect("flush");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(spooled(&app.spool_dir()).is_empty());
    let added = stream_messages(&app).await - before;
    assert!(
        added >= 3,
        "a run of ~1.2 MB travels as several chunks: {added}"
    );
    let runs = app.wait_run_count(1).await;
    let run_id = runs[0]["run_id"].as_str().expect("run id").to_string();
    let run = app.wait_run(&run_id).await;
    assert_eq!(
        (run["total"].as_u64(), run["failed"].as_u64()),
        (Some(6000), Some(60))
    );

    // The same run sent again (a retried upload): nothing new is stored.
    std::fs::copy(&copy, app.spool_dir().join("again.json")).expect("respool");
    let out = http_agent(&app, &base)
        .arg("flush")
        .output()
        .expect("flush");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stream_messages(&app).await - before,
        added,
        "duplicates are dropped"
    );
    let (_, list) = app.get("/results?limit=500").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // A refused token is not retried: the run is spooled at once.
    let out = http_agent(&app, &base)
        .env("PTP_API_TOKEN", "wrong")
        .env("PTP_PUBLISH_TIMEOUT", "600")
        .arg("upload")
        .arg(&report)
        .output()
        .expect("agent");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused the token"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("retrying"), "{}", stderr(&out));
}

/// The master accepts only valid wire messages, with a write token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_refuses_what_ingest_would() {
    let app = app_with_tokens().await;
    let http = reqwest::Client::new();
    let post = |body: &'static [u8], token: Option<&str>| {
        let mut r = http
            .post(format!("{}/agent/messages", app.base()))
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = post(b"{}", None).await.expect("reaches");
    assert_eq!(r.status().as_u16(), 401);
    let r = post(b"not json", Some(TOKEN)).await.expect("reaches");
    assert_eq!(r.status().as_u16(), 422);
    let r = post(br#"{"schema": 99, "kind": "run"}"#, Some(TOKEN))
        .await
        .expect("reaches");
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("unknown schema version"),
        "{body}"
    );
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).expect("write test file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_names_new_failures_flaky_tests_and_the_report() {
    let app = TestApp::spawn().await;
    let project = tempfile::tempdir().expect("project");
    write(
        project.path(),
        "test_base.py",
        "import os\n\ndef test_ok():\n    assert True\n\ndef test_flip():\n    assert os.environ.get('FLIP') != '1', 'flipped'\n",
    );
    let pytest = |branch: &str, commit: &str, flip: &str| {
        let mut c = app.agent();
        c.current_dir(project.path())
            .env("BRANCH", branch)
            .env("COMMIT", commit)
            .env("FLIP", flip)
            .args(["run", "--"])
            .arg(python())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"]);
        c
    };
    // main, one commit: test_flip passes, then fails: flaky.
    for flip in ["0", "1"] {
        let out = pytest("main", "c1", flip).output().expect("agent");
        app.wait_run(&run_id_from(&out)).await;
    }
    // A feature branch adds a failing test.
    write(
        project.path(),
        "test_feature.py",
        "def test_new():\n    x = 41\n    assert x == 42, 'off by one'\n",
    );
    let summary = project.path().join("summary.md");
    let out = pytest("feature/x", "c2", "1")
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_BASE_REF", "main")
        .env("GITHUB_WORKSPACE", project.path())
        .env("MASTER_URL", app.base())
        .env("PTP_REPORT_URL", "https://mcp.example")
        .output()
        .expect("agent");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let md = std::fs::read_to_string(&summary).expect("summary written");
    assert!(md.contains("## ❌ Tests of demo: failed"), "{md}");
    assert!(
        md.contains("### New failures against <code>main</code> (1)"),
        "{md}"
    );
    assert!(
        md.contains("- <code>test&#95;feature::test&#95;new</code>"),
        "{md}"
    );
    assert!(md.contains("test&#95;flip</code> (known flaky)"), "{md}");
    assert!(
        md.contains("(https://mcp.example/report?project=demo&branch=feature%2Fx&runs=20)"),
        "{md}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let annotation = stdout
        .lines()
        .find(|l| l.contains("title=failed test_feature%3A%3Atest_new::"))
        .unwrap_or_else(|| panic!("no annotation for test_new in:\n{stdout}"));
    assert!(
        annotation.starts_with("::error file=test_feature.py,line=3,title="),
        "{annotation}"
    );
    assert!(annotation.contains("off by one"), "{annotation}");
}
