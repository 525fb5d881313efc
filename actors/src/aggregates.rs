//! The aggregates actor: trend per project/branch, worker status and failure
//! statistics, kept in memory so the API answers them without scanning.
//!
//! It is fed by the writer ([`RunCompleted`], after each commit) and by ingest
//! (heartbeats), and it is rebuilt from SQLite at start ([`Aggregates::load`]),
//! so it never holds anything the database does not (heartbeats aside, which
//! only matter while fresh).
//!
//! Bounds: trend series keep at most [`MAX_TREND_POINTS`] points each;
//! at most [`AggregatesConfig::max_workers`] workers are tracked (when a new
//! one arrives beyond that, the one seen longest ago is forgotten).
//! Times from workers are never trusted to be in the past: a worker's
//! `last_seen` is at most the master's clock at arrival, so a clock set to
//! the future cannot pin a worker as running.
//!
//! A panic in a handler is caught ([`crate::supervise`]): the request gets
//! an [`ActorFault`], and the state, which the panic may have left half
//! updated, is rebuilt from the database by the writer.
//!
//! Runs may arrive out of time order (a master catching up after an outage,
//! an agent flushing its spool hours later): every series is kept sorted by
//! the run's start time, not by arrival.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::SqlitePool;

use crate::model::{Counts, RunRecord, from_millis};
use crate::supervise::{ActorFault, Faults, guard};
use crate::writer::{RebuildAggregates, RunCompleted};

/// Most points kept per trend series (older points drop off).
const MAX_TREND_POINTS: usize = 10_000;

/// One point of a pass-rate trend: one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendPoint {
    /// The run.
    pub run_id: String,
    /// When it started (the original system called this `timestamp`).
    pub timestamp: DateTime<Utc>,
    /// Project.
    pub project: String,
    /// Branch.
    pub branch: Option<String>,
    /// Commit.
    pub commit: Option<String>,
    /// Worker.
    pub worker_id: String,
    /// Run status.
    pub status: String,
    /// Passed.
    pub passed: u64,
    /// Failed.
    pub failed: u64,
    /// Errored.
    pub error: u64,
    /// Skipped.
    pub skipped: u64,
    /// All cases.
    pub total: u64,
    /// Pass rate in percent.
    pub pass_rate: Option<f64>,
    /// Wall time, seconds.
    pub duration_secs: f64,
}

/// Whether a worker is running tests now, recently finished, or gone quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Sent a start or tick heartbeat recently.
    Running,
    /// Finished a run within the offline window.
    Idle,
    /// Not heard from within the offline window, or stopped heartbeating
    /// in the middle of a run.
    Offline,
}

/// What the API shows per worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    /// Worker id.
    pub worker_id: String,
    /// Running, idle or offline.
    pub status: WorkerState,
    /// Last heartbeat or run end.
    pub last_seen: DateTime<Utc>,
    /// The run in progress, when running.
    pub current_run: Option<String>,
    /// Host name.
    pub host: Option<String>,
    /// Project of its last run.
    pub project: Option<String>,
    /// Completed runs stored.
    pub run_count: u64,
    /// Mean pass rate over its runs, percent.
    pub avg_pass_rate: Option<f64>,
    /// Its latest stored run.
    pub last_run_id: Option<String>,
    /// Status of that run.
    pub last_run_status: Option<String>,
}

/// The most frequent failures of one test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureStat {
    /// Test id (the original system called this `nodeid`).
    pub test_id: String,
    /// Project.
    pub project: String,
    /// Runs in the window in which the test failed or errored.
    pub fail_count: u64,
    /// Most recent failure.
    pub last_failed_at: DateTime<Utc>,
    /// Its message.
    pub last_message: Option<String>,
    /// Its run.
    pub last_run_id: String,
}

/// Where a worker is in its run, from its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPhase {
    /// Started a command.
    Start,
    /// Still running.
    Tick,
    /// Finished.
    End,
}

/// A heartbeat from a worker.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RecordHeartbeat {
    /// Worker id.
    pub worker_id: String,
    /// Host name.
    pub host: Option<String>,
    /// Project.
    pub project: String,
    /// Run in progress.
    pub run_id: Option<String>,
    /// Phase.
    pub phase: WorkerPhase,
    /// Seconds until the next heartbeat.
    pub interval_secs: u64,
    /// When it was sent.
    pub at: DateTime<Utc>,
}

