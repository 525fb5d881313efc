//! The aggregates actor: what only heartbeats say about workers (running
//! now, which run, how often they beat), merged with what the stored runs
//! say ([`crate::read::rollups`]) into `/workers`.
//!
//! Everything else the API derives (trend, run counts, failure statistics)
//! is written with the data by the writer and read from the store; this
//! actor reads nothing at start. Heartbeats are not stored: they matter
//! only while fresh, arrive every few seconds per worker, and would turn
//! every beat into a write.
//!
//! Bounds: at most [`AggregatesConfig::max_workers`] workers' heartbeats are
//! held (a new one beyond that forgets the one heard longest ago), and
//! `/workers` lists at most that many workers, the most recently seen. The
//! stored workers last read (at most that many rows) are kept until the
//! writer's next visible write ([`DataVersion`]), so a busy `/workers` reads
//! the store once per write, not once per request.
//! Times from workers are never trusted to be in the past: a worker's
//! `last_seen` is at most the master's clock at arrival (of the heartbeat,
//! or of the run), so a clock set to the future cannot pin a worker as
//! running.
//!
//! A panic in a handler is caught ([`crate::supervise`]): the request gets
//! an [`ActorFault`] and the heartbeat state, which the panic may have left
//! half updated, is dropped; the next heartbeats fill it again, and what
//! the runs say is in the store, untouched.

use std::collections::{BTreeSet, HashMap};

use crate::read::ReadPool;
use actix::prelude::*;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::model::from_millis;
use crate::read::rollups::{self, StoredWorker};
use crate::supervise::{ActorFault, Faults, guard};
use crate::version::{DataVersion, Scope, Stamp};

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
    #[serde(serialize_with = "crate::format::time")]
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
    #[serde(serialize_with = "crate::format::rate_opt")]
    pub avg_pass_rate: Option<f64>,
    /// Its latest stored run.
    pub last_run_id: Option<String>,
    /// Status of that run.
    pub last_run_status: Option<String>,
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

/// Every worker with its status as of `now`, most recently seen first.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<WorkerStatus>, ReadError>")]
pub struct GetWorkers {
    /// The time to judge staleness against.
    pub now: DateTime<Utc>,
}

