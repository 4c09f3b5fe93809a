//! The response future of [`ShadowMiddleware`](super::ShadowMiddleware).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::{Error, HttpRequest, HttpResponse};
use futures::FutureExt;
use futures::future::{CatchUnwind, LocalBoxFuture};
use pin_project_lite::pin_project;
use shadowlib::mirror::{LiveObserver, ShadowRuntime};
use shadowlib::{Arm, Outcome};
use tokio::time::Instant;

use super::body::ShadowResponseBody;
use super::headers::HeaderMapView;

/// The candidate's response future: boxed, as its service is.
pub(crate) type CandidateFuture = LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, Error>>;

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Stable { #[pin] future: F },
        Candidate {
            #[pin]
            future: CatchUnwind<AssertUnwindSafe<CandidateFuture>>,
            // Stable's view of the request, kept to answer a candidate panic with.
            request: Option<HttpRequest>,
        },
        CallPanicked { request: Option<HttpRequest> },
    }
}

pin_project! {
    /// Response future of [`ShadowMiddleware`](super::ShadowMiddleware): the serving
    /// build's response, with a candidate panic turned into a `500 Internal Server Error`.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
        live: Option<LiveState>,
    }
}

/// What the future needs to record the request once it has a response.
pub(crate) struct LiveState {
    pub(crate) runtime: ShadowRuntime,
    pub(crate) started: Instant,
    pub(crate) request_bytes: u64,
    pub(crate) observer: Option<LiveObserver>,
}

impl<F> ResponseFuture<F> {
    pub(crate) fn stable(future: F, live: LiveState) -> Self {
        Self {
            kind: Kind::Stable { future },
            live: Some(live),
        }
    }

    pub(crate) fn candidate(
        future: CandidateFuture,
        request: HttpRequest,
        live: LiveState,
    ) -> Self {
        Self {
            kind: Kind::Candidate {
                future: AssertUnwindSafe(future).catch_unwind(),
                request: Some(request),
            },
            live: Some(live),
        }
    }

    pub(crate) fn call_panicked(request: HttpRequest, live: LiveState) -> Self {
        Self {
            kind: Kind::CallPanicked {
                request: Some(request),
            },
            live: Some(live),
        }
    }
}

impl LiveState {
    fn respond<B: MessageBody + 'static>(
        self,
        arm: Arm,
        response: ServiceResponse<EitherBody<B>>,
    ) -> ServiceResponse<ShadowResponseBody<B>> {
        let latency = self.started.elapsed();
        let status = response.status().as_u16();
        let observer = self
            .observer
            .map(|observer| observer.head(status, &HeaderMapView(response.headers())));
        let live = self
            .runtime
            .live_response(arm, status, latency, self.request_bytes, observer);
        response.map_body(|_, body| ShadowResponseBody::new(body, Some(live)))
    }

    /// The build answered with an error value, which actix-web turns into a response
    /// with the error's status: recorded as that, not compared.
    fn failed(self, arm: Arm, error: &Error) {
        let status = error.as_response_error().status_code().as_u16();
        self.runtime.record_live(
            arm,
            Outcome::from_http_status(status),
            self.started.elapsed(),
            self.request_bytes,
            0,
        );
    }

    fn panicked<B: MessageBody + 'static>(
        self,
        request: HttpRequest,
        panic: &(dyn Any + Send),
    ) -> ServiceResponse<ShadowResponseBody<B>> {
        self.runtime
            .record_canary_panic(panic, self.started.elapsed(), self.request_bytes);
        let response = HttpResponse::InternalServerError().finish();
        ServiceResponse::new(request, response)
            .map_body(|_, body| ShadowResponseBody::new(EitherBody::right(body), None))
    }
}

impl<F, B> Future for ResponseFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    B: MessageBody + 'static,
{
    type Output = Result<ServiceResponse<ShadowResponseBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (arm, result) = match this.kind.project() {
            KindProj::Stable { future } => (
                Arm::Stable,
                Ok(ready!(future.poll(cx)).map(ServiceResponse::map_into_left_body)),
            ),
            KindProj::Candidate { future, request } => (
                Arm::Candidate,
                match ready!(future.poll(cx)) {
                    Ok(result) => Ok(result.map(ServiceResponse::map_into_right_body)),
                    Err(panic) => Err((panic, request.take())),
                },
            ),
            KindProj::CallPanicked { request } => (
                Arm::Candidate,
                Err((
                    Box::new("panicked in `call`") as Box<dyn Any + Send>,
                    request.take(),
                )),
            ),
        };
        let live = this
            .live
            .take()
            .expect("a ResponseFuture is not polled again after it completed");
        Poll::Ready(match result {
            Ok(Ok(response)) => Ok(live.respond(arm, response)),
            Ok(Err(error)) => {
                live.failed(arm, &error);
                Err(error)
            }
            Err((panic, request)) => {
                let request =
                    request.expect("the request is taken once, when the future completes");
                Ok(live.panicked(request, &*panic))
            }
        })
    }
}
