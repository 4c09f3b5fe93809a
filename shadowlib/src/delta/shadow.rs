//! The shadow side: a follower task that applies deltas to the shadow's copy of the state.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::codec::{decode_delta, decode_header, decode_snapshot};
use super::{
    Epoch, Frame, Freshness, Position, Received, StalenessBound, StateDelta, Subscription,
    Transport, TransportError,
};
use crate::evidence::{Distribution, Evidence, Moments};
use crate::metrics::{MetricError, MetricSource};

/// Why a follower replaced its state with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResyncReason {
    /// The first synchronization after the follower started.
    Initial,
    /// A frame (or a heartbeat) showed that at least one frame was lost.
    Gap,
    /// The subscriber fell further behind than its buffer and the transport dropped frames.
    Lagged,
    /// A frame came from another publisher epoch: the live side restarted.
    EpochChanged,
    /// The shadow's state refused a delta.
    ApplyFailed,
    /// A frame could not be decoded.
    Undecodable,
}

/// How many times the follower resynchronized, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncCounts {
    /// First synchronizations.
    pub initial: u64,
    /// Lost frames seen as gaps in sequence numbers.
    pub gap: u64,
    /// Frames dropped because the subscriber fell behind its buffer.
    pub lagged: u64,
    /// Publisher restarts.
    pub epoch_changed: u64,
    /// Deltas the shadow's state refused.
    pub apply_failed: u64,
    /// Frames that could not be decoded.
    pub undecodable: u64,
}

impl ResyncCounts {
    /// The count for one reason.
    pub fn get(&self, reason: ResyncReason) -> u64 {
        match reason {
            ResyncReason::Initial => self.initial,
            ResyncReason::Gap => self.gap,
            ResyncReason::Lagged => self.lagged,
            ResyncReason::EpochChanged => self.epoch_changed,
            ResyncReason::ApplyFailed => self.apply_failed,
            ResyncReason::Undecodable => self.undecodable,
        }
    }

    /// Resynchronizations after the first one: each means the stream was interrupted.
    pub fn recoveries(&self) -> u64 {
        self.gap + self.lagged + self.epoch_changed + self.apply_failed + self.undecodable
    }

    fn record(&mut self, reason: ResyncReason) {
        let count = match reason {
            ResyncReason::Initial => &mut self.initial,
            ResyncReason::Gap => &mut self.gap,
            ResyncReason::Lagged => &mut self.lagged,
            ResyncReason::EpochChanged => &mut self.epoch_changed,
            ResyncReason::ApplyFailed => &mut self.apply_failed,
            ResyncReason::Undecodable => &mut self.undecodable,
        };
        *count += 1;
    }
}

/// How fresh the shadow was for the mirrored reads measured with
/// [`ShadowState::catch_up`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReadFreshness {
    /// Reads measured.
    pub observed: u64,
    /// Reads the shadow served from exactly live's state.
    pub exact: u64,
    /// Reads outside their [`StalenessBound`]: leave them out of comparisons.
    pub outside_bound: u64,
    /// For reads within live's epoch, frames the shadow lacked when it started serving.
    pub behind_frames: Distribution,
    /// For reads within live's epoch, frames the shadow had past live's when it finished.
    pub ahead_frames: Distribution,
}

impl Default for ReadFreshness {
    fn default() -> Self {
        Self {
            observed: 0,
            exact: 0,
            outside_bound: 0,
            behind_frames: Distribution::bytes(),
            ahead_frames: Distribution::bytes(),
        }
    }
}

