//! Nothing lost, nothing doubled: each fault on real processes (nats-server
//! child, master binary or in-process master, agent binary), with exact
//! counts.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

fn agent_upload_report(dir: &std::path::Path, i: usize) -> std::path::PathBuf {
    let path = dir.join(format!("report-{i}.xml"));
    let xml = format!(
        r#"<testsuite name="s"><testcase classname="t.m" name="ok_{i}"/><testcase classname="t.m" name="also_ok"/><testcase classname="t.m" name="bad"><failure message="boom {i}">trace</failure></testcase></testsuite>"#
    );
    std::fs::write(&path, xml).expect("write report");
    path
}

/// 1. Master down while agents publish: all 100 runs arrive, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_down_while_100_agents_publish() {
    let mut app = TestApp::spawn().await;
    app.stop_master().await;
    let dir = tempfile::tempdir().expect("dir");
    for i in 0..100 {
        let report = agent_upload_report(dir.path(), i);
        let out = app
            .agent()
            .args(["upload"])
            .arg(&report)
            .output()
            .expect("agent");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    app.start_master().await;
    let runs = app.wait_run_count(100).await;
    assert_eq!(runs.len(), 100);
    assert!(runs.iter().all(|r| r["total"] == 3 && r["failed"] == 1));
    let (r, c, bad) = db_census(&app.store).await;
    assert_eq!((r, c, bad), (100, 300, 0));
    println!("master down: {r} runs, {c} cases, {bad} inconsistent");
    let (_, stats) = app.get("/failures/stats").await;
    assert_eq!(stats[0]["test_id"], "t.m::bad");
    assert_eq!(stats[0]["fail_count"], 100);
}

/// 2. Master killed with SIGKILL in the middle of a large ingest: after
/// restart every run is complete exactly once; no partial run is ever
/// visible through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_sigkilled_mid_ingest_recovers_exactly_once() {
    const RUNS: usize = 3000;
    const CASES: usize = 100;
    let nats = ptp_test_support::NatsServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let db = TestStore::new(dir.path()).await;
    let runs: Vec<_> = (0..RUNS)
        .map(|i| synthetic_run("kill9", i, CASES))
        .collect();
    publish_direct(&nats.url(), &runs, true).await;

    let http = reqwest::Client::new();
    let master = MasterProcess::start(&db, &nats.url()).await;
    // Watch ingest; check every visible run is whole; kill mid-way.
    let seen_at_kill = ptp_test_support::eventually(DEADLINE, "ingest to be under way", || async {
        let (_, page) = get_json(&http, &format!("{}/results?limit=20", master.base)).await;
        let page = page.as_array()?.clone();
        for r in &page {
            let id = r["run_id"].as_str()?;
            let (status, run) = get_json(
                &http,
                &format!("{}/results/{id}?cases_limit=1000", master.base),
            )
            .await;
            if status == 200 {
                assert_eq!(
                    run["cases"].as_array().map(Vec::len),
                    Some(CASES),
                    "a visible run is whole: {id}"
                );
            }
        }
        (!page.is_empty()).then_some(page.len())
    })
    .await;
    master.kill9();
    let (visible, _, bad) = db_census(&db).await;
    assert_eq!(bad, 0, "no partial run in the database after SIGKILL");
    assert!(seen_at_kill > 0);
    println!("killed with {visible} of {RUNS} runs stored");

    let master = MasterProcess::start(&db, &nats.url()).await;
    ptp_test_support::eventually(
        Duration::from_secs(120),
        "all runs after restart",
        || async {
            let (_, h) = get_json(&http, &format!("{}/health", master.base)).await;
            let (runs, _, _) = db_census(&db).await;
            (runs as usize == RUNS && h["status"] == "ok").then_some(())
        },
    )
    .await;
    let (r, c, bad) = db_census(&db).await;
    assert_eq!((r as usize, c as usize, bad), (RUNS, RUNS * CASES, 0));
    println!("after restart: {r} runs, {c} cases, {bad} inconsistent");
    let ids = all_run_ids(&http, &master.base).await;
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (ids.len(), unique.len()),
        (RUNS, RUNS),
        "paginated listing shows each run once"
    );
    assert_eq!(master.sigterm().await, Some(0));
}

/// 3. nats-server stopped while the agent runs: the agent spools, exits with
/// the test command's own code and says where; after the server is back,
/// `flush` delivers exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_during_agent_run_spools_then_flush_delivers_once() {
    let mut app = TestApp::spawn().await;
    let project = pytest_project();
    app.nats.stop();
    let out = app
        .agent()
        .env("PTP_PUBLISH_TIMEOUT", "2")
        .current_dir(project.path())
        .args(["run", "--"])
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .output()
        .expect("agent");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the test command's code, not a reporting error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "saved in the spool at {}",
            app.spool_dir().display()
        )),
        "{err}"
    );
    let run_id = run_id_from(&out);

    app.nats.restart();
    app.wait_healthy().await;
    let flush = app.agent().arg("flush").output().expect("flush");
    assert_eq!(
        flush.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&flush.stderr)
    );
    let run = app.wait_run(&run_id).await;
    assert_eq!(run["total"], 18);
    let again = app.agent().arg("flush").output().expect("flush");
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to send"));
    // A later agent run also sends nothing twice.
    let (_, runs) = app.get("/results").await;
    assert_eq!(runs.as_array().map(Vec::len), Some(1));
}

