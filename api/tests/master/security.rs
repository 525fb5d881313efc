//! Who may write and who may read: API tokens on the master, and NATS
//! accounts that let agents publish results and nothing else.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// Writes need a write token (two at once: rotation); reads need a read or
/// write token; /health stays open; a refused write stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_guard_writes_and_reads() {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    app.start_master_with(|c| {
        c.write_tokens = vec!["w-old".into(), "w-new".into()];
        c.read_tokens = vec!["r-1".into()];
    })
    .await;
    let url = format!("{}/results", app.base());
    let run = |id: &str| json!({"run_id": id, "worker_id": "w", "passed": 1, "total": 1});

    let r = app
        .http
        .post(&url)
        .json(&run("anonymous"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"pytest-platform\"")
    );
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "unauthorized");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("PTP_WRITE_TOKENS"),
        "says which token: {body}"
    );
    for (id, token, want) in [
        ("wrong-token", "w-older", 401),
        ("read-token", "r-1", 401),
        ("with-old", "w-old", 202),
        ("with-new", "w-new", 202),
    ] {
        let r = app
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&run(id))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), want, "POST with {token}");
    }

    let (status, _) = app.get("/results").await;
    assert_eq!(status, 401, "reads need a token too");
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "health stays open: {health}");
    let listed = ptp_test_support::eventually(DEADLINE, "both written runs", || async {
        let r = app.http.get(&url).bearer_auth("r-1").send().await.ok()?;
        let runs: Vec<serde_json::Value> = r.json().await.ok()?;
        (runs.len() == 2).then_some(runs)
    })
    .await;
    let mut ids: Vec<&str> = listed.iter().filter_map(|r| r["run_id"].as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["with-new", "with-old"],
        "refused writes stored nothing"
    );
    let r = app
        .http
        .get(&url)
        .bearer_auth("w-new")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200, "a write token reads too");
}

/// With the NATS accounts of `deploy/nats.conf` (agents publish results and heartbeats
/// only), a real agent run is stored, and the agent's credentials can
/// neither publish elsewhere nor touch the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_credentials_publish_results_and_nothing_else() {
    let dir = tempfile::tempdir().expect("dir");
    // The very file docker-compose.yml mounts.
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats.conf");
    let nats = ptp_test_support::NatsServer::start_with_env(
        &["-c", &conf.to_string_lossy()],
        &[
            ("PTP_AGENT_NATS_PASSWORD", "agent-pw"),
            ("PTP_MASTER_NATS_PASSWORD", "master-pw"),
        ],
    );

    let store = TestStore::new(dir.path()).await;
    let mut config = ptp_api::Config::for_test(store.target(), nats.url());
    config.nats_auth.nats_user = Some("master".into());
    config.nats_auth.nats_password = Some("master-pw".into());
    let master = Master::start_with(config).await;
    let http = reqwest::Client::new();
    ptp_test_support::eventually(DEADLINE, "the master to be healthy", || async {
        let (status, _) = get_json(&http, &format!("{}/health", master.base)).await;
        (status == 200).then_some(())
    })
    .await;

    let report = dir.path().join("report.xml");
    std::fs::write(
        &report,
        r#"<testsuite><testcase classname="t" name="ok"/><testcase classname="t" name="bad"><failure message="no"/></testcase></testsuite>"#,
    )
    .expect("report");
    let agent = |user: &str, password: &str| {
        let mut c = std::process::Command::new(ptp_test_support::cargo_bin("ptp-agent"));
        c.env("NATS_URL", nats.url())
            .env("NATS_USER", user)
            .env("NATS_PASSWORD", password)
            .env("PROJECT", "secure")
            .env("WORKER_ID", "locked-down")
            .env("PTP_SPOOL_DIR", dir.path().join("spool"))
            .env("PTP_PUBLISH_TIMEOUT", "3")
            .args(["upload"])
            .arg(&report);
        c
    };
    let out = agent("agent", "wrong-pw").output().expect("agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spool"),
        "a refused login spools the run: {err}"
    );

    let out = agent("agent", "agent-pw").output().expect("agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let runs = ptp_test_support::eventually(DEADLINE, "the agent's run", || async {
        let (_, runs) = get_json(&http, &format!("{}/results", master.base)).await;
        let runs = runs.as_array()?.clone();
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0]["passed"].as_u64(), runs[0]["failed"].as_u64()),
        (Some(1), Some(1))
    );

    // The agent's credentials, used for anything else, are refused by the
    // server: publishing outside its subjects, or deleting the stream.
    let (tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let client =
        async_nats::ConnectOptions::with_user_and_password("agent".into(), "agent-pw".into())
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(nats.url())
            .await
            .expect("agent connects");
    client
        .publish("ptp.admin.anything", "x".into())
        .await
        .expect("sent");
    client.flush().await.expect("flush");
    let first = tokio::time::timeout(Duration::from_secs(30), errors.recv())
        .await
        .expect("the server answers")
        .expect("an error");
    assert!(
        first.contains("Permissions Violation") && first.contains("ptp.admin.anything"),
        "{first}"
    );
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(2));
    assert!(
        js.delete_stream(ptp_nats::STREAM).await.is_err(),
        "an agent cannot delete the stream"
    );
    let denied = tokio::time::timeout(Duration::from_secs(30), errors.recv())
        .await
        .expect("the server answers")
        .expect("an error");
    assert!(denied.contains("$JS.API.STREAM.DELETE"), "{denied}");

    // The stream is intact and the master still healthy.
    let (status, health) = get_json(&http, &format!("{}/health", master.base)).await;
    assert_eq!(status, 200, "{health}");
    master.stop().await;
}
