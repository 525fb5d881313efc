//! The quarantine list's writes on PostgreSQL (see [`crate::quarantine`]
//! for the guarantees), as `store::sqlite::quarantine` writes it: one
//! transaction each, the webhook event of a change in the same one, the
//! same refusal text. Each holds the write gate exclusively (see
//! [`super`]): no completion counts clean runs of an entry while it
//! changes, and two masters never both pass `fits` with the same list.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgPool};

use super::{Gate, pg_text};
use crate::model::{from_millis, to_millis};
use crate::quarantine::Entry;
use crate::webhooks::Routes;

/// [`crate::store::Store::quarantine`].
pub(super) async fn quarantine(
    pool: &PgPool,
    hooks: &Routes,
    project: &str,
    entry: &Entry,
    fits: fn(&str, &[Entry]) -> Result<(), String>,
    now: DateTime<Utc>,
) -> Result<Result<(), String>, sqlx::Error> {
    let mut tx = super::begin(pool).await?;
    super::gate(&mut tx, Gate::Exclusive).await?;
    let project = pg_text(project);
    let test_id = pg_text(&entry.test_id);
    let now_ms = to_millis(now);
    let was_active: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM quarantine WHERE project = $1 AND test_id = $2 \
         AND (expires_at IS NULL OR expires_at > $3)",
    )
    .bind(&project)
    .bind(&test_id)
    .bind(now_ms)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM quarantine WHERE project = $1 AND expires_at IS NOT NULL \
         AND expires_at <= $2",
    )
    .bind(&project)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    let e = entry;
    let stored = sqlx::query(
        "INSERT INTO quarantine (project, test_id, reason, since, expires_at, auto) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project, test_id) DO UPDATE SET \
         reason = excluded.reason, since = excluded.since, \
         expires_at = excluded.expires_at, auto = excluded.auto, clean_runs = 0 \
         WHERE excluded.auto = 0 OR quarantine.auto = 1",
    )
    .bind(&project)
    .bind(&test_id)
    .bind(pg_text(&e.reason))
    .bind(to_millis(e.since))
    .bind(e.expires_at.map(to_millis))
    .bind(i64::from(e.auto))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if stored == 0 {
        tx.rollback().await?;
        return Ok(Err(crate::store::kept_persons_entry(&project, &test_id)));
    }
    let list = active_in(&mut tx, &project, now).await?;
    if let Err(why) = fits(&project, &list) {
        tx.rollback().await?;
        return Ok(Err(why));
    }
    if was_active.is_none() {
        let stored = Entry {
            test_id: test_id.to_string(),
            reason: pg_text(&e.reason).into_owned(),
            ..e.clone()
        };
        super::outbox::on_quarantined(&mut tx, hooks, &project, &stored, now).await?;
    }
    tx.commit().await?;
    Ok(Ok(()))
}

/// [`crate::store::Store::release`].
pub(super) async fn release(
    pool: &PgPool,
    hooks: &Routes,
    project: &str,
    test_id: &str,
    only_auto: bool,
) -> Result<bool, sqlx::Error> {
    let mut tx = super::begin(pool).await?;
    super::gate(&mut tx, Gate::Exclusive).await?;
    let project = pg_text(project);
    let test_id = pg_text(test_id);
    let gone: Option<(String, Option<i64>)> = sqlx::query_as(
        "DELETE FROM quarantine WHERE project = $1 AND test_id = $2 AND (auto = 1 OR NOT $3) \
         RETURNING reason, expires_at",
    )
    .bind(&project)
    .bind(&test_id)
    .bind(only_auto)
    .fetch_optional(&mut *tx)
    .await?;
    let now = Utc::now();
    if let Some((reason, expires_at)) = &gone {
        super::clean_runs::note_release(&mut tx, &project, &test_id, !only_auto, now).await?;
        if expires_at.is_none_or(|at| at > to_millis(now)) {
            super::outbox::on_released(&mut tx, hooks, &project, &test_id, reason, now).await?;
        }
    }
    tx.commit().await?;
    Ok(gone.is_some())
}

/// `project`'s entries active at `now`, by test id.
async fn active_in(
    conn: &mut PgConnection,
    project: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Entry>, sqlx::Error> {
    let rows: Vec<(String, String, i64, Option<i64>, i64)> = sqlx::query_as(
        "SELECT test_id, reason, since, expires_at, auto FROM quarantine \
         WHERE project = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY test_id",
    )
    .bind(project)
    .bind(to_millis(now))
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(test_id, reason, since, expires_at, auto)| Entry {
            test_id,
            reason,
            since: from_millis(since),
            expires_at: expires_at.map(from_millis),
            auto: auto != 0,
        })
        .collect())
}
