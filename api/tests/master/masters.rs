//! Several masters on one NATS server (`ptp_api::cluster`): a master on
//! SQLite refuses to share the results stream, a second master on the same
//! SQLite file is refused by the lock, a master killed with SIGKILL comes
//! back on its file within the TTL, and the leases (maintenance, webhook
//! delivery) pass from one holder to another on a real nats-server.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ptp_api::cluster::{self, Holder, Lease};
use ptp_test_support::{NatsServer, cargo_bin, eventually};
use serde_json::json;

use crate::helpers::*;

/// The master binary on `db`, named `name`, its stderr kept; waits for it
/// to exit (within [`DEADLINE`]) and returns what it printed.
async fn master_binary_exit(db: &Path, nats_url: &str, name: &str) -> Output {
    let port = ptp_test_support::free_port();
    let child = Command::new(cargo_bin("ptp-master"))
        .env("NATS_URL", nats_url)
        .env("PTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("PTP_DB", db)
        .env("PTP_MASTER_NAME", name)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("master binary starts");
    let pid = child.id();
    let waited = tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    match waited {
        Ok(joined) => joined.expect("join").expect("wait"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the second master (pid {pid}) did not exit within {DEADLINE:?}");
        }
    }
}

async fn kv(nats_url: &str) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(nats_url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    eventually(DEADLINE, "the masters' bucket", || {
        let js = js.clone();
        async move { js.get_key_value(cluster::BUCKET).await.ok() }
    })
    .await
}

/// The values of the live `master.*` entries.
async fn registered(store: &async_nats::jetstream::kv::Store) -> Vec<serde_json::Value> {
    use futures::TryStreamExt;
    let Ok(keys) = store.keys().await else {
        return Vec::new();
    };
    let keys: Vec<String> = keys.try_collect().await.unwrap_or_default();
    let mut out = Vec::new();
    for k in keys.iter().filter(|k| k.starts_with("master.")) {
        if let Ok(Some(v)) = store.get(k.as_str()).await {
            out.push(serde_json::from_slice(&v).expect("a registration is JSON"));
        }
    }
    out
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `/metrics` of the master at `base`, `None` while it does not answer.
async fn try_metrics_text(http: &reqwest::Client, base: &str) -> Option<String> {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    try_metrics_text(http, base).await.expect("GET /metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_master_on_another_sqlite_file_is_refused_and_names_the_first() {
    let app = TestApp::spawn_with(|c| c.master_name = Some("master-a".into())).await;
    let (_, health) = app.get("/health").await;
    assert_eq!(health["masters"]["registry"], "ok", "{health}");
    assert_eq!(health["masters"]["leases"]["maintenance"], true, "{health}");
    assert_eq!(health["masters"]["leases"]["webhooks"], true, "{health}");
    let text = metrics_text(&app.http, app.base()).await;
    assert_eq!(
        sample(&text, "ptp_lease_held{job=\"maintenance\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "ptp_lease_held{job=\"webhooks\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "ptp_other_masters"), Some(0.0), "{text}");

    let other_db = app.dir.path().join("other.sqlite");
    let out = master_binary_exit(&other_db, &app.nats.url(), "master-b").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second master must fail: {stderr}"
    );
    let first_db = match &app.store {
        TestStore::Sqlite(p) => p.canonicalize().expect("db exists"),
        TestStore::Postgres(_) => app.store.target().identity().into(),
    };
    for needle in [
        "master \"master-a\"",
        &first_db.display().to_string(),
        "s ago",
        "Stop the other master",
        "its own NATS server or account",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    assert_eq!(
        registered(&kv(&app.nats.url()).await).await.len(),
        1,
        "the refused master did not register"
    );

    // The first keeps working.
    let (status, _) = app
        .post(
            "/results",
            &json!({"run_id": "after-refusal", "worker_id": "w", "passed": 1, "total": 1}),
        )
        .await;
    assert_eq!(status, 202);
    app.wait_run("after-refusal").await;
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "{health}");

    // A master that registered without the check (a race at start) is
    // seen at the next beat: logged, and /health says so.
    let store = kv(&app.nats.url()).await;
    let intruder = json!({"name": "master-c", "host": "elsewhere", "pid": 7, "store": "sqlite",
                          "db": "/srv/c.sqlite", "started_at": "2026-01-01T00:00:00Z"});
    store
        .put(
            "master.intruder",
            serde_json::to_vec(&intruder).expect("json").into(),
        )
        .await
        .expect("put");
    let health = eventually(DEADLINE, "/health to name the other master", || async {
        let (status, h) = app.get("/health").await;
        (status == 503 && h["masters"]["other_masters"].as_array()?.len() == 1).then_some(h)
    })
    .await;
    let named = health["masters"]["other_masters"][0].as_str().unwrap_or("");
    assert!(
        named.contains("master-c") && named.contains("/srv/c.sqlite"),
        "{health}"
    );
    assert_eq!(health["status"], "degraded");
    let text = metrics_text(&app.http, app.base()).await;
    assert_eq!(sample(&text, "ptp_other_masters"), Some(1.0), "{text}");
    store.delete("master.intruder").await.expect("delete");
    app.wait_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_master_on_the_same_sqlite_file_is_refused_by_the_lock() {
    let app = TestApp::spawn().await;
    let Some(path) = app
        .store
        .only_sqlite("a_second_master_on_the_same_sqlite_file_is_refused_by_the_lock")
    else {
        return;
    };
    let out = master_binary_exit(path, &app.nats.url(), "same-file").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second master must fail: {stderr}"
    );
    assert!(
        stderr.contains("another master is already using")
            && stderr.contains("ptp.sqlite.master.lock")
            && stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "the first master is unaffected: {health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_with_sigkill_starts_again_on_its_file_within_the_ttl() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let db = TestStore::new(dir.path()).await;
    if db
        .only_sqlite("a_master_killed_with_sigkill_starts_again_on_its_file_within_the_ttl")
        .is_none()
    {
        return;
    }
    // A long TTL, so the killed master's entry and leases surely outlive
    // the restart: the new process must recognise them as its own.
    let envs = [("PTP_MASTER_TTL_SECS", "120")];
    let first = MasterProcess::start_with_env(&db, &nats.url(), &envs).await;
    let first_pid = first.pid();
    let store = kv(&nats.url()).await;
    eventually(DEADLINE, "the first master registered", || async {
        let r = registered(&store).await;
        (r.len() == 1 && r[0]["pid"] == first_pid).then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    eventually(
        DEADLINE,
        "the first master holding the maintenance lease",
        || async {
            let text = try_metrics_text(&http, &first.base).await?;
            (sample(&text, "ptp_lease_held{job=\"maintenance\"}") == Some(1.0)).then_some(())
        },
    )
    .await;
    first.kill9();
    let left = registered(&store).await;
    assert_eq!(
        left.len(),
        1,
        "the killed master's entry lives on for the TTL"
    );
    assert_eq!(left[0]["pid"], first_pid);

    let second = MasterProcess::start_with_env(&db, &nats.url(), &envs).await;
    let second_pid = second.pid();
    let health = eventually(DEADLINE, "the restarted master healthy", || async {
        let (status, h) = get_json(&http, &format!("{}/health", second.base)).await;
        (status == 200).then_some(h)
    })
    .await;
    assert_eq!(health["masters"]["registry"], "ok", "{health}");
    let r = registered(&store).await;
    assert_eq!(r.len(), 1, "one entry, the restarted master's: {r:?}");
    assert_eq!(r[0]["pid"], second_pid);
    // Its predecessor's leases are taken over at once, not after the TTL.
    let text = eventually(Duration::from_secs(30), "the leases taken over", || async {
        let text = try_metrics_text(&http, &second.base).await?;
        (sample(&text, "ptp_lease_held{job=\"maintenance\"}") == Some(1.0)
            && sample(&text, "ptp_lease_held{job=\"webhooks\"}") == Some(1.0))
        .then_some(text)
    })
    .await;
    assert!(text.contains("ptp_other_masters 0"), "{text}");
    assert_eq!(second.sigterm().await, Some(0));
    assert!(
        registered(&store).await.is_empty(),
        "a clean shutdown deregisters"
    );
}

const TTL: Duration = Duration::from_secs(2);

fn settings() -> cluster::Settings {
    cluster::Settings {
        ttl: TTL,
        replicas: 1,
    }
}

fn holder(id: &str) -> Holder {
    Holder {
        id: id.into(),
        name: id.into(),
        host: "test".into(),
        pid: std::process::id(),
    }
}

async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await
        .expect("connect");
    async_nats::jetstream::new(client)
}

/// Waits until exactly one of `leases` is held; returns its index.
async fn one_holder(leases: &[&Lease], within: Duration) -> usize {
    eventually(within, "exactly one lease holder", || async {
        let held: Vec<usize> = (0..leases.len()).filter(|&i| leases[i].is_held()).collect();
        (held.len() == 1).then(|| held[0])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_and_passes_on_when_the_holder_stops_refreshing() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    let a = Lease::spawn(js.clone(), "job", holder("a"), settings());
    let b = Lease::spawn(js.clone(), "job", holder("b"), settings());
    let first = one_holder(&[&a, &b], DEADLINE).await;
    // For three TTLs (several refreshes and expiries) never both, and the
    // same holder throughout.
    let watch_until = Instant::now() + TTL * 3;
    while Instant::now() < watch_until {
        let held = [a.is_held(), b.is_held()];
        assert!(
            held[first] && !held[1 - first],
            "holder changed or both hold: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (current, other) = if first == 0 { (a, b) } else { (b, a) };
    // Stops refreshing without releasing, as a killed master does.
    drop(current);
    let dropped = Instant::now();
    eventually(
        TTL + Duration::from_secs(5),
        "the other contender to take the lease",
        || async { other.is_held().then_some(()) },
    )
    .await;
    let took = dropped.elapsed();
    println!("the lease passed on {took:?} after its holder stopped refreshing (TTL {TTL:?})");
    assert!(
        took >= TTL / 2,
        "taken before the holder's entry could expire: {took:?}"
    );
    assert!(took <= TTL + Duration::from_secs(3), "{took:?}");

    // A release hands it over within a beat, without waiting for the TTL.
    let c = Lease::spawn(js.clone(), "job", holder("c"), settings());
    other.release().await;
    let released = Instant::now();
    eventually(
        TTL,
        "the released lease taken by the next contender",
        || async { c.is_held().then_some(()) },
    )
    .await;
    assert!(released.elapsed() < TTL, "{:?}", released.elapsed());
    let store = cluster::open_bucket(&js, settings()).await.expect("bucket");
    assert_eq!(
        cluster::lease::holder_id(&store, "job").await.as_deref(),
        Some("c")
    );
    c.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_given_up_while_nats_is_away_and_taken_once_it_is_back() {
    let mut nats = NatsServer::start();
    nats.stop();
    // NATS unreachable at start: nothing held, and the work waits.
    let js = jetstream(&nats.url()).await;
    let lease = Lease::spawn(js.clone(), "maintenance", holder("solo"), settings());
    let mut held = lease.held();
    let early = tokio::time::timeout(TTL, held.wait_for(|h| *h))
        .await
        .is_ok();
    assert!(!early, "no lease without NATS");
    nats.restart();
    eventually(
        DEADLINE,
        "the lease taken once NATS is reachable",
        || async { lease.is_held().then_some(()) },
    )
    .await;
    // NATS goes away: the holder stops acting within the TTL.
    nats.stop();
    let stopped = Instant::now();
    eventually(
        TTL + Duration::from_secs(3),
        "the lease given up",
        || async { (!lease.is_held()).then_some(()) },
    )
    .await;
    assert!(
        stopped.elapsed() <= TTL + Duration::from_secs(1),
        "{:?}",
        stopped.elapsed()
    );
    nats.restart();
    eventually(DEADLINE, "the lease taken again", || async {
        lease.is_held().then_some(())
    })
    .await;
    lease.release().await;
}

/// NATS unreachable when the master starts: it serves reads, holds no
/// lease and prunes nothing; once NATS is back it takes the maintenance
/// lease and prunes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_waits_for_its_lease_while_nats_is_away_and_runs_once_it_is_back() {
    let mut app = TestApp::spawn().await;
    let runs: Vec<_> = (0..3).map(|i| synthetic_run("lease", i, 5)).collect();
    publish_direct(&app.nats.url(), &runs, true).await;
    app.wait_run_count(3).await;
    app.stop_master().await;

    app.nats.stop();
    let mut config = ptp_api::Config::for_test(app.store.target(), app.nats.url());
    config.retention_runs = 1;
    app.master = Some(Master::start_with(config).await);
    let h = eventually(DEADLINE, "the master answering without NATS", || async {
        let (status, h) = app.get("/health").await;
        (status == 503).then_some(h)
    })
    .await;
    assert_ne!(h["nats"], "connected", "{h}");
    assert_eq!(h["masters"]["registry"], "checking", "{h}");
    assert_eq!(h["masters"]["leases"]["maintenance"], false, "{h}");
    let (_, listed) = app.get("/results?limit=500").await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(3),
        "nothing pruned without the lease: {listed}"
    );

    app.nats.restart();
    eventually(
        DEADLINE,
        "retention to run once the lease is held",
        || async {
            let (_, listed) = app.get("/results?limit=500").await;
            (listed.as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    let (_, h) = app.get("/health").await;
    assert_eq!(h["masters"]["leases"]["maintenance"], true, "{h}");
    assert_eq!(db_census(&app.store).await.0, 1);
}