/// 4. nats-server restarted while the master consumes: health reports the
/// outage while it lasts, the master reconnects by itself and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_rides_out_a_nats_restart() {
    let mut app = TestApp::spawn().await;
    let (status, _) = app
        .post(
            "/results",
            &json!({"run_id": "before", "worker_id": "w", "passed": 1, "total": 1}),
        )
        .await;
    assert_eq!(status, 202);
    app.wait_run("before").await;
    app.nats.stop();
    let health = ptp_test_support::eventually(DEADLINE, "health to report the outage", || async {
        let (status, body) = app.get("/health").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_ne!(health["nats"], "connected", "{health}");
    let (status, body) = app
        .post(
            "/results",
            &json!({"run_id": "during", "worker_id": "w", "passed": 1, "total": 1}),
        )
        .await;
    assert_eq!(status, 503, "a POST while NATS is away says so: {body}");
    assert!(body["detail"].as_str().unwrap_or("").contains("retry"));

    app.nats.restart();
    app.wait_healthy().await;
    let (status, _) = app
        .post(
            "/results",
            &json!({"run_id": "after", "worker_id": "w", "passed": 1, "total": 1}),
        )
        .await;
    assert_eq!(status, 202);
    app.wait_run("after").await;
    let (_, runs) = app.get("/results").await;
    assert_eq!(runs.as_array().map(Vec::len), Some(2));
}

/// 5. The same run published several times, even outside the server's
/// duplicate window (no message ids at all): stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_run_published_three_times_is_stored_once() {
    let app = TestApp::spawn().await;
    let run = synthetic_run("dup", 1, 2500);
    for _ in 0..3 {
        publish_direct(&app.nats.url(), std::slice::from_ref(&run), false).await;
    }
    let marker = synthetic_run("dup", 2, 10);
    publish_direct(&app.nats.url(), std::slice::from_ref(&marker), false).await;
    app.wait_run(&marker.0.run_id).await;
    let (r, c, bad) = db_census(&app.store).await;
    assert_eq!((r, c, bad), (2, 2510, 0));
    println!("published 3x: {r} runs, {c} cases, {bad} inconsistent");
    let (_, stats) = app.get("/failures/stats?limit=1").await;
    assert_eq!(
        stats[0]["fail_count"], 2,
        "one failure per run, duplicates not counted: {stats}"
    );
}

/// 6. SQLite locked by someone else: messages stay unacked and are retried;
/// health says why; nothing is lost once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_delays_but_loses_nothing() {
    use sqlx::Connection;
    let app = TestApp::spawn().await;
    let Some(path) = app
        .store
        .only_sqlite("a_locked_database_delays_but_loses_nothing")
    else {
        return;
    };
    let mut locker = sqlx::sqlite::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(path),
    )
    .await
    .expect("second connection");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .expect("lock");
    let (status, _) = app
        .post(
            "/results",
            &json!({"run_id": "while-locked", "worker_id": "w", "passed": 2, "total": 2}),
        )
        .await;
    assert_eq!(status, 202, "publishing does not need the database");
    let health =
        ptp_test_support::eventually(DEADLINE, "health to report the write failure", || async {
            let (status, body) = app.get("/health").await;
            (status == 503 && body["store_error"].is_string()).then_some(body)
        })
        .await;
    assert!(
        health["store_error"]
            .as_str()
            .unwrap_or("")
            .contains("locked"),
        "{health}"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    let run = app.wait_run("while-locked").await;
    assert_eq!(run["passed"], 2);
    app.wait_healthy().await;
}

/// 7. SIGTERM during ingest: in-flight work finishes and is acked, the
/// master exits 0, and nothing is left pending or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_ingest_finishes_acks_and_exits_0() {
    const RUNS: usize = 1500;
    let nats = ptp_test_support::NatsServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let db = TestStore::new(dir.path()).await;
    let runs: Vec<_> = (0..RUNS).map(|i| synthetic_run("term", i, 100)).collect();
    publish_direct(&nats.url(), &runs, true).await;
    let master = MasterProcess::start(&db, &nats.url()).await;
    let http = reqwest::Client::new();
    ptp_test_support::eventually(DEADLINE, "ingest to be under way", || async {
        let (_, page) = get_json(&http, &format!("{}/results?limit=1", master.base)).await;
        (!page.as_array()?.is_empty()).then_some(())
    })
    .await;
    assert_eq!(master.sigterm().await, Some(0), "graceful shutdown exits 0");
    let (stored, _, bad) = db_census(&db).await;
    assert_eq!(bad, 0);
    // Every message the master received was acked before it exited.
    let (_, ack_pending) = consumer_backlog(&nats.url()).await;
    assert_eq!(
        ack_pending, 0,
        "no unacked in-flight messages after SIGTERM"
    );
    println!("SIGTERM with {stored} of {RUNS} runs stored, 0 pending acks");

    let master = MasterProcess::start(&db, &nats.url()).await;
    ptp_test_support::eventually(
        Duration::from_secs(120),
        "the rest after restart",
        || async {
            let (runs, _, _) = db_census(&db).await;
            (runs as usize == RUNS).then_some(())
        },
    )
    .await;
    assert_eq!(db_census(&db).await, (RUNS as i64, (RUNS * 100) as i64, 0));
    assert_eq!(master.sigterm().await, Some(0));
}

