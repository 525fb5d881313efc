//! Automatic quarantine: a test the flaky detector names is quarantined for
//! a while by itself, and released once it has run clean often enough.
//!
//! Rules (master options `--auto-quarantine-days N`, 0 = off, and
//! `--release-after-clean-runs M`):
//! - When a run completes, its project's tracked tests (those that ever
//!   failed or passed on retry, [`crate::read::flaky`]) with a verdict in the run
//!   and not quarantined now are judged by the flaky detector over the
//!   project's newest [`flaky::DEFAULT_RUNS`] runs, as `GET /flaky` judges
//!   them. Each one it names is quarantined with `auto = true`, a reason
//!   naming the evidence, and `expires_at = now + N days`, unless its newest
//!   evidence comes from a run completed before its last release (a release
//!   is final for the evidence it saw), a person released it within the last
//!   N days (`DELETE /quarantine`: the detector does not overrule a person
//!   on the next failure; migration 0015), or a person's entry exists (never
//!   replaced, see [`crate::quarantine`]).
//! - An automatic entry is released after M consecutive clean runs since it
//!   was quarantined (the counter, `quarantine.clean_runs`, migration 0013,
//!   is kept by the writer in the transaction that completes each run:
//!   `store::sqlite::clean_runs`), when the flaky verdict is cleared (`POST
//!   /flaky/clear` releases it), or when it expires (an expired entry stops
//!   counting at once, for the master and the agents alike).
//!
//! Shape: the counting is part of the writer's transaction; the judging is
//! a read done after the commit, per completed run ([`after_run`]: O(the
//! run's tracked tests), not a scan of history), and every change goes
//! through the writer's [`Quarantine`] and [`Release`] messages, so the
//! list's bound and everything hooked on those messages apply. This crate
//! knows nothing of the agents' copy of the list: [`after_run`] answers the
//! project whose list changed, and the caller (the master) mirrors it.
//! The rules are written once for both backends ([`decide`]); only its
//! few reads dispatch on the pool (PostgreSQL's SQL in `postgres`).
//!
//! Guarantees: a person's entry is never replaced nor released by this
//! module; each change is one writer message (its own transaction). A run
//! whose judging was lost (the master stopped between the commit and the
//! judging) is judged again in effect by the project's next run with the
//! same tests.

mod postgres;

use crate::read::ReadPool;
use actix::{Addr, MailboxError};
use chrono::{DateTime, TimeDelta, Utc};

use crate::model::to_millis;
use crate::owners::TestSet;
use crate::quarantine::Entry;
use crate::read::flaky::{self, FlakyTest, FlipRule, Window};
use crate::writer::{Quarantine, Release};
use crate::writer::{StoreError, Writer};

/// What automatic quarantine does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Days an automatic entry lasts (0: automatic quarantine is off).
    pub days: u32,
    /// Consecutive clean runs that release an automatic entry (at least 1).
    pub release_after_clean_runs: u32,
}

/// What to change in a project after one of its runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The project.
    pub project: String,
    /// Automatic entries to release (enough clean runs).
    pub release: Vec<String>,
    /// Entries to add.
    pub quarantine: Vec<Entry>,
}

