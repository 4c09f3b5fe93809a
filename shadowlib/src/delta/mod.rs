//! Keeping the shadow's state current: deltas from live to shadow.
//!
//! A stateful service cannot be shadowed honestly if the shadow serves reads from stale
//! state: it reports false mismatches and hides real ones. The live side describes each
//! committed change as a delta; the shadow applies the deltas in order and recovers from a
//! gap by restoring a snapshot.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// State that the live side changes and the shadow follows by applying deltas in order.
///
/// `apply` must be deterministic: the same deltas applied to the same state give the same
/// state, or the shadow drifts away from live. A delta that cannot be applied is an error,
/// after which the follower resynchronizes from a snapshot.
///
/// ```
/// use std::collections::BTreeMap;
/// use shadowlib::StateDelta;
///
/// #[derive(Default)]
/// struct Counters(BTreeMap<String, i64>);
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("counter overflow")]
/// struct Overflow;
///
/// impl StateDelta for Counters {
///     type Delta = (String, i64);
///     type Snapshot = BTreeMap<String, i64>;
///     type Error = Overflow;
///
///     fn apply(&mut self, (key, by): &Self::Delta) -> Result<(), Overflow> {
///         let slot = self.0.entry(key.clone()).or_default();
///         *slot = slot.checked_add(*by).ok_or(Overflow)?;
///         Ok(())
///     }
///
///     fn snapshot(&self) -> Self::Snapshot {
///         self.0.clone()
///     }
///
///     fn restore(&mut self, snapshot: Self::Snapshot) {
///         self.0 = snapshot;
///     }
/// }
///
/// let mut shadow = Counters::default();
/// shadow.apply(&("hits".into(), 2)).unwrap();
/// assert_eq!(shadow.snapshot()["hits"], 2);
/// ```
pub trait StateDelta: Send + Sync {
    /// One change to the state.
    type Delta: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// The whole state, for recovery.
    type Snapshot: Serialize + DeserializeOwned + Clone + Send + 'static;
    /// Why a delta could not be applied.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies one change.
    fn apply(&mut self, delta: &Self::Delta) -> Result<(), Self::Error>;

    /// The whole state as it is now.
    fn snapshot(&self) -> Self::Snapshot;

    /// Replaces the state with a snapshot.
    fn restore(&mut self, snapshot: Self::Snapshot);
}
