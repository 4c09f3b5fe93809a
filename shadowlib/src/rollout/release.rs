//! The active (version, configuration) pair, switched atomically.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::model::{Arm, Version};

/// Something the controller switches when a rollout ends: on promotion to the candidate,
/// on rollback to stable.
pub trait ReleaseSwitch: Send + Sync {
    /// Makes `arm`'s release the active one.
    fn activate(&self, arm: Arm);
}

impl<T: ReleaseSwitch + ?Sized> ReleaseSwitch for Arc<T> {
    fn activate(&self, arm: Arm) {
        (**self).activate(arm)
    }
}

/// One build together with the configuration it runs with.
#[derive(Debug, PartialEq)]
pub struct Release<C> {
    /// Which build this is.
    pub arm: Arm,
    /// Its identity.
    pub version: Version,
    /// The configuration that goes with it.
    pub config: C,
}

/// The stable and candidate releases and which one is active.
///
/// Code and configuration travel together: which release is active is one atomic flag
/// choosing between two fixed pairs, so a reader sees either the whole stable pair or the
/// whole candidate pair, never the candidate's code with stable's configuration. Readers
/// never block.
///
/// ```
/// use shadowlib::{Arm, ReleaseSwitch, Releases, Version};
///
/// let releases = Releases::new(
///     Version::new("api", "1"), "pool_size=16",
///     Version::new("api", "2"), "pool_size=32",
/// );
/// assert_eq!(releases.active().config, "pool_size=16");
/// releases.activate(Arm::Candidate);
/// assert_eq!(releases.active().version.build, "2");
/// releases.activate(Arm::Stable); // rollback: code and configuration together
/// assert_eq!(releases.active().config, "pool_size=16");
/// ```
#[derive(Debug)]
pub struct Releases<C> {
    stable: Arc<Release<C>>,
    candidate: Arc<Release<C>>,
    candidate_active: AtomicBool,
}

impl<C> Releases<C> {
    /// Both releases; stable is active.
    pub fn new(stable: Version, stable_config: C, candidate: Version, candidate_config: C) -> Self {
        let stable = Arc::new(Release {
            arm: Arm::Stable,
            version: stable,
            config: stable_config,
        });
        let candidate = Arc::new(Release {
            arm: Arm::Candidate,
            version: candidate,
            config: candidate_config,
        });
        Self {
            stable,
            candidate,
            candidate_active: AtomicBool::new(false),
        }
    }

    /// The active release.
    pub fn active(&self) -> Arc<Release<C>> {
        let arm = if self.candidate_active.load(Ordering::Acquire) {
            Arm::Candidate
        } else {
            Arm::Stable
        };
        Arc::clone(self.release(arm))
    }

    /// The release of one build, active or not (a canary request routed to the candidate
    /// runs with the candidate's configuration).
    pub fn release(&self, arm: Arm) -> &Arc<Release<C>> {
        match arm {
            Arm::Stable => &self.stable,
            Arm::Candidate => &self.candidate,
        }
    }
}

impl<C: Send + Sync> ReleaseSwitch for Releases<C> {
    fn activate(&self, arm: Arm) {
        self.candidate_active
            .store(arm == Arm::Candidate, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_never_see_a_mixed_pair() {
        let releases = Arc::new(Releases::new(
            Version::new("svc", "stable"),
            "stable".to_string(),
            Version::new("svc", "candidate"),
            "candidate".to_string(),
        ));
        let reader = {
            let releases = Arc::clone(&releases);
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    let active = releases.active();
                    assert_eq!(active.version.build, active.config);
                }
            })
        };
        for i in 0..200_000 {
            releases.activate(if i % 2 == 0 {
                Arm::Candidate
            } else {
                Arm::Stable
            });
        }
        reader.join().expect("reader saw only whole pairs");
    }
}
