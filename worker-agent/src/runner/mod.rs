//! What the agent knows about each test runner, in one place: how to
//! recognise it (from the command, or from the project's files), which
//! arguments and environment make it write a JUnit report the agent reads,
//! how to select tests (a user's filter, or exact tests by their case in a
//! report, for `--retries` and `--failed-from`) and how to list tests.
//!
//! | runner | command | project | report | select | list |
//! |---|---|---|---|---|---|
//! | pytest | `pytest`, `python -m pytest` (also behind `uv run` ...) | `pyproject.toml`, `pytest.ini`, `setup.cfg`, `tox.ini`, `conftest.py` | `--junitxml=<tmp>` | node ids | `--collect-only -q` |
//! | vitest | `vitest` (`npx vitest` ...) | `package.json` naming vitest | `--reporter=junit --outputFile.junit=<tmp>` | `-t <pattern>` | `vitest list --json` |
//! | jest | `jest` | `package.json` naming jest | jest-junit (when installed): `--reporters`, `JEST_JUNIT_OUTPUT_FILE` | `-t <pattern>` | `--listTests` (files) |
//! | node | `node --test` | `package.json` script with `node --test` | `--test-reporter=junit` to `<tmp>` | `--test-name-pattern` | none (node 20 cannot list) |
//! | go | `gotestsum`, `go test` (run through gotestsum) | `go.mod` | `gotestsum --junitfile <tmp>` | `-run '^(A\|B)$'` | `go test -list .` |
//! | nextest | `cargo nextest run` | `Cargo.toml` | a tool config with a `ptp-agent` profile whose JUnit path is `<tmp>` | `-E 'binary_id(=b) & test(=t)'` | `cargo nextest list` |
//!
//! # Guarantees
//!
//! - Never a shell: every command is an argv, and selections are argv
//!   elements. Names that go into a regular expression are escaped, so a
//!   selection matches exactly the names it came from (never more tests by
//!   accident; a name the runner reports differently is simply not rerun).
//! - A user's own report option (`--junitxml`, `--reporters`, `--profile`,
//!   `--junitfile`, `--test-reporter`) is respected: the agent reads that
//!   file when it knows where it is, and otherwise says to name it with
//!   `--junit`.
//! - Selecting tests by their cases keeps the command's options and drops
//!   only the parts that select (pytest's path arguments, an earlier `-t`,
//!   `-run`, `--test-name-pattern`, `-E`), so a rerun runs in the same
//!   environment. A case that cannot be turned into a selection is returned
//!   as unmapped, never guessed.
//!
//! # Layout
//! - this file: [`Runner`], [`Plan`], [`Selection`], names;
//! - `command`: recognising a runner from a command or a project;
//! - `plan`: report arguments, filters ([`Runner::plan`]);
//! - `select`: rerunning exact tests ([`Runner::select`]);
//! - `list`: listing tests ([`Runner::list_command`]);
//! - `ids`: pytest node ids and a case's file ([`node_id`], [`case_file`]);
//! - `args`: reading and editing argv.

use std::path::PathBuf;

mod args;
mod command;
mod ids;
mod list;
mod plan;
mod select;

pub use ids::{case_file, node_id};
pub use select::{regex_alternation, regex_escape};

/// A test runner the agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runner {
    /// pytest.
    Pytest,
    /// Vitest.
    Vitest,
    /// Jest (with jest-junit for the report).
    Jest,
    /// Node's built-in test runner, `node --test`.
    Node,
    /// `go test`, through gotestsum for the report.
    Go,
    /// cargo-nextest.
    Nextest,
}

/// The order names are listed in messages and detection is tried in.
pub const ALL: [Runner; 6] = [
    Runner::Pytest,
    Runner::Vitest,
    Runner::Jest,
    Runner::Node,
    Runner::Go,
    Runner::Nextest,
];

/// The runners' names, for messages: `pytest, vitest, ...`.
pub fn names() -> String {
    ALL.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
}

/// What the runner needs to write its report, decided before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The command to run (with report arguments added).
    pub argv: Vec<String>,
    /// Extra environment for the command.
    pub env: Vec<(String, String)>,
    /// The runner, when known.
    pub runner: Option<Runner>,
    /// The JUnit file the runner will write, when the agent knows it.
    pub junit_path: Option<PathBuf>,
    /// Why the agent could not arrange a report, when it could not.
    pub note: Option<String>,
}

