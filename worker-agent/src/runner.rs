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

use std::path::{Component, Path, PathBuf};

use ptp_nats::schema::TestCase;

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

fn basename(s: &str) -> &str {
    Path::new(s)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(s)
}

/// Wrappers that run a tool from the project's environment.
const PY_WRAPPERS: [&str; 6] = ["uv", "poetry", "pipenv", "pdm", "hatch", "rye"];
const JS_WRAPPERS: [&str; 4] = ["npx", "pnpm", "yarn", "bunx"];

/// Files whose presence in a directory says "pytest".
pub const PYTEST_MARKERS: [&str; 5] = [
    "pyproject.toml",
    "pytest.ini",
    "setup.cfg",
    "tox.ini",
    "conftest.py",
];

/// The name of the nextest profile the agent adds for its report.
const NEXTEST_PROFILE: &str = "ptp-agent";

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

    /// The runner `argv` runs and the index of its first own argument.
    pub fn of_command(argv: &[String]) -> Option<(Runner, usize)> {
        let first = basename(argv.first()?);
        let arg = |i: usize| argv.get(i).map(String::as_str);
        match first {
            "pytest" | "py.test" => return Some((Runner::Pytest, 1)),
            "vitest" => return Some((Runner::Vitest, 1)),
            "jest" => return Some((Runner::Jest, 1)),
            "gotestsum" => return Some((Runner::Go, 1)),
            "go" if arg(1) == Some("test") => return Some((Runner::Go, 2)),
            "cargo" if arg(1) == Some("nextest") && arg(2) == Some("run") => {
                return Some((Runner::Nextest, 3));
            }
            "cargo-nextest" if arg(1) == Some("nextest") && arg(2) == Some("run") => {
                return Some((Runner::Nextest, 3));
            }
            "node" if argv[1..].iter().any(|a| a == "--test") => {
                return Some((Runner::Node, 1));
            }
            _ => {}
        }
        if first.starts_with("python")
            && arg(1) == Some("-m")
            && matches!(arg(2), Some("pytest" | "py.test"))
        {
            return Some((Runner::Pytest, 3));
        }
        if PY_WRAPPERS.contains(&first) && arg(1) == Some("run") {
            return Runner::of_command(&argv[2..]).map(|(r, i)| (r, i + 2));
        }
        if JS_WRAPPERS.contains(&first) {
            // `npx vitest`, `npx --no-install vitest`, `pnpm exec jest`,
            // `yarn jest`.
            let skip = 1 + argv[1..]
                .iter()
                .take_while(|a| a.starts_with('-') || *a == "exec")
                .count();
            if skip >= argv.len() {
                return None;
            }
            return Runner::of_command(&argv[skip..])
                .filter(|(r, _)| matches!(r, Runner::Vitest | Runner::Jest))
                .map(|(r, i)| (r, i + skip));
        }
        None
    }

    /// The runner a project in `root` uses, from its files: pytest's
    /// markers, `package.json` naming vitest or jest (dependencies or
    /// scripts) or a `node --test` script, `go.mod`, `Cargo.toml`.
    pub fn detect(root: &Path) -> Option<Runner> {
        if PYTEST_MARKERS.iter().any(|m| root.join(m).is_file()) || has_pytest_files(root) {
            return Some(Runner::Pytest);
        }
        if let Ok(text) = std::fs::read_to_string(root.join("package.json"))
            && let Some(r) = js_runner(&text)
        {
            return Some(r);
        }
        if root.join("go.mod").is_file() {
            return Some(Runner::Go);
        }
        if root.join("Cargo.toml").is_file() {
            return Some(Runner::Nextest);
        }
        None
    }

    /// What [`Runner::detect`] looks for, for messages.
    pub fn detect_text() -> String {
        format!(
            "{} or test_*.py files (pytest), package.json naming vitest or jest or a `node --test` \
             script, go.mod, Cargo.toml",
            PYTEST_MARKERS.join(", ")
        )
    }

    /// The command that runs every test of a project in `root`; pytest's
    /// runs under `python`, else the root's `.venv/bin/python`, else
    /// `python3`.
    pub fn default_command(self, root: &Path, python: Option<&Path>) -> Vec<String> {
        let v = |s: &[&str]| s.iter().map(|a| a.to_string()).collect();
        match self {
            Runner::Pytest => {
                let venv = root.join(".venv/bin/python");
                let python = match python {
                    Some(p) => p.display().to_string(),
                    None if venv.is_file() => venv.display().to_string(),
                    None => "python3".into(),
                };
                vec![python, "-m".into(), "pytest".into()]
            }
            Runner::Vitest => v(&["npx", "--no-install", "vitest", "run"]),
            Runner::Jest => v(&["npx", "--no-install", "jest"]),
            Runner::Node => v(&["node", "--test"]),
            Runner::Go => v(&["gotestsum", "--", "./..."]),
            Runner::Nextest => v(&["cargo", "nextest", "run"]),
        }
    }

    /// Arguments that narrow a run to `filter`: a path (it has a `/`, or a
    /// file extension of the runner's tests, or pytest's `::`) is passed as
    /// a path or package, anything else as the runner's name filter.
    pub fn filter_args(self, filter: &str) -> Vec<String> {
        let pathlike = filter.contains('/')
            || (self == Runner::Pytest && (filter.contains("::") || filter.ends_with(".py")))
            || ([".js", ".ts", ".mjs", ".cjs", ".jsx", ".tsx"]
                .iter()
                .any(|x| filter.ends_with(x)));
        let f = filter.to_string();
        match (self, pathlike) {
            (Runner::Pytest, true) => vec![f],
            (Runner::Pytest, false) => vec!["-k".into(), f],
            (Runner::Vitest | Runner::Jest, true) => vec![f],
            (Runner::Vitest | Runner::Jest, false) => vec!["-t".into(), f],
            (Runner::Node, true) => vec![f],
            (Runner::Node, false) => vec![format!("--test-name-pattern={f}")],
            (Runner::Go, true) => vec![f],
            (Runner::Go, false) => vec!["-run".into(), f],
            (Runner::Nextest, _) => vec![f],
        }
    }

    /// The command with `extra` (filter or selection arguments) added where
    /// the runner reads them.
    pub fn with_args(self, argv: &[String], extra: Vec<String>) -> Vec<String> {
        if extra.is_empty() {
            return argv.to_vec();
        }
        match self {
            // gotestsum passes what follows `--` to go test.
            Runner::Go if is_gotestsum(argv) => {
                let mut out = argv.to_vec();
                if !out.iter().any(|a| a == "--") {
                    out.push("--".into());
                }
                out.extend(extra);
                out
            }
            _ => {
                let mut out = argv.to_vec();
                // Before a `--` that passes arguments on to test binaries.
                let at = out.iter().position(|a| a == "--").unwrap_or(out.len());
                out.splice(at..at, extra);
                out
            }
        }
    }

    /// Decides how to run `argv` so that it writes a JUnit report into
    /// `report_dir` (named after `attempt`), unless the user's own options
    /// say where it goes. `argv` is this runner's command.
    pub fn plan(self, argv: &[String], report_dir: &Path, attempt: u32) -> Plan {
        let start = Runner::of_command(argv)
            .filter(|(r, _)| *r == self)
            .map_or(1.min(argv.len()), |(_, i)| i);
        let args = &argv[start..];
        let file = report_dir.join(format!("{}-junit-{attempt}.xml", self.name()));
        let mut plan = Plan {
            argv: argv.to_vec(),
            runner: Some(self),
            ..Plan::default()
        };
        let given = |names: &[&str]| option_value(args, names);
        match self {
            Runner::Pytest => match given(&["--junitxml", "--junit-xml"]) {
                Some(p) => plan.junit_path = Some(PathBuf::from(p)),
                None => {
                    plan.argv.push(format!("--junitxml={}", file.display()));
                    plan.junit_path = Some(file);
                }
            },
            Runner::Vitest => {
                if args.iter().any(|a| a.starts_with("--reporter")) {
                    plan.note = Some(
                        "the command chooses vitest's reporters itself; name its JUnit file with --junit"
                            .into(),
                    );
                } else {
                    plan.argv = self.with_args(
                        argv,
                        vec![
                            "--reporter=default".into(),
                            "--reporter=junit".into(),
                            format!("--outputFile.junit={}", file.display()),
                        ],
                    );
                    plan.junit_path = Some(file);
                }
            }
            Runner::Jest => {
                if args.iter().any(|a| a.starts_with("--reporters")) {
                    plan.note = Some(
                        "the command chooses jest's reporters itself; name its JUnit file with --junit"
                            .into(),
                    );
                } else if !Path::new("node_modules/jest-junit").is_dir() {
                    plan.note = Some(
                        "jest writes JUnit XML through jest-junit, which is not installed here \
                         (npm install --save-dev jest-junit); without it the run has no test cases"
                            .into(),
                    );
                } else {
                    plan.argv = self.with_args(
                        argv,
                        vec![
                            "--reporters=default".into(),
                            "--reporters=jest-junit".into(),
                        ],
                    );
                    plan.env = vec![
                        ("JEST_JUNIT_OUTPUT_FILE".into(), file.display().to_string()),
                        ("JEST_JUNIT_ADD_FILE_ATTRIBUTE".into(), "true".into()),
                    ];
                    plan.junit_path = Some(file);
                }
            }
            Runner::Node => {
                if args.iter().any(|a| a.starts_with("--test-reporter")) {
                    plan.note = Some(
                        "the command chooses node's test reporters itself; name its JUnit file with --junit"
                            .into(),
                    );
                } else {
                    // Options go before the test files.
                    let mut out = vec![argv[0].clone()];
                    out.extend([
                        "--test-reporter=spec".into(),
                        "--test-reporter-destination=stdout".into(),
                        "--test-reporter=junit".into(),
                        format!("--test-reporter-destination={}", file.display()),
                    ]);
                    out.extend(argv[1..].iter().cloned());
                    plan.argv = out;
                    plan.junit_path = Some(file);
                }
            }
            Runner::Go => {
                let gotestsum = is_gotestsum(argv);
                if gotestsum && let Some(p) = given(&["--junitfile"]) {
                    plan.junit_path = Some(PathBuf::from(p));
                    return plan;
                }
                let mut out: Vec<String> = if gotestsum {
                    argv.to_vec()
                } else {
                    // `go test ARGS` -> `gotestsum -- ARGS`.
                    let mut v = vec!["gotestsum".to_string(), "--".to_string()];
                    v.extend(args.iter().cloned());
                    v
                };
                out.insert(1, format!("--junitfile={}", file.display()));
                plan.argv = out;
                plan.junit_path = Some(file);
            }
            Runner::Nextest => {
                if given(&["--profile", "-P"]).is_some() {
                    plan.note = Some(
                        "the command names a nextest profile; the agent cannot add its JUnit \
                         report to it: give the profile a [profile.NAME.junit] path and name it \
                         with --junit"
                            .into(),
                    );
                } else {
                    let config = report_dir.join(format!("nextest-{attempt}.toml"));
                    let body = format!(
                        "[profile.{NEXTEST_PROFILE}.junit]\npath = \"{}\"\n",
                        toml_escape(&file.display().to_string())
                    );
                    match std::fs::write(&config, body) {
                        Ok(()) => {
                            plan.argv = self.with_args(
                                argv,
                                vec![
                                    "--tool-config-file".into(),
                                    format!("{NEXTEST_PROFILE}:{}", config.display()),
                                    "--profile".into(),
                                    NEXTEST_PROFILE.into(),
                                ],
                            );
                            plan.junit_path = Some(file);
                        }
                        Err(e) => {
                            plan.note = Some(format!(
                                "cannot write nextest's tool config {}: {e}",
                                config.display()
                            ))
                        }
                    }
                }
            }
        }
        plan
    }

    /// The command that runs exactly the tests of `cases` (found in `root`
    /// for pytest's node ids), based on `argv`, this runner's command:
    /// its selecting arguments are replaced, its options kept.
    pub fn select(self, argv: &[String], cases: &[&TestCase], root: &Path) -> Selection {
        let start = Runner::of_command(argv)
            .filter(|(r, _)| *r == self)
            .map_or(1.min(argv.len()), |(_, i)| i);
        let mut sel = Selection::default();
        let add = |sel: &mut Selection, c: &TestCase, selector: Option<String>| match selector {
            Some(s) => {
                if !sel.selected.contains(&c.test_id) {
                    sel.selected.push(c.test_id.clone());
                }
                if !sel.selectors.contains(&s) {
                    sel.selectors.push(s);
                }
            }
            None => {
                if !sel.unmapped.contains(&c.test_id) {
                    sel.unmapped.push(c.test_id.clone())
                }
            }
        };
        for c in cases {
            let selector = match self {
                Runner::Pytest => node_id(
                    |rel| root.join(rel).is_file(),
                    c.file.as_deref(),
                    c.classname.as_deref(),
                    &c.name,
                ),
                Runner::Vitest | Runner::Jest | Runner::Node => {
                    (!c.name.is_empty()).then(|| c.name.clone())
                }
                // Subtests rerun with their parent.
                Runner::Go => {
                    let top = c.name.split('/').next().unwrap_or("");
                    (!top.is_empty() && c.classname.is_some()).then(|| top.to_string())
                }
                Runner::Nextest => {
                    let plain = |s: &str| {
                        !s.is_empty()
                            && !s
                                .chars()
                                .any(|ch| matches!(ch, '(' | ')' | ',' | '\\') || ch.is_control())
                    };
                    match c.classname.as_deref() {
                        Some(b) if plain(b) && plain(&c.name) => {
                            Some(format!("binary_id(={b}) & test(={})", c.name))
                        }
                        _ => None,
                    }
                }
            };
            add(&mut sel, c, selector);
        }
        if sel.selectors.is_empty() || argv.is_empty() {
            return sel;
        }
        let args = &argv[start..];
        sel.argv = match self {
            Runner::Pytest => {
                let mut out = argv[..start].to_vec();
                out.extend(pytest_options(args, root));
                out.extend(sel.selectors.iter().cloned());
                out
            }
            Runner::Vitest => {
                let pattern = regex_alternation(&sel.selectors, Some(" > "));
                let kept = drop_option(argv, &["-t", "--testNamePattern"]);
                self.with_args(&kept, vec!["-t".into(), pattern])
            }
            Runner::Jest => {
                let pattern = regex_alternation(&sel.selectors, None);
                let kept = drop_option(argv, &["-t", "--testNamePattern"]);
                self.with_args(&kept, vec!["-t".into(), pattern])
            }
            Runner::Node => {
                let pattern = regex_alternation(&sel.selectors, None);
                let mut out = drop_option(argv, &["--test-name-pattern"]);
                out.insert(1, format!("--test-name-pattern={pattern}"));
                out
            }
            Runner::Go => {
                let pattern = regex_alternation(&sel.selectors, None);
                let kept = drop_option(argv, &["-run", "--run"]);
                let mut extra = vec!["-run".to_string(), pattern];
                // gotestsum without `--` tests ./...; with a `--` and no
                // package it would test only the current directory.
                let has_packages = match kept.iter().position(|a| a == "--") {
                    Some(i) => kept[i + 1..].iter().any(|a| !a.starts_with('-')),
                    None => {
                        !is_gotestsum(&kept) && kept[start..].iter().any(|a| !a.starts_with('-'))
                    }
                };
                if !has_packages {
                    let mut pkgs: Vec<String> = Vec::new();
                    for c in cases {
                        if let Some(p) = &c.classname
                            && !pkgs.contains(p)
                        {
                            pkgs.push(p.clone());
                        }
                    }
                    extra.extend(pkgs);
                }
                self.with_args(&kept, extra)
            }
            Runner::Nextest => {
                let expr = sel
                    .selectors
                    .iter()
                    .map(|s| format!("({s})"))
                    .collect::<Vec<_>>()
                    .join(" | ");
                let kept = drop_option(argv, &["-E", "--filterset", "--filter-expr"]);
                self.with_args(&kept, vec!["-E".into(), expr])
            }
        };
        sel
    }

    /// How this runner selects the test of `c` alone (a pytest node id, a
    /// test name, a nextest filter), when it can.
    pub fn selector(self, c: &TestCase, root: &Path) -> Option<String> {
        self.select(&[], &[c], root).selectors.into_iter().next()
    }

    /// The command that lists the tests `argv` would run (this runner's
    /// command), or why this runner cannot list them.
    pub fn list_command(self, argv: &[String]) -> Result<Vec<String>, String> {
        let start = Runner::of_command(argv)
            .filter(|(r, _)| *r == self)
            .map_or(1.min(argv.len()), |(_, i)| i);
        let mut out = argv[..start].to_vec();
        let args = &argv[start..];
        match self {
            Runner::Pytest => {
                out.extend(args.iter().cloned());
                out.extend(["--collect-only".into(), "-q".into()]);
            }
            Runner::Vitest => {
                out.push("list".into());
                out.extend(
                    args.iter()
                        .skip_while(|a| matches!(a.as_str(), "run" | "watch" | "dev"))
                        .cloned(),
                );
                out.push("--json".into());
            }
            Runner::Jest => {
                out.extend(args.iter().cloned());
                out.push("--listTests".into());
            }
            Runner::Node => {
                return Err(
                    "node's test runner cannot list tests without running them; run them instead"
                        .into(),
                );
            }
            Runner::Go => {
                let go_args: Vec<String> = if is_gotestsum(argv) {
                    match argv.iter().position(|a| a == "--") {
                        Some(i) => argv[i + 1..].to_vec(),
                        None => Vec::new(),
                    }
                } else {
                    args.to_vec()
                };
                let go_args = drop_option(&go_args, &["-run", "--run"]);
                out = vec!["go".into(), "test".into(), "-list".into(), ".".into()];
                let has_packages = go_args.iter().any(|a| !a.starts_with('-'));
                out.extend(go_args);
                if !has_packages {
                    out.push("./...".into());
                }
            }
            Runner::Nextest => {
                out.truncate(start - 1); // `cargo nextest`
                out.push("list".into());
                out.extend(args.iter().cloned());
                out.extend(["--message-format".into(), "oneline".into()]);
            }
        }
        Ok(out)
    }

    /// The test ids in the output of [`Runner::list_command`], shaped like
    /// the `test_id`s of this runner's reports where the runner says
    /// enough; paths are made relative to `root`.
    pub fn parse_list(self, stdout: &str, root: &Path) -> Vec<String> {
        let rel = |p: &str| {
            Path::new(p)
                .strip_prefix(root)
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| p.to_string())
        };
        match self {
            Runner::Pytest => stdout
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .filter(|l| l.contains("::") && !l.starts_with(char::is_whitespace))
                .map(str::to_string)
                .collect(),
            Runner::Vitest => {
                #[derive(serde::Deserialize)]
                struct Item {
                    name: String,
                    #[serde(default)]
                    file: Option<String>,
                }
                // Anything printed before the JSON array is not ours.
                let json = stdout.find('[').map_or("", |i| &stdout[i..]);
                serde_json::from_str::<Vec<Item>>(json.trim())
                    .map(|items| {
                        items
                            .into_iter()
                            .map(|i| match i.file {
                                Some(f) => format!("{}::{}", rel(&f), i.name),
                                None => i.name,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Runner::Jest => stdout
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && l.starts_with('/'))
                .map(rel)
                .collect(),
            Runner::Node => Vec::new(),
            Runner::Go => {
                // Names, then `ok  <package>  <time>` for each package.
                let mut ids = Vec::new();
                let mut pending = Vec::new();
                for l in stdout.lines() {
                    if let Some(rest) = l.strip_prefix("ok") {
                        let pkg = rest.split_whitespace().next().unwrap_or("");
                        ids.extend(pending.drain(..).map(|n: &str| format!("{pkg}::{n}")));
                    } else if l.starts_with(|c: char| c.is_ascii_uppercase())
                        && !l.contains(char::is_whitespace)
                    {
                        pending.push(l);
                    }
                }
                ids
            }
            Runner::Nextest => stdout
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(bin, test)| format!("{bin}::{}", test.trim()))
                .collect(),
        }
    }
}

/// The runner a `package.json` names: vitest or jest among its
/// dependencies or scripts, or a script running `node --test`.
fn js_runner(package_json: &str) -> Option<Runner> {
    let v: serde_json::Value = serde_json::from_str(package_json).ok()?;
    let has_dep = |name: &str| {
        ["devDependencies", "dependencies"]
            .iter()
            .any(|k| v[k].get(name).is_some())
    };
    let scripts: Vec<&str> = v["scripts"]
        .as_object()
        .map(|o| o.values().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    let in_scripts = |word: &str| scripts.iter().any(|s| s.contains(word));
    if has_dep("vitest") || in_scripts("vitest") {
        Some(Runner::Vitest)
    } else if has_dep("jest") || in_scripts("jest") {
        Some(Runner::Jest)
    } else if in_scripts("node --test") {
        Some(Runner::Node)
    } else {
        None
    }
}

/// `test_*.py` or `*_test.py` files in `root`, `root/tests` or
/// `root/test`.
fn has_pytest_files(root: &Path) -> bool {
    let is_test_file = |name: &str| {
        name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
    };
    [root.to_path_buf(), root.join("tests"), root.join("test")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .any(|e| is_test_file(&e.file_name().to_string_lossy()))
}

fn is_gotestsum(argv: &[String]) -> bool {
    argv.first().is_some_and(|a| basename(a) == "gotestsum")
}

/// The value of the first of `names` in `args` (`--x=v` or `--x v`).
fn option_value<'a>(args: &'a [String], names: &[&str]) -> Option<&'a str> {
    for (i, a) in args.iter().enumerate() {
        if a == "--" {
            break;
        }
        for n in names {
            if let Some(rest) = a.strip_prefix(n) {
                if let Some(v) = rest.strip_prefix('=') {
                    return Some(v);
                }
                if rest.is_empty() {
                    return args.get(i + 1).map(String::as_str);
                }
            }
        }
    }
    None
}

/// `argv` without the options `names` and their values (`-t x`, `-t=x`).
fn drop_option(argv: &[String], names: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut skip_next = false;
    for a in argv {
        if skip_next {
            skip_next = false;
            continue;
        }
        if names.contains(&a.as_str()) {
            skip_next = true;
            continue;
        }
        if names
            .iter()
            .any(|n| a.strip_prefix(n).is_some_and(|r| r.starts_with('=')))
        {
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// pytest options that take their value as the next argument: a value
/// that names an existing path must not be taken for a selection.
const PYTEST_VALUE_OPTIONS: [&str; 26] = [
    "-k",
    "-m",
    "-p",
    "-c",
    "-o",
    "-W",
    "-r",
    "-n",
    "--rootdir",
    "--basetemp",
    "--confcutdir",
    "--override-ini",
    "--junitxml",
    "--junit-xml",
    "--ignore",
    "--ignore-glob",
    "--deselect",
    "--tb",
    "--maxfail",
    "--durations",
    "--log-file",
    "--log-level",
    "--cov",
    "--cov-report",
    "--cov-config",
    "--import-mode",
];

/// pytest's arguments without the ones that select tests by path or node
/// id (an argument that is no option and names a path under `root`), so a
/// rerun selects only the node ids it adds.
fn pytest_options(args: &[String], root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut value_next = false;
    for a in args {
        if value_next {
            value_next = false;
            out.push(a.clone());
            continue;
        }
        if a.starts_with('-') {
            value_next = PYTEST_VALUE_OPTIONS.contains(&a.as_str());
            out.push(a.clone());
            continue;
        }
        let path = a.split("::").next().unwrap_or(a);
        if !path.is_empty() && root.join(path).exists() {
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// `^(?:a|b)$` with every name's metacharacters escaped (for `-t`, `-run`,
/// `--test-name-pattern`: JavaScript and RE2 syntax). With `sep`, each
/// occurrence of it in a name matches either itself or one space (vitest
/// reports `describe > test` and matches `-t` against `describe test`).
pub fn regex_alternation(names: &[String], sep: Option<&str>) -> String {
    let alts: Vec<String> = names
        .iter()
        .map(|n| match sep {
            Some(sep) => n
                .split(sep)
                .map(regex_escape)
                .collect::<Vec<_>>()
                .join(&format!("(?: |{})", regex_escape(sep))),
            None => regex_escape(n),
        })
        .collect();
    format!("^(?:{})$", alts.join("|"))
}

/// `s` with the regular-expression metacharacters escaped.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A relative path made only of normal components (no `..`, no root, no
/// empty parts) that cannot be read as an option or an argument file, as a
/// string with `/`.
fn safe_relative(path: &str) -> Option<String> {
    let path = path.strip_prefix("./").unwrap_or(path);
    if path.starts_with('-') || path.starts_with('@') {
        return None;
    }
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The pytest node id of a JUnit case, or `None` when no file under the
/// root (as `is_file` sees it) matches.
///
/// pytest's JUnit XML names a test by `classname` (the file's path with
/// `/` turned into `.`, then the classes) and `name` (function and
/// parameters): `tests.test_cart.TestCart` + `test_total[2]`. The dots of
/// directories and classes cannot be told apart, so the node id is found by
/// asking which dotted prefix of the classname, as a path ending in `.py`,
/// is a file (longest first): `tests/test_cart.py::TestCart::test_total[2]`.
/// A `file` attribute (`junit_family=xunit1`) that agrees with the
/// classname is used directly. A case with no classname is a collection
/// error named by its module and maps to the file.
pub fn node_id(
    is_file: impl Fn(&str) -> bool,
    file: Option<&str>,
    classname: Option<&str>,
    name: &str,
) -> Option<String> {
    if name.chars().any(char::is_control) {
        return None;
    }
    let classname = classname.map(str::trim).filter(|c| !c.is_empty());
    let join = |path: &str, classes: &[&str]| {
        let mut id = path.to_string();
        for c in classes {
            id.push_str("::");
            id.push_str(c);
        }
        id.push_str("::");
        id.push_str(name);
        id
    };
    if let Some(path) = file.and_then(safe_relative)
        && path.ends_with(".py")
        && is_file(&path)
    {
        let module = path.trim_end_matches(".py").replace('/', ".");
        match classname {
            None => return Some(join(&path, &[])),
            Some(c) if c == module => return Some(join(&path, &[])),
            Some(c) => {
                if let Some(classes) = c.strip_prefix(&format!("{module}.")) {
                    let classes: Vec<&str> = classes.split('.').collect();
                    if classes.iter().all(|p| !p.is_empty()) {
                        return Some(join(&path, &classes));
                    }
                }
            }
        }
    }
    let dotted = |s: &str| -> Option<Vec<String>> {
        let parts: Vec<String> = s.split('.').map(str::to_string).collect();
        let ok = parts.iter().all(|p| {
            !p.is_empty() && p != ".." && !p.contains('/') && !p.chars().any(char::is_control)
        });
        ok.then_some(parts)
    };
    match classname {
        Some(c) => {
            let parts = dotted(c)?;
            if parts[0].starts_with('-') || parts[0].starts_with('@') {
                return None;
            }
            (1..=parts.len()).rev().find_map(|i| {
                let path = format!("{}.py", parts[..i].join("/"));
                if !is_file(&path) {
                    return None;
                }
                let classes: Vec<&str> = parts[i..].iter().map(String::as_str).collect();
                Some(join(&path, &classes))
            })
        }
        None => {
            let parts = dotted(name)?;
            let path = format!("{}.py", parts.join("/"));
            let safe = !parts[0].starts_with('-') && !parts[0].starts_with('@');
            (safe && is_file(&path)).then_some(path)
        }
    }
}

/// The file under the project root a case's test lives in, for owners:
/// the JUnit `file` attribute, else (pytest) the module path found from
/// the classname, else (vitest) the classname when it is a path.
pub fn case_file(
    runner: Option<Runner>,
    c: &TestCase,
    is_file: impl Fn(&str) -> bool,
) -> Option<String> {
    if let Some(f) = c.file.as_deref().and_then(safe_relative) {
        return Some(f);
    }
    match runner {
        Some(Runner::Pytest) => node_id(&is_file, None, c.classname.as_deref(), &c.name)
            .map(|id| id.split("::").next().unwrap_or("").to_string())
            .filter(|p| !p.is_empty()),
        Some(Runner::Vitest) => c
            .classname
            .as_deref()
            .and_then(safe_relative)
            .filter(|p| is_file(p)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptp_nats::schema::Outcome;

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
