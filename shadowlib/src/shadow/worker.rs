//! The shadow's worker: one task on the shadow's thread that takes copies from the queue
//! and runs up to the budget's concurrency of them at once, each under the timeout with
//! panics caught, then compares each answer with its live response.
//!
//! One task, however many copies: the shadow never occupies more than one thread at a
//! time, whatever the live load, and a copy costs the live path no wake-up of another
//! thread unless the worker has been idle long enough to park (see
//! [`SHADOW_TICK`](super::queue::SHADOW_TICK)).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::IN_SHADOW;
use super::queue::{SHADOW_TICK, Task};
use super::runtime::Shared;
use super::slots::{CopySlot, LiveProgress};
use super::stats::ShadowStats;
use super::target::{ShadowError, ShadowResult, ShadowTarget, TargetId};
use super::{StatePosition, StateSpan};
use crate::compare::ResponseSummary;
use crate::model::{Arm, Outcome};

/// Empty ticks after which the worker parks until the live path wakes it: about 0.1 s
/// without copies. A parked worker costs nothing; the first copy of the next burst wakes
/// it once.
const IDLE_TICKS_BEFORE_PARKING: u32 = 100;

/// A registered target as the worker holds it.
enum Target {
    Ready(Box<dyn ShadowTarget>),
    /// Its factory failed: copies for it fail with this reason.
    Failed(String),
}

/// See the [module docs](self).
pub(crate) struct Worker {
    shared: Arc<Shared>,
}

/// The targets registered so far, by id. They live on the shadow's thread only.
#[derive(Default)]
struct Targets(Vec<Option<Target>>);

