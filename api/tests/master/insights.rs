//! Test analytics on real parts: `GET /flaky` over a real pytest suite run
//! several times through the agent on one commit, with an outage run and a
//! real break on a later commit that must not count; history, clusters and
//! slow tests over synthetic runs whose answers are worked out by hand here.

use std::path::Path;

use ptp_nats::schema::{Counts, Outcome, RunInfo, TestCase};
use serde_json::{Value, json};

use crate::helpers::*;

/// A pytest suite whose failures follow `RUN_NO` (and `OUTAGE`).
const SUITE: &str = r#"
import os

import pytest

RUN = int(os.environ["RUN_NO"])


def setup_module(module):
    if os.environ.get("OUTAGE"):
        raise ConnectionError("database at 10.0.0.5:5432 is gone")


@pytest.mark.parametrize("n", range(6))
def test_stable(n):
    assert n >= 0


def test_broken():
    assert 1 == 2, "always broken"


def test_network():
    # Intermittent on one commit: fails on runs 2, 4 and 8.
    assert RUN not in (2, 4, 8), f"timeout after {RUN * 100} ms"


class TestCart:
    def test_order(self):
        # Intermittent on one commit: fails on run 3 only.
        assert RUN != 3, "order lost"


def test_new_break():
    # A real break: fails from run 5 on (a new commit), never flips back.
    assert RUN < 5, "new code broke this"
"#;

fn run_suite(app: &TestApp, dir: &Path, run_no: u32, commit: &str, outage: bool) -> String {
    let mut c = app.agent();
    c.current_dir(dir)
        .env("RUN_NO", run_no.to_string())
        .env("PROJECT", "flaky-demo")
        .env("COMMIT", commit)
        .env("WORKER_ID", format!("w{run_no}"))
        .args(["run", "--"])
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"]);
    if outage {
        c.env("OUTAGE", "1");
    }
    let out = c.output().expect("agent runs");
    run_id_from(&out)
}

fn flaky_ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["tests"]
        .as_array()
        .unwrap_or_else(|| panic!("no tests list: {v}"))
        .iter()
        .filter_map(|t| t["test_id"].as_str())
        .map(|t| t.rsplit("::").next().unwrap_or(t).to_string())
        .collect();
    ids.sort();
    ids
}

