//! What the shadow measured: the stable twin and the candidate, on the same mirrored reads;
//! and what running it cost.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ArmEvidence, DistributionError, PairedEvidence};
use crate::model::Share;

/// What the shadow measured while it ran mirrored reads on both builds.
///
/// Each mirrored read runs on a clone of the stable build (the *twin*) and on the
/// candidate, one after the other in a random order, on the shadow's thread: the two are
/// measured the same way, in the same place, on the same requests. [`pairs`](Self::pairs)
/// is what the shadow phase is judged on; the two arms describe each build on its own
/// (its latency distribution, its CPU per request) for reports and capacity.
///
/// ```
/// use shadowlib::{Outcome, ShadowEvidence};
///
/// let mut shadow = ShadowEvidence::default();
/// shadow.twin.record_request(Outcome::Success, 900);
/// shadow.candidate.record_request(Outcome::Success, 950);
/// assert_eq!(shadow.candidate.requests(), 1);
/// assert_eq!(shadow.cost.copies_started, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowEvidence {
    /// The stable build as the shadow ran it.
    pub twin: ArmEvidence,
    /// The candidate as the shadow ran it (its reads without a twin included).
    pub candidate: ArmEvidence,
    /// The reads both ran, paired.
    pub pairs: PairedEvidence,
    /// Reads the candidate ran without the twin (see
    /// [`ShadowConfig::with_twin_share`](crate::shadow::ShadowConfig::with_twin_share)):
    /// counted, never paired.
    pub unpaired: u64,
    /// What running the shadow cost, as of the governor's last look.
    #[serde(default)]
    pub cost: ShadowCost,
    /// The share of reads mirrored at the governor's last look, and why.
    #[serde(default)]
    pub share: Option<ShareInForce>,
}

impl ShadowEvidence {
    /// Adds other shadow evidence about the same builds (another replica's: costs add up,
    /// and the share in force stays this one's unless it has none).
    pub fn merge(&mut self, other: &ShadowEvidence) -> Result<(), DistributionError> {
        self.twin.merge(&other.twin)?;
        self.candidate.merge(&other.candidate)?;
        self.pairs.merge(&other.pairs);
        self.unpaired += other.unpaired;
        self.cost.merge(&other.cost);
        if self.share.is_none() {
            self.share = other.share;
        }
        Ok(())
    }
}

/// What the shadow cost: CPU, copies run, and copies shed and why.
///
/// Copies dropped at a full queue are recorded as [`Outcome::Shed`](crate::Outcome::Shed)
/// in the candidate's outcomes too.
///
/// ```
/// use shadowlib::shadow::ShadowCost;
///
/// let mut cost = ShadowCost { cpu_ns: 1_500_000_000, copies_started: 3_000, ..ShadowCost::default() };
/// cost.merge(&cost.clone());
/// assert_eq!(cost.cpu_seconds(), 3.0);
/// assert_eq!(cost.cpu_ns_per_copy(), Some(500_000.0));
/// cost.shed_queue_full = 12;
/// assert_eq!(
///     cost.to_string(),
///     "3.000 CPU-seconds for 6000 copies run (500.0 µs each); shed: 12 at the queue's limit, 0 starved of CPU"
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowCost {
    /// CPU time the shadow's worker thread used, in nanoseconds: both builds' runs and
    /// everything around them.
    pub cpu_ns: u64,
    /// Copies the shadow began to run.
    pub copies_started: u64,
    /// Copies dropped because the shadow's queue was full (or at the limit that follows
    /// live).
    pub shed_queue_full: u64,
    /// Copies during which the shadow's thread waited for CPU past the deadline: shed
    /// from the latency evidence (their wall latency says how busy live was, not how fast
    /// either build is); their CPU time, outcome and comparison are evidence still.
    pub starved: u64,
}

