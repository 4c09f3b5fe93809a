//! How frames travel from the live side to followers: the [`Transport`] trait and the
//! in-process default.

use std::future::Future;
use std::sync::{RwLock, Weak};

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

use super::{BusError, CodecError};

/// One published frame: the encoded bytes, and when they were published.
///
/// `bytes` is everything that goes on a wire (epoch, sequence number and deltas, see the
/// [module docs](super)); a transport moves it untouched. `published_at` measures the
/// shadow's lag in time; it is an instant on this process's clock, so a cross-process
/// transport sets it on arrival (its lag figures then leave out the hop across).
#[derive(Debug, Clone)]
pub struct Frame {
    /// The encoded frame.
    pub bytes: Bytes,
    /// When the live side published it.
    pub published_at: Instant,
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone)]
pub enum Received {
    /// The next frame.
    Frame(Frame),
    /// The subscriber fell behind by more than its buffer and `missed` frames were
    /// dropped for it. The follower resynchronizes from a snapshot.
    Lagged {
        /// How many frames were lost.
        missed: u64,
    },
    /// The transport is closed; no frame will come.
    Closed,
}

/// One subscriber's end of a [`Transport`]: its frames, in publishing order.
pub trait Subscription: Send + 'static {
    /// Waits for the next frame.
    fn recv(&mut self) -> impl Future<Output = Received> + Send;

    /// The next frame if one is ready, without waiting; lets the follower apply a burst of
    /// frames under one lock.
    fn try_recv(&mut self) -> Option<Received>;
}

/// The live side's answer to a follower's request for a snapshot.
///
/// [`LiveState`](super::LiveState) implements it; a transport hands the requests to it.
pub trait SnapshotSource: Send + Sync {
    /// The whole state, encoded with the position it was taken at.
    fn snapshot(&self) -> Result<Bytes, CodecError>;
}

/// A follower could not get a snapshot.
#[derive(Debug, Error)]
pub enum TransportError {
    /// No live publisher is serving snapshots (not started yet, or gone). The follower
    /// retries with backoff.
    #[error("no live publisher is serving snapshots")]
    NoPublisher,
    /// The live side failed to encode its snapshot.
    #[error("the live side could not produce a snapshot: {0}")]
    Snapshot(#[from] CodecError),
    /// The transport is closed; the follower stops.
    #[error("the transport is closed")]
    Closed,
    /// A failure of the underlying channel or broker.
    #[error("transport failure: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Moves frames from one live publisher to any number of subscribers, and snapshots on
/// request.
///
/// The in-process default is [`InProcess`]. An implementation over a broker publishes
/// [`Frame::bytes`] to a topic, subscribes consumers to it, and carries snapshot requests
/// to the live process (whose [`SnapshotSource`] it was given) and the answers back.
///
/// Contract:
/// * `publish` never waits: a subscriber that cannot keep up loses frames and is told so
///   ([`Received::Lagged`]), or the loss shows as a gap in sequence numbers.
/// * Each subscription yields frames in publishing order; it may drop frames but never
///   reorder them.
pub trait Transport: Send + Sync + 'static {
    /// A subscriber's end.
    type Subscription: Subscription;

    /// Hands a frame to every current subscriber, without waiting for any of them.
    fn publish(&self, frame: Frame);

    /// A new subscriber, receiving the frames published from now on.
    fn subscribe(&self) -> Self::Subscription;

    /// Makes `source` the answer to snapshot requests, replacing any earlier publisher.
    ///
    /// The source is held weakly: it belongs to the live state, which the transport must
    /// not keep alive.
    fn serve_snapshots(&self, source: Weak<dyn SnapshotSource>);

    /// Asks the current publisher for a snapshot.
    fn request_snapshot(&self) -> impl Future<Output = Result<Bytes, TransportError>> + Send;
}

/// The in-process [`Transport`]: a tokio broadcast channel.
///
/// Each subscriber may fall up to `subscriber_buffer` frames behind (rounded up to a power
/// of two); past that its oldest frames are dropped and it is told how many, while the
/// publisher carries on without waiting. Frames are shared, not copied, between
/// subscribers.
pub struct InProcess {
    sender: broadcast::Sender<Frame>,
    source: RwLock<Option<Weak<dyn SnapshotSource>>>,
}

impl InProcess {
    /// The largest buffer accepted; the channel allocates every slot up front.
    pub const MAX_SUBSCRIBER_BUFFER: usize = 1 << 24;

    /// A transport whose subscribers may each lag by up to `subscriber_buffer` frames.
    pub fn new(subscriber_buffer: usize) -> Result<Self, BusError> {
        if !(1..=Self::MAX_SUBSCRIBER_BUFFER).contains(&subscriber_buffer) {
            return Err(BusError::InvalidSetting {
                setting: "subscriber_buffer",
                reason: format!(
                    "{subscriber_buffer} is outside 1..={}",
                    Self::MAX_SUBSCRIBER_BUFFER
                ),
            });
        }
        let (sender, _) = broadcast::channel(subscriber_buffer);
        Ok(Self {
            sender,
            source: RwLock::new(None),
        })
    }

    fn current_source(&self) -> Option<Weak<dyn SnapshotSource>> {
        // The slot holds a plain value that is always valid, so a poisoned lock is used as is.
        self.source
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("subscribers", &self.sender.receiver_count())
            .finish_non_exhaustive()
    }
}

impl Transport for InProcess {
    type Subscription = InProcessSubscription;

    fn publish(&self, frame: Frame) {
        // An error only means nobody subscribes right now; there is no one to deliver to.
        let _ = self.sender.send(frame);
    }

    fn subscribe(&self) -> InProcessSubscription {
        InProcessSubscription {
            receiver: self.sender.subscribe(),
        }
    }

    fn serve_snapshots(&self, source: Weak<dyn SnapshotSource>) {
        *self
            .source
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(source);
    }

    async fn request_snapshot(&self) -> Result<Bytes, TransportError> {
        let source = self
            .current_source()
            .and_then(|weak| weak.upgrade())
            .ok_or(TransportError::NoPublisher)?;
        Ok(source.snapshot()?)
    }
}

/// A subscriber's end of [`InProcess`].
#[derive(Debug)]
pub struct InProcessSubscription {
    receiver: broadcast::Receiver<Frame>,
}

impl Subscription for InProcessSubscription {
    async fn recv(&mut self) -> Received {
        match self.receiver.recv().await {
            Ok(frame) => Received::Frame(frame),
            Err(RecvError::Lagged(missed)) => Received::Lagged { missed },
            Err(RecvError::Closed) => Received::Closed,
        }
    }

    fn try_recv(&mut self) -> Option<Received> {
        match self.receiver.try_recv() {
            Ok(frame) => Some(Received::Frame(frame)),
            Err(TryRecvError::Lagged(missed)) => Some(Received::Lagged { missed }),
            Err(TryRecvError::Closed) => Some(Received::Closed),
            Err(TryRecvError::Empty) => None,
        }
    }
}