/// Pass-rate trend of the last `limit` runs, oldest first.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<TrendPoint>, ActorFault>")]
pub struct GetTrend {
    /// Only this project (all projects when `None`).
    pub project: Option<String>,
    /// Only this branch (needs `project`).
    pub branch: Option<String>,
    /// How many runs.
    pub limit: usize,
}

/// Every worker with its status as of `now`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<WorkerStatus>, ActorFault>")]
pub struct GetWorkers {
    /// The time to judge staleness against.
    pub now: DateTime<Utc>,
}

/// The most frequently failing tests since `since`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<FailureStat>, ActorFault>")]
pub struct GetFailureStats {
    /// Only this project.
    pub project: Option<String>,
    /// Window start (`None`: all time).
    pub since: Option<DateTime<Utc>>,
    /// How many tests.
    pub limit: usize,
}

/// Tuning for worker status.
#[derive(Debug, Clone, Copy)]
pub struct AggregatesConfig {
    /// A worker not seen for this long is offline.
    pub offline_after: Duration,
    /// Most workers tracked; beyond it the one seen longest ago is dropped.
    pub max_workers: usize,
}

/// Default of [`AggregatesConfig::max_workers`].
pub const DEFAULT_MAX_WORKERS: usize = 10_000;

impl Default for AggregatesConfig {
    fn default() -> Self {
        AggregatesConfig {
            offline_after: Duration::hours(24),
            max_workers: DEFAULT_MAX_WORKERS,
        }
    }
}

/// Where a panicking aggregates actor asks for a rebuild, and where it
/// records the panic. Kept across [`ReplaceState`].
#[derive(Default)]
struct Supervision {
    faults: Faults,
    rebuild: Option<Recipient<RebuildAggregates>>,
}

impl std::fmt::Debug for Supervision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervision")
            .field("rebuild", &self.rebuild.is_some())
            .finish()
    }
}

#[derive(Debug, Default)]
struct Worker {
    host: Option<String>,
    project: Option<String>,
    last_seen: Option<DateTime<Utc>>,
    phase: Option<WorkerPhase>,
    interval_secs: u64,
    current_run: Option<String>,
    run_count: u64,
    pass_rate_sum: f64,
    pass_rate_n: u64,
    last_run: Option<(DateTime<Utc>, String, String)>,
}

#[derive(Debug)]
struct TestFailures {
    /// Failure times (ms), sorted ascending.
    times: Vec<i64>,
    last_at: i64,
    last_message: Option<String>,
    last_run_id: String,
}

/// The aggregates actor's state.
#[derive(Debug, Default)]
pub struct Aggregates {
    config: AggregatesConfig,
    all: Vec<Arc<TrendPoint>>,
    by_project: HashMap<String, Vec<Arc<TrendPoint>>>,
    by_branch: HashMap<(String, String), Vec<Arc<TrendPoint>>>,
    workers: HashMap<String, Worker>,
    failures: HashMap<String, HashMap<String, TestFailures>>,
    /// The last all-time failure-stats answer, by (project, limit): most
    /// requests ask the same question between two runs. Cleared whenever a
    /// failure is added.
    stats_cache: Option<(Option<String>, usize, Vec<FailureStat>)>,
    supervision: Supervision,
}

fn insert_sorted(series: &mut Vec<Arc<TrendPoint>>, p: Arc<TrendPoint>) {
    let key = |q: &TrendPoint| (q.timestamp, q.run_id.clone());
    let k = key(&p);
    let pos = series.partition_point(|q| key(q) <= k);
    series.insert(pos, p);
    if series.len() > MAX_TREND_POINTS {
        series.remove(0);
    }
}

impl Aggregates {
    /// Empty aggregates.
    pub fn new(config: AggregatesConfig) -> Aggregates {
        Aggregates {
            config,
            ..Aggregates::default()
        }
    }

    /// Records handler panics in `faults` and, after one, asks `rebuild`
    /// (the writer) for a state rebuilt from the database.
    pub fn supervised(
        mut self,
        faults: Faults,
        rebuild: Recipient<RebuildAggregates>,
    ) -> Aggregates {
        self.supervision = Supervision {
            faults,
            rebuild: Some(rebuild),
        };
        self
    }

