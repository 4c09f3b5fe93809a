//! What the predictors see: the two builds' statistics side by side.
//!
//! Every statistic here is *mergeable*: histograms add bucket by bucket and moments combine
//! exactly, so evidence from several sources, intervals or replicas adds up to the evidence
//! one recorder would have seen. That is why latency is kept as an HDR histogram and not as
//! a list of percentiles (percentiles cannot be averaged).

mod arm;
mod display;
mod distribution;
mod moments;
mod outcomes;
mod process;
mod route;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use arm::ArmEvidence;
pub use distribution::{Distribution, DistributionError};
pub use moments::Moments;
pub use outcomes::{Comparisons, OutcomeCounts};
pub use process::ProcessEvidence;
pub use route::{FieldDifferences, RouteEvidence};

use crate::model::{Arm, Phase, Share, Version};

/// The paired statistics of stable and candidate at one look, with the rollout's context.
///
/// This is what a [`Predictor`](crate::Predictor) sees. It serializes with serde, so each
/// look can be logged and kept as training data for the learned predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The phase the rollout was in when the evidence was collected.
    pub phase: Phase,
    /// The candidate's share of live traffic at that time.
    pub share: Share,
    /// Time since the rollout started.
    #[serde(with = "crate::duration")]
    pub elapsed: Duration,
    /// How many looks the controller had taken, this one included.
    pub look: u64,
    /// The stable build's statistics, cumulative since the rollout started.
    pub stable: ArmEvidence,
    /// The candidate's statistics, cumulative since the rollout started.
    pub candidate: ArmEvidence,
}

impl Evidence {
    /// Empty evidence for a pair of builds, before the first look.
    pub fn new(stable: Version, candidate: Version) -> Self {
        Self {
            phase: Phase::Idle,
            share: Share::ZERO,
            elapsed: Duration::ZERO,
            look: 0,
            stable: ArmEvidence::new(stable),
            candidate: ArmEvidence::new(candidate),
        }
    }

    /// The statistics of one arm.
    pub fn arm(&self, arm: Arm) -> &ArmEvidence {
        match arm {
            Arm::Stable => &self.stable,
            Arm::Candidate => &self.candidate,
        }
    }

    /// The statistics of one arm, to fill in.
    pub fn arm_mut(&mut self, arm: Arm) -> &mut ArmEvidence {
        match arm {
            Arm::Stable => &mut self.stable,
            Arm::Candidate => &mut self.candidate,
        }
    }

    /// The smaller of the two arms' request counts: what "enough samples" is judged on.
    pub fn samples_per_arm(&self) -> u64 {
        self.stable.requests().min(self.candidate.requests())
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
        let mut a = ArmEvidence::new(Version::new("x", "1"));
        let mut b = ArmEvidence::new(Version::new("x", "1"));
        let mut all = ArmEvidence::new(Version::new("x", "1"));
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
