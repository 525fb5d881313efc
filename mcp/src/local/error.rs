//! Why a local tool could not answer: one enum, displayed as is to the
//! model and the user, so every refusal is a sentence saying what to do.

/// Why a local tool could not answer. Displayed as is.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LocalError {
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
