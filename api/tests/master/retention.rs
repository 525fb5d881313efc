//! Retention: `--retention-days` prunes old runs with their cases, gives
//! the space back, and the aggregates follow.

use chrono::{Duration, Utc};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_runs_and_gives_the_space_back() {
    let mut app = TestApp::spawn().await;
    let long_ago = Utc::now() - Duration::days(40);
    let runs: Vec<_> = (0..10)
        .map(|i| {
            let mut r = synthetic_run("ret", i, 3000);
            if i < 6 {
                r.0.started_at = long_ago + Duration::seconds(i as i64);
                r.0.finished_at = r.0.started_at + Duration::seconds(1);
            }
            r
        })
        .collect();
    publish_direct(&app.nats.url(), &runs, true).await;
    app.wait_run_count(10).await;
    // The aggregates hear of a run just after its commit, so poll.
    ptp_test_support::eventually(DEADLINE, "failure stats to count all 10 runs", || async {
        let (_, stats) = app.get("/failures/stats?limit=1").await;
        (stats[0]["fail_count"] == 10).then_some(())
    })
    .await;
    // SQLite gives pruned pages back to the file system; PostgreSQL's
    // autovacuum reuses them in place (nothing to measure here).
    let pages_before = match &app.store {
        TestStore::Sqlite(path) => Some(db_pages(path).await.0),
        TestStore::Postgres(_) => None,
    };

    app.stop_master().await;
    app.start_master_with(|c| c.retention_days = 30).await;
    // The trend is rebuilt after the space is reclaimed, so once it shows the
    // four recent runs the prune is over.
    ptp_test_support::eventually(DEADLINE, "the trend to keep only recent runs", || async {
        let (_, trend) = app.get("/trend?limit=1000").await;
        (trend.as_array()?.len() == 4).then_some(())
    })
    .await;
    let mut kept = all_run_ids(&app.http, app.base()).await;
    kept.sort();
    assert_eq!(kept, ["ret-00006", "ret-00007", "ret-00008", "ret-00009"]);
    assert_eq!(db_census(&app.store).await, (4, 12_000, 0));
    let (_, stats) = app.get("/failures/stats?limit=1").await;
    assert_eq!(stats[0]["fail_count"], 4, "failure stats follow: {stats}");
    let (_, workers) = app.get("/workers").await;
    let runs_counted: u64 = workers
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["run_count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(runs_counted, 4, "worker run counts follow: {workers}");
    if let (Some(pages_before), TestStore::Sqlite(path)) = (pages_before, &app.store) {
        let (pages_after, free_after) = db_pages(path).await;
        println!("pages before {pages_before}, after {pages_after} (free {free_after})");
        assert!(
            pages_after * 10 < pages_before * 6,
            "60% of the runs went, so should well over 40% of the pages: {pages_before} -> {pages_after}"
        );
        assert_eq!(free_after, 0, "freed pages went back to the file system");
    }
}

/// `--retention-runs 3`: each project keeps its newest three runs, however
/// old; a project with fewer keeps them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_runs_of_each_project() {
    let mut app = TestApp::spawn().await;
    let runs: Vec<_> = (0..7)
        .map(|i| {
            let mut r = synthetic_run("keep", i, 50);
            // keep-00000..00004: project big; keep-00005, keep-00006: small.
            r.0.project = if i < 5 { "big" } else { "small" }.into();
            r
        })
        .collect();
    publish_direct(&app.nats.url(), &runs, true).await;
    app.wait_run_count(7).await;

    app.stop_master().await;
    app.start_master_with(|c| c.retention_runs = 3).await;
    ptp_test_support::eventually(DEADLINE, "the trend to keep five runs", || async {
        let (_, trend) = app.get("/trend?limit=1000").await;
        (trend.as_array()?.len() == 5).then_some(())
    })
    .await;
    let mut kept = all_run_ids(&app.http, app.base()).await;
    kept.sort();
    assert_eq!(
        kept,
        [
            "keep-00002",
            "keep-00003",
            "keep-00004",
            "keep-00005",
            "keep-00006"
        ]
    );
    assert_eq!(db_census(&app.store).await, (5, 250, 0));
}