/// 8. 100 agents publishing at once: all runs stored, counts exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_agents_at_once() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().expect("dir");
    let children: Vec<_> = (0..100)
        .map(|i| {
            let report = agent_upload_report(dir.path(), i);
            app.agent()
                .env("WORKER_ID", format!("runner-{i}"))
                .args(["upload"])
                .arg(report)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("agent")
        })
        .collect();
    let codes = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait").status.code())
            .collect::<Vec<_>>()
    })
    .await
    .expect("join");
    assert!(codes.iter().all(|c| *c == Some(0)), "{codes:?}");
    let runs = app.wait_run_count(100).await;
    assert_eq!(runs.len(), 100);
    assert_eq!(db_census(&app.store).await, (100, 300, 0));
    let (_, workers) = app.get("/workers").await;
    assert_eq!(workers.as_array().map(Vec::len), Some(100));
    println!("100 agents at once: 100 runs, 300 cases, 100 workers");
}

/// 9. A poison message: valid on the wire, but the store refuses to store it
/// (here a real trigger aborts the insert of one test id). The other runs of
/// the same batch are stored; the culprit is retried up to max deliveries,
/// then kept as a dead letter with its payload; the stream keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_blocks_nothing() {
    let app = TestApp::spawn().await;
    let pool = TestPool::open_writable(&app.store).await;
    pool.execute(match &app.store {
        TestStore::Sqlite(_) => {
            "CREATE TRIGGER poison BEFORE INSERT ON tests \
             WHEN NEW.test_id = 'tests/test_poison.py::test_it' \
             BEGIN SELECT RAISE(ABORT, 'this row is poison'); END"
        }
        // A constraint's error code: the data's fault, as on SQLite.
        TestStore::Postgres(_) => {
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.test_id = 'tests/test_poison.py::test_it' THEN \
             RAISE EXCEPTION 'this row is poison' USING ERRCODE = 'check_violation'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER poison BEFORE INSERT ON tests FOR EACH ROW EXECUTE FUNCTION poison()"
        }
    })
    .await;
    pool.close().await;

    let mut runs: Vec<_> = (0..40).map(|i| synthetic_run("good", i, 50)).collect();
    let mut poison = synthetic_run("poison", 0, 50);
    poison.1[7].test_id = "tests/test_poison.py::test_it".into();
    runs.insert(20, poison);
    publish_direct(&app.nats.url(), &runs, true).await;

    ptp_test_support::eventually(DEADLINE, "the 40 good runs", || async {
        let (n, _, _) = db_census(&app.store).await;
        (n == 40).then_some(())
    })
    .await;
    let dead = ptp_test_support::eventually(DEADLINE, "a dead letter", || async {
        let (_, rejected) = app.get("/rejected").await;
        rejected
            .as_array()?
            .iter()
            .find(|r| r["dead_letter"] == true)
            .cloned()
    })
    .await;
    let reason = dead["reason"].as_str().unwrap_or_default();
    assert_eq!(dead["run_id"], "poison-00000", "{dead}");
    assert!(reason.contains("this row is poison"), "{reason}");
    // At least max deliveries (5): a delivery that met a busy database or
    // an expired ack wait under load counts too, so the number may be higher.
    let deliveries: u32 = reason
        .split(" on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no delivery count in {reason}"));
    assert!(
        deliveries >= 5,
        "dead-lettered before max deliveries: {reason}"
    );
    ptp_test_support::eventually(DEADLINE, "nothing left in flight", || async {
        (app.consumer_backlog().await == (0, 0)).then_some(())
    })
    .await;
    let (status, _) = app.get("/results/poison-00000").await;
    assert_eq!(status, 404, "a run missing a chunk never becomes visible");
    assert_eq!(db_census(&app.store).await, (40, 2000, 0));
    println!("poison: 40 good runs (2000 cases) stored; dead letter: {reason}");
    // The dead letter keeps the whole message, ready to replay.
    let pool = TestPool::open(&app.store).await;
    let payload = pool
        .bytes("SELECT payload FROM rejected WHERE run_id = 'poison-00000'")
        .await;
    pool.close().await;
    match ptp_nats::schema::decode(&payload).expect("the payload decodes") {
        ptp_nats::schema::WireMessage::Cases(c) => assert_eq!(c.cases.len(), 50),
        other => panic!("expected the poisoned chunk, got {other:?}"),
    }
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "the database itself is fine: {health}");
}
