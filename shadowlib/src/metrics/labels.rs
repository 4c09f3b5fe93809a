//! Bounded label sets: routes and custom KPI names, each mapped to a fixed index.
//!
//! Labels often come from request data (a path template, a handler name), so their number is
//! capped: an unbounded label set is an unbounded memory leak. Looking a label up takes no
//! lock and writes no shared memory, so recording on many threads never contends here.
//!
//! Written here rather than taken from a concurrent-map crate: the set only ever grows, to
//! at most `cap` labels, so an open-addressing table of write-once slots (`std`'s
//! `OnceLock`) twice that size is all it takes, with no dependency.
//!
//! Why it is right: a label's place is the first slot on its probe sequence that was empty
//! when it was inserted, and slots are never emptied, so every later lookup walks the same
//! occupied slots and finds it there, and two threads inserting the same label meet in the
//! same slot (the second sees the first's label and takes its index). Each insertion first
//! reserves one of the `cap` admissions, so at most `cap` of the slots ever fill, and the
//! probe always reaches an empty slot while there is room.

use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use foldhash::fast::RandomState;

/// Labels admitted so far, each with its index, in `0..slots()`.
#[derive(Debug)]
pub(crate) struct LabelSet {
    cap: usize,
    admitted: AtomicUsize,
    slots: Box<[OnceLock<Box<str>>]>,
    hasher: RandomState,
}

impl LabelSet {
    /// An empty set that admits at most `cap` labels.
    pub(crate) fn new(cap: usize) -> Self {
        let len = cap.saturating_mul(2).max(2).next_power_of_two();
        Self {
            cap,
            admitted: AtomicUsize::new(0),
            slots: (0..len).map(|_| OnceLock::new()).collect(),
            hasher: RandomState::default(),
        }
    }

    /// The most labels this set admits.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// How many indices there are; no index of a label reaches it, so callers can use it
    /// for "none of them" (the overflow).
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The slots `label` may sit in, in the order it is looked for.
    fn probe(&self, label: &str) -> impl Iterator<Item = usize> {
        let mask = self.slots.len() - 1;
        // The length is a power of two, so the mask keeps the low bits.
        let start = self.hasher.hash_one(label) as usize & mask;
        (0..self.slots.len()).map(move |step| (start + step) & mask)
    }

    /// The index of `label`, admitting it if there is room; `None` once the set is full.
    pub(crate) fn index_of(&self, label: &str) -> Option<usize> {
        for index in self.probe(label) {
            match self.slots[index].get() {
                Some(held) if **held == *label => return Some(index),
                Some(_) => {}
                None => break,
            }
        }
        if self.admitted.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.admitted.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        for index in self.probe(label) {
            let slot = &self.slots[index];
            let held = match slot.get() {
                Some(held) => held,
                None => match slot.set(label.into()) {
                    Ok(()) => return Some(index),
                    // Another thread filled it first: see with what.
                    Err(_) => match slot.get() {
                        Some(held) => held,
                        None => continue,
                    },
                },
            };
            if **held == *label {
                // Inserted by another thread meanwhile: its admission stands, not ours.
                self.admitted.fetch_sub(1, Ordering::Relaxed);
                return Some(index);
            }
        }
        // Unreachable while admissions are counted: at most `cap` of twice as many slots
        // fill. Should it ever happen, the label is counted with the overflow.
        self.admitted.fetch_sub(1, Ordering::Relaxed);
        None
    }

    /// The label at `index`, if one sits there.
    pub(crate) fn name(&self, index: usize) -> Option<&str> {
        self.slots.get(index)?.get().map(|name| &**name)
    }

    /// The label at each index, where there is one.
    pub(crate) fn names(&self) -> Vec<Option<&str>> {
        self.slots
            .iter()
            .map(|slot| slot.get().map(|name| &**name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_then_refuses() {
        let set = LabelSet::new(2);
        let a = set.index_of("a").expect("room");
        let b = set.index_of("b").expect("room");
        assert_ne!(a, b);
        assert_eq!(set.index_of("a"), Some(a));
        assert_eq!(set.index_of("c"), None);
        let mut names: Vec<&str> = set.names().into_iter().flatten().collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "b"]);
        assert!(a < set.slots() && b < set.slots());
    }

    #[test]
    fn a_set_without_room_admits_nothing() {
        assert_eq!(LabelSet::new(0).index_of("a"), None);
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
        let names: Vec<(usize, &str)> = set
            .names()
            .into_iter()
            .enumerate()
            .filter_map(|(index, name)| Some((index, name?)))
            .collect();
        assert_eq!(names.len(), 50, "each label once");
        for (index, name) in names {
            assert_eq!(set.index_of(name), Some(index));
        }
    }

    #[test]
    fn racing_past_the_cap_never_admits_more_than_it() {
        let set = LabelSet::new(10);
        std::thread::scope(|s| {
            for thread in 0..4 {
                let set = &set;
                s.spawn(move || {
                    for i in 0..100 {
                        set.index_of(&format!("{thread}-{i}"));
                    }
                });
            }
        });
        assert_eq!(set.names().into_iter().flatten().count(), 10);
    }
}
