//! The framework-neutral runtime both HTTP adapters drive: routing, the hand-off to the
//! shadow, the shadow's worker, and the recording of what happened.
//!
//! The live path's share of a copy is kept to copying bytes into a reused
//! [`RequestCopy`] and a push onto a lock-free queue: it never wakes the shadow's thread
//! while the shadow is busy or only between copies (see [`SHADOW_TICK`]), never waits for
//! it, and in a steady state allocates nothing for it. The request the candidate takes is
//! built from the copy on the shadow's worker ([`ShadowWorker::run`]).

use std::fmt;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
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
use tokio::time::Instant;

use super::copy::{CopySlot, LiveProgress, LiveSide, SlotPool};
use super::labels::RouteLabels;
use super::stats::ShadowStats;
use super::{
    BodyCapture, BodySize, HeaderView, HttpVersion, RequestCopy, RequestHead, ResponseSummary,
    ShadowConfig,
};
use crate::budget::BudgetError;
use crate::{Arm, KpiRecorder, Outcome, Phase, RolloutHandle, Share, TrafficSteerer};

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

impl ShadowError {
    /// The copy could not be made into a request for the candidate: `part` (method,
    /// target, header) is not valid to the adapter's HTTP library, for the reason given.
    ///
    /// ```
    /// use shadowlib::mirror::ShadowError;
    ///
    /// let error = ShadowError::invalid_copy("target", "spaces are not allowed");
    /// assert_eq!(error.0, "the copy's target is not valid HTTP: spaces are not allowed");
    /// ```
    pub fn invalid_copy(part: &str, reason: impl fmt::Display) -> Self {
        Self(format!("the copy's {part} is not valid HTTP: {reason}"))
    }
}

/// What a shadow job resolves to.
pub type ShadowResult = Result<ShadowReply, ShadowError>;

/// What the live path and the worker share.
struct Shared {
    config: ShadowConfig,
    recorder: Arc<KpiRecorder>,
    stats: Arc<ShadowStats>,
    /// Its own allocation: the live path clones it per mirrored read, and its reference
    /// count must not share a cache line with what the worker reads.
    slots: Arc<SlotPool>,
    /// The shadow's response summaries the worker has compared, kept for the next ones
    /// (only the worker's thread makes and frees them).
    recycled: Recycled,
}

type Recycled = Arc<ArrayQueue<ResponseSummary>>;

/// Shadow response summaries kept for reuse at most; more are freed.
const RECYCLED_SUMMARIES: usize = 256;

struct Inner {
    shared: Arc<Shared>,
    steerer: Arc<dyn TrafficSteerer>,
    rollout: RolloutHandle,
    queue: Arc<CopyQueue>,
}

