//! The governor: once per interval it looks at what live did, and sets what the shadow
//! may use until the next look — the share of reads mirrored (the schedule, the cost cap,
//! the adaptive share), the copies run at once and the queue's limit (following live).
//!
//! It runs on a thread of its own at the process's own scheduling class, not on the
//! shadow's: the shadow's thread gets CPU only when live leaves some, and the governor must
//! look on time exactly when live takes it all. What it sets, the live path and the worker
//! read with one relaxed load each ([`Pacing`]).
//!
//! The decision itself ([`Pacer`]) is a plain function of what each look saw, so tests
//! drive it look by look, and the loop around it under paused tokio time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, MissedTickBehavior};

use super::SchedulingClass;
use super::resources::{ShadowResources, TimeOfDay};
use super::runtime::Shared;
use crate::evidence::{LATENCY_FLOOR_US, ShareInForce, ShareReason};
use crate::metrics::sample_process;
use crate::model::Share;

/// Fewest live requests with a latency in an interval for its mean to be judged: fewer say
/// too little to call a rise, and the latency neither cuts nor moves the baseline then.
const MIN_LATENCY_SAMPLES: u64 = 20;

/// The weight of the newest interval in live latency's baseline: about the last five
/// intervals with headroom make it.
const BASELINE_WEIGHT: f64 = 0.2;

/// Intervals whose live concurrency the shadow's concurrency follows the peak of: a burst
/// sizes the shadow for ten intervals, not one.
const CONCURRENCY_WINDOW: usize = 10;

/// What the governor has put in force, for the live path and the worker to read.
///
/// The share, its ceiling, the reason and whether an off-peak window is on are packed in
/// one word, so that every reader sees the four of one look together.
#[derive(Debug)]
pub(crate) struct Pacing {
    share: AtomicU64,
    queue_limit: AtomicUsize,
    concurrency: AtomicUsize,
    live_concurrency_milli: AtomicU64,
    cpu_this_hour_ns: AtomicU64,
    scheduling: AtomicU8,
}

/// Bits of a share in parts per million (1,000,000 < 2^20).
const PPM_BITS: u32 = 20;
const PPM_MASK: u64 = (1 << PPM_BITS) - 1;

fn pack(share: ShareInForce) -> u64 {
    u64::from(share.share.ppm())
        | (u64::from(share.ceiling.ppm()) << PPM_BITS)
        | (u64::from(share.reason.to_code()) << (2 * PPM_BITS))
        | (u64::from(share.off_peak) << (2 * PPM_BITS + 8))
}

fn unpack_share(word: u64, shift: u32) -> Share {
    // Packed from a valid share, so always in range.
    Share::from_ppm(((word >> shift) & PPM_MASK) as u32).unwrap_or(Share::ZERO)
}

impl Pacing {
    pub(crate) fn new(share: ShareInForce, concurrency: usize, queue_limit: usize) -> Self {
        Self {
            share: AtomicU64::new(pack(share)),
            queue_limit: AtomicUsize::new(queue_limit),
            concurrency: AtomicUsize::new(concurrency),
            live_concurrency_milli: AtomicU64::new(0),
            cpu_this_hour_ns: AtomicU64::new(0),
            scheduling: AtomicU8::new(SchedulingClass::NotStarted.to_code()),
        }
    }

    /// The share of reads to mirror, in parts per million: the live path's one load.
    pub(crate) fn mirror_ppm(&self) -> u32 {
        (self.share.load(Ordering::Relaxed) & PPM_MASK) as u32
    }

    pub(crate) fn share_in_force(&self) -> ShareInForce {
        let word = self.share.load(Ordering::Relaxed);
        ShareInForce {
            share: unpack_share(word, 0),
            ceiling: unpack_share(word, PPM_BITS),
            reason: ShareReason::from_code(((word >> (2 * PPM_BITS)) & 0xff) as u8),
            off_peak: (word >> (2 * PPM_BITS + 8)) & 1 == 1,
        }
    }

    pub(crate) fn queue_limit(&self) -> usize {
        self.queue_limit.load(Ordering::Relaxed)
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency.load(Ordering::Relaxed)
    }

    pub(crate) fn live_concurrency_milli(&self) -> u64 {
        self.live_concurrency_milli.load(Ordering::Relaxed)
    }

