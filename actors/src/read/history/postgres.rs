//! [`super`] on PostgreSQL, and the reads of `store::sqlite::interning`
//! and `store::sqlite::run_tests` that slow tests use ([`aliases`],
//! [`alias_keys`], [`names`]) on PostgreSQL.
//!
//! Shape: the same window and the same per-run test summaries (the blobs
//! are the same bytes on both stores); [`SlowMerge`], [`judge_slow`] and
//! [`history_of`] decide for both. What SQLite computes in SQL is computed
//! here the same way: a test's summed duration in a run adds its cases in
//! SQLite's order (index `cases_by_run_test`: test key, outcome, chunk,
//! idx) with SQLite's compensated summation (`store::summary::SqliteSum`), and its
//! message is that of the first of its worst cases in that order (SQLite's
//! bare column beside `MIN`).
//!
//! Guarantees: every answer equals SQLite's on the same rows (the parity
//! test, `read::parity::analytics`, asks both).

use sqlx::{PgConnection, PgPool, Postgres};

use super::*;
use crate::owners::push_filter_pg;
use crate::read::pg_snapshot as snapshot;
use crate::store::summary::SqliteSum;

/// [`super::test_history`] on PostgreSQL.
pub(crate) async fn test_history(
    pool: &PgPool,
    test_id: &str,
    project: Option<&str>,
    branch: Option<&str>,
    limit: u32,
) -> Result<TestHistory, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(
        "WITH recent AS (SELECT run_id, started_at, project, branch, commit_sha, worker_id \
         FROM runs WHERE TRUE",
    );
    if let Some(p) = project {
        q.push(" AND project = ").push_bind(p.to_string());
    }
    if let Some(b) = branch {
        q.push(" AND branch = ").push_bind(b.to_string());
    }
    q.push(" ORDER BY started_at DESC, run_id DESC LIMIT ")
        .push_bind(i64::from(HISTORY_LOOKBACK));
    q.push(
        "), grouped AS (\
           SELECT r.run_id, r.started_at, r.project, r.branch, r.commit_sha, r.worker_id, \
                  MIN(c.outcome) AS outcome, \
                  array_agg(c.duration_secs ORDER BY c.test_key, c.outcome, c.chunk, c.idx) \
                    AS secs, \
                  SUM(c.retries)::bigint AS retries, SUM(c.flaky)::bigint AS flaky, \
                  (array_agg(c.message_key ORDER BY c.outcome, c.test_key, c.chunk, c.idx))[1] \
                    AS message_key \
           FROM recent r JOIN run_keys k ON k.run_id = r.run_id \
           JOIN cases c ON c.run_key = k.run_key \
           WHERE c.test_key IN (SELECT test_key FROM tests WHERE test_id = ",
    );
    q.push_bind(test_id.to_string());
    q.push(
        ") GROUP BY r.run_id, r.started_at, r.project, r.branch, r.commit_sha, r.worker_id \
           ORDER BY r.started_at DESC, r.run_id DESC LIMIT ",
    )
    .push_bind(i64::from(limit));
    q.push(
        ") SELECT g.run_id, g.started_at, g.project, g.branch, g.commit_sha, g.worker_id, \
                  g.outcome, g.secs, g.retries, g.flaky, \
                  (SELECT substr(body, 1, 500) FROM texts WHERE text_key = g.message_key) \
           FROM grouped g ORDER BY g.started_at DESC, g.run_id DESC",
    );
    type Row = (
        String,
        i64,
        String,
        Option<String>,
        Option<String>,
        String,
        i64,
        Vec<f64>,
        i64,
        i64,
        Option<String>,
    );
    let rows: Vec<Row> = q.build_query_as().fetch_all(pool).await?;
    let rows = rows
        .into_iter()
        .map(
            |(
                run_id,
                started_at,
                project,
                branch,
                commit,
                worker_id,
                outcome,
                secs,
                retries,
                flaky,
                message,
            )| {
                HistoryRow {
                    run_id,
                    started_at,
                    project,
                    branch,
                    commit,
                    worker_id,
                    outcome,
                    secs: {
                        let mut sum = SqliteSum::default();
                        secs.iter().for_each(|&x| sum.add(x));
                        sum.value().unwrap_or(0.0)
                    },
                    retries,
                    flaky,
                    message,
                }
            },
        )
        .collect();
    Ok(history_of(test_id, rows))
}

