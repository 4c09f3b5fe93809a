//! Several predictors stacked into one.

use super::{Bottleneck, Certainty, Prediction, Predictor};
use crate::analysis::Verdict;
use crate::evidence::Evidence;
use crate::model::Degradation;

/// How an [`Ensemble`] combines its members' failure probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    /// The highest: any member can veto (the safe default).
    Max,
    /// The weighted mean, with the weights given with the members.
    Weighted,
}

/// Combines predictors — statistical, capacity, learned, your own — into one.
///
/// * Verdict: worse as soon as one member's is (a clear failure seen by one member is
///   acted on without waiting for the others); not worse when every member that decides
///   says so. A member that only explains (no tests and no ruling of its own, as the
///   learned model) adds its reasons and probability, never a verdict.
/// * Budget ([`Predictor::alpha`]): the sum of the members' — give each its share.
/// * Tests, bottlenecks and reasons: all of them, reasons prefixed with the member's name.
/// * Failure probability: the maximum, or the weighted mean, of the members'.
/// * Degradation: the worst member's.
///
/// ```
/// use shadowlib::predict::{CapacityConfig, CapacityPredictor, Ensemble};
/// use shadowlib::{Predictor, ThresholdPredictor};
///
/// let ensemble = Ensemble::max()
///     .with(ThresholdPredictor::default())
///     .with(CapacityPredictor::new(CapacityConfig::new(2_000.0, 4))?);
/// assert_eq!(ensemble.name(), "ensemble");
/// # Ok::<(), shadowlib::predict::CapacityConfigError>(())
/// ```
pub struct Ensemble {
    combine: Combine,
    members: Vec<(f64, Box<dyn Predictor>)>,
}

impl Ensemble {
    /// An empty ensemble that takes the maximum.
    pub fn max() -> Self {
        Self {
            combine: Combine::Max,
            members: Vec::new(),
        }
    }

    /// An empty ensemble that takes the weighted mean.
    pub fn weighted() -> Self {
        Self {
            combine: Combine::Weighted,
            ..Self::max()
        }
    }

    /// Adds a member with weight 1.
    pub fn with(self, predictor: impl Predictor + 'static) -> Self {
        self.with_weight(1.0, predictor)
    }

    /// Adds a member with a weight (used by [`Combine::Weighted`]; negative or non-finite
    /// weights count as 0).
    pub fn with_weight(mut self, weight: f64, predictor: impl Predictor + 'static) -> Self {
        let weight = if weight.is_finite() {
            weight.max(0.0)
        } else {
            0.0
        };
        self.members.push((weight, Box::new(predictor)));
        self
    }
}

impl Predictor for Ensemble {
    fn name(&self) -> &str {
        "ensemble"
    }

    fn alpha(&self) -> f64 {
        self.members.iter().map(|(_, p)| p.alpha()).sum()
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        if self.members.is_empty() {
            return Prediction::inconclusive(self.name(), "the ensemble has no members", evidence);
        }
        let predictions: Vec<(f64, Prediction)> = self
            .members
            .iter()
            .map(|(w, p)| (*w, p.predict(evidence)))
            .collect();
        let probability = match self.combine {
            Combine::Max => predictions
                .iter()
                .map(|(_, p)| p.failure_probability)
                .fold(0.0, f64::max),
            Combine::Weighted => {
                let total: f64 = predictions.iter().map(|(w, _)| w).sum();
                if total > 0.0 {
                    predictions
                        .iter()
                        .map(|(w, p)| w * p.failure_probability)
                        .sum::<f64>()
                        / total
                } else {
                    0.0
                }
            }
        };
        let worst = predictions
            .iter()
            .map(|(_, p)| p.performance_degradation)
            .max_by(|a, b| a.estimate.total_cmp(&b.estimate))
            .unwrap_or_default();
        // The members that decide: with tests or a ruling of their own.
        let deciding: Vec<&Prediction> = predictions
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.ruling.is_some() || !p.tests.is_empty())
            .collect();
        let verdict = if deciding.iter().any(|p| p.verdict() == Verdict::Worse) {
            Verdict::Worse
        } else if !deciding.is_empty()
            && deciding
                .iter()
                .all(|p| p.verdict() == Verdict::NotWorse && p.is_conclusive())
        {
            Verdict::NotWorse
        } else {
            Verdict::NotYetKnown
        };
        let mut combined =
            Prediction::new(self.name(), probability, evidence).with_degradation(worst);
        combined.ruling = Some(verdict);
        let mut bottlenecks: Vec<Bottleneck> = Vec::new();
        let mut needs_samples = Vec::new();
        let mut undecided = Vec::new();
        for (_, p) in &predictions {
            combined.degradations.extend(p.degradations.iter().cloned());
            combined.tests.extend(p.tests.iter().cloned());
            bottlenecks.extend(p.bottlenecks.iter().cloned());
            combined
                .reasons
                .extend(p.reasons.iter().map(|r| format!("{}: {r}", p.predictor)));
            let decides = p.ruling.is_some() || !p.tests.is_empty();
            match &p.certainty {
                Certainty::NeedsSamples(why) if decides => {
                    needs_samples.push(format!("{}: {why}", p.predictor));
                }
                Certainty::Inconclusive(why) if decides => {
                    undecided.push(format!("{}: {why}", p.predictor));
                }
                _ => {}
            }
        }
        bottlenecks.sort_by(|a, b| b.ratio.estimate.total_cmp(&a.ratio.estimate));
        combined.bottlenecks = bottlenecks;
        if verdict != Verdict::Worse {
            if !needs_samples.is_empty() {
                combined.certainty = Certainty::NeedsSamples(needs_samples.join("; "));
            } else if !undecided.is_empty() {
                combined.certainty = Certainty::Inconclusive(undecided.join("; "));
            } else if deciding.is_empty() {
                combined.certainty = Certainty::Inconclusive(
                    "no member decides: every one only explains".to_owned(),
                );
            }
        }
        if deciding.is_empty() && predictions.is_empty() {
            combined.performance_degradation = Degradation::default();
        }
        combined
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Version;

