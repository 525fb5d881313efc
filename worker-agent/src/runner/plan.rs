//! Making a command write a JUnit report the agent reads: the per-runner
//! report arguments and environment ([`Runner::plan`]), plus adding a
//! user's filter or selection where the runner reads it.
//!
//! Kept together because each runner's report options and the rule "a
//! user's own report option is respected" must agree; when the agent cannot
//! arrange a report it says why in [`Plan::note`] instead of guessing.

use std::path::{Path, PathBuf};

use super::args::{is_gotestsum, option_value};
use super::{Plan, Runner};

/// The name of the nextest profile the agent adds for its report.
const NEXTEST_PROFILE: &str = "ptp-agent";

impl Runner {
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
}

fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
