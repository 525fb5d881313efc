//! The writer's messages that change the quarantine list (see
//! [`crate::quarantine`] for the guarantees).

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::Writer;
use crate::quarantine::Entry;
use crate::store::{Store, StoreError};
use crate::version::Changed;

/// Quarantine `entry.test_id` in `project` (replacing an earlier entry of
/// the same test). Replies `Ok(Err(why))`, storing nothing, when the
/// project's resulting active list breaks `fits`, or when `entry.auto` and
/// a person's entry for the test exists.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Result<(), String>, StoreError>")]
pub struct Quarantine {
    /// Project.
    pub project: String,
    /// The entry.
    pub entry: Entry,
    /// The bound on a project's active list (count, encoded size), checked
    /// on the list as it would be after this change.
    pub fits: fn(&str, &[Entry]) -> Result<(), String>,
    /// Expiry is judged at this time.
    pub now: DateTime<Utc>,
}

/// Release `test_id` in `project`; replies whether it was quarantined
/// (and is released now).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Release {
    /// Project.
    pub project: String,
    /// Test id.
    pub test_id: String,
    /// Release only an automatic entry (a person's stays, reply `false`).
    /// `false` is a person's release (`DELETE /quarantine`), which also holds
    /// automatic quarantine off the test for its period
    /// (`auto_quarantine`).
    pub only_auto: bool,
}

impl<S: Store> Handler<Quarantine> for Writer<S> {
    type Result = AtomicResponse<Self, Result<Result<(), String>, StoreError>>;

    fn handle(&mut self, msg: Quarantine, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let hooks = self.webhooks.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            let done = store
                .quarantine(&hooks, &msg.project, &msg.entry, msg.fits, msg.now)
                .await?;
            Ok((done, Changed::default()))
        })))
    }
}

impl<S: Store> Handler<Release> for Writer<S> {
    type Result = AtomicResponse<Self, Result<bool, StoreError>>;

    fn handle(&mut self, msg: Release, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let hooks = self.webhooks.clone();
        AtomicResponse::new(Box::pin(self.write(async move {
            let released = store
                .release(&hooks, &msg.project, &msg.test_id, msg.only_auto)
                .await?;
            Ok((released, Changed::default()))
        })))
    }
}
