//! The agent's side of flaky-test handling, through the real broker and
//! master: `--retries` feeds the master's passed-on-retry evidence; runs
//! whose cases carry owners (CODEOWNERS) are accepted and stored.

use std::path::Path;

use serde_json::Value;

use crate::helpers::*;

/// A pytest suite: `test_flaky` fails the first time it runs in this
/// project (a marker file) and passes after; `test_broken` always fails.
pub fn flaky_suite(dir: &Path) {
    std::fs::write(dir.join("pytest.ini"), "[pytest]\n").expect("ini");
    std::fs::write(dir.join("CODEOWNERS"), "* @acme/qa\n").expect("CODEOWNERS");
    std::fs::write(
        dir.join("test_suite.py"),
        r#"import pathlib
MARKER = pathlib.Path(__file__).parent / "flaky-ran-once"

def test_flaky():
    if not MARKER.exists():
        MARKER.write_text("1")
        assert False, "first attempt fails"

def test_broken():
    assert 1 == 2, "always fails"

def test_ok():
    pass
"#,
    )
    .expect("suite");
}

fn case<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["cases"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no case {name} in {run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_reach_flaky_as_passed_on_retry() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().expect("dir");
    flaky_suite(dir.path());
    let mut cmd = app.agent();
    cmd.current_dir(dir.path())
        .args(["run", "--retries", "2", "--"])
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("agent runs"))
        .await
        .expect("joined");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "test_broken fails the run: {err}"
    );
    let run = app.wait_run(&run_id_from(&out)).await;
    assert_eq!(run["status"], "failed", "{run}");
    let flaky = case(&run, "test_flaky");
    assert_eq!(
        (&flaky["outcome"], &flaky["retries"], &flaky["flaky"]),
        (&Value::from("passed"), &Value::from(1), &Value::from(true)),
        "{flaky}"
    );
    let broken = case(&run, "test_broken");
    assert_eq!(
        (&broken["outcome"], &broken["retries"]),
        (&Value::from("failed"), &Value::from(2)),
        "{broken}"
    );

    // The master accepts cases with owners (it does not store them yet).
    assert_eq!(
        run["cases"].as_array().map(Vec::len),
        Some(3),
        "every case with owners was stored: {run}"
    );

    let (status, f) = app.get("/flaky?project=demo").await;
    assert_eq!(status, 200, "{f}");
    let tests = f["tests"].as_array().expect("tests");
    assert_eq!(tests.len(), 1, "only the flaky test: {f}");
    assert_eq!(tests[0]["test_id"], "test_suite::test_flaky");
    assert_eq!(tests[0]["reasons"], serde_json::json!(["passed_on_retry"]));
}
