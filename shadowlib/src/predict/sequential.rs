//! A predictor built on the sequential tests, so its answers stay valid at every look.

use std::sync::{Mutex, PoisonError};

use super::{Prediction, Predictor, Resource};
use crate::analysis::{
    AnalysisError, Assessment, CandidateMonitor, Metric, SequentialAnalysis, SequentialConfig,
    Verdict,
};
use crate::evidence::Evidence;

/// Judges the candidate with [`SequentialAnalysis`] and the control charts of
/// [`CandidateMonitor`], and maps the verdict onto a [`Prediction`] the controller acts on:
///
/// * **worse than tolerated** → a conclusive prediction with failure probability
///   `1 − p`, where `p ≤ α` is the smallest always-valid p-value of "not worse" among the
///   failing tests (or the chance of a significant novel failure class): the controller
///   rolls back.
/// * **not worse than tolerated** on every KPI, and no chart alarm → a conclusive prediction
///   with failure probability equal to the largest always-valid p-value of "worse" (at
///   most `α`): the controller steps up.
/// * **not yet known** (too little evidence, a test undecided, a failure class stable never
///   produced, or a chart alarm on the candidate's own stream) → an inconclusive
///   prediction: the controller holds.
///
/// The headline degradation is the relative change of typical latency (geometric mean)
/// with its confidence sequence; every test's degradation is reported per KPI, and CPU or
/// allocations that the candidate spends more of become bottlenecks.
///
/// The charts keep state between looks, so use one predictor per rollout (a new stream —
/// counts that go down — resets them).
///
/// ```
/// use shadowlib::{Evidence, Outcome, Predictor, SequentialPredictor, Version};
///
/// let predictor = SequentialPredictor::default();
/// let mut evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
/// for i in 0..20_000u64 {
///     let latency = 800 + (i * 7919) % 400;
///     evidence.stable.record_request(Outcome::Success, latency);
///     let outcome = if i % 20 == 0 { Outcome::ServerError } else { Outcome::Success };
///     evidence.candidate.record_request(outcome, latency); // 5% failures, stable none
/// }
/// let prediction = predictor.predict(&evidence);
/// assert!(prediction.is_conclusive());
/// assert!(prediction.failure_probability > 0.95);
/// ```
#[derive(Debug)]
pub struct SequentialPredictor {
    analysis: SequentialAnalysis,
    monitor: Mutex<CandidateMonitor>,
}

impl SequentialPredictor {
    /// A predictor with this configuration, validated here.
    pub fn new(config: SequentialConfig) -> Result<Self, AnalysisError> {
        let monitor = CandidateMonitor::new(config.charts.clone())?;
        Ok(Self {
            analysis: SequentialAnalysis::new(config)?,
            monitor: Mutex::new(monitor),
        })
    }

    /// The analysis it runs.
    pub fn analysis(&self) -> &SequentialAnalysis {
        &self.analysis
    }
}

impl Default for SequentialPredictor {
    fn default() -> Self {
        // The default configuration is checked by `default_configuration_is_valid` below.
        Self::new(SequentialConfig::default())
            .expect("the default sequential configuration is valid")
    }
}

/// Why an assessment is not yet conclusive, in one sentence.
fn undecided(assessment: &Assessment) -> String {
    if let Some(why) = &assessment.insufficient {
        return why.clone();
    }
    let mut open: Vec<String> = assessment
        .tests
        .iter()
        .filter(|t| t.verdict == Verdict::NotYetKnown)
        .map(|t| t.metric.to_string())
        .collect();
    open.extend(
        assessment
            .novel_failures
            .iter()
            .map(|n| format!("{:?} failures stable never produced", n.outcome)),
    );
    format!("not yet known: {}", open.join(", "))
}