/// Why a question to the aggregates went unanswered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The handler panicked and recovered.
    #[error(transparent)]
    Fault(#[from] ActorFault),
    /// Reading the stored workers failed.
    #[error("SQLite read failed: {0}")]
    Sqlite(#[from] sqlx::Error),
}

/// Tuning for worker status.
#[derive(Debug, Clone, Copy)]
pub struct AggregatesConfig {
    /// A worker not seen for this long is offline.
    pub offline_after: Duration,
    /// Most workers listed, and most workers' heartbeats held; beyond it
    /// the one seen longest ago is dropped.
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

/// A worker's latest heartbeat.
#[derive(Debug, Clone)]
struct Beat {
    /// When it was sent, clamped to the master's clock at arrival.
    at: DateTime<Utc>,
    phase: WorkerPhase,
    interval_secs: u64,
    current_run: Option<String>,
    project: String,
    host: Option<String>,
}

/// The aggregates actor's state: heartbeats, and where stored workers are
/// read.
#[derive(Debug, Default)]
pub struct Aggregates {
    config: AggregatesConfig,
    read: Option<ReadPool>,
    version: DataVersion,
    /// The stored workers last read, and the versions they were read at.
    stored: Option<(Stamp, std::sync::Arc<Vec<StoredWorker>>)>,
    beats: HashMap<String, Beat>,
    faults: Faults,
}

impl Aggregates {
    /// Aggregates that read stored workers from `read` (none when `None`).
    pub fn new(config: AggregatesConfig, read: Option<ReadPool>) -> Aggregates {
        Aggregates {
            config,
            read,
            ..Aggregates::default()
        }
    }

    /// Records handler panics in `faults` (shown by `/health`).
    pub fn supervised(mut self, faults: Faults) -> Aggregates {
        self.faults = faults;
        self
    }

    /// Keeps the stored workers it reads until `version` says the writer
    /// changed something.
    pub fn versioned(mut self, version: DataVersion) -> Aggregates {
        self.version = version;
        self
    }

    /// Runs a handler's body; a panic is recorded and answered as an
    /// [`ActorFault`], and the heartbeat state is dropped.
    fn guarded<R>(
        &mut self,
        message: &dyn std::fmt::Debug,
        f: impl FnOnce(&mut Aggregates) -> R,
    ) -> Result<R, ActorFault> {
        let faults = self.faults.clone();
        let result = guard(&faults, "aggregates", message, || f(self));
        if result.is_err() {
            self.beats.clear();
        }
        result
    }

    fn heartbeat(&mut self, hb: RecordHeartbeat) {
        // Never later than the master's clock: see the module docs.
        let at = hb.at.min(Utc::now());
        if self.beats.get(&hb.worker_id).is_some_and(|b| b.at > at) {
            return; // a stale heartbeat arriving late changes nothing
        }
        if !self.beats.contains_key(&hb.worker_id)
            && self.beats.len() >= self.config.max_workers.max(1)
        {
            let oldest = self
                .beats
                .iter()
                .min_by_key(|(id, b)| (b.at, *id))
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.beats.remove(&oldest);
            }
        }
        let host = hb
            .host
            .or_else(|| self.beats.get(&hb.worker_id).and_then(|b| b.host.clone()));
        self.beats.insert(
            hb.worker_id,
            Beat {
                at,
                phase: hb.phase,
                interval_secs: hb.interval_secs,
                current_run: match hb.phase {
                    WorkerPhase::End => None,
                    _ => hb.run_id,
                },
                project: hb.project,
                host,
            },
        );
    }

    /// The stored workers merged with the heartbeats, judged as of `now`.
    fn workers(&self, now: DateTime<Utc>, stored: &[StoredWorker]) -> Vec<WorkerStatus> {
        let by_id: HashMap<&str, &StoredWorker> =
            stored.iter().map(|s| (s.worker_id.as_str(), s)).collect();
        let ids: BTreeSet<&str> = by_id
            .keys()
            .copied()
            .chain(self.beats.keys().map(String::as_str))
            .collect();
        let mut out: Vec<WorkerStatus> = ids
            .into_iter()
            .filter_map(|id| self.status(id, by_id.get(id).copied(), now))
            .collect();
        out.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then(a.worker_id.cmp(&b.worker_id))
        });
        out.truncate(self.config.max_workers.max(1));
        out
    }

    fn status(
        &self,
        id: &str,
        stored: Option<&StoredWorker>,
        now: DateTime<Utc>,
    ) -> Option<WorkerStatus> {
        let beat = self.beats.get(id);
        let run_seen = stored.map(|s| from_millis(s.last_seen));
        let last_seen = run_seen.max(beat.map(|b| b.at))?;
        // A run that ended after the heartbeat that announced it ends it.
        let phase = beat.map(|b| match stored {
            Some(s)
                if run_seen > Some(b.at) && b.current_run.as_deref() == Some(&s.last_run_id) =>
            {
                WorkerPhase::End
            }
            _ => b.phase,
        });
        let age = now.signed_duration_since(last_seen);
        // Three missed heartbeats and 10 s of slack; checked, so a huge
        // interval means "late never", not a panic.
        let late_after = i64::try_from(beat.map_or(0, |b| b.interval_secs).max(1))
            .ok()
            .and_then(|s| s.checked_mul(3))
            .and_then(|s| s.checked_add(10))
            .and_then(Duration::try_seconds)
            .unwrap_or(Duration::MAX);
        let running_fresh =
            matches!(phase, Some(WorkerPhase::Start | WorkerPhase::Tick)) && age <= late_after;
        let status = if running_fresh {
            WorkerState::Running
        } else if matches!(phase, Some(WorkerPhase::End) | None) && age <= self.config.offline_after
        {
            WorkerState::Idle
        } else {
            WorkerState::Offline
        };
        let beat_is_newer = beat.is_some_and(|b| Some(b.at) >= run_seen);
        Some(WorkerStatus {
            worker_id: id.to_string(),
            status,
            last_seen,
            current_run: beat
                .filter(|_| status == WorkerState::Running)
                .and_then(|b| b.current_run.clone()),
            host: beat
                .and_then(|b| b.host.clone())
                .or_else(|| stored.and_then(|s| s.host.clone())),
            project: match (beat, stored) {
                (Some(b), _) if beat_is_newer => Some(b.project.clone()),
                (_, Some(s)) => Some(s.last_project.clone()),
                (b, None) => b.map(|b| b.project.clone()),
            },
            run_count: stored.map_or(0, |s| s.run_count.max(0) as u64),
            avg_pass_rate: stored
                .filter(|s| s.pass_rate_n > 0)
                .map(|s| s.pass_rate_sum / s.pass_rate_n as f64),
            last_run_id: stored.map(|s| s.last_run_id.clone()),
            last_run_status: stored.map(|s| s.last_status.clone()),
        })
    }
}