impl ShadowCost {
    /// The CPU in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_ns as f64 / 1e9
    }

    /// CPU per copy started, in nanoseconds; `None` before the first.
    pub fn cpu_ns_per_copy(&self) -> Option<f64> {
        (self.copies_started > 0).then(|| self.cpu_ns as f64 / self.copies_started as f64)
    }

    /// What the shadow cost between `earlier` (the same shadow's cost at an earlier look)
    /// and now.
    ///
    /// ```
    /// use shadowlib::shadow::ShadowCost;
    ///
    /// let earlier = ShadowCost { copies_started: 100, ..ShadowCost::default() };
    /// let now = ShadowCost { copies_started: 115, shed_queue_full: 85, starved: 5, ..earlier };
    /// let interval = now.since(&earlier);
    /// assert_eq!((interval.copies_started, interval.shed_queue_full), (15, 85));
    /// assert_eq!(interval.shed_share(), Some(0.9));
    /// assert_eq!(now.since(&now).shed_share(), None);
    /// ```
    pub fn since(&self, earlier: &ShadowCost) -> ShadowCost {
        ShadowCost {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            copies_started: self.copies_started.saturating_sub(earlier.copies_started),
            shed_queue_full: self.shed_queue_full.saturating_sub(earlier.shed_queue_full),
            starved: self.starved.saturating_sub(earlier.starved),
        }
    }

    /// Of the copies handed to the shadow, the share it shed: dropped at the queue's limit
    /// or starved of CPU past the deadline. `None` when none were handed to it.
    pub fn shed_share(&self) -> Option<f64> {
        // A starved copy was started: it is among `copies_started` and shed from the
        // evidence.
        let starved = self.starved.min(self.copies_started);
        let handed = self.copies_started + self.shed_queue_full;
        (handed > 0).then(|| (self.shed_queue_full + starved) as f64 / handed as f64)
    }

    /// Adds another replica's costs.
    pub fn merge(&mut self, other: &ShadowCost) {
        self.cpu_ns += other.cpu_ns;
        self.copies_started += other.copies_started;
        self.shed_queue_full += other.shed_queue_full;
        self.starved += other.starved;
    }
}

impl fmt::Display for ShadowCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.3} CPU-seconds for {} copies run",
            self.cpu_seconds(),
            self.copies_started
        )?;
        if let Some(per_copy) = self.cpu_ns_per_copy() {
            write!(f, " ({:.1} µs each)", per_copy / 1e3)?;
        }
        write!(
            f,
            "; shed: {} at the queue's limit, {} starved of CPU",
            self.shed_queue_full, self.starved
        )
    }
}

/// Why the share of reads mirrored is what it is.
///
/// ```
/// use shadowlib::shadow::ShareReason;
///
/// assert!(ShareReason::LiveLatency.is_cut());
/// assert!(!ShareReason::Headroom.is_cut());
/// assert_eq!(ShareReason::CostCap.to_string(), "the shadow's CPU budget for this hour is spent");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ShareReason {
    /// The configured share, which nothing adapts.
    #[default]
    Configured,
    /// An off-peak window's share, which nothing adapts.
    OffPeak,
    /// The adaptive share's floor, where it starts before its first look.
    Starting,
    /// Live had headroom at the last look: the adaptive share rose (or stays at its
    /// ceiling).
    Headroom,
    /// Live's latency rose past its baseline: the adaptive share was cut.
    LiveLatency,
    /// Live's CPU was above the ceiling: the adaptive share was cut.
    LiveCpu,
    /// The shadow shed more copies than it may: the adaptive share was cut.
    ShadowSheds,
    /// The shadow's CPU-seconds for this UTC hour are spent: nothing is mirrored until the
    /// next hour.
    CostCap,
}

impl ShareReason {
    /// Whether the share was cut for live's sake, or the shadow's cost.
    pub fn is_cut(self) -> bool {
        matches!(
            self,
            Self::LiveLatency | Self::LiveCpu | Self::ShadowSheds | Self::CostCap
        )
    }

    pub(crate) fn to_code(self) -> u8 {
        match self {
            Self::Configured => 0,
            Self::OffPeak => 1,
            Self::Starting => 2,
            Self::Headroom => 3,
            Self::LiveLatency => 4,
            Self::LiveCpu => 5,
            Self::ShadowSheds => 6,
            Self::CostCap => 7,
        }
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => Self::OffPeak,
            2 => Self::Starting,
            3 => Self::Headroom,
            4 => Self::LiveLatency,
            5 => Self::LiveCpu,
            6 => Self::ShadowSheds,
            7 => Self::CostCap,
            _ => Self::Configured,
        }
    }
}

impl fmt::Display for ShareReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Configured => "the configured share",
            Self::OffPeak => "an off-peak window's share",
            Self::Starting => "the adaptive share starts at its floor",
            Self::Headroom => "live has headroom",
            Self::LiveLatency => "live latency rose",
            Self::LiveCpu => "live CPU is above its ceiling",
            Self::ShadowSheds => "the shadow shed copies",
            Self::CostCap => "the shadow's CPU budget for this hour is spent",
        })
    }
}

