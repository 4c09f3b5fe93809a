//! What the predictors see: the two builds' statistics side by side.
//!
//! Every statistic here is *mergeable*: histograms add bucket by bucket and moments combine
//! exactly, so evidence from several sources, intervals or replicas adds up to the evidence
//! one recorder would have seen. That is why latency is kept as an HDR histogram and not as
//! a list of percentiles (percentiles cannot be averaged).

mod arm;
mod canary;
mod display;
mod distribution;
mod moments;
mod outcomes;
mod paired;
mod process;
mod route;
mod shadow;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use arm::ArmEvidence;
pub use canary::{CanaryEvidence, CanaryStep};
pub use distribution::{Distribution, DistributionError};
pub use moments::Moments;
pub use outcomes::OutcomeCounts;
pub use paired::{FieldDifferences, PairStats, PairedEvidence, PairedMismatches, PairedOutcomes};
pub use process::ProcessEvidence;
pub use route::RouteEvidence;
pub use shadow::{ShadowActivity, ShadowCost, ShadowEvidence, ShareInForce, ShareReason};

use crate::model::{Arm, LivePhase, Phase, SampleCount, Share, Version};

/// What latency is judged relative to: a build's latency plus this floor.
///
/// Both builds' requests go through the adapter, and no two code paths cost exactly the
/// same: a hundred nanoseconds, say, for the candidate's branch of the middleware, or for
/// its instance being colder in the caches of threads that serve it one request in ten.
/// On a handler of two microseconds that is 5%, and as a pure ratio it would read as a
/// regression of the build; on any request a client can tell apart it is nothing. So
/// latency is compared as `ln(latency + 20 µs)`: a ratio for requests well above the
/// floor (10% on 10 ms is 9.98%), and next to nothing for sub-microsecond differences.
pub const LATENCY_FLOOR: Duration = Duration::from_micros(20);

/// [`LATENCY_FLOOR`] in microseconds, as latency distributions keep it.
pub(crate) const LATENCY_FLOOR_US: u64 = 20;

/// Where the evidence a phase is judged on comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// The shadow: the twin and the candidate on the same mirrored reads.
    Shadow,
    /// Live traffic split between the builds by the steerer.
    Canary,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Shadow => "shadow",
            Stage::Canary => "canary",
        })
    }
}

/// One custom KPI of both builds (see [`Rollout::record_custom`](crate::Rollout::record_custom)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomKpi {
    /// The stable build's observations.
    pub stable: Moments,
    /// The candidate's observations.
    pub candidate: Moments,
}

impl CustomKpi {
    /// One build's observations, to add to.
    pub fn arm_mut(&mut self, arm: Arm) -> &mut Moments {
        match arm {
            Arm::Stable => &mut self.stable,
            Arm::Candidate => &mut self.candidate,
        }
    }
}

/// The statistics of both builds at one look, with the rollout's context.
///
/// This is what a [`Predictor`](crate::Predictor) sees. Measurements are kept where they
/// were made, so that every comparison is like for like:
///
/// * [`shadow`](Self::shadow): the stable *twin* and the candidate on the same mirrored
///   reads, measured the same way on the shadow's thread, paired read by read. The shadow
///   phase is judged on this alone.
/// * [`canary`](Self::canary): live requests of both builds while the candidate had a
///   share of live traffic, per canary step and route.
///
/// A shadow measurement is never compared with a live one, nor reads with writes (writes
/// reach the candidate only in the canary, where stable's writes are their control).
///
/// It serializes with serde, so each look can be logged and kept as training data for the
/// learned predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The stable build.
    pub stable_version: Version,
    /// The candidate build.
    pub candidate_version: Version,
    /// The phase the rollout was in when the evidence was collected.
    pub phase: Phase,
    /// The candidate's share of live traffic at that time.
    pub share: Share,
    /// Time since the rollout started.
    #[serde(with = "crate::duration")]
    pub elapsed: Duration,
    /// How many looks the controller had taken, this one included.
    pub look: u64,
    /// Live requests since the rollout started, of both builds.
    pub live_requests: u64,
    /// The shadow's paired evidence, cumulative since the rollout started.
    pub shadow: ShadowEvidence,
    /// Live evidence from the canary steps, cumulative.
    pub canary: CanaryEvidence,
    /// User-defined KPIs by name.
    pub custom: BTreeMap<String, CustomKpi>,
    /// The process's CPU, memory and I/O over the rollout, where sampled.
    ///
    /// Both builds run in one process, so this is context (is the process as a whole near
    /// a limit?), not something either build is blamed for.
    pub process: Option<ProcessEvidence>,
}

impl Evidence {
    /// Empty evidence for a pair of builds, before the first look.
    pub fn new(stable: Version, candidate: Version) -> Self {
        Self {
            stable_version: stable,
            candidate_version: candidate,
            phase: Phase::Idle,
            share: Share::ZERO,
            elapsed: Duration::ZERO,
            look: 0,
            live_requests: 0,
            shadow: ShadowEvidence::default(),
            canary: CanaryEvidence::default(),
            custom: BTreeMap::new(),
            process: None,
        }
    }

