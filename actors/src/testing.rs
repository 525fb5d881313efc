//! Test helpers shared by this crate's tests: runs as the writer receives
//! them, and the real actors on a temporary SQLite file.

use chrono::{DateTime, Duration, TimeZone, Utc};
use sqlx::SqlitePool;

use crate::model::{CaseRecord, Counts, Outcome, RunRecord, RunStatus};
use crate::writer::{BatchItem, PruneSlice, StoreBatch};
use crate::{ActorSystem, AggregatesConfig, DbOptions};

/// A fixed start of time for test histories.
pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 22, 0, 0)
        .single()
        .expect("valid time")
}

/// A case of half a second.
pub(crate) fn case(test: &str, outcome: Outcome, message: Option<&str>) -> CaseRecord {
    CaseRecord {
        test_id: test.into(),
        file: None,
        classname: None,
        name: test.into(),
        outcome,
        duration_secs: 0.5,
        message: message.map(str::to_string),
        traceback: None,
        output: None,
        retries: 0,
        flaky: false,
        owners: Vec::new(),
        quarantined: false,
    }
}

/// A complete run of `cases` on branch main, with counts that agree.
pub(crate) fn record(
    id: &str,
    project: &str,
    worker: &str,
    started: DateTime<Utc>,
    cases: &[CaseRecord],
) -> RunRecord {
    let mut counts = Counts::default();
    for c in cases {
        counts.total += 1;
        match c.outcome {
            Outcome::Failed => counts.failed += 1,
            Outcome::Error => counts.error += 1,
            Outcome::Passed => counts.passed += 1,
            Outcome::Skipped => counts.skipped += 1,
            Outcome::Xfailed => counts.xfailed += 1,
            Outcome::Xpassed => counts.xpassed += 1,
        }
    }
    RunRecord {
        run_id: id.into(),
        project: project.into(),
        branch: Some("main".into()),
        commit: None,
        worker_id: worker.into(),
        host: Some(format!("host-of-{id}")),
        runner: None,
        command: None,
        started_at: started,
        finished_at: started + Duration::seconds(30),
        duration_secs: 30.0,
        exit_code: Some(1),
        status: if counts.failed + counts.error > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Passed
        },
        pass_rate: counts.pass_rate(),
        counts,
        cases_complete: true,
        note: None,
        quarantined_failures: 0,
    }
}

/// `record`'s cases in one chunk and its final, as one batch.
pub(crate) fn items(record: RunRecord, cases: Vec<CaseRecord>) -> Vec<BatchItem> {
    let id = record.run_id.clone();
    vec![
        BatchItem::Chunk {
            run_id: id.clone(),
            chunk: 0,
            cases,
            digest: format!("chunk-{id}"),
        },
        BatchItem::Final {
            run: Box::new(record),
            chunks: 1,
            digest: format!("final-{id}"),
        },
    ]
}

/// A complete run on branch main as one batch.
pub(crate) fn run(
    id: &str,
    project: &str,
    worker: &str,
    started: DateTime<Utc>,
    cases: Vec<CaseRecord>,
) -> Vec<BatchItem> {
    items(record(id, project, worker, started, &cases), cases)
}

/// The actors on the SQLite file `path`, and a read pool on it.
pub(crate) async fn start(path: &std::path::Path) -> (ActorSystem, SqlitePool) {
    let db = DbOptions::new(path);
    let actors = ActorSystem::start(db.clone(), AggregatesConfig::default())
        .await
        .expect("actors start");
    let pool = crate::store::sqlite::db::open_reader(&db)
        .await
        .expect("read pool");
    (actors, pool)
}

/// Stores each batch; each completes one run.
pub(crate) async fn store(actors: &ActorSystem, runs: Vec<Vec<BatchItem>>) {
    for items in runs {
        let report = actors
            .writer
            .send(StoreBatch(items))
            .await
            .expect("writer answers")
            .expect("stored");
        assert_eq!(report.completed.len(), 1, "{report:?}");
    }
}

/// Prunes in slices of 4 runs until nothing is left to prune.
pub(crate) async fn prune(
    actors: &ActorSystem,
    cutoff: Option<DateTime<Utc>>,
    keep_runs: Option<u32>,
) {
    loop {
        let r = actors
            .writer
            .send(PruneSlice {
                cutoff,
                keep_runs,
                max_runs: 4,
            })
            .await
            .expect("writer answers")
            .expect("pruned");
        if r.is_empty() {
            break;
        }
    }
}

