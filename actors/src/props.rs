//! The property test of issue 13: random histories (outcomes, commits,
//! branches, retries, runs without every case, outages, prunes, flaky
//! marks) are stored through the real writer, and every answer kept
//! incrementally is checked against a plain recomputation from the runs
//! that remain:
//! - flaky tests from the kept verdicts vs from the cases only
//!   ([`crate::flaky::Evidence`]);
//! - failure clusters from the stored signatures vs signing every failure
//!   from its text ([`crate::clusters::Signed`]);
//! - failure statistics from the rollups vs the plain query over the runs;
//! - every rollup row vs [`crate::rollups::rebuild`].

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use sqlx::SqlitePool;

use crate::ActorSystem;
use crate::clusters::{self, Signed};
use crate::flaky::{self, Evidence, FlipRule, Window};
use crate::model::{CaseRecord, Outcome};
use crate::queries::{self, FailureFilter};
use crate::rollups::{self, Snapshot};
use crate::testing::{case, items, prune, record, start, store, t0};
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
    tests: Vec<Did>,
}

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
        proptest::collection::vec(did(), TESTS),
    )
        .prop_map(
            |(project, branch, commit, hour, complete, outage, tests)| RunSpec {
                project,
                branch,
                commit,
                hour,
                complete,
                outage,
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
            Did::Retried => out.push(CaseRecord {
                retries: 1,
                flaky: true,
                ..case(&id, Outcome::Passed, None)
            }),
        }
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
    for project in [None, Some("p0"), Some("p1")] {
        for since in [None, Some(at(13) + Duration::minutes(7)), Some(at(49))] {
            let filter = FailureFilter {
                project: project.map(str::to_string),
                since,
                ..FailureFilter::default()
            };
            let plain = queries::failure_stats_where(pool, &filter, 100)
                .await
                .expect("plain failure stats");
            let rolled = rollups::failure_stats(pool, project, since, &Default::default(), 100)
                .await
                .expect("rolled-up failure stats");
            assert_eq!(
                rolled, plain,
                "failure stats {when}, {project:?}, {since:?}"
            );
        }
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