    pub(crate) fn cpu_this_hour_ns(&self) -> u64 {
        self.cpu_this_hour_ns.load(Ordering::Relaxed)
    }

    pub(crate) fn scheduling(&self) -> SchedulingClass {
        SchedulingClass::from_code(self.scheduling.load(Ordering::Relaxed))
    }

    pub(crate) fn set_scheduling(&self, class: SchedulingClass) {
        self.scheduling.store(class.to_code(), Ordering::Relaxed);
    }

    fn publish(&self, paced: &Paced) {
        self.share.store(pack(paced.share), Ordering::Relaxed);
        self.queue_limit.store(paced.queue_limit, Ordering::Relaxed);
        self.concurrency.store(paced.concurrency, Ordering::Relaxed);
        self.live_concurrency_milli.store(
            (paced.live_concurrency * 1000.0).round() as u64,
            Ordering::Relaxed,
        );
        self.cpu_this_hour_ns
            .store(paced.cpu_this_hour_ns, Ordering::Relaxed);
    }
}

/// What the governor needs of the world outside the shadow: the process's CPU, the time
/// of day, the cores. A trait so that tests can play the world.
pub(crate) trait Surroundings: Send {
    /// The CPU time of all the process's threads since it started, where the platform
    /// tells it.
    fn process_cpu(&self) -> Option<Duration>;
    /// Seconds since the Unix epoch (UTC).
    fn unix_seconds(&self) -> u64;
    /// The cores the process may run on.
    fn cores(&self) -> f64;
}

/// The real world: `/proc/self/stat`, the system clock, the available parallelism.
pub(crate) struct System;

impl Surroundings for System {
    fn process_cpu(&self) -> Option<Duration> {
        sample_process().ok().map(|sample| sample.cpu_time)
    }

    fn unix_seconds(&self) -> u64 {
        // A clock set before 1970 reads as midnight, 1 January 1970: no window, no hour
        // change, nothing worse.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    }

    fn cores(&self) -> f64 {
        std::thread::available_parallelism().map_or(1.0, |cores| cores.get() as f64)
    }
}

/// Everything the governor reads, as totals since the shadow started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Totals {
    /// Live requests with a latency, and the sum of their latencies.
    pub(crate) live_timed: u64,
    pub(crate) live_busy_ns: u64,
    /// The process's CPU, where known.
    pub(crate) process_cpu_ns: Option<u64>,
    /// The shadow's worker thread's CPU.
    pub(crate) shadow_cpu_ns: u64,
    /// Copies offered to the shadow (queued or dropped), and of them those shed: dropped,
    /// or starved of CPU.
    pub(crate) offered: u64,
    pub(crate) shed: u64,
    /// Copies run to their end, and the wall time they took.
    pub(crate) copies_finished: u64,
    pub(crate) copy_wall_ns: u64,
}

/// What one interval saw: the difference of two [`Totals`], with the time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Look {
    pub(crate) wall: Duration,
    pub(crate) unix_seconds: u64,
    pub(crate) cores: f64,
    pub(crate) now: Totals,
    pub(crate) since: Totals,
}

impl Look {
    fn delta(&self, field: impl Fn(&Totals) -> u64) -> u64 {
        field(&self.now).saturating_sub(field(&self.since))
    }

    /// Live's mean latency over the interval, in microseconds, when enough requests say.
    fn live_latency_us(&self) -> Option<f64> {
        let timed = self.delta(|t| t.live_timed);
        (timed >= MIN_LATENCY_SAMPLES)
            .then(|| self.delta(|t| t.live_busy_ns) as f64 / timed as f64 / 1e3)
    }

    /// Live requests in flight on average: busy time over wall time (Little's law).
    fn live_concurrency(&self) -> f64 {
        let wall = self.wall.as_nanos() as f64;
        if wall > 0.0 {
            self.delta(|t| t.live_busy_ns) as f64 / wall
        } else {
            0.0
        }
    }

    /// The fraction of the cores live's CPU used: the process's, less the shadow's own.
    fn live_cpu_fraction(&self) -> Option<f64> {
        let (now, since) = (self.now.process_cpu_ns?, self.since.process_cpu_ns?);
        let live = now.saturating_sub(since) as f64 - self.delta(|t| t.shadow_cpu_ns) as f64;
        let capacity = self.wall.as_nanos() as f64 * self.cores;
        (capacity > 0.0).then(|| live.max(0.0) / capacity)
    }

