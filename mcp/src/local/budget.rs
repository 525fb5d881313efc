//! How long the agent may take beyond the tests' own timeout: the one
//! place the run's deadline and the answer explaining a kill read from.

use std::time::Duration;

/// Seconds the agent may retry NATS before spooling (its `--publish-timeout`).
pub const PUBLISH_BUDGET_SECS: u64 = 30;
/// Time the agent gets beyond the run timeout and the publish budget (start,
/// killing the tests, reading the report) before it is killed itself.
pub const AGENT_GRACE: Duration = Duration::from_secs(60);