impl Drop for Inner {
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
struct CopyQueue {
    tasks: ArrayQueue<Task>,
    /// The worker is parked and must be woken for the next copy.
    parked: AtomicBool,
    waker: AtomicWaker,
    /// Every runtime clone is gone: no copy will come any more.
    closed: AtomicBool,
}

impl CopyQueue {
    /// Queues a copy; gives it back when the queue is full.
    fn push(&self, task: Task) -> Result<(), Task> {
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
struct Task {
    slot: Arc<CopySlot>,
    /// Whether the live response is observed, so there is something to compare with.
    observed: bool,
}

/// The part of shadowlib an HTTP adapter calls for every request. Cheap to clone.
///
/// For each request the adapter:
///
/// 1. builds a [`RequestHead`] and calls [`ShadowRuntime::route`] for the build to call
///    and, when the request is a read going to stable, a [`MirrorTicket`];
/// 2. calls the chosen build and reports the response with
///    [`ShadowRuntime::live_response`];
/// 3. with a ticket, copies the request into it ([`MirrorTicket::copy_head`], the body
///    with [`MirrorTicket::copy_body`] as the live handler reads it), observes the live
///    response through [`MirrorTicket::observe_live`], and
///    [submits](MirrorTicket::submit) the copy once the body is complete — never waiting
///    for the shadow.
///
/// The adapter runs the [`ShadowWorker`] with a job maker that turns each
/// [`RequestCopy`] into a call of its candidate, on the shadow's side.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use shadowlib::mirror::*;
/// use shadowlib::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rollout = Rollout::shadow_only(Version::new("api", "1"), Version::new("api", "2"));
/// let (runtime, worker) =
///     ShadowRuntime::new(ShadowConfig::new(), rollout.steerer, &rollout.handle, rollout.recorder)?;
/// // The shadow's side: each copy becomes a call of the candidate (here, an answer).
/// tokio::spawn(worker.run(|copy: &RequestCopy, _capture| {
///     let status = if copy.target() == "/items?page=2" { 200 } else { 404 };
///     std::future::ready(Ok(ShadowReply {
///         response: ResponseSummary::new(status),
///         latency: Duration::from_millis(1),
///     }))
/// }));
///
/// // The live side.
/// let headers = HeaderList::default();
/// let head = RequestHead::new("GET", "/items", &headers);
/// let route = runtime.route(&head);
/// assert_eq!(route.arm, Arm::Stable);
/// let mut ticket = route.mirror.expect("a read during shadowing is mirrored");
/// ticket.copy_head(&head, "/items?page=2", HttpVersion::Http11, None);
/// let live = ticket.observe_live();
/// assert!(ticket.submit());
/// live.head(200, &headers).finish(); // the live response, as the adapter saw it
///
/// while runtime.stats().counts().compared == 0 {
///     tokio::task::yield_now().await;
/// }
/// assert_eq!(runtime.stats().counts().mismatched, 0);
/// assert!(runtime.route(&RequestHead::new("POST", "/items", &headers)).mirror.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ShadowRuntime {
    inner: Arc<Inner>,
}

/// The build chosen for a request, and its ticket to the shadow if it gets one.
pub struct Route {
    /// The build that serves the request.
    pub arm: Arm,
    /// Present when the request is a read going to stable while the rollout shadows.
    pub mirror: Option<MirrorTicket>,
}

impl ShadowRuntime {
    /// A runtime following `rollout`'s phase and routing with `steerer` (the one the
    /// controller drives), recording into `recorder` (the one the controller reads).
    ///
    /// Returns the shadow's worker for the adapter to run on its executor (see
    /// [`ShadowWorker::run`]). It ends when the last clone of the runtime is dropped and
    /// the copies in flight are done.
    pub fn new(
        config: ShadowConfig,
        steerer: Arc<dyn TrafficSteerer>,
        rollout: &RolloutHandle,
        recorder: Arc<KpiRecorder>,
    ) -> Result<(Self, ShadowWorker), BudgetError> {
        config.budget.validate()?;
        let queue = Arc::new(CopyQueue {
            tasks: ArrayQueue::new(config.budget.queue_capacity),
            parked: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
        });
        // Enough for every copy queued or running and as many whose live response is
        // still on its way; beyond that a slot is made (and later freed).
        let slots = Arc::new(SlotPool::new(
            config
                .budget
                .queue_capacity
                .saturating_add(config.budget.concurrency)
                .saturating_mul(2),
            Arc::clone(&config.compared_headers),
            config.body_limit,
        ));
        let shared = Arc::new(Shared {
            stats: Arc::new(ShadowStats::new(config.max_routes)),
            config,
            recorder,
            slots,
            recycled: Arc::new(ArrayQueue::new(RECYCLED_SUMMARIES)),
        });
        let worker = ShadowWorker {
            queue: Arc::clone(&queue),
            labels: RouteLabels::new(shared.config.max_routes),
            shared: Arc::clone(&shared),
        };
        let inner = Arc::new(Inner {
            shared,
            steerer,
            rollout: rollout.clone(),
            queue,
        });
        Ok((Self { inner }, worker))
    }

