//! The PostgreSQL store on a real server, a database per test
//! ([`PgDatabase`]): its schema against the SQLite one, the writer's
//! guarantees (order, idempotence, conflicts, refused counts, with the
//! SQLite writer's reasons), and two masters storing the same runs at once.

use chrono::Duration;
use ptp_test_support::PgDatabase;
use sqlx::SqlitePool;

use super::*;
use crate::model::{CaseRecord, Outcome, Rejection};
use crate::store::StoreError;
use crate::testing::{case, record, t0};
use crate::writer::StoreBatch;

async fn database() -> (PgDatabase, PgPool) {
    let db = PgDatabase::create().await;
    let pool = open(db.url(), 4).await.expect("open and migrate");
    (db, pool)
}

async fn store(pool: &PgPool, items: Vec<BatchItem>) -> BatchReport {
    let store = PgStore::new(pool.clone());
    let (report, _) = store
        .store_batch(&crate::webhooks::Routes::default(), items)
        .await
        .expect("stored");
    report
}

/// Three chunks of three cases (a pass, a failure, a skip each) and the
/// final of a run whose counts agree; the final last.
fn pieces(run_id: &str, tests: &str) -> Vec<BatchItem> {
    let chunks: Vec<Vec<CaseRecord>> = (0..3)
        .map(|k| {
            vec![
                case(&format!("{tests}::pass{k}"), Outcome::Passed, None),
                case(
                    &format!("{tests}::fail{k}"),
                    Outcome::Failed,
                    Some(&format!("AssertionError: boom {k}")),
                ),
                case(&format!("{tests}::skip{k}"), Outcome::Skipped, None),
            ]
        })
        .collect();
    let all: Vec<CaseRecord> = chunks.iter().flatten().cloned().collect();
    let run = record(run_id, "p", "w", t0(), &all);
    let mut items: Vec<BatchItem> = chunks
        .into_iter()
        .enumerate()
        .map(|(k, cases)| BatchItem::Chunk {
            run_id: run_id.into(),
            chunk: k as u32,
            cases,
            digest: format!("chunk-{run_id}-{k}"),
        })
        .collect();
    items.push(BatchItem::Final {
        run: Box::new(run),
        chunks: 3,
        digest: format!("final-{run_id}"),
    });
    items
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.expect(sql);
    n
}

async fn reasons(pool: &PgPool) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT reason FROM rejected ORDER BY reason")
        .fetch_all(pool)
        .await
        .expect("rejections");
    rows.into_iter().map(|(r,)| r).collect()
}

/// The SQLite writer's rejection reasons after storing `batches`, sorted:
/// what the PostgreSQL store must record for the same input.
async fn sqlite_reasons(batches: Vec<Vec<BatchItem>>) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (actors, pool) = crate::testing::start(&dir.path().join("w.sqlite")).await;
    for batch in batches {
        actors
            .writer
            .send(StoreBatch(batch))
            .await
            .expect("writer answers")
            .expect("stored");
    }
    let rows: Vec<(String,)> = sqlx::query_as("SELECT reason FROM rejected ORDER BY reason")
        .fetch_all(&pool)
        .await
        .expect("rejections");
    pool.close().await;
    actors.stop();
    rows.into_iter().map(|(r,)| r).collect()
}

#[tokio::test]
async fn migrations_run_on_an_empty_database_and_a_second_open_changes_nothing() {
    let (db, pool) = database().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM _sqlx_migrations").await,
        1
    );
    let state: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, value FROM rollup_state ORDER BY name")
            .fetch_all(&pool)
            .await
            .expect("rollup_state");
    let state: Vec<(&str, i64)> = state.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_eq!(
        state,
        [
            ("built", 0),
            ("run_tests_built", 1),
            ("seq", 0),
            ("test_aliases", 0)
        ]
    );
    let again = open(db.url(), 1).await.expect("second open");
    assert_eq!(
        count(&again, "SELECT COUNT(*) FROM _sqlx_migrations").await,
        1
    );
    assert_eq!(count(&again, "SELECT COUNT(*) FROM rollup_state").await, 4);
    again.close().await;
    pool.close().await;
}

