//! The PostgreSQL store: opening a database ([`open`], migrations in
//! `actors/migrations-pg`, the same schema the SQLite migrations end with)
//! and storing the writer's batches ([`store_batch`]) with the semantics of
//! the SQLite writer ([`crate::writer`]) and its interning
//! (`store::sqlite::interning`).
//!
//! Guarantees, as on SQLite:
//! - A batch is one transaction; on error nothing of it is stored and the
//!   caller leaves its messages unacked.
//! - Idempotent by `(run_id, chunk)` and by `run_id`: a resent chunk or
//!   final is a duplicate; one with the same id but another digest is
//!   recorded in `rejected` as a conflict with the writer's reason text.
//! - A run gets its `runs` row (and the next `seq`) only in the transaction
//!   that stores its last missing piece, and only if its counts agree with
//!   its cases; otherwise its cases go and a rejection says why.
//! - Cases are interned (`run_keys`, `tests`, `texts`) and read back through
//!   the `test_cases` view; failures carry their signature key, the
//!   signature is stored once in `signatures`.
//!
//! # Several masters
//! Two processes may call [`store_batch`] at once on one database, with
//! chunks and finals of the same runs. Completion is exactly once and never
//! missed: before it reads or writes anything, a batch takes a transaction
//! advisory lock (`pg_advisory_xact_lock`) per run it carries, keyed by a
//! 64-bit FNV-1a hash of the run id (`run_lock`), in ascending key order,
//! so two batches with common runs cannot deadlock. The second batch waits
//! until the first has committed or rolled back; as READ COMMITTED takes a
//! new snapshot per statement, it then sees every chunk and final the first
//! stored, so whichever batch stores a run's last piece sees all the others
//! and completes it. The transaction sets READ COMMITTED itself, whatever
//! the server's default. The `runs` row is inserted with
//! `ON CONFLICT (run_id) DO NOTHING` and counted as completed only if a row
//! was inserted. `seq` is taken by an `UPDATE ... RETURNING` of
//! `rollup_state`, whose row lock orders completions by commit.
//!
//! What runs share (tests, texts, signatures) is inserted with
//! `ON CONFLICT DO NOTHING`, each kind once per batch in one sorted order
//! (tests, then texts, then signatures), so two batches waiting on each
//! other's new rows always wait in the same direction: no deadlock.
//!
//! # Differences from SQLite
//! - PostgreSQL `TEXT` cannot hold U+0000 (SQLite's can): every NUL in a
//!   text this store writes (cases, runs, rejections) is stored as U+FFFD,
//!   so a message with one is stored instead of failing its batch forever.
//! - No cache of known test keys (the SQLite writer's `KnownTests`): every
//!   batch looks its tests up, one statement for all of them.
//! - Identity keys (`run_key`, `test_key`, `text_key`, `rejected.id`) have
//!   gaps: a conflicting `ON CONFLICT DO NOTHING` and a rollback consume
//!   values.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder};

use crate::model::{CaseRecord, Counts, Rejection, RunRecord, to_millis};
use crate::store::sqlite::interning;
use crate::store::{BatchItem, BatchReport};
use crate::{owners, signature};

/// Bound values per statement: PostgreSQL's limit (a 16-bit count).
const MAX_BINDS: usize = 65_535;

/// Columns bound per row of `cases`.
const CASE_COLUMNS: usize = 14;

/// Rows per multi-row `INSERT` into `cases`.
const CASE_ROWS_PER_STATEMENT: usize = MAX_BINDS / CASE_COLUMNS;

/// Rows per multi-row `INSERT` into `signatures` (4 binds a row).
const SIGNATURE_ROWS_PER_STATEMENT: usize = MAX_BINDS / 4;

