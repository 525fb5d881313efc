//! The agent in a GitHub Actions-like environment: a Markdown job summary
//! appended to `GITHUB_STEP_SUMMARY` and `::error` annotations for a real
//! pytest suite; without a summary the master is never asked anything.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ptp_test_support::{NatsServer, python};

use super::check::create_stream;
use super::results::pytest_project;
use super::{agent, stderr};

#[test]
fn github_gets_a_summary_and_annotations() {
    let nats = NatsServer::start();
    create_stream(&nats.url(), None);
    let dir = tempfile::tempdir().expect("dir");
    let project = dir.path().join("project");
    pytest_project(&project, false);
    let summary = dir.path().join("step_summary.md");
    std::fs::write(&summary, "earlier step\n").expect("summary so far");
    let out = agent(&nats.url(), &dir.path().join("spool"))
        .current_dir(&project)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_WORKSPACE", &project)
        .args(["run", "--"])
        .arg(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let md = std::fs::read_to_string(&summary).expect("summary");
    assert!(
        md.starts_with("earlier step\n## ❌ Tests of agent-tests: failed"),
        "{md}"
    );
    for needle in [
        "| 5 | 2 | 2 | 0 | 1 | 0 | 0 |",
        "### Failures (2)",
        "<code>tests.test&#95;cart::test&#95;sub</code>: AssertionError: three minus one",
        "### Slowest tests",
        &format!("Published to NATS at {}.", nats.url()),
    ] {
        assert!(md.contains(needle), "{needle:?} missing:\n{md}");
    }
    assert!(
        !md.contains("New failures"),
        "no master, no comparison: {md}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("::error "))
        .collect();
    assert_eq!(errors.len(), 2, "{stdout}");
    assert!(
        errors.iter().any(|l| l.starts_with(
            "::error file=tests/test_cart.py,line=7,title=failed tests.test_cart%3A%3Atest_sub::AssertionError: three minus one%0A"
        )),
        "{stdout}"
    );
}

/// A fake master that counts the connections it gets.
fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut s) = s {
                let _ = s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        }
    });
    (url, hits)
}

#[test]
fn without_a_summary_the_master_is_never_asked() {
    let nats = NatsServer::start();
    let (master, hits) = counting_listener();
    let dir = tempfile::tempdir().expect("dir");
    let base = |c: &mut std::process::Command| {
        c.env("MASTER_URL", &master)
            .env("GITHUB_ACTIONS", "true")
            .args(["run", "--no-publish", "--", "true"]);
    };
    let mut c = agent(&nats.url(), &dir.path().join("spool"));
    base(&mut c);
    let out = c.output().expect("agent runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = dir.path().join("summary.md");
    let mut c = agent(&nats.url(), &dir.path().join("spool"));
    c.env("GITHUB_STEP_SUMMARY", &summary).arg("--no-summary");
    base(&mut c);
    let out = c.output().expect("agent runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no summary: no query");
    assert!(
        !summary.exists(),
        "--no-summary wins over GITHUB_STEP_SUMMARY"
    );

    let mut c = agent(&nats.url(), &dir.path().join("spool"));
    c.env("GITHUB_STEP_SUMMARY", &summary);
    base(&mut c);
    let out = c.output().expect("agent runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        hits.load(Ordering::SeqCst) > 0,
        "with a summary the master is asked"
    );
    let md = std::fs::read_to_string(&summary).expect("summary");
    assert!(
        md.contains("cannot take it now (500)"),
        "the summary says why: {md}"
    );
}