/// The done-when of the flaky detector: a real suite run 7 times names
/// exactly the two tests that flipped on one commit; the always-broken test,
/// the real break on a later commit and the outage run make nobody flaky.
/// Clearing a test hides it until it flips again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_names_exactly_the_tests_that_flipped() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().expect("suite dir");
    std::fs::write(dir.path().join("test_shop.py"), SUITE).expect("write suite");
    let mut runs = Vec::new();
    for n in 1..=6 {
        let commit = if n <= 4 { "c1" } else { "c2" };
        runs.push(run_suite(&app, dir.path(), n, commit, false));
    }
    // Run 7: everything errors (setup_module raises): an outage on c2. If it
    // counted, test_stable would have passed and failed on c2. (Ten tests:
    // three failures in one run are not an outage.)
    runs.push(run_suite(&app, dir.path(), 7, "c2", true));
    for r in &runs {
        app.wait_run(r).await;
    }
    let (status, outage) = app.get(&format!("/results/{}", runs[6])).await;
    assert_eq!(status, 200);
    assert_eq!(
        outage["error"], 10,
        "the outage run errored every test: {outage}"
    );

    let (status, v) = app.get("/flaky?project=flaky-demo").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(flaky_ids(&v), ["test_network", "test_order"], "{v}");
    assert_eq!(v["runs_considered"], 6, "{v}");
    assert_eq!(v["outages_excluded"], 1, "{v}");
    let tests = v["tests"].as_array().expect("tests");
    let network = tests
        .iter()
        .find(|t| {
            t["test_id"]
                .as_str()
                .is_some_and(|s| s.ends_with("test_network"))
        })
        .expect("network listed");
    // P F P F P P on main: 4 flips in 5 transitions; both outcomes on c1.
    assert_eq!(network["reasons"], json!(["same_commit", "flip_rate"]));
    assert_eq!(network["flips"], 4);
    assert_eq!(network["flip_rate"], 0.8);
    assert_eq!(
        (network["runs"].as_u64(), network["failed_runs"].as_u64()),
        (Some(6), Some(2))
    );
    assert_eq!(network["commits"][0]["commit"], "c1");
    assert_eq!(
        network["commits"][0]["failed_runs"],
        json!([runs[1], runs[3]])
    );
    assert_eq!(
        network["commits"][0]["passed_runs"],
        json!([runs[0], runs[2]])
    );
    assert_eq!(network["evidence_runs"], json!([runs[3], runs[1]]));
    assert!(
        network["last_message"]
            .as_str()
            .unwrap_or("")
            .contains("timeout after 400 ms"),
        "{network}"
    );
    let order_id = tests
        .iter()
        .filter_map(|t| t["test_id"].as_str())
        .find(|s| s.ends_with("test_order"))
        .expect("order listed")
        .to_string();
    let network_id = network["test_id"].as_str().expect("id").to_string();
    // A stricter flip rule leaves only the same-commit evidence, which both
    // have; a window of the last two runs (c2) has no flaky test at all.
    let (_, strict) = app.get("/flaky?project=flaky-demo&threshold=0.9").await;
    assert_eq!(flaky_ids(&strict), ["test_network", "test_order"]);
    let (_, recent) = app.get("/flaky?project=flaky-demo&runs=2").await;
    assert_eq!(flaky_ids(&recent), Vec::<String>::new(), "{recent}");

    // History of one test, newest first, outage run included.
    let path = format!(
        "/tests/{}/history?project=flaky-demo",
        network_id.replace('/', "%2F")
    );
    let (status, h) = app.get(&path).await;
    assert_eq!(status, 200, "{h}");
    let outcomes: Vec<&str> = h["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(
        outcomes,
        [
            "error", "passed", "passed", "failed", "passed", "failed", "passed"
        ]
    );
    assert_eq!(h["entries"][0]["worker_id"], "w7");
    assert_eq!(h["entries"][3]["commit"], "c1");
    assert_eq!(h["entries"][3]["run_id"], runs[3]);
    assert_eq!(h["outcomes"], json!({"error": 1, "failed": 2, "passed": 4}));

    // Marked fixed: gone from the list, the other one stays.
    let (status, c) = app
        .post(
            "/flaky/clear",
            &json!({"project": "flaky-demo", "test_id": network_id, "note": "retry added in #42"}),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    let (_, v) = app.get("/flaky?project=flaky-demo").await;
    assert_eq!(flaky_ids(&v), ["test_order"], "{v}");
    // It flips again on a new commit: back, with only the new evidence.
    let r8 = run_suite(&app, dir.path(), 8, "c3", false);
    let r9 = run_suite(&app, dir.path(), 9, "c3", false);
    app.wait_run(&r8).await;
    app.wait_run(&r9).await;
    let (_, v) = app.get("/flaky?project=flaky-demo").await;
    assert_eq!(flaky_ids(&v), ["test_network", "test_order"], "{v}");
    let back = v["tests"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["test_id"] == json!(network_id)))
        .expect("network back");
    assert_eq!(
        back["commits"],
        json!([{"commit": "c3", "passed_runs": [r9], "failed_runs": [r8]}])
    );
    assert_eq!(back["evidence_runs"], json!([r8]));

    // Bad requests say what is wrong.
    for (status, path_or_body) in [
        (
            404,
            json!({"project": "flaky-demo", "test_id": "no::such_test"}),
        ),
        (400, json!({"project": "", "test_id": order_id})),
        (400, json!({"project": "flaky-demo"})),
    ] {
        let (s, b) = app.post("/flaky/clear", &path_or_body).await;
        assert_eq!(s, status, "{path_or_body}: {b}");
        assert!(b["detail"].as_str().is_some_and(|d| !d.is_empty()), "{b}");
    }
    for path in [
        "/flaky?threshold=2",
        "/flaky?runs=0",
        "/flaky?days=0",
        "/flaky?project=",
        "/flaky?colour=red",
    ] {
        let (s, b) = app.get(path).await;
        assert_eq!(s, 400, "{path}: {b}");
    }
    let (s, b) = app.get("/tests/no%3A%3Asuch/history").await;
    assert_eq!(s, 404, "{b}");
    assert!(
        b["detail"].as_str().unwrap_or("").contains("no::such"),
        "{b}"
    );
}

struct Case<'a> {
    id: &'a str,
    outcome: Outcome,
    secs: f64,
    message: Option<String>,
    traceback: Option<String>,
    flaky: bool,
}

fn case(id: &str, outcome: Outcome, secs: f64) -> Case<'_> {
    Case {
        id,
        outcome,
        secs,
        message: None,
        traceback: None,
        flaky: false,
    }
}

