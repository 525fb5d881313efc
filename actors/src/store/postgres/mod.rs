//! The PostgreSQL store: [`PgStore`], the [`Store`] over a PostgreSQL
//! database ([`open`], migrations in `actors/migrations-pg`, the same
//! schema the SQLite migrations end with), with the observable results of
//! the SQLite store ([`crate::store::sqlite`]): the same rows in the same
//! tables for the same calls (the parity test, `parity`, drives both with
//! one random sequence and compares every table after every step).
//!
//! Layout, as on SQLite: `batch` stores batches and completes runs;
//! `maintain` prunes, expires, reclaims and marks flaky tests fixed; the
//! rest are the derived state written with the data, each beside the tables
//! it keeps: `interning` (keys of runs, tests and texts), `run_tests`
//! (per-run test summaries), `rollups`, `evidence` (flaky verdicts),
//! `clean_runs` (automatic quarantine), `owners`, `outbox` (webhook
//! events) and `quarantine`; [`copy`] copies a SQLite store in. Only the
//! SQL is here: the rules both backends keep (counts, conflict and expiry
//! texts, clean-run counting, the outage rule, summary grouping and its
//! encoding, webhook event selection) are Rust in `store` and
//! `store::sqlite`, called from both.
//!
//! Guarantees, as on SQLite:
//! - Every [`Store`] method is one transaction; on error nothing of it is
//!   stored and the caller leaves its messages unacked.
//! - Idempotent by `(run_id, chunk)` and by `run_id`: a resent chunk or
//!   final is a duplicate; one with the same id but another digest is
//!   recorded in `rejected` as a conflict with the writer's reason text.
//! - A run gets its `runs` row (and the next `seq`) only in the transaction
//!   that stores its last missing piece, and only if its counts agree with
//!   its cases; otherwise its cases go and a rejection says why. The same
//!   transaction writes everything derived from it: rollups, its test
//!   summary, its tests' owners, clean-run counts, flaky evidence and the
//!   webhook outbox. Pruning takes it all out in one transaction.
//! - Cases are interned (`run_keys`, `tests`, `texts`) and read back through
//!   the `test_cases` view; failures carry their signature key, the
//!   signature is stored once in `signatures`.
//!
//! # Several masters
//! Two processes may call the store at once on one database, with chunks
//! and finals of the same runs. Completion is exactly once and never
//! missed: before it reads or writes anything, a batch takes a transaction
//! advisory lock (`pg_advisory_xact_lock`) per run it carries, keyed by a
//! 64-bit FNV-1a hash of the run id (`run_lock`), in ascending key order,
//! so two batches with common runs cannot deadlock. The second batch waits
//! until the first has committed or rolled back; as READ COMMITTED takes a
//! new snapshot per statement, it then sees every chunk and final the first
//! stored, so whichever batch stores a run's last piece sees all the others
//! and completes it. Every transaction sets READ COMMITTED itself, whatever
//! the server's default (`begin`). The `runs` row is inserted with
//! `ON CONFLICT (run_id) DO NOTHING` and counted as completed only if a row
//! was inserted. `seq` is taken by an `UPDATE ... RETURNING` of
//! `rollup_state`, whose row lock orders completions by commit: everything
//! a completion derives (rollups, evidence, events: each reads what earlier
//! completions wrote) is written after it, so completions are serialized
//! while their batches' cases are stored in parallel.
//!
//! What runs share (tests, texts, signatures) is inserted with
//! `ON CONFLICT DO NOTHING`, each kind once per batch in one sorted order
//! (tests, then texts, then signatures), so two batches waiting on each
//! other's new rows always wait in the same direction: no deadlock.
//!
//! The writes that delete or rewrite what batches read (pruning, expiry,
//! reclaiming orphans, quarantine and release) exclude batches altogether:
//! batches hold the write gate (a two-key advisory lock, a key space apart
//! from the runs' one-key locks) shared, those hold it exclusively, before
//! any other lock (`gate`). Without it a prune or an expiry could delete
//! the pieces of a run another master is completing, an orphan sweep could
//! delete a test a batch has just found, and a quarantine could race the
//! clean-run count of a completion. On SQLite the single writer gives all
//! of this for free.
//!
//! # Differences from SQLite
//! - PostgreSQL `TEXT` cannot hold U+0000 (SQLite's can): every NUL in a
//!   text this store writes (cases, runs, rejections, owners) is stored as
//!   U+FFFD, so a message with one is stored instead of failing its batch
//!   forever.
//! - No cache of known test keys (the SQLite writer's `KnownTests`): every
//!   batch looks its tests up, one statement for all of them.
//! - Identity keys (`run_key`, `test_key`, `text_key`, `rejected.id`,
//!   `tracked_tests.key`, `webhook_events.seq`) have gaps: a conflicting
//!   `ON CONFLICT DO NOTHING` and a rollback consume values. They are
//!   surrogate keys: no answer depends on their values.
//! - Summaries: PostgreSQL's `SUM` adds plainly, SQLite's compensates; the
//!   cases are grouped in Rust with SQLite's sum
//!   ([`crate::store::sqlite::run_tests`]'s `group`), so the blobs are
//!   byte-identical.
//! - Reclaiming deletes orphaned tests and texts but runs no `VACUUM`:
//!   autovacuum makes the space of deleted rows reusable (see `maintain`).
//! - `rollup_state.built` stays 0: a PostgreSQL database starts empty, so
//!   there is nothing to fill the rollups from (SQLite's `ensure_built`).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};

