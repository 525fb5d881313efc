//! Quarantined tests, as stored: the `quarantine` table (migration 0010),
//! the writer's two messages that change it
//! (`writer::quarantine::Quarantine`, `writer::quarantine::Release`),
//! and the read of a project's active list (`read::quarantine::active`).
//!
//! The table is the truth; the master mirrors each project's active rows
//! into the agents' key-value bucket after every change (the API's
//! `mirror` module). This crate knows nothing of that bucket: the bound on
//! a project's list is the caller's rule, passed in as `Quarantine::fits`
//! and checked inside the writer's transaction, so two concurrent requests
//! can never together exceed it.
//!
//! Guarantees: one row per (project, test); quarantining a test again
//! replaces its row (and restarts its clean-run count), except that an
//! automatic entry never replaces a person's: that `Quarantine` is
//! refused and changes nothing; a `Release` with `only_auto` never
//! removes a person's entry. An entry whose `expires_at` has passed is never
//! returned by `active` nor counted by `fits`, and is deleted by the
//! project's next `Quarantine`. Every release notes the completion order
//! at that moment, so evidence from earlier runs never quarantines the test
//! again by itself (`auto_quarantine`). A change that makes a test
//! quarantined (it was not active) or releases an active one stores its
//! webhook event in the same transaction ([`crate::webhooks`]), whoever sent
//! the message (a person through the API, or automatic quarantine).
//!

use chrono::{DateTime, Utc};

/// One quarantined test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Test id.
    pub test_id: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: DateTime<Utc>,
    /// When it ends by itself; `None`: until released.
    pub expires_at: Option<DateTime<Utc>>,
    /// Quarantined by the flaky detector, not a person.
    pub auto: bool,
}
