//! Fixed limits, the way Argo Rollouts analysis and Flagger checks state them, judged by
//! always-valid tests.

use serde::{Deserialize, Serialize};

use super::{Prediction, Predictor};
use crate::analysis::{
    DifferenceEstimate, KpiTest, Metric, MixtureSprt, Proportion, Quantile, Scope, Statistic,
    Verdict,
};
use crate::evidence::{Evidence, LATENCY_FLOOR_US};

/// The limits a [`ThresholdPredictor`] checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdPredictorConfig {
    /// Largest tolerated failure rate of the candidate above stable's, in absolute terms
    /// (0.01 = one percentage point).
    pub max_error_rate_increase: f64,
    /// Largest tolerated relative increase of p99 latency (0.2 = 20% slower).
    pub max_p99_increase: f64,
    /// Largest tolerated relative increase of median latency.
    pub max_p50_increase: f64,
    /// The chance, over the whole rollout, that a limit is found exceeded on identical
    /// builds: split evenly among the three checks.
    pub alpha: f64,
}

impl Default for ThresholdPredictorConfig {
    fn default() -> Self {
        Self {
            max_error_rate_increase: 0.01,
            max_p99_increase: 0.25,
            max_p50_increase: 0.15,
            alpha: 0.01,
        }
    }
}

/// Fixed limits, the way Argo Rollouts analysis and Flagger checks state them — error rate
/// up at most a point, p99 at most 25%, median at most 15% — each judged with an
/// always-valid test instead of a comparison of point estimates: a limit is exceeded when
/// the confidence sequence says so, kept when it says that, and neither is claimed before.
/// Repeated at every look, it does not fire on noise; the point estimates are reported.
///
/// It compares the like-for-like pair of the phase ([`Evidence::arms`]: the twin and the
/// candidate in the shadow, both builds' live requests in the canary). The error rate is a
/// mixture SPRT on the difference of proportions, the quantiles are
/// [`QuantileComparison`](crate::analysis::QuantileComparison)s.
///
/// ```
/// use shadowlib::analysis::Verdict;
/// use shadowlib::{Evidence, Outcome, Predictor, ThresholdPredictor, Version};
///
/// let mut evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
/// for i in 0..5_000u64 {
///     evidence.shadow.twin.record_request(Outcome::Success, 1_000 + i % 100);
///     let failed = i % 10 == 0; // 10% failures
///     let outcome = if failed { Outcome::ServerError } else { Outcome::Success };
///     evidence.shadow.candidate.record_request(outcome, 1_000 + i % 100);
/// }
/// let prediction = ThresholdPredictor::default().predict(&evidence);
/// assert_eq!(prediction.verdict(), Verdict::Worse);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ThresholdPredictor {
    config: ThresholdPredictorConfig,
}

impl ThresholdPredictor {
    /// A predictor with these limits.
    pub fn new(config: ThresholdPredictorConfig) -> Self {
        Self { config }
    }
}

/// The test of a rate limit: the mixture SPRT on the difference of failure rates.
fn error_rate_test(
    stable: &crate::evidence::ArmEvidence,
    candidate: &crate::evidence::ArmEvidence,
    limit: f64,
    alpha: f64,
) -> Option<KpiTest> {
    let failures = |arm: &crate::evidence::ArmEvidence| {
        Proportion::new(arm.outcomes.failures(), arm.requests())
    };
    let estimate = DifferenceEstimate::proportions(failures(stable), failures(candidate))?;
    let sprt = MixtureSprt::spanning(alpha, limit, limit * 16.0).ok()?;
    let test = sprt.test(estimate, limit);
    Some(KpiTest {
        metric: Metric::ErrorRate,
        scope: Scope::Shadow,
        verdict: test.verdict(),
        samples: test.estimate.samples,
        statistic: Statistic::Mixture(test),
        held_because: None,
        required: true,
    })
}

/// The test of a quantile limit, on latency with its floor.
fn quantile_test(
    stable: &crate::evidence::Distribution,
    candidate: &crate::evidence::Distribution,
    quantile: Quantile,
    limit: f64,
    alpha: f64,
) -> Option<KpiTest> {
    KpiTest::quantile(
        Metric::LatencyQuantile(quantile),
        quantile,
        (stable, candidate),
        limit,
        alpha,
        LATENCY_FLOOR_US,
        true,
    )
}