    /// The stage the current phase is judged on: the canary once the candidate serves
    /// live traffic, the shadow before.
    pub fn stage(&self) -> Stage {
        match self.phase {
            Phase::Canary { .. }
            | Phase::Paused {
                from: LivePhase::Canary { .. },
            }
            | Phase::Promoted => Stage::Canary,
            _ => Stage::Shadow,
        }
    }

    /// The two builds' evidence from the current [`stage`](Self::stage), for a predictor
    /// that compares two distributions: the twin and the candidate in the shadow, or both
    /// builds' live requests over the canary steps.
    ///
    /// Over several canary steps this pools requests made at different shares; tests that
    /// must stay valid compare step by step instead (see [`CanaryEvidence`]).
    pub fn arms(&self) -> (ArmEvidence, ArmEvidence) {
        match self.stage() {
            Stage::Shadow => (self.shadow.twin.clone(), self.shadow.candidate.clone()),
            Stage::Canary => (
                self.canary.total(Arm::Stable),
                self.canary.total(Arm::Candidate),
            ),
        }
    }

    /// The samples behind the current stage: reads both builds ran in the shadow, or each
    /// build's live requests in the canary.
    pub fn samples(&self) -> SampleCount {
        match self.stage() {
            Stage::Shadow => {
                let pairs = self.shadow.pairs.total.pairs();
                SampleCount {
                    stable: pairs,
                    candidate: pairs,
                }
            }
            Stage::Canary => SampleCount {
                stable: self.canary.requests(Arm::Stable),
                candidate: self.canary.requests(Arm::Candidate),
            },
        }
    }

    /// Reads both builds ran in the shadow so far.
    pub fn shadow_pairs(&self) -> u64 {
        self.shadow.pairs.total.pairs()
    }

    /// A custom KPI, made empty if it is not there yet.
    pub fn custom_mut(&mut self, name: &str) -> &mut CustomKpi {
        self.custom.entry(name.to_owned()).or_default()
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;

    #[test]
    fn constant_bounds_are_valid() {
        assert!(Distribution::new(1, 60_000_000, 3).is_ok());
        assert!(Distribution::new(1, 60_000_000_000, 3).is_ok());
        assert!(Distribution::new(1, 1 << 40, 3).is_ok());
    }

    #[test]
    fn invalid_bounds_are_an_error_not_a_panic() {
        assert!(matches!(
            Distribution::new(10, 5, 3),
            Err(DistributionError::InvalidBounds {
                low: 10,
                high: 5,
                ..
            })
        ));
        assert!(Distribution::new(1, 1000, 9).is_err());
    }

    #[test]
    fn values_above_range_are_clamped_not_lost() {
        let mut d = Distribution::latency_us();
        d.record(u64::MAX);
        assert_eq!(d.count(), 1);
        assert!(d.max() >= 60_000_000);
    }

    #[test]
    fn distribution_round_trips_through_json() {
        let mut d = Distribution::latency_us();
        for v in [1, 10, 100, 1000, 10_000, 123_456] {
            d.record(v);
        }
        let json = serde_json::to_string(&d).expect("serializes");
        let back: Distribution = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back.count(), d.count());
        assert_eq!(back.quantile(0.5), d.quantile(0.5));
        assert_eq!(back.max(), d.max());
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = ArmEvidence::default();
        let mut b = ArmEvidence::default();
        let mut all = ArmEvidence::default();
        for i in 0..100u64 {
            let outcome = if i % 10 == 0 {
                Outcome::ServerError
            } else {
                Outcome::Success
            };
            let target = if i % 2 == 0 { &mut a } else { &mut b };
            target.record_request(outcome, 100 + i);
            all.record_request(outcome, 100 + i);
        }
        a.merge(&b).expect("same bounds");
        assert_eq!(a.outcomes, all.outcomes);
        assert_eq!(a.latency_us.quantile(0.9), all.latency_us.quantile(0.9));
    }

    #[test]
    fn log_moments_match_direct_computation() {
        let mut d = Distribution::latency_us();
        let mut direct = Moments::default();
        for v in [100u64, 200, 400, 800, 1600] {
            d.record(v);
            direct.add((v as f64).ln());
        }
        let m = d.log_moments();
        assert_eq!(m.count(), 5);
        assert!((m.mean() - direct.mean()).abs() < 1e-3);
        assert!((m.variance() - direct.variance()).abs() < 1e-2);
    }

    #[test]
    fn count_above_counts_the_tail() {
        let mut d = Distribution::latency_us();
        for v in 1..=100u64 {
            d.record(v * 10);
        }
        assert_eq!(d.count_above(500), 50);
    }
}
