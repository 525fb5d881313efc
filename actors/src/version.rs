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
//!
//! Several masters on one database: each bump made here is also sent to
//! [`DataVersion::subscribe`]rs (the master forwards them to its peers), and
//! a peer's bump is applied with [`DataVersion::apply`], which sends nothing
//! on, so bumps never echo. A subscriber that falls behind (more than
//! [`BUMPS_BUFFERED`] unread) gets an error from its receiver and must treat
//! it as [`Bump::Unknown`].

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Most project counters kept (see the module docs).
pub const MAX_PROJECTS: usize = 100_000;

/// Bumps buffered for each subscriber (see the module docs).
pub const BUMPS_BUFFERED: usize = 1024;

/// The versions, shared by the writer (which bumps them) and the readers.
#[derive(Debug, Clone, Default)]
pub struct DataVersion(Arc<Versions>);

#[derive(Debug)]
struct Versions {
    epoch: AtomicU64,
    pruned: AtomicU64,
    all: AtomicU64,
    projects: Mutex<HashMap<String, u64>>,
    bumps: tokio::sync::broadcast::Sender<Bump>,
}

impl Default for Versions {
    fn default() -> Versions {
        Versions {
            epoch: AtomicU64::default(),
            pruned: AtomicU64::default(),
            all: AtomicU64::default(),
            projects: Mutex::default(),
            bumps: tokio::sync::broadcast::Sender::new(BUMPS_BUFFERED),
        }
    }
}

/// One bump of the versions, as peers hear of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "bump", rename_all = "snake_case")]
pub enum Bump {
    /// A committed write changed these projects (and deleted runs when
    /// `pruned`).
    Changed {
        /// Projects whose visible data changed.
        projects: BTreeSet<String>,
        /// Whether complete runs were deleted.
        pruned: bool,
    },
    /// A write whose effect is unknown: every stamp is stale.
    Unknown,
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

    /// Bumps made here from now on (see the module docs).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Bump> {
        self.0.bumps.subscribe()
    }

    /// Applies a peer's bump, sending nothing on.
    pub fn apply(&self, b: &Bump) {
        match b {
            Bump::Changed { projects, pruned } => self.bump(&Changed {
                projects: projects.clone(),
                pruned: *pruned,
            }),
            Bump::Unknown => {
                self.0.epoch.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Records a committed write (bumps after the commit).
    pub fn changed(&self, c: &Changed) {
        if c.projects.is_empty() && !c.pruned {
            return;
        }
        self.bump(c);
        // No subscriber is not an error: one master alone.
        let _ = self.0.bumps.send(Bump::Changed {
            projects: c.projects.clone(),
            pruned: c.pruned,
        });
    }

    fn bump(&self, c: &Changed) {
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
        let _ = self.0.bumps.send(Bump::Unknown);
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

    #[test]
    fn bumps_reach_subscribers_and_a_peers_bump_is_not_sent_on() {
        let v = DataVersion::default();
        let mut rx = v.subscribe();
        v.changed(&changed(&["a"], true));
        v.changed(&Changed::default());
        v.unknown();
        assert_eq!(
            rx.try_recv().ok(),
            Some(Bump::Changed {
                projects: ["a".to_string()].into(),
                pruned: true
            })
        );
        assert_eq!(
            rx.try_recv().ok(),
            Some(Bump::Unknown),
            "nothing for no change"
        );
        let peer = DataVersion::default();
        let b = peer.stamp(Some("a"));
        peer.apply(&Bump::Changed {
            projects: ["a".to_string()].into(),
            pruned: false,
        });
        assert!(!b.still_valid(&peer.stamp(Some("a")), &Scope::Project("a".into())));
        let mut peer_rx = peer.subscribe();
        peer.apply(&Bump::Unknown);
        assert!(peer_rx.try_recv().is_err(), "applied bumps are not sent on");
    }
}
