//! The middleware service.

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use shadowlib::Arm;
use shadowlib::adapter::{
    BodySize, HeaderPairs, HttpVersion, RequestHead, Runtime, ShadowCounts, ShadowTarget, TargetId,
    Tracker,
};
use tower::util::Oneshot;
use tower::{BoxError, Service};

use super::body::{ShadowBody, ShadowResponseBody};
use super::future::ResponseFuture;
use super::routing;
use super::target::TowerTarget;

/// The `http` versions in the order [`HttpVersion::from_table`] maps them.
pub(crate) const VERSIONS: [http::Version; 5] = [
    http::Version::HTTP_09,
    http::Version::HTTP_10,
    http::Version::HTTP_11,
    http::Version::HTTP_2,
    http::Version::HTTP_3,
];

/// Routes each request to the stable or the candidate build and mirrors reads served by
/// stable to the shadow. Built by [`ShadowLayer`](super::ShadowLayer).
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
    candidate: C,
    runtime: Runtime,
    /// This pair of builds as the shadow runs it, registered at the first request (only
    /// then is the request body type known). Shared by every clone.
    target: Arc<OnceLock<TargetId>>,
}

impl<S, C> ShadowService<S, C> {
    pub(crate) fn new(stable: S, candidate: C, runtime: Runtime) -> Self {
        Self {
            stable,
            candidate,
            runtime,
            target: Arc::new(OnceLock::new()),
        }
    }

    /// What happened to every read the shadow could have seen.
    pub fn counts(&self) -> ShadowCounts {
        self.runtime.rollout().shadow_counts()
    }
}

impl<S: Clone, C: Clone> Clone for ShadowService<S, C> {
    fn clone(&self) -> Self {
        Self {
            stable: self.stable.clone(),
            candidate: self.candidate.clone(),
            runtime: self.runtime.clone(),
            target: Arc::clone(&self.target),
        }
    }
}

impl<S, C> fmt::Debug for ShadowService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowService")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for ShadowService<S, C>
where
    S: Service<Request<ShadowBody<ReqBody>>, Response = Response<ResBody>> + Clone + Send + 'static,
    C: Service<Request<ShadowBody<ReqBody>>, Response = Response<ResBody>, Error = S::Error>
        + Clone
        + Send
        + 'static,
    S::Error: fmt::Display,
    ReqBody: Body<Data = Bytes> + 'static,
    ResBody: Body<Data = Bytes> + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ShadowResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, Oneshot<C, Request<ShadowBody<ReqBody>>>, C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.stable.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let target = *self.target.get_or_init(|| {
            let (stable, candidate) = (self.stable.clone(), self.candidate.clone());
            self.runtime.register(Box::new(move || {
                Box::pin(async move {
                    Ok(
                        Box::new(TowerTarget::<_, _, ReqBody>::new(stable, candidate))
                            as Box<dyn ShadowTarget>,
                    )
                })
            }))
        });
        // The request is read where it is and its body wrapped in place: taking it apart
        // and putting it together again would move its head twice per request.
        let body = request.body();
        let hint = body.size_hint();
        let size = if body.is_end_stream() {
            BodySize::Empty
        } else {
            BodySize::from_hint(hint.exact(), hint.lower())
        };
        let (tracker, tee) = {
            let headers = HeaderPairs(request.headers());
            let uri = request.uri();
            // Middleware outside this one may have left what both builds need here (the
            // caller's identity, say): a copy carries them, cloned only when mirrored.
            let extensions = || {
                (!request.extensions().is_empty())
                    .then(|| Box::new(request.extensions().clone()) as Box<dyn Any + Send>)
            };
            let head = RequestHead::new(request.method().as_str(), uri.path(), &headers)
                .with_query(uri.query())
                .with_origin(
                    uri.scheme_str(),
                    uri.authority().map(|authority| authority.as_str()),
                )
                .with_version(HttpVersion::from_table(&VERSIONS, &request.version()))
                .with_attachment(&extensions);
            Tracker::start(&self.runtime, target, &head, size)
        };
        let mut request = request.map(|body| match tee {
            None => ShadowBody::live(body),
            Some(tee) => ShadowBody::teed(body, tee),
        });
        let mut tracker = tracker;
        match tracker.arm() {
            Arm::Stable => {
                tracker.calling();
                ResponseFuture::stable(self.stable.call(request), tracker)
            }
            Arm::Candidate => {
                routing::prepare_for_candidate(request.extensions_mut());
                // Ready now (an axum `Router` always is): called in place, as stable is,
                // so that both builds' requests cost the same on the way in — a clone per
                // request would be an atomic write on memory the shadow's thread shares,
                // paid by the candidate's requests alone. A panic in `call` is caught and
                // answered like one in its future.
                let waker = std::task::Waker::noop();
                match self.candidate.poll_ready(&mut Context::from_waker(waker)) {
                    Poll::Ready(Ok(())) => {
                        tracker.calling();
                        let candidate = &mut self.candidate;
                        match std::panic::catch_unwind(AssertUnwindSafe(move || {
                            candidate.call(request)
                        })) {
                            Ok(future) => ResponseFuture::candidate_now(future, tracker),
                            Err(panic) => ResponseFuture::panicked(panic, tracker),
                        }
                    }
                    // Not ready (or failing readiness): the request waits for a clone of
                    // the candidate to be ready in its own future, never holding back
                    // stable's.
                    Poll::Pending | Poll::Ready(Err(_)) => ResponseFuture::candidate(
                        Oneshot::new(self.candidate.clone(), request),
                        tracker,
                    ),
                }
            }
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
    use shadowlib::{Rollout, RolloutPolicy, Share, Version, WeightedSteerer};
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

    /// A rollout that only shadows, with the candidate's share then forced to `share`.
    fn rollout(candidate_share: Share) -> Rollout {
        let steerer = Arc::new(WeightedSteerer::new());
        let rollout = Rollout::builder(Version::new("t", "1"), Version::new("t", "2"))
            .policy(RolloutPolicy::default())
            .steerer(Arc::clone(&steerer))
            .shadow_only()
            .build()
            .expect("a valid policy, inside a runtime");
        shadowlib::TrafficSteerer::set_share(&*steerer, candidate_share);
        rollout
    }

    fn request() -> Request<Empty<Bytes>> {
        Request::post("/items")
            .body(Empty::new())
            .expect("a valid request")
    }

    #[tokio::test]
    async fn a_candidate_that_panics_in_call_answers_500() {
        let rollout = rollout(Share::FULL);
        let layer = ShadowLayer::new(Broken { ready: true }, &rollout);
        let service = layer.layer(answers());
        let response = service.oneshot(request()).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.into_body().collect().await.is_ok());
        assert_eq!(rollout.shadow_counts().canary_panics, 1);
    }

    /// The shadow's thread of its own is what a candidate that blocks its thread while
    /// shadowing stalls, never a live one. The test runs on a one-thread runtime, where a
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
        let rollout = rollout(Share::ZERO);
        let service = ShadowLayer::new(candidate, &rollout).layer(answers());
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
        let rollout = rollout(Share::ZERO);
        let service = ShadowLayer::new(Broken { ready: false }, &rollout).layer(answers());
        let response = tokio::time::timeout(Duration::from_secs(5), service.oneshot(request()))
            .await
            .expect("stable answers without waiting for the candidate")
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
