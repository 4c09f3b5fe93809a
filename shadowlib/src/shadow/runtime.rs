//! The live side of the shadow: what routes each request and hands copies to the worker.
//!
//! The live path's share of a copy is kept to copying bytes into a reused
//! [`RequestCopy`](crate::mirror::RequestCopy) and a push onto a lock-free queue: it never
//! wakes the shadow's thread while the shadow is busy or only between copies, never waits
//! for it, and in a steady state allocates nothing for it.

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::governor::{Governor, Pacer, Pacing, Surroundings, System};
use super::queue::{CopyQueue, Task};
use super::slots::{CopySlot, SlotPool};
use super::stats::ShadowStats;
use super::target::{RECYCLED_SUMMARIES, Recycled, ResponseCapture, TargetFactory, TargetId};
use super::worker::Worker;
use super::{BudgetError, ResourcesError, RolloutLink, ShadowConfig, ShadowCounts, StateLink};
use crate::metrics::{KpiRecorder, PairRecorder};
use crate::mirror::{BodySize, HttpMirrorRef, RequestHead, RouteLabels};
use crate::model::{Arm, Share};
use crate::rng;
use crate::steer::TrafficSteerer;

/// Where the worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A thread of its own, started when the first target is registered.
    OwnThread,
    /// Wherever the caller runs the worker [`ShadowRuntime::new`] hands back (tests).
    #[cfg(test)]
    Manual,
}

/// The executor's state, for the live path to read with one load.
const NOT_STARTED: u8 = 0;
const RUNNING: u8 = 1;
const FAILED: u8 = 2;

/// What the live path, the worker and the rollout share.
pub(crate) struct Shared {
    pub(crate) config: ShadowConfig,
    pub(crate) mirror: HttpMirrorRef,
    pub(crate) steerer: Arc<dyn TrafficSteerer>,
    pub(crate) link: Arc<dyn RolloutLink>,
    /// Live requests, per canary step and route.
    pub(crate) recorder: Arc<KpiRecorder>,
    /// The shadow's pairs.
    pub(crate) pairs: Arc<PairRecorder>,
    pub(crate) stats: ShadowStats,
    /// What the governor has put in force: read by the live path on every read, written
    /// once per interval, so on lines of its own.
    pub(crate) pacing: CachePadded<Pacing>,
    /// Its own allocation: the live path clones it per mirrored read, and its reference
    /// count must not share a cache line with what the worker reads.
    pub(crate) slots: Arc<SlotPool>,
    pub(crate) recycled: Recycled,
    pub(crate) queue: CopyQueue,
    pub(crate) labels: RouteLabels,
    /// The delta stream of a stateful service.
    pub(crate) state: Option<Arc<dyn StateLink>>,
    /// Targets registered and not yet handed to the worker.
    pub(crate) registrations: Mutex<Vec<(TargetId, TargetFactory)>>,
    next_target: Mutex<usize>,
    pub(crate) placement: Placement,
    /// `NOT_STARTED`, `RUNNING` or `FAILED`; moved on from `NOT_STARTED` once.
    executor: AtomicU8,
}

impl Shared {
    /// How a response is captured for comparison.
    pub(crate) fn capture(&self) -> ResponseCapture {
        ResponseCapture::new(
            Arc::clone(&self.config.compared_headers),
            self.config.body_limit,
            Arc::clone(&self.recycled),
        )
    }
}

/// The live side's handle: cheap to clone, and the last clone to go closes the queue, so
/// the worker finishes what it holds and ends.
#[derive(Clone)]
pub(crate) struct ShadowRuntime {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.queue.close();
    }
}

/// A request's route: the build that serves it, the copy when it is mirrored, and its
/// route label's index while the candidate has a share of live traffic (when live
/// requests are recorded per route).
pub(crate) struct Route {
    pub(crate) arm: Arm,
    pub(crate) copy: Option<Arc<CopySlot>>,
    pub(crate) label: Option<usize>,
}

/// Where the rollout's measurements go.
pub(crate) struct Recorders {
    /// Live requests.
    pub(crate) live: Arc<KpiRecorder>,
    /// The shadow's pairs.
    pub(crate) pairs: Arc<PairRecorder>,
}