/// What the follower has done so far: the shadow's lag KPIs and its recoveries.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowerStats {
    /// The position of the shadow's state; `None` until the first snapshot arrived.
    pub position: Option<Position>,
    /// Frames applied.
    pub frames_applied: u64,
    /// Deltas applied (a coalesced frame holds several).
    pub deltas_applied: u64,
    /// Frames ignored because the state already contained them (older than a snapshot, or
    /// from an epoch the follower left).
    pub frames_skipped: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Bytes of every frame received.
    pub bytes_received: u64,
    /// Bytes of the snapshots restored.
    pub snapshot_bytes: u64,
    /// Snapshot resynchronizations by reason.
    pub resyncs: ResyncCounts,
    /// For each applied frame, microseconds from its publication until it was applied and
    /// visible to the shadow's reads: the shadow's lag in time.
    pub lag_us: Distribution,
    /// How far from live's state the shadow served mirrored reads: its lag in frames.
    pub reads: ReadFreshness,
}

impl Default for FollowerStats {
    fn default() -> Self {
        Self {
            position: None,
            frames_applied: 0,
            deltas_applied: 0,
            frames_skipped: 0,
            heartbeats: 0,
            bytes_received: 0,
            snapshot_bytes: 0,
            resyncs: ResyncCounts::default(),
            lag_us: Distribution::latency_us(),
            reads: ReadFreshness::default(),
        }
    }
}

/// The shadow's state with the position it is at; one lock, so a read knows exactly which
/// frames the state it saw contained.
struct Synced<S> {
    state: S,
    /// `None` until the first snapshot, and while a half-applied frame awaits a resync.
    position: Option<Position>,
    stats: FollowerStats,
}

struct ShadowShared<S> {
    synced: RwLock<Synced<S>>,
    /// Woken whenever the position moves.
    advanced: Notify,
    reads: Mutex<ReadFreshness>,
}

impl<S> ShadowShared<S> {
    fn write(&self) -> RwLockWriteGuard<'_, Synced<S>> {
        self.synced
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state and its position. Only the follower writes, so a poisoned lock means a
    /// state's `apply` or `restore` panicked half-way and the follower is gone: the state
    /// is then at no position, and no read of it counts as comparable.
    fn read(&self) -> (RwLockReadGuard<'_, Synced<S>>, Option<Position>) {
        match self.synced.read() {
            Ok(synced) => {
                let position = synced.position;
                (synced, position)
            }
            Err(poisoned) => (poisoned.into_inner(), None),
        }
    }

    fn position(&self) -> Option<Position> {
        self.read().1
    }
}

/// Aborts the follower when the last [`ShadowState`] handle goes.
struct ShadowHandle<S> {
    shared: Arc<ShadowShared<S>>,
    follower: AbortHandle,
}

impl<S> Drop for ShadowHandle<S> {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// The shadow's copy of the live state, kept current by a follower task.
///
/// The state advances only by applying the deltas live published, in sequence order; a
/// lost frame, a subscriber that fell behind its buffer, a publisher restart or a delta
/// the state refuses makes the follower restore a snapshot instead (counted in
/// [`FollowerStats::resyncs`], never skipped silently).
///
/// The shadow build reads it with [`read`](Self::read). The comparison side brackets each
/// mirrored read with [`catch_up`](Self::catch_up) and [`ReadSpan::finish`] to learn
/// whether the shadow answered from the state live answered from. Cloning the handle is
/// cheap; the follower stops when the last clone is dropped.
///
/// Made by [`DeltaBus::follow`](super::DeltaBus::follow).
pub struct ShadowState<S> {
    handle: Arc<ShadowHandle<S>>,
}

impl<S> Clone for ShadowState<S> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<S> std::fmt::Debug for ShadowState<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowState")
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}

impl<S: StateDelta + 'static> ShadowState<S> {
    /// Subscribes now (so no frame published from here on is missed) and spawns the
    /// follower on `runtime`.
    pub(super) fn spawn<T: Transport>(
        runtime: &tokio::runtime::Handle,
        transport: Arc<T>,
        state: S,
    ) -> Self {
        let subscription = transport.subscribe();
        let shared = Arc::new(ShadowShared {
            synced: RwLock::new(Synced {
                state,
                position: None,
                stats: FollowerStats::default(),
            }),
            advanced: Notify::new(),
            reads: Mutex::new(ReadFreshness::default()),
        });
        let follower = Follower {
            shared: Arc::clone(&shared),
            transport,
            subscription,
            published: Vec::with_capacity(BURST),
        };
        let task = runtime.spawn(follower.run());
        Self {
            handle: Arc::new(ShadowHandle {
                shared,
                follower: task.abort_handle(),
            }),
        }
    }
}

