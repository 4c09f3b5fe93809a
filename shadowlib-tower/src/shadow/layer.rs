//! The middleware layer and what it is built from.

use std::fmt;
use std::sync::Arc;

use shadowlib::budget::BudgetError;
use shadowlib::mirror::{ShadowConfig, ShadowRuntime};
use shadowlib::{KpiRecorder, Predictor, RolloutController, RolloutHandle, TrafficSteerer};
use thiserror::Error;
use tokio::runtime::Handle;
use tower::Layer;

use super::{ShadowJob, ShadowService};

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

/// The rollout the middleware serves: the handle whose phase it follows, the steerer the
/// controller drives, and the recorder the controller reads.
#[derive(Clone)]
pub struct Rollout {
    /// The rollout's handle.
    pub handle: RolloutHandle,
    /// The steerer the controller sets the share on.
    pub steerer: Arc<dyn TrafficSteerer>,
    /// The recorder the controller collects from (`with_metric_source`).
    pub recorder: Arc<KpiRecorder>,
}

impl Rollout {
    /// The rollout `controller` runs, recording into `recorder`. Register the same
    /// recorder with the controller's `with_metric_source`, or it will see no data.
    pub fn of<P, T>(controller: &RolloutController<P, T>, recorder: Arc<KpiRecorder>) -> Self
    where
        P: Predictor,
        T: TrafficSteerer + 'static,
    {
        Self {
            handle: controller.handle(),
            steerer: controller.steerer().clone(),
            recorder,
        }
    }
}

impl fmt::Debug for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rollout")
            .field("status", &self.handle.status().phase)
            .field("share", &self.steerer.share())
            .finish_non_exhaustive()
    }
}

/// Wraps the stable build in a [`ShadowService`] that also holds the candidate build.
/// See the [module docs](super).
#[derive(Clone)]
pub struct ShadowLayer<C> {
    candidate: C,
    runtime: ShadowRuntime<ShadowJob>,
}

impl<C> ShadowLayer<C> {
    /// A layer serving `rollout` with `candidate` as the new build. The shadow's worker
    /// is spawned on the current tokio runtime.
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
    pub fn new_on(
        candidate: C,
        rollout: Rollout,
        config: ShadowConfig,
        runtime: &Handle,
    ) -> Result<Self, ShadowLayerError> {
        let (shadow, worker) =
            ShadowRuntime::new(config, rollout.steerer, &rollout.handle, rollout.recorder)?;
        runtime.spawn(worker.run());
        Ok(Self {
            candidate,
            runtime: shadow,
        })
    }

    /// The runtime: counters, configuration and the KPI recorder.
    pub fn runtime(&self) -> &ShadowRuntime<ShadowJob> {
        &self.runtime
    }
}

impl<C> fmt::Debug for ShadowLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowLayer")
            .field("config", self.runtime.config())
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for ShadowLayer<C> {
    type Service = ShadowService<S, C>;

    fn layer(&self, stable: S) -> Self::Service {
        ShadowService::new(stable, self.candidate.clone(), self.runtime.clone())
    }
}
