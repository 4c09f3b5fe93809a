//! The live side: commits changes to the live state and publishes them as deltas.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use thiserror::Error;
use tokio::time::{Instant, MissedTickBehavior};

use super::coalesce::{Batcher, KeyCoalescer};
use super::codec::{encode_delta, encode_frame, encode_snapshot};
use super::{
    BusError, Coalesce, Coalescing, CodecError, Epoch, Frame, InProcess, Position, SnapshotSource,
    StateDelta, Transport,
};

/// A change was refused; the live state is unchanged and nothing was published.
#[derive(Debug, Error)]
pub enum CommitError<E: std::error::Error + 'static> {
    /// The delta cannot be encoded (a `Serialize` impl postcard does not support).
    #[error("the delta cannot be encoded, so it was not applied: {0}")]
    Encode(#[from] CodecError),
    /// The state refused the delta.
    #[error("the delta cannot be applied to the live state: {0}")]
    Apply(#[source] E),
}

/// What the live side has published so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LiveStats {
    /// Deltas committed to the live state.
    pub deltas_committed: u64,
    /// Deltas published; fewer than committed when coalescing merged some.
    pub deltas_published: u64,
    /// Frames published with deltas in them.
    pub frames_published: u64,
    /// Bytes of those frames, headers included.
    pub delta_bytes: u64,
    /// Heartbeat frames published while idle.
    pub heartbeats: u64,
    /// Snapshots served to followers.
    pub snapshots_served: u64,
    /// Bytes of those snapshots.
    pub snapshot_bytes: u64,
    /// Coalesced batches that could not be encoded. Their sequence numbers were left
    /// unused, so every follower resynchronized instead of missing them.
    pub encode_failures: u64,
}

#[derive(Debug, Default)]
struct LiveCounters {
    deltas_committed: AtomicU64,
    deltas_published: AtomicU64,
    frames_published: AtomicU64,
    delta_bytes: AtomicU64,
    heartbeats: AtomicU64,
    snapshots_served: AtomicU64,
    snapshot_bytes: AtomicU64,
    encode_failures: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// The live state and what has been published of it; guarded by one lock so that the
/// order of sequence numbers is the order in which changes were applied.
struct LiveCore<S: StateDelta> {
    state: S,
    /// The last sequence number used.
    published: u64,
    batch: Option<Box<dyn Batcher<S::Delta>>>,
    /// Reused to check that a delta encodes before it is applied and batched.
    scratch: Vec<u8>,
    last_frame_at: Instant,
}

/// Everything but the state: publishes frames and keeps the counters.
struct Publisher<T: Transport> {
    epoch: Epoch,
    transport: Arc<T>,
    /// [`LiveState::position`], readable without the lock.
    watermark: AtomicU64,
    heartbeat: Duration,
    counters: LiveCounters,
}

impl<T: Transport> Publisher<T> {
    fn position(&self, sequence: u64) -> Position {
        Position {
            epoch: self.epoch,
            sequence,
        }
    }

    fn update_watermark<S: StateDelta>(&self, core: &LiveCore<S>) {
        // A non-empty batch will be published as the next frame, so the changes in it are
        // covered by the next sequence number.
        let pending = core.batch.as_ref().is_some_and(|batch| !batch.is_empty());
        self.watermark
            .store(core.published + u64::from(pending), Ordering::Release);
    }

    fn send<S: StateDelta>(
        &self,
        core: &mut LiveCore<S>,
        sequence: u64,
        bytes: Bytes,
        deltas: usize,
        now: Instant,
    ) {
        bump(&self.counters.frames_published, 1);
        bump(&self.counters.deltas_published, deltas as u64);
        bump(&self.counters.delta_bytes, bytes.len() as u64);
        core.published = sequence;
        core.last_frame_at = now;
        self.update_watermark(core);
        self.transport.publish(Frame {
            bytes,
            published_at: now,
        });
    }

