//! A ready [`StateDelta`]: an append-only collection.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::StateDelta;

/// An append-only, in-memory collection (an event log, an audit trail, a ledger).
///
/// Each delta carries the index it appends at, so a delta applied twice or out of order is
/// refused instead of duplicating an item; the follower then resynchronizes. On the live
/// side let the log produce its deltas with [`AppendLog::append_delta`], for example
/// `live.commit_with(|log| log.append_delta(item))`.
///
/// ```
/// use shadowlib::StateDelta;
/// use shadowlib::delta::AppendLog;
///
/// let mut log = AppendLog::<String>::new();
/// let first = log.append_delta("created".into());
/// log.apply(&first).unwrap();
/// log.apply(&log.append_delta("paid".into())).unwrap();
/// assert_eq!(log.items(), ["created", "paid"]);
/// assert!(log.apply(&first).is_err(), "index 0 is taken");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendLog<T> {
    items: Vec<T>,
}

impl<T> Default for AppendLog<T> {
    fn default() -> Self {
        Self { items: Vec::new() }
    }
}

impl<T> AppendLog<T> {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The items, oldest first.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The delta that appends `item` after the current last item.
    pub fn append_delta(&self, item: T) -> Appended<T> {
        Appended {
            index: self.items.len() as u64,
            item,
        }
    }
}

/// One item appended to an [`AppendLog`], at a given index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended<T> {
    /// Where the item goes: the log's length before the append.
    pub index: u64,
    /// The item.
    pub item: T,
}

/// An [`Appended`] delta did not fit the end of the log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("append at index {index} does not fit a log of {len} items")]
pub struct AppendOutOfOrder {
    /// The index the delta carried.
    pub index: u64,
    /// The log's length, the only index that fits.
    pub len: u64,
}

impl<T> StateDelta for AppendLog<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Delta = Appended<T>;
    type Snapshot = Vec<T>;
    type Error = AppendOutOfOrder;

    fn apply(&mut self, delta: &Appended<T>) -> Result<(), AppendOutOfOrder> {
        let len = self.items.len() as u64;
        if delta.index != len {
            return Err(AppendOutOfOrder {
                index: delta.index,
                len,
            });
        }
        self.items.push(delta.item.clone());
        Ok(())
    }

    fn snapshot(&self) -> Vec<T> {
        self.items.clone()
    }

    fn restore(&mut self, snapshot: Vec<T>) {
        self.items = snapshot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_appends_are_refused_and_leave_the_log_unchanged() {
        let mut log = AppendLog::new();
        let skipped_ahead = Appended {
            index: 1,
            item: 'x',
        };
        assert_eq!(
            log.apply(&skipped_ahead),
            Err(AppendOutOfOrder { index: 1, len: 0 })
        );
        assert!(log.is_empty());
        log.apply(&log.append_delta('a')).expect("fits the end");
        assert_eq!(log.items(), ['a']);
    }

    #[test]
    fn restore_replaces_the_items() {
        let mut log = AppendLog::new();
        log.apply(&log.append_delta(1)).expect("fits the end");
        log.restore(vec![7, 8]);
        assert_eq!(log.len(), 2);
        assert_eq!(log.append_delta(9).index, 2);
    }
}
