//! Keeping the shadow's state current: deltas from live to shadow over publish/subscribe.
//!
//! A stateful service cannot be shadowed honestly if the shadow serves reads from stale
//! state: it reports false mismatches and hides real ones. Writes never reach the shadow,
//! so the live side describes each committed change as a delta and publishes it; the
//! shadow applies the deltas in order and recovers from any interruption by restoring a
//! snapshot. Only changes travel, so bandwidth and lag stay low.
//!
//! # The pieces
//!
//! * [`StateDelta`]: state that changes only by applying deltas. Ready: [`KeyValueMap`]
//!   (deltas [`KvDelta`]) and [`AppendLog`] (deltas [`Appended`]).
//! * [`DeltaBus`]: one live publisher, any number of followers, over a [`Transport`]
//!   ([`InProcess`], a tokio broadcast channel, by default).
//! * [`LiveState`]: the live side's handle. [`commit`](LiveState::commit) applies a delta
//!   to the live state and publishes it under one lock, so live state and stream never
//!   disagree; [`commit_with`](LiveState::commit_with) lets the state produce the delta.
//! * [`ShadowState`]: the shadow's copy, advanced by a follower task.
//!
//! # Sequence numbers, epochs and resynchronization
//!
//! Each frame carries the publisher's [`Epoch`] (random per start) and a sequence number
//! that grows by one per frame. The follower applies frame `n + 1` after frame `n` and
//! nothing else: a frame further ahead is a gap, a frame at or below its position is
//! already contained and skipped. A gap, a subscriber that fell behind its bounded buffer
//! ([`Received::Lagged`]), a frame from another epoch (the live side restarted), a frame
//! that does not decode or a delta the state refuses each trigger one snapshot resync,
//! counted by reason in [`ResyncCounts`]; nothing is skipped silently. When idle the
//! publisher sends a heartbeat with its last sequence number, so even a lost last frame is
//! noticed. Snapshots are numbered under the same lock as commits, so a snapshot at `n`
//! contains exactly frames `1..=n` and the follower resumes at `n + 1`. Publishing never
//! waits: a slow subscriber loses frames and resynchronizes, the live side carries on.
//!
//! # Wire format and bytes
//!
//! Frames and snapshots are encoded with postcard (varints, no field names). A frame is
//! the encoding of `(epoch, sequence, Vec<Delta>)`; a heartbeat has no deltas; a snapshot
//! is `(epoch, sequence, Snapshot)`. [`LiveStats`] and [`FollowerStats`] count the bytes.
//!
//! # Coalescing
//!
//! With [`LiveBuilder::coalesce`], changes committed within a window are published as one
//! frame, and changes to the same key are merged into one delta ([`Coalesce`]). It cuts
//! bytes for hot keys at the price of up to one window of extra lag.
//!
//! # Using it from HTTP handlers
//!
//! The live handler writes with `live.commit(...)` and reads with `live.read(...)`; a
//! read that is mirrored uses [`LiveState::read_with_position`] instead, and the adapter
//! sends the position along with the copy. On the shadow side it calls [`ShadowState::catch_up`] with that position and a
//! [`StalenessBound`] — this waits, off the live path, up to `max_wait` for the shadow to
//! apply every change live had — then lets the candidate serve the copy from
//! `shadow.read(...)`, then calls [`ReadSpan::finish`]. Positions only move forward, so
//! the positions at the start and the end of the shadow's read bound how far its state
//! was from live's during the whole read ([`Freshness`]): the comparison includes the pair
//! only when that is within the bound, so a stale shadow never reports a false mismatch.
//!
//! ```
//! use shadowlib::delta::{DeltaBus, KeyValueMap, KvDelta, StalenessBound};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! type Stock = KeyValueMap<String, u32>;
//! let bus = DeltaBus::<Stock>::in_process(4096)?;
//! let live = bus.live(Stock::new()).start()?;
//! let shadow = bus.follow(Stock::new())?;
//!
//! // PUT /stock/apples (live only)
//! live.commit(KvDelta::put("apples", 12u32))?;
//!
//! // GET /stock/apples, served by live and mirrored
//! let (live_answer, live_at) = live.read_with_position(|stock| stock.get("apples").copied());
//!
//! // ... on the shadow's executor
//! let span = shadow.catch_up(live_at, StalenessBound::default()).await;
//! let shadow_answer = shadow.read(|stock| stock.get("apples").copied());
//! let (freshness, comparable) = span.finish();
//! assert!(comparable && freshness.is_exact());
//! assert_eq!(live_answer, shadow_answer);
//! # Ok(()) }
//! ```
//!
//! # Lag as a KPI
//!
//! [`FollowerStats::lag_us`] records, per frame, the time from publication to applied (the
//! shadow's lag in time); [`FollowerStats::reads`] records how many frames behind or ahead
//! of live the shadow served each measured read (its lag in sequence numbers) and how many
//! reads fell outside their bound. [`ShadowState`] is a [`MetricSource`](crate::MetricSource)
//! that adds these to the candidate's evidence.
//!
//! # Costs and limits
//!
//! A commit costs an encode, an apply and a non-blocking send, under the live state's
//! lock. Serving a snapshot copies the state ([`StateDelta::snapshot`]) under the shared
//! lock: live reads go on, live writes wait for the copy. Resyncs are rare, but for a
//! very large state prefer a snapshot type that clones cheaply (shared or persistent
//! structures). A bus carries one publisher at a time: a newer one replaces the older as
//! the source of snapshots, and followers move to its epoch and ignore frames still
//! coming from the epoch they left.
//!
//! # Other transports
//!
//! [`Transport`] moves opaque frame bytes and snapshot requests, so the bus can run across
//! processes over an existing broker: frames to a topic, snapshot requests to the live
//! process's [`SnapshotSource`].

mod append;
mod bus;
mod coalesce;
mod codec;
mod kv;
mod link;
mod live;
mod position;
mod shadow;
mod transport;

pub use append::{AppendLog, AppendOutOfOrder, Appended};
pub use bus::{BusError, DeltaBus};
pub use coalesce::{Coalesce, Coalescing};
pub use codec::CodecError;
pub use kv::{KeyValueMap, KvDelta};
pub use live::{CommitError, LiveBuilder, LiveState, LiveStats};

pub(crate) use link::DeltaLink;
pub use position::{Epoch, Freshness, Position, StalenessBound};
pub use shadow::{FollowerStats, ReadFreshness, ReadSpan, ResyncCounts, ResyncReason, ShadowState};
pub use transport::{
    Frame, InProcess, InProcessSubscription, Received, SnapshotSource, Subscription, Transport,
    TransportError,
};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// State that the live side changes and the shadow follows by applying deltas in order.
///
/// `apply` must be deterministic: the same deltas applied to the same state give the same
/// state, or the shadow drifts away from live. A delta that cannot be applied is an error,
/// after which the follower resynchronizes from a snapshot; a refused delta should leave
/// the state unchanged. On the live side the state changes through the same `apply`
/// (see [`LiveState::commit`]), which is what keeps the two copies equal. For a delta
/// that depends on the current state, let the state produce it under the commit lock with
/// [`LiveState::commit_with`] (as [`AppendLog::append_delta`] does).
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
