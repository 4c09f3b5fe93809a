//! A predictor built on the sequential tests, so its answers stay valid at every look.

use std::sync::{Mutex, PoisonError};

use super::{CapacityPredictor, Prediction, Predictor, Resource};
use crate::analysis::{
    AnalysisError, Assessment, DifferenceMonitor, Metric, Scope, SequentialAnalysis,
    SequentialConfig, Verdict,
};
use crate::evidence::{Evidence, Stage};

/// The documented default for HTTP services: judges the candidate with
/// [`SequentialAnalysis`] — paired tests on the shadow's twin-and-candidate reads, tests
/// within each step and route in the canary — and the control charts of
/// [`DifferenceMonitor`], and maps the verdict onto a [`Prediction`] the controller acts on:
///
/// * **worse than tolerated** (a test, or a significant novel failure class) → the
///   controller rolls back.
/// * **not worse than tolerated** on every required KPI, and no chart alarm → the
///   controller steps up.
/// * **too few samples** for the stage → the controller holds while they come.
/// * **not yet known** (a test undecided, a failure class stable never produced, or a
///   chart alarm on the difference between the builds) → an inconclusive prediction: the
///   controller holds, until the policy's decision deadline.
///
/// Its tests are in the prediction ([`Prediction::tests`]), their levels adding up to the
/// configuration's `alpha` ([`Predictor::alpha`]). The failure probability is the
/// posterior that some required KPI is worse than tolerated
/// ([`SequentialAnalysis::failure_probability`]), reported at every look, decided or not.
/// The headline degradation is the relative change of typical latency (geometric mean)
/// of the stage judged, with its confidence sequence; every test's degradation is reported
/// per KPI, and CPU or allocations that the candidate spends more of become bottlenecks.
///
/// The charts keep state between looks, so use one predictor per rollout (a new stream —
/// counts that go down — resets them).
///
/// ```
/// use shadowlib::{Evidence, Predictor, SequentialPredictor, Version};
///
/// let predictor = SequentialPredictor::default();
/// let mut evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
/// let pairs = &mut evidence.shadow.pairs.total;
/// for i in 0..20_000u64 {
///     // 5% of reads fail on the candidate alone.
///     pairs.outcomes.record(false, i % 20 == 0);
///     pairs.latency.add(((i * 7919) % 100) as f64 / 1_000.0 - 0.05);
/// }
/// let prediction = predictor.predict(&evidence);
/// assert_eq!(prediction.verdict(), shadowlib::analysis::Verdict::Worse);
/// assert!(prediction.failure_probability > 0.95);
/// ```
#[derive(Debug)]
pub struct SequentialPredictor {
    analysis: SequentialAnalysis,
    monitor: Mutex<DifferenceMonitor>,
    capacity: Option<CapacityPredictor>,
}

impl SequentialPredictor {
    /// A predictor with this configuration, validated here.
    pub fn new(config: SequentialConfig) -> Result<Self, AnalysisError> {
        let monitor = DifferenceMonitor::new(config.charts.clone())?;
        Ok(Self {
            analysis: SequentialAnalysis::new(config)?,
            monitor: Mutex::new(monitor),
            capacity: None,
        })
    }

