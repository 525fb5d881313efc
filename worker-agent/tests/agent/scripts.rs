//! The shell around the agent: the GitHub Action's steps (ci/github/run.sh)
//! run with GitHub's environment variables, and `scripts/master`'s handling
//! of a NATS server that already listens (reused only with JetStream).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use futures::StreamExt;
use ptp_test_support::{NatsServer, python};

use super::check::create_stream;
use super::results::pytest_project;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The final messages of every run in the stream.
fn runs_in_stream(url: &str) -> Vec<ptp_nats::schema::RunInfo> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(ptp_nats::STREAM).await.expect("stream");
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
            .await
            .expect("consumer");
        let mut msgs = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .expect("fetch");
        let mut runs = Vec::new();
        while let Some(Ok(m)) = msgs.next().await {
            if let Ok(ptp_nats::schema::WireMessage::Run(r)) = ptp_nats::schema::decode(&m.payload)
            {
                runs.push(r.run);
            }
        }
        runs
    })
}

/// ci/github/run.sh with a clean environment: GitHub's variables, the
/// action's inputs, the built agent first on PATH.
fn action(workspace: &Path, summary: &Path, spool: &Path, inputs: &[(&str, &str)]) -> Output {
    let agent_dir = Path::new(env!("CARGO_BIN_EXE_ptp-agent"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let mut c = Command::new(repo().join("ci/github/run.sh"));
    c.env_clear()
        .current_dir(workspace)
        .env("PATH", format!("{}:/usr/bin:/bin", agent_dir.display()))
        .env("HOME", workspace)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", summary)
        .env("GITHUB_WORKSPACE", workspace)
        .env("GITHUB_ACTION_PATH", repo())
        .env("GITHUB_REF_NAME", "feature-1")
        .env("GITHUB_SHA", "deadbeef0123")
        .env("PTP_SPOOL_DIR", spool)
        .env("PTP_PUBLISH_TIMEOUT", "5");
    for (k, v) in inputs {
        c.env(k, v);
    }
    c.output().expect("run.sh runs")
}

#[test]
fn the_action_runs_the_tests_with_githubs_variables() {
    let nats = NatsServer::start();
    create_stream(&nats.url(), None);
    let dir = tempfile::tempdir().expect("dir");
    let project = dir.path().join("project");
    pytest_project(&project, false);
    let summary = dir.path().join("summary.md");
    let command = format!("'{}' -m pytest -q -p no:cacheprovider", python().display());
    let out = action(
        &project,
        &summary,
        &dir.path().join("spool"),
        &[
            ("PTP_INPUT_COMMAND", &command),
            ("PTP_INPUT_NATS_URL", &nats.url()),
            ("PTP_INPUT_PROJECT", "from-input"),
            ("PTP_INPUT_RETRIES", "2"),
            ("PTP_INPUT_SUMMARY", "true"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "pytest's code: {}",
        text(&out.stderr)
    );
    let md = std::fs::read_to_string(&summary).expect("summary written");
    assert!(md.contains("## ❌ Tests of from-input: failed"), "{md}");
    assert!(md.contains("branch <code>feature-1</code>"), "{md}");
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("::error file=tests/test_cart.py,"))
            .count(),
        2,
        "{stdout}"
    );
    let runs = runs_in_stream(&nats.url());
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(
        (r.project.as_str(), r.branch.as_deref(), r.commit.as_deref()),
        ("from-input", Some("feature-1"), Some("deadbeef0123"))
    );
    assert_eq!((r.counts.passed, r.counts.failed), (2, 2));

    // summary: false writes none; a bad input is refused before anything runs.
    let quiet = dir.path().join("quiet.md");
    let out = action(
        &project,
        &quiet,
        &dir.path().join("spool"),
        &[
            ("PTP_INPUT_COMMAND", "true"),
            ("PTP_INPUT_NATS_URL", &nats.url()),
            ("PTP_INPUT_SUMMARY", "false"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!quiet.exists());
    let out = action(
        &project,
        &quiet,
        &dir.path().join("spool"),
        &[("PTP_INPUT_COMMAND", " ")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout)
            .starts_with("::error title=ptp-agent::the action's 'command' input is empty")
    );
}

/// scripts/master with a fake `cargo` first on PATH (it prints what it was
/// asked instead of building), against a server on `port`.
fn scripts_master(port: u16, fake_bin: &Path) -> Output {
    Command::new(repo().join("scripts/master"))
        .env("PATH", format!("{}:/usr/bin:/bin", fake_bin.display()))
        .env("NATS_URL", format!("nats://127.0.0.1:{port}"))
        .output()
        .expect("scripts/master runs")
}

#[test]
fn scripts_master_reuses_a_local_nats_only_with_jetstream() {
    let dir = tempfile::tempdir().expect("dir");
    let cargo = dir.path().join("cargo");
    std::fs::write(&cargo, "#!/bin/sh\necho \"fake cargo $*\"\n").expect("fake cargo");
    std::process::Command::new("chmod")
        .args(["+x"])
        .arg(&cargo)
        .status()
        .expect("chmod");

    let plain = NatsServer::start_without_jetstream(&[]);
    let out = scripts_master(plain.port(), dir.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("already listening on 127.0.0.1:{}", plain.port())),
        "{err}"
    );
    assert!(err.contains("has no JetStream"), "{err}");
    assert!(err.contains("nats-server -js"), "{err}");
    assert!(
        !text(&out.stdout).contains("fake cargo"),
        "the master is not started"
    );

    let js = NatsServer::start();
    let out = scripts_master(js.port(), dir.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "reusing the NATS server already listening on 127.0.0.1:{}",
            js.port()
        )),
        "{err}"
    );
    assert!(err.contains("JetStream enabled"), "{err}");
    assert!(
        text(&out.stdout).starts_with("fake cargo run --release --locked --bin ptp-master"),
        "{}",
        text(&out.stdout)
    );

    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let out = scripts_master(port, dir.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not a NATS server"), "{err}");
}
