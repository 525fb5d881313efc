//! See [`super`]: the questions of this part, asked of both stores.
//!
//! Runs (filters, pages, one by id), a run's cases (both orders, outcome
//! filters, every page through its cursor), rejections, digests, the
//! trend, the workers, failure statistics (all time and windows that cut a
//! day, with owners and named tests, short limits for ties), the
//! quarantine list, the webhook outbox and the per-test results of
//! comparisons; each with parameters present and absent, and asked about
//! things that do not exist.
//!
//! The history the property test generates has no quarantine entries,
//! rejections, unfinished runs or webhook events of its own: [`start`]
//! gives it some ([`routes`], [`seed`]), through the writer, before its
//! steps.

use std::fmt::Debug;

use chrono::{DateTime, Duration, Utc};

use sqlx::SqlitePool;

use crate::model::{Outcome, Rejection, RunStatus};
use crate::owners::TestSet;
use crate::quarantine::Entry;
use crate::read::queries::{self, CaseOrder, FailureFilter, RunCursor, RunFilter};
use crate::read::{ReadPool, compare, quarantine, rollups, webhooks};
use crate::store::BatchItem;
use crate::testing::{record, t0};
use crate::webhooks::{EventType, Route, Routes};
use crate::writer::{Quarantine, StoreBatch};
use crate::{ActorSystem, AggregatesConfig, DbOptions};

/// Owners the property test's cases name (see `props.rs`), and one nobody is.
pub(crate) const OWNERS: [&str; 3] = ["@team/a", "qa@example.com", "@nobody"];

/// Webhook targets: every event, and failed runs only; at most five rows
/// wait per target, so a long history marks the oldest dead.
pub(crate) fn routes() -> Routes {
    Routes {
        default_branches: vec!["b0".into()],
        targets: vec![
            Route {
                target: "all".into(),
                events: EventType::ALL.to_vec(),
            },
            Route {
                target: "failures".into(),
                events: vec![EventType::RunFailed],
            },
        ],
        max_pending: 5,
    }
}

fn at(hour: i64) -> DateTime<Utc> {
    t0() + Duration::hours(hour)
}

/// The actors on the SQLite file `path` storing the events of [`routes`],
/// [`seed`]ed, and a read pool on the file.
pub(crate) async fn start(path: &std::path::Path) -> (ActorSystem, SqlitePool) {
    let db = DbOptions::new(path);
    let actors = ActorSystem::start_with(db.clone(), AggregatesConfig::default(), routes())
        .await
        .expect("actors start");
    let pool = crate::store::sqlite::db::open_reader(&db)
        .await
        .expect("read pool");
    seed(&actors).await;
    (actors, pool)
}

/// Stores through the writer what the generated steps never make:
/// quarantine entries (a person's and automatic, with and without an
/// expiry), rejections (two received at the same time) and a final message
/// whose chunks never come (a digest kept in `pending_runs`).
pub(crate) async fn seed(actors: &ActorSystem) {
    let entries = [
        ("p0", 1, false, None),
        ("p0", 2, false, Some(at(30))),
        ("p1", 3, true, None),
        ("p1", 4, false, Some(at(10))),
    ];
    for (project, t, auto, expires_at) in entries {
        actors
            .writer
            .send(Quarantine {
                project: project.into(),
                entry: Entry {
                    test_id: format!("tests/test_{t}.py::test_{t}"),
                    reason: format!("seeded {t}"),
                    since: at(0),
                    expires_at,
                    auto,
                },
                fits: |_, _| Ok(()),
                now: at(0),
            })
            .await
            .expect("writer answers")
            .expect("stored")
            .expect("fits");
    }
    let reject = |n: i64, hour: i64| {
        BatchItem::Reject(Rejection {
            received_at: at(hour),
            subject: Some(format!("ptp.runs.{n}")),
            msg_id: (n % 2 == 0).then(|| format!("msg-{n}")),
            run_id: Some(format!("bad-{n}")),
            reason: format!("refused {n}"),
            excerpt: Some("{\"run\"".into()),
            payload: (n == 1).then(|| vec![0, 159, 146, 150]),
        })
    };
    let pending = record("unfinished", "p0", "w0", at(5), &[]);
    actors
        .writer
        .send(StoreBatch(vec![
            reject(0, 3),
            reject(1, 7),
            reject(2, 7),
            BatchItem::Final {
                run: Box::new(pending),
                chunks: 2,
                digest: "final-unfinished".into(),
            },
        ]))
        .await
        .expect("writer answers")
        .expect("stored");
}

