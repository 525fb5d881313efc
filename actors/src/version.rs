//! Versions of the stored data, per project: how a cache of database reads
//! knows whether what it read may have changed since.
//!
//! The writer bumps them after each write that changed something a reader
//! can see ([`DataVersion::changed`]): the projects whose runs were stored,
//! pruned or marked, and everything; a prune also bumps the version of run
//! content, and a write that failed bumps the epoch, which invalidates every
//! stamp (a failed commit changed nothing, but the cost of being careful is
//! one more miss). Writes that change nothing visible (chunks of runs not yet
//! complete, duplicates, rejections, reclaiming space) bump nothing, so they
//! invalidate no cached answer.
//!
//! A reader notes a [`Stamp`] *before* reading the database and may reuse
//! what it read while [`Stamp::still_valid`] holds for what the answer
//! depends on ([`Scope`]). Equal versions mean no write that could change
//! the answer finished in between; a write finishing during the read makes
//! the stamp stale, so a cache keyed on it is never staler than the store.
//!
//! Bounds: one counter per project name seen; beyond [`MAX_PROJECTS`] names
//! the map is cleared and the epoch bumped.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Most project counters kept (see the module docs).
pub const MAX_PROJECTS: usize = 100_000;

/// The versions, shared by the writer (which bumps them) and the readers.
#[derive(Debug, Clone, Default)]
pub struct DataVersion(Arc<Versions>);

#[derive(Debug, Default)]
struct Versions {
    epoch: AtomicU64,
    pruned: AtomicU64,
    all: AtomicU64,
    projects: Mutex<HashMap<String, u64>>,
}

/// What an answer read from the store depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The runs of one project (and marks on its tests).
    Project(String),
    /// Only the content of complete runs named by id, which changes only
    /// when runs are pruned.
    Runs,
    /// Anything stored.
    All,
}

/// The versions as a reader saw them before reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    epoch: u64,
    pruned: u64,
    all: u64,
    /// The project it was taken for, and that project's version.
    project: Option<(String, u64)>,
}

impl Stamp {
    /// Whether an answer read under `self` and depending on `scope` is
    /// still what the store holds, given the versions `now` (taken for the
    /// same project).
    pub fn still_valid(&self, now: &Stamp, scope: &Scope) -> bool {
        if self.epoch != now.epoch || self.pruned != now.pruned {
            return false;
        }
        match scope {
            Scope::Runs => true,
            Scope::All => self.all == now.all,
            Scope::Project(p) => match (&self.project, &now.project) {
                (Some((a, va)), Some((b, vb))) => a == p && b == p && va == vb,
                _ => self.all == now.all,
            },
        }
    }
}

/// What a finished write changed, as far as readers can see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    /// Projects whose visible data changed.
    pub projects: BTreeSet<String>,
    /// Whether complete runs were deleted.
    pub pruned: bool,
}

impl DataVersion {
    /// The versions now, with `project`'s. Take it *before* the read it
    /// tags.
    pub fn stamp(&self, project: Option<&str>) -> Stamp {
        let v = &self.0;
        let epoch = v.epoch.load(Ordering::Acquire);
        let pruned = v.pruned.load(Ordering::Acquire);
        let all = v.all.load(Ordering::Acquire);
        let project = project.map(|p| {
            let map = v.projects.lock().unwrap_or_else(PoisonError::into_inner);
            (p.to_string(), map.get(p).copied().unwrap_or(0))
        });
        Stamp {
            epoch,
            pruned,
            all,
            project,
        }
    }

    /// Records a committed write (bumps after the commit).
    pub fn changed(&self, c: &Changed) {
        let v = &self.0;
        if c.projects.is_empty() && !c.pruned {
            return;
        }
        {
            let mut map = v.projects.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() + c.projects.len() > MAX_PROJECTS {
                map.clear();
                v.epoch.fetch_add(1, Ordering::AcqRel);
            }
            for p in &c.projects {
                *map.entry(p.clone()).or_default() += 1;
            }
        }
        if c.pruned {
            v.pruned.fetch_add(1, Ordering::AcqRel);
        }
        v.all.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a write whose effect is unknown (it failed or panicked):
    /// every stamp taken before is stale.
    pub fn unknown(&self) {
        self.0.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(projects: &[&str], pruned: bool) -> Changed {
        Changed {
            projects: projects.iter().map(|p| p.to_string()).collect(),
            pruned,
        }
    }

    #[test]
    fn a_write_invalidates_what_depends_on_it_only() {
        let v = DataVersion::default();
        let a = v.stamp(Some("a"));
        let any = v.stamp(None);
        let project_a = Scope::Project("a".into());
        v.changed(&changed(&["b"], false));
        assert!(a.still_valid(&v.stamp(Some("a")), &project_a));
        assert!(any.still_valid(&v.stamp(None), &Scope::Runs));
        assert!(!any.still_valid(&v.stamp(None), &Scope::All));
        v.changed(&changed(&["a"], false));
        assert!(!a.still_valid(&v.stamp(Some("a")), &project_a));
        let b = v.stamp(Some("b"));
        v.changed(&changed(&["a"], true));
        assert!(!b.still_valid(&v.stamp(Some("b")), &Scope::Project("b".into())));
        let runs = v.stamp(None);
        v.changed(&Changed::default());
        assert!(
            runs.still_valid(&v.stamp(None), &Scope::All),
            "nothing changed"
        );
        v.unknown();
        assert!(!runs.still_valid(&v.stamp(None), &Scope::Runs));
    }
}
