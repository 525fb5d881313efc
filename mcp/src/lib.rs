//! pytest-platform's MCP server: answers AI editors (Cursor, Claude Desktop,
//! VS Code) about test health, and renders a self-contained HTML report.
//!
//! # Layout
//!
//! - [`args`]: tool arguments at the boundary: every string bounded before
//!   it is parsed, used or echoed.
//! - [`config`]: the one clap struct of the `ptp-mcp` binary.
//! - [`master`]: a typed HTTP client of the master's JSON API and the errors
//!   a person can act on (unreachable, not found, refused argument).
//! - [`server`]: the MCP server ([`PtpMcp`]): the master's client, the
//!   report dir and the local-run settings, built once from the config.
//! - [`answer`]: what every tool shares: the tool error, argument checks,
//!   the JSON answer, and [`answer::finish`] (failures and panics become
//!   tool errors).
//! - [`tools`]: the tools, grouped by what they read (`runs`, `analytics`,
//!   `report`, `local`), and the `ServerHandler`; every result is compact
//!   JSON text for a model to read, every failure a tool error.
//! - [`jsonrpc`]: screening incoming JSON-RPC messages before rmcp reads
//!   them (parse errors, wrongly typed params, oversized ids).
//! - [`page`]: the report as a web page, `GET /report` on `--http`, with
//!   the tool's argument rules and security headers.
//! - [`local`]: the project's tests run on this machine through `ptp-agent`
//!   (with `--project-root`), for `run_tests`, `run_failed`, `list_tests`.
//! - [`report`]: the HTML report (askama templates in `templates/`), with an
//!   inline SVG trend chart; trimmed so a 60,000-case run stays small.
//! - [`report_dir`]: where `get_report` may write files (`--report-dir`),
//!   and the checks that keep it there.
//! - [`text`]: trimming long texts with a visible marker.
//! - [`transport`]: serving over stdio or streamable HTTP.
//!
//! The modules form a DAG (`scripts/module-graph mcp` checks it): `tools`
//! reads `server` and `answer`, `page` reads `tools::report`, `transport`
//! reads `page`; nothing reads upwards.
//!
//! # Guarantees
//!
//! The server talks to the master over HTTP only; it never opens SQLite or
//! NATS, so it can run on a developer's laptop far from the master (local
//! runs reach NATS through the agent it starts). A tool
//! that fails (master down, unknown run, bad argument) answers a tool error
//! with a sentence saying what to check, and the server keeps serving.
//! [`serve_http`] takes a bound listener and a cancellation token, so the
//! tests run exactly what `ptp-mcp --http` runs.

pub mod answer;
pub mod args;
pub mod config;
pub mod jsonrpc;
pub mod local;
pub mod master;
pub mod page;
pub mod report;
pub mod report_dir;
pub mod server;
pub mod text;
pub mod tools;
pub mod transport;

pub use config::Config;
pub use master::{MasterClient, MasterError};
pub use server::{PtpMcp, SetupError};
pub use transport::{HttpAccess, http_router, serve_http, serve_lines, serve_stdio};
