//! The proof that [`PgStore`] writes what [`SqliteStore`] writes: one
//! random sequence of calls (proptest, as `props.rs` does for the SQLite
//! writer alone) is driven through both stores, and after every step every
//! table of the schema is read from both and compared row for row, with
//! every answer the calls gave.
//!
//! The sequences: runs of two projects, two branches, three workers, with
//! failing, erroring, retried, skipped, quarantined and owned tests, tests
//! under a second identity (aliases), outages, runs without every case,
//! runs whose counts lie, runs in several chunks with a piece missing,
//! resends (duplicates, late completion), conflicts, rejections, prunes by
//! age and by count, expiries, orphan sweeps, quarantine and release (by
//! hand and automatic), flaky marks, webhook deliveries and outbox upkeep,
//! with webhooks on for the default branch.
//!
//! How rows are compared ([`Snapshot`]): every column of every table
//! ([`SPECS`] must name each, the test fails on a table or column it does
//! not know). Keys a store assigns itself (`run_key`, `test_key`,
//! `text_key`, `rejected.id`, `tracked_tests.key`, `webhook_events.seq`)
//! are compared through what they stand for: a case names its run id, its
//! test's identity and its texts' bodies; a verdict its tracked test; a
//! summary blob is decoded and its test keys replaced by identities; an
//! event its rank. Times a store takes from its clock (`received_at`,
//! outbox times, `released_at`) are compared as the step that wrote them:
//! before each step the test waits for the clock to pass a new millisecond
//! and records it ([`Clock`]), so a row written in step `i` on either store
//! carries a time in `[marker i, marker i+1)`. Rows are sorted in Rust
//! (SQLite and PostgreSQL sort NULLs apart). The webhook event `id` (a
//! random UUIDv7) is the one column left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, PgPool, Row, SqlitePool, TypeInfo, ValueRef};

use super::PgStore;
use crate::model::{CaseRecord, Outcome, Rejection, RunStatus, to_millis};
use crate::quarantine::Entry;
use crate::store::sqlite::SqliteStore;
use crate::store::summary::decode;
use crate::store::{BatchItem, Cleared, Store};
use crate::testing::{case, record, t0};
use crate::webhooks::{Attempt, EventType, Route, Routes};

// ------------------------------------------------------------ snapshots

/// One value as both stores give it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Cell {
    Null,
    Int(i64),
    /// The bits of a double; -0.0 as 0.0 (SQLite stores -0.0 as 0).
    Real(u64),
    Text(String),
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => write!(f, "NULL"),
            Cell::Int(v) => write!(f, "{v}"),
            Cell::Real(b) => write!(f, "{:?}", f64::from_bits(*b)),
            Cell::Text(s) if s.len() > 80 => write!(f, "{:?}...", &s[..s.floor_char_boundary(80)]),
            Cell::Text(s) => write!(f, "{s:?}"),
            Cell::Bytes(b) => write!(f, "x{}", b.len()),
        }
    }
}

fn real(v: f64) -> Cell {
    Cell::Real(if v == 0.0 { 0 } else { v.to_bits() })
}

fn lite_cell(row: &SqliteRow, i: usize) -> Cell {
    let raw = row.try_get_raw(i).expect("column");
    if raw.is_null() {
        return Cell::Null;
    }
    match raw.type_info().name() {
        "INTEGER" => Cell::Int(row.try_get(i).expect("integer")),
        "REAL" => real(row.try_get(i).expect("real")),
        "TEXT" => Cell::Text(row.try_get(i).expect("text")),
        "BLOB" => Cell::Bytes(row.try_get(i).expect("blob")),
        other => panic!("SQLite column {i} of type {other}"),
    }
}

fn pg_cell(row: &PgRow, i: usize) -> Cell {
    if row.try_get_raw(i).expect("column").is_null() {
        return Cell::Null;
    }
    match row.column(i).type_info().name() {
        "INT8" => Cell::Int(row.try_get(i).expect("int8")),
        "INT4" => Cell::Int(i64::from(row.try_get::<i32, _>(i).expect("int4"))),
        "FLOAT8" => real(row.try_get(i).expect("float8")),
        "TEXT" => Cell::Text(row.try_get(i).expect("text")),
        "BYTEA" => Cell::Bytes(row.try_get(i).expect("bytea")),
        other => panic!("PostgreSQL column {i} of type {other}"),
    }
}

/// How one table is read: its own columns, and each key it holds that a
/// store assigns, replaced by what the key stands for (none: left out).
pub(super) struct Spec {
    table: &'static str,
    plain: &'static [&'static str],
    mapped: &'static [(&'static str, &'static [&'static str])],
    /// Columns holding the store's clock (see the module docs).
    clocks: &'static [&'static str],
}