    /// Runs a handler's body; a panic is recorded, answered as an
    /// [`ActorFault`], and the state is rebuilt from the database.
    fn guarded<R>(
        &mut self,
        message: &dyn std::fmt::Debug,
        f: impl FnOnce(&mut Aggregates) -> R,
    ) -> Result<R, ActorFault> {
        let faults = self.supervision.faults.clone();
        let result = guard(&faults, "aggregates", message, || f(self));
        if result.is_err()
            && let Some(r) = &self.supervision.rebuild
        {
            r.do_send(RebuildAggregates);
        }
        result
    }

    /// The worker `id`, added if new; when that makes more than
    /// `max_workers`, the one seen longest ago is forgotten first.
    fn worker_mut(&mut self, id: &str) -> &mut Worker {
        if !self.workers.contains_key(id) && self.workers.len() >= self.config.max_workers.max(1) {
            let oldest = self
                .workers
                .iter()
                .min_by_key(|(id, w)| (w.last_seen, *id))
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.workers.remove(&oldest);
            }
        }
        self.workers.entry(id.to_string()).or_default()
    }

    /// Rebuilds the aggregates from the database.
    pub async fn load(
        pool: &SqlitePool,
        config: AggregatesConfig,
    ) -> Result<Aggregates, sqlx::Error> {
        let mut agg = Aggregates::new(config);
        for run in crate::queries::all_runs_oldest_first(pool).await? {
            agg.add_run(&run);
        }
        let rows: Vec<(String, i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT r.project, r.started_at, r.run_id, c.test_id, c.message \
             FROM runs r JOIN test_cases c ON c.run_id = r.run_id AND c.outcome IN (0, 1) \
             ORDER BY r.started_at, r.run_id",
        )
        .fetch_all(pool)
        .await?;
        // A test failing twice in one run (fail, then error in teardown)
        // counts once for that run.
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for (project, at, run_id, test_id, message) in rows {
            if seen.insert((run_id.clone(), test_id.clone())) {
                agg.add_failure(&project, at, &run_id, test_id, message);
            }
        }
        Ok(agg)
    }

    fn add_run(&mut self, run: &RunRecord) {
        let c: &Counts = &run.counts;
        let p = Arc::new(TrendPoint {
            run_id: run.run_id.clone(),
            timestamp: run.started_at,
            project: run.project.clone(),
            branch: run.branch.clone(),
            commit: run.commit.clone(),
            worker_id: run.worker_id.clone(),
            status: run.status.clone(),
            passed: c.passed,
            failed: c.failed,
            error: c.error,
            skipped: c.skipped,
            total: c.total,
            pass_rate: run.pass_rate,
            duration_secs: run.duration_secs,
        });
        insert_sorted(&mut self.all, p.clone());
        insert_sorted(
            self.by_project.entry(run.project.clone()).or_default(),
            p.clone(),
        );
        if let Some(b) = &run.branch {
            insert_sorted(
                self.by_branch
                    .entry((run.project.clone(), b.clone()))
                    .or_default(),
                p,
            );
        }
        let w = self.worker_mut(&run.worker_id);
        w.run_count += 1;
        if let Some(r) = run.pass_rate {
            w.pass_rate_sum += r;
            w.pass_rate_n += 1;
        }
        if w.host.is_none() {
            w.host = run.host.clone();
        }
        let newer = w
            .last_run
            .as_ref()
            .is_none_or(|(t, _, _)| *t <= run.started_at);
        if newer {
            w.last_run = Some((run.started_at, run.run_id.clone(), run.status.clone()));
            w.project = Some(run.project.clone());
        }
        // Never later than the master's clock: see the module docs.
        let finished = run.finished_at.min(Utc::now());
        if w.last_seen.is_none_or(|t| t < finished) {
            w.last_seen = Some(finished);
            if w.current_run.as_deref() == Some(run.run_id.as_str()) || w.phase.is_none() {
                w.phase = Some(WorkerPhase::End);
                w.current_run = None;
            }
        }
    }

    fn add_failure(
        &mut self,
        project: &str,
        at: i64,
        run_id: &str,
        test_id: String,
        message: Option<String>,
    ) {
        self.stats_cache = None;
        let tests = self.failures.entry(project.to_string()).or_default();
        let f = tests.entry(test_id).or_insert_with(|| TestFailures {
            times: Vec::new(),
            last_at: i64::MIN,
            last_message: None,
            last_run_id: String::new(),
        });
        let pos = f.times.partition_point(|t| *t <= at);
        f.times.insert(pos, at);
        if at >= f.last_at {
            f.last_at = at;
            f.last_message = message;
            f.last_run_id = run_id.to_string();
        }
    }

    fn trend(&self, q: &GetTrend) -> Vec<TrendPoint> {
        let series = match (&q.project, &q.branch) {
            (Some(p), Some(b)) => self.by_branch.get(&(p.clone(), b.clone())),
            (Some(p), None) => self.by_project.get(p),
            (None, _) => Some(&self.all),
        };
        let series = series.map(Vec::as_slice).unwrap_or_default();
        let from = series.len().saturating_sub(q.limit);
        series[from..].iter().map(|p| (**p).clone()).collect()
    }

    fn workers(&self, now: DateTime<Utc>) -> Vec<WorkerStatus> {
        let mut out: Vec<WorkerStatus> = self
            .workers
            .iter()
            .filter_map(|(id, w)| {
                let last_seen = w.last_seen?;
                let age = now.signed_duration_since(last_seen);
                // Three missed heartbeats and 10 s of slack; checked, so a
                // huge interval means "late never", not a panic.
                let late_after = i64::try_from(w.interval_secs.max(1))
                    .ok()
                    .and_then(|s| s.checked_mul(3))
                    .and_then(|s| s.checked_add(10))
                    .and_then(Duration::try_seconds)
                    .unwrap_or(Duration::MAX);
                let running_fresh = matches!(w.phase, Some(WorkerPhase::Start | WorkerPhase::Tick))
                    && age <= late_after;
                let status = if running_fresh {
                    WorkerState::Running
                } else if matches!(w.phase, Some(WorkerPhase::End) | None)
                    && age <= self.config.offline_after
                {
                    WorkerState::Idle
                } else {
                    WorkerState::Offline
                };
                Some(WorkerStatus {
                    worker_id: id.clone(),
                    status,
                    last_seen,
                    current_run: if status == WorkerState::Running {
                        w.current_run.clone()
                    } else {
                        None
                    },
                    host: w.host.clone(),
                    project: w.project.clone(),
                    run_count: w.run_count,
                    avg_pass_rate: (w.pass_rate_n > 0)
                        .then(|| w.pass_rate_sum / w.pass_rate_n as f64),
                    last_run_id: w.last_run.as_ref().map(|(_, id, _)| id.clone()),
                    last_run_status: w.last_run.as_ref().map(|(_, _, s)| s.clone()),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then(a.worker_id.cmp(&b.worker_id))
        });
        out
    }

    /// [`Self::failure_stats`], answered from the cache when the same
    /// all-time question was asked since the last failure was added.
    /// Windows relative to now move with the clock, so they are not cached.
    fn failure_stats_cached(&mut self, q: GetFailureStats) -> Vec<FailureStat> {
        if q.since.is_some() {
            return self.failure_stats(&q);
        }
        if let Some((project, limit, answer)) = &self.stats_cache
            && *project == q.project
            && *limit == q.limit
        {
            return answer.clone();
        }
        let answer = self.failure_stats(&q);
        self.stats_cache = Some((q.project, q.limit, answer.clone()));
        answer
    }

    fn failure_stats(&self, q: &GetFailureStats) -> Vec<FailureStat> {
        let since = q.since.map(|t| t.timestamp_millis()).unwrap_or(i64::MIN);
        // Rank borrowed rows and clone only the `limit` shown: with 100,000
        // failing tests, cloning every id and message per request cost more
        // than the ranking (bench: /failures/stats p99 319 ms before).
        let mut rows: Vec<(u64, i64, &String, &String, &TestFailures)> = self
            .failures
            .iter()
            .filter(|(p, _)| q.project.as_ref().is_none_or(|want| want == *p))
            .flat_map(|(project, tests)| {
                tests.iter().filter_map(move |(test_id, f)| {
                    let n = f.times.len() - f.times.partition_point(|t| *t < since);
                    (n > 0).then_some((n as u64, f.last_at, project, test_id, f))
                })
            })
            .collect();
        let order = |a: &(u64, i64, &String, &String, &TestFailures),
                     b: &(u64, i64, &String, &String, &TestFailures)| {
            b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.3.cmp(b.3))
        };
        if q.limit == 0 {
            return Vec::new();
        }
        if rows.len() > q.limit {
            rows.select_nth_unstable_by(q.limit - 1, order);
            rows.truncate(q.limit);
        }
        rows.sort_by(order);
        rows.into_iter()
            .map(|(n, _, project, test_id, f)| FailureStat {
                test_id: test_id.clone(),
                project: project.clone(),
                fail_count: n,
                last_failed_at: from_millis(f.last_at),
                last_message: f.last_message.clone(),
                last_run_id: f.last_run_id.clone(),
            })
            .collect()
    }
}

