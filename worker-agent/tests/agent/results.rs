//! `--results-json` and `--no-publish` with a real pytest project: the file
//! holds what pytest reported, says whether the run was published, and a
//! run that must not be published never touches NATS.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use ptp_test_support::NatsServer;
use serde_json::Value;

use super::{agent, dead_url, spooled, stderr};

/// A pytest project: two passing tests, a failing one, a failing method
/// in a class, a skipped one, and (when `slow`) one that sleeps.
pub(super) fn pytest_project(dir: &Path, slow: bool) {
    std::fs::create_dir_all(dir.join("tests")).expect("tests dir");
    std::fs::write(dir.join("pytest.ini"), "[pytest]\n").expect("ini");
    let mut body = String::from(
        r#"import pytest

def test_add():
    assert 1 + 1 == 2

def test_sub():
    assert 3 - 1 == 1, "three minus one"

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass

class TestCart:
    def test_empty(self):
        assert [] == []

    def test_total(self):
        assert sum([1, 2]) == 4
"#,
    );
    if slow {
        body.push_str("\ndef test_slow():\n    import time\n    time.sleep(300)\n");
    }
    std::fs::write(dir.join("tests/test_cart.py"), body).expect("test file");
}

fn results(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("results file written");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn outcomes(v: &Value) -> Vec<(String, String)> {
    let mut o: Vec<(String, String)> = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            (
                c["test_id"].as_str().unwrap_or("").to_string(),
                c["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    o.sort();
    o
}

/// With --no-publish the agent never connects: NATS_URL points at a port
/// where nothing listens and the publish budget is an hour, so any attempt
/// would show in stderr, in the spool, or as a run that does not end.
#[test]
fn no_publish_writes_the_results_and_never_touches_nats() {
    let dir = tempfile::tempdir().expect("dir");
    let project = dir.path().join("project");
    pytest_project(&project, false);
    let spool = dir.path().join("spool");
    let out_file = dir.path().join("out/results.json");
    std::fs::create_dir_all(dir.path().join("out")).expect("out dir");
    let out = agent(&dead_url(), &spool)
        .current_dir(&project)
        .env("PTP_PUBLISH_TIMEOUT", "3600")
        .args(["run", "--no-publish", "--results-json"])
        .arg(&out_file)
        .arg("--")
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q"])
        .output()
        .expect("agent runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "pytest's exit code: {err}");
    for attempt in ["retrying", "could not publish", "spool"] {
        assert!(!err.contains(attempt), "{attempt:?} in stderr: {err}");
    }
    assert!(err.contains("not published (--no-publish)"), "{err}");
    assert!(spooled(&spool).is_empty(), "nothing spooled");

    let v = results(&out_file);
    assert_eq!(v["format"], 1);
    assert_eq!(v["status"], "failed");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["runner"], "pytest");
    assert_eq!(v["report"], true);
    assert_eq!(v["published"], false);
    assert_eq!(v["delivery"], "not_requested");
    assert_eq!(
        v["counts"],
        serde_json::json!({"total": 5, "passed": 2, "failed": 2, "error": 0, "skipped": 1, "xfailed": 0, "xpassed": 0})
    );
    let expected: Vec<(String, String)> = [
        ("tests.test_cart.TestCart::test_empty", "passed"),
        ("tests.test_cart.TestCart::test_total", "failed"),
        ("tests.test_cart::test_add", "passed"),
        ("tests.test_cart::test_skipped", "skipped"),
        ("tests.test_cart::test_sub", "failed"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(outcomes(&v), expected);
    let sub = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == "test_sub")
        .cloned()
        .unwrap_or_default();
    assert_eq!(sub["classname"], "tests.test_cart");
    assert!(
        sub["message"]
            .as_str()
            .unwrap_or("")
            .contains("three minus one"),
        "{sub}"
    );
    assert!(sub.get("traceback").is_none(), "no tracebacks in the file");
    assert!(
        !std::fs::read_dir(dir.path().join("out"))
            .expect("out dir")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(".ptp-results-")),
        "no temporary file left behind"
    );
}

/// The same file after a published run: `published` is true and its run
/// id is the one in the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_json_names_the_published_run() {
    let nats = NatsServer::start();
    let url = nats.url();
    let client = async_nats::connect(&url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = ptp_nats::ensure_stream(&js, &ptp_nats::StreamSettings::default())
        .await
        .expect("stream");
    let dir = tempfile::tempdir().expect("dir");
    let project = dir.path().join("project");
    pytest_project(&project, false);
    let out_file = dir.path().join("results.json");
    let mut cmd = agent(&url, &dir.path().join("spool"));
    cmd.current_dir(&project)
        .args(["run", "--results-json"])
        .arg(&out_file)
        .arg("--")
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("agent runs"))
        .await
        .expect("joined");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = results(&out_file);
    assert_eq!(
        (v["published"].as_bool(), v["delivery"].as_str()),
        (Some(true), Some("published"))
    );

    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .expect("consumer");
    let info = stream.info().await.expect("info");
    let mut msgs = consumer
        .fetch()
        .max_messages(info.state.messages as usize)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetch");
    let mut finals = Vec::new();
    while let Some(Ok(m)) = msgs.next().await {
        if let Ok(ptp_nats::schema::WireMessage::Run(r)) = ptp_nats::schema::decode(&m.payload) {
            finals.push((
                r.run.run_id.clone(),
                r.run.counts.total,
                r.run.counts.failed,
            ));
        }
    }
    assert_eq!(
        finals,
        [(v["run_id"].as_str().unwrap_or("?").to_string(), 5, 2)],
        "one run in the stream, the one the file names"
    );
}

/// A run killed by --timeout still gets its file: status timed_out, exit
/// 124, no report.
#[test]
fn results_json_reports_a_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let project = dir.path().join("project");
    pytest_project(&project, true);
    let out_file = dir.path().join("results.json");
    let out = agent(&dead_url(), &dir.path().join("spool"))
        .current_dir(&project)
        .args(["run", "--no-publish", "--timeout", "2", "--results-json"])
        .arg(&out_file)
        .arg("--")
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    let v = results(&out_file);
    assert_eq!(
        (
            v["status"].as_str(),
            v["exit_code"].as_i64(),
            v["report"].as_bool()
        ),
        (Some("timed_out"), Some(124), Some(false)),
        "{v}"
    );
    assert_eq!(v["cases"], serde_json::json!([]));
}

/// A results file that cannot be written is reported, and with --strict a
/// green run exits 75 as for any other reporting failure.
#[test]
fn an_unwritable_results_file_is_reported() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("no-such-dir/results.json");
    let out = agent(&dead_url(), &dir.path().join("spool"))
        .args(["--strict", "run", "--no-publish", "--results-json"])
        .arg(&missing)
        .args(["--", "true"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot write --results-json"),
        "{}",
        stderr(&out)
    );
    let help = Command::new(env!("CARGO_BIN_EXE_ptp-agent"))
        .args(["run", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--no-publish",
        "PTP_NO_PUBLISH",
        "--results-json",
        "PTP_RESULTS_JSON",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}
