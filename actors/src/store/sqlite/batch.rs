//! Storing a batch on SQLite: the whole batch in one transaction with
//! multi-row `INSERT`s (see [`crate::store::Store::store_batch`] for the
//! guarantees). SQLite has one writer, so completion needs no lock: the
//! transaction that stores a run's last piece sees every earlier one.

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use super::interning;
use crate::model::{CaseRecord, Counts, Rejection, RunRecord, to_millis};
use crate::owners;
use crate::store::{BatchItem, BatchReport, StoreError};
use crate::version::Changed;
use crate::webhooks;

/// Rows per multi-row `INSERT` into `cases` (14 binds a row, under
/// SQLite's 32,766-variable limit).
const CASE_ROWS_PER_STATEMENT: usize = 1900;

/// [`crate::store::Store::store_batch`].
pub(super) async fn store_batch(
    pool: &SqlitePool,
    hooks: &webhooks::Routes,
    known: &interning::Known,
    items: Vec<BatchItem>,
) -> Result<(BatchReport, Changed), StoreError> {
    let now = to_millis(Utc::now());
    let mut report = BatchReport::default();
    let mut tx = pool.begin().await?;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut new_cases: Vec<(&str, u32, usize, &CaseRecord)> = Vec::new();
    let mut learned = interning::Learned::new();

    for item in &items {
        match item {
            BatchItem::Chunk {
                run_id,
                chunk,
                cases,
                digest,
            } => {
                let stored: Option<(Option<String>,)> =
                    sqlx::query_as("SELECT digest FROM run_chunks WHERE run_id = ? AND chunk = ?")
                        .bind(run_id)
                        .bind(*chunk)
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
                    "INSERT INTO run_chunks (run_id, chunk, cases, received_at, digest) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(run_id)
                .bind(*chunk)
                .bind(cases.len() as i64)
                .bind(now)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
                new_cases.extend(
                    cases
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (run_id.as_str(), *chunk, i, c)),
                );
                touched.insert(run_id.clone());
            }
            BatchItem::Final {
                run,
                chunks,
                digest,
            } => {
                let stored: Option<(Option<String>,)> = sqlx::query_as(
                    "SELECT digest FROM runs WHERE run_id = ?1 \
                     UNION ALL SELECT digest FROM pending_runs WHERE run_id = ?1 LIMIT 1",
                )
                .bind(&run.run_id)
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
                let info = serde_json::to_string(run).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO pending_runs (run_id, chunks, info, received_at, digest) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&run.run_id)
                .bind(*chunks)
                .bind(info)
                .bind(now)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
                touched.insert(run.run_id.clone());
            }
            BatchItem::Reject(r) => {
                insert_rejection(&mut tx, r).await?;
                report.rejected += 1;
            }
        }
    }

    for rows in new_cases.chunks(CASE_ROWS_PER_STATEMENT) {
        insert_cases(&mut tx, rows, known, &mut learned).await?;
        report.cases_inserted += rows.len();
    }

    // Only runs that became visible change what readers see.
    let mut changed = Changed::default();
    for run_id in &touched {
        match try_complete(&mut tx, hooks, run_id, now).await? {
            Completion::NotYet => {}
            Completion::Done { project } => {
                report.completed.push(run_id.clone());
                changed.projects.insert(project);
            }
            Completion::Refused => report.rejected += 1,
        }
    }

    tx.commit().await?;
    interning::lock(known).learn(learned);
    Ok((report, changed))
}

async fn run_exists(conn: &mut SqliteConnection, run_id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM runs WHERE run_id = ?")
        .bind(run_id)
        .fetch_optional(conn)
        .await?
        .is_some())
}