    /// Picks the build for a request, and decides whether it is mirrored.
    ///
    /// * The override header, when configured and not rolled back, wins.
    /// * Otherwise the steerer picks, by the sticky key when the request carries one.
    /// * A request going to stable while the rollout is shadowing, in canary or paused,
    ///   that the classifier calls a read, gets a [`MirrorTicket`].
    pub fn route(&self, head: &RequestHead<'_>) -> Route {
        let shared = &self.inner.shared;
        let config = &shared.config;
        // One atomic load, shared with nobody who writes per request.
        let phase = self.inner.rollout.phase();
        let overridden = config
            .arm_override
            .as_ref()
            .and_then(|o| o.requested(head.headers))
            .filter(|_| phase != Phase::RolledBack);
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
        if arm == Arm::Candidate || !phase.is_live() {
            return Route { arm, mirror: None };
        }
        if !config.classifier.classify(head).is_read() {
            ShadowStats::bump(&shared.stats.not_read);
            return Route { arm, mirror: None };
        }
        let sampled = config.mirror_share.ppm();
        if sampled < Share::PPM_SCALE && rand::random_range(0..Share::PPM_SCALE) >= sampled {
            ShadowStats::bump(&shared.stats.not_sampled);
            return Route { arm, mirror: None };
        }
        let ticket = MirrorTicket {
            runtime: self.clone(),
            slot: Some(shared.slots.take(config.body_limit)),
            observed: false,
            bodiless: is_bodiless(head.method),
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

impl fmt::Debug for ShadowRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowRuntime")
            .field("config", self.config())
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

/// The right of one read to be copied to the shadow, and the copy being made.
///
/// Settle it exactly once: [`submit`](Self::submit) the copy, or
/// [`skip_oversize`](Self::skip_oversize). Dropping it unsettled counts the read as
/// skipped because its body was never read to the end (the live handler answered without
/// reading it, or the client went away): a copy is only made of what the live handler
/// read, so the live request is never delayed for the copy's sake.
pub struct MirrorTicket {
    runtime: ShadowRuntime,
    /// Until settled.
    slot: Option<Arc<CopySlot>>,
    observed: bool,
    /// The responses to this read carry no body (see [`is_bodiless`]).
    bodiless: bool,
}

/// Whether responses to `method` carry no body: those to HEAD never do (RFC 9110,
/// section 9.3.2), whatever the handler returned, and servers may drop that body without
/// reading it. Such pairs are compared on status and headers alone.
fn is_bodiless(method: &str) -> bool {
    method == "HEAD"
}

impl MirrorTicket {
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

    /// Copies the request's head: `head`'s method and headers (through the configured
    /// [`HeaderPolicy`](super::HeaderPolicy): hop-by-hop headers stripped, redactions
    /// applied), the request `target` (path and query, as the candidate is to receive
    /// it), the version and the peer address.
    pub fn copy_head(
        &mut self,
        head: &RequestHead<'_>,
        target: &str,
        version: HttpVersion,
        peer_addr: Option<SocketAddr>,
    ) {
        let policy = self.runtime.config().header_policy();
        if let Some(slot) = &self.slot {
            let mut copy = slot.request();
            copy.fill_head(head, target, policy);
            copy.set_version(version);
            copy.set_peer_addr(peer_addr);
        }
    }

    /// Copies a chunk of the request body as the live handler reads it. Returns whether
    /// the body still fits within the limit; when it does not, give the ticket up with
    /// [`skip_oversize`](Self::skip_oversize).
    pub fn copy_body(&mut self, chunk: &[u8]) -> bool {
        self.slot
            .as_ref()
            .is_some_and(|slot| slot.request().push_body(chunk))
    }

    /// Gives up: the body turned out larger than the limit while it was copied.
    pub fn skip_oversize(mut self) {
        self.release();
        ShadowStats::bump(&self.runtime.inner.shared.stats.skipped_oversize);
    }

    /// Starts observing the live response, to compare the shadow's with. Call it once;
    /// without it the shadow's response is recorded but not compared.
    pub fn observe_live(&mut self) -> LiveObserver {
        self.observed = true;
        LiveObserver {
            watch: self.slot.as_ref().map(|slot| LiveWatch {
                slot: Arc::clone(slot),
                pool: Arc::clone(&self.runtime.inner.shared.slots),
            }),
            bodiless: self.bodiless,
        }
    }

    /// Hands the copy to the shadow without waiting. Returns whether it was queued; when
    /// the queue is full it is dropped, counted, and recorded as shed on the candidate.
    pub fn submit(mut self) -> bool {
        let Some(slot) = self.slot.take() else {
            return false;
        };
        let task = Task {
            slot,
            observed: self.observed,
        };
        let shared = &self.runtime.inner.shared;
        match self.runtime.inner.queue.push(task) {
            Ok(()) => {
                ShadowStats::bump(&shared.stats.mirrored);
                true
            }
            Err(task) => {
                let request_bytes = task.slot.request().body_len();
                shared.slots.give_back(task.slot);
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

    /// Settles the ticket without a copy.
    fn release(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.runtime.inner.shared.slots.give_back(slot);
        }
    }
}

impl fmt::Debug for MirrorTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorTicket")
            .field("observed", &self.observed)
            .field("settled", &self.slot.is_none())
            .finish_non_exhaustive()
    }
}

impl Drop for MirrorTicket {
    fn drop(&mut self) {
        if self.slot.is_some() {
            self.release();
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
    fn of(shared: &Shared) -> Self {
        Self {
            headers: Arc::clone(&shared.config.compared_headers),
            limit: shared.config.body_limit,
            recycled: Arc::clone(&shared.recycled),
        }
    }

    /// The summary of a response head: status and compared headers, no body yet.
    pub fn head(&self, status: u16, headers: &dyn HeaderView) -> ResponseSummary {
        let mut summary = self.recycled.pop().unwrap_or_default();
        fill_summary(&mut summary, &self.headers, status, headers);
        summary
    }

    /// An empty body capture with the limit.
    pub fn body(&self) -> BodyCapture {
        BodyCapture::new(self.limit)
    }
}

/// Makes `summary` the head of a response with `status` and the `compared` headers.
fn fill_summary(
    summary: &mut ResponseSummary,
    compared: &[String],
    status: u16,
    headers: &dyn HeaderView,
) {
    summary.refill(status, |push| {
        for name in compared {
            headers.each_value(name, &mut |value| push(name, value));
        }
    });
}

/// The slot a live response is reported into.
struct LiveWatch {
    slot: Arc<CopySlot>,
    pool: Arc<SlotPool>,
}

impl LiveWatch {
    /// Reports how the live response ended, with `update` applied to it under the same
    /// lock (so the worker never sees one without the other; `update` is given the pool
    /// for the capture settings), and lets the slot go.
    fn end(self, progress: LiveProgress, update: impl FnOnce(&mut LiveSide, &SlotPool)) {
        {
            let mut live = self.slot.live();
            update(&mut live, &self.pool);
            live.progress = progress;
        }
        self.pool.give_back(self.slot);
    }
}

/// Watches the live response of a mirrored read until its head is known. Dropping it
/// means the live response will not be seen: no comparison.
pub struct LiveObserver {
    /// `None` when the ticket was already settled: there is nothing to compare with.
    watch: Option<LiveWatch>,
    /// The response is whole once its head is known.
    bodiless: bool,
}

impl fmt::Debug for LiveObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveObserver")
            .field("watching", &self.watch.is_some())
            .field("bodiless", &self.bodiless)
            .finish()
    }
}

impl LiveObserver {
    /// The live response head arrived. A response to HEAD is whole at its head (it has
    /// no body on the wire, and servers may drop the handler's unread): the observer
    /// returned then watches nothing.
    pub fn head(mut self, status: u16, headers: &dyn HeaderView) -> LiveBodyObserver {
        let Some(watch) = self.watch.take() else {
            return LiveBodyObserver {
                watch: None,
                body: BodyCapture::default(),
            };
        };
        if self.bodiless {
            watch.end(LiveProgress::Seen, |live, pool| {
                live.fill_head(status, pool.compared_headers(), headers);
                live.clear_body();
            });
            return LiveBodyObserver {
                watch: None,
                body: BodyCapture::default(),
            };
        }
        let body = {
            let mut live = watch.slot.live();
            live.fill_head(status, watch.pool.compared_headers(), headers);
            let buffer = std::mem::take(&mut live.body);
            BodyCapture::reusing(watch.pool.body_limit(), buffer)
        };
        LiveBodyObserver {
            watch: Some(watch),
            body,
        }
    }
}

impl Drop for LiveObserver {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.end(LiveProgress::Lost, |_, _| {});
        }
    }
}

/// Watches the live response body of a mirrored read. Dropping it before
/// [`finish`](Self::finish) means the live response was not seen whole: no comparison.
pub struct LiveBodyObserver {
    watch: Option<LiveWatch>,
    body: BodyCapture,
}

impl fmt::Debug for LiveBodyObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveBodyObserver")
            .field("watching", &self.watch.is_some())
            .field("body_len", &self.body.seen())
            .finish()
    }
}

impl LiveBodyObserver {
    /// A chunk of the live body went to the client.
    pub fn chunk(&mut self, bytes: &[u8]) {
        self.body.push(bytes);
    }

