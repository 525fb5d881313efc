//! See [`super`]: the analytics' questions, asked of both stores: flaky
//! tests ([`flaky::find_flaky`]), failure clusters ([`clusters::clusters`]),
//! a test's history ([`history::test_history`]), slow tests
//! ([`history::slow_tests`]) and automatic quarantine's decisions
//! ([`auto_quarantine::decide`]).
//!
//! Shape: each read is asked over a grid of windows (every project, one,
//! none that exists; a branch or not; a start or not; few runs or many),
//! with each rule, with limits that cut inside ties, and with each kind of
//! [`TestSet`] (the history's owners and quarantine entries are
//! `super::core`'s). The writer is never asked for a release there, so
//! the check first gives both stores the same few releases ([`seed`]),
//! by a person and not, for the quarantine decisions.

use chrono::{DateTime, Duration, Utc};

use crate::auto_quarantine::{self, Settings};
use crate::model::to_millis;
use crate::owners::TestSet;
use crate::read::ReadPool;
use crate::read::clusters;
use crate::read::flaky::{self, FlipRule, Window};
use crate::read::history::{self, SlowRule};
use crate::read::parity::core::OWNERS;
use crate::testing::t0;

fn at(hour: i64) -> DateTime<Utc> {
    t0() + Duration::hours(hour)
}

/// Asks both stores this part's questions; panics naming the first answer
/// that differs.
pub(crate) async fn check(sqlite: &ReadPool, pg: &ReadPool, when: &str) {
    let tests = seed(sqlite, pg).await;
    // Each store answers its questions while the other does, and the reads
    // are asked side by side: the questions are many, each a few round
    // trips.
    tokio::join!(
        check_flaky(sqlite, pg, when, &tests),
        check_clusters(sqlite, pg, when, &tests),
        check_history(sqlite, pg, when, &tests),
        check_slow(sqlite, pg, when, &tests),
        check_decide(sqlite, pg, when),
    );
}

/// Gives both stores the same releases (idempotent); answers the stored
/// test ids, sorted.
async fn seed(sqlite: &ReadPool, pg: &ReadPool) -> Vec<String> {
    let (ReadPool::Sqlite(s), ReadPool::Postgres(_)) = (sqlite, pg) else {
        panic!("the parity check compares a SQLite store with a PostgreSQL one");
    };
    let tests: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT test_id FROM tests ORDER BY 1")
        .fetch_all(s)
        .await
        .expect("test ids");
    let tests: Vec<String> = tests.into_iter().map(|(t,)| t).collect();
    let late = to_millis(at(90));
    // (project, test, after seq, by person, released at)
    let released: Vec<(&str, &str, i64, i64, Option<i64>)> = tests
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match i % 4 {
            0 => Some(("p1", t.as_str(), 4, 1, Some(late))),
            1 => Some(("p0", t.as_str(), 6, 0, Some(late))),
            2 => Some(("p0", t.as_str(), 2, 1, None)),
            _ => None,
        })
        .collect();
    for (pool, or_ignore, on_conflict) in [
        (sqlite, "OR IGNORE", ""),
        (pg, "", "ON CONFLICT DO NOTHING"),
    ] {
        let sql = |table_and_values: &str| {
            format!("INSERT {or_ignore} INTO {table_and_values} {on_conflict}")
        };
        for &(project, test, after, by_person, released_at) in &released {
            let insert = sql(
                "quarantine_released (project, test_id, after_seq, by_person, released_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            );
            let values = [
                V::Text(project),
                V::Text(test),
                V::Int(Some(after)),
                V::Int(Some(by_person)),
                V::Int(released_at),
            ];
            exec(pool, &insert, &values).await;
        }
    }
    tests
}

/// A value bound by [`exec`].
enum V<'a> {
    Text(&'a str),
    Int(Option<i64>),
}

/// Runs one statement of [`seed`] on either store (SQLite numbers `$1`,
/// `$2`, ... in order of appearance, as PostgreSQL does).
async fn exec(pool: &ReadPool, sql: &str, values: &[V<'_>]) {
    let done = match pool {
        ReadPool::Sqlite(p) => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
            for v in values {
                q = match v {
                    V::Text(t) => q.bind(t.to_string()),
                    V::Int(i) => q.bind(*i),
                };
            }
            q.execute(p).await.map(|_| ())
        }
        ReadPool::Postgres(p) => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
            for v in values {
                q = match v {
                    V::Text(t) => q.bind(t.to_string()),
                    V::Int(i) => q.bind(*i),
                };
            }
            q.execute(p).await.map(|_| ())
        }
    };
    done.unwrap_or_else(|e| panic!("seeding {sql}: {e}"));
}

/// The windows every windowed read is asked over.
fn windows(tests: &[String]) -> Vec<Window> {
    let window = |project: Option<&str>, branch: Option<&str>, since, runs, tests| Window {
        project: project.map(str::to_string),
        branch: branch.map(str::to_string),
        since,
        runs,
        tests,
    };
    let mut out = Vec::new();
    for project in [None, Some("p0")] {
        for branch in [None, Some("b0")] {
            for (since, runs) in [(None, 2), (None, 50), (Some(at(20)), 50)] {
                out.push(window(project, branch, since, runs, TestSet::All));
            }
        }
    }
    out.push(window(Some("nope"), None, None, 50, TestSet::All));
    // Each kind of test set.
    let mut ids: Vec<String> = tests.iter().step_by(2).cloned().collect();
    ids.push("tests/none.py::missing".into());
    for set in [
        TestSet::Owner(OWNERS[0].into()),
        TestSet::Owner(OWNERS[2].into()),
        TestSet::Ids(ids),
        TestSet::Ids(Vec::new()),
    ] {
        for project in [None, Some("p1")] {
            out.push(window(project, None, None, 50, set.clone()));
        }
    }
    out
}

