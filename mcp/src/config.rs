//! Settings of `ptp-mcp`: one clap struct, every option also an environment
//! variable (editors configure MCP servers through `env` blocks), every
//! default usable on a developer's machine with a local master.
//!
//! `main` parses this once and passes typed values down; the library never
//! reads the environment, so tests build the struct themselves.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Host names the streamable HTTP transport always accepts in the `Host`
/// header (rmcp's default: loopback only, against DNS rebinding).
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// pytest-platform MCP server: answers AI editors about test health (runs,
/// trends, failures, workers, HTML report) from the master's JSON API, and
/// with --project-root runs the project's tests locally through ptp-agent.
/// Speaks MCP over stdio unless --http is given.
#[derive(Debug, Clone, Parser)]
#[command(name = "ptp-mcp", version, about, long_about = None)]
pub struct Config {
    /// Base URL of the pytest-platform master (ptp-master). Every tool reads
    /// its JSON API over plain HTTP; nothing else is opened.
    #[arg(long, env = "MASTER_URL", default_value = "http://127.0.0.1:8080")]
    pub master_url: String,

    /// Seconds one request to the master may take (connect and answer)
    /// before the tool reports the master unreachable.
    #[arg(long, env = "PTP_MCP_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout_secs: u64,

    /// Bearer token sent to the master as `Authorization: Bearer <token>`,
    /// for masters behind a proxy that asks for one.
    #[arg(long, env = "PTP_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Serve MCP over streamable HTTP at http://ADDR/mcp (e.g.
    /// 127.0.0.1:8765) instead of stdio.
    #[arg(long, env = "PTP_MCP_HTTP", value_name = "ADDR")]
    pub http: Option<String>,

