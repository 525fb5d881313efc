//! The local tools' MCP face: `run_tests`, `run_failed` and `list_tests`,
//! offered when `--project-root` is set.
//!
//! Shape: each tool hands its arguments to [`Local`] (which checks them and
//! runs the agent, [`crate::local`]) and turns the outcome into the client's
//! answer with [`finish`]; a call the client cancels drops the work here.
//!
//! Guarantees: without a project root the tools are not listed
//! ([`PtpMcp::local_tools`]); a cancelled call stops its process and frees
//! the one-run lock; every failure is a tool error naming what to do.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use tokio_util::sync::CancellationToken;

use crate::answer::finish;
use crate::args::input_schema;
use crate::local::{ListTestsArgs, Local, LocalError, RunFailedArgs, RunTestsArgs};
use crate::server::PtpMcp;

/// Runs a tool until it answers or the client cancels the call (MCP's
/// `notifications/cancelled`, or the session ending): rmcp only signals
/// cancellation, so the work is dropped here, which stops its process
/// ([`crate::local`]'s guarantees) and frees the one-run lock.
async fn until_cancelled(
    ct: CancellationToken,
    work: impl std::future::Future<Output = Result<CallToolResult, LocalError>>,
) -> Result<CallToolResult, LocalError> {
    tokio::select! {
        answer = work => answer,
        _ = ct.cancelled() => Err(LocalError::Cancelled),
    }
}

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
        self.local()?.run_tests(args).await
    }

    async fn local_run_failed(&self, args: JsonObject) -> Result<CallToolResult, LocalError> {
        self.local()?.run_failed(args).await
    }

    async fn local_list_tests(&self, args: JsonObject) -> Result<CallToolResult, LocalError> {
        self.local()?.list_tests(args).await
    }
}
