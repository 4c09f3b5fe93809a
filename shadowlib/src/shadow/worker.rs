//! The shadow's worker: one task on the shadow's thread that takes copies from the queue
//! and runs up to the budget's concurrency of them at once. Each copy runs on the stable
//! twin and on the candidate, one after the other in a random order, each under the
//! timeout with panics caught and its CPU and allocations measured; then both answers are
//! compared with the live response and recorded as a pair.
//!
//! One task, however many copies: the shadow never occupies more than one thread at a
//! time, whatever the live load, and a copy costs the live path no wake-up of another
//! thread unless the worker has been idle long enough to park (see
//! [`SHADOW_TICK`](super::queue::SHADOW_TICK)).
//!
//! The thread runs in the lowest scheduling class, so it may wait for CPU while live has
//! it. The worker reads how long it waited ([`CpuWaitClock`]): a copy whose thread waited
//! past the deadline while it ran is *starved*, and keeps its CPU time, outcome and
//! comparison as evidence but not its wall latency (which says how busy live was). A
//! build's timeout counts only the time the shadow had the CPU: it is pushed back by the
//! thread's wait during the run, up to twice the budget's timeout, so that a timeout is
//! still the build's doing.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::IN_SHADOW;
use super::cpu_sampling::CpuSampling;
use super::cpu_wait::CpuWaitClock;
use super::queue::{SHADOW_TICK, Task};
use super::runtime::Shared;
use super::slots::{CopySlot, LiveProgress};
use super::stats::ShadowStats;
use super::target::{ShadowCall, ShadowError, ShadowResult, ShadowTarget, TargetId};
use super::{StatePosition, StateSpan};
use crate::compare::ResponseSummary;
use crate::metrics::{Differed, Measured, ReadComparison, ResourceUsage, Run, thread_cpu_time};
use crate::model::{Arm, Outcome, Share};
use crate::rng;

/// Empty ticks after which the worker parks until the live path wakes it: about 0.1 s
/// without copies. A parked worker costs nothing; the first copy of the next burst wakes
/// it once.
const IDLE_TICKS_BEFORE_PARKING: u32 = 100;

/// How often the worker reports its thread's CPU time (a system call of about a
/// microsecond): the cost the governor counts is at most this much behind.
const CPU_REPORT_EVERY: Duration = Duration::from_millis(1);

/// A registered target as the worker holds it.
enum Target {
    Ready(Box<dyn ShadowTarget>),
    /// Its factory failed: copies for it fail with this reason.
    Failed(String),
}