async fn check_flaky(sqlite: &ReadPool, pg: &ReadPool, when: &str, tests: &[String]) {
    let rules = [
        FlipRule::default(),
        FlipRule {
            threshold: 0.5,
            min_flips: 1,
        },
        FlipRule {
            threshold: 0.75,
            min_flips: 3,
        },
    ];
    for (i, w) in windows(tests).into_iter().enumerate() {
        // The default rule with every test listed, and in turn a stricter
        // or looser one with a cut inside ties or none listed.
        for (rule, limit) in [(rules[0], 100), (rules[1 + i % 2], [2, 0][i % 2])] {
            let (a, b) = tokio::join!(
                flaky::find_flaky(sqlite, &w, rule, limit),
                flaky::find_flaky(pg, &w, rule, limit)
            );
            let a = a.unwrap_or_else(|e| panic!("flaky on SQLite {when}, {w:?}: {e}"));
            let b = b.unwrap_or_else(|e| panic!("flaky on PostgreSQL {when}, {w:?}: {e}"));
            assert_eq!(a, b, "flaky {when}, {w:?}, {rule:?}, limit {limit}");
        }
    }
}

async fn check_clusters(sqlite: &ReadPool, pg: &ReadPool, when: &str, tests: &[String]) {
    for w in windows(tests) {
        for limit in [100, 1] {
            let (a, b) = tokio::join!(
                clusters::clusters(sqlite, &w, limit),
                clusters::clusters(pg, &w, limit)
            );
            let a = a.unwrap_or_else(|e| panic!("clusters on SQLite {when}, {w:?}: {e}"));
            let b = b.unwrap_or_else(|e| panic!("clusters on PostgreSQL {when}, {w:?}: {e}"));
            assert_eq!(a, b, "clusters {when}, {w:?}, limit {limit}");
        }
    }
}

async fn check_history(sqlite: &ReadPool, pg: &ReadPool, when: &str, tests: &[String]) {
    let missing = "tests/none.py::missing".to_string();
    for test in tests.iter().chain([&missing]) {
        for (project, branch) in [
            (None, None),
            (Some("p0"), None),
            (None, Some("b0")),
            (Some("p1"), Some("b1")),
        ] {
            for limit in [100, 2] {
                let (a, b) = tokio::join!(
                    history::test_history(sqlite, test, project, branch, limit),
                    history::test_history(pg, test, project, branch, limit)
                );
                let what = format!("{test}, {project:?}, {branch:?}, limit {limit}");
                let a = a.unwrap_or_else(|e| panic!("history on SQLite {when}, {what}: {e}"));
                let b = b.unwrap_or_else(|e| panic!("history on PostgreSQL {when}, {what}: {e}"));
                assert_eq!(a, b, "history {when}, {what}");
            }
        }
    }
}

async fn check_slow(sqlite: &ReadPool, pg: &ReadPool, when: &str, tests: &[String]) {
    let rules = [
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
        (
            SlowRule {
                recent: 2,
                factor: 1.2,
                min_secs: 0.05,
            },
            0,
        ),
    ];
    for w in windows(tests) {
        for (rule, limit) in rules {
            let (a, b) = tokio::join!(
                history::slow_tests(sqlite, &w, rule, limit),
                history::slow_tests(pg, &w, rule, limit)
            );
            let a = a.unwrap_or_else(|e| panic!("slow tests on SQLite {when}, {w:?}: {e}"));
            let b = b.unwrap_or_else(|e| panic!("slow tests on PostgreSQL {when}, {w:?}: {e}"));
            assert_eq!(a, b, "slow tests {when}, {w:?}, {rule:?}, limit {limit}");
        }
    }
}

async fn check_decide(sqlite: &ReadPool, pg: &ReadPool, when: &str) {
    let ReadPool::Sqlite(s) = sqlite else {
        panic!("the parity check compares a SQLite store with a PostgreSQL one");
    };
    let newest: Vec<(String,)> =
        sqlx::query_as("SELECT run_id FROM runs ORDER BY started_at DESC, run_id DESC LIMIT 3")
            .fetch_all(s)
            .await
            .expect("newest runs");
    let oldest: Vec<(String,)> =
        sqlx::query_as("SELECT run_id FROM runs ORDER BY started_at, run_id LIMIT 2")
            .fetch_all(s)
            .await
            .expect("oldest runs");
    let runs = newest
        .into_iter()
        .chain(oldest)
        .map(|(r,)| r)
        .chain(["no-such-run".to_string()]);
    let settings = [
        Settings {
            days: 7,
            release_after_clean_runs: 2,
        },
        Settings {
            days: 0,
            release_after_clean_runs: 0,
        },
        Settings {
            days: 30,
            release_after_clean_runs: 5,
        },
    ];
    for run_id in runs {
        for (settings, now) in settings.into_iter().zip([at(95), at(200), at(60)]) {
            let (a, b) = tokio::join!(
                auto_quarantine::decide(sqlite, &run_id, settings, now),
                auto_quarantine::decide(pg, &run_id, settings, now)
            );
            let what = format!("run {run_id}, {settings:?}, at {now}");
            let a = a.unwrap_or_else(|e| panic!("decide on SQLite {when}, {what}: {e}"));
            let b = b.unwrap_or_else(|e| panic!("decide on PostgreSQL {when}, {what}: {e}"));
            assert_eq!(a, b, "decide {when}, {what}");
        }
    }
}
