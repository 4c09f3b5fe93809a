//! The middleware factory and what it is built from.

use std::fmt;
use std::sync::Arc;

use actix_service::ServiceFactory;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{App, Error};
use futures_util::future::LocalBoxFuture;
use shadowlib::Rollout;
use shadowlib::adapter::{Runtime, ShadowCounts, ShadowTarget, TargetId};

use super::body::ShadowResponseBody;
use super::middleware::ShadowMiddleware;
use super::target::{ActixTarget, BuildApp, app_builder};

/// The middleware factory: wrap the stable `App` with it (`App::new().wrap(shadow.clone())`
/// inside the `HttpServer::new` closure). See the [module docs](super).
///
/// Build it once, outside `HttpServer::new`: every worker's [`ShadowMiddleware`] shares
/// what it holds, and it is cheap to clone.
#[derive(Clone)]
pub struct Shadow {
    candidate: BuildApp,
    runtime: Runtime,
    target: TargetId,
}

impl Shadow {
    /// Middleware serving `rollout`, with the `App`s `stable` builds as the build it wraps
    /// and those `candidate` builds as the new one.
    ///
    /// Both are the same kind of closure `HttpServer::new` takes. `candidate` is called
    /// once per actix worker (the candidate's instance for canary traffic); each is called
    /// once on the rollout's shadow thread, where the shadow runs every mirrored read on
    /// both (the stable instance there is the *twin*: measured the same way as the
    /// candidate, on the same reads). An actix `App` can neither be cloned nor moved
    /// between threads, which is why the stable build is asked for as a factory too —
    /// pass the one the server wraps. An `App` that fails to start there or on a worker
    /// rolls the rollout back, and the live build keeps serving.
    pub fn new<FS, TS, BS, FC, TC, BC>(stable: FS, candidate: FC, rollout: &Rollout) -> Self
    where
        FS: Fn() -> App<TS> + Send + Sync + 'static,
        TS: ServiceFactory<
                ServiceRequest,
                Config = (),
                Response = ServiceResponse<BS>,
                Error = Error,
                InitError = (),
            > + 'static,
        BS: MessageBody + 'static,
        FC: Fn() -> App<TC> + Send + Sync + 'static,
        TC: ServiceFactory<
                ServiceRequest,
                Config = (),
                Response = ServiceResponse<BC>,
                Error = Error,
                InitError = (),
            > + 'static,
        BC: MessageBody + 'static,
    {
        let twin = app_builder(stable);
        let candidate = app_builder(candidate);
        let runtime = Runtime::new(rollout);
        let build = Arc::clone(&candidate);
        let target = runtime.register(Box::new(move || {
            Box::pin(async move {
                let twin = twin()
                    .await
                    .map_err(|()| "the stable app did not start".to_owned())?;
                let candidate = build()
                    .await
                    .map_err(|()| "the candidate app did not start".to_owned())?;
                Ok(Box::new(ActixTarget::new(twin, candidate)) as Box<dyn ShadowTarget>)
            })
        }));
        Self {
            candidate,
            runtime,
            target,
        }
    }

    /// What happened to every read the shadow could have seen.
    pub fn counts(&self) -> ShadowCounts {
        self.runtime.rollout().shadow_counts()
    }
}

impl fmt::Debug for Shadow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shadow")
            .field("runtime", &self.runtime)
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
        let (runtime, target) = (self.runtime.clone(), self.target);
        Box::pin(async move {
            // A candidate that cannot start must not keep the live build from serving.
            let candidate = match candidate.await {
                Ok(candidate) => Some(candidate),
                Err(()) => {
                    runtime.candidate_cannot_start(
                        "the candidate app failed to start on an actix worker",
                    );
                    None
                }
            };
            Ok(ShadowMiddleware::new(stable, candidate, runtime, target))
        })
    }
}
