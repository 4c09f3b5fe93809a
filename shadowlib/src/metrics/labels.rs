//! Bounded label sets: routes and custom KPI names, each mapped to a dense index.
//!
//! Labels often come from request data (a path template, a handler name), so their number is
//! capped: an unbounded label set is an unbounded memory leak. Readers on the hot path look a
//! label up without taking a lock; only admitting a new label (at most `cap` times over the
//! recorder's life) serializes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;

/// Label lookups sit on the recording hot path, and the set is capped (so flooding it with
/// colliding keys gains an attacker nothing): a fast seeded hash beats SipHash here.
type LabelIndex = HashMap<Box<str>, usize, RandomState>;

/// The label that requests of every route past the cardinality cap are counted under.
pub const OVERFLOW_LABEL: &str = "(other)";

/// Labels admitted so far, each with its index (`0..cap`).
#[derive(Debug)]
pub(crate) struct LabelSet {
    cap: usize,
    /// Published copy of the admitted labels, read lock-free.
    index: ArcSwap<LabelIndex>,
    /// The admitted labels in index order; writers serialize on this lock.
    names: Mutex<Vec<Box<str>>>,
}

impl LabelSet {
    /// An empty set that admits at most `cap` labels.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            index: ArcSwap::from_pointee(LabelIndex::default()),
            names: Mutex::new(Vec::new()),
        }
    }

    /// The most labels this set admits.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// The index of `label`, admitting it if there is room; `None` once the set is full.
    pub(crate) fn index_of(&self, label: &str) -> Option<usize> {
        let published = self.index.load();
        if let Some(&index) = published.get(label) {
            return Some(index);
        }
        // Full sets never change again: past the cap, labels overflow without any lock, so
        // a flood of distinct labels cannot turn into contention on the hot path.
        if published.len() >= self.cap {
            return None;
        }
        drop(published);
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have admitted it between our look and the lock.
        if let Some(&index) = self.index.load().get(label) {
            return Some(index);
        }
        if names.len() >= self.cap {
            return None;
        }
        let index = names.len();
        names.push(label.into());
        // Copy-on-write: this runs at most `cap` times, so readers never wait on a writer.
        let mut next = LabelIndex::clone(&self.index.load());
        next.insert(label.into(), index);
        self.index.store(Arc::new(next));
        Some(index)
    }

    /// The admitted labels, in index order.
    pub(crate) fn names(&self) -> Vec<Box<str>> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_then_refuses() {
        let set = LabelSet::new(2);
        assert_eq!(set.index_of("a"), Some(0));
        assert_eq!(set.index_of("b"), Some(1));
        assert_eq!(set.index_of("a"), Some(0));
        assert_eq!(set.index_of("c"), None);
        assert_eq!(set.names(), vec![Box::from("a"), Box::from("b")]);
    }

    #[test]
    fn concurrent_admission_gives_each_label_one_index() {
        let set = LabelSet::new(100);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..50 {
                        set.index_of(&format!("route-{i}"));
                    }
                });
            }
        });
        let names = set.names();
        assert_eq!(names.len(), 50);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(set.index_of(name), Some(i));
        }
    }
}