/// Every table and view of the SQLite schema, with its columns and (for
/// tables) their types, as one list per store: a column added to one store
/// only fails here.
#[tokio::test]
async fn the_schema_matches_sqlite_table_by_table_and_column_by_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite =
        crate::store::sqlite::db::open_writer(&crate::DbOptions::new(dir.path().join("s.db")))
            .await
            .expect("sqlite");
    let lite = sqlite_columns(&sqlite).await;
    sqlite.close().await;
    let (_db, pool) = database().await;
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, t.table_type::text, c.column_name::text, c.data_type::text \
         FROM information_schema.columns c JOIN information_schema.tables t \
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = 'public' AND c.table_name <> '_sqlx_migrations' \
         ORDER BY 1, 3",
    )
    .fetch_all(&pool)
    .await
    .expect("pg columns");
    let pg: Vec<(String, String, String)> = rows
        .into_iter()
        .map(|(table, kind, column, ty)| {
            let ty = if kind == "VIEW" {
                String::new()
            } else {
                ty.to_uppercase()
            };
            (table, column, ty)
        })
        .collect();
    assert!(lite.len() > 100, "{lite:?}");
    let only_sqlite: Vec<_> = lite.iter().filter(|c| !pg.contains(c)).collect();
    let only_pg: Vec<_> = pg.iter().filter(|c| !lite.contains(c)).collect();
    assert!(
        only_sqlite.is_empty() && only_pg.is_empty(),
        "only in SQLite: {only_sqlite:?}\nonly in PostgreSQL: {only_pg:?}"
    );
    assert_eq!(lite, pg);
    pool.close().await;
}

/// (table, column, the PostgreSQL type of its SQLite type; "" in views),
/// sorted.
async fn sqlite_columns(pool: &SqlitePool) -> Vec<(String, String, String)> {
    let objects: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .expect("sqlite objects");
    let mut columns = Vec::new();
    for (name, kind) in objects {
        let cols: Vec<(String, String)> =
            sqlx::query_as("SELECT name, type FROM pragma_table_info(?)")
                .bind(&name)
                .fetch_all(pool)
                .await
                .expect("sqlite columns");
        for (column, ty) in cols {
            let ty = match (kind.as_str(), ty.as_str()) {
                ("view", _) => "",
                (_, "INTEGER") => "BIGINT",
                (_, "REAL") => "DOUBLE PRECISION",
                (_, "TEXT") => "TEXT",
                (_, "BLOB") => "BYTEA",
                (_, other) => panic!("{name}.{column}: SQLite type {other} has no mapping"),
            };
            columns.push((name.clone(), column, ty.to_string()));
        }
    }
    columns.sort();
    columns
}

