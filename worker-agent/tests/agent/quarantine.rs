//! The quarantine list through a real nats-server with deploy/nats.conf's
//! accounts: the test writes the list into the key-value bucket as the
//! master will (user `master`), and the real agent (the locked-down user
//! `agent`) runs a real pytest suite against it.

use std::path::Path;
use std::process::Output;

use chrono::Utc;
use ptp_nats::quarantine::{self, QuarantineList, QuarantinedTest};
use ptp_test_support::NatsServer;
use serde_json::Value;

use super::check::create_stream;
use super::{agent, stderr};

const AGENT: (&str, &str) = ("agent", "agent-pw");
const MASTER: (&str, &str) = ("master", "master-pw");

fn broker() -> NatsServer {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats.conf");
    NatsServer::start_with_env(
        &["-c", &conf.to_string_lossy()],
        &[
            ("PTP_AGENT_NATS_PASSWORD", AGENT.1),
            ("PTP_MASTER_NATS_PASSWORD", MASTER.1),
        ],
    )
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

async fn js_as(url: &str, (user, pw): (&str, &str)) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), pw.into())
        .connect(url)
        .await
        .expect("connect");
    async_nats::jetstream::new(client)
}

/// Writes `project`'s list as the master would.
fn quarantine_tests(url: &str, project: &str, tests: &[(&str, Option<chrono::TimeDelta>)]) {
    block_on(async {
        let js = js_as(url, MASTER).await;
        let mut list = QuarantineList::new(project, Utc::now());
        list.tests = tests
            .iter()
            .map(|(id, expires_in)| QuarantinedTest {
                test_id: id.to_string(),
                reason: "flaky since the cache rewrite".into(),
                since: Utc::now(),
                expires_at: expires_in.map(|d| Utc::now() + d),
                auto: false,
            })
            .collect();
        quarantine::write(&js, &list).await.expect("master writes");
    });
}

fn release_all(url: &str, project: &str) {
    block_on(async {
        let js = js_as(url, MASTER).await;
        quarantine::clear(&js, project)
            .await
            .expect("master clears");
    });
}

/// A suite with a passing test and an always-failing one; with `crash`,
/// a third test interrupts pytest after the failure was reported (exit 2,
/// a report with the failure in it).
fn suite(dir: &Path, crash: bool) {
    std::fs::write(dir.join("pytest.ini"), "[pytest]\n").expect("ini");
    let mut body =
        "def test_ok():\n    pass\n\ndef test_broken():\n    assert 1 == 2, 'always fails'\n"
            .to_string();
    if crash {
        body.push_str("\ndef test_zz_interrupt():\n    raise KeyboardInterrupt\n");
    }
    std::fs::write(dir.join("test_shop.py"), body).expect("suite");
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(crash: bool) -> Env {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join("project")).expect("project");
        suite(&dir.path().join("project"), crash);
        Env { dir }
    }

    fn run(&self, url: &str, extra: &[&str]) -> (Output, Value) {
        let file = self.dir.path().join("results.json");
        let _ = std::fs::remove_file(&file);
        let out = agent(url, &self.dir.path().join("cache/spool"))
            .current_dir(self.dir.path().join("project"))
            .env("PROJECT", "shop")
            .env("NATS_USER", AGENT.0)
            .env("NATS_PASSWORD", AGENT.1)
            .arg("run")
            .args(extra)
            .arg("--results-json")
            .arg(&file)
            .arg("--")
            .arg(ptp_test_support::python())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .output()
            .expect("agent runs");
        let v = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        (out, v)
    }
}