    /// The fraction of copies offered that were shed, and whether any were.
    fn shed_fraction(&self) -> Option<f64> {
        let shed = self.delta(|t| t.shed);
        let offered = self.delta(|t| t.offered).max(shed);
        (shed > 0).then(|| shed as f64 / offered as f64)
    }

    /// The mean wall time of the copies finished in the interval, in nanoseconds.
    fn mean_copy_wall_ns(&self) -> Option<f64> {
        let finished = self.delta(|t| t.copies_finished);
        (finished > 0).then(|| self.delta(|t| t.copy_wall_ns) as f64 / finished as f64)
    }
}

/// What the governor puts in force after a look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Paced {
    pub(crate) share: ShareInForce,
    pub(crate) concurrency: usize,
    pub(crate) queue_limit: usize,
    pub(crate) live_concurrency: f64,
    pub(crate) cpu_this_hour_ns: u64,
}

/// The governor's decisions, look by look (see [`ShadowResources`] and
/// [`AdaptiveShare`](super::AdaptiveShare) for what each rule is and why).
#[derive(Debug)]
pub(crate) struct Pacer {
    resources: ShadowResources,
    /// The share outside off-peak windows.
    base_share: Share,
    /// The adaptive share where it stands (before the ceiling and the cap).
    adaptive_share: Share,
    /// Live's mean latency plus the latency floor, in microseconds, while live had
    /// headroom.
    baseline_us: Option<f64>,
    live_concurrency: VecDeque<f64>,
    mean_copy_wall_ns: Option<f64>,
    /// The UTC hour the cost cap counts, and the shadow's CPU when it was first seen.
    hour: Option<(u64, u64)>,
    /// The share of copies the twin runs too.
    twin_share: Share,
}

impl Pacer {
    pub(crate) fn new(resources: ShadowResources, base_share: Share) -> Self {
        let adaptive_share = resources
            .adaptive
            .map_or(base_share, |adaptive| adaptive.floor);
        Self {
            resources,
            base_share,
            adaptive_share,
            baseline_us: None,
            live_concurrency: VecDeque::with_capacity(CONCURRENCY_WINDOW),
            mean_copy_wall_ns: None,
            hour: None,
            twin_share: Share::FULL,
        }
    }

    /// The share of copies the stable twin runs too (all, unless set).
    pub(crate) fn with_twin_share(mut self, twin_share: Share) -> Self {
        self.twin_share = twin_share;
        self
    }

    /// The ceiling at `unix_seconds`: an off-peak window's share, or the base share.
    fn ceiling(&self, unix_seconds: u64) -> (Share, bool) {
        match self
            .resources
            .window_at(TimeOfDay::of_unix_seconds(unix_seconds))
        {
            Some(window) => (window.share, true),
            None => (self.base_share, false),
        }
    }

    /// What is in force before the first look: the budget's figures, and the share the
    /// schedule and the adaptive share start from.
    pub(crate) fn initial(&self, unix_seconds: u64) -> Paced {
        let (ceiling, off_peak) = self.ceiling(unix_seconds);
        let (share, reason) = match self.resources.adaptive {
            Some(adaptive) => (adaptive.floor.min(ceiling), ShareReason::Starting),
            None if off_peak => (ceiling, ShareReason::OffPeak),
            None => (ceiling, ShareReason::Configured),
        };
        Paced {
            share: ShareInForce {
                share,
                ceiling,
                reason,
                off_peak,
            },
            concurrency: self.resources.budget.concurrency,
            queue_limit: self.resources.budget.queue_capacity,
            live_concurrency: 0.0,
            cpu_this_hour_ns: 0,
        }
    }

