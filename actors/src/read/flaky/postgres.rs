//! [`super`] on PostgreSQL: the same window ([`push_scope`], the same SQL),
//! the same verdicts read from the kept rows and, for runs they do not
//! cover, from the cases, as plain typed rows (no JSON shipping: a
//! PostgreSQL row costs no thread hand-off); the judging, ordering and
//! cutting are [`rank`]'s, shared with SQLite.
//!
//! Also [`snapshot`], the one consistent view the other analytics reads
//! on PostgreSQL take for a read of several statements.
//!
//! Guarantees: every answer equals SQLite's on the same rows (the parity
//! test, `read::parity::analytics`, asks both).

use sqlx::{PgPool, Postgres};

use super::*;
use crate::owners::push_filter_pg;
use crate::read::pg_snapshot as snapshot;

/// [`super::find_flaky`] on PostgreSQL.
pub(crate) async fn find_flaky(
    pool: &PgPool,
    w: &Window,
    rule: FlipRule,
    limit: usize,
) -> Result<FlakyReport, sqlx::Error> {
    let mut tx = snapshot(pool).await?;
    let mut q = QueryBuilder::<Postgres>::new("");
    push_scope(&mut q, w, Runs::Evidence);
    q.push(" SELECT n, run_id, branch, commit_sha, started_at FROM scope ORDER BY n");
    let runs: Vec<ScopeRun> = q
        .build_query_as::<(i64, String, Option<String>, Option<String>, i64)>()
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(n, run_id, branch, commit_sha, started_at)| ScopeRun {
            n,
            run_id,
            branch,
            commit_sha,
            started_at,
        })
        .collect();

    // SQLite's query with the kept rows on: the candidates (failed or
    // retried in the window), then every verdict of the window's tracked
    // tests from the kept rows, and from the cases for the runs those do
    // not cover (stored before the test was tracked, or without a seq).
    let mut q = QueryBuilder::<Postgres>::new("");
    push_scope(&mut q, w, Runs::Evidence);
    q.push(
        ", cand0 AS (\
           SELECT DISTINCT s.project, t.test_id FROM scope s \
             JOIN verdicts v ON v.seq = s.seq JOIN tracked_tests t ON t.key = v.key \
             WHERE (v.failed <> 0 OR v.retried <> 0) \
           UNION \
           SELECT s.project, t.test_id FROM scope s \
             JOIN run_keys k ON k.run_id = s.run_id JOIN cases c ON c.run_key = k.run_key \
             JOIN tests t ON t.test_key = c.test_key \
             WHERE s.seq IS NULL AND c.outcome IN (0, 1) \
           UNION \
           SELECT s.project, t.test_id FROM scope s \
             JOIN run_keys k ON k.run_id = s.run_id JOIN cases c ON c.run_key = k.run_key \
             JOIN tests t ON t.test_key = c.test_key \
             WHERE s.seq IS NULL AND c.flaky = 1), \
         cand AS (SELECT project, test_id FROM cand0 WHERE TRUE",
    );
    push_filter_pg(&mut q, &w.tests, "project", "test_id");
    q.push(
        "), \
         ck AS (SELECT k.project, k.test_id, t.key, t.since_seq, f.cleared_at FROM cand k \
                LEFT JOIN tracked_tests t ON t.project = k.project AND t.test_id = k.test_id \
                LEFT JOIN flaky_cleared f ON f.project = k.project AND f.test_id = k.test_id), \
         seen AS (\
           SELECT s.project, t.test_id, s.n, v.failed = 1 AS failed, v.retried = 1 AS retried \
           FROM scope s JOIN verdicts v ON v.seq = s.seq JOIN tracked_tests t ON t.key = v.key \
           LEFT JOIN flaky_cleared f ON f.project = t.project AND f.test_id = t.test_id \
           WHERE t.project = s.project \
             AND s.seq >= t.since_seq AND s.started_at > COALESCE(f.cleared_at, -1)",
    );
    push_filter_pg(&mut q, &w.tests, "t.project", "t.test_id");
    q.push(
        " \
           UNION ALL \
           SELECT s.project, ck.test_id, s.n, MIN(c.outcome) <= 1, SUM(c.flaky) > 0 \
           FROM ck \
           JOIN tests t ON t.test_id = ck.test_id \
           JOIN scope s ON s.project = ck.project \
           JOIN run_keys k ON k.run_id = s.run_id \
           JOIN cases c ON c.run_key = k.run_key AND c.test_key = t.test_key \
           WHERE c.outcome IN (0, 1, 3) AND s.started_at > COALESCE(ck.cleared_at, -1) \
             AND (ck.since_seq IS NULL OR s.seq IS NULL OR s.seq < ck.since_seq) \
           GROUP BY s.project, ck.test_id, s.n) \
         SELECT project, test_id, n, failed, retried FROM seen ORDER BY project, test_id, n",
    );
    let rows: Vec<(String, String, i64, bool, bool)> =
        q.build_query_as().fetch_all(&mut *tx).await?;
    let mut verdicts: Vec<((String, String), Vec<Verdict>)> = Vec::new();
    for (project, test_id, n, failed, retried) in rows {
        let v = Verdict { n, failed, retried };
        match verdicts.last_mut() {
            Some((t, seen)) if t.0 == project && t.1 == test_id => seen.push(v),
            _ => verdicts.push(((project, test_id), vec![v])),
        }
    }
    let (total, found) = rank(&runs, verdicts, rule, limit)?;
    let mut listed = Vec::with_capacity(found.len());
    for (mut f, obs) in found {
        f.last_message = last_message(&mut tx, &f.test_id, &obs).await?;
        listed.push(f);
    }

    let (considered, outages, failures_only) = window_counts(&mut tx, w).await?;
    tx.commit().await?;
    Ok(FlakyReport {
        runs_considered: considered,
        outages_excluded: outages,
        failures_only_excluded: failures_only,
        total,
        tests: listed,
    })
}

/// [`super::last_message`] on PostgreSQL.
async fn last_message(
    conn: &mut sqlx::PgConnection,
    test_id: &str,
    obs: &[Observation],
) -> Result<Option<String>, sqlx::Error> {
    for o in newest_failures(obs) {
        let m: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT (SELECT substr(body, 1, 300) FROM texts WHERE text_key = c.message_key) \
             FROM run_keys k JOIN cases c ON c.run_key = k.run_key \
             WHERE k.run_id = $1 \
               AND c.test_key IN (SELECT test_key FROM tests WHERE test_id = $2) \
               AND c.outcome IN (0, 1) \
             ORDER BY c.outcome, c.chunk, c.idx, c.test_key LIMIT 1",
        )
        .bind(&o.run_id)
        .bind(test_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((Some(m),)) = m {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// [`super::window_counts`] on PostgreSQL (the same SQL).
async fn window_counts(
    conn: &mut sqlx::PgConnection,
    w: &Window,
) -> Result<(u64, u64, u64), sqlx::Error> {
    let (n, oldest): (i64, i64) = scope_count_sql::<Postgres>(w)
        .build_query_as()
        .fetch_one(&mut *conn)
        .await?;
    let mut left_out = [0u64; 2];
    for (slot, mut q) in left_out_sql::<Postgres>(w, n, oldest)
        .into_iter()
        .enumerate()
    {
        let (k,): (i64,) = q.build_query_as().fetch_one(&mut *conn).await?;
        left_out[slot] = k.max(0) as u64;
    }
    Ok((n.max(0) as u64, left_out[0], left_out[1]))
}