/// Both answers of `what` (asked at once), which must be equal; the SQLite
/// one.
fn same<T: PartialEq + Debug>(
    when: &str,
    what: &str,
    (sqlite, pg): (Result<T, sqlx::Error>, Result<T, sqlx::Error>),
) -> T {
    let sqlite = sqlite.unwrap_or_else(|e| panic!("{what} on SQLite {when}: {e}"));
    let pg = pg.unwrap_or_else(|e| panic!("{what} on PostgreSQL {when}: {e}"));
    assert_eq!(sqlite, pg, "{what} {when}: SQLite (left) vs PostgreSQL");
    sqlite
}

/// Asks both stores this part's questions; panics naming the first answer
/// that differs.
pub(crate) async fn check(sqlite: &ReadPool, pg: &ReadPool, when: &str) {
    same(
        when,
        "ping",
        tokio::join!(queries::ping(sqlite), queries::ping(pg),),
    );
    let run_ids = runs(sqlite, pg, when).await;
    cases(sqlite, pg, when, &run_ids).await;
    stats(sqlite, pg, when).await;
    rolled(sqlite, pg, when).await;
    outbox_and_quarantine(sqlite, pg, when).await;
    for id in run_ids.iter().map(String::as_str).chain(["no-such-run"]) {
        same(
            when,
            &format!("load_tests {id}"),
            tokio::join!(compare::load_tests(sqlite, id), compare::load_tests(pg, id),),
        );
    }
}

/// Runs listed with filters and in pages, one by id, their digests,
/// rejections; returns the ids of every stored run, newest first.
async fn runs(sqlite: &ReadPool, pg: &ReadPool, when: &str) -> Vec<String> {
    let s = |v: &str| Some(v.to_string());
    let filters = [
        RunFilter::default(),
        RunFilter {
            project: s("p0"),
            ..RunFilter::default()
        },
        RunFilter {
            project: s("p1"),
            branch: s("b0"),
            ..RunFilter::default()
        },
        RunFilter {
            worker_id: s("w1"),
            status: Some(RunStatus::Failed),
            ..RunFilter::default()
        },
        RunFilter {
            status: Some(RunStatus::Passed),
            since: Some(at(20)),
            ..RunFilter::default()
        },
        RunFilter {
            since: Some(at(10) + Duration::minutes(3)),
            until: Some(at(50)),
            ..RunFilter::default()
        },
        RunFilter {
            project: s("no-such-project"),
            ..RunFilter::default()
        },
    ];
    for f in filters {
        for limit in [1, 1000] {
            let f = RunFilter { limit, ..f.clone() };
            same(
                when,
                &format!("list_runs {f:?}"),
                tokio::join!(queries::list_runs(sqlite, &f), queries::list_runs(pg, &f),),
            );
        }
        // Every page of three, through the cursor.
        let mut f = RunFilter { limit: 3, ..f };
        loop {
            let page = same(
                when,
                &format!("list_runs page {f:?}"),
                tokio::join!(queries::list_runs(sqlite, &f), queries::list_runs(pg, &f),),
            );
            match page.last() {
                Some(last) if page.len() == 3 => {
                    f.after = Some(RunCursor {
                        started_at: last.started_at,
                        run_id: last.run_id.clone(),
                    });
                }
                _ => break,
            }
        }
    }
    let all = RunFilter {
        limit: 100_000,
        ..RunFilter::default()
    };
    let ids: Vec<String> = queries::list_runs(sqlite, &all)
        .await
        .unwrap_or_else(|e| panic!("list_runs on SQLite {when}: {e}"))
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    for id in ids
        .iter()
        .map(String::as_str)
        .chain(["unfinished", "no-such-run"])
    {
        same(
            when,
            &format!("get_run {id}"),
            tokio::join!(queries::get_run(sqlite, id), queries::get_run(pg, id),),
        );
        same(
            when,
            &format!("stored_digest {id}"),
            tokio::join!(
                queries::stored_digest(sqlite, id),
                queries::stored_digest(pg, id),
            ),
        );
    }
    for limit in [0, 1, 2, 100] {
        same(
            when,
            &format!("list_rejected {limit}"),
            tokio::join!(
                queries::list_rejected(sqlite, limit),
                queries::list_rejected(pg, limit),
            ),
        );
    }
    ids
}

