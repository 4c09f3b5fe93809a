//! The middleware layer and what it is built from.

use std::fmt;
use std::sync::Arc;

use shadowlib::budget::BudgetError;
use shadowlib::mirror::{Rollout, ShadowConfig, ShadowRuntime};
use thiserror::Error;
use tokio::runtime::Handle;
use tower::Layer;

use super::ShadowService;
use super::worker::LayerShared;

/// The layer could not be built.
#[derive(Debug, Error)]
pub enum ShadowLayerError {
    /// The shadow budget in the configuration is invalid.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// The shadow's worker needs a tokio runtime to run on.
    #[error(
        "no tokio runtime to run the shadow on: build the layer inside one, or use `ShadowLayer::new_on`"
    )]
    NoRuntime,
}

/// Wraps the stable build in a [`ShadowService`] that also holds the candidate build.
/// See the [module docs](super).
pub struct ShadowLayer<C> {
    shared: Arc<LayerShared<C>>,
}

impl<C> Clone for ShadowLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> ShadowLayer<C> {
    /// A layer serving `rollout` with `candidate` as the new build. The shadow's worker
    /// is spawned on the current tokio runtime (when the first read is mirrored: only
    /// then is the request body type known).
    pub fn new(
        candidate: C,
        rollout: Rollout,
        config: ShadowConfig,
    ) -> Result<Self, ShadowLayerError> {
        let handle = Handle::try_current().map_err(|_| ShadowLayerError::NoRuntime)?;
        Self::new_on(candidate, rollout, config, &handle)
    }

    /// As [`ShadowLayer::new`], spawning the shadow's worker on `runtime`. Give the
    /// shadow its own runtime to keep its work off the live runtime's threads.
    ///
    /// A one-thread runtime of its own did better in every bench on a 2-core machine
    /// (`benches/`: live-path overhead, HTTP throughput and slow-candidate p99): the shadow's
    /// burst of copies each tick then never queues behind live tasks, nor live tasks behind
    /// it. It is not the default because it is an OS thread the application did not ask
    /// for, and because a runtime of its own does not share the caller's clock: tests on
    /// paused tokio time would see the shadow's timeouts run in real time.
    pub fn new_on(
        candidate: C,
        rollout: Rollout,
        config: ShadowConfig,
        runtime: &Handle,
    ) -> Result<Self, ShadowLayerError> {
        let (shadow, worker) =
            ShadowRuntime::new(config, rollout.steerer, &rollout.handle, rollout.recorder)?;
        Ok(Self {
            shared: Arc::new(LayerShared::new(shadow, candidate, worker, runtime.clone())),
        })
    }

    /// The runtime: counters, configuration and the KPI recorder.
    pub fn runtime(&self) -> &ShadowRuntime {
        &self.shared.runtime
    }
}

impl<C> fmt::Debug for ShadowLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowLayer")
            .field("config", self.runtime().config())
            .finish_non_exhaustive()
    }
}

impl<S, C> Layer<S> for ShadowLayer<C> {
    type Service = ShadowService<S, C>;

    fn layer(&self, stable: S) -> Self::Service {
        ShadowService::new(stable, Arc::clone(&self.shared))
    }
}
