//! The MCP server [`PtpMcp`]: what every tool reads from (the master's
//! client, the report dir, the local-run settings), built once from
//! [`Config`].
//!
//! Shape: the struct alone, so the tools (`tools`, which add the
//! tool routers and the `ServerHandler` on top), the report page and the
//! transport all depend on it and it depends on none of them.
//!
//! Guarantees: building a server checks its settings (the master URL, the
//! report dir) and fails with a [`SetupError`] naming the setting; a built
//! server is cheap to clone (one per session) and shares one HTTP client.

use std::sync::Arc;

use crate::config::Config;
use crate::local::Local;
use crate::master::{MasterClient, MasterError};
use crate::report_dir::{ReportDir, ReportDirError};

/// Why a server could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `--master-url` is not usable.
    #[error(transparent)]
    Master(#[from] MasterError),
    /// `--report-dir` cannot be created or resolved.
    #[error(transparent)]
    ReportDir(#[from] ReportDirError),
}

/// The MCP server: read-only tools over one master (runs, analytics,
/// report), plus the local test-run tools (settings in [`Local`]) when a
/// project root is configured.
#[derive(Clone)]
pub struct PtpMcp {
    pub(crate) master: Arc<MasterClient>,
    /// Local test runs (`--project-root`); `None`: those tools are not offered.
    pub(crate) local: Option<Arc<Local>>,
    /// Where `get_report` may write (`--report-dir`); `None`: it writes no
    /// file and refuses `output_path`.
    pub(crate) report_dir: Option<ReportDir>,
}

impl PtpMcp {
    /// A server answering from `master`, writing no files.
    pub fn new(master: MasterClient) -> PtpMcp {
        PtpMcp {
            master: Arc::new(master),
            local: None,
            report_dir: None,
        }
    }

    /// A server for the master named in `config`; creates `--report-dir`
    /// when given and missing.
    pub fn from_config(config: &Config) -> Result<PtpMcp, SetupError> {
        let mut server = PtpMcp::new(MasterClient::new(
            &config.master_url,
            config.timeout(),
            config.api_token.as_deref(),
        )?);
        server.local = Local::from_config(config).map(Arc::new);
        server.report_dir = config
            .report_dir
            .as_deref()
            .map(ReportDir::open)
            .transpose()?;
        Ok(server)
    }
}