impl Actor for Aggregates {
    type Context = Context<Self>;
}

/// Replace the aggregates with a state rebuilt from the database (after
/// retention pruned old runs). What only heartbeats know (a worker's phase,
/// current run, last heartbeat) is carried over.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReplaceState(pub Box<Aggregates>);

impl Handler<ReplaceState> for Aggregates {
    type Result = ();

    fn handle(&mut self, msg: ReplaceState, _ctx: &mut Self::Context) {
        let mut fresh = *msg.0;
        fresh.config = self.config;
        fresh.supervision = std::mem::take(&mut self.supervision);
        for (id, old) in self.workers.drain() {
            let w = fresh.workers.entry(id).or_default();
            w.phase = old.phase;
            w.interval_secs = old.interval_secs;
            w.current_run = old.current_run;
            if w.host.is_none() {
                w.host = old.host;
            }
            if w.project.is_none() {
                w.project = old.project;
            }
            if old.last_seen > w.last_seen {
                w.last_seen = old.last_seen;
            }
        }
        *self = fresh;
    }
}

impl Handler<RunCompleted> for Aggregates {
    type Result = ();

    fn handle(&mut self, msg: RunCompleted, _ctx: &mut Self::Context) {
        let shown = msg.run.run_id.clone();
        let _ = self.guarded(&shown, move |a| {
            a.add_run(&msg.run);
            let at = msg.run.started_at.timestamp_millis();
            let mut seen = HashSet::new();
            for (test_id, message) in msg.failures {
                if seen.insert(test_id.clone()) {
                    a.add_failure(&msg.run.project, at, &msg.run.run_id, test_id, message);
                }
            }
        });
    }
}

