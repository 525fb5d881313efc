//! Owners and quarantine marks through the real master and broker (issue
//! 15): cases keep the owners and the quarantined mark the agent sent and
//! `/results/{id}` shows them; the `owner=` filter of `/failures/stats`,
//! `/flaky`, `/failures/clusters` and `/tests/slow` lists only that owner's
//! tests, by the owners of the newest run; and automatic quarantine puts a
//! flaky test on the list (and in the agents' bucket) and takes it off after
//! clean runs or a cleared verdict, never touching a person's entry.

use std::collections::BTreeSet;

use ptp_nats::schema::{Counts, Outcome, RunInfo, TestCase};
use serde_json::{Value, json};

use crate::helpers::*;

const CART: &str = "@acme/cart";
const PAY: &str = "pay-team@example.com";

/// The tests and their owners in every run but the last; in the last,
/// `t::pay_b` belongs to the cart team.
fn owners_of(test: &str, last: bool) -> Vec<String> {
    match test {
        "t::cart_a" | "t::cart_b" => vec![CART.into()],
        "t::pay_b" if last => vec![CART.into()],
        "t::pay_a" | "t::pay_b" => vec![PAY.into()],
        "t::shared" => vec![CART.into(), PAY.into()],
        _ => Vec::new(),
    }
}

const TESTS: [&str; 6] = [
    "t::cart_a",
    "t::cart_b",
    "t::pay_a",
    "t::pay_b",
    "t::shared",
    "t::nobody",
];

/// Six runs in which every test fails every other run (flaky by flip rate),
/// `t::cart_a` marked quarantined in run 0.
fn owned_runs() -> Vec<(RunInfo, Vec<TestCase>)> {
    (0..6)
        .map(|i| {
            let mut r = synthetic_run("own", i, TESTS.len());
            for (k, (case, id)) in r.1.iter_mut().zip(TESTS).enumerate() {
                case.test_id = id.to_string();
                case.name = id.to_string();
                let fails = (i + k) % 2 == 0;
                case.outcome = if fails {
                    Outcome::Failed
                } else {
                    Outcome::Passed
                };
                case.message = fails.then(|| format!("AssertionError: {id} broke"));
                case.duration_secs = 1.0 + k as f64;
                case.owners = owners_of(id, i == 5);
                case.quarantined = i == 0 && id == "t::cart_a";
            }
            r.0.counts = Counts::of(&r.1);
            r
        })
        .collect()
}

