//! The agent's command line: one clap struct, every option also an
//! environment variable (compatible with the original system's CI snippet:
//! `NATS_URL`, `WORKER_ID`, `PROJECT`, `BRANCH`, `COMMIT`).
//!
//! Defaults are resolved here, once: worker id from the host name, branch and
//! commit from the CI's own variables (GitHub Actions, GitLab, Buildkite,
//! CircleCI, Jenkins) and then from git, project from the repository's
//! directory name. What could not be resolved and matters (branch and commit
//! outside a git checkout) becomes a warning in [`Settings::warnings`], which
//! the commands print once.
//!
//! The transport is decided here too ([`Transport`]): NATS unless the master
//! is named (`MASTER_URL`) and no NATS URL is, or `--transport http` asks.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// pytest-platform worker agent: runs your test command, reads the JUnit XML
/// it writes and publishes the results to NATS JetStream. Your command's exit
/// code is passed through; reporting trouble never changes it unless you ask
/// with --strict.
#[derive(Debug, Parser)]
#[command(name = "ptp-agent", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub common: Common,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a test command and publish its results:
    /// `ptp-agent run -- python -m pytest tests/`.
    ///
    /// For the runners it knows (pytest, vitest, jest with jest-junit, node
    /// --test, go test through gotestsum, cargo nextest) the agent adds the
    /// arguments that make them write a JUnit report. For other commands
    /// name the report files with --junit. Without a command, the runner
    /// named with --runner or detected in the current directory runs every
    /// test.
    Run(RunArgs),
    /// List the tests of the project without running them (pytest
    /// --collect-only, vitest list, go test -list, nextest list, jest
    /// --listTests): one id per line, or JSON with --json.
    List(ListArgs),
    /// Publish JUnit XML reports that already exist (tests ran earlier in the
    /// job): `ptp-agent upload 'reports/**/*.xml'`.
    Upload(UploadArgs),
    /// Send runs left in the spool directory by earlier runs that could not
    /// reach NATS.
    Flush,
    /// Check the settings before a first run: connect with the configured
    /// URL and credentials, check JetStream and the results stream (or the
    /// master over HTTP), print what a run would send. Exits 0 when a run
    /// would be delivered, 1 with the reason and the fix otherwise.
    Check,
}

/// How runs reach the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportArg {
    /// HTTP when MASTER_URL is set and NATS_URL is not, else NATS.
    Auto,
    /// Publish to NATS JetStream directly.
    Nats,
    /// Send the run to the master over HTTP (MASTER_URL, PTP_API_TOKEN),
    /// which publishes it into the stream.
    Http,
}

/// Options of `ptp-agent run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// JUnit XML file or glob the command writes (repeatable). Not needed for
    /// pytest.
    #[arg(long, env = "PTP_JUNIT", value_delimiter = ',')]
    pub junit: Vec<String>,
    /// Kill the command (its whole process group) after this many seconds
    /// and exit 124.
    #[arg(long, env = "PTP_TIMEOUT")]
    pub timeout: Option<u64>,
    /// Seconds between heartbeats while the command runs.
    #[arg(long, env = "PTP_HEARTBEAT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,
    /// Do not publish: no NATS connection, no heartbeats, nothing spooled
    /// and no spooled run flushed. For local runs that only want the
    /// results (see --results-json).
    #[arg(long, env = "PTP_NO_PUBLISH")]
    pub no_publish: bool,
    /// Also write the parsed run to this file as JSON (status, counts, every
    /// case with outcome, message and duration, the run id, whether it was
    /// published), replacing it; written atomically once delivery is done.
    #[arg(long, env = "PTP_RESULTS_JSON", value_name = "FILE")]
    pub results_json: Option<PathBuf>,
    /// Run only the tests that failed or errored in this --results-json
    /// file of an earlier run (selected by id, as --retries does).
    #[arg(long, env = "PTP_FAILED_FROM", value_name = "FILE")]
    pub failed_from: Option<PathBuf>,
    /// Rerun the tests that failed up to N times, only those, by id (see
    /// --rerun-command for runners the agent does not know). A test that
    /// passes on a retry is reported flaky (passed on retry) and the run
    /// passes if nothing else failed; a test failing every attempt is a
    /// failure. A crashed run (signal, timeout, no report, pytest exit 2-5)
    /// is never retried.
    #[arg(long, env = "PTP_RETRIES", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=crate::retry::MAX_RETRIES as i64))]
    pub retries: u32,
    /// The command that reruns failed tests, as a template (split like a
    /// shell would, never run through one): `{tests}` becomes one argument
    /// per test (its id as the runner selects it, else its name),
    /// `{pattern}` one anchored regular expression of their names, `{files}`
    /// their files; inside a longer word the values are shell-quoted.
    /// Example: 'npx mocha --grep {pattern}'. Default: the runner's own
    /// selection.
    #[arg(long, env = "PTP_RERUN_COMMAND", value_name = "TEMPLATE")]
    pub rerun_command: Option<String>,
    /// Ignore the project's quarantine list: every failure fails the run
    /// and no case is marked quarantined. By default the agent reads the
    /// list from NATS at start (cached next to the spool); when every
    /// failing test is quarantined and the run did not crash, it exits 0.
    #[arg(long, env = "PTP_NO_QUARANTINE")]
    pub no_quarantine: bool,
    /// Which runner and tests (shared with `ptp-agent list`).
    #[command(flatten)]
    pub select: Selection,
}

