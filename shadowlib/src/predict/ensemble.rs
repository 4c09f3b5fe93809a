//! Several predictors stacked into one.

use super::{Bottleneck, Certainty, Prediction, Predictor};
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
/// * Failure probability: the maximum, or the weighted mean, of the conclusive members.
/// * Degradation: the worst conclusive member's.
/// * Bottlenecks and reasons: all of them, reasons prefixed with the member's name.
/// * Certainty: conclusive when every member is, or when a conclusive member's failure
///   probability reaches the alarm level (default 0.5) — so a clear failure seen by one
///   member is acted on without waiting for the others, while a pass needs them all.
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
    alarm: f64,
}

impl Ensemble {
    /// An empty ensemble that takes the maximum.
    pub fn max() -> Self {
        Self {
            combine: Combine::Max,
            members: Vec::new(),
            alarm: 0.5,
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

    /// The failure probability at which one conclusive member decides for all.
    pub fn alarm_at(mut self, probability: f64) -> Self {
        self.alarm = probability.clamp(0.0, 1.0);
        self
    }
}

impl Predictor for Ensemble {
    fn name(&self) -> &str {
        "ensemble"
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
        let conclusive: Vec<&(f64, Prediction)> = predictions
            .iter()
            .filter(|(_, p)| p.is_conclusive())
            .collect();
        let probability = match self.combine {
            Combine::Max => conclusive
                .iter()
                .map(|(_, p)| p.failure_probability)
                .fold(0.0, f64::max),
            Combine::Weighted => {
                let total: f64 = conclusive.iter().map(|(w, _)| w).sum();
                if total > 0.0 {
                    conclusive
                        .iter()
                        .map(|(w, p)| w * p.failure_probability)
                        .sum::<f64>()
                        / total
                } else {
                    0.0
                }
            }
        };
        let worst = conclusive
            .iter()
            .map(|(_, p)| p.performance_degradation)
            .max_by(|a, b| a.estimate.total_cmp(&b.estimate))
            .unwrap_or_default();
        let mut combined =
            Prediction::new(self.name(), probability, evidence).with_degradation(worst);
        let mut bottlenecks: Vec<Bottleneck> = Vec::new();
        let mut undecided = Vec::new();
        for (_, p) in &predictions {
            combined.degradations.extend(p.degradations.iter().cloned());
            bottlenecks.extend(p.bottlenecks.iter().cloned());
            combined
                .reasons
                .extend(p.reasons.iter().map(|r| format!("{}: {r}", p.predictor)));
            if let Certainty::Inconclusive(why) = &p.certainty {
                undecided.push(format!("{}: {why}", p.predictor));
            }
        }
        bottlenecks.sort_by(|a, b| b.ratio.estimate.total_cmp(&a.ratio.estimate));
        combined.bottlenecks = bottlenecks;
        let alarm = conclusive
            .iter()
            .any(|(_, p)| p.failure_probability >= self.alarm);
        if !undecided.is_empty() && !alarm {
            combined.certainty = Certainty::Inconclusive(undecided.join("; "));
        }
        if conclusive.is_empty() {
            combined.performance_degradation = Degradation::default();
        }
        combined
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Version;

    struct Fixed(&'static str, Option<f64>);

    impl Predictor for Fixed {
        fn name(&self) -> &str {
            self.0
        }

        fn predict(&self, evidence: &Evidence) -> Prediction {
            match self.1 {
                Some(p) => {
                    Prediction::new(self.0, p, evidence).with_degradation(Degradation::point(p))
                }
                None => Prediction::inconclusive(self.0, "waiting", evidence),
            }
        }
    }

    fn evidence() -> Evidence {
        Evidence::new(Version::new("a", "1"), Version::new("a", "2"))
    }

    #[test]
    fn max_takes_the_worst_member() {
        let e = Ensemble::max()
            .with(Fixed("a", Some(0.1)))
            .with(Fixed("b", Some(0.7)));
        let p = e.predict(&evidence());
        assert_eq!(p.failure_probability, 0.7);
        assert_eq!(p.performance_degradation.estimate, 0.7);
        assert!(p.is_conclusive());
    }

    #[test]
    fn weighted_takes_the_weighted_mean() {
        let e = Ensemble::weighted()
            .with_weight(3.0, Fixed("a", Some(0.0)))
            .with_weight(1.0, Fixed("b", Some(0.8)));
        assert!((e.predict(&evidence()).failure_probability - 0.2).abs() < 1e-12);
    }

    #[test]
    fn a_pass_needs_every_member_but_an_alarm_needs_one() {
        let waiting = Ensemble::max()
            .with(Fixed("a", Some(0.1)))
            .with(Fixed("b", None));
        assert!(!waiting.predict(&evidence()).is_conclusive());
        let alarm = Ensemble::max()
            .with(Fixed("a", Some(0.9)))
            .with(Fixed("b", None));
        let p = alarm.predict(&evidence());
        assert!(p.is_conclusive());
        assert_eq!(p.failure_probability, 0.9);
    }

    #[test]
    fn empty_ensemble_is_inconclusive() {
        assert!(!Ensemble::max().predict(&evidence()).is_conclusive());
    }
}
