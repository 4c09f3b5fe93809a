//! The middleware service.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use shadowlib::Arm;
use shadowlib::mirror::{BodySize, RequestHead, ShadowRuntime};
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::body::{ShadowBody, ShadowResponseBody};
use super::future::{LiveState, ResponseFuture};
use super::headers::HeaderMapView;
use super::worker::{LayerShared, version_of};

/// Routes each request to the stable or the candidate build and mirrors reads served by
/// stable to the candidate in the background. Built by [`ShadowLayer`](super::ShadowLayer).
///
/// Both builds receive `Request<ShadowBody<B>>` and must answer with the same response
/// type; with axum, both are `Router`s. Readiness is the readiness of both builds, as with
/// `tower::steer`, since the build is only chosen in `call`.
pub struct ShadowService<S, C> {
    stable: S,
    candidate: C,
    shared: Arc<LayerShared>,
}

impl<S, C> ShadowService<S, C> {
    pub(crate) fn new(stable: S, candidate: C, shared: Arc<LayerShared>) -> Self {
        Self {
            stable,
            candidate,
            shared,
        }
    }

    /// The runtime: counters, configuration and the KPI recorder.
    pub fn runtime(&self) -> &ShadowRuntime {
        &self.shared.runtime
    }
}

impl<S: Clone, C: Clone> Clone for ShadowService<S, C> {
    fn clone(&self) -> Self {
        Self {
            stable: self.stable.clone(),
            candidate: self.candidate.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, C> fmt::Debug for ShadowService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowService")
            .field("config", self.runtime().config())
            .finish_non_exhaustive()
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for ShadowService<S, C>
where
    S: Service<Request<ShadowBody<ReqBody>>, Response = Response<ResBody>>,
    C: Service<Request<ShadowBody<ReqBody>>, Response = Response<ResBody>, Error = S::Error>
        + Clone
        + Send
        + 'static,
    C::Future: Send + 'static,
    S::Error: fmt::Display,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ShadowResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.stable.poll_ready(cx))?;
        self.candidate.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let hint = body.size_hint();
        let request_bytes = hint.exact().unwrap_or(hint.lower());
        let view = HeaderMapView(&parts.headers);
        let head = RequestHead::new(parts.method.as_str(), parts.uri.path(), &view);
        let runtime = &self.shared.runtime;
        let route = runtime.route(&head);
        let size = match hint.exact() {
            _ if body.is_end_stream() => BodySize::Empty,
            exact => BodySize::from_hint(exact, hint.lower()),
        };

        let mut observer = None;
        let body = match route.mirror.and_then(|ticket| ticket.admit(size)) {
            None => ShadowBody::live(body),
            Some(mut ticket) => {
                self.shared.start_worker(&self.candidate);
                observer = Some(ticket.observe_live());
                let version = version_of(parts.version);
                match (parts.uri.scheme(), parts.uri.path_and_query()) {
                    // Origin form, what HTTP/1.1 clients send: copied as it is.
                    (None, Some(target)) => {
                        ticket.copy_head(&head, target.as_str(), version, None);
                    }
                    // Absolute form (HTTP/2, proxies): the whole URI.
                    _ => ticket.copy_head(&head, &parts.uri.to_string(), version, None),
                }
                if size == BodySize::Empty {
                    ticket.submit();
                    ShadowBody::live(body)
                } else {
                    ShadowBody::teed(body, ticket)
                }
            }
        };

        let request = Request::from_parts(parts, body);
        let state = LiveState {
            runtime: runtime.clone(),
            started,
            request_bytes,
            observer,
        };
        match route.arm {
            Arm::Stable => ResponseFuture::stable(self.stable.call(request), state),
            Arm::Candidate => {
                // A panic in `call` drops the instance it happened in (it may be left
                // inconsistent); the one kept is a clone made before.
                let ready = self.candidate.clone();
                let mut ready = std::mem::replace(&mut self.candidate, ready);
                match std::panic::catch_unwind(AssertUnwindSafe(move || ready.call(request))) {
                    Ok(future) => ResponseFuture::candidate(future, state),
                    Err(_panic) => ResponseFuture::call_panicked(state),
                }
            }
        }
    }
}
