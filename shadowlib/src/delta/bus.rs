//! The [`DeltaBus`]: where a live publisher and its followers meet.

use std::marker::PhantomData;
use std::sync::Arc;

use thiserror::Error;

use super::{InProcess, LiveBuilder, ShadowState, StateDelta, Transport};

/// A bus, publisher or follower could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BusError {
    /// A setting is out of range.
    #[error("invalid {setting}: {reason}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// It runs tasks, so it must be started within a tokio runtime.
    #[error("{what} must be started within a tokio runtime")]
    NoRuntime {
        /// What was being started.
        what: &'static str,
    },
}

/// Publish/subscribe for the deltas of one state type `S` over a [`Transport`].
///
/// One live publisher ([`live`](Self::live)) publishes each committed change once; any
/// number of followers ([`follow`](Self::follow)) — the shadow, an audit tap — apply them
/// in order. A restarted publisher (a new [`LiveState`](super::LiveState) on the same bus)
/// gets a new epoch, and every follower resynchronizes to it. Cloning the bus is cheap.
///
/// ```
/// use std::time::Duration;
/// use shadowlib::delta::{DeltaBus, KeyValueMap, KvDelta};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = DeltaBus::<KeyValueMap<String, u64>>::in_process(1024)?;
/// let live = bus.live(KeyValueMap::new()).start()?;
/// let shadow = bus.follow(KeyValueMap::new())?;
///
/// live.commit(KvDelta::put("stock:apples", 12u64))?;
/// assert!(shadow.reach(live.position(), Duration::from_secs(1)).await);
/// assert_eq!(shadow.read(|map| map.get("stock:apples").copied()), Some(12));
/// # Ok(()) }
/// ```
pub struct DeltaBus<S, T = InProcess> {
    transport: Arc<T>,
    state: PhantomData<fn() -> S>,
}

impl<S, T> Clone for DeltaBus<S, T> {
    fn clone(&self) -> Self {
        Self {
            transport: Arc::clone(&self.transport),
            state: PhantomData,
        }
    }
}

impl<S, T: std::fmt::Debug> std::fmt::Debug for DeltaBus<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaBus")
            .field("transport", &self.transport)
            .finish()
    }
}

impl<S: StateDelta + 'static> DeltaBus<S, InProcess> {
    /// A bus within this process, whose subscribers may each fall up to
    /// `subscriber_buffer` frames behind before they resynchronize.
    pub fn in_process(subscriber_buffer: usize) -> Result<Self, BusError> {
        Ok(Self::new(InProcess::new(subscriber_buffer)?))
    }
}

impl<S: StateDelta + 'static, T: Transport> DeltaBus<S, T> {
    /// A bus over `transport`.
    pub fn new(transport: T) -> Self {
        Self {
            transport: Arc::new(transport),
            state: PhantomData,
        }
    }

    /// The transport underneath.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Configures a live publisher owning `state`; start it with [`LiveBuilder::start`].
    pub fn live(&self, state: S) -> LiveBuilder<S, T> {
        LiveBuilder::new(Arc::clone(&self.transport), state)
    }

    /// Starts a follower whose state begins as `state` and is replaced by the publisher's
    /// snapshot as soon as one is available.
    ///
    /// Must be called within a tokio runtime.
    pub fn follow(&self, state: S) -> Result<ShadowState<S>, BusError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| BusError::NoRuntime { what: "a follower" })?;
        Ok(ShadowState::spawn(
            &runtime,
            Arc::clone(&self.transport),
            state,
        ))
    }
}
