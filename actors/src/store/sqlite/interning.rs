//! Compact storage of test cases (issue 13, item 4): what repeats across
//! cases is stored once and a case refers to it by an integer key.
//!
//! Layout (migration 0014, which converted the rows stored before it):
//! - `run_keys(run_key, run_id)`: a run's key, made by [`run_keys`] when its
//!   first chunk is stored (the `runs` row comes only when the run is
//!   complete). An `INTEGER PRIMARY KEY`, so it survives `VACUUM`.
//! - `tests(test_key, test_id, file, classname, name)`: a test's identity,
//!   once per distinct quadruple (in practice once per test id); NULL and
//!   `''` stay apart.
//! - `texts(text_key, body)`: messages, tracebacks, captured output and
//!   owner lists (JSON), once per distinct body, unique by the body itself
//!   (no digest, so no collision can map a case to another text).
//! - `cases(run_key, outcome, chunk, idx, test_key, ..., message_key,
//!   traceback_key, output_key, owners_key)`, `WITHOUT ROWID` keyed by
//!   `(run_key, outcome, chunk, idx)`: a run's cases lie together, failures
//!   first, with `cases_by_run_test (run_key, test_key)` for probes of one
//!   test in one run and the partial `cases_retried` for retried cases.
//! - the view `test_cases` gives every case with its old columns by name
//!   (`run_id`, `test_id`, `message`, ...): readers that want whole cases
//!   read it, SQLite flattens it into their query; the hot probes that
//!   force an index go through the keys themselves.
//!
//! The writer interns a whole batch at once ([`test_keys`], [`text_keys`]):
//! one multi-row `INSERT OR IGNORE` of the batch's distinct values and one
//! `SELECT ... IN (...)` mapping them to keys (per 30,000 bound values),
//! inside the batch's transaction. Values are bound as they are (not passed
//! through JSON, whose decoding would cut a text at a NUL character).
//!
//! Guarantees: a case reads back byte-identical to what was stored (the
//! view returns exactly the old columns). A run's cases, its test summary
//! (`run_tests`) and its key go together ([`delete_cases`]). Tests and texts no case refers to any more
//! are deleted by [`drop_orphans`] at the end of each prune that deleted
//! something (a scan of `cases` per kind of key); until then, and when no
//! retention is set, the orphans left by runs given up on or refused stay,
//! bounded by the distinct tests and texts those runs carried.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

/// SQL variables per statement, under SQLite's limit of 32,766.
const VARS: usize = 30_000;

/// The key of each of `run_ids` (distinct), made if new, in their order.
pub(crate) async fn run_keys(
    conn: &mut SqliteConnection,
    run_ids: &[&str],
) -> Result<Vec<i64>, sqlx::Error> {
    let mut keys: HashMap<String, i64> = HashMap::new();
    for part in run_ids.chunks(VARS) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT OR IGNORE INTO run_keys (run_id) ");
        q.push_values(part, |mut b, id| {
            b.push_bind(id.to_string());
        });
        q.build().execute(&mut *conn).await?;
        let mut q =
            QueryBuilder::<Sqlite>::new("SELECT run_id, run_key FROM run_keys WHERE run_id IN (");
        push_list(&mut q, part.iter().copied());
        let rows: Vec<(String, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
        keys.extend(rows);
    }
    in_order(run_ids.iter().map(|id| keys.get(*id).copied()), "run_keys")
}

/// A test's identity as `tests` keys it: (test_id, file, classname, name).
pub(crate) type TestIdentity<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a str);

/// Test identities known to be stored, with their keys, most
/// [`KNOWN_TESTS_MAX`] of them: the writer skips the database for these
/// ([`test_keys`]), which is most of a run's tests once a suite has run
/// once. Filled only from batches that committed ([`KnownTests::learn`]),
/// emptied when orphaned tests are deleted ([`KnownTests::forget_all`]),
/// so a key in it always names a stored row. Memory: a string of the
/// identity and a key per entry, about 250 bytes, so at most ~25 MB; when
/// full it is emptied and refills from the next batches.
#[derive(Debug, Default)]
pub struct KnownTests {
    map: HashMap<String, i64>,
}

/// Most entries in [`KnownTests`].
pub const KNOWN_TESTS_MAX: usize = 100_000;

/// Shared by the writer and its futures (locked only between awaits).
pub(crate) type Known = std::sync::Arc<std::sync::Mutex<KnownTests>>;

/// Keys of identities a batch stored or found, to learn once it commits.
pub(crate) type Learned = Vec<(String, i64)>;

