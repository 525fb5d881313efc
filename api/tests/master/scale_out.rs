//! Beyond one machine, on real parts: three nats-server children clustered
//! on loopback (the results stream replicated three times), one PostgreSQL
//! database of the test's own, two master processes sharing it and the
//! stream. Fifty agents wrap real pytest runs; between the two waves one
//! NATS node (the stream's leader) and one master die by SIGKILL, and the
//! master is started again later. Every run must be stored exactly once
//! with exact counts, and both masters must answer `/results`, `/trend`,
//! `/failures/stats` and `/flaky` identically.
//!
//! PostgreSQL always: two masters cannot share a SQLite file (the registry
//! refuses; `masters.rs` tests that). It runs in the default pass and says
//! SKIPPED in the `PTP_TEST_STORE=postgres` one, which would repeat it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ptp_test_support::{NatsCluster, PgDatabase, cargo_bin, eventually, python};
use serde_json::Value;

use crate::helpers::*;

/// Agents in the test, in two waves.
const AGENTS: usize = 50;

/// A master process on `db` over the cluster at `urls`, named `name`.
async fn master(db: &TestStore, urls: &str, name: &str) -> MasterProcess {
    MasterProcess::start_with_env(
        db,
        urls,
        &[
            ("PTP_STREAM_REPLICAS", "3"),
            ("PTP_MASTER_NAME", name),
            // A killed master's leases pass on quickly.
            ("PTP_MASTER_TTL_SECS", "6"),
        ],
    )
    .await
}

