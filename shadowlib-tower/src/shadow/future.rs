//! The response future of [`ShadowService`](super::ShadowService).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use http::{Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use shadowlib::adapter::{HeaderPairs, Tracker};

use super::body::ShadowResponseBody;

pin_project! {
    #[project = KindProj]
    enum Kind<SF, CF, NF> {
        Stable { #[pin] future: SF },
        // The candidate, waiting for its readiness first: boxed, since it holds the whole
        // request, and every response future (stable's too) would be moved at its size.
        Candidate { future: Pin<Box<CatchUnwind<AssertUnwindSafe<CF>>>> },
        // The candidate, called in place.
        CandidateNow { #[pin] future: CatchUnwind<AssertUnwindSafe<NF>> },
        // The candidate panicked in `call`.
        Panicked { panic: Option<Box<dyn Any + Send>> },
    }
}

pin_project! {
    /// Response future of [`ShadowService`](super::ShadowService): the serving build's
    /// response, with a candidate panic turned into a `500 Internal Server Error`.
    pub struct ResponseFuture<SF, CF, NF> {
        #[pin]
        kind: Kind<SF, CF, NF>,
        tracker: Option<Tracker>,
    }
}

impl<SF, CF: Future, NF: Future> ResponseFuture<SF, CF, NF> {
    pub(crate) fn stable(future: SF, tracker: Tracker) -> Self {
        Self {
            kind: Kind::Stable { future },
            tracker: Some(tracker),
        }
    }

    pub(crate) fn candidate(future: CF, tracker: Tracker) -> Self {
        Self {
            kind: Kind::Candidate {
                future: Box::pin(AssertUnwindSafe(future).catch_unwind()),
            },
            tracker: Some(tracker),
        }
    }

    pub(crate) fn candidate_now(future: NF, tracker: Tracker) -> Self {
        Self {
            kind: Kind::CandidateNow {
                future: AssertUnwindSafe(future).catch_unwind(),
            },
            tracker: Some(tracker),
        }
    }

    pub(crate) fn panicked(panic: Box<dyn Any + Send>, tracker: Tracker) -> Self {
        Self {
            kind: Kind::Panicked { panic: Some(panic) },
            tracker: Some(tracker),
        }
    }
}

fn respond<B>(mut tracker: Tracker, response: Response<B>) -> Response<ShadowResponseBody<B>>
where
    B: Body<Data = Bytes>,
{
    let (parts, body) = response.into_parts();
    tracker.respond(parts.status.as_u16(), &HeaderPairs(&parts.headers));
    // A body that is already over is never polled; it is complete now.
    let tracker = if body.is_end_stream() {
        tracker.finish();
        None
    } else {
        Some(tracker)
    };
    Response::from_parts(parts, ShadowResponseBody::new(body, tracker))
}

fn panicked<B>(tracker: Tracker, panic: &(dyn Any + Send)) -> Response<ShadowResponseBody<B>> {
    tracker.panicked(panic);
    let mut response = Response::new(ShadowResponseBody::empty());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

impl<SF, CF, NF, B, E> Future for ResponseFuture<SF, CF, NF>
where
    SF: Future<Output = Result<Response<B>, E>>,
    CF: Future<Output = Result<Response<B>, E>>,
    NF: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<ShadowResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.kind.project() {
            KindProj::Stable { future } => Ok(ready!(future.poll(cx))),
            KindProj::Candidate { future } => ready!(future.as_mut().poll(cx)),
            KindProj::CandidateNow { future } => ready!(future.poll(cx)),
            KindProj::Panicked { panic } => match panic.take() {
                Some(panic) => Err(panic),
                None => Err(Box::new("polled again after a panic") as Box<dyn Any + Send>),
            },
        };
        let tracker = this
            .tracker
            .take()
            .expect("a ResponseFuture is not polled again after it completed");
        Poll::Ready(match result {
            Ok(Ok(response)) => Ok(respond(tracker, response)),
            Ok(Err(error)) => {
                // hyper answers a service error by closing the connection; as a status,
                // that is the server's failure.
                tracker.fail(500);
                Err(error)
            }
            Err(panic) => Ok(panicked(tracker, &*panic)),
        })
    }
}