fn ids_in(list: &Value, key: &str) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .filter_map(|x| x[key].as_str().map(str::to_string))
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_quarantine_marks_are_stored_and_filter_the_analytics() {
    let app = TestApp::spawn().await;
    publish_direct(&app.nats.url(), &owned_runs(), true).await;
    app.wait_run_count(6).await;

    // The run keeps the real outcomes, the marks and the owners.
    let first = app.wait_run("own-00000").await;
    assert_eq!(first["quarantined_failures"], 1, "{first}");
    let case = |run: &Value, id: &str| -> Value {
        run["cases"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["test_id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {run}"))
    };
    let cart_a = case(&first, "t::cart_a");
    assert_eq!(cart_a["outcome"], "failed", "the real outcome: {cart_a}");
    assert_eq!(cart_a["quarantined"], true);
    assert_eq!(cart_a["owners"], json!([CART]));
    let shared = case(&first, "t::shared");
    assert_eq!(shared["owners"], json!([CART, PAY]));
    assert!(
        shared.get("quarantined").is_none(),
        "absent when false: {shared}"
    );
    let nobody = case(&first, "t::nobody");
    assert!(nobody.get("owners").is_none(), "absent when none: {nobody}");
    let second = app.wait_run("own-00001").await;
    assert_eq!(second["quarantined_failures"], 0);

    // The newest run's owners count: t::pay_b is the cart team's now.
    let cart = set(&["t::cart_a", "t::cart_b", "t::pay_b", "t::shared"]);
    let pay = set(&["t::pay_a", "t::shared"]);
    let enc = |o: &str| o.replace('@', "%40").replace('/', "%2F");
    for (owner, want) in [(CART, &cart), (PAY, &pay)] {
        let o = enc(owner);
        for path in [
            format!("/failures/stats?project=synthetic&owner={o}"),
            format!("/failures/stats?owner={o}&days=30"),
            format!("/failures/stats?project=synthetic&branch=main&owner={o}"),
        ] {
            let (status, body) = app.get(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(&ids_in(&body, "test_id"), want, "{path}");
        }
        let path = format!("/flaky?project=synthetic&owner={o}");
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(&ids_in(&body["tests"], "test_id"), want, "{path}");
        assert_eq!(body["total"], want.len(), "{path}");

        let path = format!("/failures/clusters?project=synthetic&owner={o}");
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let listed: BTreeSet<String> = body["clusters"]
            .as_array()
            .expect("clusters")
            .iter()
            .flat_map(|c| c["tests"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        assert_eq!(&listed, want, "{path}: {body}");

        let path = format!("/tests/slow?project=synthetic&owner={o}&limit=100");
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(&ids_in(&body["slowest"], "test_id"), want, "{path}");
    }
    // Without the filter every test is there; an unknown owner has none.
    let (_, all) = app.get("/flaky?project=synthetic").await;
    assert_eq!(all["total"], TESTS.len(), "{all}");
    let (_, none) = app.get("/flaky?owner=%40nobody").await;
    assert_eq!(none["total"], 0, "{none}");

    let long = "o".repeat(300);
    for route in [
        "/failures/stats",
        "/flaky",
        "/failures/clusters",
        "/tests/slow",
    ] {
        for bad in ["", "%20", long.as_str()] {
            let path = format!("{route}?owner={bad}");
            let (status, body) = app.get(&path).await;
            assert_eq!(status, 400, "{path}: {body}");
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("owner"), "{path}: {detail}");
        }
    }
}

/// A run of `tests`, each `(test id, outcome, passed on retry)`.
fn run_of(i: usize, tests: &[(&str, Outcome, bool)]) -> (RunInfo, Vec<TestCase>) {
    let mut r = synthetic_run("auto", i, tests.len());
    for (case, (id, outcome, retried)) in r.1.iter_mut().zip(tests) {
        case.test_id = id.to_string();
        case.name = id.to_string();
        case.outcome = *outcome;
        case.message = None;
        case.flaky = *retried;
        case.retries = u32::from(*retried);
    }
    r.0.counts = Counts::of(&r.1);
    r
}

async fn listed(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get("/quarantine?project=synthetic").await;
    assert_eq!(status, 200, "{body}");
    body["tests"].as_array().cloned().unwrap_or_default()
}

async fn in_bucket(app: &TestApp) -> Vec<(String, bool)> {
    let client = async_nats::connect(app.nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    ptp_nats::quarantine::read(&js, "synthetic")
        .await
        .expect("the bucket holds a valid list")
        .map(|l| l.tests.into_iter().map(|t| (t.test_id, t.auto)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_tests_are_quarantined_automatically_and_released_after_clean_runs() {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    app.start_master_with(|c| {
        c.auto_quarantine_days = 7;
        c.release_after_clean_runs = 2;
    })
    .await;
    let (status, body) = app
        .post(
            "/quarantine",
            &json!({"project": "synthetic", "test_id": "t::manual", "reason": "by hand"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    use Outcome::Passed;
    let flaky_run = run_of(
        0,
        &[
            ("t::flaky", Passed, true),
            ("t::cleared", Passed, true),
            ("t::manual", Passed, true),
            ("t::steady", Passed, false),
        ],
    );
    publish_direct(&app.nats.url(), &[flaky_run], true).await;
    app.wait_run("auto-00000").await;
    let entries = ptp_test_support::eventually(DEADLINE, "automatic entries", || async {
        let l = listed(&app).await;
        (l.len() == 3).then_some(l)
    })
    .await;
    let by_id = |id: &str| -> Value {
        entries
            .iter()
            .find(|e| e["test_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {entries:?}"))
    };
    for id in ["t::flaky", "t::cleared"] {
        let e = by_id(id);
        assert_eq!(e["auto"], true, "{e}");
        let reason = e["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("passed_on_retry"), "{reason}");
        assert!(e["expires_at"].is_string(), "expires: {e}");
    }
    let manual = by_id("t::manual");
    assert_eq!(
        (&manual["auto"], &manual["reason"]),
        (&json!(false), &json!("by hand"))
    );
    // The agents see them as they would read them.
    let bucket = ptp_test_support::eventually(DEADLINE, "the bucket to list them", || async {
        let b = in_bucket(&app).await;
        (b.len() == 3).then_some(b)
    })
    .await;
    assert!(bucket.contains(&("t::flaky".into(), true)), "{bucket:?}");
    assert!(bucket.contains(&("t::manual".into(), false)), "{bucket:?}");

    // Clearing the verdict releases the automatic entry.
    let (status, body) = app
        .post(
            "/flaky/clear",
            &json!({"project": "synthetic", "test_id": "t::cleared", "note": "fixed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released"], true, "{body}");
    let left: BTreeSet<String> = ids_in(&Value::Array(listed(&app).await), "test_id");
    assert_eq!(left, set(&["t::flaky", "t::manual"]));

    // Two clean runs release t::flaky; the person's entry stays.
    for i in 1..=2 {
        let clean = run_of(
            i,
            &[
                ("t::flaky", Passed, false),
                ("t::cleared", Passed, false),
                ("t::manual", Passed, false),
            ],
        );
        publish_direct(&app.nats.url(), &[clean], true).await;
        app.wait_run(&format!("auto-{i:05}")).await;
    }
    let bucket = ptp_test_support::eventually(DEADLINE, "t::flaky released", || async {
        let b = in_bucket(&app).await;
        (b.len() == 1).then_some(b)
    })
    .await;
    assert_eq!(bucket, vec![("t::manual".to_string(), false)]);
    let left = listed(&app).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (&left[0]["test_id"], &left[0]["reason"]),
        (&json!("t::manual"), &json!("by hand"))
    );

    // A person's release holds the detector off: new evidence for a test a
    // person released does not quarantine it again within the period, while
    // another test's does (so the run was judged).
    let retried = run_of(3, &[("t::again", Passed, true)]);
    publish_direct(&app.nats.url(), &[retried], true).await;
    app.wait_run("auto-00003").await;
    ptp_test_support::eventually(DEADLINE, "t::again quarantined", || async {
        listed(&app)
            .await
            .iter()
            .any(|e| e["test_id"] == "t::again")
            .then_some(())
    })
    .await;
    let (status, body) = app.delete("/quarantine/synthetic/t::again").await;
    assert_eq!(status, 200, "{body}");
    let retried = run_of(4, &[("t::again", Passed, true), ("t::other", Passed, true)]);
    publish_direct(&app.nats.url(), &[retried], true).await;
    app.wait_run("auto-00004").await;
    let now = ptp_test_support::eventually(DEADLINE, "t::other quarantined", || async {
        let l = listed(&app).await;
        l.iter().any(|e| e["test_id"] == "t::other").then_some(l)
    })
    .await;
    let ids: BTreeSet<String> = ids_in(&Value::Array(now), "test_id");
    assert_eq!(
        ids,
        set(&["t::manual", "t::other"]),
        "t::again stays released"
    );
}
