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

pub mod filter;
mod process;

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::args::{given, input_schema};
use crate::config::Config;
use crate::text::trim_end;
use crate::tools::{PtpMcp, finish};

/// Seconds the agent may retry NATS before spooling (its `--publish-timeout`).
pub const PUBLISH_BUDGET_SECS: u64 = 30;
/// Time the agent gets beyond the run timeout and the publish budget (start,
/// killing the tests, reading the report) before it is killed itself.
pub const AGENT_GRACE: Duration = Duration::from_secs(60);
/// Failures listed in an answer; the total is always given.
const MAX_FAILURES: usize = 50;
/// Characters kept of each failure message.
const MESSAGE_CHARS: usize = 300;
/// Characters kept of the end of stdout and of stderr.
const TAIL_CHARS: usize = 2000;
/// Arguments of the command shown in an answer (a rerun of many failures
/// has one per test).
const MAX_SHOWN_ARGS: usize = 40;
/// Bytes of `ptp-agent list --json` output read: the agent reads 32 MiB
/// of a runner's listing (about 300,000 test ids), JSON adds quotes.
const COLLECT_KEEP_BYTES: usize = 40 * 1024 * 1024;
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
                return Ok(RunAnswer::killed(self, root, command, &finished, started));
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
        let mut answer = RunAnswer::from_results(self, root, command, results, &finished);
        if note.is_some() {
            answer.hint = note;
        }
        Ok(answer)
    }
}

/// The last run's file name in a root's cache directory.
const LAST_RUN: &str = "last-run.json";

/// Why a local tool could not answer. Displayed as is.
#[derive(Debug, thiserror::Error)]
enum LocalError {
    /// An argument is refused; nothing was started.
    #[error("{0}")]
    Argument(String),
    /// The setup does not allow a run (root, runner, agent, cache).
    #[error("{0}")]
    Setup(String),
    /// `run_failed` without a previous run.
    #[error("{0}")]
    NoPreviousRun(String),
    /// Another run is going on.
    #[error("{0}")]
    Busy(String),
    /// The run happened but gave nothing to answer from.
    #[error("{0}")]
    Run(String),
    /// The client cancelled the call (or left); the run was stopped.
    #[error("the call was cancelled; the run was stopped")]
    Cancelled,
}

/// Runs a tool until it answers or the client cancels the call (MCP's
/// `notifications/cancelled`, or the session ending): rmcp only signals
/// cancellation, so the work is dropped here, which stops its process
/// ([`process`]'s guarantees) and frees the one-run lock.
async fn until_cancelled(
    ct: CancellationToken,
    work: impl std::future::Future<Output = Result<CallToolResult, LocalError>>,
) -> Result<CallToolResult, LocalError> {
    tokio::select! {
        answer = work => answer,
        _ = ct.cancelled() => Err(LocalError::Cancelled),
    }
}

// ---- the agent's results file ----------------------------------------------

/// Counts by outcome (the agent's `counts`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(default)]
struct Counts {
    total: u64,
    passed: u64,
    failed: u64,
    error: u64,
    skipped: u64,
    xfailed: u64,
    xpassed: u64,
}

/// A case of the agent's results file.
#[derive(Debug, Deserialize)]
struct Case {
    test_id: String,
    outcome: String,
    #[serde(default)]
    duration_secs: f64,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    selector: Option<String>,
    #[serde(default)]
    quarantined: bool,
}

impl Case {
    fn is_failure(&self) -> bool {
        matches!(self.outcome.as_str(), "failed" | "error")
    }
}

/// The agent's explanation in its stderr: its `ptp-agent: ` lines that
/// are not progress, or the whole tail.
fn agent_says(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("ptp-agent: "))
        .filter(|l| !l.starts_with("warning: branch and commit unknown"))
        .collect();
    if lines.is_empty() {
        stderr.trim().to_string()
    } else {
        lines.join("; ")
    }
}