impl ShadowRuntime {
    /// A runtime with the worker unstarted, or (for [`Placement::Manual`]) handed back.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: ShadowConfig,
        mirror: HttpMirrorRef,
        steerer: Arc<dyn TrafficSteerer>,
        link: Arc<dyn RolloutLink>,
        recorders: Recorders,
        labels: RouteLabels,
        state: Option<Arc<dyn StateLink>>,
        placement: Placement,
    ) -> Result<(Self, Option<Worker>), BudgetError> {
        config.resources.validate().map_err(|error| match error {
            ResourcesError::Budget(error) => error,
            other => BudgetError::Resources(Box::new(other)),
        })?;
        let budget = &config.resources.budget;
        let initial = Pacer::new(config.resources.clone(), config.mirror_share)
            .with_twin_share(config.twin_share)
            .initial(System.unix_seconds());
        let pacing = Pacing::new(initial.share, initial.concurrency, initial.queue_limit);
        // Enough for every copy queued or running and as many whose live response is
        // still on its way; beyond that a slot is made (and later freed).
        let slots = Arc::new(SlotPool::new(
            budget
                .queue_capacity
                .saturating_add(budget.concurrency)
                .saturating_mul(2),
        ));
        let shared = Arc::new(Shared {
            queue: CopyQueue::new(budget.queue_capacity),
            config,
            mirror,
            steerer,
            link,
            recorder: recorders.live,
            pairs: recorders.pairs,
            stats: ShadowStats::new(),
            pacing: CachePadded::new(pacing),
            slots,
            recycled: Arc::new(ArrayQueue::new(RECYCLED_SUMMARIES)),
            labels,
            state,
            registrations: Mutex::new(Vec::new()),
            next_target: Mutex::new(0),
            placement,
            executor: AtomicU8::new(NOT_STARTED),
        });
        // The worker holds the shared state, so it is made only when it is about to run:
        // a worker kept for later would keep the state, and the rollout, alive for ever.
        let handed_back = match placement {
            Placement::OwnThread => None,
            #[cfg(test)]
            Placement::Manual => {
                shared.executor.store(RUNNING, Ordering::Release);
                Some(Worker::new(Arc::clone(&shared)))
            }
        };
        let handle = Arc::new(Handle { shared });
        Ok((Self { handle }, handed_back))
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The shadow's counters.
    pub(crate) fn counts(&self) -> ShadowCounts {
        let shared = self.shared();
        shared.stats.counts(&shared.pacing)
    }

    /// A governor for this runtime, for a test to run where it likes (a runtime placed
    /// by hand starts none).
    #[cfg(test)]
    pub(crate) fn governor(&self) -> Governor {
        Governor::new(Arc::clone(self.shared()))
    }

    /// Registers a target, to be built on the shadow's thread, and starts that thread if
    /// it has not started yet.
    pub(crate) fn register(&self, factory: TargetFactory) -> TargetId {
        let shared = self.shared();
        let id = {
            let mut next = lock(&shared.next_target);
            let id = TargetId(*next);
            *next += 1;
            id
        };
        lock(&shared.registrations).push((id, factory));
        if shared.placement == Placement::OwnThread {
            self.start_executor();
        }
        // A parked worker picks the target up now rather than at the next copy.
        shared.queue.wake_if_parked();
        id
    }

    fn start_executor(&self) {
        let shared = self.shared();
        let first = shared
            .executor
            .compare_exchange(NOT_STARTED, FAILED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !first {
            return;
        }
        // `FAILED` until the thread is known to run: a copy routed meanwhile is not made.
        let reporting = Arc::clone(shared);
        let lowered = move |class| reporting.pacing.set_scheduling(class);
        match super::thread::spawn_worker(Worker::new(Arc::clone(shared)), lowered) {
            Ok(()) => shared.executor.store(RUNNING, Ordering::Release),
            Err(error) => {
                shared.executor.store(FAILED, Ordering::Release);
                tracing::error!(%error, "the shadow's thread did not start; no read will be shadowed");
                return;
            }
        }
        if shared.config.resources.needs_governor()
            && let Err(error) = super::thread::spawn_governor(Governor::new(Arc::clone(shared)))
        {
            // What was in force at the start stays: the budget's figures and the share the
            // schedule started with.
            tracing::error!(%error, "the shadow's governor did not start; nothing adapts");
        }
    }

    /// Picks the build for a request and, when it is a read to mirror, takes a slot with
    /// the copy of its head.
    ///
    /// * The override header, when configured and not rolled back, wins.
    /// * Otherwise the steerer picks, by the sticky key when the request carries one.
    /// * A request going to stable while the rollout is live that the mirror calls a read,
    ///   within the share in force and the body limit, with room in the queue, is copied.
    pub(crate) fn route(&self, head: &RequestHead<'_>, body: BodySize) -> Route {
        let shared = self.shared();
        let config = &shared.config;
        // One atomic load, shared with nobody who writes per request.
        let phase = shared.link.phase();
        // Signed, unexpired, for this build, never after a rollback, and never a write to
        // a candidate that serves no live traffic (see `ArmOverride::admit`).
        let overridden = config
            .arm_override
            .as_ref()
            .and_then(|o| o.admit(head, phase, || shared.mirror.classify(head).is_read()));
        let arm = match overridden {
            Some(arm) => {
                ShadowStats::bump(&shared.stats.overridden);
                arm
            }
            None => {
                let key = config.sticky.as_ref().and_then(|k| k.extract(head.headers));
                shared.steerer.pick(key)
            }
        };
        // Live requests are recorded per route only while the candidate has a share of
        // live traffic: labelling costs a hash per request, and is spent only then.
        let label = phase
            .canary_step()
            .map(|_| shared.labels.index(head.method, head.path));
        let no_copy = Route {
            arm,
            copy: None,
            label,
        };
        if arm == Arm::Candidate || !phase.is_live() {
            return no_copy;
        }
        if !shared.mirror.classify(head).is_read() {
            ShadowStats::bump(&shared.stats.not_read);
            return no_copy;
        }
        // The share the governor has in force: one load of a word it writes once per
        // interval.
        let in_force = shared.pacing.mirror_ppm();
        let sampled = match label {
            Some(_) => in_force.min(config.canary_mirror_share.ppm()),
            None => in_force,
        };
        if sampled < Share::PPM_SCALE && rng::below(Share::PPM_SCALE) >= sampled {
            ShadowStats::bump(&shared.stats.not_sampled);
            return no_copy;
        }
        if shared.executor.load(Ordering::Acquire) != RUNNING {
            ShadowStats::bump(&shared.stats.no_executor);
            return no_copy;
        }
        if body.exceeds(config.body_limit) {
            ShadowStats::bump(&shared.stats.skipped_oversize);
            return no_copy;
        }
        // A copy that would find the queue at its limit is shed before it is made: live
        // pays for nothing the shadow will not run.
        if shared.queue.tasks.len() >= shared.pacing.queue_limit() {
            ShadowStats::bump(&shared.stats.dropped_queue_full);
            shared.pairs.record_shed();
            return no_copy;
        }
        let slot = shared.slots.take(config.body_limit);
        {
            let mut copy = slot.request();
            shared.mirror.copy(head, &mut copy);
            copy.set_attachment(head.attachment.and_then(|attach| attach()));
            copy.state_position = shared.state.as_ref().map(|state| state.live_position());
        }
        Route {
            arm,
            copy: Some(slot),
            label,
        }
    }

    /// Hands a complete copy to the worker without waiting. Returns whether it was
    /// queued; when the queue is full it is dropped, counted, and recorded as shed.
    pub(crate) fn submit(&self, slot: Arc<CopySlot>, target: TargetId) -> bool {
        let shared = self.shared();
        match shared.queue.push(Task { slot, target }) {
            Ok(()) => {
                ShadowStats::bump(&shared.stats.mirrored);
                true
            }
            Err(task) => {
                shared.slots.give_back(task.slot);
                ShadowStats::bump(&shared.stats.dropped_queue_full);
                shared.pairs.record_shed();
                false
            }
        }
    }

    /// A copy given up before it was complete: its body was larger than the limit, or
    /// never read to its end.
    pub(crate) fn abandon(&self, slot: Arc<CopySlot>, oversize: bool) {
        let shared = self.shared();
        shared.slots.give_back(slot);
        ShadowStats::bump(if oversize {
            &shared.stats.skipped_oversize
        } else {
            &shared.stats.skipped_unread_body
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks is valid at every point (a list, a counter, an
    // option), so a lock poisoned by a panic elsewhere is used as it is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