impl Predictor for SequentialPredictor {
    fn name(&self) -> &str {
        "sequential"
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        let assessment = self.analysis.analyze(evidence);
        // The monitor holds only numbers that stay consistent whatever a panic interrupted.
        let alarms = self
            .monitor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(assessment.candidate_stream);

        let mut prediction = match assessment.verdict {
            Verdict::Worse => {
                let evidence_of_worse = assessment
                    .tests
                    .iter()
                    .filter(|t| t.verdict == Verdict::Worse)
                    .map(|t| t.test.worse_p_value)
                    .chain(
                        assessment
                            .novel_failures
                            .iter()
                            .filter(|n| n.significant)
                            .map(|n| n.chance),
                    )
                    .fold(1.0, f64::min);
                Prediction::new(self.name(), 1.0 - evidence_of_worse, evidence)
            }
            Verdict::NotWorse if alarms.is_empty() => {
                let evidence_of_within = assessment
                    .tests
                    .iter()
                    .map(|t| t.test.not_worse_p_value)
                    .fold(0.0, f64::max);
                Prediction::new(self.name(), evidence_of_within, evidence)
            }
            Verdict::NotWorse => Prediction::inconclusive(
                self.name(),
                "every KPI within tolerance, but the candidate's own stream is out of control",
                evidence,
            ),
            Verdict::NotYetKnown => {
                Prediction::inconclusive(self.name(), undecided(&assessment), evidence)
            }
        };
        for test in &assessment.tests {
            let degradation = test.degradation();
            if test.metric == Metric::Latency {
                prediction = prediction.with_degradation(degradation);
            }
            let resource = match test.metric {
                Metric::Cpu => Some(Resource::Cpu),
                Metric::Allocations => Some(Resource::Memory),
                _ => None,
            };
            if let Some(resource) = resource.filter(|_| degradation.low > 0.0) {
                let ratio = crate::Degradation::new(
                    1.0 + degradation.estimate,
                    1.0 + degradation.low,
                    1.0 + degradation.high,
                );
                prediction = prediction.with_bottleneck(resource, ratio);
            }
            prediction = prediction.with_kpi(test.metric.kpi(), degradation);
        }
        prediction
            .bottlenecks
            .sort_by(|a, b| b.ratio.estimate.total_cmp(&a.ratio.estimate));
        for reason in assessment.reasons() {
            prediction = prediction.with_reason(reason);
        }
        for alarm in alarms {
            prediction = prediction.with_reason(alarm.to_string());
        }
        prediction
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::Distribution;
    use crate::model::{Outcome, Version};
    use crate::predict::Certainty;

    #[test]
    fn default_configuration_is_valid() {
        assert!(SequentialConfig::default().validate().is_ok());
    }

    fn evidence(n: u64, candidate_factor: u64) -> Evidence {
        let mut e = Evidence::new(Version::new("a", "1"), Version::new("a", "2"));
        for i in 0..n {
            let latency = 800 + (i * 7919) % 400;
            e.stable.record_request(Outcome::Success, latency);
            e.candidate
                .record_request(Outcome::Success, latency * candidate_factor / 100);
        }
        e
    }

    #[test]
    fn too_little_evidence_is_not_a_verdict() {
        let p = SequentialPredictor::default().predict(&evidence(50, 300));
        assert!(
            matches!(p.certainty, Certainty::Inconclusive(ref why) if why.contains("need 200"))
        );
    }

    #[test]
    fn zero_failures_hold_until_the_tolerated_rate_could_show() {
        // Identical latency, no failures: after 1,000 requests a 0.1% failure rate would
        // have produced no failure with probability 37%, so the error test holds.
        let p = SequentialPredictor::default().predict(&evidence(1_000, 100));
        assert!(!p.is_conclusive());
        assert!(
            p.reasons
                .iter()
                .any(|r| r.starts_with("error rate") && r.contains("not yet known"))
        );
        // With enough requests it passes.
        let p = SequentialPredictor::default().predict(&evidence(40_000, 100));
        assert!(p.is_conclusive(), "{:?}", p.reasons);
        assert!(p.failure_probability <= 0.05);
        assert!(p.performance_degradation.contains(0.0));
    }

    #[test]
    fn extra_cpu_is_a_bottleneck_and_a_regression() {
        let mut e = evidence(5_000, 100);
        let (mut stable_cpu, mut candidate_cpu) = (Distribution::cpu_ns(), Distribution::cpu_ns());
        for i in 0..5_000u64 {
            stable_cpu.record(100_000 + (i * 31) % 2_000);
            candidate_cpu.record(150_000 + (i * 31) % 2_000);
        }
        e.stable.cpu_ns = Some(stable_cpu);
        e.candidate.cpu_ns = Some(candidate_cpu);
        let (mut stable_alloc, mut candidate_alloc) =
            (Distribution::bytes(), Distribution::bytes());
        for i in 0..5_000u64 {
            stable_alloc.record(4_096 + (i * 17) % 512);
            candidate_alloc.record(4_506 + (i * 17) % 512);
        }
        e.stable.alloc_bytes = Some(stable_alloc);
        e.candidate.alloc_bytes = Some(candidate_alloc);
        let p = SequentialPredictor::default().predict(&e);
        assert!(p.failure_probability > 0.95);
        // Worst first: CPU 1.5x, then memory about 1.095x.
        assert_eq!(p.bottlenecks[0].resource, Resource::Cpu);
        assert!((p.bottlenecks[0].ratio.estimate - 1.5).abs() < 0.02);
        assert_eq!(p.bottlenecks[1].resource, Resource::Memory);
        assert!((p.bottlenecks[1].ratio.estimate - 1.095).abs() < 0.01);
        assert!(
            p.degradations
                .iter()
                .any(|d| d.kpi == crate::Kpi::AllocPerRequest)
        );
    }
}