impl<S> ShadowState<S> {
    fn shared(&self) -> &ShadowShared<S> {
        &self.handle.shared
    }

    /// Runs `read` on the shadow's state.
    pub fn read<R>(&self, read: impl FnOnce(&S) -> R) -> R {
        read(&self.shared().read().0.state)
    }

    /// Runs `read` on the shadow's state and says which position that state was at.
    pub fn read_with_position<R>(&self, read: impl FnOnce(&S) -> R) -> (R, Option<Position>) {
        let (synced, position) = self.shared().read();
        (read(&synced.state), position)
    }

    /// Where the shadow's state is; `None` before the first snapshot.
    pub fn position(&self) -> Option<Position> {
        self.shared().position()
    }

    /// How the shadow's state compares with live's at `live_at`, right now.
    pub fn freshness(&self, live_at: Position) -> Freshness {
        let position = self.position();
        Freshness::over(live_at, position, position)
    }

    /// Waits until the shadow has every change up to `live_at` or `max_wait` has passed;
    /// returns whether it got there.
    pub async fn reach(&self, live_at: Position, max_wait: Duration) -> bool {
        let deadline = Instant::now() + max_wait;
        loop {
            let advanced = self.shared().advanced.notified();
            tokio::pin!(advanced);
            // Registered before the check, so a move between the check and the wait wakes us.
            advanced.as_mut().enable();
            if self.position().is_some_and(|at| at.has_reached(live_at)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return false;
            }
        }
    }

    /// Starts measuring one mirrored read that live served at `live_at`: waits up to
    /// `bound.max_wait` for the shadow to reach that position, then notes where the shadow
    /// is. Serve the read on the shadow, then call [`ReadSpan::finish`].
    pub async fn catch_up(&self, live_at: Position, bound: StalenessBound) -> ReadSpan<S> {
        self.reach(live_at, bound.max_wait).await;
        ReadSpan {
            shadow: self.clone(),
            live_at,
            bound,
            start: self.position(),
        }
    }

    /// The follower's counters and the lag KPIs.
    pub fn stats(&self) -> FollowerStats {
        let mut stats = {
            let (synced, position) = self.shared().read();
            FollowerStats {
                position,
                ..synced.stats.clone()
            }
        };
        stats.reads = self
            .shared()
            .reads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        stats
    }
}

/// One mirrored read being served by the shadow; made by [`ShadowState::catch_up`].
#[must_use = "call finish() to learn whether the read may be compared"]
#[derive(Debug)]
pub struct ReadSpan<S> {
    shadow: ShadowState<S>,
    live_at: Position,
    bound: StalenessBound,
    start: Option<Position>,
}

impl<S> ReadSpan<S> {
    /// The freshness of the shadow at the start of the read.
    pub fn start(&self) -> Freshness {
        Freshness::over(self.live_at, self.start, self.start)
    }

    /// Ends the read: how far the shadow's state was from live's while it served it, and
    /// whether that is within the bound. Counted in [`FollowerStats::reads`].
    pub fn finish(self) -> (Freshness, bool) {
        let freshness = Freshness::over(self.live_at, self.start, self.shadow.position());
        let comparable = freshness.within(&self.bound);
        let mut reads = self
            .shadow
            .shared()
            .reads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        reads.observed += 1;
        reads.exact += u64::from(freshness.is_exact());
        reads.outside_bound += u64::from(!comparable);
        if let Freshness::Distance { behind, ahead } = freshness {
            reads.behind_frames.record(behind);
            reads.ahead_frames.record(ahead);
        }
        (freshness, comparable)
    }
}

