//! Supervision of the actors: a panic in a handler is caught, logged with
//! the message that caused it, counted for `/health`, and the actor carries
//! on instead of dying with its mailbox.
//!
//! Why catch instead of restarting: actix's `Supervisor` restarts an actor
//! that *stops*, but a panic unwinding out of a handler kills the actor's
//! task (every later `send` answers "Mailbox has closed") and nothing stops
//! it cleanly. Catching at the handler keeps the address valid; each actor
//! then decides how to recover (the aggregates are rebuilt from the
//! database by the writer, the writer's transaction was rolled back when its
//! future was dropped).
//!
//! Guarantees: [`guard`] never lets a panic escape; the message is logged
//! as `Debug`, cut to [`MAX_LOGGED_BYTES`]; [`Faults`] is shared with the
//! API so `/health` says how many handlers failed and why.

use std::fmt::Debug;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Most bytes of a failing message written to the log.
pub const MAX_LOGGED_BYTES: usize = 500;

/// A handler panicked; the request it served has no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the {actor} actor failed on this request and recovered ({reason}); retry, and see the master's log"
)]
pub struct ActorFault {
    /// Which actor.
    pub actor: &'static str,
    /// The panic's message.
    pub reason: String,
}

/// One actor's record of failures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultRecord {
    /// Handlers that panicked since start.
    pub panics: u64,
    /// The last panic's message.
    pub last: Option<String>,
}

/// Failures of every actor since start, shared with `/health`.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<std::collections::BTreeMap<&'static str, FaultRecord>>>);

impl Faults {
    /// The failures so far, by actor name.
    pub fn snapshot(&self) -> std::collections::BTreeMap<&'static str, FaultRecord> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a panic of `actor` while handling `message`.
    pub fn record(&self, actor: &'static str, message: &dyn Debug, reason: &str) -> ActorFault {
        let shown = cut(format!("{message:?}"));
        tracing::error!(
            actor,
            message = %shown,
            "an actor handler panicked: {reason}; the actor recovers and carries on"
        );
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let r = all.entry(actor).or_default();
        r.panics += 1;
        r.last = Some(format!("{reason} (while handling {shown})"));
        ActorFault {
            actor,
            reason: reason.to_string(),
        }
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_LOGGED_BYTES {
        let mut at = MAX_LOGGED_BYTES;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        let more = s.len() - at;
        s.truncate(at);
        s.push_str(&format!("… [{more} more bytes]"));
    }
    s
}

/// The text of a caught panic.
pub fn panic_reason(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    cut(text)
}

/// Runs `f`, turning a panic into an [`ActorFault`] recorded in `faults`.
pub fn guard<R>(
    faults: &Faults,
    actor: &'static str,
    message: &dyn Debug,
    f: impl FnOnce() -> R,
) -> Result<R, ActorFault> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|p| faults.record(actor, message, &panic_reason(p.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_counted_fault_with_a_bounded_message() {
        let faults = Faults::default();
        let huge = "x".repeat(100_000);
        let r: Result<(), _> = guard(&faults, "test", &huge, || panic!("boom {}", 1));
        let e = r.expect_err("caught");
        assert_eq!(e.reason, "boom 1");
        let snap = faults.snapshot();
        let rec = &snap["test"];
        assert_eq!(rec.panics, 1);
        let last = rec.last.as_deref().unwrap_or_default();
        assert!(last.len() < MAX_LOGGED_BYTES + 100, "{}", last.len());
        assert_eq!(guard(&faults, "test", &1, || 7).ok(), Some(7));
    }
}