    /// With --http: host names (or host:port) accepted in the Host header
    /// besides localhost, 127.0.0.1 and ::1, comma-separated. Add the name
    /// clients use to reach this server; `*` accepts any host (only behind a
    /// proxy that checks it: DNS rebinding).
    #[arg(
        long,
        env = "PTP_MCP_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOSTS"
    )]
    pub allowed_hosts: Vec<String>,

    /// With --http: bearer tokens a client must send (`Authorization:
    /// Bearer <token>`) to use /mcp, comma-separated; several at once for
    /// rotation. Unset: no authentication (keep the server on loopback or
    /// behind a proxy that checks callers).
    #[arg(
        long,
        env = "PTP_MCP_HTTP_TOKENS",
        value_delimiter = ',',
        value_name = "TOKENS",
        hide_env_values = true
    )]
    pub http_tokens: Vec<String>,

    /// Directory get_report may write HTML files into: its output_path is a
    /// file name (ending in .html) inside it; created if missing. Unset (the
    /// default, over stdio and --http alike): get_report writes no file and
    /// embeds the HTML in its answer; output_path is refused.
    #[arg(long, env = "PTP_MCP_REPORT_DIR", value_name = "DIR")]
    pub report_dir: Option<PathBuf>,

    /// The project whose tests run_tests, run_failed and list_tests run
    /// (the directory pytest runs in). Unset: those three tools are not
    /// offered.
    #[arg(long, env = "PTP_MCP_PROJECT_ROOT", value_name = "DIR")]
    pub project_root: Option<PathBuf>,

    /// The ptp-agent binary that runs the tests [default: ptp-agent next to
    /// this executable, else on PATH].
    #[arg(long, env = "PTP_AGENT_BIN", value_name = "FILE")]
    pub agent_bin: Option<PathBuf>,

    /// Seconds a local test run (or test collection) may take; then its
    /// process group is killed and the answer says timed_out (exit 124).
    #[arg(long, env = "PTP_MCP_RUN_TIMEOUT_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub run_timeout_secs: u64,

    /// NATS server the agent publishes local runs to, so they reach the
    /// master. Unset: runs are not published and tools answer from the
    /// local report. NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS,
    /// NATS_CA, NATS_CERT and NATS_KEY in this server's environment reach
    /// the agent unchanged.
    #[arg(long, env = "NATS_URL", value_name = "URL")]
    pub nats_url: Option<String>,

    /// Python interpreter for pytest [default: the project root's
    /// .venv/bin/python if present, else python3]. A relative path is taken
    /// from the project root.
    #[arg(long, env = "PTP_MCP_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// Project name local runs are published under [default: the agent's
    /// own: the git repository's directory name].
    #[arg(long, env = "PTP_MCP_PROJECT", value_name = "NAME")]
    pub run_project: Option<String>,

    /// Branch local runs are published under [default: the agent's own:
    /// CI variables, else git].
    #[arg(long, env = "PTP_MCP_BRANCH", value_name = "NAME")]
    pub run_branch: Option<String>,

    /// Where the last local run of each project root is kept for
    /// run_failed [default: $XDG_CACHE_HOME/ptp-mcp, else ~/.cache/ptp-mcp].
    #[arg(long, env = "PTP_MCP_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl Config {
    /// Settings for tests and embedding: the given master, everything else
    /// default (stdio, 10 s timeout, no token, no report dir).
    pub fn for_master(master_url: impl Into<String>) -> Config {
        Config {
            master_url: master_url.into(),
            timeout_secs: 10,
            api_token: None,
            http: None,
            allowed_hosts: Vec::new(),
            http_tokens: Vec::new(),
            report_dir: None,
            project_root: None,
            agent_bin: None,
            run_timeout_secs: 900,
            nats_url: None,
            python: None,
            run_project: None,
            run_branch: None,
            cache_dir: None,
        }
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The agent binary: --agent-bin, else `ptp-agent` next to this
    /// executable (how release archives and the Docker image ship them),
    /// else `ptp-agent` looked up on PATH when it runs.
    pub fn agent_bin(&self) -> PathBuf {
        if let Some(p) = &self.agent_bin {
            return p.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("ptp-agent")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("ptp-agent"))
    }

    /// The cache directory: --cache-dir, else `$XDG_CACHE_HOME/ptp-mcp`,
    /// else `~/.cache/ptp-mcp`, else the system's temporary directory.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(p) = &self.cache_dir {
            return p.clone();
        }
        let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        nonempty("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("ptp-mcp")
    }

    /// Hosts the HTTP transport accepts: loopback plus `--allowed-hosts`.
    /// `None` means any host (`*` was given).
    pub fn allowed_hosts(&self) -> Option<Vec<String>> {
        let extra: Vec<String> = self
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        if extra.iter().any(|h| h == "*") {
            return None;
        }
        let mut hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
        hosts.extend(extra);
        Some(hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_and_defaults() {
        use clap::CommandFactory;
        let cmd = Config::command();
        let arg = |id: &str| {
            let a = cmd
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("argument {id}"));
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            let default: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            (env, default)
        };
        assert_eq!(
            arg("master_url"),
            (
                Some("MASTER_URL".into()),
                vec!["http://127.0.0.1:8080".into()]
            )
        );
        assert_eq!(
            arg("timeout_secs"),
            (Some("PTP_MCP_TIMEOUT_SECS".into()), vec!["10".into()])
        );
        assert_eq!(arg("api_token").0.as_deref(), Some("PTP_API_TOKEN"));
        assert_eq!(arg("http").0.as_deref(), Some("PTP_MCP_HTTP"));
        assert_eq!(
            arg("allowed_hosts").0.as_deref(),
            Some("PTP_MCP_ALLOWED_HOSTS")
        );
        assert_eq!(
            arg("project_root").0.as_deref(),
            Some("PTP_MCP_PROJECT_ROOT")
        );
        assert_eq!(arg("agent_bin").0.as_deref(), Some("PTP_AGENT_BIN"));
        assert_eq!(
            arg("run_timeout_secs"),
            (Some("PTP_MCP_RUN_TIMEOUT_SECS".into()), vec!["900".into()])
        );
        assert_eq!(arg("nats_url"), (Some("NATS_URL".into()), vec![]));
        assert_eq!(arg("python").0.as_deref(), Some("PTP_MCP_PYTHON"));
        assert_eq!(arg("run_project").0.as_deref(), Some("PTP_MCP_PROJECT"));
        assert_eq!(arg("run_branch").0.as_deref(), Some("PTP_MCP_BRANCH"));
        assert_eq!(arg("cache_dir").0.as_deref(), Some("PTP_MCP_CACHE_DIR"));
        assert_eq!(
            arg("report_dir"),
            (Some("PTP_MCP_REPORT_DIR".into()), vec![])
        );
        assert_eq!(
            Config::for_master("http://x").allowed_hosts(),
            Some(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
        );
    }

    #[test]
    fn allowed_hosts_add_to_loopback_and_star_opens() {
        let c = Config::try_parse_from(["ptp-mcp", "--allowed-hosts", "mcp.example.com, box:8765"])
            .expect("parses");
        let hosts = c.allowed_hosts().expect("restricted");
        assert!(hosts.contains(&"localhost".to_string()));
        assert!(hosts.contains(&"mcp.example.com".to_string()));
        assert!(hosts.contains(&"box:8765".to_string()));
        let c = Config::try_parse_from(["ptp-mcp", "--allowed-hosts", "*"]).expect("parses");
        assert_eq!(c.allowed_hosts(), None);
    }

    #[test]
    fn timeout_is_bounded() {
        assert!(Config::try_parse_from(["ptp-mcp", "--timeout-secs", "0"]).is_err());
        assert!(Config::try_parse_from(["ptp-mcp", "--run-timeout-secs", "0"]).is_err());
        assert!(Config::try_parse_from(["ptp-mcp", "--run-timeout-secs", "86401"]).is_err());
    }
}
