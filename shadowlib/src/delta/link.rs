//! The delta stream as the shadow sees it: a live position for each mirrored read, and
//! the shadow's state brought there before the candidate serves the copy.

use std::future::Future;
use std::pin::Pin;

use super::{LiveState, Position, ReadSpan, ShadowState, StalenessBound, StateDelta, Transport};
use crate::shadow::{StateLink, StatePosition, StateSpan};

/// A live state, its shadow follower, and how far apart they may be for a read to count.
pub(crate) struct DeltaLink<S: StateDelta, T: Transport> {
    live: LiveState<S, T>,
    shadow: ShadowState<S>,
    bound: StalenessBound,
}

impl<S: StateDelta, T: Transport> DeltaLink<S, T> {
    pub(crate) fn new(
        live: &LiveState<S, T>,
        shadow: &ShadowState<S>,
        bound: StalenessBound,
    ) -> Self {
        Self {
            live: live.clone(),
            shadow: shadow.clone(),
            bound,
        }
    }
}

fn position_of((epoch, sequence): StatePosition) -> Position {
    Position {
        epoch: super::Epoch::new(epoch),
        sequence,
    }
}

impl<S, T> StateLink for DeltaLink<S, T>
where
    S: StateDelta + 'static,
    T: Transport,
{
    fn live_position(&self) -> StatePosition {
        let at = self.live.position();
        (at.epoch.get(), at.sequence)
    }

    fn live_held(&self, arrived: StatePosition, answered: StatePosition) -> bool {
        let (from, to) = (position_of(arrived), position_of(answered));
        from.epoch == to.epoch && to.sequence.saturating_sub(from.sequence) <= self.bound.max_ahead
    }

    fn catch_up(&self, at: StatePosition) -> Pin<Box<dyn Future<Output = Box<dyn StateSpan>>>> {
        let (shadow, bound) = (self.shadow.clone(), self.bound);
        Box::pin(async move {
            let span = shadow.catch_up(position_of(at), bound).await;
            Box::new(span) as Box<dyn StateSpan>
        })
    }
}

impl<S> StateSpan for ReadSpan<S> {
    fn held(self: Box<Self>) -> bool {
        let (_freshness, comparable) = self.finish();
        comparable
    }
}
