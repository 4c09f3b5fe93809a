//! The middleware service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use shadowlib::Arm;
use shadowlib::mirror::{BodySize, RequestHead, ShadowRuntime};
use tokio::time::Instant;
use tower::util::Oneshot;
use tower::{BoxError, Service};

use super::body::{ShadowBody, ShadowResponseBody};
use super::future::{LiveState, ResponseFuture};
use super::headers::HeaderMapView;
use super::worker::{LayerShared, version_of};

/// Routes each request to the stable or the candidate build and mirrors reads served by
/// stable to the candidate in the background. Built by [`ShadowLayer`](super::ShadowLayer).
///
/// Both builds receive `Request<ShadowBody<B>>` and must answer with the same response
/// type; with axum, both are `Router`s.
///
/// Readiness is the stable build's. A request sent to the candidate waits for the
/// candidate's readiness in its own future (on a clone of the candidate, as
/// `tower::util::Oneshot` does), so a candidate that is not ready, say one saturated by
/// its canary share, holds back only the requests steered to it, never stable traffic.
pub struct ShadowService<S, C> {
    stable: S,
    shared: Arc<LayerShared<C>>,
}

impl<S, C> ShadowService<S, C> {
    pub(crate) fn new(stable: S, shared: Arc<LayerShared<C>>) -> Self {
        Self { stable, shared }
    }

    /// The runtime: counters, configuration and the KPI recorder.
    pub fn runtime(&self) -> &ShadowRuntime {
        &self.shared.runtime
    }
}

impl<S: Clone, C> Clone for ShadowService<S, C> {
    fn clone(&self) -> Self {
        Self {
            stable: self.stable.clone(),
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
    type Future = ResponseFuture<S::Future, Oneshot<C, Request<ShadowBody<ReqBody>>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.stable.poll_ready(cx)
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
                self.shared.start_worker();
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
            // The candidate is called inside the future, where a panic in its `call` is
            // caught like one in its future; it panics on a clone made for this request.
            Arm::Candidate => ResponseFuture::candidate(
                Oneshot::new(self.shared.candidate.clone(), request),
                state,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Ready;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, PoisonError};
    use std::time::Duration;

    use http::StatusCode;
    use http_body_util::{BodyExt, Empty};
    use shadowlib::mirror::{Rollout, ShadowConfig};
    use shadowlib::{Share, Version};
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::shadow::ShadowLayer;

    type Answer = Response<Empty<Bytes>>;

    /// A build that answers every request with an empty `200 OK`.
    fn answers() -> impl Service<
        Request<ShadowBody<Empty<Bytes>>>,
        Response = Answer,
        Error = Infallible,
        Future = Ready<Result<Answer, Infallible>>,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(|_: Request<ShadowBody<Empty<Bytes>>>| {
            std::future::ready(Ok(Response::new(Empty::new())))
        })
    }

    /// A build that is never ready, or whose `call` panics.
    #[derive(Clone)]
    struct Broken {
        ready: bool,
    }

    impl Service<Request<ShadowBody<Empty<Bytes>>>> for Broken {
        type Response = Answer;
        type Error = Infallible;
        type Future = Ready<Result<Answer, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.ready {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }

        fn call(&mut self, _: Request<ShadowBody<Empty<Bytes>>>) -> Self::Future {
            panic!("candidate bug in call")
        }
    }

    fn rollout(candidate_share: Share) -> Rollout {
        let rollout = Rollout::shadow_only(Version::new("t", "1"), Version::new("t", "2"));
        rollout.steerer.set_share(candidate_share);
        rollout
    }

    fn request() -> Request<Empty<Bytes>> {
        Request::post("/items")
            .body(Empty::new())
            .expect("a valid request")
    }

    #[tokio::test]
    async fn a_candidate_that_panics_in_call_answers_500() {
        let layer = ShadowLayer::new(
            Broken { ready: true },
            rollout(Share::FULL),
            ShadowConfig::new(),
        )
        .expect("valid configuration");
        let service = layer.layer(answers());
        let response = service.oneshot(request()).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.into_body().collect().await.is_ok());
        assert_eq!(layer.runtime().stats().counts().canary_panics, 1);
    }

    /// With the default thread of its own, a candidate that blocks its thread while
    /// shadowing stalls only the shadow. The test runs on a one-thread runtime, where a
    /// shadow on the live requests' runtime would stall every one of them.
    #[tokio::test(flavor = "current_thread")]
    async fn a_candidate_that_blocks_its_thread_in_the_shadow_does_not_stall_live_requests() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let (blocked, unblocked) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let candidate = tower::service_fn({
            let (blocked, unblocked) = (Arc::clone(&blocked), Arc::clone(&unblocked));
            move |_: Request<ShadowBody<Empty<Bytes>>>| {
                blocked.store(true, Ordering::SeqCst);
                // Blocks its thread until released; the bound only ends a failing run.
                let receiver = released.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = receiver.recv_timeout(Duration::from_secs(10));
                unblocked.store(true, Ordering::SeqCst);
                std::future::ready(Ok::<_, Infallible>(Response::new(Empty::new())))
            }
        });
        let layer = ShadowLayer::new(candidate, rollout(Share::ZERO), ShadowConfig::new())
            .expect("valid configuration");
        let service = layer.layer(answers());
        let read = || {
            Request::get("/items")
                .body(Empty::new())
                .expect("a valid request")
        };

        let first = service.clone().oneshot(read()).await.expect("infallible");
        assert_eq!(first.status(), StatusCode::OK);
        for _ in 0..10_000 {
            if blocked.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(blocked.load(Ordering::SeqCst), "the read was mirrored");

        let second = service.clone().oneshot(read()).await.expect("infallible");
        assert_eq!(second.status(), StatusCode::OK);
        assert!(
            !unblocked.load(Ordering::SeqCst),
            "the live request was answered only once the blocked shadow let go"
        );
        release.send(()).expect("the candidate is waiting");
    }

    #[tokio::test]
    async fn a_candidate_that_is_never_ready_does_not_hold_back_stable() {
        let layer = ShadowLayer::new(
            Broken { ready: false },
            rollout(Share::ZERO),
            ShadowConfig::new(),
        )
        .expect("valid configuration");
        let service = layer.layer(answers());
        let response = tokio::time::timeout(Duration::from_secs(5), service.oneshot(request()))
            .await
            .expect("stable answers without waiting for the candidate")
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