    fn commit<S: StateDelta>(
        &self,
        core: &mut LiveCore<S>,
        delta: S::Delta,
    ) -> Result<Position, CommitError<S::Error>> {
        let now = Instant::now();
        if core.batch.is_none() {
            let sequence = core.published + 1;
            let bytes = encode_frame(self.position(sequence), std::slice::from_ref(&delta))?;
            core.state.apply(&delta).map_err(CommitError::Apply)?;
            bump(&self.counters.deltas_committed, 1);
            self.send(core, sequence, bytes, 1, now);
            return Ok(self.position(sequence));
        }
        let mut scratch = std::mem::take(&mut core.scratch);
        scratch.clear();
        core.scratch = encode_delta(&delta, scratch)?;
        core.state.apply(&delta).map_err(CommitError::Apply)?;
        bump(&self.counters.deltas_committed, 1);
        let due = match core.batch.as_mut() {
            Some(batch) => {
                batch.push(delta, now);
                batch.is_due(now)
            }
            None => false,
        };
        if due {
            self.flush(core, now);
        } else {
            self.update_watermark(core);
        }
        Ok(self.position(self.watermark.load(Ordering::Acquire)))
    }

    /// Publishes the pending batch, if any.
    fn flush<S: StateDelta>(&self, core: &mut LiveCore<S>, now: Instant) {
        let Some(deltas) = core
            .batch
            .as_mut()
            .filter(|batch| !batch.is_empty())
            .map(|batch| batch.take())
        else {
            return;
        };
        let sequence = core.published + 1;
        match encode_frame(self.position(sequence), &deltas) {
            Ok(bytes) => self.send(core, sequence, bytes, deltas.len(), now),
            Err(error) => {
                // The changes are in the live state already. Leaving their sequence number
                // unused makes a gap, so every follower resynchronizes from a snapshot
                // rather than silently missing them.
                tracing::error!(%error, sequence, "coalesced batch not published; followers will resync");
                bump(&self.counters.encode_failures, 1);
                core.published = sequence;
                self.update_watermark(core);
            }
        }
    }