/// Adds the shadow's lag to the candidate's evidence as custom KPIs:
/// `delta_lag_us` (publication to apply, per frame), `delta_read_behind_frames` (per
/// measured read) and `delta_read_outside_bound` (1 per read outside its bound, else 0: its
/// mean is the share of reads left out of comparisons).
#[async_trait]
impl<S: Send + Sync + 'static> MetricSource for ShadowState<S> {
    fn name(&self) -> &str {
        "delta-follower"
    }

    async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError> {
        let stats = self.stats();
        let moments_of = |distribution: &Distribution| {
            let mut moments = Moments::default();
            for (value, count) in distribution.buckets() {
                moments.add_n(value as f64, count);
            }
            moments
        };
        let mut outside = Moments::default();
        outside.add_n(1.0, stats.reads.outside_bound);
        outside.add_n(0.0, stats.reads.observed - stats.reads.outside_bound);
        for (name, moments) in [
            ("delta_lag_us", moments_of(&stats.lag_us)),
            (
                "delta_read_behind_frames",
                moments_of(&stats.reads.behind_frames),
            ),
            ("delta_read_outside_bound", outside),
        ] {
            into.custom_mut(name).candidate.merge(&moments);
        }
        Ok(())
    }
}

/// At most this many frames are applied under one hold of the write lock, so readers of
/// the shadow's state wait for a bounded time.
const BURST: usize = 64;
const FIRST_RETRY: Duration = Duration::from_millis(1);
const LAST_RETRY: Duration = Duration::from_secs(1);

/// Where the follower's stream is.
struct Cursor {
    position: Position,
    /// The epoch left at the last epoch change; its frames still queued are skipped.
    retired: Option<Epoch>,
}

enum Flow {
    Continue,
    Resync(ResyncReason),
    Stop,
}

/// The transport closed while the follower waited for a snapshot.
struct Closed;

struct Follower<S, T: Transport> {
    shared: Arc<ShadowShared<S>>,
    transport: Arc<T>,
    subscription: T::Subscription,
    /// When each frame of the current burst was published; reused across bursts.
    published: Vec<Instant>,
}