const RUN_OF: &str = "(SELECT run_id FROM run_keys k WHERE k.run_key = t.run_key)";
const RANK_OF_SEQ: &str = "(SELECT COUNT(*) FROM webhook_events e WHERE e.seq <= t.seq)";
const RANK_OF_EVENT: &str = "(SELECT COUNT(*) FROM webhook_events e WHERE e.seq <= t.event_seq)";

/// Every table of the schema.
pub(super) const SPECS: &[Spec] = &[
    Spec {
        table: "runs",
        plain: &[
            "run_id",
            "project",
            "branch",
            "commit_sha",
            "worker_id",
            "host",
            "runner",
            "command",
            "started_at",
            "finished_at",
            "duration_secs",
            "exit_code",
            "status",
            "total",
            "passed",
            "failed",
            "error",
            "skipped",
            "xfailed",
            "xpassed",
            "pass_rate",
            "cases_complete",
            "note",
            "received_at",
            "digest",
            "seq",
            "quarantined_failures",
        ],
        mapped: &[],
        clocks: &["received_at"],
    },
    Spec {
        table: "run_chunks",
        plain: &["run_id", "chunk", "cases", "received_at", "digest"],
        mapped: &[],
        clocks: &["received_at"],
    },
    Spec {
        table: "pending_runs",
        plain: &["run_id", "chunks", "info", "received_at", "digest"],
        mapped: &[],
        clocks: &["received_at"],
    },
    Spec {
        table: "rejected",
        plain: &[
            "received_at",
            "subject",
            "msg_id",
            "run_id",
            "reason",
            "excerpt",
            "payload",
        ],
        mapped: &[("id", &[])],
        clocks: &["received_at"],
    },
    Spec {
        table: "flaky_cleared",
        plain: &["project", "test_id", "cleared_at", "note"],
        mapped: &[],
        clocks: &[],
    },
    Spec {
        table: "projects",
        plain: &["project", "runs"],
        mapped: &[],
        clocks: &[],
    },
    Spec {
        table: "worker_stats",
        plain: &[
            "worker_id",
            "run_count",
            "pass_rate_sum",
            "pass_rate_n",
            "last_seen",
            "last_started_at",
            "last_run_id",
            "last_status",
            "last_project",
            "host",
        ],
        mapped: &[],
        clocks: &[],
    },
    Spec {
        table: "test_failures",
        plain: &[
            "project",
            "test_id",
            "fail_count",
            "last_failed_at",
            "last_run_id",
            "last_message",
        ],
        mapped: &[],
        clocks: &[],
    },
    Spec {
        table: "test_failure_days",
        plain: &["project", "day", "test_id", "runs"],
        mapped: &[],
        clocks: &[],
    },
    Spec {
        table: "rollup_state",
        plain: &["name", "value"],
        mapped: &[],
        clocks: &[],
    },
    Spec {
        table: "signatures",
        plain: &["sig", "exception", "message", "frame"],
        mapped: &[],
        clocks: &[],
    },
    Spec {
        table: "tracked_tests",
        plain: &["project", "test_id", "since_seq"],
        mapped: &[("key", &[])],
        clocks: &[],
    },
    Spec {
        table: "verdicts",
        plain: &["seq", "failed", "retried"],
        mapped: &[(
            "key",
            &[
                "(SELECT project FROM tracked_tests k WHERE k.key = t.key)",
                "(SELECT test_id FROM tracked_tests k WHERE k.key = t.key)",
            ],
        )],
        clocks: &[],
    },
    Spec {
        table: "quarantine",
        plain: &[
            "project",
            "test_id",
            "reason",
            "since",
            "expires_at",
            "auto",
            "clean_runs",
        ],
        mapped: &[],
        clocks: &[],
    },
    Spec {
        table: "quarantine_released",
        plain: &[
            "project",
            "test_id",
            "after_seq",
            "by_person",
            "released_at",
        ],
        mapped: &[],
        clocks: &["released_at"],
    },
    Spec {
        table: "webhook_events",
        plain: &[
            "type",
            "occurred_at",
            "project",
            "branch",
            "run_id",
            "test_id",
            "data",
        ],
        mapped: &[("seq", &[RANK_OF_SEQ]), ("id", &[])],
        clocks: &["occurred_at"],
    },
    Spec {
        table: "webhook_deliveries",
        plain: &[
            "target",
            "state",
            "attempts",
            "created_at",
            "next_attempt_at",
            "done_at",
            "last_error",
        ],
        mapped: &[("event_seq", &[RANK_OF_EVENT])],
        clocks: &["created_at", "next_attempt_at", "done_at"],
    },
    Spec {
        table: "test_owners",
        plain: &["project", "test_id", "owner"],
        mapped: &[],
        clocks: &[],
    },
    Spec {
        table: "run_keys",
        plain: &["run_id"],
        mapped: &[("run_key", &[])],
        clocks: &[],
    },
    Spec {
        table: "tests",
        plain: &["test_id", "file", "classname", "name"],
        mapped: &[("test_key", &[])],
        clocks: &[],
    },
    Spec {
        table: "texts",
        plain: &["body"],
        mapped: &[("text_key", &[])],
        clocks: &[],
    },
    Spec {
        table: "cases",
        plain: &[
            "outcome",
            "chunk",
            "idx",
            "duration_secs",
            "retries",
            "flaky",
            "quarantined",
            "sig",
        ],
        mapped: &[
            ("run_key", &[RUN_OF]),
            (
                "test_key",
                &[
                    "(SELECT test_id FROM tests s WHERE s.test_key = t.test_key)",
                    "(SELECT file FROM tests s WHERE s.test_key = t.test_key)",
                    "(SELECT classname FROM tests s WHERE s.test_key = t.test_key)",
                    "(SELECT name FROM tests s WHERE s.test_key = t.test_key)",
                ],
            ),
            (
                "message_key",
                &["(SELECT body FROM texts x WHERE x.text_key = t.message_key)"],
            ),
            (
                "traceback_key",
                &["(SELECT body FROM texts x WHERE x.text_key = t.traceback_key)"],
            ),
            (
                "output_key",
                &["(SELECT body FROM texts x WHERE x.text_key = t.output_key)"],
            ),
            (
                "owners_key",
                &["(SELECT body FROM texts x WHERE x.text_key = t.owners_key)"],
            ),
        ],
        clocks: &[],
    },
    // `tests` is a blob of test keys: decoded and named (see `Snapshot`).
    Spec {
        table: "run_tests",
        plain: &["tests"],
        mapped: &[("run_key", &[RUN_OF])],
        clocks: &[],
    },
];

