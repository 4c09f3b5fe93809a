//! The middleware factory and what it is built from.

use std::fmt;
use std::rc::Rc;
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
use super::target::{ActixTarget, BuildCandidate, candidate_builder};

/// The middleware factory: wrap the stable `App` with it (`App::new().wrap(shadow.clone())`
/// inside the `HttpServer::new` closure). See the [module docs](super).
///
/// Build it once, outside `HttpServer::new`: every worker's [`ShadowMiddleware`] shares
/// what it holds, and it is cheap to clone.
#[derive(Clone)]
pub struct Shadow {
    candidate: BuildCandidate,
    runtime: Runtime,
    target: TargetId,
}

impl Shadow {
    /// Middleware serving `rollout` with the `App`s `candidate` builds as the new build.
    ///
    /// `candidate` is the same kind of closure `HttpServer::new` takes: it is called once
    /// per actix worker (the candidate's instance for canary traffic) and once on the
    /// rollout's shadow thread, there. A candidate `App` that fails to start rolls the
    /// rollout back, and the live build keeps serving.
    pub fn new<F, T, B>(candidate: F, rollout: &Rollout) -> Self
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
        let runtime = Runtime::new(rollout);
        let build = Arc::clone(&candidate);
        let target = runtime.register(Box::new(move || {
            Box::pin(async move {
                let candidate = build()
                    .await
                    .map_err(|()| "the candidate app did not start".to_owned())?;
                Ok(Box::new(ActixTarget::new(Rc::new(candidate))) as Box<dyn ShadowTarget>)
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