/// Exact tests turned into a command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// The command that runs them (before [`Runner::plan`] adds the report).
    pub argv: Vec<String>,
    /// The selectors, as passed (node ids, names, packages...).
    pub selectors: Vec<String>,
    /// `test_id`s of the cases selected.
    pub selected: Vec<String>,
    /// `test_id`s of the cases that could not be selected.
    pub unmapped: Vec<String>,
}

/// Files whose presence in a directory says "pytest".
pub const PYTEST_MARKERS: [&str; 5] = [
    "pyproject.toml",
    "pytest.ini",
    "setup.cfg",
    "tox.ini",
    "conftest.py",
];

impl Runner {
    /// Its name, as `--runner` takes it and runs record it.
    pub fn name(self) -> &'static str {
        match self {
            Runner::Pytest => "pytest",
            Runner::Vitest => "vitest",
            Runner::Jest => "jest",
            Runner::Node => "node",
            Runner::Go => "go",
            Runner::Nextest => "nextest",
        }
    }

    /// The runner called `name` (case-insensitive; `gotestsum`,
    /// `cargo-nextest` and `node-test` are accepted too).
    pub fn from_name(name: &str) -> Option<Runner> {
        let n = name.trim().to_ascii_lowercase();
        let alias = match n.as_str() {
            "gotestsum" | "go-test" => "go",
            "cargo-nextest" => "nextest",
            "node-test" | "node:test" => "node",
            other => other,
        };
        ALL.into_iter().find(|r| r.name() == alias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptp_nats::schema::Outcome;
    use ptp_nats::schema::TestCase;
    use std::path::Path;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn case(classname: Option<&str>, name: &str) -> TestCase {
        TestCase {
            test_id: match classname {
                Some(c) => format!("{c}::{name}"),
                None => name.to_string(),
            },
            file: None,
            classname: classname.map(String::from),
            name: name.into(),
            outcome: Outcome::Failed,
            duration_secs: 0.0,
            message: None,
            traceback: None,
            output: None,
            retries: 0,
            flaky: false,
            owners: Vec::new(),
            quarantined: false,
        }
    }

    #[test]
    fn commands_are_recognised() {
        for (cmd, runner) in [
            ("pytest -q", Runner::Pytest),
            ("py.test", Runner::Pytest),
            ("/usr/bin/pytest tests", Runner::Pytest),
            ("python -m pytest -x", Runner::Pytest),
            ("python3.11 -m pytest", Runner::Pytest),
            ("uv run pytest", Runner::Pytest),
            ("poetry run python -m pytest", Runner::Pytest),
            ("npx vitest run", Runner::Vitest),
            ("npx --no-install vitest run", Runner::Vitest),
            ("pnpm exec vitest", Runner::Vitest),
            ("node_modules/.bin/jest --ci", Runner::Jest),
            ("yarn jest", Runner::Jest),
            ("node --test test/", Runner::Node),
            ("go test ./...", Runner::Go),
            ("gotestsum -- ./...", Runner::Go),
            ("cargo nextest run --workspace", Runner::Nextest),
        ] {
            assert_eq!(
                Runner::of_command(&v(cmd)).map(|r| r.0),
                Some(runner),
                "{cmd}"
            );
        }
        for cmd in [
            "npm test",
            "cargo test",
            "python script.py",
            "python -m unittest",
            "node index.js",
            "npx eslint",
        ] {
            assert_eq!(Runner::of_command(&v(cmd)), None, "{cmd}");
        }
        assert_eq!(Runner::from_name("GOTESTSUM"), Some(Runner::Go));
        assert_eq!(Runner::from_name("cargo-nextest"), Some(Runner::Nextest));
        assert_eq!(Runner::from_name("maven"), None);
    }

    #[test]
    fn pytest_gets_a_junitxml_unless_it_has_one() {
        let dir = Path::new("/tmp/r");
        let p = Runner::Pytest.plan(&v("python -m pytest -q"), dir, 1);
        assert_eq!(
            p.argv.last().map(String::as_str),
            Some("--junitxml=/tmp/r/pytest-junit-1.xml")
        );
        let p = Runner::Pytest.plan(&v("pytest --junitxml=out/r.xml"), dir, 1);
        assert_eq!(p.junit_path, Some(PathBuf::from("out/r.xml")));
        assert_eq!(p.argv, v("pytest --junitxml=out/r.xml"));
        let p = Runner::Pytest.plan(&v("python -m pytest --junit-xml out.xml -q"), dir, 1);
        assert_eq!(p.junit_path, Some(PathBuf::from("out.xml")));
    }

    #[test]
    fn other_runners_get_their_report_arguments() {
        let dir = Path::new("/tmp/r");
        let p = Runner::Vitest.plan(&v("npx vitest run"), dir, 2);
        assert_eq!(
            p.argv,
            v(
                "npx vitest run --reporter=default --reporter=junit --outputFile.junit=/tmp/r/vitest-junit-2.xml"
            )
        );
        let p = Runner::Node.plan(&v("node --test test/"), dir, 1);
        assert_eq!(
            p.argv,
            v(
                "node --test-reporter=spec --test-reporter-destination=stdout --test-reporter=junit --test-reporter-destination=/tmp/r/node-junit-1.xml --test test/"
            )
        );
        let p = Runner::Go.plan(&v("go test -count=1 ./..."), dir, 1);
        assert_eq!(
            p.argv,
            v("gotestsum --junitfile=/tmp/r/go-junit-1.xml -- -count=1 ./...")
        );
        let p = Runner::Go.plan(&v("gotestsum --junitfile my.xml -- ./..."), dir, 1);
        assert_eq!(p.junit_path, Some(PathBuf::from("my.xml")));
        let p = Runner::Nextest.plan(&v("cargo nextest run --profile ci"), dir, 1);
        assert!(p.junit_path.is_none() && p.note.is_some());
        let p = Runner::Vitest.plan(&v("vitest --reporter=dot"), dir, 1);
        assert!(p.junit_path.is_none() && p.note.is_some());
    }

    #[test]
    fn selections_replace_what_selected_and_keep_options() {
        let root = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(root.path().join("tests")).expect("tests");
        std::fs::write(root.path().join("tests/test_a.py"), "").expect("a");
        let failed = [
            case(Some("tests.test_a.TestX"), "test_one[1]"),
            case(Some("tests.test_gone"), "test_two"),
        ];
        let refs: Vec<&TestCase> = failed.iter().collect();
        let s = Runner::Pytest.select(
            &v("python -m pytest -q -p no:cacheprovider tests -k cart --rootdir tests"),
            &refs,
            root.path(),
        );
        assert_eq!(
            s.argv,
            v(
                "python -m pytest -q -p no:cacheprovider -k cart --rootdir tests tests/test_a.py::TestX::test_one[1]"
            )
        );
        assert_eq!(s.unmapped, vec!["tests.test_gone::test_two".to_string()]);

        let js = [case(Some("src/a.test.js"), "math > adds (1+1)")];
        let refs: Vec<&TestCase> = js.iter().collect();
        let s = Runner::Vitest.select(&v("npx vitest run -t old"), &refs, root.path());
        assert_eq!(
            s.argv,
            vec![
                "npx",
                "vitest",
                "run",
                "-t",
                r"^(?:math(?: | > )adds \(1\+1\))$"
            ]
        );

        let go = [
            case(Some("example.com/m/calc"), "TestTable/two"),
            case(Some("example.com/m/calc"), "TestSub"),
        ];
        let refs: Vec<&TestCase> = go.iter().collect();
        let s = Runner::Go.select(&v("gotestsum -- -count=1 -run X ./..."), &refs, root.path());
        assert_eq!(
            s.argv,
            v("gotestsum -- -count=1 ./... -run ^(?:TestTable|TestSub)$")
        );
        let s = Runner::Go.select(&v("gotestsum"), &refs, root.path());
        assert_eq!(
            s.argv,
            v("gotestsum -- -run ^(?:TestTable|TestSub)$ example.com/m/calc")
        );

        let nx = [case(Some("nx"), "tests::subtracts")];
        let refs: Vec<&TestCase> = nx.iter().collect();
        let s = Runner::Nextest.select(&v("cargo nextest run -E all()"), &refs, root.path());
        assert_eq!(
            s.argv,
            vec![
                "cargo",
                "nextest",
                "run",
                "-E",
                "(binary_id(=nx) & test(=tests::subtracts))"
            ]
        );
    }

    #[test]
    fn listing_commands_and_their_output() {
        assert_eq!(
            Runner::Vitest
                .list_command(&v("npx vitest run src"))
                .expect("vitest"),
            v("npx vitest list src --json")
        );
        assert_eq!(
            Runner::Vitest
                .list_command(&v("npx --no-install vitest run"))
                .expect("vitest"),
            v("npx --no-install vitest list --json")
        );
        assert_eq!(
            Runner::Go
                .list_command(&v("gotestsum -- -count=1 ./pkg/..."))
                .expect("go"),
            v("go test -list . -count=1 ./pkg/...")
        );
        assert_eq!(
            Runner::Nextest
                .list_command(&v("cargo nextest run -p x"))
                .expect("nextest"),
            v("cargo nextest list -p x --message-format oneline")
        );
        assert!(Runner::Node.list_command(&v("node --test")).is_err());
        let root = Path::new("/p");
        assert_eq!(
            Runner::Go.parse_list("TestA\nTestB\nok  \texample.com/m/a\t0.01s\n", root),
            ["example.com/m/a::TestA", "example.com/m/a::TestB"]
        );
        assert_eq!(
            Runner::Vitest.parse_list(r#"[{"name":"m > a","file":"/p/src/a.test.js"}]"#, root),
            ["src/a.test.js::m > a"]
        );
        assert_eq!(
            Runner::Nextest.parse_list("nx tests::adds\n", root),
            ["nx::tests::adds"]
        );
    }

    #[test]
    fn detection_reads_the_project() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(Runner::detect(dir.path()), None);
        std::fs::create_dir(dir.path().join("tests")).expect("tests");
        std::fs::write(dir.path().join("tests/helper.py"), "").expect("helper");
        assert_eq!(Runner::detect(dir.path()), None);
        std::fs::write(dir.path().join("tests/cart_test.py"), "").expect("test");
        assert_eq!(Runner::detect(dir.path()), Some(Runner::Pytest));
        std::fs::remove_file(dir.path().join("tests/cart_test.py")).expect("rm");
        let write =
            |name: &str, body: &str| std::fs::write(dir.path().join(name), body).expect("w");
        write("Cargo.toml", "");
        assert_eq!(Runner::detect(dir.path()), Some(Runner::Nextest));
        write("go.mod", "module x\n");
        assert_eq!(Runner::detect(dir.path()), Some(Runner::Go));
        write("package.json", r#"{"scripts":{"test":"node --test"}}"#);
        assert_eq!(Runner::detect(dir.path()), Some(Runner::Node));
        write("package.json", r#"{"devDependencies":{"jest":"^30"}}"#);
        assert_eq!(Runner::detect(dir.path()), Some(Runner::Jest));
        write("package.json", r#"{"devDependencies":{"vitest":"^3"}}"#);
        assert_eq!(Runner::detect(dir.path()), Some(Runner::Vitest));
        write("tox.ini", "");
        assert_eq!(Runner::detect(dir.path()), Some(Runner::Pytest));
    }

    #[test]
    fn classnames_map_to_the_longest_existing_file() {
        let list = [
            "tests/test_cart.py",
            "tests/sub/test_deep.py",
            "test_top.py",
        ];
        let f = |p: &str| list.contains(&p);
        let id = |c: Option<&str>, n: &str| node_id(f, None, c, n);
        assert_eq!(
            id(Some("tests.test_cart.TestCheckout"), "test_param[a.b/c]").as_deref(),
            Some("tests/test_cart.py::TestCheckout::test_param[a.b/c]")
        );
        assert_eq!(
            id(Some("tests.sub.test_deep"), "test_deep").as_deref(),
            Some("tests/sub/test_deep.py::test_deep")
        );
        assert_eq!(
            id(None, "tests.sub.test_deep").as_deref(),
            Some("tests/sub/test_deep.py")
        );
        assert_eq!(id(Some("tests.test_gone"), "test_a"), None);
        assert_eq!(id(Some("tests..test_cart"), "test_a"), None);
        assert_eq!(id(Some("tests.test_cart"), "bad\nname"), None);
        assert_eq!(
            node_id(
                f,
                Some("./tests/test_cart.py"),
                Some("tests.test_cart"),
                "t"
            )
            .as_deref(),
            Some("tests/test_cart.py::t")
        );
        for bad in [
            "../tests/test_cart.py",
            "/abs/tests/test_cart.py",
            "-p/x.py",
        ] {
            assert_eq!(
                node_id(f, Some(bad), Some("tests.test_cart"), "t").as_deref(),
                Some("tests/test_cart.py::t"),
                "{bad}"
            );
        }
    }
}
