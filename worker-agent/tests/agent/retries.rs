//! `--retries` with a real pytest suite: a test that fails the first time
//! and passes the second (a marker file), one that always fails, one that
//! always passes. Every test appends its name to a log, so the tests show
//! what each attempt ran. A template (`--rerun-command`) drives a runner
//! the agent does not know.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use super::{agent, dead_url, stderr};

/// The suite in `dir/tests`; its log and marker live in `dir/state`.
fn flaky_project(dir: &Path, crash: bool) {
    std::fs::create_dir_all(dir.join("tests")).expect("tests dir");
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    std::fs::write(dir.join("pytest.ini"), "[pytest]\n").expect("ini");
    let first_failure = if crash {
        "os.kill(os.getpid(), 9)"
    } else {
        "assert False, 'first attempt fails'"
    };
    std::fs::write(
        dir.join("tests/test_flaky.py"),
        format!(
            r#"import os, pathlib
STATE = pathlib.Path(__file__).parent.parent / "state"

def log(name):
    with open(STATE / "log", "a") as f:
        f.write(name + "\n")

def test_flaky():
    log("flaky")
    marker = STATE / "flaky-ran-once"
    if not marker.exists():
        marker.write_text("1")
        {first_failure}
"#
        ),
    )
    .expect("flaky");
    std::fs::write(
        dir.join("tests/test_other.py"),
        r#"import pathlib
STATE = pathlib.Path(__file__).parent.parent / "state"

def log(name):
    with open(STATE / "log", "a") as f:
        f.write(name + "\n")

def test_ok():
    log("ok")

def test_broken():
    log("broken")
    assert 1 == 2, "always fails"
"#,
    )
    .expect("other");
}