/// Which runner, which tests and which command: `run` and `list` take the
/// same options.
#[derive(Debug, Args)]
pub struct Selection {
    /// The test runner: pytest, vitest, jest, node, go, nextest [default:
    /// recognised from the command, else detected from the project's files
    /// in the current directory].
    #[arg(long, env = "PTP_RUNNER")]
    pub runner: Option<String>,
    /// Run only the tests matching this: a path (a file, directory or Go
    /// package, or a pytest node id) or a name filter (pytest -k, vitest and
    /// jest -t, node --test-name-pattern, go -run, a nextest filter).
    #[arg(long, env = "PTP_FILTER")]
    pub filter: Option<String>,
    /// The Python whose pytest runs when no command is given [default:
    /// .venv/bin/python in the current directory, else python3].
    #[arg(long, env = "PTP_AGENT_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// The test command and its arguments (after `--`) [default: the
    /// runner's own command: python -m pytest, npx vitest run, npx jest,
    /// node --test, gotestsum -- ./..., cargo nextest run; `list` turns it
    /// into the runner's listing command].
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// Options of `ptp-agent list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Kill the listing (its whole process group) after this many seconds.
    #[arg(long, env = "PTP_TIMEOUT")]
    pub timeout: Option<u64>,
    /// Print one JSON document (runner, status, exit code, command, tests,
    /// collection errors) instead of one id per line.
    #[arg(long, env = "PTP_LIST_JSON")]
    pub json: bool,
    /// Which runner and tests (as for `run`).
    #[command(flatten)]
    pub select: Selection,
}

/// Options of `ptp-agent upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Runner that wrote the reports (shown in the run; e.g. jest, go, maven).
    #[arg(long, env = "PTP_RUNNER")]
    pub runner: Option<String>,
    /// JUnit XML files or globs.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
}

