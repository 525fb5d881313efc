//! Running the project's tests from the editor: the tools `run_tests`,
//! `run_failed` and `list_tests`, offered when `--project-root` is set.
//!
//! # What
//!
//! `run_tests` runs the project's tests on this machine and answers with
//! the run's status, exit code, counts, failed and errored tests (selector
//! such as a pytest node id, trimmed message), duration, run id, whether the
//! run reached the master, and the argv that ran. `run_failed` reruns only
//! the tests that failed in the last local run of the project root.
//! `list_tests` lists test ids without running anything. Every runner the
//! agent knows works (pytest, vitest, jest, node --test, go through
//! gotestsum, cargo-nextest): the agent detects it from the project, or
//! the `runner` argument names it.
//!
//! # Why this shape
//!
//! - **Through `ptp-agent`.** Runs go through `ptp-agent run` as a child
//!   process, so a local run is exactly a CI run: the same JUnit parsing,
//!   statuses, run ids and timeout handling. With `--nats-url` the agent
//!   publishes the run to NATS and the master stores it like any CI run;
//!   without it the agent gets `--no-publish` (it never connects, so there
//!   is no publish retry to wait out). Either way the agent writes the
//!   parsed run to a `--results-json` file and this server answers from
//!   that file, never from the master, so an answer needs no round trip.
//! - **Everything the runners need is the agent's.** Detection, the
//!   runner's command, how a filter becomes arguments, how failed tests are
//!   selected again (`ptp-agent run --failed-from`), how tests are listed
//!   (`ptp-agent list --json`) and the runners' exit codes all live in the
//!   agent's runner abstraction; this server names the runner (or lets the
//!   agent detect it), passes the checked filter, and reads the agent's
//!   JSON.
//! - **The last run is kept outside the project**, in
//!   `<cache dir>/<first 16 hex digits of the SHA-256 of the root's
//!   path>/last-run.json` (cache dir: `--cache-dir`, default
//!   `$XDG_CACHE_HOME/ptp-mcp`), with a `root` file beside it naming the
//!   project root. It is the agent's results file, moved there only when
//!   the run produced a report: a crash or a timeout leaves the previous
//!   failures to rerun. `run_failed` hands it to the agent
//!   (`--failed-from`), which selects its failed cases; its own run then
//!   becomes the last run.
//! - **Offered only with a project root.** A team server over HTTP has no
//!   project to run, so without `--project-root` the tools are not listed.
//! - **Settings and runs here, the tools' MCP face in `tools::local`.**
//!   [`Local`] holds the settings and does the runs; the tool routes
//!   (`tools::local`) only call it, so this module knows nothing of the
//!   server.
//!   The answers ([`answer`], [`listing`]), the agent's results file
//!   ([`results`]) and its deadline ([`budget`]) are apart, each read by
//!   this module and never reading it.
//!
//! # Guarantees
//!
//! - Never a shell: every command is an argv. A `filter` is checked before
//!   anything starts and refused with a tool error when it could be more
//!   than a selection (rules in [`filter`]).
//! - Every process has a deadline, `--run-timeout-secs`: the agent kills
//!   the tests' process group and the answer says `"timed_out": true`, exit
//!   124. The agent itself is given that plus its publish budget
//!   ([`PUBLISH_BUDGET_SECS`]) plus [`AGENT_GRACE`] before it is killed.
//! - One local run at a time per server; a second call meanwhile is
//!   refused with a tool error rather than racing the first in one tree.
//! - A call the client cancels (or a session that ends) stops its process:
//!   the agent gets SIGTERM, stops the tests and exits.
//! - Children never inherit this server's stdin or stdout (they carry MCP
//!   in stdio mode); their output is captured with bounds
//!   ([`process`]) and its end is part of the answer when no report was
//!   produced.

mod answer;
mod budget;
mod error;
pub mod filter;
mod listing;
mod process;
mod results;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, JsonObject};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::args::given;
use crate::config::Config;
use crate::text::trim_end;
use answer::{RunAnswer, json_answer, shown};
pub use budget::{AGENT_GRACE, PUBLISH_BUDGET_SECS};
pub(crate) use error::LocalError;
use listing::COLLECT_KEEP_BYTES;
use results::{Case, Counts, agent_says, read_results};