/// Every run's cases in both orders; those of the newest, the oldest and
/// a middle run also with outcome filters and page by page through the
/// cursor.
async fn cases(sqlite: &ReadPool, pg: &ReadPool, when: &str, run_ids: &[String]) {
    for id in run_ids.iter().map(String::as_str).chain(["no-such-run"]) {
        for order in [CaseOrder::FailuresFirst, CaseOrder::Slowest] {
            same(
                when,
                &format!("run_cases {id} {order:?}"),
                tokio::join!(
                    queries::run_cases(sqlite, id, &[], order, None, 1000),
                    queries::run_cases(pg, id, &[], order, None, 1000),
                ),
            );
        }
    }
    let filters: [&[Outcome]; 3] = [
        &[],
        &[Outcome::Failed, Outcome::Error],
        &[Outcome::Passed, Outcome::Skipped],
    ];
    let n = run_ids.len();
    let some = [0, n / 2, n.saturating_sub(1)]
        .into_iter()
        .filter_map(|i| run_ids.get(i));
    for id in some.map(String::as_str).chain(["no-such-run"]) {
        for order in [CaseOrder::FailuresFirst, CaseOrder::Slowest] {
            for outcomes in filters {
                let what = format!("run_cases {id} {order:?} {outcomes:?}");
                same(
                    when,
                    &what,
                    tokio::join!(
                        queries::run_cases(sqlite, id, outcomes, order, None, 1000),
                        queries::run_cases(pg, id, outcomes, order, None, 1000),
                    ),
                );
                let mut after = None;
                for page in 0.. {
                    let got = same(
                        when,
                        &format!("{what} page {page} after {after:?}"),
                        tokio::join!(
                            queries::run_cases(sqlite, id, outcomes, order, after, 2),
                            queries::run_cases(pg, id, outcomes, order, after, 2),
                        ),
                    );
                    match got.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                // A position taken in the other order.
                if let Some(p) = after {
                    let other = match order {
                        CaseOrder::FailuresFirst => CaseOrder::Slowest,
                        CaseOrder::Slowest => CaseOrder::FailuresFirst,
                    };
                    same(
                        when,
                        &format!("{what} in {other:?} after {p:?}"),
                        tokio::join!(
                            queries::run_cases(sqlite, id, outcomes, other, Some(p), 3),
                            queries::run_cases(pg, id, outcomes, other, Some(p), 3),
                        ),
                    );
                }
            }
        }
    }
}

/// The test sets asked about: all, each owner, two named tests.
fn test_sets() -> Vec<TestSet> {
    let mut sets = vec![TestSet::All];
    sets.extend(OWNERS.iter().map(|o| TestSet::Owner(o.to_string())));
    sets.push(TestSet::Ids(vec![
        "tests/test_0.py::test_0".into(),
        "tests/test_3.py::test_3".into(),
    ]));
    sets
}

/// Windows: none, before everything, cutting a day (t0 is 22:00 UTC, so
/// hour 2 is midnight), at midnight, late, after everything.
fn windows() -> [Option<DateTime<Utc>>; 6] {
    [
        None,
        Some(at(-30)),
        Some(at(13) + Duration::minutes(7)),
        Some(at(26)),
        Some(at(49)),
        Some(at(200)),
    ]
}

/// Failure statistics from the runs: every filter with every window, and
/// every test set with all time and a window that cuts a day.
async fn stats(sqlite: &ReadPool, pg: &ReadPool, when: &str) {
    let s = |v: &str| Some(v.to_string());
    let shapes = [
        FailureFilter::default(),
        FailureFilter {
            project: s("p0"),
            ..FailureFilter::default()
        },
        FailureFilter {
            project: s("p1"),
            branch: s("b1"),
            ..FailureFilter::default()
        },
        FailureFilter {
            worker_id: s("w2"),
            ..FailureFilter::default()
        },
    ];
    let mut asked = Vec::new();
    for shape in &shapes {
        for since in windows() {
            asked.push(FailureFilter {
                since,
                ..shape.clone()
            });
        }
    }
    for tests in test_sets() {
        for since in [None, windows()[2]] {
            asked.push(FailureFilter {
                since,
                tests: tests.clone(),
                ..shapes[1].clone()
            });
        }
    }
    for f in asked {
        for limit in [1, 3, 100] {
            same(
                when,
                &format!("failure_stats_where {f:?} limit {limit}"),
                tokio::join!(
                    queries::failure_stats_where(sqlite, &f, limit),
                    queries::failure_stats_where(pg, &f, limit),
                ),
            );
        }
    }
}

/// The trend, the workers and failure statistics from the rollups.
async fn rolled(sqlite: &ReadPool, pg: &ReadPool, when: &str) {
    for project in [None, Some("p0"), Some("p1"), Some("no-such-project")] {
        for branch in [None, Some("b0")] {
            for limit in [1, 3, 1000] {
                same(
                    when,
                    &format!("trend {project:?} {branch:?} {limit}"),
                    tokio::join!(
                        rollups::trend(sqlite, project, branch, limit),
                        rollups::trend(pg, project, branch, limit),
                    ),
                );
            }
        }
    }
    for limit in [0, 1, 2, 100] {
        same(
            when,
            &format!("stored_workers {limit}"),
            tokio::join!(
                rollups::stored_workers(sqlite, limit),
                rollups::stored_workers(pg, limit),
            ),
        );
    }
    let mut asked = Vec::new();
    for project in [None, Some("p0"), Some("p1")] {
        for since in windows() {
            asked.push((project, since, TestSet::All));
        }
    }
    for tests in test_sets() {
        for since in [None, windows()[2]] {
            asked.push((None, since, tests.clone()));
            asked.push((Some("p0"), since, tests.clone()));
        }
    }
    for (project, since, tests) in asked {
        for limit in [1, 3, 100] {
            same(
                when,
                &format!("failure_stats {project:?} {since:?} {tests:?} {limit}"),
                tokio::join!(
                    rollups::failure_stats(sqlite, project, since, &tests, limit),
                    rollups::failure_stats(pg, project, since, &tests, limit),
                ),
            );
        }
    }
}

/// The quarantine list at several times, and the webhook outbox.
async fn outbox_and_quarantine(sqlite: &ReadPool, pg: &ReadPool, when: &str) {
    same(
        when,
        "quarantine projects",
        tokio::join!(quarantine::projects(sqlite), quarantine::projects(pg),),
    );
    for project in ["p0", "p1", "no-such-project"] {
        for now in [at(-1), at(0), at(9), at(10), at(29), at(31), at(500)] {
            same(
                when,
                &format!("quarantine active {project} at {now}"),
                tokio::join!(
                    quarantine::active(sqlite, project, now),
                    quarantine::active(pg, project, now),
                ),
            );
        }
    }
    for target in ["all", "failures", "no-such-target"] {
        for limit in [0, 1, 3, 100] {
            same(
                when,
                &format!("webhooks pending {target} {limit}"),
                tokio::join!(
                    webhooks::pending(sqlite, target, limit),
                    webhooks::pending(pg, target, limit),
                ),
            );
        }
    }
    let targets = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for t in [
        targets(&[]),
        targets(&["all"]),
        targets(&["failures", "all", "no-such-target"]),
    ] {
        same(
            when,
            &format!("webhooks backlog {t:?}"),
            tokio::join!(webhooks::backlog(sqlite, &t), webhooks::backlog(pg, &t),),
        );
    }
}
