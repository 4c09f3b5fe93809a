//! The fixed-sample judge most canary tools use, for comparison.

use crate::analysis::MannWhitney;
use crate::evidence::Evidence;
use crate::model::Degradation;
use crate::predict::{Prediction, Predictor};

/// A Kayenta-style judge: a Mann–Whitney U test on latency at a fixed confidence (98% by
/// default), re-run on the cumulative evidence at every look (the phase's like-for-like
/// arms, [`Evidence::arms`]); the candidate fails when it is significantly slower.
///
/// Each run alone is a sound test. Re-run look after look it is not, which is the point of
/// having it in the simulator: on two identical builds its false rollback rate grows with
/// the number of looks, while the sequential predictor's does not.
///
/// ```
/// use shadowlib::{Evidence, Outcome, Predictor, Version};
/// use shadowlib::simulate::KayentaMannWhitney;
///
/// let mut evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
/// for i in 0..1_000u64 {
///     evidence.shadow.twin.record_request(Outcome::Success, 1_000 + i);
///     evidence.shadow.candidate.record_request(Outcome::Success, 1_300 + i);
/// }
/// assert_eq!(KayentaMannWhitney::default().predict(&evidence).failure_probability, 1.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KayentaMannWhitney {
    /// Confidence of each test, e.g. 0.98.
    pub confidence: f64,
}

impl Default for KayentaMannWhitney {
    fn default() -> Self {
        Self { confidence: 0.98 }
    }
}

impl Predictor for KayentaMannWhitney {
    fn name(&self) -> &str {
        "kayenta-mann-whitney"
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        let (stable, candidate) = evidence.arms();
        let (stable, candidate) = (&stable.latency_us, &candidate.latency_us);
        let Some(test) = MannWhitney::test(stable, candidate) else {
            return Prediction::inconclusive(self.name(), "no latency spread to test", evidence);
        };
        let slower = test.candidate_slower(self.confidence);
        let median_change =
            candidate.quantile(0.5) as f64 / stable.quantile(0.5).max(1) as f64 - 1.0;
        Prediction::new(self.name(), if slower { 1.0 } else { 0.0 }, evidence)
            .with_degradation(Degradation::point(median_change))
            .with_reason(format!(
                "Mann-Whitney z = {:.2}, two-sided p = {:.4} at {:.0}% confidence: {}",
                test.z,
                test.p_value,
                self.confidence * 100.0,
                if slower {
                    "candidate slower"
                } else {
                    "no significant slowdown"
                }
            ))
    }
}
