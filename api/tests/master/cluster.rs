//! A NATS cluster under the master: three nats-server children routed on
//! loopback, the results stream replicated three times. The stream's
//! leader is killed while runs are being published; every run is stored
//! exactly once, and a master asked for more replicas than the cluster has
//! says which setting differs.

use std::time::Duration;

use ptp_test_support::{NatsCluster, eventually};

use crate::helpers::*;

/// Publishes `run` through any node of `urls`, retrying through a leader
/// election (publishes fail for some seconds while the stream elects).
async fn publish_through(
    js: &async_nats::jetstream::Context,
    run: &(ptp_nats::schema::RunInfo, Vec<ptp_nats::schema::TestCase>),
) {
    let msgs = ptp_nats::schema::encode_run(&run.0, &run.1, 1024 * 1024).expect("encode");
    eventually(
        DEADLINE,
        &format!("run {} accepted by the stream", run.0.run_id),
        || {
            let msgs = msgs.clone();
            async move { ptp_nats::publish_all(js, msgs).await.ok() }
        },
    )
    .await;
}

async fn stream_leader(js: &async_nats::jetstream::Context) -> Option<String> {
    let mut stream = js.get_stream(ptp_nats::STREAM).await.ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.as_ref()?.leader.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_loses_nothing_when_its_leader_dies() {
    let mut cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = TestStore::new(dir.path()).await;
    let mut config = ptp_api::Config::for_test(store.target(), cluster.urls());
    config.stream_replicas = 3;
    let master = Master::start_with(config).await;
    let http = reqwest::Client::new();
    let health = format!("{}/health", master.base);
    eventually(DEADLINE, "the master healthy on the cluster", || async {
        let (status, _) = get_json(&http, &health).await;
        (status == 200).then_some(())
    })
    .await;

    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(ptp_nats::server_addrs(&cluster.urls()).expect("urls"))
        .await
        .expect("connect to the cluster");
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(3));
    let replicas = js
        .get_stream(ptp_nats::STREAM)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .num_replicas;
    assert_eq!(replicas, 3, "the master created the stream with 3 replicas");

    let runs: Vec<_> = (0..12).map(|i| synthetic_run("r3", i, 40)).collect();
    for run in &runs[..6] {
        publish_through(&js, run).await;
    }
    let leader = eventually(DEADLINE, "the stream's leader", || stream_leader(&js)).await;
    cluster
        .node_mut(&leader)
        .unwrap_or_else(|| panic!("no node named {leader}"))
        .stop();
    println!("killed the stream leader {leader}");
    for run in &runs[6..] {
        publish_through(&js, run).await;
    }
    let new_leader = eventually(DEADLINE, "a new leader", || async {
        stream_leader(&js).await.filter(|l| *l != leader)
    })
    .await;
    println!("new leader {new_leader}");

    let listed = eventually(DEADLINE, "all 12 runs listed", || async {
        let (_, body) = get_json(&http, &format!("{}/results?limit=500", master.base)).await;
        let runs = body.as_array()?.clone();
        (runs.len() >= 12).then_some(runs)
    })
    .await;
    assert_eq!(listed.len(), 12, "each run stored once");
    let (runs_in_db, cases_in_db, inconsistent) = db_census(&store).await;
    assert_eq!((runs_in_db, cases_in_db, inconsistent), (12, 12 * 40, 0));

    cluster
        .node_mut(&leader)
        .unwrap_or_else(|| panic!("no node named {leader}"))
        .restart();
    let (status, body) = get_json(&http, &health).await;
    assert_eq!(status, 200, "{body}");
    client.drain().await.ok();
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_asking_for_more_replicas_than_nodes_says_which_setting_differs() {
    let cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = TestStore::new(dir.path()).await;
    let mut config = ptp_api::Config::for_test(store.target(), cluster.urls());
    config.stream_replicas = 3;
    let master = Master::start_with(config.clone()).await;
    let http = reqwest::Client::new();
    eventually(DEADLINE, "the first master healthy", || async {
        let (status, _) = get_json(&http, &format!("{}/health", master.base)).await;
        (status == 200).then_some(())
    })
    .await;
    master.stop().await;

    config.stream_replicas = 5;
    let master = Master::start_with(config).await;
    let health = eventually(DEADLINE, "health naming the mismatch", || async {
        let (status, body) = get_json(&http, &format!("{}/health", master.base)).await;
        let reason = body["consumer_error"].as_str()?.to_string();
        (status == 503 && reason.contains("num_replicas")).then_some(reason)
    })
    .await;
    assert!(
        health.contains("num_replicas 3 (wanted 5)") && health.contains("--stream-replicas"),
        "{health}"
    );
    master.stop().await;
}
