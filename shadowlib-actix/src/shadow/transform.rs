//! The middleware factory and what it is built from.

use std::fmt;
use std::io;

use actix_service::ServiceFactory;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{App, Error};
use futures::future::LocalBoxFuture;
use shadowlib::RolloutHandle;
use shadowlib::budget::BudgetError;
use shadowlib::mirror::{Rollout, ShadowConfig, ShadowRuntime};
use thiserror::Error;

use super::body::ShadowResponseBody;
use super::executor::{BuildCandidate, candidate_builder, candidate_failed, spawn_shadow_thread};
use super::middleware::ShadowMiddleware;

/// The middleware could not be built.
#[derive(Debug, Error)]
pub enum ShadowSetupError {
    /// The shadow budget in the configuration is invalid.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// A shadow thread could not be started.
    #[error("could not start a shadow thread: {0}")]
    Thread(#[from] io::Error),
}

/// The middleware factory: wrap the stable `App` with it (`App::new().wrap(shadow.clone())`
/// inside the `HttpServer::new` closure). See the [module docs](super).
///
/// Build it once, outside `HttpServer::new`: it owns the shadow threads and the counters
/// every worker's [`ShadowMiddleware`] shares, and is cheap to clone.
#[derive(Clone)]
pub struct Shadow {
    candidate: BuildCandidate,
    rollout: RolloutHandle,
    runtime: ShadowRuntime,
}

impl Shadow {
    /// Middleware serving `rollout` with the `App`s `candidate` builds as the new build,
    /// with one shadow thread.
    ///
    /// `candidate` is the same kind of closure `HttpServer::new` takes: it is called once
    /// per actix worker (the candidate's instance for canary traffic) and once per shadow
    /// thread, on that thread.
    pub fn new<F, T, B>(
        candidate: F,
        rollout: Rollout,
        config: ShadowConfig,
    ) -> Result<Self, ShadowSetupError>
    where
        F: Fn() -> App<T> + Send + Sync + 'static,
        T: ServiceFactory<
                ServiceRequest,
                Config = (),
                Response = ServiceResponse<B>,
                Error = Error,
                InitError = (),
            > + 'static,
        B: MessageBody + 'static,
    {
        let candidate = candidate_builder(candidate);
        let (runtime, worker) =
            ShadowRuntime::new(config, rollout.steerer, &rollout.handle, rollout.recorder)?;
        spawn_shadow_thread(&candidate, &rollout.handle, worker)?;
        Ok(Self {
            candidate,
            rollout: rollout.handle,
            runtime,
        })
    }

    /// The runtime: counters, configuration and the KPI recorder.
    pub fn runtime(&self) -> &ShadowRuntime {
        &self.runtime
    }
}

impl fmt::Debug for Shadow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shadow")
            .field("config", self.runtime.config())
            .finish_non_exhaustive()
    }
}

impl<S, B> Transform<S, ServiceRequest> for Shadow
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<ShadowResponseBody<B>>;
    type Error = Error;
    type Transform = ShadowMiddleware<S>;
    type InitError = ();
    type Future = LocalBoxFuture<'static, Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, stable: S) -> Self::Future {
        let candidate = (self.candidate)();
        let rollout = self.rollout.clone();
        let runtime = self.runtime.clone();
        Box::pin(async move {
            // A candidate that cannot start must not keep the live build from serving.
            let candidate = match candidate.await {
                Ok(candidate) => Some(candidate),
                Err(()) => {
                    candidate_failed(&rollout, "an actix worker");
                    None
                }
            };
            Ok(ShadowMiddleware::new(stable, candidate, runtime))
        })
    }
}
