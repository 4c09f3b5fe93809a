//! Counters of what happened to the requests the shadow could have seen.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use serde::{Deserialize, Serialize};

use super::SchedulingClass;
use super::governor::Pacing;
use crate::evidence::{ShadowCost, ShareInForce, ShareReason};
use crate::model::Share;

/// Counts of the shadow's work, what is in force, and what the shadow has cost, readable
/// at any time (see [`Rollout::shadow_counts`](crate::Rollout::shadow_counts)).
///
/// What the shadow cost: [`shadow_cpu_ns`](Self::shadow_cpu_ns) of CPU for
/// [`started`](Self::started) copies run; copies shed, by reason: dropped at the queue's
/// limit ([`dropped_queue_full`](Self::dropped_queue_full)), or run but shed from the
/// latency evidence for waiting for CPU ([`starved`](Self::starved)); reads not
/// mirrored because of the share in force, [`not_sampled`](Self::not_sampled), with the
/// share and why in [`mirror_share`](Self::mirror_share) and
/// [`share_reason`](Self::share_reason).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ShadowCounts {
    /// Stable requests the classifier did not call reads: never mirrored.
    pub not_read: u64,
    /// Reads left out by the configured mirror share
    /// ([`ShadowConfig::with_mirror_share`](super::ShadowConfig::with_mirror_share)).
    pub not_sampled: u64,
    /// Reads not mirrored because the shadow's thread could not be started (the reason is
    /// logged once).
    pub no_executor: u64,
    /// Copies handed to the shadow queue.
    pub mirrored: u64,
    /// Reads not mirrored because their body was over the limit.
    pub skipped_oversize: u64,
    /// Reads not mirrored because the live handler never read their body to the end.
    pub skipped_unread_body: u64,
    /// Copies dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Copies the candidate answered.
    pub completed: u64,
    /// Copies the stable twin ran too: pairs.
    pub paired: u64,
    /// Copies cancelled at the timeout.
    pub timed_out: u64,
    /// Copies during which the candidate panicked.
    pub panicked: u64,
    /// Copies the candidate's service refused with an error value.
    pub failed: u64,
    /// Candidate responses compared with live's.
    pub compared: u64,
    /// Of those, the ones that differed from live's in a field where the stable twin's
    /// agreed with live (every difference, for a read the twin did not answer).
    pub mismatched: u64,
    /// Answered copies whose live response could not be observed in time (the client went
    /// away, or the live body was still streaming at the timeout): not compared.
    pub comparison_missed: u64,
    /// Pairs the comparator judged not comparable (for example a stale stateful shadow).
    pub not_comparable: u64,
    /// Live requests the candidate panicked on during canary, answered with a 500.
    pub canary_panics: u64,
    /// Live requests pinned to a build by the override header.
    pub overridden: u64,
    /// Copies the shadow began to run (both builds' runs, or the candidate's alone).
    pub started: u64,
    /// Copies during which the shadow's thread waited for CPU past
    /// [`ShadowResources::max_cpu_wait`](super::ShadowResources::max_cpu_wait) (live
    /// wanted the CPU): shed from the latency evidence, since their wall latency says
    /// how busy live was; their CPU time, outcome and response are evidence still.
    pub starved: u64,
    /// Of the copies started, those whose CPU time was measured: all of them where a
    /// copy's work dwarfs reading the thread's CPU clock, a random sample where it does not
    /// (the readings then cost at most a tenth of the copies' own CPU).
    pub cpu_measured: u64,
    /// CPU time the shadow's worker thread has used, in nanoseconds (as of its last report,
    /// at most a millisecond of its work ago).
    pub shadow_cpu_ns: u64,
    /// Of that, what it used in the current UTC hour: what the cost cap counts.
    pub cpu_this_hour_ns: u64,
    /// The share of reads mirrored now.
    pub mirror_share: Share,
    /// The most it may be now: an off-peak window's share, or the configured one.
    pub mirror_ceiling: Share,
    /// Why the share is what it is.
    pub share_reason: ShareReason,
    /// Whether an off-peak window sets the ceiling now.
    pub off_peak: bool,
    /// Copies the shadow may run at once now.
    pub concurrency_limit: u64,
    /// Copies that may wait for the shadow now; one more is dropped and counted.
    pub queue_limit: u64,
    /// Live requests in flight on average over the governor's last interval, in
    /// thousandths (busy time over wall time).
    pub live_concurrency_milli: u64,
    /// The scheduling class of the shadow's worker thread.
    pub scheduling: SchedulingClass,
}

