//! The response future of [`ShadowService`](super::ShadowService).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::CatchUnwind;
use http::{Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use shadowlib::mirror::{LiveObserver, ShadowRuntime};
use shadowlib::{Arm, Outcome};
use tokio::time::Instant;

use super::body::ShadowResponseBody;
use super::headers::HeaderMapView;

pin_project! {
    #[project = KindProj]
    enum Kind<SF, CF> {
        Stable { #[pin] future: SF },
        Candidate { #[pin] future: CatchUnwind<AssertUnwindSafe<CF>> },
    }
}

pin_project! {
    /// Response future of [`ShadowService`](super::ShadowService): the serving build's
    /// response, with a candidate panic turned into a `500 Internal Server Error`.
    pub struct ResponseFuture<SF, CF> {
        #[pin]
        kind: Kind<SF, CF>,
        state: Option<LiveState>,
    }
}

/// What the future needs to record the request once it has a response.
pub(crate) struct LiveState {
    pub(crate) runtime: ShadowRuntime,
    pub(crate) started: Instant,
    pub(crate) request_bytes: u64,
    pub(crate) observer: Option<LiveObserver>,
}

impl<SF, CF: Future> ResponseFuture<SF, CF> {
    pub(crate) fn stable(future: SF, state: LiveState) -> Self {
        Self {
            kind: Kind::Stable { future },
            state: Some(state),
        }
    }

    pub(crate) fn candidate(future: CF, state: LiveState) -> Self {
        Self {
            kind: Kind::Candidate {
                future: AssertUnwindSafe(future).catch_unwind(),
            },
            state: Some(state),
        }
    }
}

impl LiveState {
    fn respond<B>(self, arm: Arm, response: Response<B>) -> Response<ShadowResponseBody<B>>
    where
        B: Body<Data = Bytes>,
    {
        let latency = self.started.elapsed();
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        let observer = self
            .observer
            .map(|observer| observer.head(status, &HeaderMapView(&parts.headers)));
        let completion =
            self.runtime
                .live_response(arm, status, latency, self.request_bytes, observer);
        // A body that is already over is never polled; it is complete now.
        let completion = if body.is_end_stream() {
            completion.finish();
            None
        } else {
            Some(completion)
        };
        Response::from_parts(parts, ShadowResponseBody::new(body, completion))
    }

    fn failed(self, arm: Arm) {
        self.runtime.record_live(
            arm,
            Outcome::ServerError,
            self.started.elapsed(),
            self.request_bytes,
            0,
        );
    }

    fn panicked<B>(self, panic: &(dyn Any + Send)) -> Response<ShadowResponseBody<B>> {
        self.runtime
            .record_canary_panic(panic, self.started.elapsed(), self.request_bytes);
        let mut response = Response::new(ShadowResponseBody::empty());
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response
    }
}

impl<SF, CF, B, E> Future for ResponseFuture<SF, CF>
where
    SF: Future<Output = Result<Response<B>, E>>,
    CF: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<ShadowResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (arm, result) = match this.kind.project() {
            KindProj::Stable { future } => (Arm::Stable, Ok(ready!(future.poll(cx)))),
            KindProj::Candidate { future } => (Arm::Candidate, ready!(future.poll(cx))),
        };
        let state = this
            .state
            .take()
            .expect("a ResponseFuture is not polled again after it completed");
        Poll::Ready(match result {
            Ok(Ok(response)) => Ok(state.respond(arm, response)),
            Ok(Err(error)) => {
                state.failed(arm);
                Err(error)
            }
            Err(panic) => Ok(state.panicked(&*panic)),
        })
    }
}