/// The share of reads mirrored, its ceiling, and why it is what it is.
///
/// ```
/// use shadowlib::Share;
/// use shadowlib::shadow::{ShareInForce, ShareReason};
///
/// let share = ShareInForce {
///     share: Share::from_percent(12.5)?,
///     ceiling: Share::FULL,
///     reason: ShareReason::LiveCpu,
///     off_peak: false,
/// };
/// assert_eq!(share.to_string(), "12.5% of reads (ceiling 100%): live CPU is above its ceiling");
/// # Ok::<(), shadowlib::ShareError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareInForce {
    /// The share of reads mirrored.
    pub share: Share,
    /// The most it may be now: an off-peak window's share, or the configured one.
    pub ceiling: Share,
    /// Why it is what it is.
    pub reason: ShareReason,
    /// Whether an off-peak window set the ceiling.
    pub off_peak: bool,
}

impl fmt::Display for ShareInForce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of reads (ceiling {}{}): {}",
            self.share,
            self.ceiling,
            if self.off_peak { ", off-peak" } else { "" },
            self.reason
        )
    }
}

/// What the shadow is doing for a rollout and what it has cost, as of a look: the
/// share of reads it mirrors and why, its cost so far, and whether live left it too little
/// CPU to run what it was handed. In [`RolloutStatus`](crate::RolloutStatus) and every
/// [`RolloutEvent`](crate::RolloutEvent).
///
/// ```
/// use shadowlib::Share;
/// use shadowlib::shadow::{ShadowActivity, ShadowCost, ShareInForce, ShareReason};
///
/// let mut activity = ShadowActivity::default();
/// activity.share = Some(ShareInForce {
///     share: Share::from_percent(5.0)?,
///     ceiling: Share::FULL,
///     reason: ShareReason::LiveLatency,
///     off_peak: false,
/// });
/// activity.cost = ShadowCost { cpu_ns: 2_000_000_000, copies_started: 4_000, ..ShadowCost::default() };
/// assert_eq!(
///     activity.to_string(),
///     "mirroring 5% of reads (ceiling 100%): live latency rose; cost 2.000 CPU-seconds for \
///      4000 copies run (500.0 µs each); shed: 0 at the queue's limit, 0 starved of CPU"
/// );
/// # Ok::<(), shadowlib::ShareError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ShadowActivity {
    /// The share of reads mirrored and why; `None` before the shadow's governor has
    /// looked, or with no shadow.
    pub share: Option<ShareInForce>,
    /// What the shadow has cost since it started.
    pub cost: ShadowCost,
    /// Whether, between the last two looks, the shadow shed more than half of the copies
    /// handed to it (at the queue's limit or starved of CPU): live is using the CPU the
    /// shadow runs on, so the shadow's evidence grows slowly or not at all until live
    /// leaves some idle.
    pub starved: bool,
}

impl ShadowActivity {
    /// The share of what the shadow was handed that it may shed before it is starved.
    pub(crate) const STARVED_ABOVE: f64 = 0.5;

    /// The shadow's figures in `evidence`, judged starved on `interval` (its cost since
    /// the look before).
    pub(crate) fn at_look(evidence: &ShadowEvidence, interval: &ShadowCost) -> Self {
        Self {
            share: evidence.share,
            cost: evidence.cost,
            starved: interval
                .shed_share()
                .is_some_and(|shed| shed > Self::STARVED_ABOVE),
        }
    }
}

impl fmt::Display for ShadowActivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(share) = &self.share {
            write!(f, "mirroring {share}; ")?;
        }
        write!(f, "cost {}", self.cost)?;
        if self.starved {
            f.write_str("; starved: live left the shadow too little CPU since the last look")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_add_their_costs_and_keep_a_share() {
        let share = ShareInForce {
            share: Share::FULL,
            ceiling: Share::FULL,
            reason: ShareReason::OffPeak,
            off_peak: true,
        };
        let replica = ShadowEvidence {
            cost: ShadowCost {
                cpu_ns: 10,
                copies_started: 2,
                shed_queue_full: 1,
                starved: 1,
            },
            share: Some(share),
            ..ShadowEvidence::default()
        };
        let mut pooled = ShadowEvidence::default();
        pooled.merge(&replica).expect("same bounds");
        pooled.merge(&replica).expect("same bounds");
        assert_eq!(pooled.cost.cpu_ns, 20);
        assert_eq!(pooled.cost.starved, 2);
        assert_eq!(pooled.share, Some(share));
    }

    #[test]
    fn evidence_kept_before_costs_were_recorded_still_reads() {
        let mut old = serde_json::to_value(ShadowEvidence::default()).expect("serializes");
        let fields = old.as_object_mut().expect("an object");
        fields.remove("cost");
        fields.remove("share");
        let read: ShadowEvidence = serde_json::from_value(old).expect("deserializes");
        assert_eq!(read, ShadowEvidence::default());
    }
}