/// Longest `runner` argument passed on (the agent names the runners it
/// knows when it refuses one).
const MAX_RUNNER_CHARS: usize = 40;
/// Environment variables of the agent this server decides itself; an
/// editor's environment must not override them.
const AGENT_ENV_REMOVED: [&str; 11] = [
    "PTP_NO_PUBLISH",
    "PTP_RESULTS_JSON",
    "PTP_JUNIT",
    "PTP_STRICT",
    "PTP_TIMEOUT",
    "PTP_RUNNER",
    "PTP_FILTER",
    "PTP_FAILED_FROM",
    "PTP_AGENT_PYTHON",
    "PTP_LIST_JSON",
    "PTP_RERUN_COMMAND",
];

/// The local-run settings, resolved from [`Config`] once.
#[derive(Debug)]
pub struct Local {
    root: PathBuf,
    agent_bin: PathBuf,
    run_timeout: Duration,
    nats_url: Option<String>,
    python: Option<PathBuf>,
    project: Option<String>,
    branch: Option<String>,
    cache_dir: PathBuf,
    /// Held while a local run goes on; `try_lock` refuses a second one.
    running: tokio::sync::Mutex<()>,
}

impl Local {
    /// The settings when `--project-root` is set; `None` disables the tools.
    pub fn from_config(config: &Config) -> Option<Local> {
        let nonblank = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let root = config
            .project_root
            .clone()
            .filter(|r| !r.as_os_str().is_empty())?;
        Some(Local {
            root,
            agent_bin: config.agent_bin(),
            run_timeout: Duration::from_secs(config.run_timeout_secs),
            nats_url: nonblank(&config.nats_url),
            python: config.python.clone().filter(|p| !p.as_os_str().is_empty()),
            project: nonblank(&config.run_project),
            branch: nonblank(&config.run_branch),
            cache_dir: config.cache_dir(),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// The project root, resolved now (it may be created after start).
    fn root(&self) -> Result<PathBuf, LocalError> {
        let unusable = |why: String| {
            LocalError::Setup(format!(
                "the project root {} (--project-root / PTP_MCP_PROJECT_ROOT) {why}; set it to \
                 the directory the tests run in",
                self.root.display()
            ))
        };
        let root =
            std::fs::canonicalize(&self.root).map_err(|e| unusable(format!("is unusable: {e}")))?;
        if !root.is_dir() {
            return Err(unusable("is not a directory".into()));
        }
        Ok(root)
    }

    /// The agent's arguments that choose the runner and its interpreter:
    /// `--runner` when the argument names one (the agent refuses names it
    /// does not know, listing those it does; without it the agent detects
    /// the runner from the root), `--python` when configured.
    fn runner_args(&self, root: &Path, asked: Option<String>) -> Result<Vec<OsString>, LocalError> {
        let mut args = Vec::new();
        if let Some(r) = asked {
            let ok = r.chars().count() <= MAX_RUNNER_CHARS
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:".contains(c));
            if !ok {
                return Err(LocalError::Argument(format!(
                    "runner {:?} is not a runner name (pytest, vitest, jest, node, go, nextest); \
                     leave it out to detect the runner from the project root; nothing was run",
                    trim_end(&r, 60)
                )));
            }
            args.push("--runner".into());
            args.push(r.into());
        }
        if let Some(p) = &self.python {
            args.push("--python".into());
            args.push(filter::python(root, p).into_os_string());
        }
        Ok(args)
    }

    /// `<cache dir>/<hash of root>`, without creating it.
    fn cache_for(&self, root: &Path) -> PathBuf {
        let digest = Sha256::digest(root.as_os_str().as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        self.cache_dir.join(hex)
    }

    /// Runs the tests through the agent with `extra` arguments (runner,
    /// filter, `--failed-from`) and answers from its results file; keeps
    /// that file as the root's last run when it holds a report.
    async fn run(&self, root: &Path, extra: Vec<OsString>) -> Result<RunAnswer, LocalError> {
        let _running = self.running.try_lock().map_err(|_| {
            LocalError::Busy(format!(
                "a local test run is already going on in {}; wait for its answer, then call again",
                root.display()
            ))
        })?;
        let cache = self.cache_for(root);
        let cache_problem = |e: std::io::Error| {
            LocalError::Setup(format!(
                "cannot use the cache directory {}: {e}; set --cache-dir / PTP_MCP_CACHE_DIR to \
                 a writable directory",
                cache.display()
            ))
        };
        std::fs::create_dir_all(&cache).map_err(cache_problem)?;
        std::fs::write(cache.join("root"), root.as_os_str().as_bytes()).map_err(cache_problem)?;
        let work = tempfile::Builder::new()
            .prefix(".run-")
            .tempdir_in(&cache)
            .map_err(cache_problem)?;
        let results_path = work.path().join("results.json");

        let secs = self.run_timeout.as_secs().to_string();
        let mut argv: Vec<OsString> = vec![
            self.agent_bin.clone().into(),
            "run".into(),
            "--timeout".into(),
            secs.into(),
            "--publish-timeout".into(),
            PUBLISH_BUDGET_SECS.to_string().into(),
            "--results-json".into(),
            results_path.clone().into(),
        ];
        let mut env = Vec::new();
        match &self.nats_url {
            Some(url) => env.push(("NATS_URL", url.clone())),
            None => argv.push("--no-publish".into()),
        }
        for (flag, value) in [("--project", &self.project), ("--branch", &self.branch)] {
            if let Some(v) = value {
                argv.push(flag.into());
                argv.push(v.into());
            }
        }
        argv.extend(extra);

        let started = Instant::now();
        let finished = process::run(process::Spec {
            argv: &argv,
            cwd: root,
            env,
            env_remove: &AGENT_ENV_REMOVED,
            deadline: self.run_timeout + Duration::from_secs(PUBLISH_BUDGET_SECS) + AGENT_GRACE,
            keep_stdout: 0,
        })
        .await
        .map_err(|e| {
            LocalError::Setup(format!(
                "cannot start the agent {}: {e}. Set --agent-bin / PTP_AGENT_BIN to the ptp-agent \
                 binary (cargo build --release --bin ptp-agent)",
                self.agent_bin.display()
            ))
        })?;
        let results = read_results(&results_path).map_err(LocalError::Run)?;
        let command = shown(&argv);
        let Some(results) = results else {
            if finished.timed_out {
                return Ok(RunAnswer::killed(
                    self.run_timeout,
                    root,
                    command,
                    &finished,
                    started,
                ));
            }
            // Exit 2 without results: the agent refused before running
            // anything (no runner detected, an unknown runner, nothing of
            // the last run selectable), and says why.
            if finished.code == Some(2) {
                return Err(LocalError::Setup(format!(
                    "{}; nothing was run",
                    agent_says(&finished.stderr.tail_text(2000))
                )));
            }
            return Err(LocalError::Run(format!(
                "the agent {} exited {} without writing its results; it must be a ptp-agent that \
                 knows --results-json (the same version as ptp-mcp). Its output ends with: {}",
                self.agent_bin.display(),
                finished
                    .code
                    .map_or_else(|| "on a signal".to_string(), |c| format!("with {c}")),
                finished.stderr.tail_text(1000)
            )));
        };
        let mut note = None;
        if results.report {
            let last = cache.join(LAST_RUN);
            if let Err(e) = std::fs::rename(&results_path, &last) {
                note = Some(format!(
                    "could not keep this run for run_failed ({}: {e})",
                    last.display()
                ));
            }
        }
        let mut answer =
            RunAnswer::from_results(self.nats_url.as_deref(), root, command, results, &finished);
        if note.is_some() {
            answer.hint = note;
        }
        Ok(answer)
    }

    /// `run_tests`: the checked filter and runner, then one run.
    pub(crate) async fn run_tests(&self, args: JsonObject) -> Result<CallToolResult, LocalError> {
        let a: RunTestsArgs = parse("run_tests", args)?;
        let selection = selection(a.filter)?;
        let root = self.root()?;
        let mut extra = self.runner_args(&root, given(a.runner))?;
        extra.extend(selection);
        json_answer(&self.run(&root, extra).await?)
    }

    /// `run_failed`: the last run's failures, rerun by the agent.
    pub(crate) async fn run_failed(&self, args: JsonObject) -> Result<CallToolResult, LocalError> {
        let _: RunFailedArgs = parse("run_failed", args)?;
        let root = self.root()?;
        let path = self.cache_for(&root).join(LAST_RUN);
        let last = read_results(&path).map_err(LocalError::Setup)?.ok_or_else(|| {
            LocalError::NoPreviousRun(format!(
                "there is no previous local run of {} to take failures from; call run_tests first \
                 (nothing was run)",
                root.display()
            ))
        })?;
        let failing: Vec<&Case> = last.cases.iter().filter(|c| c.is_failure()).collect();
        if failing.is_empty() {
            #[derive(Serialize)]
            struct Nothing {
                status: &'static str,
                message: String,
                last_run_id: String,
                last_status: String,
                counts: Counts,
            }
            return json_answer(&Nothing {
                status: "nothing_to_rerun",
                message: format!(
                    "nothing failed in the last local run ({} tests, status {}); no test was started",
                    last.counts.total, last.status
                ),
                last_run_id: last.run_id,
                last_status: last.status,
                counts: last.counts,
            });
        }
        let mut extra = self.runner_args(&root, last.runner.clone())?;
        extra.push("--failed-from".into());
        extra.push(path.into_os_string());
        let answer = self.run(&root, extra).await?;
        json_answer(&answer)
    }

    /// `list_tests`: `ptp-agent list --json`, nothing run.
    pub(crate) async fn list_tests(&self, args: JsonObject) -> Result<CallToolResult, LocalError> {
        let a: ListTestsArgs = parse("list_tests", args)?;
        let limit = match a.limit {
            None => 200,
            Some(n @ 1..=2000) => n as usize,
            Some(n) => {
                return Err(LocalError::Argument(format!(
                    "limit must be between 1 and 2000, got {n}; leave it out for the default of \
                     200"
                )));
            }
        };
        let selection = selection(a.filter)?;
        let root = self.root()?;
        let mut argv: Vec<OsString> = vec![
            self.agent_bin.clone().into(),
            "list".into(),
            "--json".into(),
            "--timeout".into(),
            self.run_timeout.as_secs().to_string().into(),
        ];
        argv.extend(self.runner_args(&root, given(a.runner))?);
        argv.extend(selection);
        let finished = process::run(process::Spec {
            argv: &argv,
            cwd: &root,
            env: Vec::new(),
            env_remove: &AGENT_ENV_REMOVED,
            deadline: self.run_timeout + AGENT_GRACE,
            keep_stdout: COLLECT_KEEP_BYTES,
        })
        .await
        .map_err(|e| {
            LocalError::Setup(format!(
                "cannot start the agent {}: {e}. Set --agent-bin / PTP_AGENT_BIN to the ptp-agent \
                 binary (cargo build --release --bin ptp-agent)",
                self.agent_bin.display()
            ))
        })?;
        listing::answer(&finished, &root, limit)
    }
}

/// The last run's file name in a root's cache directory.
const LAST_RUN: &str = "last-run.json";

/// Arguments of `run_tests`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunTestsArgs {
    /// Which tests: a path or pytest node id (tests/test_cart.py::TestCart::test_total, src/cart.test.ts, ./pkg/cart) or a name filter (pytest -k "cart and not slow", vitest/jest -t, node --test-name-pattern, go -run, a nextest filter). At most 200 characters; must not start with '-', '@' or '/', nor contain '..' or control characters. Default: every test.
    pub filter: Option<String>,
    /// The test runner: pytest, vitest, jest, node, go or nextest. Default: detected from the project root.
    pub runner: Option<String>,
}

/// Arguments of `run_failed` (none: it reruns the last run's failures).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFailedArgs {}

/// Arguments of `list_tests`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTestsArgs {
    /// Only these tests: a path or node id, or a name filter (same rules as run_tests' filter). Default: every test.
    pub filter: Option<String>,
    /// The test runner: pytest, vitest, jest, node, go or nextest. Default: detected from the project root.
    pub runner: Option<String>,
    /// Most test ids listed: 1 to 2000. Default 200 (the total is always given).
    #[schemars(range(min = 1, max = 2000))]
    pub limit: Option<i64>,
}

/// A tool's arguments, bounded and parsed ([`crate::args::parse`]).
fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, LocalError> {
    crate::args::parse(tool, args).map_err(LocalError::Argument)
}

/// The checked filter as the agent's `--filter` (none without a filter);
/// the agent turns it into the runner's arguments.
fn selection(filter: Option<String>) -> Result<Vec<OsString>, LocalError> {
    match given(filter) {
        None => Ok(Vec::new()),
        Some(f) => {
            filter::check_filter(&f).map_err(LocalError::Argument)?;
            Ok(vec!["--filter".into(), f.into()])
        }
    }
}
