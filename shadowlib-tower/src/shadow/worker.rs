//! The shadow's side: the worker that sends each copy to the candidate, and the request
//! the candidate gets for a copy.

use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use shadowlib::mirror::{
    HttpVersion, RequestCopy, ResponseCapture, ShadowError, ShadowReply, ShadowResult,
    ShadowRuntime, ShadowWorker,
};
use tokio::runtime::Handle;
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::body::ShadowBody;
use super::headers::HeaderMapView;

/// What the middleware shares between its clones: the core runtime, the candidate build,
/// and the shadow's worker until it is started.
pub(crate) struct LayerShared<C> {
    pub(crate) runtime: ShadowRuntime,
    /// Cloned for each canary request and by the worker for each copy.
    pub(crate) candidate: C,
    worker: PendingWorker,
}

/// The shadow's worker before the first mirrored read starts it.
///
/// The worker turns each copy into a request for the candidate, whose body type is the
/// live request body's: only known when the layer's service is first called with a read
/// to mirror. So it is started then, once, where the layer was told to run it.
struct PendingWorker {
    started: AtomicBool,
    waiting: Mutex<Option<(ShadowWorker, ShadowHome)>>,
}

/// Where the shadow's worker runs.
pub(crate) enum ShadowHome {
    /// A thread of its own, with a one-thread tokio runtime.
    OwnThread,
    /// A task on this runtime.
    Runtime(Handle),
}

impl ShadowHome {
    /// Runs the worker here. A thread that cannot be started leaves the shadow without a
    /// worker: its queue fills and further copies are dropped and counted, while live
    /// requests go on as before.
    fn run<F>(self, worker: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            ShadowHome::Runtime(handle) => {
                handle.spawn(worker);
            }
            ShadowHome::OwnThread => {
                let started = thread::Builder::new()
                    .name("shadowlib-shadow".to_owned())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            // Returns once every clone of the layer's runtime is gone and
                            // the copies in flight are done; the thread ends with it.
                            Ok(runtime) => runtime.block_on(worker),
                            Err(error) => {
                                tracing::error!(%error, "the shadow's runtime did not start; no read will be shadowed");
                            }
                        }
                    });
                if let Err(error) = started {
                    tracing::error!(%error, "the shadow's thread did not start; no read will be shadowed");
                }
            }
        }
    }
}

impl<C> LayerShared<C> {
    pub(crate) fn new(
        runtime: ShadowRuntime,
        candidate: C,
        worker: ShadowWorker,
        home: ShadowHome,
    ) -> Self {
        Self {
            runtime,
            candidate,
            worker: PendingWorker {
                started: AtomicBool::new(false),
                waiting: Mutex::new(Some((worker, home))),
            },
        }
    }

    /// Starts the shadow's worker, sending copies to clones of the candidate, unless it
    /// runs already.
    pub(crate) fn start_worker<ReqBody, ResBody>(&self)
    where
        C: Service<Request<ShadowBody<ReqBody>>, Response = Response<ResBody>>
            + Clone
            + Send
            + 'static,
        C::Future: Send + 'static,
        C::Error: fmt::Display,
        ReqBody: Send + 'static,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        if self.worker.started.load(Ordering::Acquire) {
            return;
        }
        let waiting = self
            .worker
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((worker, home)) = waiting {
            let candidate = self.candidate.clone();
            home.run(worker.run(move |copy: &RequestCopy, capture| {
                call_candidate(candidate.clone(), shadow_request(copy), capture)
            }));
        }
        self.worker.started.store(true, Ordering::Release);
    }
}

/// Sends the copy to the candidate and summarizes its response. Runs on the shadow's
/// worker, which applies the timeout and catches panics.
async fn call_candidate<C, ReqBody, ResBody>(
    mut candidate: C,
    request: Result<Request<ShadowBody<ReqBody>>, ShadowError>,
    capture: ResponseCapture,
) -> ShadowResult
where
    C: Service<Request<ShadowBody<ReqBody>>, Response = Response<ResBody>>,
    C::Error: fmt::Display,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let request = request?;
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

/// The request the candidate gets for a copy: same method, target, version, the headers
/// the policy forwarded, the body; no extensions (they hold per-connection state of the
/// live request). A copy that `http` would not accept back fails the copy, with the
/// reason.
fn shadow_request<B>(copy: &RequestCopy) -> Result<Request<ShadowBody<B>>, ShadowError> {
    let invalid = |part: &str, reason: String| ShadowError::invalid_copy(part, reason);
    let body = ShadowBody::copied(Bytes::copy_from_slice(copy.body()));
    let mut request = Request::new(body);
    *request.method_mut() = Method::from_bytes(copy.method().as_bytes())
        .map_err(|e| invalid("method", e.to_string()))?;
    *request.uri_mut() =
        Uri::try_from(copy.target()).map_err(|e| invalid("target", e.to_string()))?;
    *request.version_mut() = match copy.version() {
        HttpVersion::Http09 => Version::HTTP_09,
        HttpVersion::Http10 => Version::HTTP_10,
        HttpVersion::Http2 => Version::HTTP_2,
        HttpVersion::Http3 => Version::HTTP_3,
        _ => Version::HTTP_11,
    };
    let headers = request.headers_mut();
    for (name, value) in copy.headers() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| invalid("header", e.to_string()))?;
        let value = HeaderValue::from_bytes(value).map_err(|e| invalid("header", e.to_string()))?;
        headers.append(name, value);
    }
    Ok(request)
}

/// The core's version of an `http` request.
pub(crate) fn version_of(version: Version) -> HttpVersion {
    match version {
        Version::HTTP_09 => HttpVersion::Http09,
        Version::HTTP_10 => HttpVersion::Http10,
        Version::HTTP_2 => HttpVersion::Http2,
        Version::HTTP_3 => HttpVersion::Http3,
        _ => HttpVersion::Http11,
    }
}

#[cfg(test)]
mod tests {
    use shadowlib::mirror::{HeaderList, HeaderPolicy, RequestHead};

    use super::*;

    #[test]
    fn a_copy_becomes_the_same_request_without_hop_by_hop_headers() {
        let headers = HeaderList(vec![
            ("accept", b"application/json".as_slice()),
            ("te", b"trailers".as_slice()),
            ("x-tenant", b"a".as_slice()),
            ("x-tenant", b"b".as_slice()),
        ]);
        let mut copy = RequestCopy::default();
        copy.fill_head(
            &RequestHead::new("GET", "/items", &headers),
            "/items?page=2",
            &HeaderPolicy::new(),
        );
        copy.set_version(HttpVersion::Http2);
        let request = shadow_request::<()>(&copy).expect("valid");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/items?page=2");
        assert_eq!(request.version(), Version::HTTP_2);
        assert!(request.headers().get("te").is_none());
        let tenants: Vec<_> = request.headers().get_all("x-tenant").iter().collect();
        assert_eq!(tenants, ["a", "b"]);
    }

    #[test]
    fn a_copy_http_would_not_accept_fails_with_the_reason() {
        let headers = HeaderList::default();
        let mut copy = RequestCopy::default();
        copy.fill_head(
            &RequestHead::new("GET", "/", &headers),
            "not a target",
            &HeaderPolicy::new(),
        );
        let error = shadow_request::<()>(&copy).expect_err("spaces are not allowed");
        assert!(error.0.contains("target"), "{error}");
    }
}