/// What `ptp-agent run --failed-from` selected (the results file's
/// `rerun`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RerunLine {
    from_run_id: String,
    tests: Vec<String>,
    not_mapped: Vec<String>,
}

/// The agent's `--results-json` file, format 1 (ptp-agent's `results`
/// module documents it). Lenient: fields this server does not use may
/// change.
#[derive(Debug, Deserialize)]
struct Results {
    format: u32,
    run_id: String,
    #[serde(default)]
    runner: Option<String>,
    status: String,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    duration_secs: f64,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    report: bool,
    #[serde(default)]
    counts: Counts,
    #[serde(default)]
    published: bool,
    #[serde(default)]
    delivery: String,
    #[serde(default)]
    spool_file: Option<String>,
    #[serde(default)]
    cases: Vec<Case>,
    #[serde(default)]
    rerun: Option<RerunLine>,
    #[serde(default)]
    quarantined_failures: Vec<String>,
    #[serde(default)]
    passed_by_quarantine: bool,
}

/// The results file at `path`: `None` when there is none.
fn read_results(path: &Path) -> Result<Option<Results>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let results: Results = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not a ptp-agent results file ({e}); delete it and call run_tests",
            path.display()
        )
    })?;
    if results.format != 1 {
        return Err(format!(
            "{} has results format {}, this ptp-mcp reads format 1: use a ptp-agent of the same \
             version",
            path.display(),
            results.format
        ));
    }
    Ok(Some(results))
}

// ---- answers ----------------------------------------------------------------

/// A failed or errored test in an answer.
#[derive(Debug, Serialize)]
struct FailureLine {
    test_id: String,
    /// The runner-native selector (a pytest node id, a test name), when
    /// the agent could find one.
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    outcome: String,
    /// On the project's quarantine list.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    quarantined: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    duration_s: f64,
}

/// The end of the output, when no report explains the run.
#[derive(Debug, Serialize)]
struct Tails {
    stdout: String,
    stderr: String,
}

/// What `run_failed` selected.
#[derive(Debug, Serialize)]
struct Rerun {
    from_run_id: String,
    total: usize,
    tests: Vec<String>,
    /// Failed tests of the last run that map to no file under the root
    /// (moved or deleted since): not rerun.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_mapped: Vec<String>,
}

/// The answer of `run_tests` and `run_failed`.
#[derive(Debug, Serialize)]
struct RunAnswer {
    runner: String,
    project_root: String,
    /// What ran, argv by argv (no shell).
    command: Vec<String>,
    status: String,
    exit_code: Option<i32>,
    timed_out: bool,
    counts: Counts,
    failures_total: usize,
    failures: Vec<FailureLine>,
    #[serde(skip_serializing_if = "is_zero")]
    failures_not_shown: usize,
    duration_s: f64,
    run_id: Option<String>,
    published: bool,
    /// How the run reached (or did not reach) the master, in a sentence.
    publish: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tail: Option<Tails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rerun: Option<Rerun>,
    /// Failed tests on the project's quarantine list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    quarantined_failures: Vec<String>,
    /// Every failure was quarantined: the agent exited 0.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    passed_by_quarantine: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn round(secs: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (secs * f).round() / f
}

/// The argv as shown: lossy text, long selections cut.
fn shown(argv: &[OsString]) -> Vec<String> {
    let mut v: Vec<String> = argv
        .iter()
        .take(MAX_SHOWN_ARGS)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.len() > MAX_SHOWN_ARGS {
        v.push(format!("… {} more arguments", argv.len() - MAX_SHOWN_ARGS));
    }
    v
}