impl<S: StateDelta + 'static, T: Transport> Follower<S, T> {
    async fn run(mut self) {
        let Ok(position) = self.resync(ResyncReason::Initial).await else {
            return;
        };
        let mut cursor = Cursor {
            position,
            retired: None,
        };
        loop {
            let received = self.subscription.recv().await;
            match self.apply_burst(&mut cursor, received) {
                Flow::Continue => {}
                Flow::Stop => return,
                Flow::Resync(reason) => match self.resync(reason).await {
                    Ok(position) => {
                        if position.epoch != cursor.position.epoch {
                            cursor.retired = Some(cursor.position.epoch);
                        }
                        cursor.position = position;
                    }
                    Err(Closed) => return,
                },
            }
        }
    }

    /// Applies `first` and whatever else is ready, up to [`BURST`] frames, under one lock.
    fn apply_burst(&mut self, cursor: &mut Cursor, first: Received) -> Flow {
        let mut synced = self.shared.write();
        let mut next = Some(first);
        let mut handled = 0;
        let flow = loop {
            let Some(received) = next.take() else {
                break Flow::Continue;
            };
            match received {
                Received::Frame(frame) => match apply_frame(cursor, &mut synced, &frame) {
                    Ok(true) => self.published.push(frame.published_at),
                    Ok(false) => {}
                    Err(reason) => break Flow::Resync(reason),
                },
                Received::Lagged { missed } => {
                    tracing::debug!(missed, "shadow fell behind its buffer");
                    break Flow::Resync(ResyncReason::Lagged);
                }
                Received::Closed => break Flow::Stop,
            }
            handled += 1;
            if handled < BURST {
                next = self.subscription.try_recv();
            }
        };
        // The burst becomes visible to readers when the lock is released: that is when
        // its frames have been applied, as far as the shadow's reads can tell.
        let applied_at = Instant::now();
        for published_at in self.published.drain(..) {
            let lag = applied_at.saturating_duration_since(published_at);
            synced
                .stats
                .lag_us
                .record(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
        }
        drop(synced);
        self.shared.advanced.notify_waiters();
        flow
    }

    /// Replaces the state with a snapshot, retrying until one arrives.
    async fn resync(&mut self, reason: ResyncReason) -> Result<Position, Closed> {
        self.shared.write().stats.resyncs.record(reason);
        tracing::debug!(?reason, "shadow resynchronizing from a snapshot");
        let mut retry_in = FIRST_RETRY;
        loop {
            match self.transport.request_snapshot().await {
                Ok(bytes) => match decode_snapshot::<S::Snapshot>(&bytes) {
                    Ok((position, snapshot)) => {
                        let mut synced = self.shared.write();
                        synced.state.restore(snapshot);
                        synced.position = Some(position);
                        synced.stats.snapshot_bytes += bytes.len() as u64;
                        drop(synced);
                        self.shared.advanced.notify_waiters();
                        return Ok(position);
                    }
                    Err(error) => tracing::warn!(%error, "snapshot undecodable; retrying"),
                },
                Err(TransportError::Closed) => return Err(Closed),
                Err(error) => tracing::debug!(%error, "snapshot unavailable; retrying"),
            }
            tokio::time::sleep(retry_in).await;
            retry_in = (retry_in * 2).min(LAST_RETRY);
        }
    }
}

/// Applies one frame if it is the next in sequence (`true`), skips it if the state already
/// contains it (`false`), and says why not otherwise.
fn apply_frame<S: StateDelta>(
    cursor: &mut Cursor,
    synced: &mut Synced<S>,
    frame: &Frame,
) -> Result<bool, ResyncReason> {
    synced.stats.bytes_received += frame.bytes.len() as u64;
    let (header, mut body) = decode_header(&frame.bytes).map_err(|error| {
        tracing::warn!(%error, "frame undecodable");
        ResyncReason::Undecodable
    })?;
    let sequence = header.position.sequence;
    if header.position.epoch != cursor.position.epoch {
        if Some(header.position.epoch) == cursor.retired {
            synced.stats.frames_skipped += 1;
            return Ok(false);
        }
        return Err(ResyncReason::EpochChanged);
    }
    if header.count == 0 {
        synced.stats.heartbeats += 1;
        return match sequence > cursor.position.sequence {
            true => Err(ResyncReason::Gap),
            false => Ok(false),
        };
    }
    if sequence <= cursor.position.sequence {
        synced.stats.frames_skipped += 1;
        return Ok(false);
    }
    if sequence != cursor.position.sequence + 1 {
        return Err(ResyncReason::Gap);
    }
    for _ in 0..header.count {
        let applied = decode_delta::<S::Delta>(body)
            .map_err(|error| {
                tracing::warn!(%error, sequence, "delta undecodable");
                ResyncReason::Undecodable
            })
            .and_then(|(delta, rest)| {
                body = rest;
                synced.state.apply(&delta).map_err(|error| {
                    tracing::warn!(%error, sequence, "shadow state refused a delta");
                    ResyncReason::ApplyFailed
                })
            });
        if let Err(reason) = applied {
            // Part of the frame may be applied: the state is at no position until the
            // snapshot arrives, so no read in between is taken as comparable.
            synced.position = None;
            return Err(reason);
        }
    }
    cursor.position.sequence = sequence;
    synced.position = Some(cursor.position);
    let stats = &mut synced.stats;
    stats.frames_applied += 1;
    stats.deltas_applied += header.count;
    Ok(true)
}