impl ShadowCounts {
    /// Copies handed to the shadow whose end is not counted yet: queued, running, or
    /// answered and waiting for their live response to compare with. Every copy ends as
    /// exactly one of timed out, panicked, failed, compared, missed or not comparable.
    ///
    /// ```
    /// use shadowlib::shadow::ShadowCounts;
    ///
    /// let mut counts = ShadowCounts::default();
    /// counts.mirrored = 5;
    /// counts.compared = 3;
    /// counts.timed_out = 1;
    /// assert_eq!(counts.in_flight(), 1);
    /// ```
    pub fn in_flight(&self) -> u64 {
        let ended = self.timed_out
            + self.panicked
            + self.failed
            + self.compared
            + self.comparison_missed
            + self.not_comparable;
        self.mirrored.saturating_sub(ended)
    }

    /// The shadow's CPU time in seconds.
    pub fn shadow_cpu_seconds(&self) -> f64 {
        self.shadow_cpu_ns as f64 / 1e9
    }

    /// The share in force, its ceiling and why, as one value.
    pub fn share_in_force(&self) -> ShareInForce {
        ShareInForce {
            share: self.mirror_share,
            ceiling: self.mirror_ceiling,
            reason: self.share_reason,
            off_peak: self.off_peak,
        }
    }

    /// What the shadow has cost, as the evidence carries it.
    pub fn cost(&self) -> ShadowCost {
        ShadowCost {
            cpu_ns: self.shadow_cpu_ns,
            copies_started: self.started,
            shed_queue_full: self.dropped_queue_full,
            starved: self.starved,
        }
    }
}

/// The shadow's counters, shared by the live path and the shadow worker: atomics only.
/// Comparisons by route are in the evidence, counted once, by the recorder.
///
/// Each counter sits on cache lines of its own: the live path bumps some on every request
/// while the shadow worker bumps others on another thread, and counters sharing a line would
/// make each bump invalidate the other core's copy (false sharing). That costs about 2 KiB
/// per runtime.
#[derive(Debug)]
pub(crate) struct ShadowStats {
    // Bumped by the live path.
    pub(crate) not_read: Counter,
    pub(crate) not_sampled: Counter,
    pub(crate) no_executor: Counter,
    pub(crate) mirrored: Counter,
    pub(crate) skipped_oversize: Counter,
    pub(crate) skipped_unread_body: Counter,
    pub(crate) dropped_queue_full: Counter,
    pub(crate) canary_panics: Counter,
    pub(crate) overridden: Counter,
    // Bumped by the shadow worker.
    pub(crate) completed: Counter,
    pub(crate) paired: Counter,
    pub(crate) timed_out: Counter,
    pub(crate) panicked: Counter,
    pub(crate) failed: Counter,
    pub(crate) compared: Counter,
    pub(crate) mismatched: Counter,
    pub(crate) comparison_missed: Counter,
    pub(crate) not_comparable: Counter,
    pub(crate) started: Counter,
    pub(crate) starved: Counter,
    pub(crate) cpu_measured: Counter,
    /// The worker thread's CPU clock, stored (not added to) by the worker.
    pub(crate) shadow_cpu_ns: Counter,
    /// Mirrored reads whose live latency the worker has seen, and the sum of those
    /// latencies: the part of live's load the recorder does not see.
    pub(crate) mirrored_live_timed: Counter,
    pub(crate) mirrored_live_busy_ns: Counter,
    /// The wall time from start to end of every copy run, for how many the shadow can
    /// start in a given time.
    pub(crate) copy_wall_ns: Counter,
}

/// A counter alone on its cache lines. It dereferences to the atomic, so
/// `ShadowStats::bump(&stats.mirrored)` passes the `AtomicU64` itself.
type Counter = CachePadded<AtomicU64>;

