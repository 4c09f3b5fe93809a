//! Where the shadow runs: dedicated threads, each an actix-style single-threaded runtime
//! with its own instance of the candidate `App`, running the core's shadow workers.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;

use actix_http::Request;
use actix_service::boxed::{self, BoxService};
use actix_service::{IntoServiceFactory, ServiceExt, ServiceFactory};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{AppConfig, Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::{App, Error};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use send_wrapper::SendWrapper;
use shadowlib::mirror::{
    HeaderPolicy, ResponseCapture, ShadowError, ShadowReply, ShadowResult, ShadowWorker,
};
use shadowlib::{Phase, RolloutHandle};
use tokio::time::Instant;

use super::headers::{HeadCopy, HeaderMapView};

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

/// What a shadow thread serves its copies with.
struct ShadowThread {
    candidate: Rc<CandidateService>,
    policy: Rc<HeaderPolicy>,
}

thread_local! {
    /// The candidate instance of the shadow thread this is, with the header policy; `None`
    /// on any other thread, and on a shadow thread whose candidate failed to start.
    static SHADOW_THREAD: RefCell<Option<ShadowThread>> = const { RefCell::new(None) };
}

/// What a shadow job fails with when its thread has no candidate.
const NO_CANDIDATE: &str = "the candidate app did not start on this shadow thread";

/// One copy of a read as it travels from an actix worker to a shadow thread: plain data,
/// so that it can cross threads, unlike actix-web's requests.
pub(crate) struct ShadowRequest {
    pub(crate) head: HeadCopy,
    pub(crate) body: Bytes,
    pub(crate) capture: ResponseCapture,
}

/// The shadow job of this adapter: one copy of a read, sent to the candidate instance of
/// the shadow thread whose worker runs it.
///
/// It is `Send`, as the core's queue requires, because it carries only the copy until a
/// worker first polls it; then it calls the candidate of that worker's thread. The
/// candidate's future is not `Send` (actix-web's are not), so it is held in a
/// [`SendWrapper`]: the workers are pinned to their shadow thread, so the job is polled
/// and dropped on the thread that made that future, which is what the wrapper checks.
pub struct ShadowJob {
    request: Option<ShadowRequest>,
    call: Option<SendWrapper<LocalBoxFuture<'static, ShadowResult>>>,
}

impl ShadowJob {
    pub(crate) fn new(request: ShadowRequest) -> Self {
        Self {
            request: Some(request),
            call: None,
        }
    }
}

impl std::fmt::Debug for ShadowJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowJob")
            .field("started", &self.call.is_some())
            .finish_non_exhaustive()
    }
}

impl Future for ShadowJob {
    type Output = ShadowResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ShadowResult> {
        let this = &mut *self;
        if let Some(request) = this.request.take() {
            this.call = SHADOW_THREAD.with_borrow(|thread| {
                thread.as_ref().map(|thread| {
                    let call = call_candidate(
                        Rc::clone(&thread.candidate),
                        Rc::clone(&thread.policy),
                        request,
                    );
                    SendWrapper::new(call.boxed_local())
                })
            });
        }
        match &mut this.call {
            Some(call) => call.as_mut().poll(cx),
            None => Poll::Ready(Err(ShadowError(NO_CANDIDATE.to_owned()))),
        }
    }
}

/// Applies the header policy to the copy, sends it to the candidate and summarizes the
/// response. Runs inside a shadow
/// worker, which applies the timeout, catches panics and marks the task as the shadow.
///
/// An error value from the candidate is summarized as the response actix-web would have
/// sent for it, as the live side records it: in actix-web an error is a response.
async fn call_candidate(
    candidate: Rc<CandidateService>,
    policy: Rc<HeaderPolicy>,
    copy: ShadowRequest,
) -> ShadowResult {
    let ShadowRequest {
        head,
        body,
        capture,
    } = copy;
    let mut request = Request::with_payload(Payload::from(body));
    *request.head_mut() = head.into_head(&policy);
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
    policy: &HeaderPolicy,
    rollout: &RolloutHandle,
    worker: ShadowWorker<ShadowJob>,
) -> io::Result<()> {
    let build = Arc::clone(build);
    let policy = policy.clone();
    let rollout = rollout.clone();
    thread::Builder::new()
        .name("shadowlib-shadow".to_owned())
        .spawn(move || run_shadow_thread(&build, policy, &rollout, worker))?;
    Ok(())
}

fn run_shadow_thread(
    build: &BuildCandidate,
    policy: HeaderPolicy,
    rollout: &RolloutHandle,
    worker: ShadowWorker<ShadowJob>,
) {
    actix_web::rt::System::new().block_on(async move {
        match build().await {
            Ok(candidate) => SHADOW_THREAD.set(Some(ShadowThread {
                candidate: Rc::new(candidate),
                policy: Rc::new(policy),
            })),
            Err(()) => candidate_failed(rollout, "the shadow thread"),
        }
        // The worker catches the panics of the jobs it runs and returns when the queue
        // closes.
        worker.run().await;
        // Dropped here, inside the runtime it was built in.
        SHADOW_THREAD.take();
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
