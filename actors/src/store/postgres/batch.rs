//! Storing a batch on PostgreSQL: the whole batch in one transaction with
//! multi-row `INSERT`s (see [`crate::store::Store::store_batch`] for the
//! guarantees, and the module docs of [`super`] for how several masters
//! complete every run exactly once). The same steps as SQLite's
//! (`store::sqlite::batch`), with the same rejection texts.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, QueryBuilder};

use super::interning::{self, TestIdentity};
use super::{Gate, pg_opt, pg_text, run_lock};
use crate::model::{CaseRecord, Counts, Rejection, RunRecord, to_millis};
use crate::store::rules::Distinct;
use crate::store::{BatchItem, BatchReport};
use crate::version::Changed;
use crate::{owners, signature, webhooks};

/// Bound values per statement: PostgreSQL's limit (a 16-bit count).
const MAX_BINDS: usize = 65_535;

/// Columns bound per row of `cases`.
const CASE_COLUMNS: usize = 14;

/// Rows per multi-row `INSERT` into `cases`.
const CASE_ROWS_PER_STATEMENT: usize = MAX_BINDS / CASE_COLUMNS;

/// Rows per multi-row `INSERT` into `signatures` (4 binds a row).
const SIGNATURE_ROWS_PER_STATEMENT: usize = MAX_BINDS / 4;

/// [`crate::store::Store::store_batch`]: stores `items` in one transaction
/// and reports what it did and which projects' visible data changed.
pub(super) async fn store_batch(
    pool: &PgPool,
    hooks: &webhooks::Routes,
    items: &[BatchItem],
) -> Result<(BatchReport, Changed), sqlx::Error> {
    let now = to_millis(Utc::now());
    let mut report = BatchReport::default();
    let mut tx = super::begin(pool).await?;
    super::gate(&mut tx, Gate::Shared).await?;
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

    // Only runs that became visible change what readers see.
    let mut changed = Changed::default();
    for run_id in touched {
        match try_complete(&mut tx, hooks, run_id, now).await? {
            Completion::NotYet => {}
            Completion::Done { project } => {
                report.completed.push(run_id.to_string());
                changed.projects.insert(project);
            }
            Completion::Refused => report.rejected += 1,
        }
    }

    tx.commit().await?;
    Ok((report, changed))
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

pub(super) async fn insert_rejection(
    conn: &mut PgConnection,
    r: &Rejection,
) -> Result<(), sqlx::Error> {
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
    let mut runs = Distinct::new();
    let mut tests: Distinct<TestIdentity<'_>> = Distinct::new();
    let mut texts = Distinct::new();
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
    let run_keys = interning::run_keys(conn, &runs.values).await?;
    let test_keys = interning::test_keys(conn, &tests.values).await?;
    let text_keys = interning::text_keys(conn, &texts.values).await?;
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

enum Completion {
    NotYet,
    Done { project: String },
    Refused,
}

/// Makes `run_id` visible if its final and all its chunks are stored and
/// the counts agree with the cases, and writes everything derived from it
/// (as SQLite's `try_complete`). The caller holds the run's lock.
async fn try_complete(
    conn: &mut PgConnection,
    hooks: &webhooks::Routes,
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
        Ok(run) => super::pg_record(run),
        Err(reason) => {
            interning::delete_cases(&mut *conn, run_id).await?;
            let rejection =
                crate::store::writer_rejection(run_id, reason, crate::model::from_millis(now));
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
    // As the run is stored (NULs replaced), so derived rows name it alike.
    let run_id = run.run_id.as_str();
    super::rollups::add_run(&mut *conn, &run, now).await?;
    super::run_tests::record(&mut *conn, run_id).await?;
    super::owners::record_owners(&mut *conn, run_id, &run.project).await?;
    super::clean_runs::count_clean_runs(&mut *conn, run_id, &run.project).await?;
    super::evidence::record_evidence(&mut *conn, run_id, &run.project, seq).await?;
    super::outbox::on_run_completed(&mut *conn, hooks, &run, seq).await?;
    Ok(Completion::Done {
        project: run.project,
    })
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