/// The pieces of a run, each its own batch, in several orders; and all of
/// them in one batch, last first. Each run completes exactly once, with the
/// batch that brings its last missing piece.
#[tokio::test]
async fn a_run_in_three_chunks_completes_once_whatever_the_order() {
    let (_db, pool) = database().await;
    let orders: [&[usize]; 4] = [&[3, 0, 1, 2], &[0, 1, 2, 3], &[2, 3, 0, 1], &[1, 0, 3, 2]];
    for (n, order) in orders.iter().enumerate() {
        let run_id = format!("order-{n}");
        let items = pieces(&run_id, "t");
        let mut completed = Vec::new();
        for (i, &at) in order.iter().enumerate() {
            let report = store(&pool, vec![items[at].clone()]).await;
            assert_eq!((report.duplicates, report.rejected), (0, 0), "{report:?}");
            if !report.completed.is_empty() {
                completed.push((i, report.completed));
            }
        }
        assert_eq!(
            completed,
            vec![(3, vec![run_id.clone()])],
            "order {order:?}"
        );
    }
    let mut all = pieces("one-batch", "t");
    all.reverse();
    let report = store(&pool, all).await;
    assert_eq!(report.completed, vec!["one-batch".to_string()]);
    assert_eq!(report.cases_inserted, 9);

    type Run = (String, i64, i64, i64, i64, i64, i64, String);
    let runs: Vec<Run> = sqlx::query_as(
        "SELECT run_id, total, passed, failed, skipped, seq, cases_complete, status \
         FROM runs ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .expect("runs");
    let ids: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        ids,
        ["order-0", "order-1", "order-2", "order-3", "one-batch"]
    );
    for (i, (_, total, passed, failed, skipped, seq, complete, status)) in runs.iter().enumerate() {
        assert_eq!((*total, *passed, *failed, *skipped), (9, 3, 3, 3));
        assert_eq!(*seq, i as i64 + 1);
        assert_eq!((*complete, status.as_str()), (1, "failed"));
    }
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM pending_runs").await, 0);
    // Through the view, as the readers will read them: failures first.
    type Case = (i64, i64, String, i64, Option<String>, Option<i64>);
    let cases: Vec<Case> = sqlx::query_as(
        "SELECT chunk, idx, test_id, outcome, message, sig FROM test_cases \
         WHERE run_id = 'order-2' ORDER BY outcome, chunk, idx",
    )
    .fetch_all(&pool)
    .await
    .expect("cases");
    assert_eq!(cases.len(), 9);
    let (chunk, idx, test, outcome, message, sig) = &cases[0];
    assert_eq!(
        (*chunk, *idx, test.as_str(), *outcome),
        (0, 1, "t::fail0", 0)
    );
    assert_eq!(message.as_deref(), Some("AssertionError: boom 0"));
    let sig = sig.expect("a failure has its signature");
    let (stored,): (String,) = sqlx::query_as("SELECT message FROM signatures WHERE sig = $1")
        .bind(sig)
        .fetch_one(&pool)
        .await
        .expect("its signature is stored");
    assert!(stored.contains("boom"), "{stored}");
    assert!(cases[3..].iter().all(|c| c.5.is_none()), "{cases:?}");
    // Five runs of the same tests and texts: each stored once.
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM cases").await, 45);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM tests").await, 9);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM texts").await, 3);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM run_keys").await, 5);
    pool.close().await;
}

#[tokio::test]
async fn a_resent_chunk_or_final_is_a_duplicate() {
    let (_db, pool) = database().await;
    let items = pieces("r1", "t");
    // Half of the run, then all of it: what was stored is a duplicate.
    let first = store(&pool, vec![items[0].clone(), items[3].clone()]).await;
    assert_eq!((first.duplicates, first.completed.len()), (0, 0));
    let second = store(&pool, items.clone()).await;
    assert_eq!(second.completed, vec!["r1".to_string()]);
    assert_eq!((second.duplicates, second.cases_inserted), (2, 6));
    // Everything again, twice in one batch.
    let mut twice = items.clone();
    twice.extend(items);
    let again = store(&pool, twice).await;
    assert_eq!(
        (
            again.completed.len(),
            again.duplicates,
            again.rejected,
            again.cases_inserted
        ),
        (0, 8, 0, 0)
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM runs").await, 1);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM test_cases").await, 9);
    assert_eq!(reasons(&pool).await, Vec::<String>::new());
    pool.close().await;
}

/// Another chunk 0, another final, and a chunk the stored run does not
/// have, under a stored run id: three conflicts with the SQLite writer's
/// reasons, the stored run untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_content_under_a_stored_id_is_a_conflict() {
    let (_db, pool) = database().await;
    let stored = pieces("r1", "t");
    let other = vec![case("t::z", Outcome::Passed, None)];
    let conflicting = vec![
        BatchItem::Chunk {
            run_id: "r1".into(),
            chunk: 0,
            cases: other.clone(),
            digest: "chunk-other".into(),
        },
        BatchItem::Chunk {
            run_id: "r1".into(),
            chunk: 7,
            cases: other.clone(),
            digest: "chunk-seven".into(),
        },
        BatchItem::Final {
            run: Box::new(record("r1", "p", "w", t0() + Duration::hours(1), &other)),
            chunks: 1,
            digest: "final-other".into(),
        },
    ];
    assert_eq!(store(&pool, stored.clone()).await.completed.len(), 1);
    let report = store(&pool, conflicting.clone()).await;
    assert_eq!(
        (report.duplicates, report.rejected, report.cases_inserted),
        (0, 3, 0),
        "{report:?}"
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM runs").await, 1);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM test_cases").await, 9);
    let got = reasons(&pool).await;
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|r| r.starts_with("conflict: run_id r1")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|r| r.contains("none (the stored run has no such chunk)")),
        "{got:?}"
    );
    assert_eq!(got, sqlite_reasons(vec![stored, conflicting]).await);
    pool.close().await;
}

