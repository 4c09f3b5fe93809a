//! Fixed thresholds, the way Argo Rollouts analysis and Flagger checks work.

use serde::{Deserialize, Serialize};

use super::{Prediction, Predictor};
use crate::evidence::Evidence;
use crate::model::{Degradation, Kpi};

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
}

impl Default for ThresholdPredictorConfig {
    fn default() -> Self {
        Self {
            max_error_rate_increase: 0.01,
            max_p99_increase: 0.25,
            max_p50_increase: 0.15,
        }
    }
}

/// A predictor with fixed thresholds: failure probability is 1 when any limit is exceeded
/// and 0 otherwise; the headline degradation is the relative change of p99 latency.
///
/// It compares the like-for-like pair of the phase ([`Evidence::arms`]: the twin and the
/// candidate in the shadow, both builds' live requests in the canary).
///
/// This is how most infrastructure canary tools judge a canary. It is simple and easy to
/// explain, but it is not a statistical test: repeated at every look it will eventually
/// fire on noise, and it states no uncertainty. The sequential predictors do better.
///
/// ```
/// use shadowlib::{Evidence, Outcome, Predictor, ThresholdPredictor, Version};
///
/// let mut evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
/// for _ in 0..1_000 {
///     evidence.shadow.twin.record_request(Outcome::Success, 1_000);
///     evidence.shadow.candidate.record_request(Outcome::ServerError, 1_000);
/// }
/// let prediction = ThresholdPredictor::default().predict(&evidence);
/// assert_eq!(prediction.failure_probability, 1.0);
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

fn relative_change(candidate: f64, stable: f64) -> f64 {
    if stable > 0.0 {
        candidate / stable - 1.0
    } else if candidate > 0.0 {
        1.0
    } else {
        0.0
    }
}

impl Predictor for ThresholdPredictor {
    fn name(&self) -> &str {
        "threshold"
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        let (stable, candidate) = evidence.arms();
        if stable.latency_us.is_empty() || candidate.latency_us.is_empty() {
            return Prediction::inconclusive(
                self.name(),
                "no latency measured on one of the builds",
                evidence,
            );
        }
        let error_increase = candidate.outcomes.failure_rate() - stable.outcomes.failure_rate();
        let p50 = relative_change(
            candidate.latency_us.quantile(0.5) as f64,
            stable.latency_us.quantile(0.5) as f64,
        );
        let p99 = relative_change(
            candidate.latency_us.quantile(0.99) as f64,
            stable.latency_us.quantile(0.99) as f64,
        );
        let checks = [
            (
                "error rate increase",
                error_increase,
                self.config.max_error_rate_increase,
            ),
            ("p99 latency increase", p99, self.config.max_p99_increase),
            ("p50 latency increase", p50, self.config.max_p50_increase),
        ];
        let mut prediction = Prediction::new(self.name(), 0.0, evidence)
            .with_degradation(Degradation::point(p99))
            .with_kpi(Kpi::LatencyP50, Degradation::point(p50))
            .with_kpi(Kpi::LatencyP99, Degradation::point(p99))
            .with_kpi(Kpi::ErrorRate, Degradation::point(error_increase));
        for (name, value, limit) in checks {
            let verdict = if value > limit { "exceeds" } else { "within" };
            prediction = prediction.with_reason(format!(
                "{name} {:+.2}% {verdict} the limit {:+.2}%",
                value * 100.0,
                limit * 100.0
            ));
            if value > limit {
                prediction.failure_probability = 1.0;
            }
        }
        prediction
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Outcome, Version};

    fn evidence(candidate_latency: u64, candidate_errors: u64) -> Evidence {
        let mut e = Evidence::new(Version::new("a", "1"), Version::new("a", "2"));
        for i in 0..1_000 {
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
        assert_eq!(p.failure_probability, 0.0);
        assert!(p.is_conclusive());
        assert!(p.performance_degradation.estimate.abs() < 0.01);
    }

    #[test]
    fn slow_candidate_fails_with_degradation() {
        let p = ThresholdPredictor::default().predict(&evidence(1_500, 0));
        assert_eq!(p.failure_probability, 1.0);
        assert!((p.performance_degradation.estimate - 0.5).abs() < 0.01);
    }

    #[test]
    fn erroring_candidate_fails() {
        let p = ThresholdPredictor::default().predict(&evidence(1_000, 50));
        assert_eq!(p.failure_probability, 1.0);
        assert!(
            p.reasons
                .iter()
                .any(|r| r.contains("error rate increase +5.00% exceeds"))
        );
    }

    #[test]
    fn empty_evidence_is_inconclusive() {
        let e = Evidence::new(Version::new("a", "1"), Version::new("a", "2"));
        assert!(!ThresholdPredictor::default().predict(&e).is_conclusive());
    }
}