    /// The live body ended: hands the response to the shadow's worker for comparison.
    pub fn finish(mut self) {
        self.end(LiveProgress::Seen);
    }

    fn end(&mut self, progress: LiveProgress) {
        let Some(watch) = self.watch.take() else {
            return;
        };
        let body = std::mem::take(&mut self.body);
        watch.end(progress, |live, _| match progress {
            LiveProgress::Seen => live.set_body(body),
            // The buffer is kept for the slot's next read.
            LiveProgress::Awaited | LiveProgress::Lost => live.body = body.into_bytes(),
        });
    }
}

impl Drop for LiveBodyObserver {
    fn drop(&mut self) {
        self.end(LiveProgress::Lost);
    }
}

/// The shadow's worker: one task that takes copies from the queue and runs up to
/// [`ShadowBudget::concurrency`](crate::budget::ShadowBudget) of them at once, each under
/// the timeout with panics caught. Run it with `tokio::spawn(worker.run(make_job))` (or
/// `spawn_local` where the jobs are not `Send`).
///
/// One task, however many copies: the shadow never occupies more than one thread at a
/// time, whatever the live load, and a copy costs the live path no wake-up of another
/// thread unless the worker has been idle long enough to park (see [`SHADOW_TICK`]).
pub struct ShadowWorker {
    queue: Arc<CopyQueue>,
    shared: Arc<Shared>,
    /// Route labels are made here, off the live path, from the copy's method and path.
    labels: RouteLabels,
}

impl fmt::Debug for ShadowWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowWorker")
            .field("queued", &self.queue.tasks.len())
            .finish_non_exhaustive()
    }
}