impl Handler<RecordHeartbeat> for Aggregates {
    type Result = ();

    fn handle(&mut self, hb: RecordHeartbeat, _ctx: &mut Self::Context) {
        let shown = hb.clone();
        let _ = self.guarded(&shown, move |a| a.heartbeat(hb));
    }
}

impl Aggregates {
    fn heartbeat(&mut self, hb: RecordHeartbeat) {
        // Never later than the master's clock: see the module docs.
        let at = hb.at.min(Utc::now());
        let w = self.worker_mut(&hb.worker_id);
        if w.last_seen.is_some_and(|t| t > at) {
            return; // a stale heartbeat arriving late changes nothing
        }
        w.last_seen = Some(at);
        w.phase = Some(hb.phase);
        w.interval_secs = hb.interval_secs;
        w.project = Some(hb.project);
        if hb.host.is_some() {
            w.host = hb.host;
        }
        w.current_run = match hb.phase {
            WorkerPhase::End => None,
            _ => hb.run_id,
        };
    }
}

impl Handler<GetTrend> for Aggregates {
    type Result = MessageResult<GetTrend>;

    fn handle(&mut self, q: GetTrend, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.guarded(&q.clone(), |a| a.trend(&q)))
    }
}

impl Handler<GetWorkers> for Aggregates {
    type Result = MessageResult<GetWorkers>;

    fn handle(&mut self, q: GetWorkers, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.guarded(&q, |a| a.workers(q.now)))
    }
}

impl Handler<GetFailureStats> for Aggregates {
    type Result = MessageResult<GetFailureStats>;

