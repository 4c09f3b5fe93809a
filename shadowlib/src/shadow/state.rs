//! What the shadow needs of a stateful service's delta stream: where live's state stood
//! when it served a read, and a shadow state brought to the same place before the candidate
//! serves the copy.
//!
//! Positions are opaque here (the delta stream's epoch and sequence number); only their
//! equality matters: a read is compared when live's state did not move while live served
//! it and the shadow's state stood at exactly that place while the candidate served the
//! copy. Anything else is counted as not comparable, never as a mismatch.

use std::future::Future;
use std::pin::Pin;

/// A place in the live state's change stream: `(epoch, sequence)`.
pub(crate) type StatePosition = (u64, u64);

/// The link from the shadow to a stateful service's delta stream (see
/// [`RolloutBuilder::state_delta`](crate::RolloutBuilder::state_delta)).
pub(crate) trait StateLink: Send + Sync + 'static {
    /// Where live's state is now.
    fn live_position(&self) -> StatePosition;

    /// Waits, off the live path and at most as long as the bound allows, for the shadow's
    /// state to reach `at`; the span says, when the copy has been served, whether the
    /// shadow's state stayed there meanwhile.
    fn catch_up(&self, at: StatePosition) -> Pin<Box<dyn Future<Output = Box<dyn StateSpan>>>>;
}

/// One copy served from the shadow's state.
pub(crate) trait StateSpan {
    /// Whether the shadow's state stood at the live position all through the copy.
    fn held(self: Box<Self>) -> bool;
}