impl ShadowWorker {
    /// Runs copies until the runtime is dropped and the last copy is done.
    ///
    /// `make_job` turns each copy into the job that sends it to the candidate and
    /// summarizes the response (with the [`ResponseCapture`] it is given); it is called
    /// here, on the worker, so the request the candidate takes is built, used and freed
    /// on the shadow's side. The worker applies the timeout, catches panics, marks the
    /// job as [in the shadow](in_shadow), records the outcome and compares the responses.
    ///
    /// While copies keep coming the worker takes them from the queue every
    /// [tick](SHADOW_TICK) (and whenever a copy it runs finishes); after about 0.1 s
    /// without any it parks, and the next copy wakes it.
    pub async fn run<F, J>(self, mut make_job: F)
    where
        F: FnMut(&RequestCopy, ResponseCapture) -> J,
        J: Future<Output = ShadowResult>,
    {
        let concurrency = self.shared.config.budget.concurrency;
        let capture = ResponseCapture::of(&self.shared);
        let queue = &*self.queue;
        let mut running = FuturesUnordered::new();
        let mut awaiting = Vec::new();
        let mut idle_ticks = 0;
        loop {
            while running.len() < concurrency {
                match queue.tasks.pop() {
                    Some(task) => {
                        let (job, route, request_bytes, bodiless) = {
                            let copy = task.slot.request();
                            let route =
                                self.labels
                                    .label(&self.shared.config, copy.method(), copy.path());
                            let bodiless = is_bodiless(copy.method());
                            let job = make_job(&copy, capture.clone());
                            (job, route, copy.body_len(), bodiless)
                        };
                        let copy = Running {
                            task,
                            route,
                            request_bytes,
                            bodiless,
                        };
                        running.push(execute(&self.shared, copy, job));
                    }
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

/// A copy the worker runs: its task, its route label and the size of its request body.
struct Running {
    task: Task,
    route: Arc<str>,
    request_bytes: u64,
    /// Its response's body, if the candidate sent one, is not compared.
    bodiless: bool,
}

/// Runs one copy under the timeout, records its outcome and compares its response; when
/// the live response is not there yet, returns the shadow's to compare later.
async fn execute<J>(shared: &Shared, copy: Running, job: J) -> Option<AwaitingLive>
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
    let job = IN_SHADOW.scope((), AssertUnwindSafe(job).catch_unwind());
    let failure = match tokio::time::timeout(timeout, job).await {
        Err(_elapsed) => Some((&stats.timed_out, Outcome::Timeout)),
        Ok(Err(_panic)) => Some((&stats.panicked, Outcome::Panic)),
        Ok(Ok(Err(ShadowError(why)))) => {
            tracing::debug!(route = %copy.route, %why, "shadow request failed");
            Some((&stats.failed, Outcome::ServerError))
        }
        Ok(Ok(Ok(mut reply))) => {
            ShadowStats::bump(&stats.completed);
            if copy.bodiless {
                reply.response.clear_body();
            }
            recorder.record(
                Arm::Candidate,
                Outcome::from_http_status(reply.response.status),
                reply.latency,
                copy.request_bytes,
                reply.response.body_len,
            );
            return settle(shared, copy, reply.response, timeout);
        }
    };
    if let Some((counter, outcome)) = failure {
        ShadowStats::bump(counter);
        recorder.record(
            Arm::Candidate,
            outcome,
            started.elapsed(),
            copy.request_bytes,
            0,
        );
    }
    shared.slots.give_back(copy.task.slot);
    None
}

/// Compares an answered copy with its live response if that has been sent whole; keeps
/// it to compare later if not yet.
fn settle(
    shared: &Shared,
    copy: Running,
    shadow: ResponseSummary,
    timeout: Duration,
) -> Option<AwaitingLive> {
    if !copy.task.observed {
        ShadowStats::bump(&shared.stats.comparison_missed);
        let _ = shared.recycled.push(shadow);
        shared.slots.give_back(copy.task.slot);
        return None;
    }
    let now = Instant::now();
    let pair = AwaitingLive {
        slot: copy.task.slot,
        route: copy.route,
        shadow,
        deadline: now + timeout,
    };
    if pair.is_due(now) {
        pair.settle(shared);
        None
    } else {
        Some(pair)
    }
}

/// A shadow response done before the live one it is compared with.
///
/// The worker looks for the live response every [tick](SHADOW_TICK) rather than
/// awaiting it: awaiting would make the live side wake the shadow's thread when it
/// finishes, a futex call on the live request's thread. Such comparisons come up to a
/// tick later, and do not hold one of the budget's concurrent copies meanwhile.
struct AwaitingLive {
    slot: Arc<CopySlot>,
    route: Arc<str>,
    shadow: ResponseSummary,
    /// The live response is given up after the budget's timeout, as a copy would be.
    deadline: Instant,
}

impl AwaitingLive {
    /// Whether the pair can be settled: the live response was sent whole, will never
    /// be, or is past the deadline.
    fn is_due(&self, now: Instant) -> bool {
        now >= self.deadline || self.slot.live().progress != LiveProgress::Awaited
    }

    /// Compares the pair if the live response was sent whole, else counts a miss.
    fn settle(self, shared: &Shared) {
        let mut live = None;
        {
            let captured = self.slot.live();
            if captured.progress == LiveProgress::Seen {
                // Unpacked into a summary of the worker's own, to compare as summaries.
                let mut summary = shared.recycled.pop().unwrap_or_default();
                captured.summarize(&mut summary);
                live = Some(summary);
            }
        }
        shared.slots.give_back(self.slot);
        match live {
            Some(live) => {
                compare(shared, &self.route, &live, &self.shadow);
                // A full pool frees the rest: it only has to cover the copies in flight.
                let _ = shared.recycled.push(live);
            }
            None => ShadowStats::bump(&shared.stats.comparison_missed),
        }
        let _ = shared.recycled.push(self.shadow);
    }
}

/// Compares the shadow responses whose live response has arrived; keeps the others
/// until their deadline. Returns whether any are still waiting.
fn settle_awaiting(shared: &Shared, awaiting: &mut Vec<AwaitingLive>) -> bool {
    let now = Instant::now();
    let mut index = 0;
    while index < awaiting.len() {
        if awaiting[index].is_due(now) {
            awaiting.swap_remove(index).settle(shared);
        } else {
            index += 1;
        }
    }
    !awaiting.is_empty()
}

/// Compares a live response with the shadow's and records the result.
fn compare(shared: &Shared, route: &str, live: &ResponseSummary, shadow: &ResponseSummary) {
    let Shared {
        config,
        recorder,
        stats,
        ..
    } = shared;
    // A comparator is application code too: its panic must not take the worker down.
    let compared = std::panic::catch_unwind(AssertUnwindSafe(|| {
        config.comparator.compare(route, live, shadow)
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
        runtime: ShadowRuntime,
        worker: ShadowWorker,
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

    /// A candidate that behaves as the copy's target says: `/hang` never answers,
    /// `/panic` panics, `/status/N` answers N; anything else answers 200. The body is the
    /// copy's body, with `content-type` from its `x-content-type` header, and the status
    /// is 599 outside the shadow scope.
    fn candidate(copy: &RequestCopy, capture: ResponseCapture) -> Job {
        let target = copy.target().to_owned();
        let body = copy.body().to_vec();
        let content_type = copy.first("x-content-type").map(<[u8]>::to_vec);
        Box::pin(async move {
            match target.as_str() {
                "/hang" => futures::future::pending().await,
                "/panic" => panic!("candidate bug"),
                _ => {}
            }
            let status = target
                .strip_prefix("/status/")
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let status = if in_shadow() { status } else { 599 };
            let headers = HeaderList(
                content_type
                    .iter()
                    .map(|v| ("content-type", v.as_slice()))
                    .collect(),
            );
            let mut copied = capture.body();
            copied.push(&body);
            Ok(ShadowReply {
                response: capture.head(status, &headers).with_body(copied),
                latency: Duration::from_millis(1),
            })
        })
    }

    fn start(worker: ShadowWorker) {
        tokio::spawn(worker.run(candidate));
    }

    /// A mirrored read of `target` carrying `headers`, its head copied.
    fn read(runtime: &ShadowRuntime, target: &str, headers: &HeaderList<'_>) -> MirrorTicket {
        let head = RequestHead::new("GET", "/r", headers);
        let mut ticket = runtime.route(&head).mirror.expect("a read");
        ticket.copy_head(&head, target, HttpVersion::Http11, None);
        ticket
    }

    fn get(runtime: &ShadowRuntime, headers: &HeaderList<'_>) -> Route {
        runtime.route(&RequestHead::new("GET", "/r", headers))
    }

    fn budget(queue_capacity: usize, concurrency: usize) -> ShadowConfig {
        ShadowConfig::new().with_budget(ShadowBudget {
            queue_capacity,
            concurrency,
            timeout: Duration::from_secs(1),
        })
    }

    async fn settle(runtime: &ShadowRuntime, done: impl Fn(&super::super::ShadowCounts) -> bool) {
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
        start(f.worker);
        let headers = HeaderList::default();
        let mut queued = 0;
        for _ in 0..5 {
            queued += usize::from(read(&f.runtime, "/hang", &headers).submit());
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
        start(f.worker);
        let headers = HeaderList::default();
        assert!(read(&f.runtime, "/panic", &headers).submit());
        assert!(read(&f.runtime, "/fine", &headers).submit());
        settle(&f.runtime, |c| c.panicked == 1 && c.completed == 1).await;
        assert_eq!(f.recorder.snapshot(Arm::Candidate).outcomes.panic, 1);
    }

    #[tokio::test]
    async fn jobs_run_inside_the_shadow_scope_and_are_compared() {
        let f = fixture(ShadowConfig::new());
        start(f.worker);
        let headers = HeaderList(vec![
            ("content-type", b"text/plain".as_slice()),
            ("x-content-type", b"text/html".as_slice()),
        ]);
        let mut ticket = read(&f.runtime, "/r", &headers);
        assert!(ticket.copy_body(b"hello"));
        let live = ticket.observe_live();
        assert!(ticket.submit());
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
    async fn copies_reuse_their_slots_and_never_mix_two_reads() {
        let f = fixture(budget(64, 4));
        start(f.worker);
        // More reads than the pool keeps, each with its own status and body, compared
        // with a live response that matches only when the copy went to the right pair.
        for round in 0..300_u16 {
            let status = 200 + round % 50;
            let headers = HeaderList::default();
            let mut ticket = read(&f.runtime, &format!("/status/{status}"), &headers);
            let body = round.to_string();
            assert!(ticket.copy_body(body.as_bytes()));
            let live = ticket.observe_live();
            assert!(ticket.submit());
            let mut live = live.head(status, &headers);
            live.chunk(body.as_bytes());
            live.finish();
            // Let the worker take the queue (capacity 64) before it fills.
            if round % 32 == 31 {
                settle(&f.runtime, |c| c.completed == u64::from(round) + 1).await;
            }
        }
        settle(&f.runtime, |c| c.compared == 300).await;
        let counts = f.runtime.stats().counts();
        assert_eq!((counts.mismatched, counts.comparison_missed), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_from_many_threads_never_mix_two_reads() {
        // Shadow responses wait for live ones that a yield, or a descheduled thread on a
        // loaded machine, holds back for real time: the wait is bounded far beyond any
        // stall, so a missed comparison is a fault, not the machine's speed.
        let f = fixture(ShadowConfig::new().with_budget(ShadowBudget {
            queue_capacity: 4096,
            concurrency: 8,
            timeout: Duration::from_secs(60),
        }));
        start(f.worker);
        let tasks: Vec<_> = (0..4_u16)
            .map(|thread| {
                let runtime = f.runtime.clone();
                tokio::spawn(async move {
                    let mut queued = 0;
                    for round in 0..400_u16 {
                        let status = 200 + (thread * 400 + round) % 300;
                        let headers = HeaderList::default();
                        let mut ticket = read(&runtime, &format!("/status/{status}"), &headers);
                        let body = format!("{thread}-{round}");
                        assert!(ticket.copy_body(body.as_bytes()));
                        let live = ticket.observe_live();
                        queued += u64::from(ticket.submit());
                        let mut live = live.head(status, &headers);
                        // Some live responses end after their copy has run.
                        if round % 3 == 0 {
                            tokio::task::yield_now().await;
                        }
                        live.chunk(body.as_bytes());
                        live.finish();
                    }
                    queued
                })
            })
            .collect();
        let mut queued = 0;
        for task in tasks {
            queued += task.await.expect("no panic");
        }
        settle(&f.runtime, |c| c.compared + c.comparison_missed == queued).await;
        let counts = f.runtime.stats().counts();
        assert_eq!(counts.mismatched, 0, "{counts:?}");
        assert_eq!(counts.comparison_missed, 0, "{counts:?}");
    }

    // Paused time: the first shadow response waits for its live one for the budget's
    // second, which a descheduled test thread could otherwise use up in real time.
    #[tokio::test(start_paused = true)]
    async fn a_shadow_waiting_for_its_live_response_does_not_hold_a_copy_slot() {
        let f = fixture(budget(8, 1));
        start(f.worker);
        let headers = HeaderList::default();
        let mut first = read(&f.runtime, "/r", &headers);
        let first_live = first.observe_live().head(200, &headers);
        assert!(first.submit());
        settle(&f.runtime, |c| c.completed == 1).await;

        // With one copy at a time, the second runs while the first waits for live.
        let mut second = read(&f.runtime, "/r", &headers);
        let second_live = second.observe_live();
        assert!(second.submit());
        second_live.head(200, &headers).finish();
        settle(&f.runtime, |c| c.compared == 1).await;

        first_live.finish();
        settle(&f.runtime, |c| c.compared == 2).await;
        assert_eq!(f.runtime.stats().counts().comparison_missed, 0);
    }

    #[tokio::test]
    async fn a_live_response_that_is_never_sent_whole_is_a_missed_comparison() {
        let f = fixture(ShadowConfig::new());
        start(f.worker);
        let headers = HeaderList::default();
        let mut ticket = read(&f.runtime, "/r", &headers);
        let live = ticket.observe_live();
        assert!(ticket.submit());
        let mut live = live.head(200, &headers);
        live.chunk(b"part");
        drop(live);
        settle(&f.runtime, |c| c.comparison_missed == 1).await;
        assert_eq!(f.runtime.stats().counts().compared, 0);
    }

    #[tokio::test]
    async fn the_mirror_share_decides_how_many_reads_are_copied() {
        let headers = HeaderList::default();
        let mirrored = |share: Share| {
            let f = fixture(ShadowConfig::new().with_mirror_share(share));
            let copied = (0..10_000)
                .filter(|_| get(&f.runtime, &headers).mirror.is_some())
                .count();
            let counts = f.runtime.stats().counts();
            assert_eq!(counts.not_sampled as usize, 10_000 - copied, "{counts:?}");
            copied
        };
        assert_eq!(mirrored(Share::FULL), 10_000);
        assert_eq!(mirrored(Share::ZERO), 0);
        // Binomial(10,000, 0.25): the standard deviation is 43, so this is ±11σ.
        let quarter = mirrored(Share::from_percent(25.0).expect("valid share"));
        assert!((2_000..=3_000).contains(&quarter), "{quarter} of 10,000");
    }

    #[tokio::test]
    async fn head_responses_are_compared_without_bodies() {
        let f = fixture(ShadowConfig::new());
        start(f.worker);
        let headers = HeaderList::default();
        let head = RequestHead::new("HEAD", "/r", &headers);
        let mut ticket = f.runtime.route(&head).mirror.expect("HEAD is a read");
        ticket.copy_head(&head, "/r", HttpVersion::Http11, None);
        // The candidate echoes the copy's body, so its response to HEAD has one.
        assert!(ticket.copy_body(b"a body the live server never sends"));
        let live = ticket.observe_live();
        assert!(ticket.submit());
        // Servers drop a HEAD response's body unread: the live side ends at its head.
        drop(live.head(200, &headers));
        settle(&f.runtime, |c| c.compared == 1).await;
        let counts = f.runtime.stats().counts();
        assert_eq!(
            (counts.mismatched, counts.comparison_missed),
            (0, 0),
            "{counts:?}"
        );
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
        start(f.worker);
        let headers = HeaderList::default();
        for expected in 1..=2 {
            let mut ticket = read(&f.runtime, "/r", &headers);
            let live = ticket.observe_live();
            assert!(ticket.submit());
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
        start(f.worker);
        let headers = HeaderList::default();
        let mut ticket = read(&f.runtime, "/status/500", &headers);
        let live = ticket.observe_live();
        assert!(ticket.submit());
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
        let mut ticket = ticket.admit(BodySize::AtLeast(10)).expect("may still fit");
        assert!(ticket.copy_body(&[0; 10]));
        assert!(!ticket.copy_body(&[0; 1]), "one byte over the limit");
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
        let worker = tokio::spawn(f.worker.run(candidate));
        drop(f.runtime);
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("worker ended")
            .expect("worker did not panic");
    }
}
