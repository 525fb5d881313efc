//! The built `ptp-agent` binary, driven as CI would: exit codes pass through,
//! timeouts kill the process group, a missing command is explained, and a
//! run that cannot be published is spooled and delivered later by `flush`.
//! `results` covers `--results-json` and `--no-publish` with a real pytest;
//! `check` covers `ptp-agent check` against each misconfiguration; `ci` the
//! job summary and GitHub annotations; `scripts` the GitHub Action's steps
//! and `scripts/master`; `runners` each test runner on a real project;
//! `retries` --retries and --rerun-command.

mod check;
mod ci;
mod owners;
mod quarantine;
mod results;
mod retries;
mod runners;
mod scripts;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use futures::StreamExt;
use ptp_test_support::{NatsServer, wait_until};

fn agent(nats_url: &str, spool: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ptp-agent"));
    c.env("NATS_URL", nats_url)
        .env("WORKER_ID", "w-test")
        .env("PROJECT", "agent-tests")
        .env("PTP_SPOOL_DIR", spool)
        .env("PTP_PUBLISH_TIMEOUT", "2")
        .env_remove("PTP_STRICT");
    // What the job around the tests may have set must not leak in.
    for v in [
        "GITHUB_ACTIONS",
        "GITHUB_STEP_SUMMARY",
        "GITHUB_BASE_REF",
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
        "CI_DEFAULT_BRANCH",
        "MASTER_URL",
        "PTP_API_TOKEN",
        "PTP_TRANSPORT",
        "PTP_SUMMARY",
        "PTP_REPORT_URL",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "NATS_CREDS",
        "NATS_CA",
        "NATS_CERT",
        "NATS_KEY",
    ] {
        c.env_remove(v);
    }
    c
}

/// A NATS URL where nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("nats://127.0.0.1:{port}")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn spooled(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn exit_code_passes_through_and_nats_trouble_spools() {
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let out = agent(&dead_url(), &spool)
        .args(["run", "--", "sh", "-c", "echo from-child; exit 3"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-child\n",
        "child output passes through"
    );
    assert!(
        stderr(&out).contains("saved in the spool at"),
        "{}",
        stderr(&out)
    );
    assert_eq!(spooled(&spool).len(), 1);

    let strict = agent(&dead_url(), &spool)
        .args(["--strict", "run", "--", "true"])
        .output()
        .expect("agent runs");
    assert_eq!(
        strict.status.code(),
        Some(75),
        "--strict turns a green run with failed reporting into 75"
    );
    assert_eq!(spooled(&spool).len(), 2);
}

