//! The writer's guarantees on a real SQLite file: a resend stores once, the
//! same id with other content is a conflict kept in `rejected`, and a run
//! whose counts disagree with its cases never becomes visible.

use chrono::Duration;

use super::*;
use sqlx::SqlitePool;

use crate::model::{CaseRecord, Outcome, RunStatus};
use crate::read::queries;
use crate::testing::{case, items, record, start, t0};

async fn send(actors: &crate::ActorSystem, batch: Vec<BatchItem>) -> BatchReport {
    actors
        .writer
        .send(StoreBatch(batch))
        .await
        .expect("writer answers")
        .expect("stored")
}

async fn census(pool: &SqlitePool) -> (i64, i64, Vec<String>) {
    let (runs,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM runs")
        .fetch_one(pool)
        .await
        .expect("count runs");
    let (cases,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM test_cases")
        .fetch_one(pool)
        .await
        .expect("count cases");
    let reasons = queries::list_rejected(&pool.clone().into(), 100)
        .await
        .expect("rejections")
        .into_iter()
        .map(|r| r.reason)
        .collect();
    (runs, cases, reasons)
}

fn cases() -> Vec<CaseRecord> {
    vec![
        case("t::a", Outcome::Passed, None),
        case("t::b", Outcome::Failed, Some("boom")),
        case("t::c", Outcome::Skipped, None),
    ]
}

#[tokio::test]
async fn the_same_batch_twice_stores_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (actors, pool) = start(&dir.path().join("w.sqlite")).await;
    let batch = items(record("r1", "p", "w", t0(), &cases()), cases());

    let first = send(&actors, batch.clone()).await;
    assert_eq!(first.completed, vec!["r1".to_string()]);
    assert_eq!(
        (first.duplicates, first.rejected, first.cases_inserted),
        (0, 0, 3)
    );

    let again = send(&actors, batch).await;
    assert!(again.completed.is_empty(), "{again:?}");
    assert_eq!(
        (again.duplicates, again.rejected, again.cases_inserted),
        (2, 0, 0)
    );
    assert_eq!(census(&pool).await, (1, 3, Vec::new()));
    let run = queries::get_run(&pool.clone().into(), "r1")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(run.status, RunStatus::Failed);
}

#[tokio::test]
async fn other_content_under_a_stored_id_is_a_conflict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (actors, pool) = start(&dir.path().join("w.sqlite")).await;
    send(
        &actors,
        items(record("r1", "p", "w", t0(), &cases()), cases()),
    )
    .await;

    // A chunk 0 with other cases and another digest.
    let other = vec![case("t::z", Outcome::Passed, None)];
    let chunk = BatchItem::Chunk {
        run_id: "r1".into(),
        chunk: 0,
        cases: other.clone(),
        digest: "chunk-other".into(),
    };
    // A final with another digest.
    let fin = BatchItem::Final {
        run: Box::new(record("r1", "p", "w", t0() + Duration::hours(1), &other)),
        chunks: 1,
        digest: "final-other".into(),
    };
    let report = send(&actors, vec![chunk, fin]).await;
    assert_eq!((report.duplicates, report.rejected), (0, 2), "{report:?}");
    let (runs, stored_cases, reasons) = census(&pool).await;
    assert_eq!((runs, stored_cases), (1, 3), "the stored run is untouched");
    assert_eq!(reasons.len(), 2);
    for r in &reasons {
        assert!(r.starts_with("conflict: run_id r1"), "{r}");
    }
    assert!(
        reasons.iter().any(|r| r.contains("chunk-other")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("final-other")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_run_whose_counts_disagree_with_its_cases_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (actors, pool) = start(&dir.path().join("w.sqlite")).await;
    let mut wrong = record("r2", "p", "w", t0(), &cases());
    wrong.counts.failed += 1;
    wrong.counts.total += 1;
    let report = send(&actors, items(wrong, cases())).await;
    assert!(report.completed.is_empty(), "{report:?}");
    assert_eq!(report.rejected, 1);
    let (runs, stored_cases, reasons) = census(&pool).await;
    assert_eq!((runs, stored_cases), (0, 0), "nothing of r2 stays");
    assert_eq!(
        reasons,
        vec!["counts contradict the cases: the run says 2 failed, its chunks hold 1".to_string()]
    );

    // A run carrying failures only (cases_complete false) may declare more
    // than its chunks hold.
    let mut partial = record("r3", "p", "w", t0(), &cases());
    partial.cases_complete = false;
    partial.counts.passed += 10;
    partial.counts.total += 10;
    let report = send(&actors, items(partial, cases())).await;
    assert_eq!(report.completed, vec!["r3".to_string()]);
}

#[tokio::test]
async fn a_chunk_the_run_does_not_have_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (actors, pool) = start(&dir.path().join("w.sqlite")).await;
    let mut batch = items(record("r4", "p", "w", t0(), &cases()), cases());
    batch.push(BatchItem::Chunk {
        run_id: "r4".into(),
        chunk: 1,
        cases: Vec::new(),
        digest: "chunk-extra".into(),
    });
    let report = send(&actors, batch).await;
    assert!(report.completed.is_empty(), "{report:?}");
    let (runs, _, reasons) = census(&pool).await;
    assert_eq!(runs, 0);
    assert_eq!(
        reasons,
        vec![
            "run declares 1 chunks but 2 arrived (a chunk for a run that does not have it)"
                .to_string()
        ]
    );
}

/// A test that starts failing in the sixth run gets its verdicts in the
/// project's `BACKFILL_RUNS` newest evidence runs before it, and is tracked
/// from the oldest of them; older runs keep none (the reader probes those),
/// and another project's runs are untouched.
#[tokio::test]
async fn a_newly_tracked_test_gets_its_recent_verdicts_backfilled() {
    use crate::read::flaky::BACKFILL_RUNS;
    let dir = tempfile::tempdir().expect("temp dir");
    let (actors, pool) = start(&dir.path().join("w.sqlite")).await;
    let good = || {
        vec![
            case("t::x", Outcome::Passed, None),
            case("t::y", Outcome::Passed, None),
        ]
    };
    let mut runs = Vec::new();
    for i in 0..5 {
        let at = t0() + Duration::minutes(i);
        runs.push(crate::testing::run(&format!("p{i}"), "p", "w", at, good()));
        runs.push(crate::testing::run(&format!("q{i}"), "q", "w", at, good()));
    }
    let bad = vec![
        case("t::x", Outcome::Failed, Some("boom")),
        case("t::y", Outcome::Passed, None),
    ];
    runs.push(crate::testing::run(
        "p5",
        "p",
        "w",
        t0() + Duration::minutes(9),
        bad,
    ));
    crate::testing::store(&actors, runs).await;

    let seq_of = |id: &'static str| {
        let pool = pool.clone();
        async move {
            let (s,): (i64,) = sqlx::query_as("SELECT seq FROM runs WHERE run_id = ?")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("seq");
            s
        }
    };
    let kept: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT v.seq, v.failed FROM verdicts v JOIN tracked_tests t ON t.key = v.key \
         WHERE t.project = 'p' AND t.test_id = 't::x' ORDER BY v.seq",
    )
    .fetch_all(&pool)
    .await
    .expect("verdicts");
    let mut want = Vec::new();
    for i in (5 - BACKFILL_RUNS)..5 {
        let id: &'static str = Box::leak(format!("p{i}").into_boxed_str());
        want.push((seq_of(id).await, false));
    }
    want.push((seq_of("p5").await, true));
    assert_eq!(kept, want, "verdicts of t::x in p's runs");

    let (since,): (i64,) = sqlx::query_as(
        "SELECT since_seq FROM tracked_tests WHERE project = 'p' AND test_id = 't::x'",
    )
    .fetch_one(&pool)
    .await
    .expect("tracked");
    assert_eq!(since, want[0].0, "tracked from the oldest backfilled run");
    let (others,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM verdicts v JOIN tracked_tests t ON t.key = v.key WHERE t.project <> 'p' OR t.test_id <> 't::x'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(others, 0, "nothing else is tracked");
}