impl ShadowStats {
    /// Empty counters.
    pub(crate) fn new() -> Self {
        Self {
            not_read: Counter::default(),
            not_sampled: Counter::default(),
            no_executor: Counter::default(),
            mirrored: Counter::default(),
            skipped_oversize: Counter::default(),
            skipped_unread_body: Counter::default(),
            dropped_queue_full: Counter::default(),
            canary_panics: Counter::default(),
            overridden: Counter::default(),
            completed: Counter::default(),
            paired: Counter::default(),
            timed_out: Counter::default(),
            panicked: Counter::default(),
            failed: Counter::default(),
            compared: Counter::default(),
            mismatched: Counter::default(),
            comparison_missed: Counter::default(),
            not_comparable: Counter::default(),
            started: Counter::default(),
            starved: Counter::default(),
            cpu_measured: Counter::default(),
            shadow_cpu_ns: Counter::default(),
            mirrored_live_timed: Counter::default(),
            mirrored_live_busy_ns: Counter::default(),
            copy_wall_ns: Counter::default(),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `amount` to a counter only one thread writes: a load and a store, not the
    /// locked read-modify-write `bump` needs.
    pub(crate) fn add_own(counter: &AtomicU64, amount: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(amount),
            Ordering::Relaxed,
        );
    }

    /// The counts so far, with what `pacing` has in force. Each counter is read on its
    /// own, so a snapshot taken while requests run may be a few requests apart between
    /// counters.
    pub(crate) fn counts(&self, pacing: &Pacing) -> ShadowCounts {
        let get = |c: &Counter| c.load(Ordering::Relaxed);
        let share = pacing.share_in_force();
        ShadowCounts {
            not_read: get(&self.not_read),
            not_sampled: get(&self.not_sampled),
            no_executor: get(&self.no_executor),
            mirrored: get(&self.mirrored),
            skipped_oversize: get(&self.skipped_oversize),
            skipped_unread_body: get(&self.skipped_unread_body),
            dropped_queue_full: get(&self.dropped_queue_full),
            completed: get(&self.completed),
            paired: get(&self.paired),
            timed_out: get(&self.timed_out),
            panicked: get(&self.panicked),
            failed: get(&self.failed),
            compared: get(&self.compared),
            mismatched: get(&self.mismatched),
            comparison_missed: get(&self.comparison_missed),
            not_comparable: get(&self.not_comparable),
            canary_panics: get(&self.canary_panics),
            overridden: get(&self.overridden),
            started: get(&self.started),
            starved: get(&self.starved),
            cpu_measured: get(&self.cpu_measured),
            shadow_cpu_ns: get(&self.shadow_cpu_ns),
            cpu_this_hour_ns: pacing.cpu_this_hour_ns(),
            mirror_share: share.share,
            mirror_ceiling: share.ceiling,
            share_reason: share.reason,
            off_peak: share.off_peak,
            concurrency_limit: pacing.concurrency() as u64,
            queue_limit: pacing.queue_limit() as u64,
            live_concurrency_milli: pacing.live_concurrency_milli(),
            scheduling: pacing.scheduling(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter the counts show, each with how many times the tests below bump it
    /// (all different).
    fn counters(stats: &ShadowStats) -> [(&Counter, u64); 22] {
        [
            (&stats.not_read, 1),
            (&stats.mirrored, 2),
            (&stats.skipped_oversize, 3),
            (&stats.skipped_unread_body, 4),
            (&stats.dropped_queue_full, 5),
            (&stats.completed, 6),
            (&stats.timed_out, 7),
            (&stats.panicked, 8),
            (&stats.failed, 9),
            (&stats.compared, 10),
            (&stats.mismatched, 11),
            (&stats.comparison_missed, 12),
            (&stats.not_comparable, 13),
            (&stats.canary_panics, 14),
            (&stats.overridden, 15),
            (&stats.not_sampled, 16),
            (&stats.no_executor, 17),
            (&stats.paired, 18),
            (&stats.started, 19),
            (&stats.starved, 20),
            (&stats.shadow_cpu_ns, 21),
            (&stats.cpu_measured, 22),
        ]
    }

    #[test]
    fn each_counter_feeds_its_own_count() {
        let stats = ShadowStats::new();
        for (counter, times) in counters(&stats) {
            for _ in 0..times {
                ShadowStats::bump(counter);
            }
        }
        let share = ShareInForce {
            share: Share::FULL,
            ceiling: Share::FULL,
            reason: ShareReason::Configured,
            off_peak: false,
        };
        let pacing = Pacing::new(share, 16, 1024);
        assert_eq!(
            stats.counts(&pacing),
            ShadowCounts {
                not_read: 1,
                mirrored: 2,
                skipped_oversize: 3,
                skipped_unread_body: 4,
                dropped_queue_full: 5,
                completed: 6,
                timed_out: 7,
                panicked: 8,
                failed: 9,
                compared: 10,
                mismatched: 11,
                comparison_missed: 12,
                not_comparable: 13,
                canary_panics: 14,
                overridden: 15,
                not_sampled: 16,
                no_executor: 17,
                paired: 18,
                started: 19,
                starved: 20,
                shadow_cpu_ns: 21,
                cpu_measured: 22,
                cpu_this_hour_ns: 0,
                mirror_share: Share::FULL,
                mirror_ceiling: Share::FULL,
                share_reason: ShareReason::Configured,
                off_peak: false,
                concurrency_limit: 16,
                queue_limit: 1024,
                live_concurrency_milli: 0,
                scheduling: SchedulingClass::NotStarted,
            }
        );
    }

    #[test]
    fn no_two_counters_share_a_cache_line() {
        let stats = ShadowStats::new();
        // The target's cache line, or the pair of lines its prefetcher pulls together.
        let line = std::mem::align_of::<CachePadded<u8>>();
        let internal = [
            &stats.mirrored_live_timed,
            &stats.mirrored_live_busy_ns,
            &stats.copy_wall_ns,
        ];
        let lines: Vec<usize> = counters(&stats)
            .iter()
            .map(|(counter, _)| *counter)
            .chain(internal)
            .map(|counter| std::ptr::from_ref::<AtomicU64>(counter) as usize / line)
            .collect();
        let mut distinct = lines.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), lines.len(), "counters by line: {lines:?}");
    }
}
