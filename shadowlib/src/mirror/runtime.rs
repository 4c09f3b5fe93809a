//! The framework-neutral runtime both HTTP adapters drive: routing, the hand-off to the
//! shadow, the shadow's worker, and the recording of what happened.
//!
//! The live path's share of a copy is kept to a push onto a lock-free queue: it never
//! wakes the shadow's thread while the shadow is busy or only between copies (see
//! [`SHADOW_TICK`]), and never waits for it.

use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::task::Poll;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use futures::{FutureExt, StreamExt};
use thiserror::Error;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::labels::RouteLabels;
use super::stats::ShadowStats;
use super::{BodyCapture, BodySize, HeaderView, RequestHead, ResponseSummary, ShadowConfig};
use crate::budget::BudgetError;
use crate::{Arm, KpiRecorder, Outcome, Phase, RolloutHandle, RolloutStatus, TrafficSteerer};

tokio::task_local! {
    static IN_SHADOW: ();
}

/// Whether the current task is running a shadow copy.
///
/// Application code (and guards around side effects) can refuse to write while it is
/// true: the shadow must never change data the live build owns. Only the task that runs
/// the copy is marked; work it spawns onto other tasks is not.
///
/// ```
/// assert!(!shadowlib::mirror::in_shadow());
/// ```
pub fn in_shadow() -> bool {
    IN_SHADOW.try_with(|_| ()).is_ok()
}

/// What the candidate answered to a shadow copy: the response as far as comparison goes,
/// and the time until its head was ready (the same measure as a live request's latency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowReply {
    /// The response.
    pub response: ResponseSummary,
    /// Time from the call to the response head.
    pub latency: Duration,
}

/// The candidate's service returned an error value for a shadow copy.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the candidate failed the shadow request: {0}")]
pub struct ShadowError(pub String);

/// What a shadow job resolves to.
pub type ShadowResult = Result<ShadowReply, ShadowError>;

/// What the worker side shares.
struct Shared {
    config: ShadowConfig,
    recorder: Arc<KpiRecorder>,
    stats: Arc<ShadowStats>,
    recycled: Recycled,
}

/// Response summaries the worker has compared, kept for the next responses to be
/// captured into.
///
/// A summary of the live response is made on the live thread and freed on the shadow's;
/// with the system allocator such a free takes the lock of the live thread's arena, and
/// at one copy per request the two threads fight over it. Recycled summaries (and their
/// header and body buffers) go round between the threads instead of being freed.
type Recycled = Arc<ArrayQueue<ResponseSummary>>;

/// Summaries kept for reuse at most; more are freed.
const RECYCLED_SUMMARIES: usize = 256;

struct Inner<J> {
    shared: Arc<Shared>,
    steerer: Arc<dyn TrafficSteerer>,
    status: watch::Receiver<RolloutStatus>,
    queue: Arc<CopyQueue<J>>,
    labels: RouteLabels,
}

impl<J> Drop for Inner<J> {
    fn drop(&mut self) {
        // The last runtime clone is gone: the worker finishes what it holds and ends.
        self.queue.closed.store(true, Ordering::SeqCst);
        self.queue.parked.store(false, Ordering::SeqCst);
        self.queue.waker.wake();
    }
}

/// How often an idle worker looks at the queue (and a finished copy at the live
/// response it waits for) instead of being woken by the live path.
///
/// Waking a parked thread is a futex call, several microseconds on the live request's
/// thread; a trivial request costs about as much. So the live path never wakes a worker
/// that is merely between copies: the worker looks at the queue every tick, which adds up
/// to one tick to when a copy starts (never to its measured latency, which starts when
/// the candidate is called) and costs the shadow's thread one timer wake-up per tick.
pub const SHADOW_TICK: Duration = Duration::from_millis(1);

/// Empty ticks after which the worker parks until the live path wakes it: about 0.1 s
/// without copies. A parked worker costs nothing; the first copy of the next burst wakes
/// it once.
const IDLE_TICKS_BEFORE_PARKING: u32 = 100;

/// The bounded queue of copies between the live path and the worker: lock-free, and the
/// live path wakes the worker only when it has parked (see [`SHADOW_TICK`]).
struct CopyQueue<J> {
    tasks: ArrayQueue<Task<J>>,
    /// The worker is parked and must be woken for the next copy.
    parked: AtomicBool,
    waker: AtomicWaker,
    /// Every runtime clone is gone: no copy will come any more.
    closed: AtomicBool,
}

impl<J> CopyQueue<J> {
    /// Queues a copy; gives it back when the queue is full.
    fn push(&self, task: Task<J>) -> Result<(), Task<J>> {
        self.tasks.push(task)?;
        // Pairs with the fence in `park`: either the worker sees the copy before parking,
        // or the live path sees it parked and wakes it.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
        Ok(())
    }

