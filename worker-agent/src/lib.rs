//! The pytest-platform worker agent as a library; the `ptp-agent` binary is a
//! thin shell over it.
//!
//! # Layout
//! - [`config`]: the command line and the defaults taken from CI variables.
//! - [`runner`]: what the agent knows about each test runner (pytest,
//!   vitest, jest, node, go, nextest): detection, report arguments,
//!   selecting and listing tests.
//! - [`process`]: running the test command as a child process (process
//!   group, timeout, signal forwarding).
//! - [`junit`]: parsing JUnit XML of the common dialects.
//! - [`report`]: turning exit code and cases into a run with a status.
//! - [`owners`]: CODEOWNERS: the owners of each case's file.
//! - [`quarantine`]: the project's quarantine list: read, cached, applied.
//! - [`retry`]: `--retries`: rerunning failed tests, merging the attempts.
//! - [`publish`]: heartbeats and publishing to JetStream with retries.
//! - [`spool`]: runs that could not be published, kept on disk.
//! - [`results`]: the `--results-json` file, the parsed run for a program
//!   that started the agent (ptp-mcp).
//! - [`master`]: the master's HTTP API: the HTTP transport and the
//!   summary's queries.
//! - [`summary`] and [`annotations`]: the job summary (Markdown) and
//!   GitHub's `::error` workflow commands.
//! - [`commands`]: `run`, `list`, `upload`, `flush`; [`check`]: `check`;
//!   [`listing`]: running a runner's listing command.

pub mod annotations;
pub mod check;
pub mod commands;
pub mod config;
pub mod junit;
pub mod listing;
pub mod master;
pub mod owners;
pub mod process;
pub mod publish;
pub mod quarantine;
pub mod report;
pub mod results;
pub mod retry;
pub mod runner;
pub mod spool;
pub mod summary;
