//! The middleware service.

use std::fmt;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use shadowlib::Arm;
use shadowlib::mirror::{
    BodySize, ForwardHeader, HeaderPolicy, MirrorTicket, RequestHead, ResponseCapture, ShadowError,
    ShadowReply, ShadowRuntime,
};
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::ShadowJob;
use super::body::{ShadowBody, ShadowResponseBody};
use super::future::{LiveState, ResponseFuture};
use super::headers::HeaderMapView;

/// Routes each request to the stable or the candidate build and mirrors reads served by
/// stable to the candidate in the background. Built by [`ShadowLayer`](super::ShadowLayer).
///
/// Both builds receive `Request<ShadowBody<B>>` and must answer with the same response
/// type; with axum, both are `Router`s. Readiness is the readiness of both builds, as with
/// `tower::steer`, since the build is only chosen in `call`.
pub struct ShadowService<S, C> {
    stable: S,
    candidate: C,
    runtime: ShadowRuntime<ShadowJob>,
}

impl<S, C> ShadowService<S, C> {
    pub(crate) fn new(stable: S, candidate: C, runtime: ShadowRuntime<ShadowJob>) -> Self {
        Self {
            stable,
            candidate,
            runtime,
        }
    }

    /// The runtime: counters, configuration and the KPI recorder.
    pub fn runtime(&self) -> &ShadowRuntime<ShadowJob> {
        &self.runtime
    }
}

impl<S: Clone, C: Clone> Clone for ShadowService<S, C> {
    fn clone(&self) -> Self {
        Self {
            stable: self.stable.clone(),
            candidate: self.candidate.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

impl<S, C> fmt::Debug for ShadowService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowService")
            .field("config", self.runtime.config())
            .finish_non_exhaustive()
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for ShadowService<S, C>
where
    S: Service<Request<ShadowBody<ReqBody>>, Response = Response<ResBody>> + Clone,
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
        let route = self.runtime.route(&head);
        let size = match hint.exact() {
            _ if body.is_end_stream() => BodySize::Empty,
            exact => BodySize::from_hint(exact, hint.lower()),
        };

        let mut observer = None;
        let body = match route.mirror.and_then(|ticket| ticket.admit(size)) {
            None => ShadowBody::live(body),
            Some(mut ticket) => {
                observer = Some(ticket.observe_live());
                let copy = copy_head(&parts, self.runtime.config().header_policy());
                let candidate = self.candidate.clone();
                if size == BodySize::Empty {
                    submit(ticket, candidate, copy, Bytes::new());
                    ShadowBody::live(body)
                } else {
                    let limit = ticket.body_limit();
                    ShadowBody::teed(
                        body,
                        limit,
                        Box::new(move |copied| match copied {
                            Some(bytes) => submit(ticket, candidate, copy, bytes),
                            None => ticket.skip_oversize(),
                        }),
                    )
                }
            }
        };

        let request = Request::from_parts(parts, body);
        let state = LiveState {
            runtime: self.runtime.clone(),
            started,
            request_bytes,
            observer,
        };
        match route.arm {
            Arm::Stable => {
                // The instance `poll_ready` reserved is the one called; a clone stays.
                let ready = self.stable.clone();
                let mut ready = std::mem::replace(&mut self.stable, ready);
                ResponseFuture::stable(ready.call(request), state)
            }
            Arm::Candidate => {
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

/// The head of the shadow's copy: same method, URI and version; headers through the
/// policy (hop-by-hop stripped, redactions applied); no extensions, since they hold
/// per-connection state of the live request.
fn copy_head(parts: &http::request::Parts, policy: &HeaderPolicy) -> http::request::Parts {
    let filter = policy.filter(&HeaderMapView(&parts.headers));
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        match filter.forward(name.as_str()) {
            ForwardHeader::Keep => {
                headers.append(name.clone(), value.clone());
            }
            ForwardHeader::Replace(replacement) => {
                // A replacement that is not a valid header value leaves the header out,
                // which still keeps the secret from the shadow.
                if let Ok(replacement) = HeaderValue::from_bytes(replacement) {
                    headers.append(name.clone(), replacement);
                }
            }
            ForwardHeader::Drop => {}
        }
    }
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = headers;
    copy
}

/// Queues the shadow job for one copy.
fn submit<C, ReqBody, ResBody>(
    ticket: MirrorTicket<ShadowJob>,
    candidate: C,
    head: http::request::Parts,
    body: Bytes,
) where
    C: Service<Request<ShadowBody<ReqBody>>, Response = Response<ResBody>> + Send + 'static,
    C::Future: Send + 'static,
    C::Error: fmt::Display,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let request_bytes = body.len() as u64;
    let capture = ticket.capture();
    let request = Request::from_parts(head, ShadowBody::copied(body));
    ticket.submit(
        request_bytes,
        Box::pin(run_on_candidate(candidate, request, capture)),
    );
}

/// Sends the copy to the candidate and summarizes its response. Runs on a shadow worker,
/// which applies the timeout and catches panics.
async fn run_on_candidate<C, ReqBody, ResBody>(
    mut candidate: C,
    request: Request<ShadowBody<ReqBody>>,
    capture: ResponseCapture,
) -> Result<ShadowReply, ShadowError>
where
    C: Service<Request<ShadowBody<ReqBody>>, Response = Response<ResBody>>,
    C::Error: fmt::Display,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let started = Instant::now();
    poll_fn(|cx| candidate.poll_ready(cx))
        .await
        .map_err(|e| ShadowError(e.to_string()))?;
    let response = candidate
        .call(request)
        .await
        .map_err(|e| ShadowError(e.to_string()))?;
    let latency = started.elapsed();
    let (parts, body) = response.into_parts();
    let mut body = std::pin::pin!(body);
    let mut summary = capture.head(parts.status.as_u16(), &HeaderMapView(&parts.headers));
    let mut copy = capture.body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ShadowError(format!("response body: {}", e.into())))?;
        // Past the limit nothing more would be compared: stop reading.
        if frame.data_ref().is_some_and(|data| !copy.push(data)) {
            break;
        }
    }
    summary.set_body(copy);
    Ok(ShadowReply {
        response: summary,
        latency,
    })
}
