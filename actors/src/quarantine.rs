//! Quarantined tests, as stored: the `quarantine` table (migration 0010),
//! the writer's two messages that change it ([`Quarantine`], [`Release`]),
//! and the read of a project's active list ([`active`]).
//!
//! The table is the truth; the master mirrors each project's active rows
//! into the agents' key-value bucket after every change (the API's
//! `mirror` module). This crate knows nothing of that bucket: the bound on
//! a project's list is the caller's rule, passed in as [`Quarantine::fits`]
//! and checked inside the writer's transaction, so two concurrent requests
//! can never together exceed it.
//!
//! Guarantees: one row per (project, test); quarantining a test again
//! replaces its row (and restarts its clean-run count), except that an
//! automatic entry never replaces a person's: that [`Quarantine`] is
//! refused and changes nothing; a [`Release`] with `only_auto` never
//! removes a person's entry. An entry whose `expires_at` has passed is never
//! returned by [`active`] nor counted by `fits`, and is deleted by the
//! project's next [`Quarantine`]. Every release notes the completion order
//! at that moment, so evidence from earlier runs never quarantines the test
//! again by itself ([`crate::auto_quarantine`]). A change that makes a test
//! quarantined (it was not active) or releases an active one stores its
//! webhook event in the same transaction ([`crate::webhooks`]), whoever sent
//! the message (a person through the API, or automatic quarantine).

use actix::prelude::*;
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;

use crate::model::{from_millis, to_millis};
use crate::version::Changed;
use crate::webhooks;
use crate::writer::{StoreError, Writer};

/// One quarantined test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Test id.
    pub test_id: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: DateTime<Utc>,
    /// When it ends by itself; `None`: until released.
    pub expires_at: Option<DateTime<Utc>>,
    /// Quarantined by the flaky detector, not a person.
    pub auto: bool,
}

/// Quarantine `entry.test_id` in `project` (replacing an earlier entry of
/// the same test). Replies `Ok(Err(why))`, storing nothing, when the
/// project's resulting active list breaks `fits`, or when `entry.auto` and
/// a person's entry for the test exists.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Result<(), String>, StoreError>")]
pub struct Quarantine {
    /// Project.
    pub project: String,
    /// The entry.
    pub entry: Entry,
    /// The bound on a project's active list (count, encoded size), checked
    /// on the list as it would be after this change.
    pub fits: fn(&str, &[Entry]) -> Result<(), String>,
    /// Expiry is judged at this time.
    pub now: DateTime<Utc>,
}

/// Release `test_id` in `project`; replies whether it was quarantined
/// (and is released now).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Release {
    /// Project.
    pub project: String,
    /// Test id.
    pub test_id: String,
    /// Release only an automatic entry (a person's stays, reply `false`).
    /// `false` is a person's release (`DELETE /quarantine`), which also holds
    /// automatic quarantine off the test for its period
    /// ([`crate::auto_quarantine`]).
    pub only_auto: bool,
}

/// `project`'s entries active at `now`, by test id.
pub async fn active(
    pool: &SqlitePool,
    project: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Entry>, sqlx::Error> {
    active_in(pool, project, now).await
}

async fn active_in<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    project: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Entry>, sqlx::Error> {
    let rows: Vec<(String, String, i64, Option<i64>, bool)> = sqlx::query_as(
        "SELECT test_id, reason, since, expires_at, auto FROM quarantine \
         WHERE project = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY test_id",
    )
    .bind(project)
    .bind(to_millis(now))
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(test_id, reason, since, expires_at, auto)| Entry {
            test_id,
            reason,
            since: from_millis(since),
            expires_at: expires_at.map(from_millis),
            auto,
        })
        .collect())
}

/// Every project with a row (active or not), for re-mirroring at start.
pub async fn projects(pool: &SqlitePool) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT project FROM quarantine")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(p,)| p).collect())
}

impl Handler<Quarantine> for Writer {
    type Result = AtomicResponse<Self, Result<Result<(), String>, StoreError>>;

    fn handle(&mut self, msg: Quarantine, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        let hooks = self.webhooks.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            let mut tx = pool.begin().await?;
            let now = to_millis(msg.now);
            let was_active: Option<(i64,)> = sqlx::query_as(
                "SELECT 1 FROM quarantine WHERE project = ? AND test_id = ? \
                 AND (expires_at IS NULL OR expires_at > ?)",
            )
            .bind(&msg.project)
            .bind(&msg.entry.test_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM quarantine WHERE project = ? AND expires_at IS NOT NULL \
                 AND expires_at <= ?",
            )
            .bind(&msg.project)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let e = &msg.entry;
            let stored = sqlx::query(
                "INSERT INTO quarantine (project, test_id, reason, since, expires_at, auto) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project, test_id) DO UPDATE SET \
                 reason = excluded.reason, since = excluded.since, \
                 expires_at = excluded.expires_at, auto = excluded.auto, clean_runs = 0 \
                 WHERE excluded.auto = 0 OR quarantine.auto = 1",
            )
            .bind(&msg.project)
            .bind(&e.test_id)
            .bind(&e.reason)
            .bind(to_millis(e.since))
            .bind(e.expires_at.map(to_millis))
            .bind(e.auto)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if stored == 0 {
                tx.rollback().await?;
                let why = format!(
                    "'{}' is quarantined by a person in project '{}'; the automatic entry \
                     does not replace it",
                    e.test_id, msg.project
                );
                return Ok((Err(why), Changed::default()));
            }
            let list = active_in(&mut *tx, &msg.project, msg.now).await?;
            if let Err(why) = (msg.fits)(&msg.project, &list) {
                tx.rollback().await?;
                return Ok((Err(why), Changed::default()));
            }
            if was_active.is_none() {
                webhooks::on_quarantined(&mut tx, &hooks, &msg.project, e, msg.now).await?;
            }
            tx.commit().await?;
            Ok((Ok(()), Changed::default()))
        })))
    }
}

impl Handler<Release> for Writer {
    type Result = AtomicResponse<Self, Result<bool, StoreError>>;

    fn handle(&mut self, msg: Release, _ctx: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        let hooks = self.webhooks.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            let mut tx = pool.begin().await?;
            let gone: Option<(String, Option<i64>)> = sqlx::query_as(
                "DELETE FROM quarantine WHERE project = ? AND test_id = ? AND (auto = 1 OR NOT ?) \
                 RETURNING reason, expires_at",
            )
            .bind(&msg.project)
            .bind(&msg.test_id)
            .bind(msg.only_auto)
            .fetch_optional(&mut *tx)
            .await?;
            let now = chrono::Utc::now();
            if let Some((reason, expires_at)) = &gone {
                crate::auto_quarantine::note_release(
                    &mut tx,
                    &msg.project,
                    &msg.test_id,
                    !msg.only_auto,
                    now,
                )
                .await?;
                if expires_at.is_none_or(|at| at > to_millis(now)) {
                    webhooks::on_released(&mut tx, &hooks, &msg.project, &msg.test_id, reason, now)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok((gone.is_some(), Changed::default()))
        })))
    }
}