impl Spec {
    fn sql(&self) -> String {
        let mut cols: Vec<String> = self.plain.iter().map(|c| format!("t.{c}")).collect();
        for (_, exprs) in self.mapped {
            cols.extend(exprs.iter().map(|e| e.to_string()));
        }
        format!("SELECT {} FROM {} t", cols.join(", "), self.table)
    }

    fn position(&self, column: &str) -> Option<usize> {
        self.plain.iter().position(|c| *c == column)
    }
}

/// The store's clock, as steps: marker `i` is a millisecond before every
/// time written in step `i` and after every time written before it.
#[derive(Debug, Default, Clone)]
pub(super) struct Clock {
    markers: Vec<i64>,
}

impl Clock {
    /// Waits for the clock to pass a millisecond no write has seen yet and
    /// records it as the next step's marker (a wait on the clock itself,
    /// bounded by a millisecond).
    pub(super) fn tick(&mut self) -> i64 {
        let last = to_millis(Utc::now());
        loop {
            let now = to_millis(Utc::now());
            if now > last {
                self.markers.push(now);
                return now;
            }
            std::hint::spin_loop();
        }
    }

    /// A time read from a clock column, as the step that wrote it (times
    /// before the first marker are data, kept).
    fn step_of(&self, cell: Cell) -> Cell {
        match (&cell, self.markers.first()) {
            (Cell::Int(v), Some(first)) if v >= first => {
                let step = self.markers.partition_point(|m| m <= v) - 1;
                Cell::Text(format!("<written in step {step}>"))
            }
            _ => cell,
        }
    }
}

/// Every table's rows, keyed by table, sorted.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Snapshot(pub(super) BTreeMap<&'static str, Vec<Vec<Cell>>>);

/// Reads `tables` (all when empty) from both stores.
pub(super) async fn snapshots(
    lite: &SqlitePool,
    pg: &PgPool,
    clock: &Clock,
    tables: &[&str],
) -> (Snapshot, Snapshot) {
    let specs: Vec<&Spec> = SPECS
        .iter()
        .filter(|s| tables.is_empty() || tables.contains(&s.table))
        .collect();
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    let lite_tests = lite_identities(lite).await;
    let pg_tests = pg_identities(pg).await;
    for spec in specs {
        let sql = spec.sql();
        let rows: Vec<SqliteRow> = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(lite)
            .await
            .unwrap_or_else(|e| panic!("SQLite {sql}: {e}"));
        let rows: Vec<Vec<Cell>> = rows
            .iter()
            .map(|r| (0..r.len()).map(|i| lite_cell(r, i)).collect())
            .collect();
        a.insert(spec.table, finish(spec, rows, clock, &lite_tests));
        let rows: Vec<PgRow> = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(pg)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL {sql}: {e}"));
        let rows: Vec<Vec<Cell>> = rows
            .iter()
            .map(|r| (0..r.len()).map(|i| pg_cell(r, i)).collect())
            .collect();
        b.insert(spec.table, finish(spec, rows, clock, &pg_tests));
    }
    (Snapshot(a), Snapshot(b))
}

