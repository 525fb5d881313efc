//! `ptp-agent check` against real brokers, one per misconfiguration it can
//! meet: each exits 1 with the reason and the fix, and a good setup (also
//! the locked-down `agent` user of deploy/nats.conf) exits 0 and leaves the
//! stream empty.

use std::io::Write;
use std::path::Path;
use std::process::Output;

use ptp_test_support::NatsServer;

use super::{agent, dead_url, stderr};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `check` with `env` on top of the test defaults.
fn check(url: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("dir");
    let mut c = agent(url, &dir.path().join("spool"));
    c.env("BRANCH", "feature/x").env("COMMIT", "0123abcd");
    for (k, v) in env {
        c.env(k, v);
    }
    c.arg("check").output().expect("agent runs")
}

/// Creates the results stream the way the master does, as `user`.
pub(super) fn create_stream(url: &str, user: Option<(&str, &str)>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut o = async_nats::ConnectOptions::new();
        if let Some((u, p)) = user {
            o = o.user_and_password(u.into(), p.into());
        }
        let client = o.connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        ptp_nats::ensure_stream(&js, &ptp_nats::StreamSettings::default())
            .await
            .expect("stream");
    });
}

fn stream_messages(url: &str, user: Option<(&str, &str)>) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut o = async_nats::ConnectOptions::new();
        if let Some((u, p)) = user {
            o = o.user_and_password(u.into(), p.into());
        }
        let client = o.connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(ptp_nats::STREAM).await.expect("stream");
        s.info().await.expect("info").state.messages
    })
}

fn assert_problem(o: &Output, reason: &str, fix: &str) {
    let out = stdout(o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(o));
    let problem = out
        .lines()
        .find(|l| l.starts_with("problem: "))
        .unwrap_or_else(|| panic!("no problem line in:\n{out}"));
    assert!(
        problem.contains(reason),
        "expected {reason:?} in {problem:?}\n{out}"
    );
    let fix_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("fix: "))
        .unwrap_or_else(|| panic!("no fix line in:\n{out}"));
    assert!(
        fix_line.contains(fix),
        "expected {fix:?} in {fix_line:?}\n{out}"
    );
}

#[test]
fn a_good_setup_passes_and_prints_what_a_run_sends() {
    let nats = NatsServer::start();
    create_stream(&nats.url(), None);
    let o = check(&nats.url(), &[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    for needle in [
        "project:   agent-tests",
        "branch:    feature/x",
        "commit:    0123abcd",
        "worker id: w-test",
        "transport: nats",
        "ptp.results.cases",
        "stream PTP_RESULTS captures ptp.results.>",
        "would be delivered",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    assert_eq!(
        stream_messages(&nats.url(), None),
        0,
        "the probe is not stored"
    );
}

#[test]
fn the_locked_down_agent_user_passes_and_stores_nothing() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats.conf");
    let nats = NatsServer::start_with_env(
        &["-c", &conf.to_string_lossy()],
        &[
            ("PTP_AGENT_NATS_PASSWORD", "agent-pw"),
            ("PTP_MASTER_NATS_PASSWORD", "master-pw"),
        ],
    );
    create_stream(&nats.url(), Some(("master", "master-pw")));
    let o = check(
        &nats.url(),
        &[("NATS_USER", "agent"), ("NATS_PASSWORD", "agent-pw")],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stream_messages(&nats.url(), Some(("master", "master-pw"))),
        0
    );
    let wrong = check(
        &nats.url(),
        &[("NATS_USER", "agent"), ("NATS_PASSWORD", "not-it")],
    );
    assert_problem(&wrong, "refused the credentials", "PTP_AGENT_NATS_PASSWORD");
}

#[test]
fn wrong_or_missing_credentials_are_told_apart() {
    let nats = NatsServer::start_with_args(&["--user", "agent", "--pass", "right"]);
    let none = check(&nats.url(), &[]);
    assert_problem(
        &none,
        "requires credentials and none are set",
        "NATS_USER and NATS_PASSWORD",
    );
    let wrong = check(
        &nats.url(),
        &[("NATS_USER", "agent"), ("NATS_PASSWORD", "wrong")],
    );
    assert_problem(&wrong, "refused the credentials", "NATS_PASSWORD");

    let with_token = NatsServer::start_with_args(&["--auth", "s3cret"]);
    let bad_token = check(&with_token.url(), &[("NATS_TOKEN", "guess")]);
    assert_problem(&bad_token, "refused the credentials", "NATS_TOKEN");
}

#[test]
fn a_server_without_jetstream_is_named() {
    let nats = NatsServer::start_without_jetstream(&[]);
    let o = check(&nats.url(), &[]);
    assert_problem(&o, "JetStream is not enabled", "-js");
}

#[test]
fn a_missing_stream_is_named() {
    let nats = NatsServer::start();
    let o = check(&nats.url(), &[]);
    assert_problem(&o, "stream PTP_RESULTS is missing", "start ptp-master");
}

#[test]
fn tls_asked_of_a_plain_server_is_a_mismatch() {
    let nats = NatsServer::start();
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let o = check(&url, &[]);
    assert_problem(&o, "TLS mismatch", "nats:// URL");
}

#[test]
fn nothing_listening_or_not_nats_is_explained() {
    let o = check(&dead_url(), &[]);
    assert_problem(&o, "cannot reach a NATS server", "MASTER_URL");

    // An HTTP server where NATS was expected (NATS_URL pointing at the master).
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let o = check(&format!("nats://127.0.0.1:{port}"), &[]);
    assert_problem(&o, "not as a NATS server", "not the master's HTTP API");
}
