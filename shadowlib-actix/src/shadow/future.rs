//! The response future of [`ShadowMiddleware`](super::ShadowMiddleware).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::{Error, HttpRequest, HttpResponse};
use futures_util::FutureExt;
use futures_util::future::{CatchUnwind, LocalBoxFuture};
use pin_project_lite::pin_project;
use shadowlib::adapter::{HeaderPairs, Tracker};

use super::body::ShadowResponseBody;

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
    }
}

pin_project! {
    /// Response future of [`ShadowMiddleware`](super::ShadowMiddleware): the serving
    /// build's response, with a candidate panic turned into a `500 Internal Server Error`.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
        tracker: Option<Tracker>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn stable(future: F, tracker: Tracker) -> Self {
        Self {
            kind: Kind::Stable { future },
            tracker: Some(tracker),
        }
    }

    pub(crate) fn candidate(
        future: CandidateFuture,
        request: HttpRequest,
        tracker: Tracker,
    ) -> Self {
        Self {
            kind: Kind::Candidate {
                future: AssertUnwindSafe(future).catch_unwind(),
                request: Some(request),
            },
            tracker: Some(tracker),
        }
    }
}

fn respond<B: MessageBody + 'static>(
    mut tracker: Tracker,
    response: ServiceResponse<EitherBody<B>>,
) -> ServiceResponse<ShadowResponseBody<B>> {
    tracker.respond(response.status().as_u16(), &HeaderPairs(response.headers()));
    response.map_body(|_, body| ShadowResponseBody::new(body, Some(tracker)))
}

impl<F, B> Future for ResponseFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    B: MessageBody + 'static,
{
    type Output = Result<ServiceResponse<ShadowResponseBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.kind.project() {
            KindProj::Stable { future } => {
                Ok(ready!(future.poll(cx)).map(ServiceResponse::map_into_left_body))
            }
            KindProj::Candidate { future, request } => match ready!(future.poll(cx)) {
                Ok(result) => Ok(result.map(ServiceResponse::map_into_right_body)),
                Err(panic) => Err((panic, request.take())),
            },
        };
        let tracker = this
            .tracker
            .take()
            .expect("a ResponseFuture is not polled again after it completed");
        Poll::Ready(match result {
            Ok(Ok(response)) => Ok(respond(tracker, response)),
            // The build answered with an error value, which actix-web turns into a
            // response with the error's status: recorded as that, not compared.
            Ok(Err(error)) => {
                tracker.fail(error.as_response_error().status_code().as_u16());
                Err(error)
            }
            Err((panic, request)) => {
                tracker.panicked(&*panic);
                let request =
                    request.expect("the request is taken once, when the future completes");
                let response = HttpResponse::InternalServerError().finish();
                Ok(ServiceResponse::new(request, response)
                    .map_body(|_, body| ShadowResponseBody::new(EitherBody::right(body), None)))
            }
        })
    }
}