fn run_of(project: &str, i: usize, cases: Vec<Case<'_>>) -> (RunInfo, Vec<TestCase>) {
    let (mut run, _) = synthetic_run(project, i, 0);
    let cases: Vec<TestCase> = cases
        .into_iter()
        .map(|c| TestCase {
            test_id: c.id.to_string(),
            file: None,
            classname: None,
            name: c.id.rsplit("::").next().unwrap_or(c.id).to_string(),
            outcome: c.outcome,
            duration_secs: c.secs,
            message: c.message,
            traceback: c.traceback,
            output: None,
            retries: u32::from(c.flaky),
            flaky: c.flaky,
            owners: Vec::new(),
            quarantined: false,
        })
        .collect();
    run.project = project.to_string();
    run.counts = Counts::of(&cases);
    (run, cases)
}

/// Clusters, history by an id with `/` in it, slow tests and retries, over
/// runs whose answers are worked out by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_history_slow_tests_and_retries_answer_as_worked_out() {
    use Outcome::{Failed, Passed};
    let app = TestApp::spawn().await;
    let db_tb = |host: &str| {
        format!(
            "def test_a(db):\n>       db.connect()\n\ntests/test_db.py:40: in connect\n    raise \
             ConnectionError(host)\nE   ConnectionError: refused by {host}\n\n\
             tests/test_db.py:40: ConnectionError"
        )
    };
    let mut runs = Vec::new();
    // Project "clu", 6 runs: two db tests fail every run with the host
    // varying (one cluster of 12); the cart test fails in runs 4 and 5 with
    // varying numbers (one cluster of 2); run 5 adds an unrelated failure.
    for i in 0..6 {
        let mut cases = vec![case("tests/ok.py::test_ok", Passed, 0.01)];
        for (t, host) in [
            ("tests/test_db.py::test_a", format!("db-{i}:5432")),
            ("tests/test_db.py::test_b", format!("db-{}:6432", i + 1)),
        ] {
            cases.push(Case {
                message: Some(format!("ConnectionError: refused by {host}")),
                traceback: Some(db_tb(&host)),
                ..case(t, Failed, 0.5)
            });
        }
        if i >= 4 {
            cases.push(Case {
                message: Some(format!(
                    "AssertionError: expected {} items, got {}",
                    i,
                    i - 1
                )),
                traceback: Some("tests/test_cart.py:12: AssertionError".into()),
                ..case("tests/test_cart.py::test_total", Failed, 0.1)
            });
        }
        if i == 5 {
            cases.push(Case {
                message: Some("AssertionError: expected 3 users, got 2".into()),
                traceback: Some("tests/test_cart.py:30: AssertionError".into()),
                ..case("tests/test_cart.py::test_users", Failed, 0.1)
            });
        }
        runs.push(run_of("clu", i, cases));
    }
    // Project "slow", 8 runs (the last 3 recent): steady 1 s; regressed
    // 0.5 s then 2 s; one stalled recent run; a fast test.
    for i in 0..8 {
        runs.push(run_of(
            "slow",
            100 + i,
            vec![
                case("t::steady", Passed, 1.0),
                case("t::regressed", Passed, if i >= 5 { 2.0 } else { 0.5 }),
                case("t::stall", Passed, if i == 6 { 5.0 } else { 0.2 }),
                case("t::fast", Passed, 0.01),
            ],
        ));
    }
    // Project "retry": a test that passed only after a retry.
    runs.push(run_of(
        "retry",
        200,
        vec![
            Case {
                flaky: true,
                ..case("t::wobbly", Passed, 0.3)
            },
            case("t::solid", Passed, 0.1),
        ],
    ));
    publish_direct(&app.nats.url(), &runs, true).await;
    app.wait_run_count(runs.len()).await;

    let (status, c) = app.get("/failures/clusters?project=clu").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(
        (
            c["runs_considered"].as_u64(),
            c["failures"].as_u64(),
            c["total"].as_u64()
        ),
        (Some(6), Some(15), Some(3)),
        "{c}"
    );
    let db = &c["clusters"][0];
    assert_eq!(db["count"], 12);
    assert_eq!(db["runs"], 6);
    assert_eq!(db["exception"], "ConnectionError");
    assert_eq!(db["message"], "refused by db-<n>:<n>");
    assert_eq!(db["frame"], "tests/test_db.py");
    assert_eq!(
        db["tests"],
        json!(["tests/test_db.py::test_a", "tests/test_db.py::test_b"])
    );
    assert_eq!(db["example"]["run_id"], "clu-00005");
    assert_eq!(db["id"].as_str().map(str::len), Some(12));
    let cart = &c["clusters"][1];
    assert_eq!(
        (cart["count"].as_u64(), cart["runs"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(cart["message"], "expected <n> items, got <n>");
    assert_eq!(cart["tests"], json!(["tests/test_cart.py::test_total"]));
    let ms = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or(""))
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|e| panic!("{v}: {e}"))
    };
    assert_eq!(
        ms(&cart["first_seen"]),
        runs[4].0.started_at.timestamp_millis()
    );
    assert_eq!(
        ms(&cart["last_seen"]),
        runs[5].0.started_at.timestamp_millis()
    );
    assert_eq!(c["clusters"][2]["message"], "expected <n> users, got <n>");
    // The same cluster has the same id in a narrower window.
    let (_, last2) = app
        .get("/failures/clusters?project=clu&runs=2&limit=1")
        .await;
    assert_eq!(last2["total"], 3);
    assert_eq!(last2["clusters"][0]["id"], db["id"]);
    assert_eq!(last2["clusters"][0]["count"], 4);

    // History of an id with '/' and '::', percent-encoded.
    let (status, h) = app
        .get("/tests/tests%2Ftest_db.py%3A%3Atest_a/history?limit=4")
        .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["test_id"], "tests/test_db.py::test_a");
    let ids: Vec<&str> = h["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["run_id"].as_str())
        .collect();
    assert_eq!(ids, ["clu-00005", "clu-00004", "clu-00003", "clu-00002"]);
    assert_eq!(
        h["entries"][0]["message"],
        "ConnectionError: refused by db-5:5432"
    );
    assert_eq!(h["pass_rate"], 0.0);
    assert_eq!(h["median_duration_secs"], 0.5);

    let (status, s) = app.get("/tests/slow?project=slow&runs=8&recent=3").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["runs_considered"], 8);
    let order: Vec<&str> = s["slowest"]
        .as_array()
        .expect("slowest")
        .iter()
        .filter_map(|t| t["test_id"].as_str())
        .collect();
    assert_eq!(order, ["t::steady", "t::regressed", "t::stall", "t::fast"]);
    assert_eq!(s["slowest"][2]["max_secs"], 5.0);
    assert_eq!(s["regressions_total"], 1, "{s}");
    let r = &s["regressions"][0];
    assert_eq!(r["test_id"], "t::regressed");
    assert_eq!(
        (
            r["recent_median_secs"].as_f64(),
            r["baseline_median_secs"].as_f64()
        ),
        (Some(2.0), Some(0.5))
    );
    assert_eq!(
        (r["change_secs"].as_f64(), r["factor"].as_f64()),
        (Some(1.5), Some(4.0))
    );
    assert_eq!(
        (r["recent_runs"].as_u64(), r["baseline_runs"].as_u64()),
        (Some(3), Some(5))
    );
    // One run's slowest cases, for the report: slowest first, cut to 2.
    let (status, r7) = app
        .get("/results/slow-00107?order=duration&cases_limit=2")
        .await;
    assert_eq!(status, 200, "{r7}");
    let ids: Vec<&str> = r7["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter_map(|c| c["test_id"].as_str())
        .collect();
    assert_eq!(ids, ["t::regressed", "t::steady"]);
    assert_eq!(r7["cases_omitted"], 2);
    let (status, bad) = app.get("/results/slow-00107?order=name").await;
    assert_eq!(status, 400, "{bad}");
    // A stricter factor: no regression.
    let (_, strict) = app
        .get("/tests/slow?project=slow&runs=8&recent=3&factor=5")
        .await;
    assert_eq!(strict["regressions_total"], 0);
    for path in [
        "/tests/slow?runs=1",
        "/tests/slow?runs=8&recent=8",
        "/tests/slow?factor=0.5",
    ] {
        let (st, b) = app.get(path).await;
        assert_eq!(st, 400, "{path}: {b}");
    }

    let (_, f) = app.get("/flaky?project=retry").await;
    assert_eq!(f["total"], 1, "{f}");
    assert_eq!(f["tests"][0]["test_id"], "t::wobbly");
    assert_eq!(f["tests"][0]["reasons"], json!(["passed_on_retry"]));
    // The clu project's tests always fail: broken, not flaky.
    let (_, f) = app.get("/flaky?project=clu").await;
    assert_eq!(f["total"], 0, "{f}");
}
