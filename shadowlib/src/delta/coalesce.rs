//! Coalescing: several changes to the same key within a short window become one delta.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A delta that can be merged with later deltas to the same key.
///
/// Two rules make coalescing safe, and implementations must keep both:
/// * deltas with different keys commute (applying them in either order gives the same
///   state), because coalescing moves a later change up to where its key first appeared;
/// * `a.absorb(b)` has the same effect as applying `a` then `b`.
///
/// A delta without a key (say, "clear everything") commutes with nothing; it is kept in
/// place and no change after it is merged into one before it.
///
/// ```
/// use shadowlib::delta::Coalesce;
///
/// /// Adds to a named counter; additions to one counter add up.
/// #[derive(Clone)]
/// struct Add { counter: String, by: i64 }
///
/// impl Coalesce for Add {
///     type Key = String;
///
///     fn coalesce_key(&self) -> Option<String> {
///         Some(self.counter.clone())
///     }
///
///     fn absorb(&mut self, later: Self) {
///         self.by += later.by;
///     }
/// }
///
/// let mut first = Add { counter: "hits".into(), by: 2 };
/// first.absorb(Add { counter: "hits".into(), by: 3 });
/// assert_eq!(first.by, 5);
/// ```
pub trait Coalesce: Sized {
    /// What a delta changes; deltas with equal keys may be merged.
    type Key: Hash + Eq + Send + Sync + 'static;

    /// The key this delta changes, or `None` if it must not be merged or moved.
    fn coalesce_key(&self) -> Option<Self::Key>;

    /// Merges `later`, a change to the same key, into this delta.
    fn absorb(&mut self, later: Self);
}

/// How the live side coalesces changes before publishing them.
///
/// Changes wait at most `window` (plus the ticker's scheduling delay) before they are
/// published as one frame, so the window adds directly to the shadow's lag: keep it small
/// (a few milliseconds). A batch is published early once it holds `max_batch` deltas, which
/// bounds its memory and frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coalescing {
    /// The longest a committed change waits before it is published.
    #[serde(with = "crate::duration")]
    pub window: Duration,
    /// The most deltas one frame holds.
    pub max_batch: usize,
}

impl Default for Coalescing {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(2),
            max_batch: 1024,
        }
    }
}

/// Collects the deltas committed within a window, merged per key.
///
/// Type-erased so a [`LiveState`](super::LiveState) does not carry the [`Coalesce`] bound
/// when it does not coalesce.
pub(super) trait Batcher<D>: Send + Sync {
    /// Adds a committed delta.
    fn push(&mut self, delta: D, now: Instant);
    /// Whether the batch should be published now.
    fn is_due(&self, now: Instant) -> bool;
    /// Empties the batch, in publishing order.
    fn take(&mut self) -> Vec<D>;
    /// Whether nothing is waiting.
    fn is_empty(&self) -> bool;
}

/// The [`Batcher`] that merges deltas with equal [`Coalesce::coalesce_key`]s.
pub(super) struct KeyCoalescer<D: Coalesce> {
    config: Coalescing,
    pending: Vec<D>,
    /// Where each key's delta sits in `pending`; cleared at every keyless delta so nothing
    /// is merged across it.
    slots: HashMap<D::Key, usize>,
    oldest: Option<Instant>,
}

impl<D: Coalesce> KeyCoalescer<D> {
    pub(super) fn new(config: Coalescing) -> Self {
        Self {
            config,
            pending: Vec::new(),
            slots: HashMap::new(),
            oldest: None,
        }
    }
}

impl<D: Coalesce + Send + Sync> Batcher<D> for KeyCoalescer<D> {
    fn push(&mut self, delta: D, now: Instant) {
        self.oldest.get_or_insert(now);
        match delta.coalesce_key() {
            Some(key) => match self.slots.get(&key) {
                Some(&slot) => self.pending[slot].absorb(delta),
                None => {
                    self.slots.insert(key, self.pending.len());
                    self.pending.push(delta);
                }
            },
            None => {
                self.slots.clear();
                self.pending.push(delta);
            }
        }
    }

    fn is_due(&self, now: Instant) -> bool {
        self.pending.len() >= self.config.max_batch
            || self
                .oldest
                .is_some_and(|oldest| now.duration_since(oldest) >= self.config.window)
    }

    fn take(&mut self) -> Vec<D> {
        self.slots.clear();
        self.oldest = None;
        std::mem::take(&mut self.pending)
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::KvDelta;

    type Delta = KvDelta<&'static str, u32>;

    fn coalescer(max_batch: usize) -> KeyCoalescer<Delta> {
        KeyCoalescer::new(Coalescing {
            window: Duration::from_millis(10),
            max_batch,
        })
    }

    #[test]
    fn changes_to_one_key_merge_in_place_of_the_first() {
        let now = Instant::now();
        let mut batch = coalescer(100);
        for delta in [
            KvDelta::put("a", 1u32),
            KvDelta::put("b", 1u32),
            KvDelta::put("a", 2u32),
            KvDelta::remove("b"),
        ] {
            batch.push(delta, now);
        }
        assert_eq!(
            batch.take(),
            vec![KvDelta::put("a", 2u32), KvDelta::remove("b")]
        );
        assert!(batch.is_empty());
    }

    #[test]
    fn nothing_merges_across_a_keyless_delta() {
        let now = Instant::now();
        let mut batch = coalescer(100);
        for delta in [
            KvDelta::put("a", 1u32),
            KvDelta::Clear,
            KvDelta::put("a", 2u32),
            KvDelta::put("a", 3u32),
        ] {
            batch.push(delta, now);
        }
        assert_eq!(
            batch.take(),
            vec![
                KvDelta::put("a", 1u32),
                KvDelta::Clear,
                KvDelta::put("a", 3u32)
            ]
        );
    }

    #[test]
    fn a_batch_is_due_after_the_window_or_when_full() {
        let start = Instant::now();
        let mut batch = coalescer(2);
        assert!(
            !batch.is_due(start + Duration::from_secs(1)),
            "empty is never due"
        );
        batch.push(KvDelta::put("a", 1u32), start);
        assert!(!batch.is_due(start + Duration::from_millis(9)));
        assert!(batch.is_due(start + Duration::from_millis(10)));
        batch.push(KvDelta::put("b", 1u32), start);
        assert!(batch.is_due(start), "full");
        batch.take();
        assert!(!batch.is_due(start + Duration::from_secs(1)));
    }
}