impl RunAnswer {
    fn from_results(
        local: &Local,
        root: &Path,
        command: Vec<String>,
        r: Results,
        finished: &process::Finished,
    ) -> RunAnswer {
        let failing: Vec<&Case> = r.cases.iter().filter(|c| c.is_failure()).collect();
        let failures = failing
            .iter()
            .take(MAX_FAILURES)
            .map(|c| FailureLine {
                test_id: c.test_id.clone(),
                node_id: c.selector.clone(),
                outcome: c.outcome.clone(),
                quarantined: c.quarantined,
                message: c.message.as_deref().map(|m| trim_end(m, MESSAGE_CHARS)),
                duration_s: round(c.duration_secs, 3),
            })
            .collect();
        let publish = match (r.delivery.as_str(), &local.nats_url) {
            ("published", Some(url)) => format!(
                "published to NATS at {url}; the master lists it as run {} (get_failures with \
                 this run_id gives tracebacks)",
                r.run_id
            ),
            ("not_requested", _) | (_, None) => "not published: no NATS configured (--nats-url / \
                 NATS_URL); this answer comes from the local report"
                .to_string(),
            ("spooled", Some(url)) => format!(
                "not published: NATS at {url} did not acknowledge within {PUBLISH_BUDGET_SECS} s; \
                 the run waits in {} and is sent by the next ptp-agent run or `ptp-agent flush`",
                r.spool_file.as_deref().unwrap_or("the agent's spool")
            ),
            (_, Some(url)) => format!(
                "not published to NATS at {url} and not spooled either; see the agent's output"
            ),
        };
        let timed_out = r.status == "timed_out" || finished.timed_out;
        let hint = (!failing.is_empty()).then(|| {
            format!(
                "run_failed reruns the {} failed test(s); run_tests with a node_id as filter runs \
                 one",
                failing.len()
            )
        });
        let rerun = r.rerun.map(|l| Rerun {
            from_run_id: l.from_run_id,
            total: l.tests.len(),
            tests: l.tests.into_iter().take(MAX_FAILURES).collect(),
            not_mapped: l.not_mapped,
        });
        RunAnswer {
            runner: r.runner.unwrap_or_else(|| "unknown".into()),
            project_root: root.display().to_string(),
            command,
            status: r.status,
            exit_code: r.exit_code,
            timed_out,
            counts: r.counts,
            failures_total: failing.len(),
            failures_not_shown: failing.len().saturating_sub(MAX_FAILURES),
            failures,
            duration_s: round(r.duration_secs, 2),
            run_id: Some(r.run_id),
            published: r.published,
            publish,
            note: r.note.map(|n| trim_end(&n, 1000)),
            output_tail: (!r.report).then(|| Tails {
                stdout: finished.stdout.tail_text(TAIL_CHARS),
                stderr: finished.stderr.tail_text(TAIL_CHARS),
            }),
            rerun,
            quarantined_failures: r.quarantined_failures,
            passed_by_quarantine: r.passed_by_quarantine,
            hint,
        }
    }

    /// The agent itself ran past its deadline and was killed.
    fn killed(
        local: &Local,
        root: &Path,
        command: Vec<String>,
        finished: &process::Finished,
        started: Instant,
    ) -> RunAnswer {
        RunAnswer {
            runner: "unknown".into(),
            project_root: root.display().to_string(),
            command,
            status: "timed_out".into(),
            exit_code: Some(124),
            timed_out: true,
            counts: Counts::default(),
            failures_total: 0,
            failures: Vec::new(),
            failures_not_shown: 0,
            duration_s: round(started.elapsed().as_secs_f64(), 2),
            run_id: None,
            published: false,
            publish: "not published: the agent was killed before it finished".into(),
            note: Some(format!(
                "ptp-agent did not finish within the run timeout ({} s) plus {} s and was killed",
                local.run_timeout.as_secs(),
                PUBLISH_BUDGET_SECS + AGENT_GRACE.as_secs()
            )),
            output_tail: Some(Tails {
                stdout: finished.stdout.tail_text(TAIL_CHARS),
                stderr: finished.stderr.tail_text(TAIL_CHARS),
            }),
            rerun: None,
            quarantined_failures: Vec::new(),
            passed_by_quarantine: false,
            hint: None,
        }
    }
}

// ---- arguments --------------------------------------------------------------

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

