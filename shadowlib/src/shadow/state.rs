//! What the shadow needs of a stateful service's delta stream: where live's state stood
//! when it served a read, and a shadow state brought to the same place before the candidate
//! serves the copy.
//!
//! Positions are opaque here (the delta stream's epoch and sequence number): a read is
//! compared when live's state did not move (beyond the bound the service allows) while
//! live served it, and the shadow's state stood there (within the same bound) while the
//! candidate served the copy. Anything else is counted as not comparable, never as a
//! mismatch.

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

    /// Whether live's state moved little enough, from `arrived` (the read arrived) to
    /// `answered` (its response was ready), for the read to be compared.
    fn live_held(&self, arrived: StatePosition, answered: StatePosition) -> bool;
}

/// One copy served from the shadow's state.
pub(crate) trait StateSpan {
    /// Whether the shadow's state stood at the live position all through the copy.
    fn held(self: Box<Self>) -> bool;
}