impl KnownTests {
    /// An unambiguous string for an identity (lengths, `-` for NULL).
    fn name(t: &TestIdentity<'_>) -> String {
        let mut s = String::with_capacity(t.0.len() + t.3.len() + 64);
        for part in [Some(t.0), t.1, t.2, Some(t.3)] {
            match part {
                Some(p) => {
                    s.push_str(&p.len().to_string());
                    s.push(':');
                    s.push_str(p);
                }
                None => s.push('-'),
            }
        }
        s
    }

    /// Adds what a committed batch learned.
    pub(crate) fn learn(&mut self, learned: Learned) {
        if self.map.len() + learned.len() > KNOWN_TESTS_MAX {
            self.map.clear();
        }
        self.map.extend(learned.into_iter().take(KNOWN_TESTS_MAX));
    }

    /// Forgets everything (tests were deleted).
    pub(crate) fn forget_all(&mut self) {
        self.map = HashMap::new();
    }
}

/// Locks `known`, poisoned or not (its map is valid after any panic: each
/// change is one call).
pub(crate) fn lock(known: &Known) -> std::sync::MutexGuard<'_, KnownTests> {
    known.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key of each of `tests` (distinct), made if new, in their order.
/// Identities in `known` are not looked up; the others are inserted if new
/// and read back, and added to `learned` for [`KnownTests::learn`] once the
/// caller's transaction has committed.
pub(crate) async fn test_keys(
    conn: &mut SqliteConnection,
    tests: &[TestIdentity<'_>],
    known: &Known,
    learned: &mut Learned,
) -> Result<Vec<i64>, sqlx::Error> {
    let cached: Vec<Option<i64>> = {
        let k = lock(known);
        tests
            .iter()
            .map(|t| k.map.get(&KnownTests::name(t)).copied())
            .collect()
    };
    let misses: Vec<TestIdentity<'_>> = tests
        .iter()
        .zip(&cached)
        .filter(|(_, c)| c.is_none())
        .map(|(t, _)| *t)
        .collect();
    let found = lookup_test_keys(conn, &misses).await?;
    learned.extend(
        misses
            .iter()
            .zip(&found)
            .map(|(t, k)| (KnownTests::name(t), *k)),
    );
    let mut found = found.into_iter();
    in_order(
        cached.into_iter().map(|c| c.or_else(|| found.next())),
        "tests",
    )
}

/// [`test_keys`] from the database alone.
async fn lookup_test_keys(
    conn: &mut SqliteConnection,
    tests: &[TestIdentity<'_>],
) -> Result<Vec<i64>, sqlx::Error> {
    type Row = (String, Option<String>, Option<String>, String, i64);
    let mut keys: HashMap<(String, Option<String>, Option<String>, String), i64> = HashMap::new();
    for part in tests.chunks(VARS / 4) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO tests (test_id, file, classname, name) ",
        );
        q.push_values(part, |mut b, t| {
            b.push_bind(t.0)
                .push_bind(t.1)
                .push_bind(t.2)
                .push_bind(t.3);
        });
        q.build().execute(&mut *conn).await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT test_id, file, classname, name, test_key FROM tests WHERE test_id IN (",
        );
        push_list(&mut q, part.iter().map(|t| t.0));
        let rows: Vec<Row> = q.build_query_as().fetch_all(&mut *conn).await?;
        // Every identity of these test ids came back: more rows than ids
        // means one has several (see [`aliases`]).
        let ids: std::collections::HashSet<&str> = part.iter().map(|t| t.0).collect();
        if rows.len() > ids.len() {
            mark_aliases(&mut *conn).await?;
        }
        keys.extend(rows.into_iter().map(|(id, f, c, n, k)| ((id, f, c, n), k)));
    }
    in_order(
        tests.iter().map(|t| {
            let identity = (
                t.0.to_string(),
                t.1.map(str::to_string),
                t.2.map(str::to_string),
                t.3.to_string(),
            );
            keys.get(&identity).copied()
        }),
        "tests",
    )
}

/// The key of each of `bodies` (distinct), made if new, in their order.
pub(crate) async fn text_keys(
    conn: &mut SqliteConnection,
    bodies: &[&str],
) -> Result<Vec<i64>, sqlx::Error> {
    let mut keys: HashMap<String, i64> = HashMap::new();
    for part in bodies.chunks(VARS) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT OR IGNORE INTO texts (body) ");
        q.push_values(part, |mut b, body| {
            b.push_bind(body.to_string());
        });
        q.build().execute(&mut *conn).await?;
        let mut q = QueryBuilder::<Sqlite>::new("SELECT body, text_key FROM texts WHERE body IN (");
        push_list(&mut q, part.iter().copied());
        let rows: Vec<(String, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
        keys.extend(rows);
    }
    in_order(bodies.iter().map(|b| keys.get(*b).copied()), "texts")
}

