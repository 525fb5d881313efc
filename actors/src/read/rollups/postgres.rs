//! [`super`] on PostgreSQL: the same reads of the same rollup tables, as
//! typed rows into the same row types ([`TrendRow`], [`StoredWorker`],
//! [`StatRow`]); the answers are made by the same Rust.
//!
//! Differences from SQLite's SQL, none in the answers: `SUM` of BIGINT is
//! NUMERIC here (cast back), and `GROUP BY` names every column it keeps
//! (a UNIQUE constraint is no functional dependency to PostgreSQL).

use sqlx::{PgPool, Postgres, QueryBuilder};

use super::*;
use crate::owners::push_filter_pg;

/// [`super::trend`] on PostgreSQL.
pub(crate) async fn trend(
    pool: &PgPool,
    project: Option<&str>,
    branch: Option<&str>,
    limit: u32,
) -> Result<Vec<TrendPoint>, sqlx::Error> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {} FROM runs WHERE 1 = 1",
        TREND_FIELDS.join(", ")
    ));
    if let Some(p) = project {
        qb.push(" AND project = ").push_bind(p.to_string());
    }
    if let Some(b) = branch {
        qb.push(" AND branch = ").push_bind(b.to_string());
    }
    qb.push(" ORDER BY started_at DESC, run_id DESC LIMIT ")
        .push_bind(i64::from(limit));
    let mut rows: Vec<TrendRow> = qb.build_query_as().fetch_all(pool).await?;
    // The newest `limit`, served oldest first.
    rows.reverse();
    Ok(rows.into_iter().map(TrendPoint::from).collect())
}

/// [`super::stored_workers`] on PostgreSQL.
pub(crate) async fn stored_workers(
    pool: &PgPool,
    limit: usize,
) -> Result<Vec<StoredWorker>, sqlx::Error> {
    let sql = format!(
        "SELECT {} FROM worker_stats ORDER BY last_seen DESC, worker_id LIMIT $1",
        WORKER_FIELDS.join(", ")
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
}

/// [`super::failure_stats`] on PostgreSQL.
pub(crate) async fn failure_stats(
    pool: &PgPool,
    project: Option<&str>,
    since: Option<DateTime<Utc>>,
    tests: &TestSet,
    limit: u32,
) -> Result<Vec<FailureStat>, sqlx::Error> {
    let mut qb: QueryBuilder<Postgres>;
    match since {
        None => {
            qb = QueryBuilder::new(
                "SELECT project, test_id, fail_count, last_failed_at, last_message, last_run_id \
                 FROM test_failures WHERE 1 = 1",
            );
            if let Some(p) = project {
                qb.push(" AND project = ").push_bind(p.to_string());
            }
            push_filter_pg(&mut qb, tests, "project", "test_id");
            qb.push(" ORDER BY fail_count DESC, last_failed_at DESC, test_id, project LIMIT ");
        }
        Some(since) => {
            // As on SQLite: whole days from the day buckets, the partial
            // first day from its runs; last_* from test_failures.
            let since = to_millis(since);
            let first_day = day_of(since);
            qb = QueryBuilder::new("WITH w (project, test_id, n) AS (");
            qb.push(
                "SELECT d.project, d.test_id, d.runs FROM test_failure_days d WHERE d.project ",
            );
            match project {
                Some(p) => qb.push("= ").push_bind(p.to_string()),
                None => qb.push("IN (SELECT project FROM projects)"),
            };
            qb.push(" AND d.day > ").push_bind(first_day);
            qb.push(
                " UNION ALL SELECT r.project, c.test_id, COUNT(DISTINCT r.run_id) FROM runs r \
                 JOIN test_cases c ON c.run_id = r.run_id AND c.outcome IN (0, 1) \
                 WHERE r.started_at >= ",
            )
            .push_bind(since)
            .push(" AND r.started_at < ")
            .push_bind((first_day + 1).saturating_mul(DAY_MS));
            if let Some(p) = project {
                qb.push(" AND r.project = ").push_bind(p.to_string());
            }
            qb.push(
                " GROUP BY r.project, c.test_id) \
                 SELECT f.project, f.test_id, SUM(w.n)::bigint AS n, f.last_failed_at, \
                        f.last_message, f.last_run_id \
                 FROM w JOIN test_failures f ON f.project = w.project AND f.test_id = w.test_id \
                 WHERE 1 = 1",
            );
            push_filter_pg(&mut qb, tests, "f.project", "f.test_id");
            qb.push(
                " GROUP BY f.project, f.test_id, f.last_failed_at, f.last_message, f.last_run_id \
                 ORDER BY n DESC, f.last_failed_at DESC, f.test_id, f.project LIMIT ",
            );
        }
    }
    qb.push_bind(i64::from(limit));
    let rows: Vec<StatRow> = qb.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(stat).collect())
}
