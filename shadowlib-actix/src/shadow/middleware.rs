//! The middleware service.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use actix_http::Request;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::{Error, HttpMessage, HttpRequest};
use shadowlib::Arm;
use shadowlib::mirror::{self, BodySize, ShadowRuntime};
use tokio::time::Instant;

use super::body::{ShadowResponseBody, TeePayload};
use super::executor::{CandidateService, version_of};
use super::future::{LiveState, ResponseFuture};
use super::headers::HeaderMapView;

/// Routes each request to the stable `App` it wraps or to this worker's instance of the
/// candidate `App`, and mirrors reads served by stable to the shadow threads. Built by
/// [`Shadow`](super::Shadow), one per actix worker.
pub struct ShadowMiddleware<S> {
    stable: S,
    /// `None` when the candidate failed to start on this worker: everything goes to
    /// stable (and the rollout was rolled back).
    candidate: Option<Rc<CandidateService>>,
    runtime: ShadowRuntime,
}

impl<S> ShadowMiddleware<S> {
    pub(crate) fn new(
        stable: S,
        candidate: Option<CandidateService>,
        runtime: ShadowRuntime,
    ) -> Self {
        Self {
            stable,
            candidate: candidate.map(Rc::new),
            runtime,
        }
    }

    /// The runtime: counters, configuration and the KPI recorder.
    pub fn runtime(&self) -> &ShadowRuntime {
        &self.runtime
    }
}

impl<S> fmt::Debug for ShadowMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowMiddleware")
            .field("config", self.runtime.config())
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
        ready!(self.stable.poll_ready(cx))?;
        match &self.candidate {
            Some(candidate) => candidate.poll_ready(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn call(&self, mut request: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let size = body_size(&request);
        let request_bytes = match size {
            BodySize::Exact(bytes) => bytes,
            BodySize::Empty | BodySize::AtLeast(_) => 0,
        };
        let headers = HeaderMapView(request.headers());
        let head = mirror::RequestHead::new(request.method().as_str(), request.path(), &headers);
        let route = self.runtime.route(&head);
        let observer = route
            .mirror
            .and_then(|ticket| ticket.admit(size))
            .map(|mut ticket| {
                let live = request.head();
                let (version, peer) = (version_of(live.version), live.peer_addr);
                match (live.uri.scheme(), live.uri.path_and_query()) {
                    // Origin form, what HTTP/1.1 clients send: copied as it is.
                    (None, Some(target)) => {
                        ticket.copy_head(&head, target.as_str(), version, peer);
                    }
                    // Absolute form (HTTP/2, proxies): the whole URI.
                    _ => ticket.copy_head(&head, &live.uri.to_string(), version, peer),
                }
                let observer = ticket.observe_live();
                (ticket, observer)
            });
        let observer = observer.map(|(ticket, observer)| {
            if size == BodySize::Empty {
                ticket.submit();
            } else {
                let payload = TeePayload::new(request.take_payload(), ticket);
                request.set_payload(Payload::from(
                    Box::pin(payload) as actix_http::BoxedPayloadStream
                ));
            }
            observer
        });

        let live = LiveState {
            runtime: self.runtime.clone(),
            started,
            request_bytes,
            observer,
        };
        match (route.arm, &self.candidate) {
            (Arm::Candidate, Some(candidate)) => {
                let (request, stable_view) = candidate_request(request);
                match std::panic::catch_unwind(AssertUnwindSafe(|| candidate.call(request))) {
                    Ok(future) => ResponseFuture::candidate(future, stable_view, live),
                    Err(_panic) => ResponseFuture::call_panicked(stable_view, live),
                }
            }
            (Arm::Stable, _) | (Arm::Candidate, None) => {
                ResponseFuture::stable(self.stable.call(request), live)
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
