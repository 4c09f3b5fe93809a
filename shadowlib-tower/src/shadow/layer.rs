//! The middleware layer and what it is built from.

use std::fmt;
use std::sync::Arc;

use shadowlib::budget::BudgetError;
use shadowlib::mirror::{Rollout, ShadowConfig, ShadowRuntime};
use thiserror::Error;
use tokio::runtime::Handle;
use tower::Layer;

use super::ShadowService;
use super::worker::{LayerShared, ShadowHome};

/// The layer could not be built.
#[derive(Debug, Error)]
pub enum ShadowLayerError {
    /// The shadow budget in the configuration is invalid.
    #[error(transparent)]
    Budget(#[from] BudgetError),
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
    /// A layer serving `rollout` with `candidate` as the new build. The shadow runs on a
    /// thread of its own (named `shadowlib-shadow`, with a one-thread tokio runtime),
    /// started when the first read is mirrored (only then is the request body type
    /// known), and ended once the layer and every service made from it are dropped and
    /// the copies in flight are done.
    ///
    /// A thread of its own is what keeps the candidate from hurting live requests: a
    /// candidate that blocks its thread (a synchronous call, a busy loop) while shadowing
    /// stalls only the shadow, whose copies then time out or are dropped, never a thread
    /// the live requests run on. It also did better in every bench on a 2-core machine
    /// (`benches/`: slow-candidate p99 above all), since the shadow's burst of copies each
    /// tick never queues behind live tasks, nor live tasks behind it. Use
    /// [`ShadowLayer::new_on`] to run the shadow on a runtime of your choosing instead.
    pub fn new(
        candidate: C,
        rollout: Rollout,
        config: ShadowConfig,
    ) -> Result<Self, ShadowLayerError> {
        Self::build(candidate, rollout, config, ShadowHome::OwnThread)
    }

    /// As [`ShadowLayer::new`], spawning the shadow's worker on `runtime` instead of a
    /// thread of its own: for applications that account for every thread, and for tests
    /// on paused tokio time, which a runtime of its own would not share (the shadow's
    /// timeouts would run in real time). On the live requests' own runtime, a candidate
    /// that blocks its thread while shadowing blocks one of theirs.
    pub fn new_on(
        candidate: C,
        rollout: Rollout,
        config: ShadowConfig,
        runtime: &Handle,
    ) -> Result<Self, ShadowLayerError> {
        Self::build(
            candidate,
            rollout,
            config,
            ShadowHome::Runtime(runtime.clone()),
        )
    }

    fn build(
        candidate: C,
        rollout: Rollout,
        config: ShadowConfig,
        home: ShadowHome,
    ) -> Result<Self, ShadowLayerError> {
        let (shadow, worker) =
            ShadowRuntime::new(config, rollout.steerer, &rollout.handle, rollout.recorder)?;
        Ok(Self {
            shared: Arc::new(LayerShared::new(shadow, candidate, worker, home)),
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