/// Settings shared by every subcommand.
#[derive(Debug, Args)]
pub struct Common {
    /// NATS server to publish to; for a cluster, every node separated by
    /// commas (the agent fails over) [default: nats://127.0.0.1:4222].
    #[arg(long, global = true, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// How runs reach the stream: `nats`, `http` (through the master at
    /// --master-url), or `auto`: http when MASTER_URL is set and NATS_URL is
    /// not, else nats.
    #[arg(long, global = true, env = "PTP_TRANSPORT", value_enum, default_value_t = TransportArg::Auto)]
    pub transport: TransportArg,
    /// The master's HTTP API (e.g. https://ptp.example.com): the HTTP
    /// transport sends runs there, and the job summary asks it for new
    /// failures against the base branch and for flaky tests.
    #[arg(long, global = true, env = "MASTER_URL")]
    pub master_url: Option<String>,
    /// Bearer token for the master: a write token (PTP_WRITE_TOKENS) for
    /// the HTTP transport; a read token suffices for the summary's queries.
    #[arg(long, global = true, env = "PTP_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// This worker's id [default: the host name].
    #[arg(long, global = true, env = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// Project name [default: the git repository's directory name, else the
    /// current directory's].
    #[arg(long, global = true, env = "PROJECT")]
    pub project: Option<String>,
    /// Branch [default: from CI variables (GITHUB_HEAD_REF, GITHUB_REF_NAME,
    /// CI_COMMIT_REF_NAME, BUILDKITE_BRANCH, CIRCLE_BRANCH, GIT_BRANCH), else
    /// git].
    #[arg(long, global = true, env = "BRANCH")]
    pub branch: Option<String>,
    /// Commit sha [default: from CI variables (GITHUB_SHA, CI_COMMIT_SHA,
    /// BUILDKITE_COMMIT, CIRCLE_SHA1, GIT_COMMIT), else git].
    #[arg(long, global = true, env = "COMMIT")]
    pub commit: Option<String>,
    /// Where runs that could not be published wait for the next run or flush
    /// [default: $XDG_CACHE_HOME/ptp-agent/spool or ~/.cache/ptp-agent/spool].
    #[arg(long, global = true, env = "PTP_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Seconds to keep retrying NATS before spooling the run.
    #[arg(long, global = true, env = "PTP_PUBLISH_TIMEOUT", default_value_t = 30)]
    pub publish_timeout: u64,
    /// Exit non-zero (75) when the results could not be published or the
    /// report could not be read, even if the tests passed.
    #[arg(long, global = true, env = "PTP_STRICT")]
    pub strict: bool,
    /// Print only errors.
    #[arg(long, short, global = true, env = "PTP_QUIET")]
    pub quiet: bool,
    /// The CODEOWNERS file whose owners each case carries [default: the
    /// first of .github/CODEOWNERS, .gitlab/CODEOWNERS, CODEOWNERS,
    /// docs/CODEOWNERS in the repository's root].
    #[arg(long, global = true, env = "PTP_CODEOWNERS", value_name = "FILE")]
    pub codeowners: Option<PathBuf>,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub auth: ptp_nats::NatsAuth,
    /// Job summary and annotations.
    #[command(flatten)]
    pub summary: SummaryArgs,
}

/// The job summary (Markdown) and GitHub annotations of `run` and `upload`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Append a Markdown summary of the run to FILE [default:
    /// $GITHUB_STEP_SUMMARY when set, so GitHub Actions shows it on the
    /// job's page].
    #[arg(long, global = true, env = "PTP_SUMMARY", value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Write no summary, even under GitHub Actions.
    #[arg(
        long,
        global = true,
        env = "PTP_NO_SUMMARY",
        conflicts_with = "summary"
    )]
    pub no_summary: bool,
    /// Print no `::error` annotations for failed tests (printed by default
    /// when GITHUB_ACTIONS=true).
    #[arg(long, global = true, env = "PTP_NO_ANNOTATIONS")]
    pub no_annotations: bool,
    /// Branch whose latest run the summary compares against, to list new
    /// failures (needs MASTER_URL) [default: GITHUB_BASE_REF,
    /// CI_MERGE_REQUEST_TARGET_BRANCH_NAME, CI_DEFAULT_BRANCH].
    #[arg(long, global = true, env = "PTP_BASE_BRANCH")]
    pub base_branch: Option<String>,
    /// Where `ptp-mcp --http` serves the HTML report (e.g.
    /// https://ci-tools.example.com): the summary links to
    /// `<URL>/report?project=...&branch=...`. No link without it.
    #[arg(long, global = true, env = "PTP_REPORT_URL")]
    pub report_url: Option<String>,
}

/// Default NATS URL.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// The transport, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// JetStream at [`Settings::nats_url`].
    Nats,
    /// The master's HTTP API at [`Settings::master_url`].
    Http,
}

/// Where the job summary goes and what it may ask the master.
#[derive(Debug, Clone, Default)]
pub struct SummarySettings {
    /// Markdown file to append to; `None`: no summary.
    pub file: Option<PathBuf>,
    /// Print `::error` workflow commands (GitHub Actions).
    pub annotations: bool,
    /// Branch to compare against.
    pub base_branch: Option<String>,
    /// Base URL of the HTML report page.
    pub report_url: Option<String>,
}

/// Settings with every default resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// NATS URL.
    pub nats_url: String,
    /// How runs are sent.
    pub transport: Transport,
    /// The master's API, when named.
    pub master_url: Option<String>,
    /// Bearer token for the master (never printed).
    pub token: Option<String>,
    /// Job summary and annotations.
    pub summary: SummarySettings,
    /// What could not be resolved and matters, said once by the commands.
    pub warnings: Vec<String>,
    /// NATS credentials and TLS.
    pub auth: ptp_nats::NatsAuth,
    /// Worker id.
    pub worker_id: String,
    /// Host name.
    pub host: String,
    /// Project.
    pub project: String,
    /// Branch.
    pub branch: Option<String>,
    /// Commit.
    pub commit: Option<String>,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Retry budget.
    pub publish_timeout: Duration,
    /// --strict.
    pub strict: bool,
    /// --quiet.
    pub quiet: bool,
    /// --codeowners.
    pub codeowners: Option<PathBuf>,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Runs git with `args`; its trimmed output when it succeeds and says