#[test]
fn timeout_kills_the_process_group_and_exits_124() {
    let dir = tempfile::tempdir().expect("dir");
    let pidfile = dir.path().join("grandchild.pid");
    // The grandchild would outlive a plain kill of the shell.
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let out = agent(&dead_url(), &dir.path().join("spool"))
        .args(["run", "--timeout", "1", "--", "sh", "-c", &script])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(stderr(&out).contains("--timeout"), "{}", stderr(&out));
    let pid = std::fs::read_to_string(&pidfile).expect("pid written");
    let proc_dir = format!("/proc/{}", pid.trim());
    wait_until(Duration::from_secs(10), "the grandchild to be gone", || {
        std::fs::read_to_string(format!("{proc_dir}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    });
}

#[test]
fn a_missing_command_is_explained_with_127() {
    let dir = tempfile::tempdir().expect("dir");
    let out = agent(&dead_url(), &dir.path().join("spool"))
        .args(["run", "--", "no-such-test-runner-xyz", "--flag"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("\"no-such-test-runner-xyz\" not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_command_killed_by_a_signal_exits_128_plus_signal() {
    let dir = tempfile::tempdir().expect("dir");
    let out = agent(&dead_url(), &dir.path().join("spool"))
        .args(["run", "--", "sh", "-c", "kill -9 $$"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("killed by signal 9"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_documents_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_ptp-agent"))
        .args(["run", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "NATS_URL",
        "WORKER_ID",
        "PROJECT",
        "BRANCH",
        "COMMIT",
        "PTP_SPOOL_DIR",
        "--timeout",
        "--junit",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_runs_are_flushed_once_nats_is_back() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    // Create the stream the way the master would, then take NATS away.
    {
        let client = async_nats::connect(&url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        ptp_nats::ensure_stream(&js, &ptp_nats::StreamSettings::default())
            .await
            .expect("stream");
    }
    nats.stop();
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let report = dir.path().join("r.xml");
    std::fs::write(
        &report,
        r#"<testsuite><testcase classname="m" name="a"/><testcase classname="m" name="b"><failure message="x"/></testcase></testsuite>"#,
    )
    .expect("report");
    for _ in 0..2 {
        let out = agent(&url, &spool)
            .args(["run", "--junit"])
            .arg(&report)
            .args([
                "--",
                "sh",
                "-c",
                &format!("touch {}; exit 1", report.display()),
            ])
            .output()
            .expect("agent");
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    assert_eq!(spooled(&spool).len(), 2);
    // What an agent killed in the middle of spooling leaves behind: a
    // half-written temp file. It must never be sent.
    let half = spool.join(".tmp-killed-agent.json");
    std::fs::write(&half, br#"{"run": {"run_id": "half-writ"#).expect("half file");

    nats.restart();
    let out = agent(&url, &spool).arg("flush").output().expect("flush");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(spooled(&spool).is_empty(), "spool emptied");
    assert!(
        !stderr(&out).contains("half-writ"),
        "the half-written file is not read: {}",
        stderr(&out)
    );
    assert!(half.exists(), "and it is left alone for inspection");
    // Flushing again sends nothing twice.
    let again = agent(&url, &spool).arg("flush").output().expect("flush");
    assert!(
        stderr(&again).contains("nothing to send"),
        "{}",
        stderr(&again)
    );

    let client = async_nats::connect(&url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(ptp_nats::STREAM).await.expect("stream");
    let info = stream.info().await.expect("info");
    // Each run is one chunk plus one final message.
    assert_eq!(
        info.state.messages, 4,
        "two runs, two messages each, none doubled"
    );
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .expect("consumer");
    let mut msgs = consumer
        .fetch()
        .max_messages(10)
        .messages()
        .await
        .expect("fetch");
    let mut runs = 0;
    while let Some(Ok(m)) = msgs.next().await {
        if let Ok(ptp_nats::schema::WireMessage::Run(r)) = ptp_nats::schema::decode(&m.payload) {
            assert_eq!((r.run.counts.passed, r.run.counts.failed), (1, 1));
            runs += 1;
        }
    }
    assert_eq!(runs, 2);
}

/// `upload` of reports that cannot be read: each is refused with a reason
/// that says what to do, exit 2 (usage), and nothing is spooled or sent.
#[test]
fn upload_refuses_unreadable_reports_with_reasons() {
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    let write = |name: &str, body: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write");
        p
    };
    let cases = [
        (dir.path().join("missing.xml"), "no report file matches"),
        (write("empty.xml", b"  \n"), "report is empty"),
        (
            write("truncated.xml", b"<testsuite><testcase name=\"a\""),
            "ends unexpectedly",
        ),
        (write("pom.xml", b"<project><modelVersion/></project>"), "not JUnit"),
        (write("notes.xml", b"these are not XML at all"), "not XML"),
        (
            write(
                "laughs.xml",
                br#"<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><testsuite><testcase name="&b;"/></testsuite>"#,
            ),
            "entit",
        ),
    ];
    for (path, needle) in cases {
        let out = agent(&dead_url(), &spool)
            .arg("upload")
            .arg(&path)
            .output()
            .expect("agent");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", path.display());
        assert!(
            err.contains(needle),
            "{}: expected {needle:?} in {err}",
            path.display()
        );
    }
    assert!(spooled(&spool).is_empty(), "nothing spooled");
}

/// Outside a git checkout, with no CI variable naming them, branch and
/// commit are unknown: the agent says so once and names the variables.
#[test]
fn unknown_branch_and_commit_are_warned_once() {
    let dir = tempfile::tempdir().expect("dir");
    let bare = |c: &mut Command| {
        for v in [
            "BRANCH",
            "COMMIT",
            "GITHUB_HEAD_REF",
            "GITHUB_REF_NAME",
            "CI_COMMIT_REF_NAME",
            "BUILDKITE_BRANCH",
            "CIRCLE_BRANCH",
            "GIT_BRANCH",
            "GITHUB_SHA",
            "CI_COMMIT_SHA",
            "BUILDKITE_COMMIT",
            "CIRCLE_SHA1",
            "GIT_COMMIT",
            "GIT_DIR",
        ] {
            c.env_remove(v);
        }
        c.current_dir(dir.path());
    };
    let mut c = agent(&dead_url(), &dir.path().join("spool"));
    bare(&mut c);
    let out = c
        .args(["run", "--no-publish", "--", "true"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("branch and commit unknown").count(), 1, "{err}");
    assert!(err.contains("set BRANCH and COMMIT"), "{err}");

    let mut c = agent(&dead_url(), &dir.path().join("spool"));
    bare(&mut c);
    let out = c
        .env("BRANCH", "main")
        .env("COMMIT", "abc")
        .args(["run", "--no-publish", "--", "true"])
        .output()
        .expect("agent runs");
    assert!(!stderr(&out).contains("unknown"), "{}", stderr(&out));
}