/// Pushes `values` as bound parameters, comma-separated, and the closing `)`.
fn push_list<'a>(q: &mut QueryBuilder<Sqlite>, values: impl Iterator<Item = &'a str>) {
    let mut list = q.separated(", ");
    for v in values {
        list.push_bind(v.to_string());
    }
    q.push(")");
}

/// The keys found, in order; every value must have one (it was just
/// inserted or already there).
fn in_order(keys: impl Iterator<Item = Option<i64>>, table: &str) -> Result<Vec<i64>, sqlx::Error> {
    keys.map(|k| {
        k.ok_or_else(|| {
            sqlx::Error::Protocol(format!(
                "interning into {table}: a value just inserted has no key"
            ))
        })
    })
    .collect()
}

/// Deletes the cases of `run_id`, its test summary (`run_tests`)
/// and its key; returns how many cases went.
pub(crate) async fn delete_cases(
    conn: &mut SqliteConnection,
    run_id: &str,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM run_tests WHERE run_key = (SELECT run_key FROM run_keys WHERE run_id = ?)",
    )
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    let n = sqlx::query(
        "DELETE FROM cases WHERE run_key = (SELECT run_key FROM run_keys WHERE run_id = ?)",
    )
    .bind(run_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM run_keys WHERE run_id = ?")
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    Ok(n)
}