impl Predictor for ThresholdPredictor {
    fn name(&self) -> &str {
        "threshold"
    }

    fn alpha(&self) -> f64 {
        self.config.alpha
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        let (stable, candidate) = evidence.arms();
        if stable.latency_us.is_empty() || candidate.latency_us.is_empty() {
            return Prediction::needs_samples(
                self.name(),
                "no latency measured on one of the builds",
                evidence,
            );
        }
        let scope = match evidence.stage() {
            crate::evidence::Stage::Shadow => Scope::Shadow,
            _ => Scope::Canary,
        };
        let c = &self.config;
        let alpha = c.alpha / 3.0;
        let tests: Vec<KpiTest> = [
            error_rate_test(&stable, &candidate, c.max_error_rate_increase, alpha),
            quantile_test(
                &stable.latency_us,
                &candidate.latency_us,
                Quantile::P99,
                c.max_p99_increase,
                alpha,
            ),
            quantile_test(
                &stable.latency_us,
                &candidate.latency_us,
                Quantile::P50,
                c.max_p50_increase,
                alpha,
            ),
        ]
        .into_iter()
        .flatten()
        .map(|mut t| {
            t.scope = scope.clone();
            t
        })
        .collect();
        let mut prediction = Prediction::new(self.name(), 0.0, evidence);
        for test in tests {
            let degradation = test.degradation();
            if test.metric == Metric::LatencyQuantile(Quantile::P99) {
                prediction = prediction.with_degradation(degradation);
            }
            prediction = prediction
                .with_kpi(test.metric.kpi(), degradation)
                .with_reason(test.to_string())
                .with_test(test);
        }
        prediction.failure_probability = match prediction.verdict() {
            Verdict::Worse => 1.0,
            Verdict::NotWorse => 0.0,
            // Undecided: how far the point estimates are toward their limits, as a rough
            // guide (reported only).
            Verdict::NotYetKnown => 0.5,
        };
        prediction
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Outcome, Version};

    fn evidence(candidate_latency: u64, candidate_errors: u64) -> Evidence {
        let mut e = Evidence::new(Version::new("a", "1"), Version::new("a", "2"));
        // Enough requests that even the p99 can be bounded from above.
        for i in 0..3_000 {
            e.shadow.twin.record_request(Outcome::Success, 1_000);
            let outcome = if i < candidate_errors {
                Outcome::ServerError
            } else {
                Outcome::Success
            };
            e.shadow
                .candidate
                .record_request(outcome, candidate_latency);
        }
        e
    }

    #[test]
    fn identical_builds_pass() {
        let p = ThresholdPredictor::default().predict(&evidence(1_000, 0));
        assert_eq!(p.verdict(), Verdict::NotWorse, "{:?}", p.reasons);
        assert_eq!(p.failure_probability, 0.0);
        assert!(p.performance_degradation.estimate.abs() < 0.01);
    }

    #[test]
    fn slow_candidate_fails_with_degradation() {
        let p = ThresholdPredictor::default().predict(&evidence(1_500, 0));
        assert_eq!(p.verdict(), Verdict::Worse, "{:?}", p.reasons);
        // On the floored scale: 1,520 over 1,020.
        assert!((p.performance_degradation.estimate - 0.49).abs() < 0.02);
    }

    #[test]
    fn erroring_candidate_fails() {
        let p = ThresholdPredictor::default().predict(&evidence(1_000, 150));
        assert_eq!(p.verdict(), Verdict::Worse);
        assert!(
            p.reasons
                .iter()
                .any(|r| r.starts_with("error rate") && r.contains("worse than tolerated")),
            "{:?}",
            p.reasons
        );
    }

    #[test]
    fn empty_evidence_needs_samples() {
        let e = Evidence::new(Version::new("a", "1"), Version::new("a", "2"));
        assert!(!ThresholdPredictor::default().predict(&e).is_conclusive());
    }
}
