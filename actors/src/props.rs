//! The property test of issue 13: random histories (outcomes, commits,
//! branches, retries, runs without every case, outages, prunes, flaky
//! marks) are stored through the real writer, and every answer kept
//! incrementally is checked against a plain recomputation from the runs
//! that remain:
//! - flaky tests from the kept verdicts vs from the cases only
//!   ([`crate::read::flaky::Evidence`]);
//! - failure clusters from the stored signatures vs signing every failure
//!   from its text ([`crate::read::clusters::Signed`]);
//! - failure statistics from the rollups vs the plain query over the runs;
//! - every rollup row vs [`crate::store::sqlite::rollups::rebuild`];
//! - slow tests from the per-run test summaries vs grouping every case of
//!   the window ([`crate::testing::slow_tests_from_cases`]), every stored
//!   summary vs one re-encoded from the run's remaining cases, and the
//!   per-test results of runs compared vs reading their cases
//!   ([`crate::testing::load_tests_from_cases`]).

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use sqlx::SqlitePool;

use crate::ActorSystem;
use crate::model::{CaseRecord, Outcome};
use crate::owners::TestSet;
use crate::read::ReadPool;
use crate::read::clusters::{self, Signed};
use crate::read::compare;
use crate::read::flaky::{self, Evidence, FlipRule, Window};
use crate::read::history::{self, SlowRule};
use crate::read::parity::core::OWNERS;
use crate::read::queries::{self, FailureFilter};
use crate::read::rollups::{self, Snapshot};
use crate::store::postgres::copy::copy_from_sqlite;
use crate::store::sqlite::run_tests;
use crate::testing::{
    case, items, load_tests_from_cases, prune, record, slow_tests_from_cases, start, store, t0,
};
use crate::writer::ClearFlaky;

/// Tests in every generated run.
const TESTS: usize = 6;

/// What one test did in one run.
#[derive(Debug, Clone, Copy)]
enum Did {
    Absent,
    Passed,
    Skipped,
    /// Failed with message and traceback number `n`.
    Failed(usize),
    /// Errored with message and traceback number `n`.
    Errored(usize),
    /// Failed, then errored in teardown (two cases).
    FailedTwice(usize),
    /// Passed after a failed attempt.
    Retried,
    /// Passed, and a second case of it was skipped (two cases: its
    /// duration with and without the skip differ).
    PassedAndSkipped,
}

const MESSAGES: [Option<&str>; 4] = [
    Some("assert 3 == 4"),
    Some("ConnectionError: refused by db-7:5432"),
    None,
    Some("timeout after 1200 ms"),
];

fn traceback(n: usize) -> Option<String> {
    match n % 4 {
        0 => Some("tests/test_x.py:12: AssertionError".into()),
        1 => Some(format!(
            "{}\nE   ConnectionError: refused\n\ntests/test_db.py:40: ConnectionError",
            "x".repeat(5000)
        )),
        2 => None,
        _ => Some("  File \"app/net.py\", line 3, in call\nTimeoutError: late".into()),
    }
}

#[derive(Debug, Clone)]
struct RunSpec {
    project: usize,
    branch: usize,
    commit: usize,
    hour: i64,
    complete: bool,
    outage: bool,
    /// Shifts the durations of the run's cases (see [`SECONDS`]).
    pace: usize,
    tests: Vec<Did>,
}

/// Case durations: the `i`-th case of a run takes `SECONDS[(i + pace) % 5]`.
const SECONDS: [f64; 5] = [0.1, 0.25, 0.5, 1.7, 3.0];

#[derive(Debug, Clone)]
enum Step {
    Run(RunSpec),
    /// Keep the newest N runs of each project.
    KeepRuns(u32),
    /// Drop runs that started before this hour.
    Before(i64),
    /// Mark test N of project P fixed at this hour.
    Clear(usize, usize, i64),
}

