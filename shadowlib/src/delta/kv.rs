//! A ready [`StateDelta`]: an in-memory key-value map.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Coalesce, StateDelta};

/// An in-memory key-value map whose changes travel as [`KvDelta`]s.
///
/// Put it behind a [`LiveState`](super::LiveState) on the live side and a
/// [`ShadowState`](super::ShadowState) on the shadow side; both change only by applying the
/// same deltas, so they cannot drift apart.
///
/// ```
/// use shadowlib::StateDelta;
/// use shadowlib::delta::{KeyValueMap, KvDelta};
///
/// let mut map = KeyValueMap::<String, u32>::new();
/// map.apply(&KvDelta::put("user:1", 3u32)).unwrap();
/// map.apply(&KvDelta::put("user:2", 4u32)).unwrap();
/// map.apply(&KvDelta::remove("user:1")).unwrap();
/// assert_eq!(map.get("user:2"), Some(&4));
/// assert_eq!(map.len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct KeyValueMap<K, V> {
    entries: HashMap<K, V>,
}

impl<K: Hash + Eq, V: PartialEq> PartialEq for KeyValueMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl<K: Hash + Eq, V: Eq> Eq for KeyValueMap<K, V> {}

impl<K, V> Default for KeyValueMap<K, V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq, V> KeyValueMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value under `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.contains_key(key)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter()
    }
}

impl<K, V> From<HashMap<K, V>> for KeyValueMap<K, V> {
    fn from(entries: HashMap<K, V>) -> Self {
        Self { entries }
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for KeyValueMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        Self {
            entries: entries.into_iter().collect(),
        }
    }
}

/// One change to a [`KeyValueMap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvDelta<K, V> {
    /// Sets `key` to `value`, replacing any earlier value.
    Put {
        /// The key set.
        key: K,
        /// Its new value.
        value: V,
    },
    /// Removes `key` (nothing happens if it is absent).
    Remove {
        /// The key removed.
        key: K,
    },
    /// Removes every entry.
    Clear,
}

impl<K, V> KvDelta<K, V> {
    /// Sets `key` to `value`.
    pub fn put(key: impl Into<K>, value: impl Into<V>) -> Self {
        KvDelta::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Removes `key`.
    pub fn remove(key: impl Into<K>) -> Self {
        KvDelta::Remove { key: key.into() }
    }
}

impl<K, V> StateDelta for KeyValueMap<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Delta = KvDelta<K, V>;
    type Snapshot = HashMap<K, V>;
    type Error = Infallible;

    fn apply(&mut self, delta: &Self::Delta) -> Result<(), Infallible> {
        match delta {
            KvDelta::Put { key, value } => {
                self.entries.insert(key.clone(), value.clone());
            }
            KvDelta::Remove { key } => {
                self.entries.remove(key);
            }
            KvDelta::Clear => self.entries.clear(),
        }
        Ok(())
    }

    fn snapshot(&self) -> Self::Snapshot {
        self.entries.clone()
    }

    fn restore(&mut self, snapshot: Self::Snapshot) {
        self.entries = snapshot;
    }
}

/// Changes to the same key coalesce to the last one (a put or a remove decides the key's
/// final value on its own); a clear coalesces with nothing.
impl<K, V> Coalesce for KvDelta<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;

    fn coalesce_key(&self) -> Option<K> {
        match self {
            KvDelta::Put { key, .. } | KvDelta::Remove { key } => Some(key.clone()),
            KvDelta::Clear => None,
        }
    }

    fn absorb(&mut self, later: Self) {
        *self = later;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Map = KeyValueMap<String, u32>;

    fn applied(deltas: &[KvDelta<String, u32>]) -> Map {
        let mut map = Map::new();
        for delta in deltas {
            let Ok(()) = map.apply(delta);
        }
        map
    }

    #[test]
    fn puts_removes_and_clears_apply_in_order() {
        let map = applied(&[
            KvDelta::put("a", 1u32),
            KvDelta::put("b", 2u32),
            KvDelta::put("a", 3u32),
            KvDelta::remove("b"),
        ]);
        assert_eq!(map.get("a"), Some(&3));
        assert!(!map.contains_key("b"));
        assert!(applied(&[KvDelta::put("a", 1u32), KvDelta::Clear]).is_empty());
    }

    #[test]
    fn snapshot_and_restore_round_trip() {
        let live = applied(&[KvDelta::put("a", 1u32), KvDelta::put("b", 2u32)]);
        let mut shadow = applied(&[KvDelta::put("stale", 9u32)]);
        shadow.restore(live.snapshot());
        assert_eq!(shadow, live);
    }

    #[test]
    fn the_later_change_to_a_key_wins_when_coalesced() {
        let mut first = KvDelta::<String, u32>::put("a", 1u32);
        first.absorb(KvDelta::remove("a"));
        assert_eq!(first, KvDelta::remove("a"));
        assert_eq!(first.coalesce_key().as_deref(), Some("a"));
        assert_eq!(KvDelta::<String, u32>::Clear.coalesce_key(), None);
    }
}