/// something other than `HEAD`.
pub(crate) fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty() && s != "HEAD").then_some(s)
}

fn default_branch() -> Option<String> {
    [
        "GITHUB_HEAD_REF",
        "GITHUB_REF_NAME",
        "CI_COMMIT_REF_NAME",
        "BUILDKITE_BRANCH",
        "CIRCLE_BRANCH",
        "GIT_BRANCH",
    ]
    .iter()
    .find_map(|v| env_nonempty(v))
    .or_else(|| git(&["rev-parse", "--abbrev-ref", "HEAD"]))
}

fn default_commit() -> Option<String> {
    [
        "GITHUB_SHA",
        "CI_COMMIT_SHA",
        "BUILDKITE_COMMIT",
        "CIRCLE_SHA1",
        "GIT_COMMIT",
    ]
    .iter()
    .find_map(|v| env_nonempty(v))
    .or_else(|| git(&["rev-parse", "HEAD"]))
}

fn default_project() -> String {
    let dir = git(&["rev-parse", "--show-toplevel"])
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok());
    dir.and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

fn default_base_branch() -> Option<String> {
    [
        "GITHUB_BASE_REF",
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
        "CI_DEFAULT_BRANCH",
    ]
    .iter()
    .find_map(|v| env_nonempty(v))
}

fn default_spool() -> PathBuf {
    let base = env_nonempty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env_nonempty("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ptp-agent").join("spool")
}

impl Common {
    /// Resolves every default.
    pub fn resolve(&self) -> Settings {
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let nats_url = nonempty(&self.nats_url);
        let master_url = nonempty(&self.master_url).map(|u| u.trim_end_matches('/').to_string());
        let transport = match self.transport {
            TransportArg::Nats => Transport::Nats,
            TransportArg::Http => Transport::Http,
            TransportArg::Auto if master_url.is_some() && nats_url.is_none() => Transport::Http,
            TransportArg::Auto => Transport::Nats,
        };
        let s = &self.summary;
        let summary = SummarySettings {
            file: if s.no_summary {
                None
            } else {
                s.summary
                    .clone()
                    .filter(|p| !p.as_os_str().is_empty())
                    .or_else(|| env_nonempty("GITHUB_STEP_SUMMARY").map(PathBuf::from))
            },
            annotations: !s.no_annotations
                && std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
            base_branch: nonempty(&s.base_branch).or_else(default_base_branch),
            report_url: nonempty(&s.report_url).map(|u| u.trim_end_matches('/').to_string()),
        };
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let host = if host.is_empty() {
            "unknown-host".into()
        } else {
            host
        };
        let branch = nonempty(&self.branch).or_else(default_branch);
        let commit = nonempty(&self.commit).or_else(default_commit);
        let mut warnings = Vec::new();
        let unknown: Vec<&str> = [("branch", branch.is_none()), ("commit", commit.is_none())]
            .into_iter()
            .filter_map(|(name, missing)| missing.then_some(name))
            .collect();
        if !unknown.is_empty() {
            let them = if unknown.len() == 1 { "it" } else { "them" };
            warnings.push(format!(
                "{} unknown: no CI variable sets {them} and this is not a git checkout, so the run \
                 is stored without {them}; set BRANCH and COMMIT (or --branch / --commit)",
                unknown.join(" and "),
            ));
        }
        Settings {
            nats_url: nats_url.unwrap_or_else(|| DEFAULT_NATS_URL.to_string()),
            transport,
            master_url,
            token: nonempty(&self.token),
            summary,
            warnings,
            auth: self.auth.clone(),
            worker_id: self
                .worker_id
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| host.clone()),
            host,
            project: self
                .project
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(default_project),
            branch,
            commit,
            spool_dir: self.spool_dir.clone().unwrap_or_else(default_spool),
            publish_timeout: Duration::from_secs(self.publish_timeout),
            strict: self.strict,
            quiet: self.quiet,
            codeowners: self
                .codeowners
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
        }
    }
}