/// Why automatic quarantine could not act on a run.
#[derive(Debug, thiserror::Error)]
pub enum AutoError {
    /// Reading the store failed.
    #[error("reading the store: {0}")]
    Read(#[from] sqlx::Error),
    /// The writer refused the change.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer is not running.
    #[error("the writer is unavailable: {0}")]
    Mailbox(#[from] MailboxError),
}

/// The reason stored with an automatic entry: the detector's evidence, a
/// few hundred bytes at most (reasons and counts, one run id of at most
/// 128 bytes), within the list's bound on reasons.
pub fn reason(f: &FlakyTest) -> String {
    let mut r = format!(
        "auto: flaky ({}): failed in {} of {} recent runs",
        f.reasons.join(", "),
        f.failed_runs,
        f.runs
    );
    if f.retried_runs > 0 {
        r.push_str(&format!(", passed on retry in {}", f.retried_runs));
    }
    if let Some(run) = f.evidence_runs.first() {
        let run: String = run.chars().take(128).collect();
        r.push_str(&format!("; newest evidence: run {run}"));
    }
    r
}

/// What to change in the project of run `run_id` (just completed) at
/// `now`; `None` when the run is unknown. The rules, once for both
/// backends; the reads they need dispatch on the pool (`run_of`,
/// `releasable`, `candidates`, `seq_of`).
pub async fn decide(
    pool: &ReadPool,
    run_id: &str,
    settings: Settings,
    now: DateTime<Utc>,
) -> Result<Option<Decision>, sqlx::Error> {
    let Some((project, Some(seq))) = run_of(pool, run_id).await? else {
        return Ok(None);
    };
    let release = releasable(pool, &project, settings.release_after_clean_runs.max(1)).await?;
    // The run's tracked tests not quarantined now and not held off by a
    // person's release within the automatic period, with their last release.
    let held_since = TimeDelta::try_days(i64::from(settings.days))
        .and_then(|d| now.checked_sub_signed(d))
        .map_or(i64::MIN, to_millis);
    let candidates = candidates(pool, seq, &project, to_millis(now), held_since).await?;
    let mut quarantine = Vec::new();
    if !candidates.is_empty() {
        let w = Window {
            project: Some(project.clone()),
            branch: None,
            since: None,
            runs: flaky::DEFAULT_RUNS,
            tests: TestSet::Ids(candidates.iter().map(|(t, _)| t.clone()).collect()),
        };
        let found = flaky::find_flaky(pool, &w, FlipRule::default(), candidates.len()).await?;
        let expires_at =
            TimeDelta::try_days(i64::from(settings.days)).and_then(|d| now.checked_add_signed(d));
        for f in found.tests {
            let released_after = candidates
                .iter()
                .find(|(t, _)| *t == f.test_id)
                .map_or(-1, |(_, s)| *s);
            let newest = match f.evidence_runs.first() {
                Some(run) => seq_of(pool, run).await?,
                None => None,
            };
            // Runs stored before completion order was kept (seq NULL) are
            // older than any release.
            let newest = newest.unwrap_or(-1);
            if newest > released_after {
                quarantine.push(Entry {
                    reason: reason(&f),
                    test_id: f.test_id,
                    since: now,
                    expires_at,
                    auto: true,
                });
            }
        }
    }
    Ok(Some(Decision {
        project,
        release,
        quarantine,
    }))
}

/// The project of run `run_id` and its completion order (`None` when the
/// run is unknown).
async fn run_of(
    pool: &ReadPool,
    run_id: &str,
) -> Result<Option<(String, Option<i64>)>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => {
            sqlx::query_as("SELECT project, seq FROM runs WHERE run_id = ?")
                .bind(run_id)
                .fetch_optional(p)
                .await
        }
        ReadPool::Postgres(p) => postgres::run_of(p, run_id).await,
    }
}

/// The completion order of run `run_id`: `None` when it is unknown or
/// was stored before completion order was kept.
async fn seq_of(pool: &ReadPool, run_id: &str) -> Result<Option<i64>, sqlx::Error> {
    Ok(run_of(pool, run_id).await?.and_then(|(_, seq)| seq))
}