/// One agent wrapping pytest in `project`, publishing to every node of
/// `urls`, as worker `i`. Spawned, not waited for.
fn agent(urls: &str, project: &Path, spool: &Path, i: usize) -> std::process::Child {
    Command::new(cargo_bin("ptp-agent"))
        .current_dir(project)
        .env("NATS_URL", urls)
        .env("WORKER_ID", format!("runner-{i:02}"))
        .env("PROJECT", "scale")
        .env("BRANCH", "main")
        .env("COMMIT", format!("c{}", i % 5))
        .env("PTP_SPOOL_DIR", spool)
        // Long enough to outlast a stream leader election (~7 s).
        .env("PTP_PUBLISH_TIMEOUT", "30")
        .env_remove("PTP_STRICT")
        .args(["run", "--"])
        .arg(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!(
            "--junitxml={}",
            project.join(format!("r{i}.xml")).display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent starts")
}

/// Waits for the agents; each must exit as pytest did (1: the fixture
/// suite has failures) and print its run id.
async fn wait_agents(children: Vec<std::process::Child>) -> Vec<String> {
    let outs: Vec<Output> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait for agent"))
            .collect()
    })
    .await
    .expect("join");
    outs.iter()
        .map(|o| {
            assert_eq!(
                o.status.code(),
                Some(1),
                "pytest's exit code passes through; stderr:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            run_id_from(o)
        })
        .collect()
}

/// Runs whatever an agent spooled (a publish that outlived its timeout).
fn flush(urls: &str, spool: &Path) {
    let out = Command::new(cargo_bin("ptp-agent"))
        .env("NATS_URL", urls)
        .env("PTP_SPOOL_DIR", spool)
        .arg("flush")
        .output()
        .expect("flush runs");
    assert!(
        out.status.success(),
        "flush: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn stream_leader(urls: &str) -> Option<String> {
    let client = async_nats::connect(ptp_nats::server_addrs(urls).ok()?)
        .await
        .ok()?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(ptp_nats::STREAM).await.ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.as_ref()?.leader.clone()
}

/// The answers both masters must agree on.
const COMPARED: [&str; 5] = [
    "/results?limit=500",
    "/trend?limit=500",
    "/failures/stats?limit=100",
    "/flaky",
    "/workers",
];

/// `path` on `base`, without what differs between masters by design
/// (a worker's heartbeat times are in-memory on each master).
async fn answer(http: &reqwest::Client, base: &str, path: &str) -> Option<Value> {
    let (status, mut v) = get_json(http, &format!("{base}{path}")).await;
    if status != 200 {
        return None;
    }
    if path == "/workers" {
        // Heartbeats live in each master's memory; the stored part must agree.
        for w in v.as_array_mut()? {
            let o = w.as_object_mut()?;
            o.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "worker_id" | "run_count" | "pass_rate" | "last_run_id"
                )
            });
        }
    }
    Some(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_two_masters_one_database_lose_nothing_when_a_node_and_a_master_die() {
    if std::env::var("PTP_TEST_STORE").as_deref() == Ok("postgres") {
        eprintln!(
            "SKIPPED: the scale-out test runs once, in the default pass (always on PostgreSQL)"
        );
        return;
    }
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let db = TestStore::Postgres(PgDatabase::create().await);
    let a = master(&db, &urls, "master-a").await;
    let b = master(&db, &urls, "master-b").await;
    let http = reqwest::Client::new();
    for m in [&a, &b] {
        let h = eventually(DEADLINE, "both masters healthy and sharing", || async {
            let (status, h) = get_json(&http, &format!("{}/health", m.base)).await;
            (status == 200 && h["masters"]["peers"].as_array()?.len() == 1).then_some(h)
        })
        .await;
        assert_eq!(h["masters"]["other_masters"], serde_json::json!([]), "{h}");
    }

    let work = tempfile::tempdir().expect("dir");
    let spools: Vec<_> = (0..AGENTS)
        .map(|i| work.path().join(format!("spool{i}")))
        .collect();
    let projects: Vec<_> = (0..AGENTS).map(|_| pytest_project()).collect();
    let wave = |range: std::ops::Range<usize>| {
        range
            .map(|i| agent(&urls, projects[i].path(), &spools[i], i))
            .collect::<Vec<_>>()
    };
    let mut ids = wait_agents(wave(0..AGENTS / 2)).await;

    // Midway: the stream's leader and master A die by SIGKILL.
    let leader = eventually(DEADLINE, "the stream's leader", || stream_leader(&urls)).await;
    cluster
        .node_mut(&leader)
        .unwrap_or_else(|| panic!("no node named {leader}"))
        .stop();
    a.kill9();
    println!("killed NATS node {leader} and master-a (SIGKILL)");
    let second = wave(AGENTS / 2..AGENTS);
    ids.extend(wait_agents(second).await);
    for s in &spools {
        flush(&urls, s);
    }
    let a = master(&db, &urls, "master-a").await;
    cluster
        .node_mut(&leader)
        .unwrap_or_else(|| panic!("no node named {leader}"))
        .restart();
    println!("master-a and {leader} started again");

    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), AGENTS, "every agent made its own run");
    for m in [&a, &b] {
        let listed = eventually(DEADLINE, "all 50 runs listed on both masters", || async {
            let ids = all_run_ids(&http, &m.base).await;
            (ids.len() >= AGENTS).then_some(ids)
        })
        .await;
        let mut listed = listed;
        listed.sort();
        assert_eq!(listed, ids, "each run stored once, on {}", m.base);
    }
    let (runs, cases, inconsistent) = db_census(&db).await;
    let junit = projects[0].path().join("r0.xml");
    let per_run = oracle_cases(&junit).len() as i64;
    assert_eq!(
        (runs, cases, inconsistent),
        (AGENTS as i64, AGENTS as i64 * per_run, 0),
        "exact counts in the one database"
    );
    for path in COMPARED {
        let (on_a, on_b) = eventually(
            Duration::from_secs(5),
            &format!("both masters to answer {path} alike"),
            || async {
                let x = answer(&http, &a.base, path).await?;
                let y = answer(&http, &b.base, path).await?;
                (x == y).then_some((x, y))
            },
        )
        .await;
        assert_eq!(on_a, on_b, "{path}");
    }
    println!(
        "{AGENTS} agents, 2 masters, 3 NATS nodes: {runs} runs, {cases} cases, answers identical"
    );
    assert_eq!(a.sigterm().await, Some(0));
    assert_eq!(b.sigterm().await, Some(0));
}