/// A run whose final says other counts than its chunks hold is refused:
/// no run, its cases and key gone, a rejection with the SQLite writer's
/// reason; so is one with more chunks than it declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_that_contradict_the_cases_are_refused() {
    let (_db, pool) = database().await;
    let mut wrong = pieces("r2", "t");
    if let Some(BatchItem::Final { run, .. }) = wrong.last_mut() {
        run.counts.passed += 1;
        run.counts.total += 1;
    }
    let mut extra = pieces("r3", "t");
    extra.insert(
        0,
        BatchItem::Chunk {
            run_id: "r3".into(),
            chunk: 3,
            cases: vec![case("t::extra", Outcome::Passed, None)],
            digest: "chunk-r3-3".into(),
        },
    );
    let report = store(&pool, wrong.clone()).await;
    assert_eq!(
        (report.completed.len(), report.rejected),
        (0, 1),
        "{report:?}"
    );
    let report = store(&pool, extra.clone()).await;
    assert_eq!(
        (report.completed.len(), report.rejected),
        (0, 1),
        "{report:?}"
    );
    for table in ["runs", "cases", "run_keys", "pending_runs"] {
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.expect("count");
        assert_eq!(n, 0, "{table}");
    }
    let got = reasons(&pool).await;
    assert!(
        got.iter()
            .any(|r| r.starts_with("counts contradict the cases: the run says 4 passed")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|r| r.starts_with("run declares 3 chunks but 4 arrived")),
        "{got:?}"
    );
    assert_eq!(got, sqlite_reasons(vec![wrong, extra]).await);
    pool.close().await;
}

/// The batches of `runs` runs for `round`: each run's four pieces in an
/// order of its own, the pieces of all runs one after the other, cut into
/// batches of mostly one item and some of two (spanning two runs, so
/// batches lock several runs). Every round has tests of its own, so both
/// masters intern the same new tests at once.
fn interleaved(round: usize, runs: usize) -> Vec<Vec<BatchItem>> {
    let mut all = Vec::new();
    for r in 0..runs {
        let mut items = pieces(&format!("m{round}-{r}"), &format!("t{round}"));
        items.rotate_left(r % 4);
        if r % 3 == 1 {
            items.reverse();
        }
        all.extend(items);
    }
    let mut batches = Vec::new();
    let mut all = all.into_iter().peekable();
    for size in [1, 1, 1, 1, 1, 2, 1, 2].into_iter().cycle() {
        if all.peek().is_none() {
            break;
        }
        batches.push(all.by_ref().take(size).collect());
    }
    batches
}

/// Stores every other batch (`parity`) on `pool`, in step with the other
/// master: both wait at `step` before each pair of batches, so the two
/// batches of a pair (mostly pieces of one run) are stored at the same
/// time. Returns the runs this master completed.
async fn feed(
    pool: &PgPool,
    batches: &[Vec<BatchItem>],
    parity: usize,
    step: &tokio::sync::Barrier,
) -> Vec<String> {
    let mut completed = Vec::new();
    for pair in batches.chunks(2) {
        step.wait().await;
        if let Some(batch) = pair.get(parity) {
            completed.extend(store(pool, batch.clone()).await.completed);
        }
    }
    completed
}

