//! Owners of tests: who a test belongs to, as the agent read it from the
//! project's CODEOWNERS, kept so the analytics can answer "what of this is
//! mine?".
//!
//! Shape: each stored case keeps the owners its run named (`test_cases.owners`,
//! migration 0012, served with the case). The *current* owners of a test are
//! derived state written with the data: `test_owners(project, test_id,
//! owner)`, one row per owner, replaced (`store::sqlite::owners`) for every test a
//! run carries in the transaction that completes the run. So the newest
//! completed run that had a test decides its owners (a run without owners
//! for it removes them), and a filter reads a few index rows instead of the
//! cases of a window.
//!
//! Reads narrow their tests with a [`TestSet`] ([`push_filter`]): every
//! test, the tests of one owner (matched exactly, as CODEOWNERS writes it:
//! `@acme/cart`, `qa@example.com`), or named tests of the window's project.
//!
//! Cost: one index probe per case of a completed run (none while neither the
//! project nor the run has owners); `test_owners` grows with the number of
//! owned tests, not with runs, and is not pruned with runs.

use sqlx::{Postgres, QueryBuilder, Sqlite};

/// Which tests a read covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TestSet {
    /// Every test.
    #[default]
    All,
    /// The tests whose current owners include this one (exact match).
    Owner(String),
    /// These test ids, in the project of the read (used with a project).
    Ids(Vec<String>),
}

/// Pushes ` AND <the tests of `set`>` for rows whose project and test id
/// are the SQL expressions `project` and `test_id` (nothing for
/// [`TestSet::All`]).
pub(crate) fn push_filter(
    q: &mut QueryBuilder<Sqlite>,
    set: &TestSet,
    project: &str,
    test_id: &str,
) {
    match set {
        TestSet::All => {}
        TestSet::Owner(owner) => {
            q.push(format_args!(
                " AND ({project}, {test_id}) IN \
                 (SELECT o.project, o.test_id FROM test_owners o WHERE o.owner = "
            ))
            .push_bind(owner.clone())
            .push(")");
        }
        TestSet::Ids(ids) => {
            // One bind whatever the count: a JSON array.
            let ids = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
            q.push(format_args!(
                " AND {test_id} IN (SELECT value FROM json_each("
            ))
            .push_bind(ids)
            .push("))");
        }
    }
}

/// [`push_filter`] on PostgreSQL: the same tests, the named ones as one
/// array bind.
pub(crate) fn push_filter_pg(
    q: &mut QueryBuilder<Postgres>,
    set: &TestSet,
    project: &str,
    test_id: &str,
) {
    match set {
        TestSet::All => {}
        TestSet::Owner(owner) => {
            q.push(format_args!(
                " AND ({project}, {test_id}) IN \
                 (SELECT o.project, o.test_id FROM test_owners o WHERE o.owner = "
            ))
            .push_bind(owner.clone())
            .push(")");
        }
        TestSet::Ids(ids) => {
            q.push(format_args!(" AND {test_id} = ANY("))
                .push_bind(ids.clone())
                .push(")");
        }
    }
}

/// A case's owners as stored (`NULL` when none).
pub(crate) fn to_column(owners: &[String]) -> Option<String> {
    if owners.is_empty() {
        None
    } else {
        serde_json::to_string(owners).ok()
    }
}

/// A case's owners back from the stored column.
pub(crate) fn from_column(stored: Option<&str>) -> Result<Vec<String>, sqlx::Error> {
    match stored {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str(s).map_err(|e| sqlx::Error::ColumnDecode {
            index: "owners".into(),
            source: format!("stored owners are not a JSON array of names: {e}").into(),
        }),
    }
}