/// The writer remembers the keys of tests it stored; a prune that deletes
/// orphaned tests makes it forget them, so a later run of the same tests
/// gets keys of rows that exist (a remembered key of a deleted row would
/// leave its cases without a test).
#[tokio::test]
async fn tests_stored_again_after_their_rows_were_dropped_get_live_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (actors, pool) = start(&dir.path().join("w.sqlite")).await;
    let ab = || {
        vec![
            case("t::a", Outcome::Passed, None),
            case("t::b", Outcome::Failed, Some("boom")),
        ]
    };
    crate::testing::store(
        &actors,
        vec![
            crate::testing::run("r0", "p", "w", t0(), ab()),
            crate::testing::run(
                "r1",
                "p",
                "w",
                t0() + Duration::minutes(1),
                vec![case("t::c", Outcome::Passed, None)],
            ),
        ],
    )
    .await;
    crate::testing::prune(&actors, None, Some(1)).await;
    actors
        .writer
        .send(FinishPrune)
        .await
        .expect("writer answers")
        .expect("reclaimed");
    let (left,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM tests WHERE test_id IN ('t::a', 't::b')")
            .fetch_one(&pool)
            .await
            .expect("count tests");
    assert_eq!(left, 0, "the orphaned tests were dropped");

    crate::testing::store(
        &actors,
        vec![crate::testing::run(
            "r2",
            "p",
            "w",
            t0() + Duration::minutes(2),
            ab(),
        )],
    )
    .await;
    let (seen,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM test_cases WHERE run_id = 'r2'")
        .fetch_one(&pool)
        .await
        .expect("count cases");
    assert_eq!(seen, 2, "both cases of r2 name a stored test");
    // And a run of the same tests once more reuses those keys.
    crate::testing::store(
        &actors,
        vec![crate::testing::run(
            "r3",
            "p",
            "w",
            t0() + Duration::minutes(3),
            ab(),
        )],
    )
    .await;
    let (tests,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tests")
        .fetch_one(&pool)
        .await
        .expect("count tests");
    assert_eq!(tests, 3, "t::a, t::b, t::c once each");
}
