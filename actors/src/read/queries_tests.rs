//! The read queries on a real SQLite file: the run list's order, pages and
//! filters, one run by id.

use chrono::Duration;

use super::*;
use crate::model::{Outcome, RunStatus};
use crate::testing::{case, run, start, store, t0};

/// Five runs: two projects, two workers, one failing, two starting at the
/// same time (ordered by run id among themselves).
async fn stored() -> (tempfile::TempDir, crate::ActorSystem, SqlitePool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (actors, pool) = start(&dir.path().join("q.sqlite")).await;
    let pass = || vec![case("t::a", Outcome::Passed, None)];
    let fail = || {
        vec![
            case("t::a", Outcome::Passed, None),
            case("t::b", Outcome::Failed, Some("boom")),
        ]
    };
    let at = |m: i64| t0() + Duration::minutes(m);
    store(
        &actors,
        vec![
            run("a", "p", "w1", at(0), pass()),
            run("b", "p", "w2", at(1), pass()),
            run("c", "q", "w1", at(2), fail()),
            run("d1", "p", "w1", at(3), pass()),
            run("d2", "p", "w2", at(3), pass()),
        ],
    )
    .await;
    (dir, actors, pool)
}

fn ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.run_id.as_str()).collect()
}

async fn list(pool: &SqlitePool, f: RunFilter) -> Vec<RunRecord> {
    list_runs(&pool.clone().into(), &f)
        .await
        .expect("list runs")
}

#[tokio::test]
async fn runs_are_listed_newest_first_in_pages() {
    let (_dir, _actors, pool) = stored().await;
    let all = list(
        &pool,
        RunFilter {
            limit: 10,
            ..RunFilter::default()
        },
    )
    .await;
    assert_eq!(ids(&all), ["d2", "d1", "c", "b", "a"]);

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = list(
            &pool,
            RunFilter {
                limit: 2,
                after: after.clone(),
                ..RunFilter::default()
            },
        )
        .await;
        let Some(last) = page.last() else { break };
        after = Some(RunCursor {
            started_at: last.started_at,
            run_id: last.run_id.clone(),
        });
        seen.extend(page.iter().map(|r| r.run_id.clone()));
    }
    assert_eq!(
        seen,
        ["d2", "d1", "c", "b", "a"],
        "pages neither skip nor repeat"
    );
}

#[tokio::test]
async fn every_filter_narrows_the_list() {
    let (_dir, _actors, pool) = stored().await;
    let f = || RunFilter {
        limit: 10,
        ..RunFilter::default()
    };
    let project = list(
        &pool,
        RunFilter {
            project: Some("q".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(ids(&project), ["c"]);
    let worker = list(
        &pool,
        RunFilter {
            worker_id: Some("w2".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(ids(&worker), ["d2", "b"]);
    let branch = list(
        &pool,
        RunFilter {
            branch: Some("other".into()),
            ..f()
        },
    )
    .await;
    assert!(branch.is_empty());
    let failed = list(
        &pool,
        RunFilter {
            status: Some(RunStatus::Failed),
            ..f()
        },
    )
    .await;
    assert_eq!(ids(&failed), ["c"]);
    let since = Some(t0() + Duration::minutes(2));
    let recent = list(&pool, RunFilter { since, ..f() }).await;
    assert_eq!(ids(&recent), ["d2", "d1", "c"]);
    let older = list(
        &pool,
        RunFilter {
            until: since,
            ..f()
        },
    )
    .await;
    assert_eq!(ids(&older), ["b", "a"]);
    let both = list(
        &pool,
        RunFilter {
            project: Some("p".into()),
            worker_id: Some("w1".into()),
            ..f()
        },
    )
    .await;
    assert_eq!(ids(&both), ["d1", "a"]);
}

#[tokio::test]
async fn one_run_is_read_back_as_stored() {
    let (_dir, _actors, pool) = stored().await;
    let c = get_run(&pool.clone().into(), "c")
        .await
        .expect("read")
        .expect("c is stored");
    assert_eq!((c.project.as_str(), c.worker_id.as_str()), ("q", "w1"));
    assert_eq!(c.status, RunStatus::Failed);
    assert_eq!(
        (c.counts.total, c.counts.passed, c.counts.failed),
        (2, 1, 1)
    );
    assert_eq!(c.pass_rate, Some(50.0));
    assert_eq!(c.started_at, t0() + Duration::minutes(2));
    assert!(c.cases_complete);
    assert_eq!(
        get_run(&pool.clone().into(), "nope").await.expect("read"),
        None
    );
}
