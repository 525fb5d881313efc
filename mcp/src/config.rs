//! Settings of `ptp-mcp`: one clap struct, every option also an environment
//! variable (editors configure MCP servers through `env` blocks), every
//! default usable on a developer's machine with a local master.
//!
//! `main` parses this once and passes typed values down; the library never
//! reads the environment, so tests build the struct themselves.

use std::time::Duration;

use clap::Parser;

/// Host names the streamable HTTP transport always accepts in the `Host`
/// header (rmcp's default: loopback only, against DNS rebinding).
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// pytest-platform MCP server: answers AI editors about test health (runs,
/// trends, failures, workers, HTML report) from the master's JSON API.
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
}

impl Config {
    /// Settings for tests and embedding: the given master, everything else
    /// default (stdio, 10 s timeout, no token).
    pub fn for_master(master_url: impl Into<String>) -> Config {
        Config {
            master_url: master_url.into(),
            timeout_secs: 10,
            api_token: None,
            http: None,
            allowed_hosts: Vec::new(),
            http_tokens: Vec::new(),
        }
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
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
    }
}