/// Two masters (two pools) store the pieces of 50 runs at once, batch by
/// batch in turn and in step, so most runs have pieces on both, stored at
/// the same moment: every run completes
/// exactly once, on one of them, with its counts, and nothing is left
/// pending. Five rounds, to make the races likely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_complete_every_run_exactly_once() {
    const RUNS: usize = 50;
    let (db, a) = database().await;
    let b = open(db.url(), 4).await.expect("second master");
    for round in 0..5 {
        let batches = interleaved(round, RUNS);
        let step = tokio::sync::Barrier::new(2);
        let (on_a, on_b) = tokio::join!(feed(&a, &batches, 0, &step), feed(&b, &batches, 1, &step));
        let mut completed: Vec<String> = on_a.iter().chain(&on_b).cloned().collect();
        assert_eq!(
            completed.len(),
            RUNS,
            "round {round}: a {on_a:?}, b {on_b:?}"
        );
        completed.sort();
        completed.dedup();
        assert_eq!(
            completed.len(),
            RUNS,
            "round {round}: a run completed twice"
        );
        let (runs, exact): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE total = 9 AND passed = 3 AND failed = 3 \
               AND skipped = 3) FROM runs WHERE run_id LIKE $1",
        )
        .bind(format!("m{round}-%"))
        .fetch_one(&a)
        .await
        .expect("runs");
        assert_eq!((runs, exact), (RUNS as i64, RUNS as i64), "round {round}");
        assert_eq!(
            count(&a, "SELECT COUNT(*) FROM pending_runs").await,
            0,
            "round {round}"
        );
    }
    let total = (5 * RUNS) as i64;
    let (n, distinct, lo, hi): (i64, i64, Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM runs")
            .fetch_one(&a)
            .await
            .expect("seq");
    assert_eq!((n, distinct, lo, hi), (total, total, Some(1), Some(total)));
    assert_eq!(
        count(&a, "SELECT COUNT(*) FROM test_cases").await,
        total * 9
    );
    assert_eq!(count(&a, "SELECT COUNT(*) FROM tests").await, 5 * 9);
    assert_eq!(reasons(&a).await, Vec::<String>::new());

    // What the completions derived, with the masters racing, equals what a
    // SQLite store derives from the same batches stored one by one (every
    // table whose rows do not depend on the completion order).
    let dir = tempfile::tempdir().expect("temp dir");
    let lite =
        crate::store::sqlite::db::open_writer(&crate::DbOptions::new(dir.path().join("l.db")))
            .await
            .expect("sqlite");
    let sequential = crate::store::sqlite::SqliteStore::new(lite.clone());
    for round in 0..5 {
        for batch in interleaved(round, RUNS) {
            sequential
                .store_batch(&crate::webhooks::Routes::default(), batch)
                .await
                .expect("stored on sqlite");
        }
    }
    let tables = [
        "projects",
        "worker_stats",
        "test_failures",
        "test_failure_days",
        "run_tests",
        "cases",
        "tests",
        "texts",
        "signatures",
    ];
    let (on_sqlite, on_pg) =
        super::parity::snapshots(&lite, &a, &super::parity::Clock::default(), &tables).await;
    use super::parity::Cell;
    assert_eq!(
        on_pg.0["projects"],
        [vec![Cell::Text("p".into()), Cell::Int(total)]]
    );
    assert_eq!(on_pg.0["test_failures"].len(), 5 * 3);
    assert_eq!(on_pg.0["run_tests"].len(), 5 * RUNS);
    super::parity::assert_same(&on_sqlite, &on_pg, "after two masters raced");
    lite.close().await;
    a.close().await;
    b.close().await;
}