fn ran(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(dir.join("state/log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

fn run(dir: &Path, extra: &[&str], tests: &[&str]) -> (Output, Value) {
    let file = dir.join("results.json");
    let _ = std::fs::remove_file(&file);
    let out = agent(&dead_url(), &dir.join("spool"))
        .current_dir(dir)
        .args(["run", "--no-publish", "--results-json"])
        .arg(&file)
        .args(extra)
        .arg("--")
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(tests)
        .output()
        .expect("agent runs");
    let text = std::fs::read_to_string(&file).expect("results written");
    (out, serde_json::from_str(&text).expect("JSON"))
}

/// `(name, outcome, retries, flaky)` of every case, sorted.
fn cases(v: &Value) -> Vec<(String, String, u64, bool)> {
    let mut c: Vec<_> = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["outcome"].as_str().unwrap_or("").to_string(),
                c["retries"].as_u64().unwrap_or(0),
                c["flaky"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    c.sort();
    c
}

fn row(name: &str, outcome: &str, retries: u64, flaky: bool) -> (String, String, u64, bool) {
    (name.into(), outcome.into(), retries, flaky)
}

#[test]
fn retries_turn_a_flaky_failure_into_a_pass_and_keep_real_failures() {
    let dir = tempfile::tempdir().expect("dir");
    flaky_project(dir.path(), false);
    let (out, v) = run(dir.path(), &["--retries", "2"], &[]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the always-failing test fails the run: {err}"
    );
    assert_eq!(
        cases(&v),
        [
            row("test_broken", "failed", 2, false),
            row("test_flaky", "passed", 1, true),
            row("test_ok", "passed", 0, false),
        ]
    );
    assert_eq!(v["status"], "failed");
    assert_eq!(
        ran(dir.path()),
        ["broken", "broken", "broken", "flaky", "flaky", "ok"],
        "only the failed tests were rerun, the passing one once"
    );
    assert!(
        err.contains("1 passed on retry (flaky), 1 failed every attempt"),
        "{err}"
    );
    assert!(
        v["note"].as_str().unwrap_or("").contains("passed on retry"),
        "{v}"
    );

    // Only the flaky test: it passes on its retry, so the run passes.
    let dir = tempfile::tempdir().expect("dir");
    flaky_project(dir.path(), false);
    let (out, v) = run(dir.path(), &["--retries", "2"], &["tests/test_flaky.py"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        (v["status"].as_str(), v["exit_code"].as_i64()),
        (Some("passed"), Some(0))
    );
    assert_eq!(cases(&v), [row("test_flaky", "passed", 1, true)]);
    assert_eq!(ran(dir.path()), ["flaky", "flaky"]);

    // Without --retries the same suite fails, and nothing is rerun.
    let dir = tempfile::tempdir().expect("dir");
    flaky_project(dir.path(), false);
    let (out, _) = run(dir.path(), &[], &["tests/test_flaky.py"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(ran(dir.path()), ["flaky"]);
}

/// A crash is not a flaky test: the run killed by a signal is not
/// retried, though a retry would pass.
#[test]
fn a_crashed_run_is_never_retried() {
    let dir = tempfile::tempdir().expect("dir");
    flaky_project(dir.path(), true);
    let (out, v) = run(dir.path(), &["--retries", "2"], &["tests/test_flaky.py"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(137), "{err}");
    assert!(err.contains("not retried: the run ended crashed"), "{err}");
    assert_eq!(v["status"], "crashed");
    assert_eq!(ran(dir.path()), ["flaky"], "one attempt only");
}

/// A runner the agent does not know: a shell script writing JUnit XML,
/// retried through `--rerun-command`. The failing test's name has a quote
/// and spaces: as a whole-word `{tests}` it is one argument, inside
/// `sh -c '...'` it is shell-quoted, and either way it arrives unchanged.
#[test]
fn a_rerun_command_template_selects_the_failed_tests() {
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path();
    // No arguments: every test, "it's a > test" fails the first time. With
    // arguments: only the named tests, which pass, and the names logged.
    std::fs::write(
        p.join("run.sh"),
        r#"#!/bin/sh
out=report.xml
if [ $# -eq 0 ]; then
  printf '%s' '<testsuite><testcase classname="suite" name="fine"/><testcase classname="suite" name="it&apos;s a &gt; test"><failure message="first"/></testcase></testsuite>' > $out
  exit 1
fi
{ printf '<testsuite>'; for t in "$@"; do printf '<testcase classname="suite" name="%s"/>' "$(printf '%s' "$t" | sed "s/'/\&apos;/g; s/>/\&gt;/g")"; echo "$t" >> args.log; done; printf '</testsuite>'; } > $out
"#,
    )
    .expect("script");
    for template in ["sh run.sh {tests}", r#"sh -c "sh run.sh {tests}""#] {
        let _ = std::fs::remove_file(p.join("args.log"));
        let file = p.join("results.json");
        let out = agent(&dead_url(), &p.join("spool"))
            .current_dir(p)
            .args([
                "run",
                "--no-publish",
                "--junit",
                "report.xml",
                "--retries",
                "1",
            ])
            .args(["--rerun-command", template, "--results-json"])
            .arg(&file)
            .args(["--", "sh", "run.sh"])
            .output()
            .expect("agent runs");
        assert_eq!(out.status.code(), Some(0), "{template}: {}", stderr(&out));
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("results")).expect("JSON");
        assert_eq!(
            cases(&v),
            [
                row("fine", "passed", 0, false),
                row("it's a > test", "passed", 1, true)
            ],
            "{template}"
        );
        assert_eq!(
            std::fs::read_to_string(p.join("args.log")).expect("rerun ran"),
            "it's a > test\n",
            "{template}: one argument, unchanged"
        );
    }
    // An unknown runner without a template is not retried, and says why.
    let out = agent(&dead_url(), &p.join("spool"))
        .current_dir(p)
        .args([
            "run",
            "--no-publish",
            "--junit",
            "report.xml",
            "--retries",
            "1",
        ])
        .args(["--", "sh", "run.sh"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("give --rerun-command"),
        "{}",
        stderr(&out)
    );
}