use crate::model::RunRecord;
use crate::quarantine::Entry;
use crate::store::{BatchItem, BatchReport, Cleared, PruneReport, Store, StoreError};
use crate::version::Changed;
use crate::webhooks::{Attempt, Routes};

mod batch;
mod clean_runs;
pub mod copy;
mod evidence;
mod interning;
mod maintain;
mod outbox;
mod owners;
mod quarantine;
mod rollups;
mod run_tests;

#[cfg(test)]
mod parity;
#[cfg(test)]
mod tests;

/// The PostgreSQL store over a pool opened by [`open`]. Cheap to clone;
/// several stores (in one process or in several masters) may share a
/// database (see the module docs).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// A store over `pool` (migrated by [`open`]).
    pub fn new(pool: PgPool) -> PgStore {
        PgStore { pool }
    }

    /// The pool it writes through.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Store for PgStore {
    async fn store_batch(
        &self,
        hooks: &Routes,
        items: Vec<BatchItem>,
    ) -> Result<(BatchReport, Changed), StoreError> {
        Ok(batch::store_batch(&self.pool, hooks, &items).await?)
    }

    async fn prune_slice(
        &self,
        cutoff: Option<DateTime<Utc>>,
        keep_runs: Option<u32>,
        max_runs: u32,
    ) -> Result<(PruneReport, Changed), StoreError> {
        Ok(maintain::prune_slice(&self.pool, cutoff, keep_runs, max_runs).await?)
    }

    async fn reclaim(&self) -> Result<(u64, u64), StoreError> {
        Ok(maintain::reclaim(&self.pool).await?)
    }

    async fn expire_incomplete(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(maintain::expire_incomplete(&self.pool, before).await?)
    }

    async fn clear_flaky(&self, c: Cleared) -> Result<bool, StoreError> {
        Ok(maintain::clear_flaky(&self.pool, c).await?)
    }

    async fn quarantine(
        &self,
        hooks: &Routes,
        project: &str,
        entry: &Entry,
        fits: fn(&str, &[Entry]) -> Result<(), String>,
        now: DateTime<Utc>,
    ) -> Result<Result<(), String>, StoreError> {
        Ok(quarantine::quarantine(&self.pool, hooks, project, entry, fits, now).await?)
    }

    async fn release(
        &self,
        hooks: &Routes,
        project: &str,
        test_id: &str,
        only_auto: bool,
    ) -> Result<bool, StoreError> {
        Ok(quarantine::release(&self.pool, hooks, project, test_id, only_auto).await?)
    }

    async fn record_attempt(
        &self,
        target: &str,
        event_seq: i64,
        outcome: &Attempt,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Ok(outbox::record_attempt(&self.pool, target, event_seq, outcome, at).await?)
    }

    async fn prune_outbox(
        &self,
        delivered_before: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        targets: &[String],
    ) -> Result<u64, StoreError> {
        Ok(outbox::prune_outbox(&self.pool, delivered_before, dead_before, targets).await?)
    }
}