/// `/tests/slow` as it was answered before the test summaries: every case
/// of the window's runs grouped by SQLite into JSON arrays. The oracle the
/// property test holds [`crate::read::history::slow_tests`] to.
pub(crate) async fn slow_tests_from_cases(
    pool: &SqlitePool,
    w: &crate::read::flaky::Window,
    rule: crate::read::history::SlowRule,
    limit: usize,
) -> crate::read::history::SlowReport {
    use sqlx::{QueryBuilder, Row, Sqlite};
    let mut q = QueryBuilder::<Sqlite>::new("");
    crate::read::flaky::push_scope(&mut q, w, crate::read::flaky::Runs::Complete);
    q.push(
        ", ranked AS (SELECT run_id, project, ROW_NUMBER() OVER (ORDER BY started_at DESC, run_id DESC) AS pos FROM scope), \
         per AS (SELECT k.project, c.test_id, k.pos, SUM(c.duration_secs) AS secs \
                 FROM ranked k JOIN test_cases c ON c.run_id = k.run_id AND c.outcome IN (0, 1, 2, 3) \
                 WHERE 1 = 1",
    );
    crate::owners::push_filter(&mut q, &w.tests, "k.project", "c.test_id");
    q.push(
        " GROUP BY k.run_id, c.test_id) \
         SELECT project, test_id, \
                json_group_array(secs) FILTER (WHERE pos <= ",
    );
    q.push_bind(i64::from(rule.recent));
    q.push(") AS recent, json_group_array(secs) FILTER (WHERE pos > ");
    q.push_bind(i64::from(rule.recent));
    q.push(") AS baseline FROM per GROUP BY project, test_id");
    let rows = q
        .build()
        .fetch_all(pool)
        .await
        .expect("slow tests from cases");
    let mut tests = Vec::with_capacity(rows.len());
    for r in rows {
        let parse = |col: &str| -> Vec<f64> {
            let s: String = r.try_get(col).expect("column");
            serde_json::from_str::<Vec<Option<f64>>>(&s)
                .expect("JSON array")
                .into_iter()
                .flatten()
                .collect()
        };
        let project: String = r.try_get("project").expect("project");
        let test_id: String = r.try_get("test_id").expect("test_id");
        tests.push((project, test_id, parse("recent"), parse("baseline")));
    }
    let (considered,): (i64,) = {
        let mut q = QueryBuilder::<Sqlite>::new("");
        crate::read::flaky::push_scope(&mut q, w, crate::read::flaky::Runs::Complete);
        q.push(" SELECT COUNT(*) FROM scope");
        q.build_query_as()
            .fetch_one(pool)
            .await
            .expect("runs considered")
    };
    // Every test named and sorted, then cut: what the judge's naming of
    // the contenders at the cut must come to.
    let (seen, mut slowest, total, mut regressions) = crate::read::history::judge_slow(tests, rule)
        .finish(|id| Some(id.clone()), usize::MAX)
        .expect("named");
    slowest.truncate(limit);
    regressions.truncate(limit);
    crate::read::history::SlowReport {
        runs_considered: considered.max(0) as u64,
        tests_seen: seen,
        slowest,
        regressions_total: total,
        regressions,
    }
}

/// A run's per-test results as `/compare` read them before the test
/// summaries: every case, worst first, the first row of a test setting
/// its outcome and message. The oracle of [`crate::read::compare::load_tests`].
pub(crate) async fn load_tests_from_cases(
    pool: &SqlitePool,
    run_id: &str,
) -> std::collections::BTreeMap<String, crate::read::compare::TestResult> {
    let rows: Vec<(String, i64, f64, Option<String>)> = sqlx::query_as(
        "SELECT test_id, outcome, duration_secs, message FROM test_cases WHERE run_id = ? \
         ORDER BY outcome, chunk, idx",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .expect("cases");
    let mut tests = std::collections::BTreeMap::new();
    for (test_id, code, secs, message) in rows {
        let outcome = Outcome::from_code(code).unwrap_or(Outcome::Error);
        tests
            .entry(test_id)
            .and_modify(|t: &mut crate::read::compare::TestResult| t.duration_secs += secs)
            .or_insert(crate::read::compare::TestResult {
                outcome,
                duration_secs: secs,
                message: if outcome.is_failure() { message } else { None },
            });
    }
    tests
}