/// [`super::slow_tests`] on PostgreSQL.
pub(crate) async fn slow_tests(
    pool: &PgPool,
    w: &Window,
    rule: SlowRule,
    limit: usize,
) -> Result<SlowReport, sqlx::Error> {
    use futures::TryStreamExt;

    // One snapshot: the runs, their summaries and the names agree.
    let mut tx = snapshot(pool).await?;
    let allowed = allowed_tests(&mut tx, w).await?;
    let canonical = if aliases(&mut tx).await? {
        alias_keys(&mut tx).await?
    } else {
        HashMap::new()
    };
    let mut merge = SlowMerge::new(allowed, canonical, rule);
    {
        let mut q = QueryBuilder::<Postgres>::new("");
        push_scope(&mut q, w, Runs::Complete);
        q.push(
            " SELECT s.run_id, s.project, s.n, t.tests FROM scope s \
             LEFT JOIN run_keys k ON k.run_id = s.run_id \
             LEFT JOIN run_tests t ON t.run_key = k.run_key ORDER BY s.n",
        );
        let mut rows = q
            .build_query_as::<(String, String, i64, Option<Vec<u8>>)>()
            .fetch(&mut *tx);
        while let Some((run_id, project, n, blob)) = rows.try_next().await? {
            merge.add_run(&run_id, project, n, blob.as_deref())?;
        }
    }
    let (considered, judged) = merge.judge();
    let names = names(&mut tx, judged.to_name(limit).into_iter().copied()).await?;
    tx.commit().await?;
    slow_report(considered, judged, &names, limit)
}

/// [`super::allowed_tests`] on PostgreSQL.
async fn allowed_tests(
    conn: &mut PgConnection,
    w: &Window,
) -> Result<Option<HashMap<String, HashSet<i64>>>, sqlx::Error> {
    if w.tests == TestSet::All {
        return Ok(None);
    }
    let mut q = QueryBuilder::<Postgres>::new("");
    push_scope(&mut q, w, Runs::Complete);
    q.push(
        " SELECT p.project, t.test_key FROM (SELECT DISTINCT project FROM scope) p \
         CROSS JOIN tests t WHERE TRUE",
    );
    push_filter_pg(&mut q, &w.tests, "p.project", "t.test_id");
    let rows: Vec<(String, i64)> = q.build_query_as().fetch_all(conn).await?;
    let mut allowed: HashMap<String, HashSet<i64>> = HashMap::new();
    for (project, key) in rows {
        allowed.entry(project).or_default().insert(key);
    }
    Ok(Some(allowed))
}

/// `interning::aliases` on PostgreSQL: whether some test id has more
/// than one key (the flag the writer keeps in `rollup_state`).
pub(crate) async fn aliases(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let v: Option<(i64,)> =
        sqlx::query_as("SELECT value FROM rollup_state WHERE name = 'test_aliases'")
            .fetch_optional(conn)
            .await?;
    Ok(v.is_some_and(|(v,)| v != 0))
}

/// `interning::alias_keys` on PostgreSQL: every key of a test id with
/// several keys, to the smallest key of its id.
pub(crate) async fn alias_keys(conn: &mut PgConnection) -> Result<HashMap<i64, i64>, sqlx::Error> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT a.test_key, (SELECT MIN(b.test_key) FROM tests b WHERE b.test_id = a.test_id) \
         FROM tests a WHERE a.test_id IN \
           (SELECT test_id FROM tests GROUP BY test_id HAVING COUNT(*) > 1)",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// `run_tests::names` on PostgreSQL: the test ids of `keys`; an error if
/// one has none.
pub(crate) async fn names(
    conn: &mut PgConnection,
    keys: impl IntoIterator<Item = i64>,
) -> Result<HashMap<i64, String>, sqlx::Error> {
    let keys: Vec<i64> = keys.into_iter().collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT test_key, test_id FROM tests WHERE test_key = ANY($1)")
            .bind(&keys)
            .fetch_all(conn)
            .await?;
    let names: HashMap<i64, String> = rows.into_iter().collect();
    match keys.iter().find(|k| !names.contains_key(k)) {
        Some(k) => Err(sqlx::Error::Protocol(format!(
            "test key {k} of a stored summary has no test"
        ))),
        None => Ok(names),
    }
}
