//! Synthetic test results: runs that look like a large pytest suite, made
//! deterministically from a seed so every figure is reproducible.
//!
//! Shape of a suite of `n` cases for a project: 50 tests per file, grouped
//! in classes of 10, every tenth test parametrised. About 2% of a run fails
//! (drawn, per run, from an "unstable" fifth of the suite, so the failure
//! statistics see realistic repeats) with a pytest-like message and
//! traceback, 1% is skipped, the rest passes. No randomness crate: a
//! splitmix64 hash of (seed, test index) decides everything.

use chrono::{DateTime, Utc};
use ptp_nats::schema::{Counts, Outcome, RunInfo, RunStatus, TestCase};

/// splitmix64: a fast, well-mixed hash for deterministic choices.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The test cases of one run of `project`'s suite of `n` tests; `seed`
/// varies which unstable tests fail.
pub fn cases(project: &str, n: usize, seed: u64) -> Vec<TestCase> {
    let unstable = (n / 5).max(1);
    (0..n)
        .map(|i| {
            let file = format!("tests/{project}/test_mod_{:03}.py", i / 50);
            let module = format!("tests.{project}.test_mod_{:03}", i / 50);
            let class = format!("TestGroup{}", (i % 50) / 10);
            let name = if i % 10 == 9 {
                format!("test_param[{i}-case-{}]", i % 7)
            } else {
                format!("test_case_{i:05}")
            };
            let h = mix(seed.wrapping_mul(1_000_003) ^ i as u64);
            let outcome = if i < unstable && h % 100 < 10 {
                if h.is_multiple_of(7) {
                    Outcome::Error
                } else {
                    Outcome::Failed
                }
            } else if h % 100 == 50 {
                Outcome::Skipped
            } else {
                Outcome::Passed
            };
            let (message, traceback) = match outcome {
                Outcome::Failed | Outcome::Error => {
                    let (a, b) = (h % 1000, (h >> 10) % 1000);
                    (
                        Some(format!("AssertionError: assert {a} == {b}")),
                        Some(format!(
                            "self = <{module}.{class} object at 0x7f3a2c1e{:04x}>\n\n    def {name}(self):\n        \
                             result = compute({i})\n>       assert result == {b}\nE       assert {a} == {b}\n\
                             E        +  where {a} = compute({i})\n\n{file}:{}: AssertionError",
                            h % 0xffff,
                            10 + i % 40
                        )),
                    )
                }
                Outcome::Skipped => (Some("Skipped: needs network access".to_string()), None),
                _ => (None, None),
            };
            TestCase {
                test_id: format!("{file}::{class}::{name}"),
                file: Some(file),
                classname: Some(format!("{module}.{class}")),
                name,
                outcome,
                duration_secs: (h % 5000) as f64 / 100_000.0,
                message,
                traceback,
                output: None,
                retries: 0,
                flaky: false,
                owners: Vec::new(),
                quarantined: false,
            }
        })
        .collect()
}

/// Where a run comes from: everything but its cases.
#[derive(Debug, Clone)]
pub struct RunMeta {
    /// Unique run id (36 characters, a UUID v7).
    pub run_id: String,
    /// Project.
    pub project: String,
    /// Branch.
    pub branch: String,
    /// CI worker.
    pub worker_id: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
}

/// The run's metadata with counts and status taken from `cases`.
pub fn run_info(meta: &RunMeta, cases: &[TestCase]) -> RunInfo {
    let counts = Counts::of(cases);
    let duration: f64 = cases.iter().map(|c| c.duration_secs).sum::<f64>() + 1.0;
    let failed = counts.failed + counts.error > 0;
    RunInfo {
        run_id: meta.run_id.clone(),
        project: meta.project.clone(),
        branch: Some(meta.branch.clone()),
        commit: Some(format!("{:012x}", mix(meta.started_at.timestamp() as u64))),
        worker_id: meta.worker_id.clone(),
        host: Some(format!("{}.ci.internal", meta.worker_id)),
        runner: Some("pytest".into()),
        command: Some("python -m pytest tests/".into()),
        started_at: meta.started_at,
        finished_at: meta.started_at + chrono::Duration::milliseconds((duration * 1000.0) as i64),
        duration_secs: duration,
        exit_code: Some(i32::from(failed)),
        status: if failed {
            RunStatus::Failed
        } else {
            RunStatus::Passed
        },
        counts,
        cases_complete: true,
        note: None,
    }
}

/// A fresh run id (UUID v7: 36 characters, increasing).
pub fn run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The outcome code the master stores (see actors/migrations/0001_init.sql).
pub fn outcome_code(o: Outcome) -> u8 {
    match o {
        Outcome::Failed => 0,
        Outcome::Error => 1,
        Outcome::Xpassed => 2,
        Outcome::Passed => 3,
        Outcome::Skipped => 4,
        Outcome::Xfailed => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_has_the_documented_mix() {
        let c = cases("p", 10_000, 7);
        let n = Counts::of(&c);
        assert_eq!(n.total, 10_000);
        let failing = n.failed + n.error;
        assert!((100..=300).contains(&failing), "{failing} failures");
        assert!((50..=150).contains(&n.skipped), "{} skips", n.skipped);
        assert_eq!(c, cases("p", 10_000, 7), "deterministic");
    }
}
