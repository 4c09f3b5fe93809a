//! The middleware service.

use std::fmt;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_http::Request;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::{Error, HttpMessage, HttpRequest};
use shadowlib::Arm;
use shadowlib::adapter::{
    BodySize, HeaderPairs, HttpVersion, RequestHead, Runtime, TargetId, Tracker,
};

use super::body::{ShadowResponseBody, TeePayload};
use super::future::{CandidateFuture, ResponseFuture};
use super::target::{AppService, VERSIONS};

/// Routes each request to the stable `App` it wraps or to this worker's instance of the
/// candidate `App`, and mirrors reads served by stable to the shadow. Built by
/// [`Shadow`](super::Shadow), one per actix worker.
///
/// Readiness is the stable build's. A request sent to the candidate waits for the
/// candidate's readiness in its own future, so a candidate that is not ready holds back
/// only the requests steered to it, never stable traffic.
pub struct ShadowMiddleware<S> {
    stable: S,
    /// `None` when the candidate failed to start on this worker: everything goes to
    /// stable (and the rollout was rolled back).
    candidate: Option<Rc<AppService>>,
    runtime: Runtime,
    target: TargetId,
}

impl<S> ShadowMiddleware<S> {
    pub(crate) fn new(
        stable: S,
        candidate: Option<AppService>,
        runtime: Runtime,
        target: TargetId,
    ) -> Self {
        Self {
            stable,
            candidate: candidate.map(Rc::new),
            runtime,
            target,
        }
    }
}

impl<S> fmt::Debug for ShadowMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowMiddleware")
            .field("runtime", &self.runtime)
            .field("candidate_started", &self.candidate.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for ShadowMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<ShadowResponseBody<B>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.stable.poll_ready(cx)
    }

    fn call(&self, mut request: ServiceRequest) -> Self::Future {
        let size = body_size(&request);
        let (tracker, tee) = {
            let headers = HeaderPairs(request.headers());
            let live = request.head();
            let head = RequestHead::new(live.method.as_str(), live.uri.path(), &headers)
                .with_query(live.uri.query())
                .with_origin(
                    live.uri.scheme_str(),
                    live.uri.authority().map(|authority| authority.as_str()),
                )
                .with_version(HttpVersion::from_table(&VERSIONS, &live.version))
                .with_peer(live.peer_addr);
            Tracker::start(&self.runtime, self.target, &head, size)
        };
        if let Some(tee) = tee {
            let payload = TeePayload::new(request.take_payload(), tee);
            request.set_payload(Payload::from(
                Box::pin(payload) as actix_http::BoxedPayloadStream
            ));
        }
        let mut tracker = tracker;
        match (tracker.arm(), &self.candidate) {
            (Arm::Candidate, Some(candidate)) => {
                let (request, stable_view) = candidate_request(request);
                let waker = std::task::Waker::noop();
                let future: CandidateFuture = match candidate
                    .poll_ready(&mut Context::from_waker(waker))
                {
                    // Ready now: called in place, as stable is, so that both builds'
                    // requests are measured from their call alike. A panic in `call`
                    // is re-raised in the future, where it is caught and answered.
                    Poll::Ready(Ok(())) => {
                        tracker.calling();
                        match std::panic::catch_unwind(AssertUnwindSafe(move || {
                            candidate.call(request)
                        })) {
                            Ok(future) => future,
                            Err(panic) => Box::pin(async move { std::panic::resume_unwind(panic) }),
                        }
                    }
                    // Not ready: the request waits for it in its own future, never
                    // holding back stable's.
                    _ => {
                        let candidate = Rc::clone(candidate);
                        Box::pin(async move {
                            poll_fn(|cx| candidate.poll_ready(cx)).await?;
                            candidate.call(request).await
                        })
                    }
                };
                ResponseFuture::candidate(future, stable_view, tracker)
            }
            (Arm::Stable, _) | (Arm::Candidate, None) => {
                tracker.calling();
                ResponseFuture::stable(self.stable.call(request), tracker)
            }
        }
    }
}

/// What is known of the body before it is read: none at all, `Content-Length`, or an
/// unknown length (chunked, or an HTTP/2 stream).
fn body_size(request: &ServiceRequest) -> BodySize {
    let headers = request.headers();
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match request.parts().1 {
        Payload::None => BodySize::Empty,
        // HTTP/1.1 frames a request body only with `Content-Length` or
        // `Transfer-Encoding` (RFC 9112, section 6.1): without them there is none, whatever
        // payload object the request carries.
        Payload::H1 { .. } if length.is_none() && !headers.contains_key(TRANSFER_ENCODING) => {
            BodySize::Empty
        }
        _ => BodySize::from_hint(length, 0),
    }
}

/// The request as the candidate `App` takes it, from the request stable's `App` made:
/// same head and payload, and the request extensions set by middleware outside this one.
/// Stable's view of the request is returned too, to answer a candidate panic with.
/// Connection data (`HttpServer::on_connect`) stays with stable's view: actix-web offers
/// no way to hand it to another app.
fn candidate_request(request: ServiceRequest) -> (Request, HttpRequest) {
    let (stable_view, payload) = request.into_parts();
    let mut candidate = Request::with_payload(payload);
    *candidate.head_mut() = stable_view.head().clone();
    std::mem::swap(
        &mut *candidate.extensions_mut(),
        &mut *stable_view.extensions_mut(),
    );
    (candidate, stable_view)
}
