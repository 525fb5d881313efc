//! Each runner the machine has, on a small real project: the agent
//! detects it from the project (no command given), arranges its JUnit
//! report, reruns exactly the failed tests with `--failed-from`, and lists
//! the tests with `ptp-agent list`. Node's runner and cargo-nextest are
//! always here; vitest comes from npm (`scripts/test` installs it) and Go
//! with gotestsum from Debian's packages: without them their test says so
//! and returns.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::{agent, dead_url, stderr};

/// `(test_id, outcome)` of a results file, sorted.
fn outcomes(v: &Value) -> Vec<(String, String)> {
    let mut o: Vec<(String, String)> = v["cases"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["test_id"].as_str().unwrap_or("").to_string(),
                        c["outcome"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    o.sort();
    o
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("results file written");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `ptp-agent run --no-publish --results-json <dir>/<name> [extra]` in
/// `project`, with `env`.
fn run_in(project: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> (Output, Value) {
    let file = project.join(name);
    let mut c = agent(&dead_url(), &project.join(".spool"));
    c.current_dir(project)
        .envs(env.iter().copied())
        .args(["run", "--no-publish", "--results-json"])
        .arg(&file)
        .args(extra);
    let out = c.output().expect("agent runs");
    let v = read(&file);
    (out, v)
}

fn list_in(project: &Path, env: &[(&str, &str)]) -> (Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ptp-agent"))
        .current_dir(project)
        .envs(env.iter().copied())
        .args(["list", "--json"])
        .output()
        .expect("agent runs");
    let v = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("list --json is not JSON ({e}): {}", stderr(&out)))
    };
    (out, v)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The project: a `node --test` script; one suite with a pass and a
/// failure, a top-level pass, a skip.
#[test]
fn node_test_runner_is_detected_reported_and_rerun() {
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path();
    std::fs::create_dir(p.join("test")).expect("test dir");
    std::fs::write(
        p.join("package.json"),
        r#"{"name":"calc","private":true,"scripts":{"test":"node --test"}}"#,
    )
    .expect("package.json");
    std::fs::write(
        p.join("test/math.test.js"),
        r#"const { describe, it, test } = require('node:test');
const assert = require('node:assert');
describe('math', () => {
  it('adds', () => { assert.strictEqual(1 + 1, 2); });
  it('subtracts (badly)', () => { assert.strictEqual(3 - 1, 1); });
});
test('top level', () => {});
test('skipped', { skip: true }, () => {});
"#,
    )
    .expect("test file");
    let (out, v) = run_in(p, "first.json", &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        (v["runner"].as_str(), v["status"].as_str()),
        (Some("node"), Some("failed"))
    );
    assert_eq!(
        outcomes(&v),
        pairs(&[
            ("test::adds", "passed"),
            ("test::subtracts (badly)", "failed"),
            ("test::top level", "passed"),
            ("test::skipped", "skipped"),
        ])
    );
    let (out, v) = run_in(p, "rerun.json", &["--failed-from", "first.json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let ran: Vec<_> = outcomes(&v)
        .into_iter()
        .filter(|(_, o)| o != "skipped")
        .collect();
    assert_eq!(ran, pairs(&[("test::subtracts (badly)", "failed")]), "{v}");
    let (out, v) = list_in(p, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot list tests without running them"),
        "{}",
        stderr(&out)
    );
    assert_eq!(v, Value::Null);
}

/// vitest from npm: detected from package.json, its built-in JUnit
/// reporter, `-t` with the failed test's full name, `vitest list`.
#[test]
fn vitest_is_detected_reported_rerun_and_listed() {
    let modules = match ptp_test_support::js_modules() {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED vitest: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path();
    std::fs::create_dir(p.join("src")).expect("src");
    std::os::unix::fs::symlink(&modules, p.join("node_modules")).expect("link node_modules");
    std::fs::write(
        p.join("package.json"),
        r#"{"name":"calc","private":true,"type":"module","devDependencies":{"vitest":"3.2.7"}}"#,
    )
    .expect("package.json");
    std::fs::write(
        p.join("src/math.test.js"),
        r#"import { describe, it, expect } from 'vitest';
describe('math', () => {
  it('adds', () => { expect(1 + 1).toBe(2); });
  it('subtracts > (badly)', () => { expect(3 - 1).toBe(1); });
});
it('top level', () => { expect(true).toBe(true); });
"#,
    )
    .expect("test file");
    let (out, v) = run_in(p, "first.json", &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        (v["runner"].as_str(), v["status"].as_str()),
        (Some("vitest"), Some("failed"))
    );
    assert_eq!(
        outcomes(&v),
        pairs(&[
            ("src/math.test.js::math > adds", "passed"),
            ("src/math.test.js::math > subtracts > (badly)", "failed"),
            ("src/math.test.js::top level", "passed"),
        ])
    );
    let (out, v) = run_in(p, "rerun.json", &["--failed-from", "first.json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let ran: Vec<_> = outcomes(&v)
        .into_iter()
        .filter(|(_, o)| o != "skipped")
        .collect();
    assert_eq!(
        ran,
        pairs(&[("src/math.test.js::math > subtracts > (badly)", "failed")]),
        "{v}"
    );
    let (out, v) = list_in(p, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        strings(&v["tests"]),
        [
            "src/math.test.js::math > adds",
            "src/math.test.js::math > subtracts > (badly)",
            "src/math.test.js::top level"
        ]
    );
}

/// Go through gotestsum: a failing subtest reruns with its parent.
#[test]
fn go_test_through_gotestsum_is_reported_rerun_and_listed() {
    if !ptp_test_support::have("go") || !ptp_test_support::have("gotestsum") {
        eprintln!(
            "SKIPPED go: go and gotestsum are not installed (scripts/test installs them: apt-get install golang-go gotestsum)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path();
    std::fs::create_dir(p.join("calc")).expect("pkg");
    std::fs::write(p.join("go.mod"), "module example.com/shop\n\ngo 1.19\n").expect("go.mod");
    std::fs::write(
        p.join("calc/calc_test.go"),
        r#"package calc

import "testing"

func TestAdd(t *testing.T) {}
func TestSub(t *testing.T) { t.Fatal("three minus one") }
func TestTable(t *testing.T) {
	t.Run("one", func(t *testing.T) {})
	t.Run("two", func(t *testing.T) { t.Fatal("two") })
}
"#,
    )
    .expect("test file");
    let cache = p.join(".gocache");
    let cache = cache.to_string_lossy().into_owned();
    let env = [("GOCACHE", cache.as_str()), ("GOFLAGS", "-count=1")];
    let (out, v) = run_in(p, "first.json", &[], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        (v["runner"].as_str(), v["status"].as_str()),
        (Some("go"), Some("failed"))
    );
    let pkg = "example.com/shop/calc";
    let id = |n: &str| format!("{pkg}::{n}");
    let expected = |list: &[(&str, &str)]| {
        let mut v: Vec<(String, String)> =
            list.iter().map(|(n, o)| (id(n), o.to_string())).collect();
        v.sort();
        v
    };
    assert_eq!(
        outcomes(&v),
        expected(&[
            ("TestAdd", "passed"),
            ("TestSub", "failed"),
            ("TestTable", "failed"),
            ("TestTable/one", "passed"),
            ("TestTable/two", "failed"),
        ])
    );
    let (out, v) = run_in(p, "rerun.json", &["--failed-from", "first.json"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        outcomes(&v),
        expected(&[
            ("TestSub", "failed"),
            ("TestTable", "failed"),
            ("TestTable/one", "passed"),
            ("TestTable/two", "failed"),
        ]),
        "TestAdd is not rerun"
    );
    let (out, v) = list_in(p, &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        strings(&v["tests"]),
        [id("TestAdd"), id("TestSub"), id("TestTable")]
    );
}

/// cargo-nextest on a tiny crate: the agent's tool config gives nextest
/// a JUnit path; `-E` selects the failed test.
#[test]
fn nextest_is_detected_reported_rerun_and_listed() {
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path();
    std::fs::create_dir(p.join("src")).expect("src");
    std::fs::write(
        p.join("Cargo.toml"),
        "[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .expect("Cargo.toml");
    std::fs::write(
        p.join("src/lib.rs"),
        r#"#[cfg(test)]
mod tests {
    #[test]
    fn adds() { assert_eq!(1 + 1, 2); }
    #[test]
    fn subtracts() { assert_eq!(3 - 1, 1, "three minus one"); }
}
"#,
    )
    .expect("lib.rs");
    let target = p.join("target");
    let target = target.to_string_lossy().into_owned();
    let env = [
        ("CARGO_TARGET_DIR", target.as_str()),
        ("CARGO_INCREMENTAL", "0"),
    ];
    let (out, v) = run_in(
        p,
        "first.json",
        &["--", "cargo", "nextest", "run", "--no-fail-fast"],
        &env,
    );
    assert_eq!(out.status.code(), Some(100), "{}", stderr(&out));
    assert_eq!(
        (v["runner"].as_str(), v["status"].as_str()),
        (Some("nextest"), Some("failed"))
    );
    assert_eq!(
        outcomes(&v),
        pairs(&[
            ("calc::tests::adds", "passed"),
            ("calc::tests::subtracts", "failed")
        ])
    );
    let (out, v) = run_in(
        p,
        "rerun.json",
        &[
            "--failed-from",
            "first.json",
            "--",
            "cargo",
            "nextest",
            "run",
            "--no-fail-fast",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(100), "{}", stderr(&out));
    assert_eq!(outcomes(&v), pairs(&[("calc::tests::subtracts", "failed")]));
    let (out, v) = list_in(p, &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        strings(&v["tests"]),
        ["calc::tests::adds", "calc::tests::subtracts"]
    );
}

/// Usage errors are said before anything runs.
#[test]
fn unknown_runners_and_empty_projects_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let out = agent(&dead_url(), &dir.path().join("spool"))
        .current_dir(dir.path())
        .args(["run", "--no-publish"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no test runner detected"),
        "{}",
        stderr(&out)
    );
    let out = agent(&dead_url(), &dir.path().join("spool"))
        .args(["run", "--no-publish", "--runner", "maven", "--", "true"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("pytest, vitest, jest, node, go, nextest"),
        "{}",
        stderr(&out)
    );
}