fn did() -> impl Strategy<Value = Did> {
    prop_oneof![
        2 => Just(Did::Passed),
        1 => Just(Did::Absent),
        1 => Just(Did::Skipped),
        2 => (0..4usize).prop_map(Did::Failed),
        1 => (0..4usize).prop_map(Did::Errored),
        1 => (0..4usize).prop_map(Did::FailedTwice),
        1 => Just(Did::Retried),
        1 => Just(Did::PassedAndSkipped),
    ]
}

fn run_spec() -> impl Strategy<Value = RunSpec> {
    (
        0..2usize,
        0..2usize,
        0..3usize,
        0..72i64,
        proptest::bool::weighted(0.9),
        proptest::bool::weighted(0.1),
        0..SECONDS.len(),
        proptest::collection::vec(did(), TESTS),
    )
        .prop_map(
            |(project, branch, commit, hour, complete, outage, pace, tests)| RunSpec {
                project,
                branch,
                commit,
                hour,
                complete,
                outage,
                pace,
                tests,
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => run_spec().prop_map(Step::Run),
        1 => (2..6u32).prop_map(Step::KeepRuns),
        1 => (0..40i64).prop_map(Step::Before),
        1 => (0..2usize, 0..TESTS, 0..72i64).prop_map(|(p, t, h)| Step::Clear(p, t, h)),
    ]
}

fn test_id(t: usize) -> String {
    format!("tests/test_{t}.py::test_{t}")
}

fn cases(spec: &RunSpec) -> Vec<CaseRecord> {
    let mut out = Vec::new();
    for (t, did) in spec.tests.iter().enumerate() {
        let id = test_id(t);
        // Owners change with the commit: the newest run decides.
        let owners: Vec<String> = match (t + spec.commit) % 3 {
            0 => vec![OWNERS[0].into()],
            1 => vec![OWNERS[0].into(), OWNERS[1].into()],
            _ => Vec::new(),
        };
        let case = |id: &str, outcome, message| CaseRecord {
            owners: owners.clone(),
            ..case(id, outcome, message)
        };
        let failing = |outcome, n: usize| CaseRecord {
            traceback: traceback(n),
            ..case(&id, outcome, MESSAGES[n % 4])
        };
        match if spec.outage { Did::Errored(1) } else { *did } {
            Did::Absent => {}
            Did::Passed => out.push(case(&id, Outcome::Passed, None)),
            Did::Skipped => out.push(case(&id, Outcome::Skipped, Some("no db"))),
            Did::Failed(n) => out.push(failing(Outcome::Failed, n)),
            Did::Errored(n) => out.push(failing(Outcome::Error, n)),
            Did::FailedTwice(n) => {
                out.push(failing(Outcome::Failed, n));
                out.push(failing(Outcome::Error, n + 1));
            }
            Did::PassedAndSkipped => {
                out.push(case(&id, Outcome::Passed, None));
                out.push(case(&id, Outcome::Skipped, Some("later")));
            }
            Did::Retried => out.push(CaseRecord {
                retries: 1,
                flaky: true,
                ..case(&id, Outcome::Passed, None)
            }),
        }
    }
    for (i, c) in out.iter_mut().enumerate() {
        c.duration_secs = SECONDS[(i + spec.pace) % SECONDS.len()];
    }
    out
}

fn at(hour: i64) -> DateTime<Utc> {
    t0() + Duration::hours(hour)
}

async fn apply(actors: &ActorSystem, i: usize, step: &Step) {
    match step {
        Step::Run(spec) => {
            let cases = cases(spec);
            // Minutes keep most starts apart; equal hours still tie often
            // enough across projects.
            let started = at(spec.hour) + Duration::minutes((i % 7) as i64);
            let mut r = record(
                &format!("r{i:03}"),
                &format!("p{}", spec.project),
                &format!("w{}", i % 3),
                started,
                &cases,
            );
            r.branch = Some(format!("b{}", spec.branch));
            r.commit = Some(format!("c{}", spec.commit));
            if !spec.complete {
                // The original payload: failures only.
                r.cases_complete = false;
                r.counts.passed += 2;
                r.counts.total += 2;
                r.pass_rate = r.counts.pass_rate();
            }
            store(actors, vec![items(r, cases)]).await;
        }
        Step::KeepRuns(n) => prune(actors, None, Some(*n)).await,
        Step::Before(h) => prune(actors, Some(at(*h)), None).await,
        Step::Clear(p, t, h) => {
            actors
                .writer
                .send(ClearFlaky {
                    project: format!("p{p}"),
                    test_id: test_id(*t),
                    at: at(*h),
                    note: None,
                })
                .await
                .expect("writer answers")
                .expect("marked");
        }
    }
}

/// Every incremental answer equals its plain recomputation.
async fn check(pool: &SqlitePool, when: &str) {
    let (kept, recomputed) = Snapshot::kept_and_recomputed(pool).await;
    assert_eq!(kept, recomputed, "rollups {when}");
    let rules = [
        FlipRule::default(),
        FlipRule {
            threshold: 0.5,
            min_flips: 1,
        },
    ];
    for project in [None, Some("p0")] {
        for branch in [None, Some("b0")] {
            for runs in [3, 50] {
                for since in [None, Some(at(20))] {
                    let w = Window {
                        project: project.map(str::to_string),
                        branch: branch.map(str::to_string),
                        since,
                        runs,
                        tests: Default::default(),
                    };
                    for rule in rules {
                        let from_kept = flaky::find_flaky_from(pool, &w, rule, 100, Evidence::Kept)
                            .await
                            .expect("flaky from kept verdicts");
                        let from_cases =
                            flaky::find_flaky_from(pool, &w, rule, 100, Evidence::Cases)
                                .await
                                .expect("flaky from cases");
                        assert_eq!(from_kept, from_cases, "flaky {when}, {w:?}, {rule:?}");
                    }
                    let stored = clusters::clusters_signed(pool, &w, 100, Signed::Stored)
                        .await
                        .expect("clusters from stored keys");
                    let signed = clusters::clusters_signed(pool, &w, 100, Signed::FromText)
                        .await
                        .expect("clusters from text");
                    assert_eq!(stored, signed, "clusters {when}, {w:?}");
                }
            }
        }
    }
    check_summaries(pool, when).await;
    let slow_rules = [
        (SlowRule::default(), 100),
        // Everything slower is a regression; ties at a short cut.
        (
            SlowRule {
                recent: 1,
                factor: 1.0,
                min_secs: 0.0,
            },
            2,
        ),
    ];
    for project in [None, Some("p0"), Some("p1")] {
        for runs in [3, 50] {
            for since in [None, Some(at(20))] {
                for tests in [TestSet::All, TestSet::Ids(vec![test_id(0), test_id(3)])] {
                    let w = Window {
                        project: project.map(str::to_string),
                        branch: None,
                        since,
                        runs,
                        tests,
                    };
                    for (rule, limit) in slow_rules {
                        let kept = history::slow_tests(&pool.clone().into(), &w, rule, limit)
                            .await
                            .expect("slow tests from summaries");
                        let plain = slow_tests_from_cases(pool, &w, rule, limit).await;
                        assert_eq!(kept, plain, "slow tests {when}, {w:?}, {rule:?}");
                    }
                }
            }
        }
    }
    for project in [None, Some("p0"), Some("p1")] {
        for since in [None, Some(at(13) + Duration::minutes(7)), Some(at(49))] {
            let filter = FailureFilter {
                project: project.map(str::to_string),
                since,
                ..FailureFilter::default()
            };
            let plain = queries::failure_stats_where(&pool.clone().into(), &filter, 100)
                .await
                .expect("plain failure stats");
            let rolled = rollups::failure_stats(
                &pool.clone().into(),
                project,
                since,
                &Default::default(),
                100,
            )
            .await
            .expect("rolled-up failure stats");
            assert_eq!(
                rolled, plain,
                "failure stats {when}, {project:?}, {since:?}"
            );
        }
    }
}

/// Every stored run has its test summary, equal to one encoded afresh
/// from its remaining cases, and no summary outlives its run; runs
/// compared read the same per-test results as from their cases.
async fn check_summaries(pool: &SqlitePool, when: &str) {
    let rows: Vec<(String, Option<i64>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT r.run_id, k.run_key, t.tests FROM runs r \
         LEFT JOIN run_keys k ON k.run_id = r.run_id \
         LEFT JOIN run_tests t ON t.run_key = k.run_key ORDER BY r.started_at, r.run_id",
    )
    .fetch_all(pool)
    .await
    .expect("summaries");
    let mut conn = pool.acquire().await.expect("connection");
    for (run_id, key, stored) in &rows {
        let (Some(key), Some(stored)) = (key, stored) else {
            panic!("run {run_id} has no summary {when}");
        };
        let fresh = run_tests::summarize(&mut conn, *key)
            .await
            .expect("summarize");
        assert_eq!(*stored, fresh, "summary of {run_id} {when}");
    }
    let (summaries,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM run_tests")
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    assert_eq!(summaries as usize, rows.len(), "summaries {when}");
    drop(conn);
    let n = rows.len();
    let pairs = [(0, n.saturating_sub(1)), (n / 2, n / 3), (n / 3, n / 2)];
    for (b, h) in pairs.into_iter().filter(|_| n > 0) {
        let (base, head) = (&rows[b].0, &rows[h].0);
        let kept = (
            compare::load_tests(&pool.clone().into(), base)
                .await
                .expect("base"),
            compare::load_tests(&pool.clone().into(), head)
                .await
                .expect("head"),
        );
        let plain = (
            load_tests_from_cases(pool, base).await,
            load_tests_from_cases(pool, head).await,
        );
        assert_eq!(kept, plain, "compare {base} {head} {when}");
        assert_eq!(
            compare::compare(&kept.0, &kept.1, 3, 0.1),
            compare::compare(&plain.0, &plain.1, 3, 0.1)
        );
    }
    let none = compare::load_tests(&pool.clone().into(), "no-such-run")
        .await
        .expect("none");
    assert!(none.is_empty());
}

proptest! {
    // Fewer histories than the recomputation test: each is copied into
    // PostgreSQL and asked every read of both stores after every prune
    // (about 5 s a history on 2 cores). PROPTEST_CASES=100 for more.
    #![proptest_config(ptp_test_support::fuzz::config(10))]

    /// Every read answers the same on PostgreSQL as on SQLite, over the
    /// same rows: the history is stored through the SQLite writer and copied
    /// into a fresh PostgreSQL database after every prune and at the end.
    #[test]
    fn reads_answer_the_same_on_postgres(
        steps in proptest::collection::vec(step(), 1..30)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            // With webhook targets, quarantine entries, rejections and an
            // unfinished run, which the steps do not make.
            let (actors, pool) = crate::read::parity::core::start(&dir.path().join("p.db")).await;
            let db = ptp_test_support::PgDatabase::create().await;
            let pg = crate::store::postgres::open(db.url(), 2).await.expect("open postgres");
            let sqlite_reads = ReadPool::Sqlite(pool.clone());
            let pg_reads = ReadPool::Postgres(pg.clone());
            for (i, s) in steps.iter().enumerate() {
                apply(&actors, i, s).await;
                if !matches!(s, Step::Run(_)) || i + 1 == steps.len() {
                    copy_from_sqlite(&pool, &pg).await.expect("copy into postgres");
                    let when = format!("after step {i} ({s:?})");
                    crate::read::parity::check(&sqlite_reads, &pg_reads, &when).await;
                }
            }
            pg.close().await;
            actors.stop();
        });
    }
}

proptest! {
    #![proptest_config(ptp_test_support::fuzz::config(24))]

    #[test]
    fn incremental_answers_equal_a_plain_recomputation(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let (actors, pool) = start(&dir.path().join("p.db")).await;
            for (i, s) in steps.iter().enumerate() {
                apply(&actors, i, s).await;
                if !matches!(s, Step::Run(_)) {
                    check(&pool, &format!("after step {i} ({s:?})")).await;
                }
            }
            check(&pool, "at the end").await;
            pool.close().await;
            actors.stop();
        });
    }
}