    /// Decides what holds until the next look, from what this one saw.
    pub(crate) fn look(&mut self, look: &Look) -> Paced {
        let (ceiling, off_peak) = self.ceiling(look.unix_seconds);
        let cpu_this_hour_ns = self.cpu_this_hour(look);
        let over_cap = self
            .resources
            .cpu_seconds_per_hour
            .is_some_and(|cap| cpu_this_hour_ns as f64 / 1e9 >= cap);
        let (share, reason) = if over_cap {
            // The next hour starts again from the floor: what held an hour ago says
            // nothing of live's headroom now.
            if let Some(adaptive) = self.resources.adaptive {
                self.adaptive_share = adaptive.floor;
            }
            (Share::ZERO, ShareReason::CostCap)
        } else {
            self.share_for(look, ceiling, off_peak)
        };
        let live_concurrency = look.live_concurrency();
        let concurrency = self.concurrency(live_concurrency);
        let queue_limit = self.queue_limit(look, concurrency);
        Paced {
            share: ShareInForce {
                share,
                ceiling,
                reason,
                off_peak,
            },
            concurrency,
            queue_limit,
            live_concurrency,
            cpu_this_hour_ns,
        }
    }

    /// The shadow's CPU in the current UTC hour. An hour's count starts at the first look
    /// in it, so what the shadow used between the hour's start and that look (one
    /// interval at most) counts for the hour before.
    fn cpu_this_hour(&mut self, look: &Look) -> u64 {
        let hour = look.unix_seconds / 3600;
        let cpu = look.now.shadow_cpu_ns;
        let start = match self.hour {
            Some((counted, start)) if counted == hour => start,
            _ => {
                let start = if self.hour.is_some() {
                    cpu
                } else {
                    // The first look: the hour's count starts where the shadow started.
                    look.since.shadow_cpu_ns
                };
                self.hour = Some((hour, start));
                start
            }
        };
        cpu.saturating_sub(start)
    }

    /// The share from the schedule and, when it is on, the adaptive share.
    fn share_for(&mut self, look: &Look, ceiling: Share, off_peak: bool) -> (Share, ShareReason) {
        let Some(adaptive) = self.resources.adaptive else {
            let reason = if off_peak {
                ShareReason::OffPeak
            } else {
                ShareReason::Configured
            };
            return (ceiling, reason);
        };
        let floor = adaptive.floor.min(ceiling);
        let latency = look
            .live_latency_us()
            .map(|mean| mean + LATENCY_FLOOR_US as f64);
        let latency_rose = matches!(
            (latency, self.baseline_us),
            (Some(now), Some(baseline)) if now > baseline * (1.0 + adaptive.latency_rise)
        );
        let cut = if latency_rose {
            Some(ShareReason::LiveLatency)
        } else if look
            .live_cpu_fraction()
            .is_some_and(|fraction| fraction > adaptive.cpu_ceiling)
        {
            Some(ShareReason::LiveCpu)
        } else if look
            .shed_fraction()
            .is_some_and(|fraction| fraction > adaptive.shed_tolerance)
        {
            Some(ShareReason::ShadowSheds)
        } else {
            None
        };
        let share = match cut {
            Some(_) => {
                let ppm = (f64::from(self.adaptive_share.ppm()) * adaptive.cut).floor();
                // Below the old share and at least zero, so a valid share.
                Share::from_ppm(ppm as u32)
                    .unwrap_or(Share::ZERO)
                    .max(floor)
            }
            None => {
                let ppm = self
                    .adaptive_share
                    .ppm()
                    .saturating_add(adaptive.step.ppm());
                Share::from_ppm(ppm.min(Share::PPM_SCALE)).unwrap_or(Share::FULL)
            }
        }
        .min(ceiling)
        .max(floor);
        // Live's own latency is learnt while the shadow is not to blame for it: with
        // headroom, or with the share already at its floor.
        if let Some(now) = latency
            && (cut.is_none() || self.adaptive_share <= floor)
        {
            self.baseline_us = Some(match self.baseline_us {
                Some(baseline) => baseline + (now - baseline) * BASELINE_WEIGHT,
                None => now,
            });
        }
        self.adaptive_share = share;
        (share, cut.unwrap_or(ShareReason::Headroom))
    }

    /// The copies run at once: the peak of live's concurrency over the last intervals,
    /// for each build a copy runs on (it runs the twin and the candidate one after the
    /// other, so it takes about twice a live request's time), rounded up, within the
    /// budget.
    fn concurrency(&mut self, live: f64) -> usize {
        let cap = self.resources.budget.concurrency;
        if !self.resources.follow_live {
            return cap;
        }
        if self.live_concurrency.len() == CONCURRENCY_WINDOW {
            self.live_concurrency.pop_front();
        }
        self.live_concurrency.push_back(live);
        let peak = self.live_concurrency.iter().copied().fold(0.0, f64::max);
        let builds = 1.0 + self.twin_share.fraction();
        ((peak * builds).ceil() as usize).clamp(1, cap)
    }

