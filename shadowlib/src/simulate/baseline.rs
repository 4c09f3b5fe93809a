//! Judges to compare the default with: the fixed-sample test most canary tools use, and
//! the sequential test without the pairing.

use crate::analysis::{
    AnalysisError, DifferenceEstimate, MannWhitney, MixtureSprt, SequentialConfig, Verdict,
};
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
        // Kayenta's judgement at every look, pass or fail, taken as it is: what a fixed-level
        // test re-run at every look does to identical builds is what this row shows.
        let verdict = if slower {
            Verdict::Worse
        } else {
            Verdict::NotWorse
        };
        Prediction::ruling(self.name(), verdict, evidence)
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

/// The default's latency test without the pairing: the same mixture SPRT on the
/// difference of mean log latency, but between the two arms as distributions — in the
/// shadow, all the twin's reads against all the candidate's ([`Evidence::arms`]) — rather
/// than on each read's log ratio candidate/twin.
///
/// It is there to show what the pairing buys: the spread between requests (a cheap route
/// and a costly one, a small query and a big one) is in both arms' variance, where the
/// paired test sees only what two runs of one read differ by. It tests latency alone, at
/// the whole level `α` on that one test — as generous to it as can be — with the
/// default's latency tolerance.
///
/// ```
/// use shadowlib::{Evidence, Outcome, Predictor, Version};
/// use shadowlib::simulate::UnpairedSequential;
///
/// let mut evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
/// for i in 0..2_000u64 {
///     evidence.shadow.twin.record_request(Outcome::Success, 1_000 + i % 100);
///     evidence.shadow.candidate.record_request(Outcome::Success, 1_300 + i % 100);
/// }
/// let prediction = UnpairedSequential::default().predict(&evidence);
/// assert!(prediction.failure_probability > 0.95);
/// // Geometric means of about 1,350 µs against 1,050 µs: 28.6% slower.
/// assert!((prediction.performance_degradation.estimate - 0.286).abs() < 0.005);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct UnpairedSequential {
    sprt: MixtureSprt,
    alpha: f64,
    /// The tolerance on the log scale.
    tolerance: f64,
    min_samples_per_arm: u64,
}

impl UnpairedSequential {
    /// The test at level `alpha` in `(0, 1)` against a relative latency `tolerance`
    /// (0.05 = 5% slower), deciding nothing below `min_samples_per_arm` requests per arm.
    pub fn new(
        alpha: f64,
        tolerance: f64,
        min_samples_per_arm: u64,
    ) -> Result<Self, AnalysisError> {
        if min_samples_per_arm < 2 {
            return Err(AnalysisError::TooFewSamples {
                field: "min_samples_per_arm",
                value: min_samples_per_arm,
                minimum: 2,
            });
        }
        if !(tolerance > 0.0 && tolerance.is_finite()) {
            return Err(AnalysisError::OutOfRange {
                field: "tolerance",
                value: tolerance,
                expected: "(0, infinity)",
            });
        }
        let tolerance = tolerance.ln_1p();
        Ok(Self {
            sprt: MixtureSprt::new(alpha, tolerance)?,
            alpha,
            tolerance,
            min_samples_per_arm,
        })
    }
}

impl Default for UnpairedSequential {
    /// The default sequential configuration's `α`, latency tolerance and minimum samples.
    fn default() -> Self {
        let config = SequentialConfig::default();
        Self::new(
            config.alpha,
            config.tolerances.latency,
            config.min_samples_per_arm,
        )
        .expect("the default sequential configuration is valid")
    }
}

impl Predictor for UnpairedSequential {
    fn name(&self) -> &str {
        "unpaired-sequential"
    }

    fn alpha(&self) -> f64 {
        self.alpha
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        let (stable, candidate) = evidence.arms();
        let (stable, candidate) = (
            stable.latency_us.log_moments(),
            candidate.latency_us.log_moments(),
        );
        let seen = stable.count().min(candidate.count());
        let estimate = DifferenceEstimate::means(&stable, &candidate)
            .filter(|_| seen >= self.min_samples_per_arm);
        let Some(estimate) = estimate else {
            return Prediction::needs_samples(
                self.name(),
                format!(
                    "need {} latencies per arm, have {seen}",
                    self.min_samples_per_arm
                ),
                evidence,
            );
        };
        let test = self.sprt.test(estimate, self.tolerance);
        let relative = |log: f64| log.exp() - 1.0;
        let degradation = Degradation::new(
            relative(test.estimate.difference),
            relative(test.confidence.low),
            relative(test.confidence.high),
        );
        let reason = format!(
            "unpaired latency (geometric mean): {:+.2}% [{:+.2}%, {:+.2}%], tolerance {:+.2}%: {} \
             (stable {}, candidate {} latencies)",
            degradation.estimate * 100.0,
            degradation.low * 100.0,
            degradation.high * 100.0,
            relative(self.tolerance) * 100.0,
            test.verdict(),
            estimate.samples.stable,
            estimate.samples.candidate,
        );
        // An always-valid test's verdict, taken as a ruling: the controller acts on it.
        let prediction = match test.verdict() {
            Verdict::NotYetKnown => Prediction::inconclusive(self.name(), reason.clone(), evidence),
            verdict => Prediction::ruling(self.name(), verdict, evidence),
        };
        prediction.with_degradation(degradation).with_reason(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Outcome, Version};
    use crate::predict::Certainty;

    #[test]
    fn bad_levels_are_typed_errors() {
        assert!(matches!(
            UnpairedSequential::new(1.5, 0.05, 200),
            Err(AnalysisError::OutOfRange { field: "alpha", .. })
        ));
        assert!(matches!(
            UnpairedSequential::new(0.05, 0.0, 200),
            Err(AnalysisError::OutOfRange {
                field: "tolerance",
                ..
            })
        ));
        assert!(matches!(
            UnpairedSequential::new(0.05, 0.05, 1),
            Err(AnalysisError::TooFewSamples { .. })
        ));
    }

    #[test]
    fn identical_arms_pass_and_too_few_need_samples() {
        let mut evidence = Evidence::new(Version::new("a", "1"), Version::new("a", "2"));
        let test = UnpairedSequential::default();
        assert!(matches!(
            test.predict(&evidence).certainty,
            Certainty::NeedsSamples(_)
        ));
        for i in 0..5_000u64 {
            let latency = 1_000 + (i * 7_919) % 200;
            evidence
                .shadow
                .twin
                .record_request(Outcome::Success, latency);
            evidence
                .shadow
                .candidate
                .record_request(Outcome::Success, latency);
        }
        let prediction = test.predict(&evidence);
        assert!(prediction.is_conclusive(), "{:?}", prediction.reasons);
        assert!(prediction.failure_probability <= 0.05);
    }
}