/// A test key to its identity, in one store.
type Identities = HashMap<i64, String>;

/// A `tests` row: key, test id, file, class name, name.
type TestRow = (i64, String, Option<String>, Option<String>, String);

const IDENTITIES: &str = "SELECT test_key, test_id, file, classname, name FROM tests";

fn identity(id: String, file: Option<String>, class: Option<String>, name: String) -> String {
    format!("{id}|{file:?}|{class:?}|{name}")
}

async fn lite_identities(pool: &SqlitePool) -> Identities {
    let rows: Vec<TestRow> = sqlx::query_as(IDENTITIES)
        .fetch_all(pool)
        .await
        .expect("tests");
    rows.into_iter()
        .map(|(k, i, f, c, n)| (k, identity(i, f, c, n)))
        .collect()
}

async fn pg_identities(pool: &PgPool) -> Identities {
    let rows: Vec<TestRow> = sqlx::query_as(IDENTITIES)
        .fetch_all(pool)
        .await
        .expect("tests");
    rows.into_iter()
        .map(|(k, i, f, c, n)| (k, identity(i, f, c, n)))
        .collect()
}

/// Clock columns as steps, a summary blob as named tests, rows sorted.
fn finish(
    spec: &Spec,
    mut rows: Vec<Vec<Cell>>,
    clock: &Clock,
    tests: &Identities,
) -> Vec<Vec<Cell>> {
    let clocks: Vec<usize> = spec
        .clocks
        .iter()
        .filter_map(|c| spec.position(c))
        .collect();
    let blob = (spec.table == "run_tests")
        .then(|| spec.position("tests"))
        .flatten();
    for row in &mut rows {
        for &i in &clocks {
            row[i] = clock.step_of(std::mem::replace(&mut row[i], Cell::Null));
        }
        if let Some(i) = blob {
            let Cell::Bytes(bytes) = &row[i] else {
                panic!("run_tests.tests is not a blob: {:?}", row[i]);
            };
            let summary = decode(bytes).expect("a stored summary decodes");
            assert!(
                summary.windows(2).all(|w| w[0].key < w[1].key),
                "a summary lists its tests by key: {summary:?}"
            );
            let mut named: Vec<String> = summary
                .iter()
                .map(|t| {
                    let name = tests.get(&t.key).expect("a summary's key names a test");
                    format!(
                        "{name} {:?} {:?} {:?}",
                        t.worst,
                        t.ran_secs.to_bits(),
                        t.all_secs.to_bits()
                    )
                })
                .collect();
            named.sort();
            row[i] = Cell::Text(named.join("\n"));
        }
    }
    rows.sort();
    rows
}

/// Fails naming the first table that differs, with the rows only one
/// store has.
pub(super) fn assert_same(lite: &Snapshot, pg: &Snapshot, when: &str) {
    for (table, a) in &lite.0 {
        let b = pg.0.get(table).expect("both read the same tables");
        if a == b {
            continue;
        }
        let only_lite: Vec<_> = a.iter().filter(|r| !b.contains(r)).take(5).collect();
        let only_pg: Vec<_> = b.iter().filter(|r| !a.contains(r)).take(5).collect();
        panic!(
            "{table} differs {when} ({} rows on SQLite, {} on PostgreSQL)\n\
             only on SQLite: {only_lite:#?}\nonly on PostgreSQL: {only_pg:#?}",
            a.len(),
            b.len()
        );
    }
}

/// [`SPECS`] names every table of the schema and every column of each.
#[tokio::test]
async fn the_comparison_covers_every_table_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = crate::DbOptions::new(dir.path().join("s.db"));
    let pool = crate::store::sqlite::db::open_writer(&db)
        .await
        .expect("sqlite");
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name NOT LIKE '_sqlx_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    let known: BTreeSet<&str> = SPECS.iter().map(|s| s.table).collect();
    let schema: BTreeSet<&str> = tables.iter().map(|(t,)| t.as_str()).collect();
    assert_eq!(known, schema, "a table the parity test does not compare");
    for spec in SPECS {
        let cols: Vec<(String,)> = sqlx::query_as("SELECT name FROM pragma_table_info(?)")
            .bind(spec.table)
            .fetch_all(&pool)
            .await
            .expect("columns");
        let schema: BTreeSet<&str> = cols.iter().map(|(c,)| c.as_str()).collect();
        let named: BTreeSet<&str> = spec
            .plain
            .iter()
            .copied()
            .chain(spec.mapped.iter().map(|(c, _)| *c))
            .collect();
        assert_eq!(named, schema, "columns of {}", spec.table);
    }
    pool.close().await;
}