    /// Also predicts, from the CPU per request the shadow measures on both builds, the
    /// candidate's utilization at the declared peak and its probability of failure there
    /// (see [`CapacityPredictor`]). It explains: its figures and its probability are in
    /// every prediction's reasons, and the verdict stays the tests'.
    ///
    /// ```
    /// use shadowlib::SequentialPredictor;
    /// use shadowlib::predict::{CapacityConfig, CapacityPredictor};
    ///
    /// let peak = CapacityPredictor::new(CapacityConfig::new(2_000.0, 4))?;
    /// let predictor = SequentialPredictor::default().with_capacity(peak);
    /// # let _ = predictor;
    /// # Ok::<(), shadowlib::predict::CapacityConfigError>(())
    /// ```
    pub fn with_capacity(mut self, capacity: CapacityPredictor) -> Self {
        self.capacity = Some(capacity);
        self
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
    let mut open: Vec<String> = assessment
        .tests
        .iter()
        .filter(|t| t.required && t.verdict == Verdict::NotYetKnown)
        .map(|t| format!("{} ({})", t.metric, t.scope))
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

    fn alpha(&self) -> f64 {
        self.analysis.config().alpha
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        let assessment = self.analysis.analyze(evidence);
        // The monitor holds only numbers that stay consistent whatever a panic interrupted.
        let alarms = self
            .monitor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(assessment.differences);

        // The posterior of "worse than tolerated", whatever the verdict: an undecided
        // answer is not a zero.
        let probability = self.analysis.failure_probability(&assessment);
        let mut prediction = match assessment.verdict {
            Verdict::NotWorse if !alarms.is_empty() => Prediction::inconclusive(
                self.name(),
                "every KPI within tolerance, but a control chart of the difference between \
                 the builds alarmed",
                evidence,
            ),
            Verdict::NotYetKnown => match &assessment.insufficient {
                Some(why) => Prediction::needs_samples(self.name(), why.clone(), evidence),
                None => Prediction::inconclusive(self.name(), undecided(&assessment), evidence),
            },
            verdict => Prediction::ruling(self.name(), verdict, evidence),
        };
        prediction.failure_probability = probability;
        prediction.ruling = Some(match assessment.verdict {
            Verdict::NotWorse if !alarms.is_empty() => Verdict::NotYetKnown,
            verdict => verdict,
        });
        let headline = match assessment.stage {
            Stage::Shadow => Scope::Shadow,
            _ => Scope::Canary,
        };
        prediction.tests = assessment.tests.clone();
        for test in &assessment.tests {
            if matches!(test.scope, Scope::ShadowRoute(_)) {
                continue;
            }
            let degradation = test.degradation();
            if test.metric == Metric::Latency && test.scope == headline {
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
        if let Some(capacity) = &self.capacity {
            let at_peak = capacity.predict(evidence);
            prediction.reasons.extend(at_peak.reasons);
        }
        prediction
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Version;
    use crate::predict::Certainty;

    #[test]
    fn default_configuration_is_valid() {
        assert!(SequentialConfig::default().validate().is_ok());
    }

    /// `n` shadow pairs, the candidate `factor` times the twin's latency and CPU (± 5%).
    fn evidence(n: u64, factor: f64) -> Evidence {
        let mut e = Evidence::new(Version::new("a", "1"), Version::new("a", "2"));
        let pairs = &mut e.shadow.pairs.total;
        for i in 0..n {
            let jitter = ((i * 7919) % 100) as f64 / 1_000.0 - 0.05;
            pairs.outcomes.record(false, false);
            pairs.latency.add(factor.ln() + jitter);
        }
        e
    }

    #[test]
    fn too_little_evidence_needs_samples() {
        let p = SequentialPredictor::default().predict(&evidence(50, 3.0));
        assert!(
            matches!(p.certainty, Certainty::NeedsSamples(ref why) if why.contains("need 200"))
        );
    }

    #[test]
    fn zero_failures_hold_until_the_tolerated_rate_could_show() {
        // Identical latency, no failures: after 1,000 pairs a 0.1% failure rate would
        // have produced no failure with probability 37%, so the error test holds.
        let p = SequentialPredictor::default().predict(&evidence(1_000, 1.0));
        assert!(
            matches!(p.certainty, Certainty::Inconclusive(_)),
            "{:?}",
            p.certainty
        );
        assert!(
            p.reasons
                .iter()
                .any(|r| r.starts_with("error rate") && r.contains("not yet known"))
        );
        // With enough pairs it passes.
        let p = SequentialPredictor::default().predict(&evidence(40_000, 1.0));
        assert!(p.is_conclusive(), "{:?}", p.reasons);
        assert!(p.failure_probability <= 0.05);
        assert!(p.performance_degradation.contains(0.0));
    }

    #[test]
    fn extra_cpu_is_a_bottleneck_and_a_regression() {
        let mut e = evidence(5_000, 1.0);
        let pairs = &mut e.shadow.pairs.total;
        for i in 0..5_000u64 {
            let jitter = ((i * 31) % 100) as f64 / 2_000.0;
            pairs.cpu.add(1.5f64.ln() + jitter - 0.025);
            pairs
                .alloc_bytes
                .add(1.095f64.ln() + jitter / 10.0 - 0.0025);
        }
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