/// PostgreSQL text cannot hold U+0000: the store writes U+FFFD in its
/// place instead of failing the batch (which ingest would retry forever).
#[tokio::test]
async fn a_nul_is_stored_as_a_replacement_character() {
    let (_db, pool) = database().await;
    let cases = vec![case("t::nul", Outcome::Failed, Some("a\0b"))];
    let items = crate::testing::items(record("nul", "p", "w", t0(), &cases), cases);
    let mut batch = items;
    batch.push(BatchItem::Reject(Rejection {
        received_at: t0(),
        subject: Some("ptp.runs.x".into()),
        msg_id: None,
        run_id: None,
        reason: "not JSON".into(),
        excerpt: Some("\0\u{1}binary".into()),
        payload: Some(vec![0, 1, 2]),
    }));
    let report = store(&pool, batch).await;
    assert_eq!((report.completed.len(), report.rejected), (1, 1));
    let (message,): (Option<String>,) =
        sqlx::query_as("SELECT message FROM test_cases WHERE run_id = 'nul'")
            .fetch_one(&pool)
            .await
            .expect("case");
    assert_eq!(message.as_deref(), Some("a\u{FFFD}b"));
    let (excerpt, payload): (Option<String>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT excerpt, payload FROM rejected")
            .fetch_one(&pool)
            .await
            .expect("rejection");
    assert_eq!(excerpt.as_deref(), Some("\u{FFFD}\u{1}binary"));
    assert_eq!(payload, Some(vec![0, 1, 2]), "bytes are kept as they are");
    pool.close().await;
}

/// Test identities as the SQLite interning keeps them: NULL apart from
/// '' and equal to NULL, a second identity of a test id marks the aliases;
/// texts of any size are stored once (no B-tree entry limit on them).
#[tokio::test]
async fn identities_keep_null_apart_from_empty_and_texts_have_no_size_limit() {
    let (_db, pool) = database().await;
    // 40 kB that do not compress: a B-tree entry would refuse them.
    let big: String = (0..5_000u64)
        .map(|i| format!("{:08x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32))
        .collect();
    let mut with_null = case("t::same", Outcome::Failed, Some("boom"));
    with_null.traceback = Some(big.clone());
    let mut with_empty = case("t::same", Outcome::Passed, None);
    with_empty.file = Some(String::new());
    with_empty.output = Some(big.clone());
    let cases = vec![with_null.clone(), with_empty];
    let items = crate::testing::items(record("ids", "p", "w", t0(), &cases), cases);
    assert_eq!(store(&pool, items).await.completed.len(), 1);
    let again = vec![with_null];
    let items = crate::testing::items(record("ids2", "p", "w", t0(), &again), again);
    assert_eq!(store(&pool, items).await.completed.len(), 1);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM tests").await, 2);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM texts").await, 2);
    assert_eq!(
        count(
            &pool,
            "SELECT value FROM rollup_state WHERE name = 'test_aliases'"
        )
        .await,
        1
    );
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT file, traceback, output FROM test_cases WHERE run_id = 'ids' ORDER BY outcome",
    )
    .fetch_all(&pool)
    .await
    .expect("cases");
    assert_eq!(
        rows,
        [
            (None, Some(big.clone()), None),
            (Some(String::new()), None, Some(big))
        ]
    );
    pool.close().await;
}