impl Targets {
    /// Builds the targets registered since the last look, here on the shadow's thread.
    async fn build_new(&mut self, shared: &Shared) {
        let registrations = std::mem::take(
            &mut *shared
                .registrations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (id, factory) in registrations {
            let built = match AssertUnwindSafe(factory()).catch_unwind().await {
                Ok(Ok(target)) => Target::Ready(target),
                Ok(Err(why)) => Target::Failed(why),
                Err(_panic) => Target::Failed("its factory panicked".to_owned()),
            };
            if let Target::Failed(why) = &built {
                let why = format!("the candidate could not start on the shadow's thread: {why}");
                tracing::error!("{why}");
                shared.link.candidate_cannot_start(&why);
            }
            if self.0.len() <= id.0 {
                self.0.resize_with(id.0 + 1, || None);
            }
            self.0[id.0] = Some(built);
        }
    }

    /// The job for one copy: the build's call, or the reason there is none.
    fn job(&self, shared: &Shared, id: TargetId, arm: Arm, slot: &CopySlot) -> Job {
        match self.0.get(id.0).and_then(Option::as_ref) {
            Some(Target::Ready(target)) => {
                let mut copy = slot.request();
                let call = target.call(arm, &copy, shared.capture());
                // The build's request is made: the attachment is not needed any more.
                copy.set_attachment(None);
                Job::Call(call)
            }
            Some(Target::Failed(why)) => Job::Failed(why.clone()),
            None => Job::Failed(format!("no shadow target {}", id.0)),
        }
    }
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn has_registrations(shared: &Shared) -> bool {
        !shared
            .registrations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// Runs copies until every live-side handle is gone and the last copy is done.
    ///
    /// While copies keep coming the worker takes them from the queue every tick (and
    /// whenever a copy it runs finishes); after about 0.1 s without any it parks, and the
    /// next copy (or target) wakes it.
    pub(crate) async fn run(self) {
        let shared = self.shared;
        let mut targets = Targets::default();
        let concurrency = shared.config.budget.concurrency;
        let queue = &shared.queue;
        let mut running = FuturesUnordered::new();
        let mut awaiting = Vec::new();
        let mut idle_ticks = 0;
        loop {
            if Self::has_registrations(&shared) {
                targets.build_new(&shared).await;
            }
            while running.len() < concurrency {
                let Some(task) = queue.tasks.pop() else {
                    break;
                };
                let (route, request_bytes, bodiless, state_position) = {
                    let copy = task.slot.request();
                    let route = shared.labels.label(copy.method(), copy.path());
                    let bodiless = is_bodiless(copy.method());
                    (route, copy.body_len(), bodiless, copy.state_position)
                };
                let job = targets.job(&shared, task.target, Arm::Candidate, &task.slot);
                let copy = Running {
                    task,
                    route,
                    request_bytes,
                    bodiless,
                    state_position,
                };
                running.push(execute(&shared, copy, job));
            }
            let waiting = settle_awaiting(&shared, &mut awaiting);
            let busy = !running.is_empty() || waiting;
            if !busy && queue.is_closed() && queue.tasks.is_empty() {
                return;
            }
            if running.len() >= concurrency {
                awaiting.extend(running.next().await.flatten());
                continue;
            }
            let park = !busy && idle_ticks >= IDLE_TICKS_BEFORE_PARKING;
            let wait_for_copies = async {
                if park {
                    queue.park(|| Self::has_registrations(&shared)).await;
                } else {
                    tokio::time::sleep(SHADOW_TICK).await;
                }
            };
            let finished = if running.is_empty() {
                wait_for_copies.await;
                None
            } else {
                // Finishing copies first frees room for the next ones.
                match select(running.next(), pin!(wait_for_copies)).await {
                    Either::Left((done, _)) => Some(done),
                    Either::Right(((), _)) => None,
                }
            };
            match finished {
                Some(done) => awaiting.extend(done.flatten()),
                None => {
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

/// What a copy runs.
enum Job {
    Call(super::target::ShadowCall),
    Failed(String),
}

/// Whether responses to `method` carry no body: those to HEAD never do (RFC 9110,
/// section 9.3.2), whatever the handler returned, and servers may drop that body without
/// reading it. Such pairs are compared on status and headers alone.
pub(crate) fn is_bodiless(method: &str) -> bool {
    method == "HEAD"
}

/// A copy the worker runs: its task, its route label and the size of its request body.
struct Running {
    task: Task,
    route: Arc<str>,
    request_bytes: u64,
    /// Its response's body, if the build sent one, is not compared.
    bodiless: bool,
    /// Where live's state stood when the read arrived (a stateful service).
    state_position: Option<StatePosition>,
}

/// Runs one copy under the timeout, records its outcome and compares its response; when
/// the live response is not there yet, returns the shadow's to compare later.
async fn execute(shared: &Shared, copy: Running, job: Job) -> Option<AwaitingLive> {
    let Shared {
        config,
        recorder,
        stats,
        ..
    } = shared;
    let timeout = config.budget.timeout;
    // A stateful service's shadow state is brought to where live's stood first.
    let span = match (&shared.state, copy.state_position) {
        (Some(state), Some(at)) => Some(state.catch_up(at).await),
        _ => None,
    };
    let started = Instant::now();
    let result = match job {
        Job::Call(call) => run_guarded(call, timeout).await,
        Job::Failed(why) => Guarded::Failed(ShadowError(why)),
    };
    let state_held = span.map(StateSpan::held);
    let failure = match result {
        Guarded::TimedOut => (&stats.timed_out, Outcome::Timeout),
        Guarded::Panicked => (&stats.panicked, Outcome::Panic),
        Guarded::Failed(ShadowError(why)) => {
            tracing::debug!(route = %copy.route, %why, "shadow request failed");
            (&stats.failed, Outcome::ServerError)
        }
        Guarded::Answered(mut reply) => {
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
            return settle(shared, copy, reply.response, state_held, timeout);
        }
    };
    let (counter, outcome) = failure;
    ShadowStats::bump(counter);
    recorder.record(
        Arm::Candidate,
        outcome,
        started.elapsed(),
        copy.request_bytes,
        0,
    );
    shared.slots.give_back(copy.task.slot);
    None
}

/// How a guarded call ended.
enum Guarded {
    Answered(super::target::ShadowReply),
    Failed(ShadowError),
    TimedOut,
    Panicked,
}

/// Runs a call inside the shadow scope, under the timeout, with panics caught.
async fn run_guarded(call: impl Future<Output = ShadowResult>, timeout: Duration) -> Guarded {
    let call = IN_SHADOW.scope((), AssertUnwindSafe(call).catch_unwind());
    match tokio::time::timeout(timeout, call).await {
        Err(_elapsed) => Guarded::TimedOut,
        Ok(Err(_panic)) => Guarded::Panicked,
        Ok(Ok(Err(error))) => Guarded::Failed(error),
        Ok(Ok(Ok(reply))) => Guarded::Answered(reply),
    }
}

/// Compares an answered copy with its live response if that has been sent whole; keeps
/// it to compare later if not yet.
fn settle(
    shared: &Shared,
    copy: Running,
    shadow: ResponseSummary,
    state_held: Option<bool>,
    timeout: Duration,
) -> Option<AwaitingLive> {
    let now = Instant::now();
    let state = copy
        .state_position
        .map(|at| (at, state_held.unwrap_or(false)));
    let pair = AwaitingLive {
        slot: copy.task.slot,
        route: copy.route,
        shadow,
        state,
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
/// The worker looks for the live response every tick rather than awaiting it: awaiting
/// would make the live side wake the shadow's thread when it finishes, a futex call on the
/// live request's thread. Such comparisons come up to a tick later, and do not hold one of
/// the budget's concurrent copies meanwhile.
struct AwaitingLive {
    slot: Arc<CopySlot>,
    route: Arc<str>,
    shadow: ResponseSummary,
    /// For a stateful service: where live's state stood when the read arrived, and
    /// whether the shadow's stood there all through the copy.
    state: Option<(StatePosition, bool)>,
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
        let mut same_state = true;
        {
            let captured = self.slot.live();
            if captured.progress == LiveProgress::Seen {
                // Unpacked into a summary of the worker's own, to compare as summaries.
                let mut summary = shared.recycled.pop().unwrap_or_default();
                captured.summarize(&mut summary);
                live = Some(summary);
                if let (Some((arrived_at, shadow_held)), Some(state)) = (self.state, &shared.state)
                {
                    let live_held = captured
                        .state_position
                        .is_some_and(|answered_at| state.live_held(arrived_at, answered_at));
                    same_state = shadow_held && live_held;
                }
            }
        }
        shared.slots.give_back(self.slot);
        match live {
            Some(live) if !same_state => {
                tracing::debug!(route = %self.route, "state moved during the read; pair not compared");
                ShadowStats::bump(&shared.stats.not_comparable);
                let _ = shared.recycled.push(live);
            }
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
        recorder.record_comparison(Some(route), comparison.mismatched());
        stats.record_comparison(comparison.mismatched());
    }
}