// ------------------------------------------------------------ sequences

/// Tests in every generated run.
const TESTS: usize = 6;

/// What one test did in one run.
#[derive(Debug, Clone, Copy)]
enum Did {
    Absent,
    Passed,
    Skipped,
    Failed(usize),
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

const OWNERS: [&[&str]; 4] = [&[], &["@a"], &["@a", "@b"], &["@b"]];

#[derive(Debug, Clone)]
struct RunSpec {
    project: usize,
    branch: usize,
    commit: usize,
    hour: i64,
    /// `cases_complete`.
    complete: bool,
    /// Every test errors.
    outage: bool,
    /// The final says one more pass than the chunks hold.
    lie: bool,
    crashed: bool,
    /// Which owners list each test gets (rotated by test).
    owners: usize,
    /// Failing cases of tests 0 and 1 are quarantined.
    quarantined: bool,
    /// Test 2 comes from another file: a second identity of its id.
    moved: bool,
    /// Chunks the cases are cut into (1..=3).
    chunks: usize,
    /// 0: all pieces; 1: no final; 2: the last chunk missing.
    missing: usize,
    final_first: bool,
    pace: usize,
    tests: Vec<Did>,
}

#[derive(Debug, Clone)]
enum Step {
    Run(RunSpec),
    /// Every piece of an earlier run again.
    Resend(usize),
    /// An earlier run's id with other content.
    Conflict(usize),
    /// A message refused upstream, received at this hour.
    Reject(i64),
    KeepRuns(u32),
    Before(i64),
    /// A prune whose cut-off is the clock now: everything goes.
    PruneAll,
    /// Expire pieces received before the marker this many steps back.
    Expire(usize),
    Reclaim,
    Clear(usize, usize, i64),
    Quarantine {
        project: usize,
        test: usize,
        auto: bool,
        hour: i64,
        expires: Option<i64>,
    },
    /// Release the n-th stored entry (by project and test; one past the
    /// last: a test never quarantined).
    Release {
        pick: usize,
        only_auto: bool,
    },
    /// An attempt at the n-th pending delivery.
    Attempt(usize, usize, i64),
    PruneOutbox {
        delivered: i64,
        dead: i64,
        drop_runs_target: bool,
    },
}

fn did() -> impl Strategy<Value = Did> {
    prop_oneof![
        3 => Just(Did::Passed),
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
        (0..2usize, 0..2usize, 0..3usize, 0..72i64),
        (
            proptest::bool::weighted(0.9),
            proptest::bool::weighted(0.1),
            proptest::bool::weighted(0.05),
            proptest::bool::weighted(0.05),
        ),
        (
            0..OWNERS.len(),
            proptest::bool::weighted(0.2),
            proptest::bool::weighted(0.1),
        ),
        (
            1..=3usize,
            prop_oneof![8 => Just(0usize), 1 => Just(1), 1 => Just(2)],
            any::<bool>(),
            0..5usize,
        ),
        proptest::collection::vec(did(), TESTS),
    )
        .prop_map(
            |(
                (project, branch, commit, hour),
                (complete, outage, lie, crashed),
                (owners, quarantined, moved),
                (chunks, missing, final_first, pace),
                tests,
            )| RunSpec {
                project,
                branch,
                commit,
                hour,
                complete,
                outage,
                lie,
                crashed,
                owners,
                quarantined,
                moved,
                chunks,
                missing,
                final_first,
                pace,
                tests,
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        14 => run_spec().prop_map(Step::Run),
        2 => any::<usize>().prop_map(Step::Resend),
        1 => any::<usize>().prop_map(Step::Conflict),
        1 => (0..72i64).prop_map(Step::Reject),
        1 => (2..6u32).prop_map(Step::KeepRuns),
        1 => (0..40i64).prop_map(Step::Before),
        1 => Just(Step::PruneAll),
        1 => (0..4usize).prop_map(Step::Expire),
        1 => Just(Step::Reclaim),
        1 => (0..2usize, 0..TESTS, 0..72i64).prop_map(|(p, t, h)| Step::Clear(p, t, h)),
        2 => (0..2usize, 0..TESTS, any::<bool>(), 0..72i64, proptest::option::of(1..48i64))
            .prop_map(|(project, test, auto, hour, expires)| Step::Quarantine {
                project,
                test,
                auto,
                hour,
                expires,
            }),
        2 => (any::<usize>(), any::<bool>())
            .prop_map(|(pick, only_auto)| Step::Release { pick, only_auto }),
        2 => (any::<usize>(), 0..3usize, 0..72i64).prop_map(|(n, k, h)| Step::Attempt(n, k, h)),
        1 => (0..72i64, 0..72i64, proptest::bool::weighted(0.3)).prop_map(
            |(delivered, dead, drop_runs_target)| Step::PruneOutbox {
                delivered,
                dead,
                drop_runs_target,
            }
        ),
    ]
}

fn test_id(t: usize) -> String {
    format!("tests/test_{t}.py::test_{t}")
}

fn at(hour: i64) -> DateTime<Utc> {
    t0() + Duration::hours(hour)
}

const SECONDS: [f64; 5] = [0.1, 0.25, 0.5, 1.7, 3.0];

fn cases(spec: &RunSpec) -> Vec<CaseRecord> {
    let mut out = Vec::new();
    for (t, did) in spec.tests.iter().enumerate() {
        let id = test_id(t);
        let owners: Vec<String> = OWNERS[(spec.owners + t) % OWNERS.len()]
            .iter()
            .map(|o| o.to_string())
            .collect();
        let base = |outcome, message| CaseRecord {
            owners: owners.clone(),
            file: (spec.moved && t == 2).then(|| "tests/moved.py".to_string()),
            ..case(&id, outcome, message)
        };
        let failing = |outcome, n: usize| CaseRecord {
            traceback: n
                .is_multiple_of(2)
                .then(|| format!("tests/test_{t}.py:{n}: Error")),
            output: (n == 3).then(|| "captured\noutput".to_string()),
            quarantined: spec.quarantined && t < 2,
            ..base(outcome, MESSAGES[n % 4])
        };
        match if spec.outage { Did::Errored(1) } else { *did } {
            Did::Absent => {}
            Did::Passed => out.push(base(Outcome::Passed, None)),
            Did::Skipped => out.push(base(Outcome::Skipped, Some("no db"))),
            Did::Failed(n) => out.push(failing(Outcome::Failed, n)),
            Did::Errored(n) => out.push(failing(Outcome::Error, n)),
            Did::FailedTwice(n) => {
                out.push(failing(Outcome::Failed, n));
                out.push(failing(Outcome::Error, n + 1));
            }
            Did::Retried => out.push(CaseRecord {
                retries: 1,
                flaky: true,
                ..base(Outcome::Passed, None)
            }),
        }
    }
    for (i, c) in out.iter_mut().enumerate() {
        c.duration_secs = SECONDS[(i + spec.pace) % SECONDS.len()];
    }
    out
}

/// Every piece of run `i` (`spec`), in its order, before leaving one out.
fn all_pieces(i: usize, spec: &RunSpec) -> Vec<BatchItem> {
    let cases = cases(spec);
    let run_id = format!("r{i:03}");
    let started = at(spec.hour) + Duration::minutes((i % 7) as i64);
    let mut r = record(
        &run_id,
        &format!("p{}", spec.project),
        &format!("w{}", i % 3),
        started,
        &cases,
    );
    r.branch = Some(format!("b{}", spec.branch));
    r.commit = Some(format!("c{}", spec.commit));
    if !spec.complete {
        r.cases_complete = false;
        r.counts.passed += 2;
        r.counts.total += 2;
        r.pass_rate = r.counts.pass_rate();
    }
    if spec.lie {
        r.counts.passed += 1;
        r.counts.total += 1;
    }
    if spec.crashed {
        r.status = RunStatus::Crashed;
    }
    let per = cases.len().div_ceil(spec.chunks).max(1);
    let mut chunks: Vec<Vec<CaseRecord>> = cases.chunks(per).map(<[_]>::to_vec).collect();
    while chunks.len() < spec.chunks {
        chunks.push(Vec::new());
    }
    let mut items: Vec<BatchItem> = chunks
        .into_iter()
        .enumerate()
        .map(|(k, cases)| BatchItem::Chunk {
            run_id: run_id.clone(),
            chunk: k as u32,
            cases,
            digest: format!("chunk-{run_id}-{k}"),
        })
        .collect();
    let fin = BatchItem::Final {
        run: Box::new(r),
        chunks: spec.chunks as u32,
        digest: format!("final-{run_id}"),
    };
    if spec.final_first {
        items.insert(0, fin);
    } else {
        items.push(fin);
    }
    items
}

/// What run step `i` stores: its pieces less the one it misses.
fn pieces(i: usize, spec: &RunSpec) -> Vec<BatchItem> {
    let mut items = all_pieces(i, spec);
    match spec.missing {
        1 => items.retain(|it| !matches!(it, BatchItem::Final { .. })),
        2 => {
            let last = spec.chunks as u32 - 1;
            items.retain(|it| !matches!(it, BatchItem::Chunk { chunk, .. } if *chunk == last));
        }
        _ => {}
    }
    items
}

/// Another version of run `i`: chunk 0 and the final with other content.
fn conflicting(i: usize, spec: &RunSpec) -> Vec<BatchItem> {
    let run_id = format!("r{i:03}");
    let other = vec![case("tests/other.py::t", Outcome::Passed, None)];
    vec![
        BatchItem::Chunk {
            run_id: run_id.clone(),
            chunk: 0,
            cases: other.clone(),
            digest: format!("other-chunk-{run_id}"),
        },
        BatchItem::Final {
            run: Box::new(record(
                &run_id,
                &format!("p{}", spec.project),
                "w9",
                at(spec.hour),
                &other,
            )),
            chunks: 1,
            digest: format!("other-final-{run_id}"),
        },
    ]
}

fn routes(drop_runs_target: bool) -> Routes {
    let mut targets = vec![Route {
        target: "all".into(),
        events: EventType::ALL.to_vec(),
    }];
    if !drop_runs_target {
        targets.push(Route {
            target: "runs".into(),
            events: vec![EventType::RunFailed, EventType::TestNewlyFailing],
        });
    }
    Routes {
        default_branches: vec!["b0".into()],
        targets,
        max_pending: 7,
    }
}

/// At most three quarantined tests a project.
fn fits(project: &str, list: &[Entry]) -> Result<(), String> {
    if list.len() > 3 {
        Err(format!(
            "project {project} may quarantine 3 tests, not {}",
            list.len()
        ))
    } else {
        Ok(())
    }
}

/// A store under test, with what the sequence asks of its rows: its
/// pending deliveries in order (event keys are its own), its quarantined
/// tests.
trait Backend: Store {
    async fn pending(&self) -> Vec<(String, i64)>;
    async fn quarantined(&self) -> Vec<(String, String)>;
}

const QUARANTINED: &str = "SELECT project, test_id FROM quarantine ORDER BY project, test_id";

const PENDING: &str =
    "SELECT target, event_seq FROM webhook_deliveries WHERE state = 0 ORDER BY target, event_seq";

impl Backend for SqliteStore {
    async fn pending(&self) -> Vec<(String, i64)> {
        sqlx::query_as(PENDING)
            .fetch_all(&self.pool)
            .await
            .expect("pending")
    }

    async fn quarantined(&self) -> Vec<(String, String)> {
        sqlx::query_as(QUARANTINED)
            .fetch_all(&self.pool)
            .await
            .expect("quarantined")
    }
}

impl Backend for PgStore {
    async fn pending(&self) -> Vec<(String, i64)> {
        sqlx::query_as(PENDING)
            .fetch_all(&self.pool)
            .await
            .expect("pending")
    }

    async fn quarantined(&self) -> Vec<(String, String)> {
        sqlx::query_as(QUARANTINED)
            .fetch_all(&self.pool)
            .await
            .expect("quarantined")
    }
}

/// Runs step `i` on `store`; what it answered, for comparison.
async fn apply<S: Backend>(store: &S, steps: &[Step], i: usize, clock: &Clock) -> String {
    let hooks = routes(false);
    let earlier = |k: usize| {
        let runs: Vec<(usize, &RunSpec)> = steps[..i]
            .iter()
            .enumerate()
            .filter_map(|(j, s)| match s {
                Step::Run(spec) => Some((j, spec)),
                _ => None,
            })
            .collect();
        (!runs.is_empty()).then(|| runs[k % runs.len()])
    };
    let batch = |items| async {
        format!(
            "{:?}",
            store.store_batch(&hooks, items).await.expect("stored")
        )
    };
    match &steps[i] {
        Step::Run(spec) => batch(pieces(i, spec)).await,
        Step::Resend(k) => match earlier(*k) {
            Some((j, spec)) => batch(all_pieces(j, spec)).await,
            None => String::new(),
        },
        Step::Conflict(k) => match earlier(*k) {
            Some((j, spec)) => batch(conflicting(j, spec)).await,
            None => String::new(),
        },
        Step::Reject(h) => {
            let r = Rejection {
                received_at: at(*h),
                subject: Some("ptp.runs.x".into()),
                msg_id: Some(format!("m{i}")),
                run_id: None,
                reason: format!("not JSON ({i})"),
                excerpt: Some("{oops".into()),
                payload: Some(vec![1, 2, 3]),
            };
            batch(vec![BatchItem::Reject(r)]).await
        }
        Step::KeepRuns(n) => prune(store, None, Some(*n)).await,
        Step::Before(h) => prune(store, Some(at(*h)), None).await,
        Step::PruneAll => prune(store, Some(Utc::now()), None).await,
        Step::Expire(back) => {
            let marker = clock.markers[i.saturating_sub(*back)];
            let before = crate::model::from_millis(marker);
            format!(
                "{:?}",
                store.expire_incomplete(before).await.expect("expired")
            )
        }
        Step::Reclaim => {
            store.reclaim().await.expect("reclaimed");
            String::new()
        }
        Step::Clear(p, t, h) => {
            let c = Cleared {
                project: format!("p{p}"),
                test_id: test_id(*t),
                at: at(*h),
                note: Some(format!("fixed in step {i}")),
            };
            format!("{:?}", store.clear_flaky(c).await.expect("cleared"))
        }
        Step::Quarantine {
            project,
            test,
            auto,
            hour,
            expires,
        } => {
            let entry = Entry {
                test_id: test_id(*test),
                reason: format!("flaky since step {i}"),
                since: at(*hour),
                expires_at: expires.map(|e| at(hour + e)),
                auto: *auto,
            };
            let now = at(hour + 1);
            let r = store
                .quarantine(&hooks, &format!("p{project}"), &entry, fits, now)
                .await
                .expect("quarantine");
            format!("{r:?}")
        }
        Step::Release { pick, only_auto } => {
            let mut entries = store.quarantined().await;
            entries.push(("p0".into(), "tests/never.py::t".into()));
            let (project, test) = &entries[pick % entries.len()];
            let r = store
                .release(&hooks, project, test, *only_auto)
                .await
                .expect("release");
            format!("{project} {test} {r:?}")
        }
        Step::Attempt(n, kind, h) => {
            let pending = store.pending().await;
            if pending.is_empty() {
                return String::new();
            }
            let (target, seq) = &pending[n % pending.len()];
            let outcome = match kind {
                0 => Attempt::Delivered,
                1 => Attempt::Retry {
                    error: format!("HTTP 503 in step {i}"),
                    next_attempt_at: at(h + 1),
                },
                _ => Attempt::GiveUp {
                    error: format!("HTTP 410 in step {i}"),
                },
            };
            store
                .record_attempt(target, *seq, &outcome, at(*h))
                .await
                .expect("attempt");
            format!("{target} {}", n % pending.len())
        }
        Step::PruneOutbox {
            delivered,
            dead,
            drop_runs_target,
        } => {
            let targets: Vec<String> = routes(*drop_runs_target)
                .targets
                .into_iter()
                .map(|r| r.target)
                .collect();
            let n = store
                .prune_outbox(at(*delivered), at(*dead), &targets)
                .await
                .expect("outbox pruned");
            format!("{n}")
        }
    }
}

/// Prunes in slices of 3 runs until nothing is left; the totals and what
/// changed.
async fn prune<S: Store>(store: &S, cutoff: Option<DateTime<Utc>>, keep: Option<u32>) -> String {
    let mut total = crate::store::PruneReport::default();
    let mut projects = BTreeSet::new();
    let mut pruned = false;
    loop {
        let (r, changed) = store.prune_slice(cutoff, keep, 3).await.expect("pruned");
        if r.is_empty() {
            break;
        }
        total.runs += r.runs;
        total.cases += r.cases;
        total.incomplete += r.incomplete;
        total.rejected += r.rejected;
        projects.extend(changed.projects);
        pruned |= changed.pruned;
    }
    format!("{total:?} {projects:?} {pruned}")
}

/// Both stores, fresh.
pub(super) struct Pair {
    pub(super) lite: SqliteStore,
    pub(super) pg: PgStore,
    _db: ptp_test_support::PgDatabase,
    _dir: tempfile::TempDir,
}

impl Pair {
    pub(super) async fn new() -> Pair {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::DbOptions::new(dir.path().join("parity.db"));
        let lite = SqliteStore::new(
            crate::store::sqlite::db::open_writer(&db)
                .await
                .expect("sqlite"),
        );
        let pg_db = ptp_test_support::PgDatabase::create().await;
        let pg = PgStore::new(super::open(pg_db.url(), 2).await.expect("postgres"));
        Pair {
            lite,
            pg,
            _db: pg_db,
            _dir: dir,
        }
    }

    pub(super) async fn close(self) {
        self.lite.pool.close().await;
        self.pg.pool.close().await;
    }
}

proptest! {
    #![proptest_config(ptp_test_support::fuzz::config(16))]

    /// The same sequence through both stores: the same answers, and the
    /// same rows in every table after every step.
    #[test]
    fn both_stores_write_the_same_rows(steps in proptest::collection::vec(step(), 1..36)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let pair = Pair::new().await;
            let mut clock = Clock::default();
            for i in 0..steps.len() {
                clock.tick();
                let when = format!("after step {i} ({:?})", steps[i]);
                let a = apply(&pair.lite, &steps, i, &clock).await;
                let b = apply(&pair.pg, &steps, i, &clock).await;
                assert_eq!(a, b, "answers {when}");
                let (a, b) = snapshots(&pair.lite.pool, &pair.pg.pool, &clock, &[]).await;
                assert_same(&a, &b, &when);
            }
            pair.close().await;
        });
    }
}