/// Errors opening or migrating a PostgreSQL database. The URL in each is
/// the one given with its password replaced by `***`.
#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    /// The URL is not one sqlx's Postgres driver understands.
    #[error("invalid PostgreSQL URL {url}: {source}")]
    Url {
        /// The URL, password hidden.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("cannot migrate PostgreSQL database {url}: {source}")]
    Migrate {
        /// The URL, password hidden.
        url: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
}

/// Connects a pool of at most `connections` (at least 1) to `url` and runs
/// the migrations. Masters starting together are safe: sqlx migrates under
/// an advisory lock, and a migrated database is left as it is.
pub async fn open(url: &str, connections: u32) -> Result<PgPool, PgOpenError> {
    let options: PgConnectOptions = url.parse().map_err(|source| PgOpenError::Url {
        url: redacted(url),
        source,
    })?;
    let connect = |source| PgOpenError::Connect {
        url: redacted(url),
        source,
    };
    // One connection first, for the real cause when it fails (refused,
    // authentication, no such database): the pool retries until its
    // acquire timeout and then says only that it timed out.
    PgConnection::connect_with(&options)
        .await
        .map_err(connect)?
        .close()
        .await
        .map_err(connect)?;
    let pool = PgPoolOptions::new()
        .max_connections(connections.max(1))
        .connect_with(options)
        .await
        .map_err(connect)?;
    sqlx::migrate!("./migrations-pg")
        .run(&pool)
        .await
        .map_err(|source| PgOpenError::Migrate {
            url: redacted(url),
            source,
        })?;
    Ok(pool)
}

/// `url` with the password of its user info and any `password=` or
/// `sslpassword=` parameter replaced by `***`. Errs on the side of hiding:
/// everything after the user name up to the last `@` goes.
pub(crate) fn redacted(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    out.push_str(head);
    let rest = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str("***");
                }
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };
    // Query parameters: `password=...` up to the next `&`.
    let mut tail = rest;
    while let Some(i) = tail.to_ascii_lowercase().find("password=") {
        let value = i + "password=".len();
        out.push_str(&tail[..value]);
        out.push_str("***");
        tail = &tail[value..];
        tail = &tail[tail.find('&').unwrap_or(tail.len())..];
    }
    out.push_str(tail);
    out
}