fn quarantined_cases(v: &Value) -> Vec<(String, String)> {
    let mut q: Vec<(String, String)> = v["cases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["quarantined"] == true)
                .map(|c| {
                    (
                        c["test_id"].as_str().unwrap_or("").to_string(),
                        c["outcome"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    q.sort();
    q
}

#[test]
fn a_quarantined_failure_passes_the_run_and_nothing_else_is_hidden() {
    let mut nats = broker();
    let url = nats.url();
    create_stream(&url, Some(MASTER));
    let env = Env::new(false);

    // Nothing quarantined yet (no bucket at all): the failure fails.
    let (out, _) = env.run(&url, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read the quarantine list"), "{err}");

    quarantine_tests(&url, "shop", &[("test_shop::test_broken", None)]);
    let (out, v) = env.run(&url, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("every failing test is quarantined, so the run passes (exit 0)")
            && err.contains("  test_shop::test_broken (flaky since the cache rewrite)"),
        "{err}"
    );
    assert!(err.contains("published run"), "{err}");
    assert_eq!(
        quarantined_cases(&v),
        [("test_shop::test_broken".to_string(), "failed".to_string())],
        "the real outcome, marked"
    );
    assert_eq!(
        (v["status"].as_str(), v["exit_code"].as_i64()),
        (Some("failed"), Some(1))
    );

    // --no-quarantine: the failure fails again.
    let (out, v) = env.run(&url, &["--no-quarantine"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(quarantined_cases(&v).is_empty());

    // NATS away: the cached list is used, its age stated.
    nats.stop();
    let (out, _) = env.run(&url, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("cannot read the quarantine list") && err.contains("using the list cached"),
        "{err}"
    );
    assert!(err.contains(" ago ("), "{err}");
    nats.restart();

    // Released: the same command fails again.
    release_all(&url, "shop");
    let (out, v) = env.run(&url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(quarantined_cases(&v).is_empty());

    // An expired entry is no quarantine.
    quarantine_tests(
        &url,
        "shop",
        &[(
            "test_shop::test_broken",
            Some(chrono::TimeDelta::seconds(-60)),
        )],
    );
    let (out, _) = env.run(&url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Another project's list changes nothing.
    quarantine_tests(&url, "other", &[("test_shop::test_broken", None)]);
    let (out, _) = env.run(&url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn a_crash_is_never_hidden_even_with_everything_quarantined() {
    let nats = broker();
    let url = nats.url();
    create_stream(&url, Some(MASTER));
    quarantine_tests(
        &url,
        "shop",
        &[
            ("test_shop::test_broken", None),
            ("test_shop::test_ok", None),
        ],
    );
    let env = Env::new(true);
    let (out, v) = env.run(&url, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("so the run passes"), "{err}");
    assert!(
        err.contains("quarantined tests that failed (other failures still fail the run"),
        "{err}"
    );
    assert_eq!(v["status"], "interrupted");
    assert_eq!(
        quarantined_cases(&v),
        [
            ("test_shop::test_broken".to_string(), "failed".to_string()),
            ("test_shop::test_ok".to_string(), "passed".to_string())
        ]
    );
}

#[test]
fn no_cache_and_no_nats_means_nothing_is_quarantined() {
    let nats = broker();
    let url = nats.url();
    create_stream(&url, Some(MASTER));
    quarantine_tests(&url, "shop", &[("test_shop::test_broken", None)]);
    let env = Env::new(false);
    drop(nats);
    let (out, _) = env.run(&url, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("none is cached; no test is quarantined"),
        "{err}"
    );
}

/// The locked-down `agent` user reads the list but cannot write it.
#[test]
fn the_agent_user_reads_the_bucket_but_cannot_write_it() {
    let nats = broker();
    let url = nats.url();
    quarantine_tests(&url, "shop", &[("t::a", None)]);
    block_on(async {
        let js = js_as(&url, AGENT).await;
        let list = quarantine::read(&js, "shop")
            .await
            .expect("the agent reads")
            .expect("a list");
        assert_eq!(list.tests.len(), 1);
        assert!(
            quarantine::read(&js, "nobody")
                .await
                .expect("reads")
                .is_none()
        );
        let mut forged = QuarantineList::new("shop", Utc::now());
        forged.tests.clear();
        assert!(quarantine::write(&js, &forged).await.is_err(), "no write");
        assert!(quarantine::clear(&js, "shop").await.is_err(), "no delete");
        let master = js_as(&url, MASTER).await;
        let still = quarantine::read(&master, "shop")
            .await
            .expect("reads")
            .expect("list");
        assert_eq!(still.tests.len(), 1, "the list is untouched");
    });
}
