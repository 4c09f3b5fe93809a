//! Where the shadow runs: dedicated threads, each an actix-style single-threaded runtime
//! with its own instance of the candidate `App`, running the core's shadow workers.

use std::future::poll_fn;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;

use actix_http::Request;
use actix_service::boxed::{self, BoxService};
use actix_service::{IntoServiceFactory, ServiceExt, ServiceFactory};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{AppConfig, Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, Uri, Version};
use actix_web::{App, Error};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use shadowlib::mirror::{
    HttpVersion, RequestCopy, ResponseCapture, ShadowError, ShadowReply, ShadowResult, ShadowWorker,
};
use shadowlib::{Phase, RolloutHandle};
use tokio::time::Instant;

use super::headers::HeaderMapView;

/// One running instance of the candidate `App`, its response body boxed so that every
/// candidate shares one type.
pub(crate) type CandidateService = BoxService<Request, ServiceResponse<BoxBody>, Error>;

/// Builds an instance of the candidate `App` on the calling thread: once per actix worker
/// (for canary traffic) and once per shadow thread.
pub(crate) type BuildCandidate =
    Arc<dyn Fn() -> LocalBoxFuture<'static, Result<CandidateService, ()>> + Send + Sync>;

/// Turns the user's `App` factory into a [`BuildCandidate`].
pub(crate) fn candidate_builder<F, T, B>(factory: F) -> BuildCandidate
where
    F: Fn() -> App<T> + Send + Sync + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    Arc::new(move || {
        let app = factory().into_factory();
        // The middleware builds the candidate itself, outside the server's own app
        // setup, so it gets actix-web's default connection config (host
        // `localhost:8080`, not secure). It shows only where the candidate builds URLs or
        // reads connection info for a request without a `Host` header.
        let service = app.new_service(AppConfig::default());
        Box::pin(async move {
            let service = service.await?;
            Ok(boxed::service(
                service.map(ServiceResponse::map_into_boxed_body),
            ))
        })
    })
}

/// What a shadow job fails with when its thread has no candidate.
const NO_CANDIDATE: &str = "the candidate app did not start on this shadow thread";

/// The job for one copy: the request built from it, sent to the shadow thread's
/// candidate instance. Made on the shadow thread, by the worker, so nothing of it
/// crosses threads.
fn shadow_job(
    candidate: Option<&Rc<CandidateService>>,
    copy: &RequestCopy,
    capture: ResponseCapture,
) -> LocalBoxFuture<'static, ShadowResult> {
    let request = shadow_request(copy);
    let candidate = candidate.cloned();
    async move {
        let candidate = candidate.ok_or_else(|| ShadowError(NO_CANDIDATE.to_owned()))?;
        call_candidate(&candidate, request?, capture).await
    }
    .boxed_local()
}

/// The request the candidate gets for a copy: same method, target, version, peer
/// address, the headers the policy forwarded, the body. Connection flags and extensions
/// were never copied: they belong to the live connection. A copy that actix-web would
/// not accept back fails the copy, with the reason.
fn shadow_request(copy: &RequestCopy) -> Result<Request, ShadowError> {
    let invalid = |part: &str, reason: String| ShadowError::invalid_copy(part, reason);
    let mut request = Request::with_payload(Payload::from(Bytes::copy_from_slice(copy.body())));
    let head = request.head_mut();
    head.method = Method::from_bytes(copy.method().as_bytes())
        .map_err(|e| invalid("method", e.to_string()))?;
    head.uri = Uri::try_from(copy.target()).map_err(|e| invalid("target", e.to_string()))?;
    head.version = match copy.version() {
        HttpVersion::Http09 => Version::HTTP_09,
        HttpVersion::Http10 => Version::HTTP_10,
        HttpVersion::Http2 => Version::HTTP_2,
        HttpVersion::Http3 => Version::HTTP_3,
        _ => Version::HTTP_11,
    };
    head.peer_addr = copy.peer_addr();
    for (name, value) in copy.headers() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| invalid("header", e.to_string()))?;
        let value = HeaderValue::from_bytes(value).map_err(|e| invalid("header", e.to_string()))?;
        head.headers.append(name, value);
    }
    Ok(request)
}

/// The core's version of an actix-web request.
pub(crate) fn version_of(version: Version) -> HttpVersion {
    match version {
        Version::HTTP_09 => HttpVersion::Http09,
        Version::HTTP_10 => HttpVersion::Http10,
        Version::HTTP_2 => HttpVersion::Http2,
        Version::HTTP_3 => HttpVersion::Http3,
        _ => HttpVersion::Http11,
    }
}

