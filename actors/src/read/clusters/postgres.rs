//! [`super`] on PostgreSQL: the window's failures as plain typed rows in
//! SQLite's order (the first of a cluster is its example), grouped,
//! ordered and cut by [`Grouped`], shared with SQLite; then the stored
//! signatures and the examples' messages of the listed clusters only.
//!
//! Guarantees: every answer equals SQLite's on the same rows (the parity
//! test, `read::parity::analytics`, asks both).

use sqlx::{PgConnection, PgPool, Postgres};

use super::*;
use crate::owners::push_filter_pg;
use crate::read::pg_snapshot as snapshot;

/// [`super::clusters`] on PostgreSQL.
pub(crate) async fn clusters(
    pool: &PgPool,
    w: &Window,
    limit: usize,
) -> Result<ClusterReport, sqlx::Error> {
    let mut tx = snapshot(pool).await?;
    let mut q = QueryBuilder::<Postgres>::new("");
    push_scope(&mut q, w, Runs::All);
    q.push(
        " SELECT s.run_id, s.started_at, c.test_id, c.sig, c.outcome, c.chunk, c.idx, \
                 CASE WHEN c.sig IS NULL THEN c.message END AS message, \
                 CASE WHEN c.sig IS NULL THEN c.traceback END AS traceback \
          FROM scope s JOIN test_cases c ON c.run_id = s.run_id AND c.outcome IN (0, 1) \
          WHERE TRUE",
    );
    push_filter_pg(&mut q, &w.tests, "s.project", "c.test_id");
    q.push(" ORDER BY s.started_at DESC, s.run_id DESC, c.test_id, c.chunk, c.idx");
    type Row = (
        String,
        i64,
        String,
        Option<i64>,
        i64,
        i64,
        i64,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = q.build_query_as().fetch_all(&mut *tx).await?;
    let rows = rows.into_iter().map(
        |(run_id, started_at, test_id, sig, outcome, chunk, idx, message, traceback)| FailureRow {
            run_id,
            started_at,
            test_id,
            sig,
            outcome,
            chunk,
            idx,
            message,
            traceback,
        },
    );
    let grouped = Grouped::new(rows.collect(), limit);
    let considered = {
        let mut q = QueryBuilder::<Postgres>::new("");
        push_scope(&mut q, w, Runs::All);
        q.push(" SELECT COUNT(*) FROM scope");
        let (n,): (i64,) = q.build_query_as().fetch_one(&mut *tx).await?;
        n.max(0) as u64
    };
    let stored = signatures(&mut tx, &grouped.unsigned()).await?;
    let examples = example_messages(&mut tx, grouped.examples()).await?;
    tx.commit().await?;
    Ok(grouped.report(considered, stored, examples))
}

/// [`super::signatures`] on PostgreSQL.
async fn signatures(
    conn: &mut PgConnection,
    wanted: &[i64],
) -> Result<BTreeMap<i64, Signature>, sqlx::Error> {
    if wanted.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(i64, Option<String>, String, Option<String>)> = sqlx::query_as(
        "SELECT sig, exception, message, frame FROM signatures WHERE sig = ANY($1) ORDER BY sig",
    )
    .bind(wanted)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sig, exception, message, frame)| {
            (
                sig,
                Signature {
                    exception,
                    message,
                    frame,
                },
            )
        })
        .collect())
}

/// [`super::example_messages`] on PostgreSQL: one statement, the places as
/// parallel arrays.
async fn example_messages<'a>(
    conn: &mut PgConnection,
    at: impl Iterator<Item = &'a At>,
) -> Result<Vec<Option<String>>, sqlx::Error> {
    let (mut runs, mut outcomes, mut chunks, mut idxs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for a in at {
        runs.push(a.run_id.clone());
        outcomes.push(a.outcome);
        chunks.push(a.chunk);
        idxs.push(a.idx);
    }
    let mut out = vec![None; runs.len()];
    if runs.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT j.i - 1, (SELECT c.message FROM test_cases c WHERE c.run_id = j.run_id \
           AND c.outcome = j.outcome AND c.chunk = j.chunk AND c.idx = j.idx) \
         FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) \
           WITH ORDINALITY AS j(run_id, outcome, chunk, idx, i)",
    )
    .bind(&runs)
    .bind(&outcomes)
    .bind(&chunks)
    .bind(&idxs)
    .fetch_all(conn)
    .await?;
    for (i, message) in rows {
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
            *slot = message;
        }
    }
    Ok(out)
}