fn json_answer(value: &impl Serialize) -> Result<CallToolResult, LocalError> {
    let text = serde_json::to_string(value)
        .map_err(|e| LocalError::Run(format!("cannot encode the answer as JSON: {e}")))?;
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

// ---- the tools --------------------------------------------------------------

const RUN_TESTS_DESC: &str = "Runs the project's tests on this machine (in the configured project \
root, through ptp-agent like a CI run; pytest, vitest, jest, node --test, go test or cargo-nextest, \
detected from the project or named with runner) and answers: status (passed/failed/interrupted/\
internal_error/usage_error/no_tests/crashed/timed_out), exit code, counts, the failed and errored \
tests with their selector (pytest node id, test name) and trimmed messages, duration, run id, \
whether the run was published to the master, quarantined failures, and the command that ran. \
`filter` narrows the run to a path or node id, or a name filter (pytest -k, -t, -run). Use it to \
check a change or reproduce a failure locally. Prefer run_failed to rerun only what failed last \
time, list_tests to find test ids without running anything, and get_failures for failures of CI \
runs.";

const RUN_FAILED_DESC: &str = "Reruns only the tests that failed or errored in the last local run \
of the project root (run_tests or run_failed), selected by id through the same runner, and \
answers like run_tests plus which tests were rerun. Starts nothing when there was no previous run \
(an error) or when nothing failed (it says so). Use it after changing code to see whether the \
failures are gone. Prefer run_tests for the whole suite or a chosen filter.";

const LIST_TESTS_DESC: &str = "Lists the tests of the project root without running them (pytest \
--collect-only, vitest list, go test -list, nextest list, jest --listTests: file paths; node's \
runner cannot list): test ids, their total, and collection errors. Nothing runs and nothing is \
published. Use it to find the id or name to give run_tests as filter, or to see why tests are \
not collected. Prefer run_tests to run them.";

#[tool_router(router = local_tool_router, vis = "pub(crate)")]
impl PtpMcp {
    #[tool(
        description = RUN_TESTS_DESC,
        input_schema = input_schema::<RunTestsArgs>(),
        annotations(title = "Run tests locally", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn run_tests(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let work = until_cancelled(ctx.ct, self.local_run_tests(args));
        Ok(finish("run_tests", work).await)
    }

    #[tool(
        description = RUN_FAILED_DESC,
        input_schema = input_schema::<RunFailedArgs>(),
        annotations(title = "Rerun failed tests locally", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    async fn run_failed(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let work = until_cancelled(ctx.ct, self.local_run_failed(args));
        Ok(finish("run_failed", work).await)
    }

    #[tool(
        description = LIST_TESTS_DESC,
        input_schema = input_schema::<ListTestsArgs>(),
        annotations(title = "List tests", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn list_tests(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let work = until_cancelled(ctx.ct, self.local_list_tests(args));
        Ok(finish("list_tests", work).await)
    }
}

impl PtpMcp {
    /// The local tools when a project root is configured, else none; added
    /// to the master's tools where the handler is built.
    pub(crate) fn local_tools(&self) -> ToolRouter<PtpMcp> {
        if self.local.is_some() {
            Self::local_tool_router()
        } else {
            ToolRouter::new()
        }
    }

    fn local(&self) -> Result<&Local, LocalError> {
        self.local.as_deref().ok_or_else(|| {
            LocalError::Setup(
                "local test runs are off: start ptp-mcp with --project-root (PTP_MCP_PROJECT_ROOT)"
                    .into(),
            )
        })
    }

    async fn local_run_tests(&self, args: JsonObject) -> Result<CallToolResult, LocalError> {
        let a: RunTestsArgs = parse("run_tests", args)?;
        let selection = selection(a.filter)?;
        let local = self.local()?;
        let root = local.root()?;
        let mut extra = local.runner_args(&root, given(a.runner))?;
        extra.extend(selection);
        json_answer(&local.run(&root, extra).await?)
    }

    async fn local_run_failed(&self, args: JsonObject) -> Result<CallToolResult, LocalError> {
        let _: RunFailedArgs = parse("run_failed", args)?;
        let local = self.local()?;
        let root = local.root()?;
        let path = local.cache_for(&root).join(LAST_RUN);
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
        let mut extra = local.runner_args(&root, last.runner.clone())?;
        extra.push("--failed-from".into());
        extra.push(path.into_os_string());
        let answer = local.run(&root, extra).await?;
        json_answer(&answer)
    }

    async fn local_list_tests(&self, args: JsonObject) -> Result<CallToolResult, LocalError> {
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
        let local = self.local()?;
        let root = local.root()?;
        let mut argv: Vec<OsString> = vec![
            local.agent_bin.clone().into(),
            "list".into(),
            "--json".into(),
            "--timeout".into(),
            local.run_timeout.as_secs().to_string().into(),
        ];
        argv.extend(local.runner_args(&root, given(a.runner))?);
        argv.extend(selection);
        let finished = process::run(process::Spec {
            argv: &argv,
            cwd: &root,
            env: Vec::new(),
            env_remove: &AGENT_ENV_REMOVED,
            deadline: local.run_timeout + AGENT_GRACE,
            keep_stdout: COLLECT_KEEP_BYTES,
        })
        .await
        .map_err(|e| {
            LocalError::Setup(format!(
                "cannot start the agent {}: {e}. Set --agent-bin / PTP_AGENT_BIN to the ptp-agent \
                 binary (cargo build --release --bin ptp-agent)",
                local.agent_bin.display()
            ))
        })?;
        /// `ptp-agent list --json`.
        #[derive(Deserialize)]
        struct Listing {
            runner: String,
            command: Vec<String>,
            status: String,
            exit_code: i32,
            #[serde(default)]
            tests: Vec<String>,
            #[serde(default)]
            errors: Vec<String>,
            #[serde(default)]
            cut: bool,
        }
        let listing: Listing = match serde_json::from_slice(&finished.stdout.head) {
            Ok(l) => l,
            Err(_) if finished.timed_out => Listing {
                runner: "unknown".into(),
                command: Vec::new(),
                status: "timed_out".into(),
                exit_code: 124,
                tests: Vec::new(),
                errors: Vec::new(),
                cut: false,
            },
            Err(_) => {
                return Err(LocalError::Setup(format!(
                    "the agent could not list the tests: {}; nothing was run",
                    agent_says(&finished.stderr.tail_text(2000))
                )));
            }
        };
        let ids = &listing.tests;
        let clean = listing.status == "ok" || listing.status == "no_tests";
        #[derive(Serialize)]
        struct Answer<'a> {
            runner: &'a str,
            project_root: String,
            command: Vec<String>,
            status: &'a str,
            exit_code: Option<i32>,
            timed_out: bool,
            total: usize,
            shown: usize,
            tests: &'a [String],
            #[serde(skip_serializing_if = "is_zero")]
            more: usize,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            errors: Vec<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            output_tail: Option<Tails>,
            note: String,
        }
        let shown_ids = &ids[..ids.len().min(limit)];
        json_answer(&Answer {
            runner: &listing.runner,
            project_root: root.display().to_string(),
            command: listing.command,
            status: &listing.status,
            exit_code: Some(listing.exit_code),
            timed_out: listing.status == "timed_out",
            total: ids.len(),
            shown: shown_ids.len(),
            tests: shown_ids,
            more: ids.len() - shown_ids.len(),
            errors: listing
                .errors
                .iter()
                .take(20)
                .map(|l| trim_end(l, MESSAGE_CHARS))
                .collect(),
            output_tail: (!clean).then(|| Tails {
                stdout: String::new(),
                stderr: finished.stderr.tail_text(TAIL_CHARS),
            }),
            note: if listing.cut {
                format!(
                    "collection only: no test ran, nothing was published; the listing was cut \
                     after {} MiB of output",
                    COLLECT_KEEP_BYTES / (1024 * 1024)
                )
            } else {
                "collection only: no test ran, nothing was published".into()
            },
        })
    }
}