/// The advisory lock key of a run: FNV-1a (64-bit) of its id. Stable across
/// processes and builds, so every master locks a run under the same key.
pub(crate) fn run_lock(run_id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// `s` as PostgreSQL `TEXT` can hold it: U+0000 becomes U+FFFD.
fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// [`pg_text`] of an optional text.
fn pg_opt(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(pg_text)
}

/// Stores `items` in one transaction with the semantics of the SQLite
/// writer (see the module docs), and reports what it did. The derived state
/// the SQLite writer keeps at completion is not written yet (see
/// `try_complete`).
pub async fn store_batch(pool: &PgPool, items: &[BatchItem]) -> Result<BatchReport, sqlx::Error> {
    let now = to_millis(Utc::now());
    let mut report = BatchReport::default();
    let mut tx = pool.begin().await?;
    // What the locks rely on (see the module docs), whatever the server's
    // default_transaction_isolation says: under REPEATABLE READ the
    // snapshot would be taken before the locks are granted.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *tx)
        .await?;
    lock_runs(&mut tx, items).await?;
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    let mut new_cases: Vec<(&str, u32, usize, &CaseRecord)> = Vec::new();

    for item in items {
        match item {
            BatchItem::Chunk {
                run_id,
                chunk,
                cases,
                digest,
            } => {
                let run_id = run_id.as_str();
                let stored: Option<(Option<String>,)> = sqlx::query_as(
                    "SELECT digest FROM run_chunks WHERE run_id = $1 AND chunk = $2",
                )
                .bind(pg_text(run_id))
                .bind(i64::from(*chunk))
                .fetch_optional(&mut *tx)
                .await?;
                let known = match stored {
                    Some((d,)) => Some(d),
                    // Complete, yet without this chunk: another version.
                    None if run_exists(&mut tx, run_id).await? => Some(Some(String::new())),
                    None => None,
                };
                if let Some(old) = known {
                    match old.filter(|old| old != digest) {
                        None => report.duplicates += 1,
                        Some(old) => {
                            let what = format!("chunk {chunk}");
                            insert_rejection(
                                &mut tx,
                                &crate::store::conflict(run_id, &what, &old, digest, now),
                            )
                            .await?;
                            report.rejected += 1;
                        }
                    }
                    continue;
                }
                sqlx::query(
                    "INSERT INTO run_chunks (run_id, chunk, cases, received_at, digest) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(pg_text(run_id))
                .bind(i64::from(*chunk))
                .bind(cases.len() as i64)
                .bind(now)
                .bind(pg_text(digest))
                .execute(&mut *tx)
                .await?;
                new_cases.extend(
                    cases
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (run_id, *chunk, i, c)),
                );
                touched.insert(run_id);
            }
            BatchItem::Final {
                run,
                chunks,
                digest,
            } => {
                let stored: Option<(Option<String>,)> = sqlx::query_as(
                    "SELECT digest FROM runs WHERE run_id = $1 \
                     UNION ALL SELECT digest FROM pending_runs WHERE run_id = $1 LIMIT 1",
                )
                .bind(pg_text(&run.run_id))
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((old,)) = stored {
                    match old.filter(|old| old != digest) {
                        None => report.duplicates += 1,
                        Some(old) => {
                            let c = crate::store::conflict(&run.run_id, "run", &old, digest, now);
                            insert_rejection(&mut tx, &c).await?;
                            report.rejected += 1;
                        }
                    }
                    continue;
                }
                // JSON escapes U+0000, so the info needs no pg_text.
                let info = serde_json::to_string(run).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO pending_runs (run_id, chunks, info, received_at, digest) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(pg_text(&run.run_id))
                .bind(i64::from(*chunks))
                .bind(info)
                .bind(now)
                .bind(pg_text(digest))
                .execute(&mut *tx)
                .await?;
                touched.insert(run.run_id.as_str());
            }
            BatchItem::Reject(r) => {
                insert_rejection(&mut tx, r).await?;
                report.rejected += 1;
            }
        }
    }

    insert_cases(&mut tx, &new_cases).await?;
    report.cases_inserted += new_cases.len();

    for run_id in touched {
        match try_complete(&mut tx, run_id, now).await? {
            Completion::NotYet => {}
            Completion::Done => report.completed.push(run_id.to_string()),
            Completion::Refused => report.rejected += 1,
        }
    }

    tx.commit().await?;
    Ok(report)
}

/// Takes the advisory lock of every run `items` carries, in ascending key
/// order (see the module docs); held until the transaction ends.
async fn lock_runs(conn: &mut PgConnection, items: &[BatchItem]) -> Result<(), sqlx::Error> {
    let mut keys: Vec<i64> = items
        .iter()
        .filter_map(|item| match item {
            BatchItem::Chunk { run_id, .. } => Some(run_lock(run_id)),
            BatchItem::Final { run, .. } => Some(run_lock(&run.run_id)),
            BatchItem::Reject(_) => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    // A function scan returns the array's elements in order, so the locks
    // are taken in the order sorted here.
    sqlx::query("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k")
        .bind(keys)
        .execute(conn)
        .await?;
    Ok(())
}

async fn run_exists(conn: &mut PgConnection, run_id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM runs WHERE run_id = $1")
        .bind(pg_text(run_id))
        .fetch_optional(conn)
        .await?
        .is_some())
}

async fn insert_rejection(conn: &mut PgConnection, r: &Rejection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rejected (received_at, subject, msg_id, run_id, reason, excerpt, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(to_millis(r.received_at))
    .bind(pg_opt(&r.subject))
    .bind(pg_opt(&r.msg_id))
    .bind(pg_opt(&r.run_id))
    .bind(pg_text(&r.reason))
    .bind(pg_opt(&r.excerpt))
    .bind(r.payload.as_deref())
    .execute(conn)
    .await?;
    Ok(())
}

/// A test's identity as `tests` keys it, as PostgreSQL stores it.
type TestIdentity<'a> = (
    Cow<'a, str>,
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
    Cow<'a, str>,
);

/// Inserts the cases of a batch: first the keys of their runs, tests and
/// texts (each kind in one sorted pass, see the module docs), then the
/// rows, then the signatures of the failures.
async fn insert_cases(
    conn: &mut PgConnection,
    rows: &[(&str, u32, usize, &CaseRecord)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut signatures: HashMap<i64, signature::Signature> = HashMap::new();
    let sigs: Vec<Option<i64>> = rows
        .iter()
        .map(|(_, _, _, c)| {
            c.outcome.is_failure().then(|| {
                let sig = signature::stored_signature(c.message.as_deref(), c.traceback.as_deref());
                let key = sig.key();
                signatures.entry(key).or_insert(sig);
                key
            })
        })
        .collect();
    let owners: Vec<Option<String>> = rows
        .iter()
        .map(|(_, _, _, c)| owners::to_column(&c.owners))
        .collect();
    let mut runs = interning::Distinct::new();
    let mut tests: interning::Distinct<TestIdentity<'_>> = interning::Distinct::new();
    let mut texts = interning::Distinct::new();
    let mut at = Vec::with_capacity(rows.len());
    for ((run_id, _, _, c), owners) in rows.iter().zip(&owners) {
        let mut text = [None; 4];
        let bodies = [&c.message, &c.traceback, &c.output, owners];
        for (slot, body) in text.iter_mut().zip(bodies) {
            *slot = body.as_deref().map(|b| texts.add(pg_text(b)));
        }
        let test = (
            pg_text(&c.test_id),
            c.file.as_deref().map(pg_text),
            c.classname.as_deref().map(pg_text),
            pg_text(&c.name),
        );
        at.push((runs.add(pg_text(run_id)), tests.add(test), text));
    }
    let run_keys = run_keys(conn, &runs.values).await?;
    let test_keys = test_keys(conn, &tests.values).await?;
    let text_keys = text_keys(conn, &texts.values).await?;
    let key = |keys: &[i64], i: usize| keys.get(i).copied();
    let all: Vec<_> = rows.iter().zip(&sigs).zip(&at).collect();
    for part in all.chunks(CASE_ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO cases (run_key, outcome, chunk, idx, test_key, duration_secs, retries, \
             flaky, quarantined, sig, message_key, traceback_key, output_key, owners_key) ",
        );
        qb.push_values(
            part,
            |mut b, (((_, chunk, idx, c), sig), (run, test, text))| {
                b.push_bind(key(&run_keys, *run))
                    .push_bind(c.outcome.code())
                    .push_bind(i64::from(*chunk))
                    .push_bind(*idx as i64)
                    .push_bind(key(&test_keys, *test))
                    .push_bind(c.duration_secs)
                    .push_bind(i64::from(c.retries))
                    .push_bind(i64::from(c.flaky))
                    .push_bind(i64::from(c.quarantined))
                    .push_bind(**sig);
                for t in text {
                    b.push_bind(t.and_then(|i| key(&text_keys, i)));
                }
            },
        );
        qb.build().execute(&mut *conn).await?;
    }
    let mut signatures: Vec<(i64, signature::Signature)> = signatures.into_iter().collect();
    signatures.sort_unstable_by_key(|(k, _)| *k);
    for part in signatures.chunks(SIGNATURE_ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new("INSERT INTO signatures (sig, exception, message, frame) ");
        qb.push_values(part, |mut b, (key, sig)| {
            b.push_bind(*key)
                .push_bind(pg_opt(&sig.exception).map(Cow::into_owned))
                .push_bind(pg_text(&sig.message).into_owned())
                .push_bind(pg_opt(&sig.frame).map(Cow::into_owned));
        });
        qb.push(" ON CONFLICT (sig) DO NOTHING");
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The key of each of `run_ids` (distinct), made if new, in their order.
/// Only the holder of a run's advisory lock inserts its key, so no two
/// batches race here.
async fn run_keys(
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
async fn test_keys(
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
async fn text_keys(
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
async fn delete_cases(conn: &mut PgConnection, run_id: &str) -> Result<u64, sqlx::Error> {
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

enum Completion {
    NotYet,
    Done,
    Refused,
}

/// Makes `run_id` visible if its final and all its chunks are stored and
/// the counts agree with the cases. The caller holds the run's lock.
async fn try_complete(
    conn: &mut PgConnection,
    run_id: &str,
    now: i64,
) -> Result<Completion, sqlx::Error> {
    let pending: Option<(i64, String, Option<String>)> =
        sqlx::query_as("SELECT chunks, info, digest FROM pending_runs WHERE run_id = $1")
            .bind(pg_text(run_id))
            .fetch_optional(&mut *conn)
            .await?;
    let Some((chunks, info, digest)) = pending else {
        return Ok(Completion::NotYet);
    };
    let (have,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM run_chunks WHERE run_id = $1")
        .bind(pg_text(run_id))
        .fetch_one(&mut *conn)
        .await?;
    if have < chunks {
        return Ok(Completion::NotYet);
    }
    let run: Result<RunRecord, _> = serde_json::from_str(&info);
    let by_outcome: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT outcome, COUNT(*) FROM cases \
         WHERE run_key = (SELECT run_key FROM run_keys WHERE run_id = $1) GROUP BY outcome",
    )
    .bind(pg_text(run_id))
    .fetch_all(&mut *conn)
    .await?;
    let seen: HashMap<i64, u64> = by_outcome
        .into_iter()
        .map(|(o, n)| (o, n.max(0) as u64))
        .collect();
    let verdict = match run {
        Err(e) => Err(format!("stored run metadata is unreadable: {e}")),
        Ok(run) => crate::store::check_counts(&run, &seen, have, chunks).map(|()| run),
    };
    sqlx::query("DELETE FROM pending_runs WHERE run_id = $1")
        .bind(pg_text(run_id))
        .execute(&mut *conn)
        .await?;
    let mut run = match verdict {
        Ok(run) => run,
        Err(reason) => {
            delete_cases(&mut *conn, run_id).await?;
            let rejection = Rejection {
                received_at: crate::model::from_millis(now),
                subject: None,
                msg_id: None,
                run_id: Some(run_id.to_string()),
                reason,
                excerpt: None,
                payload: None,
            };
            insert_rejection(conn, &rejection).await?;
            return Ok(Completion::Refused);
        }
    };
    // Completion order: what the flaky evidence is keyed by. The row lock
    // this takes orders the completions of concurrent batches by commit.
    let (seq,): (i64,) = sqlx::query_as(
        "UPDATE rollup_state SET value = value + 1 WHERE name = 'seq' RETURNING value",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (quarantined,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM cases \
         WHERE run_key = (SELECT run_key FROM run_keys WHERE run_id = $1) \
           AND outcome IN (0, 1) AND quarantined = 1",
    )
    .bind(pg_text(run_id))
    .fetch_one(&mut *conn)
    .await?;
    run.quarantined_failures = quarantined.max(0) as u64;
    if !insert_run(&mut *conn, &run, digest.as_deref(), now, seq).await? {
        // Unreachable while the run's lock is held; never count it twice.
        tracing::warn!(run_id, "a run completed twice; the first is kept");
        return Ok(Completion::NotYet);
    }
    // Not yet on PostgreSQL: the derived state the SQLite writer keeps in
    // this transaction: rollups::add_run, run_tests::record,
    // owners::record_owners, auto_quarantine::count_clean_runs,
    // flaky::record_evidence, webhooks::on_run_completed.
    Ok(Completion::Done)
}

/// Inserts the run's row; false if it was there already.
async fn insert_run(
    conn: &mut PgConnection,
    r: &RunRecord,
    digest: Option<&str>,
    now: i64,
    seq: i64,
) -> Result<bool, sqlx::Error> {
    let c: &Counts = &r.counts;
    let inserted = sqlx::query(
        "INSERT INTO runs (run_id, project, branch, commit_sha, worker_id, host, runner, command, \
         started_at, finished_at, duration_secs, exit_code, status, total, passed, failed, error, \
         skipped, xfailed, xpassed, pass_rate, cases_complete, note, received_at, digest, seq, \
         quarantined_failures) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22, $23, $24, $25, $26, $27) \
         ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(pg_text(&r.run_id))
    .bind(pg_text(&r.project))
    .bind(pg_opt(&r.branch))
    .bind(pg_opt(&r.commit))
    .bind(pg_text(&r.worker_id))
    .bind(pg_opt(&r.host))
    .bind(pg_opt(&r.runner))
    .bind(pg_opt(&r.command))
    .bind(to_millis(r.started_at))
    .bind(to_millis(r.finished_at))
    .bind(r.duration_secs)
    .bind(r.exit_code.map(i64::from))
    .bind(r.status.as_str())
    .bind(c.total as i64)
    .bind(c.passed as i64)
    .bind(c.failed as i64)
    .bind(c.error as i64)
    .bind(c.skipped as i64)
    .bind(c.xfailed as i64)
    .bind(c.xpassed as i64)
    .bind(r.pass_rate)
    .bind(i64::from(r.cases_complete))
    .bind(pg_opt(&r.note))
    .bind(now)
    .bind(digest)
    .bind(seq)
    .bind(r.quarantined_failures as i64)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub mod copy;
#[cfg(test)]
mod tests;