/// See the [module docs](self).
pub(crate) struct Worker {
    shared: Arc<Shared>,
    /// The wait for CPU a test plays, in nanoseconds, instead of the thread's own.
    #[cfg(test)]
    scripted_cpu_wait: Option<Arc<std::sync::atomic::AtomicU64>>,
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
                let why = format!("a build could not start on the shadow's thread: {why}");
                tracing::error!("{why}");
                shared.link.candidate_cannot_start(&why);
            }
            if self.0.len() <= id.0 {
                self.0.resize_with(id.0 + 1, || None);
            }
            self.0[id.0] = Some(built);
        }
    }

    /// The jobs for one copy: the candidate's call and, when the twin runs it too, the
    /// twin's; or the reason there are none.
    fn jobs(&self, shared: &Shared, id: TargetId, with_twin: bool, slot: &CopySlot) -> Jobs {
        match self.0.get(id.0).and_then(Option::as_ref) {
            Some(Target::Ready(target)) => {
                let mut copy = slot.request();
                let candidate = target.call(Arm::Candidate, &copy, shared.capture());
                let twin = with_twin.then(|| target.call(Arm::Stable, &copy, shared.capture()));
                // The builds' requests are made: the attachment is not needed any more.
                copy.set_attachment(None);
                Jobs::Calls { candidate, twin }
            }
            Some(Target::Failed(why)) => Jobs::Failed(why.clone()),
            None => Jobs::Failed(format!("no shadow target {}", id.0)),
        }
    }
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            #[cfg(test)]
            scripted_cpu_wait: None,
        }
    }

    /// The same worker, with its thread's wait for CPU played by the test.
    #[cfg(test)]
    pub(crate) fn with_scripted_cpu_wait(
        mut self,
        waited_ns: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        self.scripted_cpu_wait = Some(waited_ns);
        self
    }

    /// The clock of the thread the worker runs on (made there: it reads that thread's).
    fn cpu_wait_clock(&self) -> CpuWaitClock {
        let deadline = self.shared.config.resources.max_cpu_wait;
        #[cfg(test)]
        {
            if let Some(waited) = &self.scripted_cpu_wait {
                return CpuWaitClock::scripted(Arc::clone(waited), deadline);
            }
            // A worker placed by hand runs on a test's thread, which is not lowered: its
            // waits for CPU are the machine's business, not live's.
            if self.shared.placement == super::runtime::Placement::Manual {
                return CpuWaitClock::unavailable(deadline);
            }
        }
        CpuWaitClock::for_this_thread(deadline)
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
        let clock = self.cpu_wait_clock();
        let sampling = CpuSampling::calibrate();
        let shared = self.shared;
        let mut targets = Targets::default();
        let queue = &shared.queue;
        let mut running = FuturesUnordered::new();
        let mut awaiting = Vec::new();
        let mut idle_ticks = 0;
        let mut cpu_reported: Option<Instant> = None;
        loop {
            if Self::has_registrations(&shared) {
                targets.build_new(&shared).await;
            }
            let now = Instant::now();
            clock.sample(now);
            report_cpu(&shared, now, &mut cpu_reported);
            // What the governor allows now, following live.
            let concurrency = shared.pacing.concurrency().max(1);
            while running.len() < concurrency {
                let Some(task) = queue.tasks.pop() else {
                    break;
                };
                ShadowStats::bump(&shared.stats.started);
                let (route, request_bytes, bodiless, state_position) = {
                    let copy = task.slot.request();
                    let route = shared.labels.label(copy.method(), copy.path());
                    let bodiless = is_bodiless(copy.method());
                    (route, copy.body_len(), bodiless, copy.state_position)
                };
                let with_twin = drawn(shared.config.twin_share);
                let jobs = targets.jobs(&shared, task.target, with_twin, &task.slot);
                let copy = Running {
                    task,
                    route,
                    request_bytes,
                    bodiless,
                    state_position,
                    started: now,
                    cpu_wait_at_start: clock.total(),
                };
                running.push(execute(&shared, &clock, &sampling, copy, jobs));
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
            if park {
                // Parked, the thread uses nothing: the count stays current meanwhile.
                cpu_reported = None;
                report_cpu(&shared, now, &mut cpu_reported);
            }
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

/// Whether a draw at `share` comes up: always at 100%, never at 0%.
fn drawn(share: Share) -> bool {
    let ppm = share.ppm();
    ppm >= Share::PPM_SCALE || rng::below(Share::PPM_SCALE) < ppm
}

/// What a copy runs.
enum Jobs {
    Calls {
        candidate: ShadowCall,
        twin: Option<ShadowCall>,
    },
    Failed(String),
}

/// Whether responses to `method` carry no body: those to HEAD never do (RFC 9110,
/// section 9.3.2), whatever the handler returned, and servers may drop that body without
/// reading it. Such pairs are compared on status and headers alone.
pub(crate) fn is_bodiless(method: &str) -> bool {
    method == "HEAD"
}

/// Stores the worker thread's CPU time for the governor, at most every
/// [`CPU_REPORT_EVERY`] (`reported` is when it last did; `None` reports now).
fn report_cpu(shared: &Shared, now: Instant, reported: &mut Option<Instant>) {
    if reported.is_some_and(|at| now.saturating_duration_since(at) < CPU_REPORT_EVERY) {
        return;
    }
    *reported = Some(now);
    if let Some(cpu) = thread_cpu_time() {
        let nanos = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
        shared.stats.shadow_cpu_ns.store(nanos, Ordering::Relaxed);
    }
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
    /// When the worker started it, and the thread's total wait for CPU then.
    started: Instant,
    cpu_wait_at_start: Duration,
}

/// One build's run of a copy: what is recorded, and its response if it answered.
struct Answer {
    run: Run,
    response: Option<ResponseSummary>,
}

/// Runs one copy on both builds, one after the other in a random order, each under the
/// timeout; when the live response is not there yet, returns them to settle later.
async fn execute(
    shared: &Shared,
    clock: &CpuWaitClock,
    sampling: &CpuSampling,
    copy: Running,
    jobs: Jobs,
) -> Option<AwaitingLive> {
    let timeout = shared.config.resources.budget.timeout;
    let measure = sampling.draw();
    // A stateful service's shadow state is brought to where live's stood first.
    let span = match (&shared.state, copy.state_position) {
        (Some(state), Some(at)) => Some(state.catch_up(at).await),
        _ => None,
    };
    let (candidate, twin) = match jobs {
        Jobs::Calls { candidate, twin } => (candidate, twin),
        Jobs::Failed(why) => {
            let failed = Answer {
                run: Run {
                    outcome: Outcome::ServerError,
                    latency: None,
                    usage: ResourceUsage::default(),
                    response_bytes: 0,
                },
                response: None,
            };
            tracing::debug!(route = %copy.route, %why, "shadow request failed");
            ShadowStats::bump(&shared.stats.failed);
            shared
                .pairs
                .record_unpaired(copy.request_bytes, &failed.run);
            shared.slots.give_back(copy.task.slot);
            return None;
        }
    };
    let (candidate, twin) = match twin {
        None => (run(&copy, candidate, timeout, clock, measure).await, None),
        // The order is drawn per copy, so that whatever running first or second costs
        // (a warm cache, a queue behind the other) falls on either build alike.
        Some(twin) if rng::below(2) == 0 => {
            let twin = run(&copy, twin, timeout, clock, measure).await;
            (
                run(&copy, candidate, timeout, clock, measure).await,
                Some(twin),
            )
        }
        Some(twin) => {
            let candidate = run(&copy, candidate, timeout, clock, measure).await;
            (
                candidate,
                Some(run(&copy, twin, timeout, clock, measure).await),
            )
        }
    };
    let state_held = span.map(StateSpan::held);
    if measure {
        ShadowStats::bump(&shared.stats.cpu_measured);
        let cpu = |answer: &Answer| answer.run.usage.cpu_time.unwrap_or_default();
        sampling.observe(cpu(&candidate) + twin.as_ref().map_or(Duration::ZERO, cpu));
    }
    let now = Instant::now();
    ShadowStats::add_own(
        &shared.stats.copy_wall_ns,
        u64::try_from(now.duration_since(copy.started).as_nanos()).unwrap_or(u64::MAX),
    );
    clock.sample(now);
    let waited = clock.total().saturating_sub(copy.cpu_wait_at_start);
    let starved = waited > shared.config.resources.max_cpu_wait;
    if starved {
        ShadowStats::bump(&shared.stats.starved);
        tracing::debug!(route = %copy.route, ?waited, "the shadow waited for CPU during a copy; its latency is not evidence");
    }
    let counter = match candidate.run.outcome {
        _ if candidate.response.is_some() => &shared.stats.completed,
        Outcome::Timeout => &shared.stats.timed_out,
        Outcome::Panic => &shared.stats.panicked,
        _ => &shared.stats.failed,
    };
    ShadowStats::bump(counter);
    if twin.is_some() {
        ShadowStats::bump(&shared.stats.paired);
    }
    let state = copy
        .state_position
        .map(|at| (at, state_held.unwrap_or(false)));
    let pair = AwaitingLive {
        slot: copy.task.slot,
        route: copy.route,
        request_bytes: copy.request_bytes,
        candidate,
        twin,
        state,
        starved,
        deadline: now + timeout,
    };
    if pair.is_due(now) {
        pair.settle(shared);
        None
    } else {
        Some(pair)
    }
}

/// Runs one build's call: guarded, measured, and summed up as a [`Run`].
async fn run(
    copy: &Running,
    call: ShadowCall,
    timeout: Duration,
    clock: &CpuWaitClock,
    measure: bool,
) -> Answer {
    let started = Instant::now();
    let (guarded, usage) = run_guarded(call, timeout, clock, measure).await;
    let failed = |outcome| Answer {
        run: Run {
            outcome,
            latency: None,
            usage,
            response_bytes: 0,
        },
        response: None,
    };
    match guarded {
        Guarded::TimedOut => failed(Outcome::Timeout),
        Guarded::Panicked => failed(Outcome::Panic),
        Guarded::Failed(ShadowError(why)) => {
            tracing::debug!(route = %copy.route, %why, elapsed = ?started.elapsed(), "shadow request failed");
            failed(Outcome::ServerError)
        }
        Guarded::Answered(mut reply) => {
            if copy.bodiless {
                reply.response.clear_body();
            }
            Answer {
                run: Run {
                    outcome: Outcome::from_http_status(reply.response.status),
                    latency: Some(reply.latency),
                    usage,
                    response_bytes: reply.response.body_len,
                },
                response: Some(reply.response),
            }
        }
    }
}

/// How a guarded call ended.
enum Guarded {
    Answered(super::target::ShadowReply),
    Failed(ShadowError),
    TimedOut,
    Panicked,
}

/// Runs a call inside the shadow scope, under the timeout, with panics caught, and, when
/// it is to be `measure`d, with the thread CPU time and allocations of every poll added up.
///
/// The timeout counts the time the shadow had the CPU: when it expires, it is pushed back
/// by however long the thread waited for CPU meanwhile, and the call ends at twice the
/// timeout whatever the wait (no hold without an end).
async fn run_guarded(
    call: impl Future<Output = ShadowResult>,
    timeout: Duration,
    clock: &CpuWaitClock,
    measure: bool,
) -> (Guarded, ResourceUsage) {
    let guarded = IN_SHADOW.scope((), AssertUnwindSafe(call).catch_unwind());
    let measured = if measure {
        Measured::new(guarded)
    } else {
        Measured::polls_only(guarded)
    };
    let mut measured = pin!(measured);
    let started = Instant::now();
    let waited_before = clock.total();
    let last_chance = started + timeout * 2;
    let mut deadline = started + timeout;
    let outcome = loop {
        match tokio::time::timeout_at(deadline, measured.as_mut()).await {
            Ok(done) => break Ok(done),
            Err(elapsed) => {
                clock.sample(deadline);
                let waited = clock.total().saturating_sub(waited_before);
                let fair = (started + timeout + waited).min(last_chance);
                if fair <= deadline {
                    break Err(elapsed);
                }
                deadline = fair;
            }
        }
    };
    match outcome {
        Err(_elapsed) => (Guarded::TimedOut, measured.usage()),
        Ok((Err(_panic), usage)) => (Guarded::Panicked, usage),
        Ok((Ok(Err(error)), usage)) => (Guarded::Failed(error), usage),
        Ok((Ok(Ok(reply)), usage)) => (Guarded::Answered(reply), usage),
    }
}

/// A copy both builds have answered, waiting for the live response it is compared with.
///
/// The worker looks for the live response every tick rather than awaiting it: awaiting
/// would make the live side wake the shadow's thread when it finishes, a futex call on the
/// live request's thread. Such comparisons come up to a tick later, and do not hold one of
/// the budget's concurrent copies meanwhile.
struct AwaitingLive {
    slot: Arc<CopySlot>,
    route: Arc<str>,
    request_bytes: u64,
    candidate: Answer,
    twin: Option<Answer>,
    /// For a stateful service: where live's state stood when the read arrived, and
    /// whether the shadow's stood there all through both builds' runs (both read the
    /// shadow's state: the twin runs in the shadow too).
    state: Option<(StatePosition, bool)>,
    /// The shadow's thread waited for CPU past the deadline while the copy ran.
    starved: bool,
    /// The live response is given up after the budget's timeout, as a copy would be.
    deadline: Instant,
}

impl AwaitingLive {
    /// Whether the pair can be settled: the live response was sent whole, will never
    /// be, or is past the deadline.
    fn is_due(&self, now: Instant) -> bool {
        now >= self.deadline || self.slot.live().progress != LiveProgress::Awaited
    }

    /// Compares both answers with the live response if that was sent whole, and records
    /// the pair (or the candidate's run alone, without a twin).
    fn settle(self, shared: &Shared) {
        let AwaitingLive {
            slot,
            route,
            request_bytes,
            mut candidate,
            mut twin,
            state,
            starved,
            deadline: _,
        } = self;
        let mut live = None;
        let mut same_state = true;
        {
            let captured = slot.live();
            if let Some(latency) = captured.latency {
                // The worker alone writes these two.
                let stats = &shared.stats;
                ShadowStats::add_own(&stats.mirrored_live_timed, 1);
                ShadowStats::add_own(
                    &stats.mirrored_live_busy_ns,
                    u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
                );
            }
            if captured.progress == LiveProgress::Seen {
                // Unpacked into a summary of the worker's own, to compare as summaries.
                let mut summary = shared.recycled.pop().unwrap_or_default();
                captured.summarize(&mut summary);
                live = Some(summary);
                if let (Some((arrived_at, shadow_held)), Some(state)) = (state, &shared.state) {
                    let live_held = captured
                        .state_position
                        .is_some_and(|answered_at| state.live_held(arrived_at, answered_at));
                    same_state = shadow_held && live_held;
                }
            }
        }
        // Moved, not cloned: the pool takes a slot back only from its last holder.
        shared.slots.give_back(slot);
        let compared = match &live {
            None => {
                if candidate.response.is_some() {
                    ShadowStats::bump(&shared.stats.comparison_missed);
                }
                None
            }
            Some(_) if !same_state => {
                tracing::debug!(route = %route, "state moved during the read; not compared");
                ShadowStats::bump(&shared.stats.not_comparable);
                None
            }
            Some(live) => compare(shared, &route, &candidate, twin.as_ref(), live),
        };
        match &twin {
            _ if starved => shared.pairs.record_starved(
                &route,
                request_bytes,
                twin.as_ref().map(|twin| &twin.run),
                &candidate.run,
                compared.as_ref(),
            ),
            Some(twin) => shared.pairs.record_pair(
                &route,
                request_bytes,
                &twin.run,
                &candidate.run,
                compared.as_ref(),
            ),
            None => shared.pairs.record_unpaired(request_bytes, &candidate.run),
        }
        // A full pool frees the rest: it only has to cover the copies in flight.
        let responses = [
            live,
            candidate.response.take(),
            twin.as_mut().and_then(|t| t.response.take()),
        ];
        for summary in responses.into_iter().flatten() {
            let _ = shared.recycled.push(summary);
        }
    }
}

/// Compares the live response with the candidate's and the twin's: which fields
/// differed from live, on which side. Only a read all three answered (and could be
/// compared) enters the mismatch test; the candidate's comparison is counted anyway.
fn compare(
    shared: &Shared,
    route: &str,
    candidate: &Answer,
    twin: Option<&Answer>,
    live: &ResponseSummary,
) -> Option<ReadComparison> {
    // An unanswered copy was counted as timed out, panicked or failed.
    let candidate = candidate.response.as_ref()?;
    let candidate_fields = match differing_fields(shared, route, live, candidate) {
        Ok(fields) => fields,
        Err(Uncompared::NotComparable) => {
            ShadowStats::bump(&shared.stats.not_comparable);
            return None;
        }
        Err(Uncompared::ComparatorPanicked) => {
            ShadowStats::bump(&shared.stats.comparison_missed);
            return None;
        }
    };
    let twin_fields = twin
        .and_then(|twin| twin.response.as_ref())
        .and_then(|response| differing_fields(shared, route, live, response).ok());
    let mismatched = match &twin_fields {
        Some(twin) => candidate_fields.iter().any(|f| !twin.contains(f)),
        None => !candidate_fields.is_empty(),
    };
    ShadowStats::bump(&shared.stats.compared);
    if mismatched {
        ShadowStats::bump(&shared.stats.mismatched);
        tracing::debug!(route, fields = ?candidate_fields, "shadow response differs");
    }
    // Without the twin's answer there is no noise to net out.
    let twin_fields = twin_fields?;
    let mut fields: Vec<(String, Differed)> = candidate_fields
        .iter()
        .map(|field| {
            let side = if twin_fields.contains(field) {
                Differed::Both
            } else {
                Differed::CandidateOnly
            };
            (field.clone(), side)
        })
        .collect();
    fields.extend(
        twin_fields
            .iter()
            .filter(|field| !candidate_fields.contains(field))
            .map(|field| (field.clone(), Differed::TwinOnly)),
    );
    Some(ReadComparison { fields })
}

/// Why a pair of responses was not compared.
enum Uncompared {
    NotComparable,
    ComparatorPanicked,
}

/// The fields in which `shadow` differs from `live`, sorted and without repeats.
fn differing_fields(
    shared: &Shared,
    route: &str,
    live: &ResponseSummary,
    shadow: &ResponseSummary,
) -> Result<Vec<String>, Uncompared> {
    // A comparator is application code too: its panic must not take the worker down.
    let compared = std::panic::catch_unwind(AssertUnwindSafe(|| {
        shared.config.comparator.compare(route, live, shadow)
    }));
    let Ok(comparison) = compared else {
        tracing::error!(route, "the response comparator panicked; pair not compared");
        return Err(Uncompared::ComparatorPanicked);
    };
    if let Some(why) = &comparison.not_comparable {
        tracing::debug!(route, why, "pair not comparable");
        return Err(Uncompared::NotComparable);
    }
    let mut fields: Vec<String> = comparison
        .differences
        .iter()
        .map(|d| d.field().into_owned())
        .collect();
    fields.sort_unstable();
    fields.dedup();
    Ok(fields)
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

#[cfg(test)]
mod tests;