    /// Waits until a copy is queued or the queue is closed.
    async fn park(&self) {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            self.parked.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.tasks.is_empty() && !self.closed.load(Ordering::SeqCst) {
                Poll::Pending
            } else {
                self.parked.store(false, Ordering::SeqCst);
                Poll::Ready(())
            }
        })
        .await;
    }
}

/// A copy waiting for a worker.
struct Task<J> {
    job: J,
    route: Arc<str>,
    request_bytes: u64,
    live: Option<oneshot::Receiver<ResponseSummary>>,
}

/// The part of shadowlib an HTTP adapter calls for every request. Cheap to clone.
///
/// `J` is the adapter's shadow job: a future that sends one copy to the candidate and
/// summarizes its response. The runtime never looks inside it; it queues it, runs it on a
/// worker under the timeout with panics caught, and records the result. For each request
/// the adapter:
///
/// 1. builds a [`RequestHead`] and calls [`ShadowRuntime::route`] for the build to call
///    and, when the request is a read going to stable, a [`MirrorTicket`];
/// 2. calls the chosen build and reports the result with [`ShadowRuntime::record_live`];
/// 3. with a ticket, copies the request (headers through
///    [`ShadowConfig::header_policy`]), observes the live response through
///    [`MirrorTicket::observe_live`], and [submits](MirrorTicket::submit) the job once the
///    body copy is complete — never waiting for the shadow.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use shadowlib::mirror::*;
/// use shadowlib::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (stable, candidate) = (Version::new("api", "1"), Version::new("api", "2"));
/// let recorder = Arc::new(KpiRecorder::new(stable.clone(), candidate.clone()));
/// let steerer = Arc::new(WeightedSteerer::new());
/// let controller = RolloutController::new(stable, candidate, RolloutPolicy::default(),
///     ThresholdPredictor::default(), steerer.clone())?;
/// controller.handle().start()?; // shadowing: reads are mirrored
///
/// type Job = std::future::Ready<ShadowResult>;
/// let (runtime, worker) =
///     ShadowRuntime::<Job>::new(ShadowConfig::new(), steerer, &controller.handle(), recorder.clone())?;
/// tokio::spawn(worker.run());
///
/// let headers = HeaderList::default();
/// let route = runtime.route(&RequestHead::new("GET", "/items", &headers));
/// assert_eq!(route.arm, Arm::Stable);
/// let mut ticket = route.mirror.expect("a read during shadowing is mirrored");
/// let live = ticket.observe_live();
/// let shadow = ShadowReply { response: ResponseSummary::new(200), latency: Duration::from_millis(1) };
/// assert!(ticket.submit(0, std::future::ready(Ok(shadow))));
/// live.head(200, &headers).finish(); // the live response, as the adapter saw it
///
/// while runtime.stats().counts().compared == 0 {
///     tokio::task::yield_now().await;
/// }
/// assert_eq!(runtime.stats().counts().mismatched, 0);
/// assert!(runtime.route(&RequestHead::new("POST", "/items", &headers)).mirror.is_none());
/// # Ok(()) }
/// ```
pub struct ShadowRuntime<J> {
    inner: Arc<Inner<J>>,
}

impl<J> Clone for ShadowRuntime<J> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// The build chosen for a request, and its ticket to the shadow if it gets one.
pub struct Route<J> {
    /// The build that serves the request.
    pub arm: Arm,
    /// Present when the request is a read going to stable while the rollout shadows.
    pub mirror: Option<MirrorTicket<J>>,
}