    /// Publishes what is due: a batch whose window has passed, or a heartbeat when idle.
    fn tick<S: StateDelta>(&self, core: &mut LiveCore<S>, now: Instant) {
        if core.batch.as_ref().is_some_and(|batch| batch.is_due(now)) {
            self.flush(core, now);
        }
        if now.duration_since(core.last_frame_at) >= self.heartbeat {
            // A heartbeat repeats the last sequence number with no deltas, so a follower
            // that lost the last frame sees the gap without waiting for the next change.
            let bytes = encode_frame::<S::Delta>(self.position(core.published), &[])
                .expect("a frame header is three integers, which always encode");
            bump(&self.counters.heartbeats, 1);
            core.last_frame_at = now;
            self.transport.publish(Frame {
                bytes,
                published_at: now,
            });
        }
    }
}

struct LiveInner<S: StateDelta, T: Transport> {
    core: RwLock<LiveCore<S>>,
    publisher: Publisher<T>,
}

impl<S: StateDelta, T: Transport> LiveInner<S, T> {
    fn write(&self) -> RwLockWriteGuard<'_, LiveCore<S>> {
        self.core.write().unwrap_or_else(|poisoned| {
            // A panic (in the state's own `apply`, say) interrupted a change: the state may
            // hold a change that was never published. Leave a sequence number unused so
            // every follower resynchronizes from a snapshot of the state as it is.
            let mut core = poisoned.into_inner();
            core.published += 1;
            self.publisher.update_watermark(&core);
            tracing::error!(
                sequence = core.published,
                "live state lock was poisoned; followers will resync"
            );
            self.core.clear_poison();
            core
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, LiveCore<S>> {
        // The next write repairs a poisoned lock (see `write`); reading meanwhile is safe.
        self.core
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How often a snapshot tries the shared lock before it takes the exclusive one.
const SHARED_SNAPSHOT_TRIES: usize = 3;

impl<S: StateDelta, T: Transport> SnapshotSource for LiveInner<S, T> {
    fn snapshot(&self) -> Result<Bytes, CodecError> {
        // The snapshot is taken under the shared lock, so live reads go on while the state
        // is copied (writes wait). Pending changes are in the state, so they must be
        // published before the snapshot is numbered, or a follower would apply them twice:
        // flush under the exclusive lock, then copy if no change slipped in meanwhile, and
        // after a few tries copy under the exclusive lock so a stream of writes cannot
        // starve the snapshot.
        let mut taken = None;
        for _ in 0..SHARED_SNAPSHOT_TRIES {
            self.publisher.flush(&mut self.write(), Instant::now());
            let core = self.read();
            if core.batch.as_ref().is_none_or(|batch| batch.is_empty()) {
                taken = Some((
                    self.publisher.position(core.published),
                    core.state.snapshot(),
                ));
                break;
            }
        }
        let (position, snapshot) = match taken {
            Some(taken) => taken,
            None => {
                let mut core = self.write();
                self.publisher.flush(&mut core, Instant::now());
                (
                    self.publisher.position(core.published),
                    core.state.snapshot(),
                )
            }
        };
        let bytes = encode_snapshot(position, &snapshot)?;
        bump(&self.publisher.counters.snapshots_served, 1);
        bump(&self.publisher.counters.snapshot_bytes, bytes.len() as u64);
        Ok(bytes)
    }
}

impl<S: StateDelta, T: Transport> Drop for LiveInner<S, T> {
    fn drop(&mut self) {
        // Changes waiting in a batch are committed: publish them before the publisher goes.
        let core = self
            .core
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.publisher.flush(core, Instant::now());
    }
}

/// The live side's handle on its state: commits changes and publishes them as deltas.
///
/// Every change goes through [`commit`](Self::commit): the delta is applied to the live
/// state and published under one lock, so the live state and the published stream can
/// never disagree, and the shadow — which changes only by applying the same deltas —
/// converges to the same state. Reads take a shared lock. Publishing never waits for a
/// subscriber. Cloning the handle is cheap; the publisher stops when the last clone is
/// dropped (publishing any batch still waiting).
///
/// Made by [`DeltaBus::live`](super::DeltaBus::live).
pub struct LiveState<S: StateDelta, T: Transport = InProcess> {
    inner: Arc<LiveInner<S, T>>,
}

impl<S: StateDelta, T: Transport> Clone for LiveState<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: StateDelta, T: Transport> std::fmt::Debug for LiveState<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveState")
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}

impl<S: StateDelta, T: Transport> LiveState<S, T> {
    /// Applies `delta` to the live state and publishes it.
    ///
    /// Returns the position that covers this change; a shadow at or past it has it too.
    /// On error the state is unchanged and nothing is published.
    pub fn commit(&self, delta: S::Delta) -> Result<Position, CommitError<S::Error>> {
        let mut core = self.inner.write();
        self.inner.publisher.commit(&mut core, delta)
    }

    /// Lets the live state produce the delta for a change, then commits it, under one lock
    /// (so the delta is computed from the state it will be applied to).
    pub fn commit_with(
        &self,
        change: impl FnOnce(&S) -> S::Delta,
    ) -> Result<Position, CommitError<S::Error>> {
        let mut core = self.inner.write();
        let delta = change(&core.state);
        self.inner.publisher.commit(&mut core, delta)
    }

    /// Runs `read` on the live state.
    pub fn read<R>(&self, read: impl FnOnce(&S) -> R) -> R {
        read(&self.inner.read().state)
    }

    /// Runs `read` on the live state and says which position that state was at (exactly:
    /// the position is read under the same lock). Use it for reads that are mirrored.
    pub fn read_with_position<R>(&self, read: impl FnOnce(&S) -> R) -> (R, Position) {
        let core = self.inner.read();
        let sequence = self.inner.publisher.watermark.load(Ordering::Acquire);
        (read(&core.state), self.inner.publisher.position(sequence))
    }

    /// The watermark of committed changes, without taking the lock.
    ///
    /// A change committed concurrently may be included, so for a mirrored read prefer
    /// [`read_with_position`](Self::read_with_position), which gives the exact position of
    /// the state read; hand it to
    /// [`ShadowState::catch_up`](super::ShadowState::catch_up).
    pub fn position(&self) -> Position {
        self.inner
            .publisher
            .position(self.inner.publisher.watermark.load(Ordering::Acquire))
    }

    /// This publisher's epoch.
    pub fn epoch(&self) -> Epoch {
        self.inner.publisher.epoch
    }

    /// Publishes a coalesced batch now instead of at the end of its window.
    pub fn flush(&self) {
        let mut core = self.inner.write();
        self.inner.publisher.flush(&mut core, Instant::now());
    }

    /// What has been published so far.
    pub fn stats(&self) -> LiveStats {
        let counters = &self.inner.publisher.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LiveStats {
            deltas_committed: load(&counters.deltas_committed),
            deltas_published: load(&counters.deltas_published),
            frames_published: load(&counters.frames_published),
            delta_bytes: load(&counters.delta_bytes),
            heartbeats: load(&counters.heartbeats),
            snapshots_served: load(&counters.snapshots_served),
            snapshot_bytes: load(&counters.snapshot_bytes),
            encode_failures: load(&counters.encode_failures),
        }
    }
}

/// Configures and starts a [`LiveState`]; made by [`DeltaBus::live`](super::DeltaBus::live).
#[must_use = "a LiveBuilder does nothing until started"]
pub struct LiveBuilder<S: StateDelta, T: Transport> {
    transport: Arc<T>,
    state: S,
    epoch: Epoch,
    heartbeat: Duration,
    coalescing: Option<CoalescingSetup<S::Delta>>,
}

/// A coalescing configuration with the batcher built for it while the [`Coalesce`] bound
/// was in scope.
struct CoalescingSetup<D> {
    config: Coalescing,
    batcher: Box<dyn Batcher<D>>,
}

impl<S: StateDelta, T: Transport> std::fmt::Debug for LiveBuilder<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveBuilder")
            .field("epoch", &self.epoch)
            .field("heartbeat", &self.heartbeat)
            .field(
                "coalescing",
                &self.coalescing.as_ref().map(|setup| setup.config),
            )
            .finish_non_exhaustive()
    }
}

impl<S: StateDelta + 'static, T: Transport> LiveBuilder<S, T> {
    /// The default heartbeat interval.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