/// Deletes the tests and texts no stored case refers to: a scan of
/// `cases` per kind of key. Returns (tests, texts) deleted.
pub(crate) async fn drop_orphans(conn: &mut SqliteConnection) -> Result<(u64, u64), sqlx::Error> {
    let tests = sqlx::query(
        "DELETE FROM tests WHERE test_key NOT IN (SELECT test_key FROM cases INDEXED BY cases_by_run_test)",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let texts = sqlx::query(
        "DELETE FROM texts WHERE text_key NOT IN (\
           SELECT message_key FROM cases WHERE message_key IS NOT NULL \
           UNION ALL SELECT traceback_key FROM cases WHERE traceback_key IS NOT NULL \
           UNION ALL SELECT output_key FROM cases WHERE output_key IS NOT NULL \
           UNION ALL SELECT owners_key FROM cases WHERE owners_key IS NOT NULL)",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if tests > 0 {
        recount_aliases(&mut *conn).await?;
    }
    Ok((tests, texts))
}

/// Whether some test id has more than one key (the per-run summaries and
/// their readers then map every key of an id to its smallest).
pub(crate) async fn aliases(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    let v: Option<(i64,)> =
        sqlx::query_as("SELECT value FROM rollup_state WHERE name = 'test_aliases'")
            .fetch_optional(conn)
            .await?;
    Ok(v.is_some_and(|(v,)| v != 0))
}

/// Records that some test id now has more than one key.
pub(crate) async fn mark_aliases(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rollup_state (name, value) VALUES ('test_aliases', 1) \
         ON CONFLICT (name) DO UPDATE SET value = 1",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Every key of a test id with several keys, to the smallest key of its
/// id: O(tests), read only while [`aliases`] holds.
pub(crate) async fn alias_keys(
    conn: &mut SqliteConnection,
) -> Result<HashMap<i64, i64>, sqlx::Error> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT a.test_key, (SELECT MIN(b.test_key) FROM tests b WHERE b.test_id = a.test_id) \
         FROM tests a WHERE a.test_id IN \
           (SELECT test_id FROM tests GROUP BY test_id HAVING COUNT(*) > 1)",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Recomputes the alias flag from `tests` (after orphans were deleted).
pub(crate) async fn recount_aliases(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE rollup_state SET value = \
           EXISTS (SELECT 1 FROM tests GROUP BY test_id HAVING COUNT(*) > 1) \
         WHERE name = 'test_aliases'",
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use sqlx::SqlitePool;

    use crate::model::Outcome;
    use crate::testing::{case, run, start, store, t0};
    use crate::writer::FinishPrune;

    /// Every case with every column the way it was stored, as JSON text.
    async fn cases(pool: &SqlitePool) -> Vec<String> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT json_array(run_id, chunk, idx, test_id, file, classname, name, outcome, \
               duration_secs, message, traceback, output, retries, flaky, sig, owners, quarantined) \
             FROM test_cases ORDER BY run_id, chunk, idx",
        )
        .fetch_all(pool)
        .await
        .expect("read cases");
        rows.into_iter().map(|(r,)| r).collect()
    }

    async fn count(pool: &SqlitePool, table: &str) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(pool)
                .await
                .expect("count");
        n
    }

    /// Migration 0014 converts the rows of a database written before it:
    /// every case reads back byte-identical through the view, each
    /// distinct test identity and text is stored once, NULL and '' apart.
    #[tokio::test]
    async fn the_migration_converts_stored_cases_exactly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = dir.path().join("migrations");
        std::fs::create_dir(&old).expect("dir");
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .expect("migrations")
        {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string();
            if name.as_str() < "0014" {
                std::fs::copy(&path, old.join(&name)).expect("copy");
            }
        }
        let db = crate::DbOptions::new(dir.path().join("old.db"));
        let pool = SqlitePool::connect_with(db.connect_options())
            .await
            .expect("open");
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .expect("old migrations")
            .run(&pool)
            .await
            .expect("migrate to 0013");
        sqlx::query(
            "INSERT INTO test_cases (run_id, chunk, idx, test_id, file, classname, name, outcome, \
               duration_secs, message, traceback, output, retries, flaky, sig, owners, quarantined) \
             VALUES \
             ('r1', 0, 0, 'a.py::t', 'a.py', NULL, 't', 0, 0.125, 'boom', 'tb', NULL, 0, 0, 7, '[\"@x\"]', 1), \
             ('r1', 0, 1, 'a.py::t', '', NULL, 't', 3, 0.5, NULL, NULL, 'out', 1, 1, NULL, NULL, 0), \
             ('r1', 1, 0, 'a.py::u', 'a.py', 'A', 'u', 1, 2.0, 'boom', 'boom', '', 0, 0, NULL, '[\"@x\"]', 0), \
             ('r2', 0, 0, 'a.py::t', 'a.py', NULL, 't', 0, 0.25, 'boom', 'tb', NULL, 0, 0, 7, NULL, 0), \
             ('r2', 0, 1, 'a.py::u', 'a.py', 'A', 'u', 4, 0.0, 'skipped: ü', NULL, NULL, 0, 0, NULL, NULL, 0)",
        )
        .execute(&pool)
        .await
        .expect("old rows");
        let before = cases(&pool).await;
        pool.close().await;
        let pool = crate::store::sqlite::db::open_writer(&db)
            .await
            .expect("migrate to 0014");
        assert_eq!(cases(&pool).await, before);
        // (a.py::t, a.py, NULL), (a.py::t, '', NULL), (a.py::u, a.py, A).
        assert_eq!(count(&pool, "tests").await, 3);
        // boom, tb, out, '', ["@x"], skipped: ü.
        assert_eq!(count(&pool, "texts").await, 6);
        assert_eq!(count(&pool, "run_keys").await, 2);
        pool.close().await;
    }

    /// The writer stores repeated tests and texts once, reads them back as
    /// sent, and a prune that empties the store leaves no orphan behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_interns_and_a_prune_drops_orphans() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (actors, pool) = start(&dir.path().join("w.db")).await;
        // A NUL inside: stored and read back whole.
        let msg = "AssertionError: assert 1 == 2\u{0} (after a NUL)";
        let runs = (0..3)
            .map(|i| {
                let mut passed = case("t::ok", Outcome::Passed, None);
                passed.owners = vec!["@team".into()];
                run(
                    &format!("run-{i}"),
                    "p",
                    "w",
                    t0() + Duration::minutes(i),
                    vec![
                        case("t::bad", Outcome::Failed, Some(msg)),
                        case("t::worse", Outcome::Error, Some(msg)),
                        passed,
                    ],
                )
            })
            .collect();
        store(&actors, runs).await;
        assert_eq!(count(&pool, "cases").await, 9);
        assert_eq!(count(&pool, "tests").await, 3);
        // The message and the owners' JSON.
        assert_eq!(count(&pool, "texts").await, 2);
        let stored = cases(&pool).await;
        assert_eq!(stored.len(), 9);
        assert!(stored[2].contains(r#"[\"@team\"]"#), "{stored:?}");
        let (whole,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM test_cases WHERE message = ?")
            .bind(msg)
            .fetch_one(&pool)
            .await
            .expect("count messages");
        assert_eq!(whole, 6);
        crate::testing::prune(&actors, Some(t0() + Duration::days(1)), None).await;
        actors
            .writer
            .send(FinishPrune)
            .await
            .expect("writer answers")
            .expect("finished");
        for table in ["cases", "run_keys", "tests", "texts"] {
            assert_eq!(count(&pool, table).await, 0, "{table}");
        }
        pool.close().await;
        actors.stop();
    }
}