/// The automatic entries of `project` with at least `clean_runs` clean
/// runs, by test id.
async fn releasable(
    pool: &ReadPool,
    project: &str,
    clean_runs: u32,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = match pool {
        ReadPool::Sqlite(p) => {
            sqlx::query_as(
                "SELECT test_id FROM quarantine WHERE project = ? AND auto = 1 \
                 AND clean_runs >= ? ORDER BY test_id",
            )
            .bind(project)
            .bind(i64::from(clean_runs))
            .fetch_all(p)
            .await?
        }
        ReadPool::Postgres(p) => postgres::releasable(p, project, clean_runs).await?,
    };
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

/// The tracked tests of `project` with a verdict in the run of completion
/// order `seq`, not quarantined at `now` (epoch ms) and not released by a
/// person after `held_since`; each with the completion order its last
/// release came after (-1: never released), by test id.
async fn candidates(
    pool: &ReadPool,
    seq: i64,
    project: &str,
    now: i64,
    held_since: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    match pool {
        ReadPool::Sqlite(p) => {
            sqlx::query_as(
                "SELECT t.test_id, COALESCE(r.after_seq, -1) FROM verdicts v \
                 JOIN tracked_tests t ON t.key = v.key \
                 LEFT JOIN quarantine_released r ON r.project = t.project AND r.test_id = t.test_id \
                 WHERE v.seq = ?1 AND t.project = ?2 AND NOT EXISTS (SELECT 1 FROM quarantine q \
                   WHERE q.project = t.project AND q.test_id = t.test_id \
                     AND (q.expires_at IS NULL OR q.expires_at > ?3)) \
                   AND NOT (COALESCE(r.by_person, 0) = 1 AND COALESCE(r.released_at, 0) > ?4) \
                 ORDER BY t.test_id",
            )
            .bind(seq)
            .bind(project)
            .bind(now)
            .bind(held_since)
            .fetch_all(p)
            .await
        }
        ReadPool::Postgres(p) => postgres::candidates(p, seq, project, now, held_since).await,
    }
}

/// Judges run `run_id` (just completed) and applies the decision through
/// the writer; `fits` is the bound on a project's list. Answers the
/// project when its quarantine list changed (the caller mirrors it).
pub async fn after_run(
    pool: &ReadPool,
    writer: &Addr<Writer>,
    run_id: &str,
    settings: Settings,
    fits: fn(&str, &[Entry]) -> Result<(), String>,
) -> Result<Option<String>, AutoError> {
    let now = Utc::now();
    let Some(d) = decide(pool, run_id, settings, now).await? else {
        return Ok(None);
    };
    let mut changed = false;
    for test_id in d.release {
        changed |= writer
            .send(Release {
                project: d.project.clone(),
                test_id,
                only_auto: true,
            })
            .await??;
    }
    for entry in d.quarantine {
        let test_id = entry.test_id.clone();
        match writer
            .send(Quarantine {
                project: d.project.clone(),
                entry,
                fits,
                now,
            })
            .await??
        {
            Ok(()) => {
                tracing::info!(project = d.project, test_id, "quarantined automatically");
                changed = true;
            }
            Err(why) => tracing::warn!(
                project = d.project,
                test_id,
                "not quarantined automatically: {why}"
            ),
        }
    }
    Ok(changed.then_some(d.project))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;
    use crate::store::rules::{RunVerdict, next_clean_runs};
    use crate::testing::{case, run, start, store, t0};
    use sqlx::SqlitePool;

    #[test]
    fn clean_runs_count_up_and_an_unclean_run_starts_over() {
        let mut n = 0;
        for _ in 0..3 {
            n = next_clean_runs(n, RunVerdict::Clean);
        }
        assert_eq!(n, 3);
        assert_eq!(next_clean_runs(n, RunVerdict::Unclean), 0);
        assert_eq!(next_clean_runs(-5, RunVerdict::Clean), 1, "a bad count");
        assert_eq!(next_clean_runs(i64::MAX, RunVerdict::Clean), i64::MAX);
    }

    fn fits(_: &str, _: &[Entry]) -> Result<(), String> {
        Ok(())
    }

    async fn clean_runs(pool: &SqlitePool, test_id: &str) -> Option<i64> {
        sqlx::query_as::<_, (i64,)>(
            "SELECT clean_runs FROM quarantine WHERE project = 'p' AND test_id = ?",
        )
        .bind(test_id)
        .fetch_optional(pool)
        .await
        .expect("read")
        .map(|(n,)| n)
    }

    /// The writer counts clean runs of automatic entries only, in the
    /// run's transaction: passes add, a failure or a retry resets, a run
    /// without the test or with it skipped changes nothing.
    #[tokio::test]
    async fn the_writer_counts_clean_runs_of_automatic_entries() {
        let dir = tempfile::tempdir().expect("tmp");
        let (actors, pool) = start(&dir.path().join("q.sqlite")).await;
        for (test_id, auto) in [("t::auto", true), ("t::manual", false)] {
            actors
                .writer
                .send(Quarantine {
                    project: "p".into(),
                    entry: Entry {
                        test_id: test_id.into(),
                        reason: "r".into(),
                        since: t0(),
                        expires_at: None,
                        auto,
                    },
                    fits,
                    now: t0(),
                })
                .await
                .expect("writer")
                .expect("stored")
                .expect("fits");
        }
        let runs = [
            (Some(Outcome::Passed), false, 1),
            (Some(Outcome::Passed), false, 2),
            (None, false, 2),
            (Some(Outcome::Skipped), false, 2),
            (Some(Outcome::Passed), true, 0),
            (Some(Outcome::Passed), false, 1),
            (Some(Outcome::Failed), false, 0),
            (Some(Outcome::Passed), false, 1),
        ];
        for (i, (outcome, retried, want)) in runs.into_iter().enumerate() {
            let mut cases = vec![case("t::other", Outcome::Passed, None)];
            for t in ["t::auto", "t::manual"] {
                if let Some(o) = outcome {
                    let mut c = case(t, o, (o == Outcome::Failed).then_some("boom"));
                    c.flaky = retried;
                    c.retries = u32::from(retried);
                    cases.push(c);
                }
            }
            let at = t0() + TimeDelta::minutes(i as i64);
            store(&actors, vec![run(&format!("r{i}"), "p", "w", at, cases)]).await;
            assert_eq!(
                clean_runs(&pool, "t::auto").await,
                Some(want),
                "after run {i}"
            );
            assert_eq!(
                clean_runs(&pool, "t::manual").await,
                Some(0),
                "manual: not counted"
            );
        }
    }

    /// A test that passed on retry is quarantined automatically; a person's
    /// entry is neither replaced nor released; enough clean runs release
    /// the automatic one, and the old evidence does not bring it back.
    #[tokio::test]
    async fn flaky_tests_are_quarantined_and_released_by_clean_runs() {
        let dir = tempfile::tempdir().expect("tmp");
        let (actors, pool) = start(&dir.path().join("q.sqlite")).await;
        let settings = Settings {
            days: 7,
            release_after_clean_runs: 2,
        };
        let retried = |t: &str| {
            let mut c = case(t, Outcome::Passed, None);
            c.flaky = true;
            c.retries = 1;
            c
        };
        let mut i = 0;
        let mut next_run = |cases: Vec<crate::model::CaseRecord>| {
            i += 1;
            (
                format!("r{i}"),
                run(
                    &format!("r{i}"),
                    "p",
                    "w",
                    t0() + TimeDelta::minutes(i),
                    cases,
                ),
            )
        };
        // A person quarantines t::manual first.
        actors
            .writer
            .send(Quarantine {
                project: "p".into(),
                entry: Entry {
                    test_id: "t::manual".into(),
                    reason: "by hand".into(),
                    since: t0(),
                    expires_at: None,
                    auto: false,
                },
                fits,
                now: Utc::now(),
            })
            .await
            .expect("writer")
            .expect("stored")
            .expect("fits");
        let (id, items) = next_run(vec![retried("t::flaky"), retried("t::manual")]);
        store(&actors, vec![items]).await;
        let changed = after_run(&pool.clone().into(), &actors.writer, &id, settings, fits)
            .await
            .expect("judged");
        assert_eq!(changed.as_deref(), Some("p"));
        let list = crate::read::quarantine::active(&pool.clone().into(), "p", Utc::now())
            .await
            .expect("list");
        let flaky = list.iter().find(|e| e.test_id == "t::flaky").expect("auto");
        assert!(
            flaky.auto && flaky.reason.contains("passed_on_retry"),
            "{flaky:?}"
        );
        let days = flaky.expires_at.expect("expires") - flaky.since;
        assert_eq!(days.num_days(), 7);
        let manual = list
            .iter()
            .find(|e| e.test_id == "t::manual")
            .expect("kept");
        assert!(!manual.auto && manual.reason == "by hand", "{manual:?}");

        for n in 1..=2 {
            let passing = vec![
                case("t::flaky", Outcome::Passed, None),
                case("t::manual", Outcome::Passed, None),
            ];
            let (id, items) = next_run(passing);
            store(&actors, vec![items]).await;
            let changed = after_run(&pool.clone().into(), &actors.writer, &id, settings, fits)
                .await
                .expect("judged");
            let list = crate::read::quarantine::active(&pool.clone().into(), "p", Utc::now())
                .await
                .expect("list");
            let still = list.iter().any(|e| e.test_id == "t::flaky");
            assert_eq!(still, n < 2, "after {n} clean runs");
            assert_eq!(changed.is_some(), n == 2);
            assert!(
                list.iter().any(|e| e.test_id == "t::manual"),
                "manual stays"
            );
        }
        // Another clean run: the old evidence still makes it flaky in the
        // window, but it was seen before the release.
        let (id, items) = next_run(vec![case("t::flaky", Outcome::Passed, None)]);
        store(&actors, vec![items]).await;
        assert_eq!(
            after_run(&pool.clone().into(), &actors.writer, &id, settings, fits)
                .await
                .expect("judged"),
            None
        );
        // New evidence after the release quarantines it again.
        let (id, items) = next_run(vec![retried("t::flaky")]);
        store(&actors, vec![items]).await;
        let changed = after_run(&pool.clone().into(), &actors.writer, &id, settings, fits)
            .await
            .expect("judged");
        assert_eq!(changed.as_deref(), Some("p"));
    }
}