    fn handle(&mut self, q: GetFailureStats, _ctx: &mut Self::Context) -> Self::Result {
        let shown = q.clone();
        MessageResult(self.guarded(&shown, |a| a.failure_stats_cached(q)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn run(id: &str, worker: &str, minute: u32, passed: u64, failed: u64) -> RunRecord {
        let t = Utc
            .with_ymd_and_hms(2026, 1, 1, 12, minute, 0)
            .single()
            .expect("valid time");
        let counts = Counts {
            total: passed + failed,
            passed,
            failed,
            ..Counts::default()
        };
        RunRecord {
            run_id: id.into(),
            project: "p".into(),
            branch: Some("main".into()),
            commit: None,
            worker_id: worker.into(),
            host: None,
            runner: None,
            command: None,
            started_at: t,
            finished_at: t + Duration::seconds(30),
            duration_secs: 30.0,
            exit_code: Some(i32::from(failed > 0)),
            status: if failed > 0 { "failed" } else { "passed" }.into(),
            pass_rate: counts.pass_rate(),
            counts,
            cases_complete: true,
            note: None,
        }
    }

    #[test]
    fn trend_is_ordered_by_start_time_not_arrival() {
        let mut a = Aggregates::new(AggregatesConfig::default());
        a.add_run(&run("late", "w", 30, 1, 1));
        a.add_run(&run("early", "w", 10, 2, 0));
        a.add_run(&run("middle", "w", 20, 1, 3));
        let t = a.trend(&GetTrend {
            project: Some("p".into()),
            branch: Some("main".into()),
            limit: 2,
        });
        let ids: Vec<_> = t.iter().map(|p| p.run_id.as_str()).collect();
        assert_eq!(ids, ["middle", "late"]);
        assert_eq!(t[0].pass_rate, Some(25.0));
    }

    #[test]
    fn cached_failure_stats_follow_new_failures() {
        let mut a = Aggregates::new(AggregatesConfig::default());
        let q = || GetFailureStats {
            project: Some("p".into()),
            since: None,
            limit: 5,
        };
        a.add_failure("p", 100, "r1", "t::a".into(), None);
        assert_eq!(a.failure_stats_cached(q())[0].fail_count, 1);
        assert_eq!(a.failure_stats_cached(q())[0].fail_count, 1, "cached");
        a.add_failure("p", 200, "r2", "t::a".into(), None);
        a.add_failure("p", 200, "r2", "t::b".into(), None);
        let after = a.failure_stats_cached(q());
        assert_eq!((after[0].fail_count, after.len()), (2, 2));
        // Another question is not answered from the cache.
        let one = a.failure_stats_cached(GetFailureStats { limit: 1, ..q() });
        assert_eq!(one.len(), 1);
        let other = a.failure_stats_cached(GetFailureStats {
            project: Some("q".into()),
            ..q()
        });
        assert!(other.is_empty());
    }

    #[test]
    fn failure_stats_count_within_window() {
        let mut a = Aggregates::new(AggregatesConfig::default());
        for (i, at) in [100, 200, 300].into_iter().enumerate() {
            a.add_failure(
                "p",
                at,
                &format!("r{i}"),
                "t::flaky".into(),
                Some(format!("m{i}")),
            );
        }
        a.add_failure("p", 250, "r9", "t::once".into(), None);
        let all = a.failure_stats(&GetFailureStats {
            project: None,
            since: None,
            limit: 10,
        });
        assert_eq!(all[0].test_id, "t::flaky");
        assert_eq!(all[0].fail_count, 3);
        assert_eq!(all[0].last_message.as_deref(), Some("m2"));
        let recent = a.failure_stats(&GetFailureStats {
            project: Some("p".into()),
            since: Some(from_millis(250)),
            limit: 10,
        });
        let counts: Vec<_> = recent
            .iter()
            .map(|s| (s.test_id.as_str(), s.fail_count))
            .collect();
        assert_eq!(counts, [("t::flaky", 1), ("t::once", 1)]);
    }

    /// A message whose handler panics, standing for a bug that some data
    /// meets (the killing heartbeat of 2026-11 was one).
    #[derive(Debug, Message)]
    #[rtype(result = "Result<(), ActorFault>")]
    struct Explode;

    impl Handler<Explode> for Aggregates {
        type Result = Result<(), ActorFault>;

        fn handle(&mut self, msg: Explode, _ctx: &mut Self::Context) -> Self::Result {
            self.guarded(&msg, |_| panic!("TimeDelta::seconds out of bounds"))
        }
    }

    #[test]
    fn a_panicking_handler_leaves_the_actor_answering() {
        let sys = actix::System::new();
        sys.block_on(async {
            let faults = Faults::default();
            let mut a = Aggregates::new(AggregatesConfig::default());
            a.supervision.faults = faults.clone();
            a.add_run(&run("r1", "w1", 0, 3, 1));
            let addr = a.start();
            let err = addr.send(Explode).await.expect("mailbox open");
            assert!(err.is_err(), "the panic is answered as a fault");
            let trend = addr
                .send(GetTrend {
                    project: None,
                    branch: None,
                    limit: 10,
                })
                .await
                .expect("mailbox still open after the panic")
                .expect("answered");
            assert_eq!(trend.len(), 1);
            let w = addr
                .send(GetWorkers { now: Utc::now() })
                .await
                .expect("mailbox open")
                .expect("answered");
            assert_eq!(w.len(), 1);
            assert_eq!(faults.snapshot()["aggregates"].panics, 1);
        });
    }

    #[test]
    fn huge_intervals_and_future_times_cannot_break_worker_status() {
        let mut a = Aggregates::new(AggregatesConfig::default());
        let now = Utc::now();
        a.heartbeat(RecordHeartbeat {
            worker_id: "w".into(),
            host: None,
            project: "p".into(),
            run_id: Some("r".into()),
            phase: WorkerPhase::Tick,
            interval_secs: 100_000_000_000_000_000,
            at: DateTime::<Utc>::MAX_UTC,
        });
        let w = &a.workers(now)[0];
        assert_eq!(w.status, WorkerState::Running);
        assert!(w.last_seen <= Utc::now(), "a future time is clamped");
        // A real end heartbeat afterwards is not ignored.
        a.heartbeat(RecordHeartbeat {
            worker_id: "w".into(),
            host: None,
            project: "p".into(),
            run_id: None,
            phase: WorkerPhase::End,
            interval_secs: 10,
            at: Utc::now(),
        });
        assert_eq!(a.workers(Utc::now())[0].status, WorkerState::Idle);
    }

    #[test]
    fn workers_are_bounded_and_the_oldest_goes_first() {
        let mut a = Aggregates::new(AggregatesConfig {
            max_workers: 3,
            ..AggregatesConfig::default()
        });
        let t0 = Utc::now() - Duration::hours(1);
        for i in 0..5 {
            a.heartbeat(RecordHeartbeat {
                worker_id: format!("w{i}"),
                host: None,
                project: "p".into(),
                run_id: None,
                phase: WorkerPhase::End,
                interval_secs: 10,
                at: t0 + Duration::minutes(i),
            });
        }
        let mut ids: Vec<_> = a
            .workers(Utc::now())
            .into_iter()
            .map(|w| w.worker_id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["w2", "w3", "w4"]);
    }

    #[test]
    fn worker_status_follows_heartbeats() {
        let mut a = Aggregates::new(AggregatesConfig::default());
        let r = run("r1", "w1", 0, 3, 1);
        a.add_run(&r);
        let after = r.finished_at + Duration::minutes(1);
        let w = &a.workers(after)[0];
        assert_eq!((w.status, w.run_count), (WorkerState::Idle, 1));
        assert_eq!(w.avg_pass_rate, Some(75.0));
        if let Some(w) = a.workers.get_mut("w1") {
            w.phase = Some(WorkerPhase::Tick);
            w.interval_secs = 5;
            w.last_seen = Some(after);
            w.current_run = Some("r2".into());
        }
        let w = &a.workers(after + Duration::seconds(10))[0];
        assert_eq!(
            (w.status, w.current_run.as_deref()),
            (WorkerState::Running, Some("r2"))
        );
        let w = &a.workers(after + Duration::minutes(5))[0];
        assert_eq!(
            w.status,
            WorkerState::Offline,
            "a run that stopped heartbeating is offline"
        );
        let w = &a.workers(after + Duration::days(2))[0];
        assert_eq!(w.status, WorkerState::Offline);
    }
}
