//! [`super`] on PostgreSQL: the same questions in PostgreSQL's SQL, read as
//! typed rows (no JSON hand-off: that is a cure for SQLite's thread per
//! connection) into the same row types, turned into answers by the same
//! Rust ([`RunRecord::from`], [`case_page`], [`rejection`],
//! [`crate::read::rollups::stat`]).
//!
//! Orders are total and the same as SQLite's (text columns are
//! `COLLATE "C"`: byte order, as SQLite compares), so ties come back the
//! same on both stores.

use sqlx::{PgPool, Postgres, QueryBuilder};

use super::*;

/// `SELECT <run fields> FROM runs`: [`RUN_FIELDS`], `exit_code` as the
/// INT4 [`RunRow`] holds (stored as BIGINT).
fn select_runs() -> QueryBuilder<Postgres> {
    let fields: Vec<&str> = RUN_FIELDS
        .iter()
        .map(|f| match *f {
            "exit_code" => "exit_code::int4 AS exit_code",
            f => f,
        })
        .collect();
    QueryBuilder::new(format!("SELECT {} FROM runs", fields.join(", ")))
}

async fn fetch_runs(
    mut qb: QueryBuilder<Postgres>,
    pool: &PgPool,
) -> Result<Vec<RunRecord>, sqlx::Error> {
    let rows: Vec<RunRow> = qb.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(RunRecord::from).collect())
}

/// [`super::list_runs`] on PostgreSQL.
pub(crate) async fn list_runs(pool: &PgPool, f: &RunFilter) -> Result<Vec<RunRecord>, sqlx::Error> {
    let mut qb = select_runs();
    qb.push(" WHERE 1 = 1");
    for (column, value) in [
        ("project", &f.project),
        ("branch", &f.branch),
        ("worker_id", &f.worker_id),
    ] {
        if let Some(v) = value {
            qb.push(format_args!(" AND {column} = "))
                .push_bind(v.clone());
        }
    }
    if let Some(s) = f.status {
        qb.push(" AND status = ").push_bind(s.as_str());
    }
    if let Some(t) = f.since {
        qb.push(" AND started_at >= ").push_bind(to_millis(t));
    }
    if let Some(t) = f.until {
        qb.push(" AND started_at < ").push_bind(to_millis(t));
    }
    if let Some(c) = &f.after {
        qb.push(" AND (started_at, run_id) < (")
            .push_bind(to_millis(c.started_at))
            .push(", ")
            .push_bind(c.run_id.clone())
            .push(")");
    }
    qb.push(" ORDER BY started_at DESC, run_id DESC LIMIT ")
        .push_bind(i64::from(f.limit));
    fetch_runs(qb, pool).await
}

/// [`super::get_run`] on PostgreSQL.
pub(crate) async fn get_run(pool: &PgPool, run_id: &str) -> Result<Option<RunRecord>, sqlx::Error> {
    let mut qb = select_runs();
    qb.push(" WHERE run_id = ").push_bind(run_id.to_string());
    Ok(fetch_runs(qb, pool).await?.pop())
}

/// [`super::run_cases`] on PostgreSQL.
pub(crate) async fn run_cases(
    pool: &PgPool,
    run_id: &str,
    outcomes: &[Outcome],
    order: CaseOrder,
    after: Option<CasePosition>,
    limit: u32,
) -> Result<CasePage, sqlx::Error> {
    let order_by = match order {
        CaseOrder::FailuresFirst => "outcome, chunk, idx",
        CaseOrder::Slowest => "duration_secs DESC, chunk, idx",
    };
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {} FROM test_cases WHERE run_id = ",
        CASE_FIELDS.join(", ")
    ));
    qb.push_bind(run_id.to_string());
    if !outcomes.is_empty() {
        let codes: Vec<i64> = outcomes.iter().map(|o| o.code()).collect();
        qb.push(" AND outcome = ANY(").push_bind(codes).push(")");
    }
    if let Some(p) = after {
        match order {
            CaseOrder::FailuresFirst => qb
                .push(" AND (outcome, chunk, idx) > (")
                .push_bind(p.outcome)
                .push(", ")
                .push_bind(p.chunk)
                .push(", ")
                .push_bind(p.idx)
                .push(")"),
            CaseOrder::Slowest => qb
                .push(" AND (duration_secs < ")
                .push_bind(p.duration_secs)
                .push(" OR (duration_secs = ")
                .push_bind(p.duration_secs)
                .push(" AND (chunk, idx) > (")
                .push_bind(p.chunk)
                .push(", ")
                .push_bind(p.idx)
                .push(")))"),
        };
    }
    // One row more than asked tells whether another page follows.
    qb.push(" ORDER BY ")
        .push(order_by)
        .push(" LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows: Vec<CaseRow> = qb.build_query_as().fetch_all(pool).await?;
    case_page(rows, limit)
}

/// [`super::list_rejected`] on PostgreSQL.
pub(crate) async fn list_rejected(
    pool: &PgPool,
    limit: u32,
) -> Result<Vec<Rejection>, sqlx::Error> {
    let rows: Vec<RejectedRow> = sqlx::query_as(
        "SELECT received_at, subject, msg_id, run_id, reason, excerpt, payload FROM rejected \
         ORDER BY received_at DESC, id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(rejection).collect())
}

/// [`super::stored_digest`] on PostgreSQL.
pub(crate) async fn stored_digest(
    pool: &PgPool,
    run_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    // The complete run first, as SQLite's UNION ALL reads it.
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT digest FROM (SELECT 0 AS o, digest FROM runs WHERE run_id = $1 \
         UNION ALL SELECT 1, digest FROM pending_runs WHERE run_id = $1) d ORDER BY o LIMIT 1",
    )
    .bind(run_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(d,)| d))
}

/// [`super::failure_stats_where`] on PostgreSQL.
pub(crate) async fn failure_stats_where(
    pool: &PgPool,
    f: &FailureFilter,
    limit: u32,
) -> Result<Vec<crate::read::rollups::FailureStat>, sqlx::Error> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
        "WITH f AS (SELECT r.project, c.test_id, r.run_id, r.started_at, c.message, \
         ROW_NUMBER() OVER (PARTITION BY r.project, c.test_id \
         ORDER BY r.started_at DESC, r.run_id DESC, c.outcome, c.chunk, c.idx) AS rn \
         FROM runs r JOIN test_cases c ON c.run_id = r.run_id AND c.outcome IN (0, 1) WHERE 1 = 1",
    );
    if let Some(p) = &f.project {
        qb.push(" AND r.project = ").push_bind(p.clone());
    }
    if let Some(b) = &f.branch {
        qb.push(" AND r.branch = ").push_bind(b.clone());
    }
    if let Some(w) = &f.worker_id {
        qb.push(" AND r.worker_id = ").push_bind(w.clone());
    }
    if let Some(s) = f.since {
        qb.push(" AND r.started_at >= ").push_bind(to_millis(s));
    }
    crate::owners::push_filter_pg(&mut qb, &f.tests, "r.project", "c.test_id");
    qb.push(
        ") SELECT project, test_id, COUNT(DISTINCT run_id) AS n, MAX(started_at) AS last_at, \
         MAX(CASE WHEN rn = 1 THEN message END), MAX(CASE WHEN rn = 1 THEN run_id END) \
         FROM f GROUP BY project, test_id ORDER BY n DESC, last_at DESC, test_id, project LIMIT ",
    )
    .push_bind(i64::from(limit));
    let rows: Vec<crate::read::rollups::StatRow> = qb.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(crate::read::rollups::stat).collect())
}

/// [`super::ping`] on PostgreSQL.
pub(crate) async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