/// Sends the copy to the candidate and summarizes the response. Runs inside the shadow
/// worker, which applies the timeout, catches panics and marks the task as the shadow.
///
/// An error value from the candidate is summarized as the response actix-web would have
/// sent for it, as the live side records it: in actix-web an error is a response.
async fn call_candidate(
    candidate: &CandidateService,
    request: Request,
    capture: ResponseCapture,
) -> ShadowResult {
    let started = Instant::now();
    poll_fn(|cx| candidate.poll_ready(cx))
        .await
        .map_err(|e| ShadowError(e.to_string()))?;
    let response = match candidate.call(request).await {
        Ok(response) => response.into_parts().1,
        Err(error) => error.error_response(),
    };
    let latency = started.elapsed();
    let mut summary = capture.head(
        response.status().as_u16(),
        &HeaderMapView(response.headers()),
    );
    let mut copy = capture.body();
    let body = response.into_body();
    if !matches!(body.size(), BodySize::None | BodySize::Sized(0)) {
        let mut body = pin!(body);
        while let Some(chunk) = poll_fn(|cx| body.as_mut().poll_next(cx)).await {
            let chunk = chunk.map_err(|e| ShadowError(format!("response body: {e}")))?;
            // Past the limit nothing more would be compared: stop reading.
            if !copy.push(&chunk) {
                break;
            }
        }
    }
    summary.set_body(copy);
    Ok(ShadowReply {
        response: summary,
        latency,
    })
}

/// Starts the shadow thread and runs the core's shadow worker on it.
///
/// The thread runs an actix `System` (a current-thread tokio runtime with a `LocalSet`,
/// as on actix-web's own workers), builds its candidate instance, then runs the worker —
/// which polls up to the budget's concurrency of copies at once — until the core closes
/// the queue, that is until the last clone of the runtime is dropped. A candidate that
/// fails to start rolls the rollout back: it could never serve.
pub(crate) fn spawn_shadow_thread(
    build: &BuildCandidate,
    rollout: &RolloutHandle,
    worker: ShadowWorker,
) -> io::Result<()> {
    let build = Arc::clone(build);
    let rollout = rollout.clone();
    thread::Builder::new()
        .name("shadowlib-shadow".to_owned())
        .spawn(move || run_shadow_thread(&build, &rollout, worker))?;
    Ok(())
}

fn run_shadow_thread(build: &BuildCandidate, rollout: &RolloutHandle, worker: ShadowWorker) {
    actix_web::rt::System::new().block_on(async move {
        let candidate = match build().await {
            Ok(candidate) => Some(Rc::new(candidate)),
            Err(()) => {
                candidate_failed(rollout, "the shadow thread");
                None
            }
        };
        // The worker catches the panics of the jobs it runs and returns when the queue
        // closes; the candidate is dropped after it, inside the runtime it was built in.
        worker
            .run(|copy, capture| shadow_job(candidate.as_ref(), copy, capture))
            .await;
    });
}

/// Logs that the candidate app failed to start and rolls the rollout back.
pub(crate) fn candidate_failed(rollout: &RolloutHandle, place: &str) {
    let why = format!("the candidate app failed to start on {place}");
    tracing::error!("{why}; rolling back");
    // Every worker and shadow thread finds the same failure: the first one rolls back.
    if rollout.status().phase == Phase::RolledBack {
        return;
    }
    if let Err(refused) = rollout.abort(&why) {
        tracing::warn!(%refused, "the rollout could not be rolled back");
    }
}

#[cfg(test)]
mod tests {
    use shadowlib::mirror::{HeaderList, HeaderPolicy, RequestHead};

    use super::*;

    #[test]
    fn a_copy_becomes_the_live_request_without_hop_by_hop_or_redacted_headers() {
        let headers = HeaderList(vec![
            ("connection", b"keep-alive, x-trace".as_slice()),
            ("x-trace", b"abc".as_slice()),
            ("transfer-encoding", b"chunked".as_slice()),
            ("authorization", b"Bearer secret".as_slice()),
            ("cookie", b"session=s3cr3t".as_slice()),
            ("accept", b"application/json".as_slice()),
        ]);
        let policy = HeaderPolicy::new()
            .redact("authorization")
            .and_then(|p| p.redact("cookie"))
            .expect("valid names")
            .replace_with("redacted");
        let mut copy = RequestCopy::default();
        copy.fill_head(
            &RequestHead::new("GET", "/items", &headers),
            "/items?page=2",
            &policy,
        );
        copy.set_peer_addr(Some(([10, 0, 0, 1], 4242).into()));
        let request = shadow_request(&copy).expect("a valid copy");
        let head = request.head();
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri, "/items?page=2");
        assert_eq!(head.peer_addr, Some(([10, 0, 0, 1], 4242).into()));
        let mut names: Vec<&str> = head.headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "authorization", "cookie"]);
        assert_eq!(
            head.headers.get("authorization").map(HeaderValue::as_bytes),
            Some(b"redacted".as_slice())
        );
    }

    #[test]
    fn a_copy_actix_would_not_accept_fails_with_the_reason() {
        let headers = HeaderList::default();
        let mut copy = RequestCopy::default();
        copy.fill_head(
            &RequestHead::new("GET", "/", &headers),
            "not a target",
            &HeaderPolicy::new(),
        );
        let error = shadow_request(&copy).expect_err("spaces are not allowed");
        assert!(error.0.contains("target"), "{error}");
    }
}