impl<J> ShadowRuntime<J>
where
    J: Future<Output = ShadowResult>,
{
    /// A runtime following `rollout`'s phase and routing with `steerer` (the one the
    /// controller drives), recording into `recorder` (the one the controller reads).
    ///
    /// Returns the shadow's worker for the adapter to spawn on its executor. It ends when
    /// the last clone of the runtime is dropped and the copies in flight are done.
    pub fn new(
        config: ShadowConfig,
        steerer: Arc<dyn TrafficSteerer>,
        rollout: &RolloutHandle,
        recorder: Arc<KpiRecorder>,
    ) -> Result<(Self, ShadowWorker<J>), BudgetError> {
        config.budget.validate()?;
        let queue = Arc::new(CopyQueue {
            tasks: ArrayQueue::new(config.budget.queue_capacity),
            parked: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
        });
        let shared_max_routes = config.max_routes;
        let shared = Arc::new(Shared {
            stats: Arc::new(ShadowStats::new(config.max_routes)),
            config,
            recorder,
            recycled: Arc::new(ArrayQueue::new(RECYCLED_SUMMARIES)),
        });
        let worker = ShadowWorker {
            queue: Arc::clone(&queue),
            shared: Arc::clone(&shared),
        };
        let inner = Arc::new(Inner {
            shared,
            steerer,
            status: rollout.watch(),
            queue,
            labels: RouteLabels::new(shared_max_routes),
        });
        Ok((Self { inner }, worker))
    }

    fn phase(&self) -> Phase {
        self.inner.status.borrow().phase
    }

    /// Picks the build for a request, and decides whether it is mirrored.
    ///
    /// * The override header, when configured and not rolled back, wins.
    /// * Otherwise the steerer picks, by the sticky key when the request carries one.
    /// * A request going to stable while the rollout is shadowing, in canary or paused,
    ///   that the classifier calls a read, gets a [`MirrorTicket`].
    pub fn route(&self, head: &RequestHead<'_>) -> Route<J> {
        let shared = &self.inner.shared;
        let config = &shared.config;
        // Read at most once per request: the phase is behind a lock shared with the controller.
        let mut phase = None;
        let mut phase = || *phase.get_or_insert_with(|| self.phase());
        let overridden = config
            .arm_override
            .as_ref()
            .and_then(|o| o.requested(head.headers))
            .filter(|_| phase() != Phase::RolledBack);
        let arm = match overridden {
            Some(arm) => {
                ShadowStats::bump(&shared.stats.overridden);
                arm
            }
            None => {
                let key = config.sticky.as_ref().and_then(|k| k.extract(head.headers));
                self.inner.steerer.pick(key)
            }
        };
        if arm == Arm::Candidate || !phase().is_live() {
            return Route { arm, mirror: None };
        }
        if !config.classifier.classify(head).is_read() {
            ShadowStats::bump(&shared.stats.not_read);
            return Route { arm, mirror: None };
        }
        let ticket = MirrorTicket {
            runtime: self.clone(),
            route: self.inner.labels.label(config, head.method, head.path),
            live: None,
            settled: false,
        };
        Route {
            arm,
            mirror: Some(ticket),
        }
    }

    /// Records a live request served by `arm`.
    pub fn record_live(
        &self,
        arm: Arm,
        outcome: Outcome,
        latency: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.inner
            .shared
            .recorder
            .record(arm, outcome, latency, request_bytes, response_bytes);
    }

    /// Records a live request the candidate panicked on during canary, and logs the panic's
    /// message (the adapter answers the request with a 500).
    pub fn record_canary_panic(
        &self,
        panic: &(dyn std::any::Any + Send),
        latency: Duration,
        request_bytes: u64,
    ) {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        tracing::error!(
            panic = message,
            "the candidate panicked on a live request; answered 500"
        );
        ShadowStats::bump(&self.inner.shared.stats.canary_panics);
        self.record_live(Arm::Candidate, Outcome::Panic, latency, request_bytes, 0);
    }

    /// The configuration.
    pub fn config(&self) -> &ShadowConfig {
        &self.inner.shared.config
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<ShadowStats> {
        &self.inner.shared.stats
    }

    /// The KPI recorder.
    pub fn recorder(&self) -> &Arc<KpiRecorder> {
        &self.inner.shared.recorder
    }

    /// Copies waiting for a worker now (at most the budget's queue capacity).
    pub fn queued(&self) -> usize {
        self.inner.queue.tasks.len()
    }
}

/// The right of one read to be copied to the shadow.
///
/// Settle it exactly once: [`submit`](Self::submit) the job, or
/// [`skip_oversize`](Self::skip_oversize). Dropping it unsettled counts the read as
/// skipped because its body was never read to the end (the live handler answered without
/// reading it, or the client went away): a copy is only made of what the live handler
/// read, so the live request is never delayed for the copy's sake.
pub struct MirrorTicket<J> {
    runtime: ShadowRuntime<J>,
    route: Arc<str>,
    live: Option<oneshot::Receiver<ResponseSummary>>,
    settled: bool,
}

impl<J> MirrorTicket<J>
where
    J: Future<Output = ShadowResult>,
{
    /// The largest request body that may be copied, in bytes.
    pub fn body_limit(&self) -> usize {
        self.runtime.config().body_limit
    }

    /// The ticket back if a body of this size may be copied; otherwise the read is
    /// counted as skipped for size and `None` is returned.
    pub fn admit(self, size: BodySize) -> Option<Self> {
        if size.exceeds(self.body_limit()) {
            self.skip_oversize();
            None
        } else {
            Some(self)
        }
    }

    /// Gives up: the body turned out larger than the limit while it was copied.
    pub fn skip_oversize(mut self) {
        self.settled = true;
        ShadowStats::bump(&self.runtime.inner.shared.stats.skipped_oversize);
    }

    /// Starts observing the live response, to compare the shadow's with. Call it once;
    /// without it the shadow's response is recorded but not compared.
    pub fn observe_live(&mut self) -> LiveObserver {
        let (sender, receiver) = oneshot::channel();
        self.live = Some(receiver);
        LiveObserver {
            sender,
            capture: self.capture(),
        }
    }

    /// How the shadow job should capture the candidate's response.
    pub fn capture(&self) -> ResponseCapture {
        let config = self.runtime.config();
        ResponseCapture {
            headers: Arc::clone(&config.compared_headers),
            limit: config.body_limit,
            recycled: Arc::clone(&self.runtime.inner.shared.recycled),
        }
    }

    /// Hands the job to the shadow without waiting. Returns whether it was queued; when
    /// the queue is full it is dropped, counted, and recorded as shed on the candidate.
    pub fn submit(mut self, request_bytes: u64, job: J) -> bool {
        self.settled = true;
        let task = Task {
            job,
            route: Arc::clone(&self.route),
            request_bytes,
            live: self.live.take(),
        };
        let shared = &self.runtime.inner.shared;
        match self.runtime.inner.queue.push(task) {
            Ok(()) => {
                ShadowStats::bump(&shared.stats.mirrored);
                true
            }
            Err(_full_or_closed) => {
                ShadowStats::bump(&shared.stats.dropped_queue_full);
                shared.recorder.record(
                    Arm::Candidate,
                    Outcome::Shed,
                    Duration::ZERO,
                    request_bytes,
                    0,
                );
                false
            }
        }
    }
}

impl<J> Drop for MirrorTicket<J> {
    fn drop(&mut self) {
        if !self.settled {
            ShadowStats::bump(&self.runtime.inner.shared.stats.skipped_unread_body);
        }
    }
}

/// How a response is captured for comparison: the compared headers and the body limit.
#[derive(Clone)]
pub struct ResponseCapture {
    headers: Arc<[String]>,
    limit: usize,
    recycled: Recycled,
}

impl fmt::Debug for ResponseCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCapture")
            .field("headers", &self.headers)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl ResponseCapture {
    /// The summary of a response head: status and compared headers, no body yet.
    pub fn head(&self, status: u16, headers: &dyn HeaderView) -> ResponseSummary {
        let mut summary = self.recycled.pop().unwrap_or_default();
        summary.refill(status, |push| {
            for name in self.headers.iter() {
                headers.each_value(name, &mut |value| push(name, value));
            }
        });
        summary
    }

    /// The summary of a response head, and a body capture reusing its body's buffer.
    fn head_and_body(
        &self,
        status: u16,
        headers: &dyn HeaderView,
    ) -> (ResponseSummary, BodyCapture) {
        let mut summary = self.head(status, headers);
        let body = BodyCapture::reusing(self.limit, std::mem::take(&mut summary.body));
        (summary, body)
    }

    /// An empty body capture with the limit.
    pub fn body(&self) -> BodyCapture {
        BodyCapture::new(self.limit)
    }
}

/// Watches the live response of a mirrored read until its head is known.
#[derive(Debug)]
pub struct LiveObserver {
    sender: oneshot::Sender<ResponseSummary>,
    capture: ResponseCapture,
}

impl LiveObserver {
    /// The live response head arrived.
    pub fn head(self, status: u16, headers: &dyn HeaderView) -> LiveBodyObserver {
        let (summary, body) = self.capture.head_and_body(status, headers);
        LiveBodyObserver {
            summary,
            body,
            sender: self.sender,
        }
    }
}

/// Watches the live response body of a mirrored read. Dropping it before
/// [`finish`](Self::finish) means the live response was not seen whole: no comparison.
#[derive(Debug)]
pub struct LiveBodyObserver {
    sender: oneshot::Sender<ResponseSummary>,
    summary: ResponseSummary,
    body: BodyCapture,
}

impl LiveBodyObserver {
    /// A chunk of the live body went to the client.
    pub fn chunk(&mut self, bytes: &[u8]) {
        self.body.push(bytes);
    }

    /// The live body ended: hands the summary to the shadow worker for comparison.
    pub fn finish(mut self) {
        self.summary.set_body(self.body);
        // The worker may have given up waiting (timeout) or the runtime may be gone;
        // then there is nobody to compare with, which the worker has already counted.
        let _ = self.sender.send(self.summary);
    }
}

/// The shadow's worker: one task that takes copies from the queue and runs up to
/// [`ShadowBudget::concurrency`](crate::budget::ShadowBudget) of them at once, each under
/// the timeout with panics caught. Spawn it with `tokio::spawn(worker.run())` (or
/// `spawn_local` where the jobs are not `Send`).
///
/// One task, however many copies: the shadow never occupies more than one thread at a
/// time, whatever the live load, and a copy costs the live path no wake-up of another
/// thread unless the worker has been idle long enough to park (see [`SHADOW_TICK`]).
pub struct ShadowWorker<J> {
    queue: Arc<CopyQueue<J>>,
    shared: Arc<Shared>,
}

impl<J> ShadowWorker<J>
where
    J: Future<Output = ShadowResult>,
{
    /// Runs copies until the runtime is dropped and the last copy is done.
    ///
    /// While copies keep coming the worker takes them from the queue every
    /// [tick](SHADOW_TICK) (and whenever a copy it runs finishes); after about 0.1 s
    /// without any it parks, and the next copy wakes it.
    pub async fn run(self) {
        let concurrency = self.shared.config.budget.concurrency;
        let queue = &*self.queue;
        let mut running = FuturesUnordered::new();
        let mut awaiting = Vec::new();
        let mut idle_ticks = 0;
        loop {
            while running.len() < concurrency {
                match queue.tasks.pop() {
                    Some(task) => running.push(execute(&self.shared, task)),
                    None => break,
                }
            }
            let waiting = settle_awaiting(&self.shared, &mut awaiting);
            let busy = !running.is_empty() || waiting;
            if !busy && queue.closed.load(Ordering::SeqCst) && queue.tasks.is_empty() {
                return;
            }
            if running.len() >= concurrency {
                awaiting.extend(running.next().await.flatten());
                continue;
            }
            let park = !busy && idle_ticks >= IDLE_TICKS_BEFORE_PARKING;
            let wait_for_copies = async {
                if park {
                    queue.park().await;
                } else {
                    tokio::time::sleep(SHADOW_TICK).await;
                }
            };
            tokio::select! {
                // Finishing copies first frees room for the next ones.
                biased;
                Some(done) = running.next(), if !running.is_empty() => awaiting.extend(done),
                () = wait_for_copies => {
                    idle_ticks = if queue.tasks.is_empty() && !busy {
                        idle_ticks.saturating_add(1)
                    } else {
                        0
                    };
                }
            }
        }
    }
}

/// Runs one copy under the timeout, records its outcome and compares its response; when
/// the live response is not there yet, returns the shadow's to compare later.
async fn execute<J>(shared: &Shared, task: Task<J>) -> Option<AwaitingLive>
where
    J: Future<Output = ShadowResult>,
{
    let Shared {
        config,
        recorder,
        stats,
        ..
    } = shared;
    let timeout = config.budget.timeout;
    let started = Instant::now();
    let job = IN_SHADOW.scope((), AssertUnwindSafe(task.job).catch_unwind());
    let reply = match tokio::time::timeout(timeout, job).await {
        Err(_elapsed) => {
            ShadowStats::bump(&stats.timed_out);
            recorder.record(
                Arm::Candidate,
                Outcome::Timeout,
                started.elapsed(),
                task.request_bytes,
                0,
            );
            return None;
        }
        Ok(Err(_panic)) => {
            ShadowStats::bump(&stats.panicked);
            recorder.record(
                Arm::Candidate,
                Outcome::Panic,
                started.elapsed(),
                task.request_bytes,
                0,
            );
            return None;
        }
        Ok(Ok(Err(ShadowError(why)))) => {
            tracing::debug!(route = %task.route, %why, "shadow request failed");
            ShadowStats::bump(&stats.failed);
            recorder.record(
                Arm::Candidate,
                Outcome::ServerError,
                started.elapsed(),
                task.request_bytes,
                0,
            );
            return None;
        }
        Ok(Ok(Ok(reply))) => reply,
    };
    ShadowStats::bump(&stats.completed);
    let response = &reply.response;
    recorder.record(
        Arm::Candidate,
        Outcome::from_http_status(response.status),
        reply.latency,
        task.request_bytes,
        response.body_len,
    );
    let Some(mut live) = task.live else {
        ShadowStats::bump(&stats.comparison_missed);
        return None;
    };
    match live.try_recv() {
        Ok(live) => {
            compare(shared, &task.route, live, reply.response);
            None
        }
        Err(TryRecvError::Closed) => {
            ShadowStats::bump(&stats.comparison_missed);
            None
        }
        Err(TryRecvError::Empty) => Some(AwaitingLive {
            route: task.route,
            shadow: reply.response,
            live,
            deadline: Instant::now() + timeout,
        }),
    }
}

/// A shadow response done before the live one it is compared with.
///
/// The worker looks for the live response every [tick](SHADOW_TICK) rather than
/// awaiting it: awaiting would make the live side wake the shadow's thread when it
/// finishes, a futex call on the live request's thread. Such comparisons come up to a
/// tick later, and do not hold one of the budget's concurrent copies meanwhile.
struct AwaitingLive {
    route: Arc<str>,
    shadow: ResponseSummary,
    live: oneshot::Receiver<ResponseSummary>,
    /// The live response is given up after the budget's timeout, as a copy would be.
    deadline: Instant,
}

/// Compares the shadow responses whose live response has arrived; keeps the others
/// until their deadline. Returns whether any are still waiting.
fn settle_awaiting(shared: &Shared, awaiting: &mut Vec<AwaitingLive>) -> bool {
    let now = Instant::now();
    let mut index = 0;
    while index < awaiting.len() {
        let pair = &mut awaiting[index];
        let live = match pair.live.try_recv() {
            Err(TryRecvError::Empty) if now < pair.deadline => {
                index += 1;
                continue;
            }
            Ok(live) => Some(live),
            Err(_) => None,
        };
        let pair = awaiting.swap_remove(index);
        match live {
            Some(live) => compare(shared, &pair.route, live, pair.shadow),
            None => ShadowStats::bump(&shared.stats.comparison_missed),
        }
    }
    !awaiting.is_empty()
}

/// Compares a live response with the shadow's and records the result.
fn compare(shared: &Shared, route: &str, live: ResponseSummary, shadow: ResponseSummary) {
    let Shared {
        config,
        recorder,
        stats,
        recycled,
    } = shared;
    // A comparator is application code too: its panic must not take the worker down.
    let compared = std::panic::catch_unwind(AssertUnwindSafe(|| {
        config.comparator.compare(route, &live, &shadow)
    }));
    let Ok(comparison) = compared else {
        tracing::error!(route, "the response comparator panicked; pair not compared");
        ShadowStats::bump(&stats.comparison_missed);
        return;
    };
    if let Some(why) = &comparison.not_comparable {
        tracing::debug!(route, why, "pair not comparable");
        ShadowStats::bump(&stats.not_comparable);
    } else {
        if comparison.mismatched() {
            tracing::debug!(route, differences = ?comparison.differences, "shadow response differs");
        }
        recorder.record_comparison(comparison.mismatched());
        stats.record_comparison(route, comparison.mismatched());
    }
    // A full pool frees the rest: it only has to cover the copies in flight.
    let _ = recycled.push(live);
    let _ = recycled.push(shadow);
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use super::*;
    use crate::budget::ShadowBudget;
    use crate::mirror::HeaderList;
    use crate::{
        RolloutController, RolloutPolicy, Share, ThresholdPredictor, Version, WeightedSteerer,
    };

    type Job = Pin<Box<dyn Future<Output = ShadowResult> + Send>>;

    struct Fixture {
        runtime: ShadowRuntime<Job>,
        worker: ShadowWorker<Job>,
        handle: RolloutHandle,
        steerer: Arc<WeightedSteerer>,
        recorder: Arc<KpiRecorder>,
    }

    fn fixture(config: ShadowConfig) -> Fixture {
        let (stable, candidate) = (Version::new("t", "1"), Version::new("t", "2"));
        let recorder = Arc::new(KpiRecorder::new(stable.clone(), candidate.clone()));
        let steerer = Arc::new(WeightedSteerer::new());
        let controller = RolloutController::new(
            stable,
            candidate,
            RolloutPolicy::default(),
            ThresholdPredictor::default(),
            Arc::clone(&steerer),
        )
        .expect("default policy is valid");
        let handle = controller.handle();
        handle.start().expect("idle rollouts start");
        let (runtime, worker) =
            ShadowRuntime::new(config, steerer.clone(), &handle, Arc::clone(&recorder))
                .expect("valid budget");
        Fixture {
            runtime,
            worker,
            handle,
            steerer,
            recorder,
        }
    }

    fn get(runtime: &ShadowRuntime<Job>, headers: &HeaderList<'_>) -> Route<Job> {
        runtime.route(&RequestHead::new("GET", "/r", headers))
    }

    fn reply(status: u16) -> ShadowResult {
        Ok(ShadowReply {
            response: ResponseSummary::new(status),
            latency: Duration::from_millis(1),
        })
    }

    fn budget(queue_capacity: usize, concurrency: usize) -> ShadowConfig {
        ShadowConfig::new().with_budget(ShadowBudget {
            queue_capacity,
            concurrency,
            timeout: Duration::from_secs(1),
        })
    }

    async fn settle(
        runtime: &ShadowRuntime<Job>,
        done: impl Fn(&super::super::ShadowCounts) -> bool,
    ) {
        for _ in 0..10_000 {
            if done(&runtime.stats().counts()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("shadow never settled: {:?}", runtime.stats().counts());
    }

    #[tokio::test(start_paused = true)]
    async fn hung_copies_time_out_and_a_full_queue_drops() {
        let f = fixture(budget(2, 1));
        tokio::spawn(f.worker.run());
        let headers = HeaderList::default();
        let mut queued = 0;
        for _ in 0..5 {
            let ticket = get(&f.runtime, &headers).mirror.expect("a read");
            queued += usize::from(ticket.submit(0, Box::pin(futures::future::pending())));
            assert!(f.runtime.queued() <= 2);
            // Let the worker's next look at the queue pick up the first copy before the
            // next arrives.
            tokio::time::sleep(SHADOW_TICK * 2).await;
        }
        assert_eq!(queued, 3, "one running and two waiting; the rest dropped");
        settle(&f.runtime, |c| c.timed_out == 3).await;
        let counts = f.runtime.stats().counts();
        assert_eq!(
            (counts.mirrored, counts.dropped_queue_full, counts.completed),
            (3, 2, 0)
        );
        let candidate = f.recorder.snapshot(Arm::Candidate);
        assert_eq!(candidate.outcomes.timeout, 3);
        assert_eq!(candidate.outcomes.shed, 2);
    }

    #[tokio::test]
    async fn panics_are_recorded_and_the_worker_survives() {
        let f = fixture(budget(8, 1));
        tokio::spawn(f.worker.run());
        let headers = HeaderList::default();
        let panicking: Job = Box::pin(async { panic!("candidate bug") });
        assert!(
            get(&f.runtime, &headers)
                .mirror
                .expect("a read")
                .submit(0, panicking)
        );
        let fine: Job = Box::pin(async { reply(200) });
        assert!(
            get(&f.runtime, &headers)
                .mirror
                .expect("a read")
                .submit(0, fine)
        );
        settle(&f.runtime, |c| c.panicked == 1 && c.completed == 1).await;
        assert_eq!(f.recorder.snapshot(Arm::Candidate).outcomes.panic, 1);
    }

    #[tokio::test]
    async fn jobs_run_inside_the_shadow_scope_and_are_compared() {
        let f = fixture(ShadowConfig::new());
        tokio::spawn(f.worker.run());
        let headers = HeaderList(vec![("content-type", b"text/plain".as_slice())]);
        let mut ticket = get(&f.runtime, &headers).mirror.expect("a read");
        let live = ticket.observe_live();
        let capture = ticket.capture();
        let job: Job = Box::pin(async move {
            let status = if in_shadow() { 200 } else { 599 };
            let mut body = capture.body();
            body.push(b"hello");
            let shadow_headers = HeaderList(vec![("content-type", b"text/html".as_slice())]);
            Ok(ShadowReply {
                response: capture.head(status, &shadow_headers).with_body(body),
                latency: Duration::from_millis(1),
            })
        });
        assert!(ticket.submit(5, job));
        let mut live = live.head(200, &headers);
        live.chunk(b"hello");
        live.finish();
        settle(&f.runtime, |c| c.compared == 1).await;
        assert_eq!(
            f.runtime.stats().counts().mismatched,
            1,
            "content-type differs"
        );
        assert_eq!(
            f.runtime.stats().route_comparisons()["GET /r"].mismatched,
            1
        );
        let candidate = f.recorder.snapshot(Arm::Candidate);
        assert_eq!(
            (
                candidate.outcomes.success,
                candidate.request_bytes,
                candidate.response_bytes
            ),
            (1, 5, 5)
        );
        assert_eq!(candidate.comparisons.mismatched, 1);
    }

    #[tokio::test]
    async fn a_shadow_waiting_for_its_live_response_does_not_hold_a_copy_slot() {
        let f = fixture(budget(8, 1));
        tokio::spawn(f.worker.run());
        let headers = HeaderList::default();
        let mut first = get(&f.runtime, &headers).mirror.expect("a read");
        let first_live = first.observe_live().head(200, &headers);
        assert!(first.submit(0, Box::pin(async { reply(200) })));
        settle(&f.runtime, |c| c.completed == 1).await;

        // With one copy at a time, the second runs while the first waits for live.
        let mut second = get(&f.runtime, &headers).mirror.expect("a read");
        let second_live = second.observe_live();
        assert!(second.submit(0, Box::pin(async { reply(200) })));
        second_live.head(200, &headers).finish();
        settle(&f.runtime, |c| c.compared == 1).await;

        first_live.finish();
        settle(&f.runtime, |c| c.compared == 2).await;
        assert_eq!(f.runtime.stats().counts().comparison_missed, 0);
    }

    struct PanickingComparator;

    impl crate::mirror::CompareResponses for PanickingComparator {
        fn compare(
            &self,
            _: &str,
            _: &ResponseSummary,
            _: &ResponseSummary,
        ) -> crate::mirror::Comparison {
            panic!("comparator bug")
        }
    }

    #[tokio::test]
    async fn a_panicking_comparator_does_not_stop_the_worker() {
        let f = fixture(ShadowConfig::new().with_comparator(PanickingComparator));
        tokio::spawn(f.worker.run());
        let headers = HeaderList::default();
        for expected in 1..=2 {
            let mut ticket = get(&f.runtime, &headers).mirror.expect("a read");
            let live = ticket.observe_live();
            assert!(ticket.submit(0, Box::pin(async { reply(200) })));
            live.head(200, &headers).finish();
            settle(&f.runtime, |c| c.comparison_missed == expected).await;
        }
        assert_eq!(f.runtime.stats().counts().completed, 2);
    }

    struct NeverComparable;

    impl crate::mirror::CompareResponses for NeverComparable {
        fn compare(
            &self,
            _: &str,
            _: &ResponseSummary,
            _: &ResponseSummary,
        ) -> crate::mirror::Comparison {
            crate::mirror::Comparison::not_comparable("shadow state ahead of live")
        }
    }

    #[tokio::test]
    async fn pairs_judged_not_comparable_are_neither_matches_nor_mismatches() {
        let f = fixture(ShadowConfig::new().with_comparator(NeverComparable));
        tokio::spawn(f.worker.run());
        let headers = HeaderList::default();
        let mut ticket = get(&f.runtime, &headers).mirror.expect("a read");
        let live = ticket.observe_live();
        assert!(ticket.submit(0, Box::pin(async { reply(500) })));
        live.head(200, &headers).finish();
        settle(&f.runtime, |c| c.not_comparable == 1).await;
        let counts = f.runtime.stats().counts();
        assert_eq!((counts.compared, counts.mismatched), (0, 0));
        assert_eq!(f.recorder.snapshot(Arm::Candidate).comparisons.compared, 0);
    }

    #[tokio::test]
    async fn unsettled_tickets_and_oversize_bodies_are_counted() {
        let f = fixture(ShadowConfig::new().with_body_limit(10));
        let headers = HeaderList::default();
        drop(get(&f.runtime, &headers).mirror);
        let ticket = get(&f.runtime, &headers).mirror.expect("a read");
        assert!(ticket.admit(BodySize::Exact(11)).is_none());
        let ticket = get(&f.runtime, &headers).mirror.expect("a read");
        let ticket = ticket.admit(BodySize::AtLeast(10)).expect("may still fit");
        ticket.skip_oversize();
        let counts = f.runtime.stats().counts();
        assert_eq!(
            (
                counts.skipped_unread_body,
                counts.skipped_oversize,
                counts.mirrored
            ),
            (1, 2, 0)
        );
    }

    #[tokio::test]
    async fn writes_candidates_and_finished_rollouts_are_never_mirrored() {
        let config = ShadowConfig::new()
            .with_override_header("x-arm")
            .expect("valid name");
        let f = fixture(config);
        let none = HeaderList::default();
        assert!(
            f.runtime
                .route(&RequestHead::new("DELETE", "/r", &none))
                .mirror
                .is_none()
        );
        assert_eq!(f.runtime.stats().counts().not_read, 1);

        let forced = HeaderList(vec![("x-arm", b"candidate".as_slice())]);
        let route = get(&f.runtime, &forced);
        assert_eq!(route.arm, Arm::Candidate);
        assert!(
            route.mirror.is_none(),
            "requests served by the candidate are not copied to it"
        );

        f.steerer.set_share(Share::FULL);
        assert_eq!(get(&f.runtime, &none).arm, Arm::Candidate);

        f.handle.abort("test").expect("live rollouts abort");
        let route = get(&f.runtime, &forced);
        assert_eq!(
            route.arm,
            Arm::Stable,
            "the override is ignored after a rollback"
        );
        assert!(
            route.mirror.is_none(),
            "nothing is mirrored after a rollback"
        );
        assert_eq!(f.runtime.stats().counts().overridden, 1);
    }

    #[tokio::test]
    async fn sticky_keys_pick_consistently() {
        let f = fixture(
            ShadowConfig::new()
                .with_sticky_key(crate::mirror::StickyKey::header("x-user").expect("valid")),
        );
        f.steerer
            .set_share(Share::from_percent(50.0).expect("valid"));
        for user in 0..50 {
            let id = user.to_string();
            let headers = HeaderList(vec![("x-user", id.as_bytes())]);
            let expected = f.steerer.pick(Some(id.as_bytes()));
            for _ in 0..3 {
                assert_eq!(get(&f.runtime, &headers).arm, expected);
            }
        }
    }

    #[tokio::test]
    async fn the_worker_ends_when_the_runtime_is_dropped() {
        let f = fixture(ShadowConfig::new());
        let worker = tokio::spawn(f.worker.run());
        drop(f.runtime);
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("worker ended")
            .expect("worker did not panic");
    }
}