#[test]
fn passwords_are_hidden() {
    assert_eq!(
        redacted("postgres://ptp:s3cr@t@db:5432/ptp"),
        "postgres://ptp:***@db:5432/ptp"
    );
    assert_eq!(redacted("postgres://ptp@db/ptp"), "postgres://ptp@db/ptp");
    assert_eq!(
        redacted("postgresql://db/ptp?user=u&password=x&sslmode=require&sslpassword=y"),
        "postgresql://db/ptp?user=u&password=***&sslmode=require&sslpassword=***"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_its_password() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    let err = open("postgres://ptp:hunter2@127.0.0.1:1/ptp", 1)
        .await
        .expect_err("nothing listens there");
    let text = err.to_string();
    assert!(matches!(err, PgOpenError::Connect { .. }), "{text}");
    assert!(
        text.contains("postgres://ptp:***@127.0.0.1:1/ptp"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("refused"), "the cause is named: {text}");
}

#[tokio::test]
async fn a_missing_database_is_named_with_what_to_do() {
    // The server of the tests, a database nobody made.
    let db = PgDatabase::create().await;
    let url = db.url().replace(db.name(), "ptp_nobody_made_this");
    let text = open(&url, 1)
        .await
        .expect_err("no such database")
        .to_string();
    assert!(text.contains("ptp_nobody_made_this"), "{text}");
    assert!(text.contains("Create the database first"), "{text}");
}

/// The error `sql` gets from `pool`, as the store reports it.
async fn error_of(pool: &PgPool, sql: &'static str) -> (String, StoreError) {
    let e = sqlx::query(sql).execute(pool).await.expect_err(sql);
    let code = match &e {
        sqlx::Error::Database(d) => d.code().map(|c| c.to_string()).unwrap_or_default(),
        other => format!("not a database error: {other}"),
    };
    (code, StoreError::Database(e))
}

/// `blames_the_data` on errors a real server gives: data exceptions (22)
/// and integrity violations (23) blame the data (program limits, 54: see
/// the next test), so
/// ingest isolates the message; serialization failures and deadlocks (40),
/// resources (53), operator intervention (57) and a lost connection do
/// not, so every message waits. The classes a test cannot provoke on a
/// shared server (a full disk, a deadlock's timing) are raised by the
/// server with their SQLSTATE.
#[tokio::test]
async fn postgres_errors_blame_the_data_by_sqlstate_class() {
    let (_db, pool) = database().await;
    let data = [
        (
            "INSERT INTO rollup_state (name, value) VALUES ('seq', 1)",
            "23505",
        ),
        (
            "INSERT INTO projects (project, runs) VALUES (NULL, 1)",
            "23502",
        ),
        ("SELECT 'many'::bigint", "22P02"),
        ("SELECT 9223372036854775807::bigint + 1", "22003"),
        (r#"SELECT '["\u0000"]'::jsonb"#, "22P05"),
    ];
    for (sql, want) in data {
        let (code, e) = error_of(&pool, sql).await;
        assert_eq!(code, want, "{sql}");
        assert!(e.blames_the_data(), "{code} blames the data: {e}");
    }
    let outage = [
        (
            "DO $$ BEGIN RAISE EXCEPTION 'could not serialize' USING ERRCODE = '40001'; END $$",
            "40001",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$",
            "40P01",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'disk full' USING ERRCODE = '53100'; END $$",
            "53100",
        ),
        (
            "DO $$ BEGIN RAISE EXCEPTION 'shutting down' USING ERRCODE = '57P01'; END $$",
            "57P01",
        ),
        ("SELECT * FROM no_such_table", "42P01"),
    ];
    for (sql, want) in outage {
        let (code, e) = error_of(&pool, sql).await;
        assert_eq!(code, want, "{sql}");
        assert!(!e.blames_the_data(), "{code} does not blame the data: {e}");
    }
    // A statement cancelled by its timeout (57014), on one connection.
    let mut tx = pool.begin().await.expect("transaction");
    sqlx::query("SET LOCAL statement_timeout = '20ms'")
        .execute(&mut *tx)
        .await
        .expect("timeout set");
    let e = sqlx::query("SELECT pg_sleep(5)")
        .execute(&mut *tx)
        .await
        .expect_err("cancelled");
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("57014"));
    assert!(!StoreError::Database(e).blames_the_data());
    drop(tx);
    // No server at all.
    let e = PgConnection::connect("postgres://ptp@127.0.0.1:1/ptp")
        .await
        .expect_err("nothing listens there");
    assert!(!StoreError::Database(e).blames_the_data());
    pool.close().await;
}

/// A test id too long for the identity index (incompressible, beyond a
/// B-tree entry) fails its batch with 54000, which blames the data; the
/// batch stores nothing. SQLite's codes keep their meaning.
#[tokio::test]
async fn a_test_id_beyond_an_index_entry_blames_the_data() {
    let (_db, pool) = database().await;
    let long: String = (0..2_000u64)
        .map(|i| format!("{:08x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32))
        .collect();
    let cases = vec![case(&long, Outcome::Passed, None)];
    let items = crate::testing::items(record("long", "p", "w", t0(), &cases), cases);
    let e = PgStore::new(pool.clone())
        .store_batch(&crate::webhooks::Routes::default(), items)
        .await
        .expect_err("too long for the index");
    let code = match &e {
        StoreError::Database(d) => d
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.to_string()),
        StoreError::Panicked(_) => None,
    };
    assert_eq!(code.as_deref(), Some("54000"), "{e}");
    assert!(e.blames_the_data(), "{e}");
    for table in ["run_chunks", "pending_runs", "cases", "tests"] {
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.expect("count");
        assert_eq!(n, 0, "{table}");
    }
    pool.close().await;

    let dir = tempfile::tempdir().expect("temp dir");
    let lite =
        crate::store::sqlite::db::open_writer(&crate::DbOptions::new(dir.path().join("e.db")))
            .await
            .expect("sqlite");
    let unique = sqlx::query("INSERT INTO rollup_state (name, value) VALUES ('seq', 1)")
        .execute(&lite)
        .await
        .expect_err("unique");
    assert!(StoreError::Database(unique).blames_the_data());
    let missing = sqlx::query("SELECT * FROM no_such_table")
        .execute(&lite)
        .await
        .expect_err("no table");
    assert!(!StoreError::Database(missing).blames_the_data());
    lite.close().await;
}