    /// A member with a fixed verdict (a ruling) and probability, or one that only explains.
    struct Fixed(&'static str, Option<Verdict>, f64, f64);

    impl Predictor for Fixed {
        fn name(&self) -> &str {
            self.0
        }

        fn alpha(&self) -> f64 {
            self.3
        }

        fn predict(&self, evidence: &Evidence) -> Prediction {
            let mut p = match self.1 {
                Some(verdict) => Prediction::ruling(self.0, verdict, evidence),
                None => Prediction::new(self.0, 0.0, evidence),
            };
            p.failure_probability = self.2;
            p.with_degradation(Degradation::point(self.2))
        }
    }

    fn evidence() -> Evidence {
        Evidence::new(Version::new("a", "1"), Version::new("a", "2"))
    }

    #[test]
    fn one_member_seeing_worse_decides_and_a_pass_needs_every_decider() {
        let worse = Ensemble::max()
            .with(Fixed("a", Some(Verdict::NotWorse), 0.1, 0.01))
            .with(Fixed("b", Some(Verdict::Worse), 0.7, 0.01));
        let p = worse.predict(&evidence());
        assert_eq!(p.verdict(), Verdict::Worse);
        assert_eq!(p.failure_probability, 0.7);
        assert_eq!(p.performance_degradation.estimate, 0.7);
        let waiting = Ensemble::max()
            .with(Fixed("a", Some(Verdict::NotWorse), 0.1, 0.01))
            .with(Fixed("b", Some(Verdict::NotYetKnown), 0.2, 0.01));
        assert_eq!(waiting.predict(&evidence()).verdict(), Verdict::NotYetKnown);
    }

    #[test]
    fn a_member_that_only_explains_never_decides() {
        // The explainer's 0.9 is reported; the decider's "not worse" is the verdict.
        let e = Ensemble::max()
            .with(Fixed("decides", Some(Verdict::NotWorse), 0.05, 0.01))
            .with(Fixed("explains", None, 0.9, 0.0));
        let p = e.predict(&evidence());
        assert_eq!(p.verdict(), Verdict::NotWorse);
        assert_eq!(p.failure_probability, 0.9);
        assert!(p.is_conclusive());
        let alone = Ensemble::max().with(Fixed("explains", None, 0.9, 0.0));
        let p = alone.predict(&evidence());
        assert_eq!(p.verdict(), Verdict::NotYetKnown);
        assert!(!p.is_conclusive());
    }

    #[test]
    fn the_budget_is_the_sum_of_the_members() {
        let e = Ensemble::max()
            .with(Fixed("a", None, 0.0, 0.01))
            .with(Fixed("b", None, 0.0, 0.005));
        assert!((e.alpha() - 0.015).abs() < 1e-15);
    }

    #[test]
    fn weighted_takes_the_weighted_mean() {
        let e = Ensemble::weighted()
            .with_weight(3.0, Fixed("a", None, 0.0, 0.0))
            .with_weight(1.0, Fixed("b", None, 0.8, 0.0));
        assert!((e.predict(&evidence()).failure_probability - 0.2).abs() < 1e-12);
    }

    #[test]
    fn empty_ensemble_is_inconclusive() {
        assert!(!Ensemble::max().predict(&evidence()).is_conclusive());
    }
}