/// Begins a transaction at READ COMMITTED, whatever the server's
/// `default_transaction_isolation` says: the locks rely on each statement
/// seeing what committed before it (under REPEATABLE READ the snapshot
/// would be taken before a lock is granted).
pub(crate) async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// How a transaction holds the write gate (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// A batch: batches run side by side.
    Shared,
    /// A prune, an expiry, an orphan sweep, a quarantine change: alone.
    Exclusive,
}

/// The write gate's advisory lock key: two 32-bit keys, a key space
/// PostgreSQL keeps apart from the one-key locks of runs (`run_lock`).
const GATE_KEY: (i32, i32) = (0x7074_7000, 1);

/// Takes the write gate for the rest of the transaction. Taken first, before
/// any other lock.
pub(crate) async fn gate(conn: &mut PgConnection, how: Gate) -> Result<(), sqlx::Error> {
    let sql = match how {
        Gate::Shared => "SELECT pg_advisory_xact_lock_shared($1, $2)",
        Gate::Exclusive => "SELECT pg_advisory_xact_lock($1, $2)",
    };
    sqlx::query(sql)
        .bind(GATE_KEY.0)
        .bind(GATE_KEY.1)
        .execute(conn)
        .await?;
    Ok(())
}

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
    #[error("cannot connect to PostgreSQL at {url}: {source}{}", hint(source))]
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

/// What to do about a refused connection, when the server said why.
fn hint(e: &sqlx::Error) -> &'static str {
    let code = match e {
        sqlx::Error::Database(d) => d.code(),
        _ => None,
    };
    match code.as_deref() {
        // invalid_catalog_name
        Some("3D000") => {
            ". Create the database first (createdb -h HOST -U USER DB, or CREATE DATABASE in \
             psql); the master creates its tables in it"
        }
        // invalid_password, invalid_authorization_specification
        Some("28P01") | Some("28000") => {
            ". Check the user and password in the URL (and pg_hba.conf for this host)"
        }
        _ => "",
    }
}

/// Connects a pool of at most `connections` (at least 1) to `url` and runs
/// the migrations. Masters starting together are safe: sqlx migrates under
/// an advisory lock, and a migrated database is left as it is.
pub async fn open(url: &str, connections: u32) -> Result<PgPool, PgOpenError> {
    let pool = connect(url, connections).await?;
    sqlx::migrate!("./migrations-pg")
        .run(&pool)
        .await
        .map_err(|source| PgOpenError::Migrate {
            url: redacted(url),
            source,
        })?;
    Ok(pool)
}

/// Connects a pool of at most `connections` (at least 1) to `url`, a
/// database [`open`] migrated already (the read pools of a master whose
/// writer opened it).
pub async fn connect(url: &str, connections: u32) -> Result<PgPool, PgOpenError> {
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
    PgPoolOptions::new()
        .max_connections(connections.max(1))
        .connect_with(options)
        .await
        .map_err(connect)
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
pub(crate) fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// [`pg_text`] of an optional text.
pub(crate) fn pg_opt(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(pg_text)
}

/// `run` as PostgreSQL stores it: every NUL of its texts as U+FFFD, so the
/// rows derived from it (rollups, events) hold what `runs` holds.
pub(crate) fn pg_record(mut run: RunRecord) -> RunRecord {
    for s in [&mut run.run_id, &mut run.project, &mut run.worker_id] {
        if s.contains('\0') {
            *s = pg_text(s).into_owned();
        }
    }
    for s in [
        &mut run.branch,
        &mut run.commit,
        &mut run.host,
        &mut run.runner,
        &mut run.command,
        &mut run.note,
    ]
    .into_iter()
    .flatten()
    {
        if s.contains('\0') {
            *s = pg_text(s).into_owned();
        }
    }
    run
}
