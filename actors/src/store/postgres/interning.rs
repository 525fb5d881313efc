//! Interning on PostgreSQL: the keys of runs, tests and texts a batch
//! stores (see `store::sqlite::interning` for the layout, which is the
//! same), deleting a run's cases with its summary and key, and deleting the
//! tests and texts no case refers to any more.
//!
//! Each kind is inserted in one sorted pass with `ON CONFLICT DO NOTHING`
//! and read back with `= ANY($1)` (see the module docs of [`super`] for why
//! sorted); tests and texts are looked up in full each batch (no cache).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use sqlx::postgres::PgConnection;

use super::pg_text;

/// A test's identity as `tests` keys it, as PostgreSQL stores it.
pub(super) type TestIdentity<'a> = (
    Cow<'a, str>,
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
    Cow<'a, str>,
);

/// The key of each of `run_ids` (distinct), made if new, in their order.
/// Only the holder of a run's advisory lock inserts its key, so no two
/// batches race here.
pub(super) async fn run_keys(
    conn: &mut PgConnection,
    run_ids: &[Cow<'_, str>],
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO run_keys (run_id) SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(run_ids)
    .execute(&mut *conn)
    .await?;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT run_id, run_key FROM run_keys WHERE run_id = ANY($1)")
            .bind(run_ids)
            .fetch_all(&mut *conn)
            .await?;
    let keys: HashMap<String, i64> = rows.into_iter().collect();
    in_order(
        run_ids.iter().map(|id| keys.get(id.as_ref()).copied()),
        "run_keys",
    )
}

/// The key of each of `tests` (distinct), made if new, in their order.
/// Inserted in sorted order (see the module docs); when some test id turns
/// out to have several identities, `rollup_state.test_aliases` is set as the
/// SQLite interning sets it.
pub(super) async fn test_keys(
    conn: &mut PgConnection,
    tests: &[TestIdentity<'_>],
) -> Result<Vec<i64>, sqlx::Error> {
    let mut sorted: Vec<&TestIdentity<'_>> = tests.iter().collect();
    sorted.sort_unstable();
    let test_ids: Vec<&str> = sorted.iter().map(|t| t.0.as_ref()).collect();
    let files: Vec<Option<&str>> = sorted.iter().map(|t| t.1.as_deref()).collect();
    let classnames: Vec<Option<&str>> = sorted.iter().map(|t| t.2.as_deref()).collect();
    let names: Vec<&str> = sorted.iter().map(|t| t.3.as_ref()).collect();
    sqlx::query(
        "INSERT INTO tests (test_id, file, classname, name) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&test_ids)
    .bind(&files)
    .bind(&classnames)
    .bind(&names)
    .execute(&mut *conn)
    .await?;
    let ids: BTreeSet<&str> = tests.iter().map(|t| t.0.as_ref()).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    type Row = (String, Option<String>, Option<String>, String, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT test_id, file, classname, name, test_key FROM tests WHERE test_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    // Every identity of these test ids came back: more rows than ids means
    // one has several (see `run_tests::aliases`). Only a change locks the
    // row, so batches do not queue on it once it is set.
    if rows.len() > ids.len() {
        sqlx::query("UPDATE rollup_state SET value = 1 WHERE name = 'test_aliases' AND value <> 1")
            .execute(&mut *conn)
            .await?;
    }
    let keys: HashMap<(String, Option<String>, Option<String>, String), i64> = rows
        .into_iter()
        .map(|(id, f, c, n, k)| ((id, f, c, n), k))
        .collect();
    in_order(
        tests.iter().map(|t| {
            let identity = (
                t.0.to_string(),
                t.1.as_deref().map(str::to_string),
                t.2.as_deref().map(str::to_string),
                t.3.to_string(),
            );
            keys.get(&identity).copied()
        }),
        "tests",
    )
}

/// The key of each of `bodies` (distinct), made if new, in their order.
/// Inserted in sorted order (see the module docs).
pub(super) async fn text_keys(
    conn: &mut PgConnection,
    bodies: &[Cow<'_, str>],
) -> Result<Vec<i64>, sqlx::Error> {
    let mut sorted: Vec<&str> = bodies.iter().map(|b| b.as_ref()).collect();
    sorted.sort_unstable();
    sqlx::query("INSERT INTO texts (body) SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING")
        .bind(&sorted)
        .execute(&mut *conn)
        .await?;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT body, text_key FROM texts WHERE body = ANY($1)")
            .bind(&sorted)
            .fetch_all(&mut *conn)
            .await?;
    let keys: HashMap<String, i64> = rows.into_iter().collect();
    in_order(
        bodies.iter().map(|b| keys.get(b.as_ref()).copied()),
        "texts",
    )
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

/// Deletes the cases of `run_id`, its test summary and its key; returns
/// how many cases went.
pub(super) async fn delete_cases(
    conn: &mut PgConnection,
    run_id: &str,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM run_tests WHERE run_key = (SELECT run_key FROM run_keys WHERE run_id = $1)",
    )
    .bind(pg_text(run_id))
    .execute(&mut *conn)
    .await?;
    let n = sqlx::query(
        "DELETE FROM cases WHERE run_key = (SELECT run_key FROM run_keys WHERE run_id = $1)",
    )
    .bind(pg_text(run_id))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM run_keys WHERE run_id = $1")
        .bind(pg_text(run_id))
        .execute(&mut *conn)
        .await?;
    Ok(n)
}

/// Deletes the tests and texts no stored case refers to (as SQLite's
/// `drop_orphans`: an anti-join over `cases` per kind of key), and
/// recounts the alias flag when tests went. Returns (tests, texts)
/// deleted.
pub(super) async fn drop_orphans(conn: &mut PgConnection) -> Result<(u64, u64), sqlx::Error> {
    let tests = sqlx::query(
        "DELETE FROM tests t WHERE NOT EXISTS (SELECT 1 FROM cases c WHERE c.test_key = t.test_key)",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let texts = sqlx::query(
        "DELETE FROM texts t WHERE NOT EXISTS (SELECT 1 FROM ( \
           SELECT message_key AS k FROM cases WHERE message_key IS NOT NULL \
           UNION ALL SELECT traceback_key FROM cases WHERE traceback_key IS NOT NULL \
           UNION ALL SELECT output_key FROM cases WHERE output_key IS NOT NULL \
           UNION ALL SELECT owners_key FROM cases WHERE owners_key IS NOT NULL) u \
         WHERE u.k = t.text_key)",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if tests > 0 {
        sqlx::query(
            "UPDATE rollup_state SET value = \
               (EXISTS (SELECT 1 FROM tests GROUP BY test_id HAVING COUNT(*) > 1))::int \
             WHERE name = 'test_aliases'",
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok((tests, texts))
}
