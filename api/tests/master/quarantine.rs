//! `/quarantine` through the real master, broker and agent: a change made
//! through the API reaches the agents' key-value bucket, and the real agent
//! running a real pytest suite exits 0 while its only failure is
//! quarantined and 1 again once it is released. Also: the boundary's
//! checks, the per-project bound, and a change made while NATS is down
//! being mirrored once it is back (with `/health` saying so meanwhile).

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::helpers::*;

/// `test_ok` passes, `test_broken` always fails.
fn suite(dir: &Path) {
    std::fs::write(dir.join("pytest.ini"), "[pytest]\n").expect("ini");
    std::fs::write(
        dir.join("test_suite.py"),
        "def test_ok():\n    pass\n\ndef test_broken():\n    assert 1 == 2, 'always fails'\n",
    )
    .expect("suite");
}

async fn run_agent(app: &TestApp, dir: &Path) -> Output {
    let mut cmd = app.agent();
    cmd.current_dir(dir)
        .args(["run", "--"])
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"]);
    tokio::task::spawn_blocking(move || cmd.output().expect("agent runs"))
        .await
        .expect("joined")
}

async fn bucket(app: &TestApp, project: &str) -> Option<ptp_nats::quarantine::QuarantineList> {
    let client = async_nats::connect(app.nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    ptp_nats::quarantine::read(&js, project)
        .await
        .expect("the bucket exists and holds a valid list")
}

fn ids(list: &Option<ptp_nats::quarantine::QuarantineList>) -> Vec<String> {
    list.iter()
        .flat_map(|l| l.tests.iter().map(|t| t.test_id.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_through_the_api_turns_the_agents_build_green_and_release_red() {
    let app = TestApp::spawn().await;
    // The master creates the bucket at start: an agent finds it, empty.
    ptp_test_support::eventually(DEADLINE, "the bucket to exist", || async {
        let client = async_nats::connect(app.nats.url()).await.ok()?;
        let js = async_nats::jetstream::new(client);
        ptp_nats::quarantine::read(&js, "demo").await.ok()
    })
    .await;

    let dir = tempfile::tempdir().expect("dir");
    suite(dir.path());
    let first = run_agent(&app, dir.path()).await;
    assert_eq!(
        first.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let run = app.wait_run(&run_id_from(&first)).await;
    let broken = run["cases"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "test_broken"))
        .and_then(|c| c["test_id"].as_str())
        .unwrap_or_else(|| panic!("no test_broken in {run}"))
        .to_string();

    let (status, body) = app
        .post(
            "/quarantine",
            &json!({"project": "demo", "test_id": broken, "reason": "broken since the cache rewrite"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["state"], &body["mirrored"]),
        (&json!("quarantined"), &json!(true)),
        "{body}"
    );
    let list = bucket(&app, "demo").await;
    assert_eq!(ids(&list), std::slice::from_ref(&broken));
    let entry = &list.as_ref().expect("list").tests[0];
    assert_eq!(entry.reason, "broken since the cache rewrite");
    assert!(!entry.auto);
    let (_, listing) = app.get("/quarantine?project=demo").await;
    assert_eq!(listing["tests"][0]["test_id"], broken.as_str(), "{listing}");
    assert_eq!(listing["mirror_error"], Value::Null);

    let green = run_agent(&app, dir.path()).await;
    let err = String::from_utf8_lossy(&green.stderr);
    assert_eq!(
        green.status.code(),
        Some(0),
        "only failure quarantined: {err}"
    );
    assert!(err.contains("test_broken"), "the agent names it: {err}");

    let path = format!(
        "/quarantine/demo/{}",
        broken.replace('%', "%25").replace('/', "%2F")
    );
    let (status, body) = app.delete(&path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "released");
    assert_eq!(ids(&bucket(&app, "demo").await), Vec::<String>::new());
    let (status, body) = app.delete(&path).await;
    assert_eq!(status, 404, "released twice: {body}");

    let (_, spec) = app.get("/openapi.json").await;
    for path in ["/quarantine", "/quarantine/{project}/{test_id}"] {
        assert!(spec["paths"][path].is_object(), "openapi lacks {path}");
    }

    let red = run_agent(&app, dir.path()).await;
    assert_eq!(
        red.status.code(),
        Some(1),
        "released: it fails the build again: {}",
        String::from_utf8_lossy(&red.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_checks_its_input_and_bounds_each_project() {
    let app = TestApp::spawn().await;
    let past = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
    let far = (chrono::Utc::now() + chrono::TimeDelta::days(400)).to_rfc3339();
    let long_reason = "x".repeat(ptp_nats::quarantine::MAX_REASON_BYTES + 1);
    let long_id = "t".repeat(ptp_nats::schema::MAX_TEST_ID_BYTES + 1);
    for (body, want, needle) in [
        (
            json!({"project": "", "test_id": "t::a", "reason": "r"}),
            400,
            "required",
        ),
        (
            json!({"project": "p", "test_id": "t::a", "reason": " "}),
            400,
            "reason is required",
        ),
        (
            json!({"project": "p", "test_id": "t::a", "reason": long_reason}),
            400,
            "reason is",
        ),
        (
            json!({"project": "p", "test_id": long_id, "reason": "r"}),
            400,
            "test_id is",
        ),
        (
            json!({"project": "p", "test_id": "t::a", "reason": "r", "expires_at": past}),
            422,
            "after now",
        ),
        (
            json!({"project": "p", "test_id": "t::a", "reason": "r", "expires_at": far}),
            422,
            "within 366 days",
        ),
        (
            json!({"project": "p", "test_id": "t::a", "reason": "r", "colour": 1}),
            400,
            "unknown field",
        ),
    ] {
        let (status, got) = app.post("/quarantine", &body).await;
        assert_eq!(status, want, "{body}: {got}");
        let detail = got["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{body}: {detail}");
    }
    let (status, _) = app.get("/quarantine").await;
    assert_eq!(status, 400, "project is required");

    // An entry that expires is listed until it does; re-quarantining
    // replaces an entry rather than adding one.
    let soon = (chrono::Utc::now() + chrono::TimeDelta::days(3)).to_rfc3339();
    for reason in ["first", "second"] {
        let (status, body) = app
            .post(
                "/quarantine",
                &json!({"project": "bound", "test_id": "t::0", "reason": reason, "expires_at": soon}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, listing) = app.get("/quarantine?project=bound").await;
    assert_eq!(
        listing["tests"].as_array().map(Vec::len),
        Some(1),
        "{listing}"
    );
    assert_eq!(listing["tests"][0]["reason"], "second");
    assert!(listing["tests"][0]["expires_at"].is_string(), "{listing}");

    let max = ptp_nats::quarantine::MAX_TESTS;
    for i in 1..max {
        let (status, body) = app
            .post(
                "/quarantine",
                &json!({"project": "bound", "test_id": format!("t::{i}"), "reason": "r"}),
            )
            .await;
        assert_eq!(status, 200, "{i}: {body}");
    }
    let (status, body) = app
        .post(
            "/quarantine",
            &json!({"project": "bound", "test_id": "t::one-too-many", "reason": "r"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("at most {max}")), "{detail}");
    let list = bucket(&app, "bound").await;
    assert_eq!(
        ids(&list).len(),
        max,
        "the refused entry is neither stored nor mirrored"
    );
    // Another project has its own bound.
    let (status, body) = app
        .post(
            "/quarantine",
            &json!({"project": "other", "test_id": "t::one-too-many", "reason": "r"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_nats_is_down_is_stored_and_mirrored_when_it_is_back() {
    let mut app = TestApp::spawn().await;
    app.nats.stop();
    let (status, body) = app
        .post(
            "/quarantine",
            &json!({"project": "demo", "test_id": "t::late", "reason": "flaky"}),
        )
        .await;
    assert_eq!(status, 200, "stored even so: {body}");
    assert_eq!(body["mirrored"], false, "{body}");
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 503, "{health}");
    assert!(
        health["quarantine_mirror_error"]
            .as_str()
            .is_some_and(|e| e.contains("1 project")),
        "{health}"
    );
    let (_, listing) = app.get("/quarantine?project=demo").await;
    assert_eq!(listing["tests"][0]["test_id"], "t::late", "{listing}");

    app.nats.restart();
    let list = ptp_test_support::eventually(DEADLINE, "the mirror to catch up", || async {
        let client = async_nats::connect(app.nats.url()).await.ok()?;
        let js = async_nats::jetstream::new(client);
        ptp_nats::quarantine::read(&js, "demo").await.ok().flatten()
    })
    .await;
    assert_eq!(ids(&Some(list)), ["t::late"]);
    app.wait_healthy().await;
    let (_, health) = app.get("/health").await;
    assert_eq!(health["quarantine_mirror_error"], Value::Null, "{health}");
}