impl Actor for Aggregates {
    type Context = Context<Self>;
}

impl Handler<RecordHeartbeat> for Aggregates {
    type Result = ();

    fn handle(&mut self, hb: RecordHeartbeat, _ctx: &mut Self::Context) {
        let shown = hb.clone();
        let _ = self.guarded(&shown, move |a| a.heartbeat(hb));
    }
}

impl Handler<GetWorkers> for Aggregates {
    type Result = ResponseActFuture<Self, Result<Vec<WorkerStatus>, ReadError>>;

    fn handle(&mut self, q: GetWorkers, _ctx: &mut Self::Context) -> Self::Result {
        let now = self.version.stamp(None);
        if let Some((stamp, stored)) = &self.stored
            && stamp.still_valid(&now, &Scope::All)
        {
            let stored = stored.clone();
            let answer = self
                .guarded(&q, |a| a.workers(q.now, &stored))
                .map_err(ReadError::from);
            return Box::pin(actix::fut::ready(answer));
        }
        let read = self.read.clone();
        let limit = self.config.max_workers.max(1);
        Box::pin(
            async move {
                match read {
                    Some(pool) => rollups::stored_workers(&pool, limit).await,
                    None => Ok(Vec::new()),
                }
            }
            .into_actor(self)
            .map(move |stored, act, _ctx| {
                let stored = std::sync::Arc::new(stored?);
                // Read after `now` was taken: kept only while no write
                // finished since.
                act.stored = Some((now, stored.clone()));
                Ok(act.guarded(&q, |a| a.workers(q.now, &stored))?)
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(worker: &str, phase: WorkerPhase, at: DateTime<Utc>) -> RecordHeartbeat {
        RecordHeartbeat {
            worker_id: worker.into(),
            host: None,
            project: "p".into(),
            run_id: None,
            phase,
            interval_secs: 10,
            at,
        }
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
            let addr = Aggregates::new(AggregatesConfig::default(), None)
                .supervised(faults.clone())
                .start();
            addr.do_send(beat("w1", WorkerPhase::End, Utc::now()));
            let err = addr.send(Explode).await.expect("mailbox open");
            assert!(err.is_err(), "the panic is answered as a fault");
            let w = addr
                .send(GetWorkers { now: Utc::now() })
                .await
                .expect("mailbox still open after the panic")
                .expect("answered");
            assert!(
                w.is_empty(),
                "the heartbeats the panic may have broken went"
            );
            addr.do_send(beat("w2", WorkerPhase::End, Utc::now()));
            let w = addr
                .send(GetWorkers { now: Utc::now() })
                .await
                .expect("mailbox open")
                .expect("answered");
            assert_eq!(w.len(), 1, "the next heartbeat counts again");
            assert_eq!(faults.snapshot()["aggregates"].panics, 1);
        });
    }

    #[test]
    fn huge_intervals_and_future_times_cannot_break_worker_status() {
        let mut a = Aggregates::default();
        let now = Utc::now();
        a.heartbeat(RecordHeartbeat {
            run_id: Some("r".into()),
            interval_secs: 100_000_000_000_000_000,
            ..beat("w", WorkerPhase::Tick, DateTime::<Utc>::MAX_UTC)
        });
        let w = &a.workers(now, &[])[0];
        assert_eq!(w.status, WorkerState::Running);
        assert!(w.last_seen <= Utc::now(), "a future time is clamped");
        // A real end heartbeat afterwards is not ignored.
        a.heartbeat(beat("w", WorkerPhase::End, Utc::now()));
        assert_eq!(a.workers(Utc::now(), &[])[0].status, WorkerState::Idle);
    }

    #[test]
    fn workers_are_bounded_and_the_oldest_goes_first() {
        let mut a = Aggregates::new(
            AggregatesConfig {
                max_workers: 3,
                ..AggregatesConfig::default()
            },
            None,
        );
        let t0 = Utc::now() - Duration::hours(1);
        for i in 0..5 {
            a.heartbeat(beat(
                &format!("w{i}"),
                WorkerPhase::End,
                t0 + Duration::minutes(i),
            ));
        }
        assert_eq!(a.beats.len(), 3, "heartbeats held are bounded");
        let stored: Vec<StoredWorker> = (0..5)
            .map(|i| stored(&format!("s{i}"), t0 + Duration::seconds(150 + 60 * i)))
            .collect();
        let ids: Vec<_> = a
            .workers(Utc::now(), &stored)
            .into_iter()
            .map(|w| w.worker_id)
            .collect();
        // Heartbeats at 2, 3 and 4 minutes; runs ending at 2.5 to 6.5.
        assert_eq!(ids, ["s4", "s3", "s2"], "listed newest first, bounded");
    }

    fn stored(id: &str, seen: DateTime<Utc>) -> StoredWorker {
        StoredWorker {
            worker_id: id.into(),
            run_count: 1,
            pass_rate_sum: 75.0,
            pass_rate_n: 1,
            last_seen: seen.timestamp_millis(),
            last_started_at: seen.timestamp_millis() - 30_000,
            last_run_id: "r1".into(),
            last_status: "failed".into(),
            last_project: "p".into(),
            host: Some("h".into()),
        }
    }

    #[test]
    fn worker_status_follows_heartbeats() {
        let mut a = Aggregates::default();
        let finished = Utc::now() - Duration::hours(1);
        let s = [stored("w1", finished)];
        let after = finished + Duration::minutes(1);
        let w = &a.workers(after, &s)[0];
        assert_eq!((w.status, w.run_count), (WorkerState::Idle, 1));
        assert_eq!(w.avg_pass_rate, Some(75.0));
        a.heartbeat(RecordHeartbeat {
            run_id: Some("r2".into()),
            interval_secs: 5,
            ..beat("w1", WorkerPhase::Tick, after)
        });
        let w = &a.workers(after + Duration::seconds(10), &s)[0];
        assert_eq!(
            (w.status, w.current_run.as_deref()),
            (WorkerState::Running, Some("r2"))
        );
        let w = &a.workers(after + Duration::minutes(5), &s)[0];
        assert_eq!(
            w.status,
            WorkerState::Offline,
            "a run that stopped heartbeating is offline"
        );
        let w = &a.workers(after + Duration::days(2), &s)[0];
        assert_eq!(w.status, WorkerState::Offline);
        // Run r2 is stored, ending after its last tick: the worker is idle.
        let done = [StoredWorker {
            run_count: 2,
            last_run_id: "r2".into(),
            last_seen: (after + Duration::seconds(20)).timestamp_millis(),
            ..s[0].clone()
        }];
        let w = &a.workers(after + Duration::seconds(30), &done)[0];
        assert_eq!((w.status, w.run_count), (WorkerState::Idle, 2));
        assert_eq!(w.current_run, None);
    }
}
