//! Counters of what happened to the requests the shadow could have seen.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::Comparisons;

/// The label under which routes beyond [`ShadowStats`]'s route limit are counted.
pub const OTHER_ROUTES: &str = "(other routes)";

/// Counts of the shadow's work, readable at any time. See [`ShadowStats::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowCounts {
    /// Stable requests the classifier did not call reads: never mirrored.
    pub not_read: u64,
    /// Copies handed to the shadow queue.
    pub mirrored: u64,
    /// Reads not mirrored because their body was over the limit.
    pub skipped_oversize: u64,
    /// Reads not mirrored because the live handler never read their body to the end.
    pub skipped_unread_body: u64,
    /// Copies dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Copies the candidate answered.
    pub completed: u64,
    /// Copies cancelled at the timeout.
    pub timed_out: u64,
    /// Copies during which the candidate panicked.
    pub panicked: u64,
    /// Copies the candidate's service refused with an error value.
    pub failed: u64,
    /// Response pairs compared.
    pub compared: u64,
    /// Response pairs that differed.
    pub mismatched: u64,
    /// Answered copies whose live response could not be observed in time (the client went
    /// away, or the live body was still streaming at the timeout): not compared.
    pub comparison_missed: u64,
    /// Pairs the comparator judged not comparable (for example a stale stateful shadow).
    pub not_comparable: u64,
    /// Live requests the candidate panicked on during canary, answered with a 500.
    pub canary_panics: u64,
    /// Live requests pinned to a build by the override header.
    pub overridden: u64,
}

/// The shadow's counters, shared by the live path and the shadow worker. All counters are
/// atomics; only the per-route comparison table, written by the worker, takes a lock.
#[derive(Debug)]
pub struct ShadowStats {
    pub(crate) not_read: AtomicU64,
    pub(crate) mirrored: AtomicU64,
    pub(crate) skipped_oversize: AtomicU64,
    pub(crate) skipped_unread_body: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) compared: AtomicU64,
    pub(crate) mismatched: AtomicU64,
    pub(crate) comparison_missed: AtomicU64,
    pub(crate) not_comparable: AtomicU64,
    pub(crate) canary_panics: AtomicU64,
    pub(crate) overridden: AtomicU64,
    routes: Mutex<BTreeMap<String, Comparisons>>,
    max_routes: usize,
}

impl ShadowStats {
    /// Empty counters keeping per-route comparisons for at most `max_routes` routes.
    pub fn new(max_routes: usize) -> Self {
        Self {
            not_read: AtomicU64::new(0),
            mirrored: AtomicU64::new(0),
            skipped_oversize: AtomicU64::new(0),
            skipped_unread_body: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            compared: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            comparison_missed: AtomicU64::new(0),
            not_comparable: AtomicU64::new(0),
            canary_panics: AtomicU64::new(0),
            overridden: AtomicU64::new(0),
            routes: Mutex::new(BTreeMap::new()),
            max_routes,
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far. Each counter is read on its own, so a snapshot taken while
    /// requests run may be a few requests apart between counters.
    pub fn counts(&self) -> ShadowCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ShadowCounts {
            not_read: get(&self.not_read),
            mirrored: get(&self.mirrored),
            skipped_oversize: get(&self.skipped_oversize),
            skipped_unread_body: get(&self.skipped_unread_body),
            dropped_queue_full: get(&self.dropped_queue_full),
            completed: get(&self.completed),
            timed_out: get(&self.timed_out),
            panicked: get(&self.panicked),
            failed: get(&self.failed),
            compared: get(&self.compared),
            mismatched: get(&self.mismatched),
            comparison_missed: get(&self.comparison_missed),
            not_comparable: get(&self.not_comparable),
            canary_panics: get(&self.canary_panics),
            overridden: get(&self.overridden),
        }
    }

    /// Comparisons by route label (see
    /// [`ShadowConfig::with_label_routes`](super::ShadowConfig::with_label_routes)).
    pub fn route_comparisons(&self) -> BTreeMap<String, Comparisons> {
        self.lock_routes().clone()
    }

    fn lock_routes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Comparisons>> {
        // The table holds counters only; a panic mid-update cannot leave it inconsistent.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record_comparison(&self, route: &str, mismatched: bool) {
        Self::bump(&self.compared);
        if mismatched {
            Self::bump(&self.mismatched);
        }
        let mut routes = self.lock_routes();
        let entry = match routes.get_mut(route) {
            Some(entry) => entry,
            None => {
                let key = if routes.len() < self.max_routes {
                    route
                } else {
                    OTHER_ROUTES
                };
                routes.entry(key.to_owned()).or_default()
            }
        };
        entry.compared += 1;
        entry.mismatched += u64::from(mismatched);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_beyond_the_limit_share_one_label() {
        let stats = ShadowStats::new(2);
        stats.record_comparison("GET /a", false);
        stats.record_comparison("GET /b", true);
        stats.record_comparison("GET /c", true);
        stats.record_comparison("GET /a", true);
        let routes = stats.route_comparisons();
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes["GET /a"],
            Comparisons {
                compared: 2,
                mismatched: 1
            }
        );
        assert_eq!(
            routes[OTHER_ROUTES],
            Comparisons {
                compared: 1,
                mismatched: 1
            }
        );
        let counts = stats.counts();
        assert_eq!((counts.compared, counts.mismatched), (4, 3));
    }
}