    /// The queue's limit: what the shadow can start within the CPU-wait deadline at
    /// `concurrency`, from how long its copies took (the budget's capacity until it
    /// knows), never below one copy per slot.
    fn queue_limit(&mut self, look: &Look, concurrency: usize) -> usize {
        let capacity = self.resources.budget.queue_capacity;
        if !self.resources.follow_live {
            return capacity;
        }
        if let Some(mean) = look.mean_copy_wall_ns() {
            self.mean_copy_wall_ns = Some(mean);
        }
        let Some(mean) = self.mean_copy_wall_ns else {
            return capacity;
        };
        let startable =
            concurrency as f64 * self.resources.max_cpu_wait.as_nanos() as f64 / mean.max(1.0);
        let floor = concurrency.min(capacity);
        if startable >= capacity as f64 {
            capacity
        } else {
            (startable.ceil() as usize).clamp(floor, capacity)
        }
    }
}

/// The governor's loop: see the [module docs](self).
pub(crate) struct Governor {
    shared: Arc<Shared>,
    surroundings: Box<dyn Surroundings>,
}

impl Governor {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            surroundings: Box::new(System),
        }
    }

    /// The same governor in a world the test plays.
    #[cfg(test)]
    pub(crate) fn in_surroundings(mut self, surroundings: impl Surroundings + 'static) -> Self {
        self.surroundings = Box::new(surroundings);
        self
    }

    fn totals(&self) -> Totals {
        let shared = &self.shared;
        let counts = shared.stats.counts(&shared.pacing);
        let (live_timed, live_busy_ns) = shared.recorder.live_load();
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Totals {
            live_timed: live_timed + get(&shared.stats.mirrored_live_timed),
            live_busy_ns: live_busy_ns.saturating_add(get(&shared.stats.mirrored_live_busy_ns)),
            // Only the adaptive share reads it: a file read a look is not spent for nothing.
            process_cpu_ns: shared
                .config
                .resources
                .adaptive
                .and_then(|_| self.surroundings.process_cpu())
                .map(|cpu| u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX)),
            shadow_cpu_ns: counts.shadow_cpu_ns,
            offered: counts.mirrored + counts.dropped_queue_full,
            shed: counts.dropped_queue_full + counts.starved,
            copies_finished: counts.completed + counts.timed_out + counts.panicked + counts.failed,
            copy_wall_ns: get(&shared.stats.copy_wall_ns),
        }
    }

    /// Looks once per interval until every live-side handle is gone.
    pub(crate) async fn run(self) {
        let resources = &self.shared.config.resources;
        let interval = resources.interval;
        let config = &self.shared.config;
        let mut pacer =
            Pacer::new(resources.clone(), config.mirror_share).with_twin_share(config.twin_share);
        let mut since = self.totals();
        let mut at = Instant::now();
        self.publish(&pacer.initial(self.surroundings.unix_seconds()));
        let mut ticks = tokio::time::interval_at(at + interval, interval);
        // After a stall (a suspended machine), look once and go on from there.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if self.shared.queue.is_closed() {
                return;
            }
            let now = Instant::now();
            let totals = self.totals();
            let look = Look {
                wall: now.duration_since(at),
                unix_seconds: self.surroundings.unix_seconds(),
                cores: self.surroundings.cores(),
                now: totals,
                since,
            };
            let paced = pacer.look(&look);
            self.publish(&paced);
            (since, at) = (totals, now);
        }
    }

    fn publish(&self, paced: &Paced) {
        let shared = &self.shared;
        let before = shared.pacing.share_in_force();
        shared.pacing.publish(paced);
        if before != paced.share {
            tracing::info!(
                share = %paced.share.share,
                ceiling = %paced.share.ceiling,
                reason = %paced.share.reason,
                "shadow mirror share changed"
            );
        }
        let counts = shared.stats.counts(&shared.pacing);
        shared.pairs.set_resources(counts.cost(), paced.share);
    }
}

#[cfg(test)]
mod tests;