    pub(super) fn new(transport: Arc<T>, state: S) -> Self {
        Self {
            transport,
            state,
            epoch: Epoch::random(),
            heartbeat: Self::DEFAULT_HEARTBEAT,
            coalescing: None,
        }
    }

    /// How long the publisher may stay silent before it announces its position; a follower
    /// that lost the last frame notices within this time. Default: 1 s.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Uses a chosen epoch instead of a random one (for a publisher that keeps its own
    /// restart counter). It must differ from every earlier run's.
    pub fn epoch(mut self, epoch: Epoch) -> Self {
        self.epoch = epoch;
        self
    }

    /// Starts the publisher: registers it as the source of snapshots (replacing an earlier
    /// publisher, whose followers resynchronize) and starts its ticker, which publishes due
    /// batches and heartbeats.
    ///
    /// Must be called within a tokio runtime.
    pub fn start(self) -> Result<LiveState<S, T>, BusError> {
        if self.heartbeat.is_zero() {
            return Err(BusError::InvalidSetting {
                setting: "heartbeat",
                reason: "must be longer than zero".into(),
            });
        }
        let (window, batch) = match self.coalescing {
            Some(CoalescingSetup { config, batcher }) => {
                validate(&config)?;
                (Some(config.window), Some(batcher))
            }
            None => (None, None),
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BusError::NoRuntime {
            what: "a live publisher",
        })?;
        let now = Instant::now();
        let inner = Arc::new(LiveInner {
            core: RwLock::new(LiveCore {
                state: self.state,
                published: 0,
                batch,
                scratch: Vec::new(),
                last_frame_at: now,
            }),
            publisher: Publisher {
                epoch: self.epoch,
                transport: Arc::clone(&self.transport),
                watermark: AtomicU64::new(0),
                heartbeat: self.heartbeat,
                counters: LiveCounters::default(),
            },
        });
        let source: Weak<LiveInner<S, T>> = Arc::downgrade(&inner);
        self.transport.serve_snapshots(source);
        let period = window.map_or(self.heartbeat, |window| window.min(self.heartbeat));
        runtime.spawn(tick(Arc::downgrade(&inner), period));
        Ok(LiveState { inner })
    }
}

impl<S, T> LiveBuilder<S, T>
where
    S: StateDelta + 'static,
    S::Delta: Coalesce,
    T: Transport,
{
    /// Coalesces changes to the same key within `config.window` into one delta, published
    /// with the other changes of the window as one frame.
    pub fn coalesce(mut self, config: Coalescing) -> Self {
        self.coalescing = Some(CoalescingSetup {
            config,
            batcher: Box::new(KeyCoalescer::new(config)),
        });
        self
    }
}

fn validate(config: &Coalescing) -> Result<(), BusError> {
    if config.window.is_zero() {
        return Err(BusError::InvalidSetting {
            setting: "coalescing.window",
            reason: "must be longer than zero".into(),
        });
    }
    if config.max_batch == 0 {
        return Err(BusError::InvalidSetting {
            setting: "coalescing.max_batch",
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

/// Publishes due batches and heartbeats until the live state is dropped.
async fn tick<S: StateDelta, T: Transport>(inner: Weak<LiveInner<S, T>>, period: Duration) {
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut core = inner.write();
        inner.publisher.tick(&mut core, Instant::now());
    }
}