pub(super) async fn insert_rejection(
    conn: &mut SqliteConnection,
    r: &Rejection,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rejected (received_at, subject, msg_id, run_id, reason, excerpt, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(to_millis(r.received_at))
    .bind(&r.subject)
    .bind(&r.msg_id)
    .bind(&r.run_id)
    .bind(&r.reason)
    .bind(&r.excerpt)
    .bind(&r.payload)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts cases; failed and errored ones with their failure signature
/// (see `read::clusters`), whose text is stored once per signature.
async fn insert_cases(
    conn: &mut SqliteConnection,
    rows: &[(&str, u32, usize, &CaseRecord)],
    known: &interning::Known,
    learned: &mut interning::Learned,
) -> Result<(), sqlx::Error> {
    let mut signatures: HashMap<i64, crate::signature::Signature> = HashMap::new();
    let keys: Vec<Option<i64>> = rows
        .iter()
        .map(|(_, _, _, c)| {
            c.outcome.is_failure().then(|| {
                let sig = crate::signature::stored_signature(
                    c.message.as_deref(),
                    c.traceback.as_deref(),
                );
                let key = sig.key();
                signatures.entry(key).or_insert(sig);
                key
            })
        })
        .collect();
    // Intern what repeats: the batch's distinct runs, tests and texts.
    let mut runs = crate::store::rules::Distinct::new();
    let mut tests = crate::store::rules::Distinct::new();
    let mut texts = crate::store::rules::Distinct::new();
    let owners: Vec<Option<String>> = rows
        .iter()
        .map(|(_, _, _, c)| owners::to_column(&c.owners))
        .collect();
    let mut at = Vec::with_capacity(rows.len());
    for ((run_id, _, _, c), owners) in rows.iter().zip(&owners) {
        let mut text = [None; 4];
        let bodies = [&c.message, &c.traceback, &c.output, owners];
        for (slot, body) in text.iter_mut().zip(bodies) {
            *slot = body.as_deref().map(|b| texts.add(b));
        }
        let test = (
            c.test_id.as_str(),
            c.file.as_deref(),
            c.classname.as_deref(),
            c.name.as_str(),
        );
        at.push((runs.add(*run_id), tests.add(test), text));
    }
    let run_keys = interning::run_keys(&mut *conn, &runs.values).await?;
    let test_keys = interning::test_keys(&mut *conn, &tests.values, known, learned).await?;
    let text_keys = interning::text_keys(&mut *conn, &texts.values).await?;
    let key = |keys: &[i64], i: usize| keys.get(i).copied();
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO cases (run_key, outcome, chunk, idx, test_key, duration_secs, retries, \
         flaky, quarantined, sig, message_key, traceback_key, output_key, owners_key) ",
    );
    qb.push_values(
        rows.iter().zip(&keys).zip(&at),
        |mut b, (((_, chunk, idx, c), sig), (run, test, text))| {
            b.push_bind(key(&run_keys, *run))
                .push_bind(c.outcome.code())
                .push_bind(*chunk)
                .push_bind(*idx as i64)
                .push_bind(key(&test_keys, *test))
                .push_bind(c.duration_secs)
                .push_bind(c.retries)
                .push_bind(c.flaky)
                .push_bind(c.quarantined)
                .push_bind(*sig);
            for t in text {
                b.push_bind(t.and_then(|i| key(&text_keys, i)));
            }
        },
    );
    qb.build().execute(&mut *conn).await?;
    if signatures.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<Sqlite> =
        QueryBuilder::new("INSERT OR IGNORE INTO signatures (sig, exception, message, frame) ");
    qb.push_values(signatures, |mut b, (key, sig)| {
        b.push_bind(key)
            .push_bind(sig.exception)
            .push_bind(sig.message)
            .push_bind(sig.frame);
    });
    qb.build().execute(conn).await?;
    Ok(())
}

enum Completion {
    NotYet,
    Done { project: String },
    Refused,
}

/// Makes `run_id` visible if its final and all its chunks are stored and the
/// counts agree with the cases, and counts it into the rollups.
async fn try_complete(
    conn: &mut SqliteConnection,
    hooks: &webhooks::Routes,
    run_id: &str,
    now: i64,
) -> Result<Completion, sqlx::Error> {
    let pending: Option<(i64, String, Option<String>)> =
        sqlx::query_as("SELECT chunks, info, digest FROM pending_runs WHERE run_id = ?")
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((chunks, info, digest)) = pending else {
        return Ok(Completion::NotYet);
    };
    let (have,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM run_chunks WHERE run_id = ?")
        .bind(run_id)
        .fetch_one(&mut *conn)
        .await?;
    if have < chunks {
        return Ok(Completion::NotYet);
    }
    let run: Result<RunRecord, _> = serde_json::from_str(&info);
    let by_outcome: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT outcome, COUNT(*) FROM cases \
         WHERE run_key = (SELECT run_key FROM run_keys WHERE run_id = ?) GROUP BY outcome",
    )
    .bind(run_id)
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
    sqlx::query("DELETE FROM pending_runs WHERE run_id = ?")
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    let mut run = match verdict {
        Ok(run) => run,
        Err(reason) => {
            interning::delete_cases(&mut *conn, run_id).await?;
            let rejection =
                crate::store::writer_rejection(run_id, reason, crate::model::from_millis(now));
            insert_rejection(conn, &rejection).await?;
            return Ok(Completion::Refused);
        }
    };
    // Completion order: what the flaky evidence is keyed by.
    let (seq,): (i64,) = sqlx::query_as(
        "UPDATE rollup_state SET value = value + 1 WHERE name = 'seq' RETURNING value",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (quarantined,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM test_cases WHERE run_id = ? AND outcome IN (0, 1) AND quarantined = 1",
    )
    .bind(run_id)
    .fetch_one(&mut *conn)
    .await?;
    run.quarantined_failures = quarantined.max(0) as u64;
    insert_run(&mut *conn, &run, digest.as_deref(), now, seq).await?;
    super::rollups::add_run(&mut *conn, &run, now).await?;
    super::run_tests::record(&mut *conn, run_id).await?;
    super::owners::record_owners(&mut *conn, run_id, &run.project).await?;
    super::clean_runs::count_clean_runs(&mut *conn, run_id, &run.project).await?;
    super::evidence::record_evidence(&mut *conn, run_id, &run.project, seq).await?;
    super::outbox::on_run_completed(conn, hooks, &run, seq).await?;
    Ok(Completion::Done {
        project: run.project,
    })
}

async fn insert_run(
    conn: &mut SqliteConnection,
    r: &RunRecord,
    digest: Option<&str>,
    now: i64,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let c: &Counts = &r.counts;
    sqlx::query(
        "INSERT INTO runs (run_id, project, branch, commit_sha, worker_id, host, runner, command, \
         started_at, finished_at, duration_secs, exit_code, status, total, passed, failed, error, \
         skipped, xfailed, xpassed, pass_rate, cases_complete, note, received_at, digest, seq, \
         quarantined_failures) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.run_id)
    .bind(&r.project)
    .bind(&r.branch)
    .bind(&r.commit)
    .bind(&r.worker_id)
    .bind(&r.host)
    .bind(&r.runner)
    .bind(&r.command)
    .bind(to_millis(r.started_at))
    .bind(to_millis(r.finished_at))
    .bind(r.duration_secs)
    .bind(r.exit_code)
    .bind(r.status)
    .bind(c.total as i64)
    .bind(c.passed as i64)
    .bind(c.failed as i64)
    .bind(c.error as i64)
    .bind(c.skipped as i64)
    .bind(c.xfailed as i64)
    .bind(c.xpassed as i64)
    .bind(r.pass_rate)
    .bind(r.cases_complete)
    .bind(&r.note)
    .bind(now)
    .bind(digest)
    .bind(seq)
    .bind(r.quarantined_failures as i64)
    .execute(conn)
    .await?;
    Ok(())
}
