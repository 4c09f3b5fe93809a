//! The mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and Walsh,
//! "Always Valid Inference: Bringing Sequential Analysis to A/B Testing" (2017, also known
//! as "Peeking at A/B tests").
//!
//! Every test in this module works on one number: the difference `θ̂` between the candidate
//! and stable, with the variance `V` of its estimate (normal approximation). Against the
//! hypothesis `θ = θ₀`, the likelihood ratio of `θ̂ ~ N(θ, V)` mixed over `θ ~ N(θ₀, τ²)`
//! has the closed form
//!
//! ```text
//! Λ(θ₀) = sqrt(V / (V + τ²)) · exp( τ² (θ̂ − θ₀)² / (2 V (V + τ²)) )
//! ```
//!
//! Under `θ = θ₀` this is a non-negative martingale in the information `1/V`, so by Ville's
//! inequality it exceeds `1/α` at *any* look with probability at most `α`. That is what
//! makes the p-value `min(1, 1/Λ)` and the confidence sequence `{θ₀ : Λ(θ₀) < 1/α}` valid
//! however often the controller looks and whenever it stops.

use serde::{Deserialize, Serialize};

use super::AnalysisError;
use super::error::{positive, unit_open};
use crate::evidence::{Distribution, Moments};
use crate::model::SampleCount;

/// The smallest per-sample variance a mean is assumed to have.
///
/// Latency, CPU and allocation values come from HDR histograms with three significant
/// digits, so each value carries a relative rounding of about 10⁻³ and its logarithm a
/// variance of about 10⁻⁶. Flooring at that keeps the test defined (and honest) on evidence
/// where every request took exactly the same time.
pub const MIN_VARIANCE_PER_SAMPLE: f64 = 1e-6;

/// Events out of trials: failures out of requests, slow requests out of all requests.
///
/// ```
/// use shadowlib::analysis::Proportion;
///
/// let p = Proportion::new(5, 1_000);
/// assert_eq!(p.rate(), 0.005);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proportion {
    /// How many trials had the event.
    pub events: u64,
    /// How many trials there were.
    pub trials: u64,
}

impl Proportion {
    /// `events` out of `trials` (events above trials are capped at trials).
    pub fn new(events: u64, trials: u64) -> Self {
        Self {
            events: events.min(trials),
            trials,
        }
    }

    /// Events over trials; 0 without trials.
    pub fn rate(&self) -> f64 {
        match self.trials {
            0 => 0.0,
            n => self.events as f64 / n as f64,
        }
    }

    /// The rate with one event and one non-event added (Laplace's rule of succession).
    ///
    /// Used only for the variance: zero failures in a few hundred requests do not mean
    /// the failure rate is known to be exactly zero, which the raw rate would claim.
    fn smoothed_rate(&self) -> f64 {
        (self.events as f64 + 1.0) / (self.trials as f64 + 2.0)
    }
}

/// A difference between the candidate and stable and the variance of that estimate.
///
/// Positive differences mean the candidate is worse (slower, more failures, more CPU).
///
/// ```
/// use shadowlib::analysis::{DifferenceEstimate, Proportion};
///
/// let e = DifferenceEstimate::proportions(Proportion::new(10, 1_000), Proportion::new(30, 1_000))
///     .expect("both arms have requests");
/// assert!((e.difference - 0.02).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DifferenceEstimate {
    /// Candidate minus stable, on the test's scale.
    pub difference: f64,
    /// Variance of `difference` (not of a single observation).
    pub variance: f64,
    /// The observations behind each side.
    pub samples: SampleCount,
}

impl DifferenceEstimate {
    /// Difference of two means, each with its own (floored) sample variance.
    ///
    /// `None` when either side has fewer than two observations: one value says nothing
    /// about spread.
    pub fn means(stable: &Moments, candidate: &Moments) -> Option<Self> {
        if stable.count() < 2 || candidate.count() < 2 {
            return None;
        }
        let per_arm = |m: &Moments| m.variance().max(MIN_VARIANCE_PER_SAMPLE) / m.count() as f64;
        Some(Self {
            difference: candidate.mean() - stable.mean(),
            variance: per_arm(stable) + per_arm(candidate),
            samples: SampleCount {
                stable: stable.count(),
                candidate: candidate.count(),
            },
        })
    }

    /// Difference of two proportions.
    ///
    /// The variance of each side uses the smoothed rate `(events + 1) / (trials + 2)`, so
    /// an arm with no events yet is not taken to have a rate known to be exactly zero —
    /// the weakness of tests that pass a zero-heavy count just because nothing happened.
    /// `None` when either side has no trials.
    pub fn proportions(stable: Proportion, candidate: Proportion) -> Option<Self> {
        if stable.trials == 0 || candidate.trials == 0 {
            return None;
        }
        let per_arm = |p: &Proportion| {
            let rate = p.smoothed_rate();
            rate * (1.0 - rate) / p.trials as f64
        };
        Some(Self {
            difference: candidate.rate() - stable.rate(),
            variance: per_arm(&stable) + per_arm(&candidate),
            samples: SampleCount {
                stable: stable.trials,
                candidate: candidate.trials,
            },
        })
    }

    /// The mean of per-pair differences (each pair measured on both builds: a log ratio of
    /// latencies, say), with the variance of that mean, `s² / n` (floored).
    ///
    /// Each pair is its own control, so what the pairs share — the request's own cost —
    /// cancels, and only what differs between the builds is left to estimate. `None` with
    /// fewer than two pairs.
    ///
    /// ```
    /// use shadowlib::Moments;
    /// use shadowlib::analysis::DifferenceEstimate;
    ///
    /// let mut log_ratios = Moments::default();
    /// for r in [0.09, 0.11, 0.10, 0.10] { log_ratios.add(r); }
    /// let e = DifferenceEstimate::paired(&log_ratios).expect("four pairs");
    /// assert!((e.difference - 0.10).abs() < 1e-12);
    /// ```
    pub fn paired(differences: &Moments) -> Option<Self> {
        let n = differences.count();
        if n < 2 {
            return None;
        }
        Some(Self {
            difference: differences.mean(),
            variance: differences.variance().max(MIN_VARIANCE_PER_SAMPLE) / n as f64,
            samples: SampleCount {
                stable: n,
                candidate: n,
            },
        })
    }

    /// The difference of two rates measured on the same trials (McNemar's setting): of
    /// `pairs` trials, the event happened on the candidate alone `candidate_only` times and
    /// on stable alone `stable_only` times. The difference of rates is
    /// `(candidate_only − stable_only) / pairs`; trials on which both or neither had it say
    /// nothing about the difference and only add to `pairs`.
    ///
    /// The variance of a pair's difference is `(b + c)/n − d²`; its discordant share is
    /// smoothed as `(b + c + 1) / (n + 2)`, so that no discordant pair yet is not taken as
    /// a difference known to be exactly zero. `None` without pairs.
    ///
    /// ```
    /// use shadowlib::analysis::DifferenceEstimate;
    ///
    /// let e = DifferenceEstimate::paired_proportions(12, 2, 1_000).expect("pairs");
    /// assert!((e.difference - 0.01).abs() < 1e-12);
    /// ```
    pub fn paired_proportions(candidate_only: u64, stable_only: u64, pairs: u64) -> Option<Self> {
        if pairs == 0 {
            return None;
        }
        let n = pairs as f64;
        let difference = (candidate_only as f64 - stable_only as f64) / n;
        let discordant = ((candidate_only + stable_only) as f64 + 1.0) / (n + 2.0);
        let per_pair = (discordant - difference * difference).max(discordant / n);
        Some(Self {
            difference,
            variance: per_pair / n,
            samples: SampleCount {
                stable: pairs,
                candidate: pairs,
            },
        })
    }

    /// The weighted sum of per-stratum differences, each stratum (a route at one canary
    /// step, say) compared within itself: `Σ wₛ dₛ` with variance `Σ wₛ² Vₛ`. The weights
    /// should add up to one; strata of one kind do not then stand in for another, however
    /// the mix of kinds differs between the builds or moves over time. `None` without a
    /// stratum.
    ///
    /// ```
    /// use shadowlib::SampleCount;
    /// use shadowlib::analysis::DifferenceEstimate;
    ///
    /// let stratum = |difference| DifferenceEstimate { difference, variance: 1e-4, samples: SampleCount { stable: 100, candidate: 10 } };
    /// let e = DifferenceEstimate::stratified([(0.75, stratum(0.0)), (0.25, stratum(0.2))]).expect("two strata");
    /// assert!((e.difference - 0.05).abs() < 1e-12);
    /// assert_eq!(e.samples.candidate, 20);
    /// ```
    pub fn stratified(strata: impl IntoIterator<Item = (f64, DifferenceEstimate)>) -> Option<Self> {
        let mut total: Option<Self> = None;
        for (weight, stratum) in strata {
            let into = total.get_or_insert(Self {
                difference: 0.0,
                variance: 0.0,
                samples: SampleCount::default(),
            });
            into.difference += weight * stratum.difference;
            into.variance += weight * weight * stratum.variance;
            into.samples.stable += stratum.samples.stable;
            into.samples.candidate += stratum.samples.candidate;
        }
        total
    }

    /// Log of the ratio of the arithmetic means of two distributions, `ln(mean_c / mean_s)`,
    /// with the delta-method variance `s_c²/(n_c·mean_c²) + s_s²/(n_s·mean_s²)`.
    ///
    /// Used for per-request resources (CPU, allocations), where what matters for capacity is
    /// the mean cost, and a relative change is what people state tolerances in. `None` when
    /// either side has fewer than two values or a mean of zero.
    pub fn log_ratio_of_means(stable: &Distribution, candidate: &Distribution) -> Option<Self> {
        if stable.count() < 2
            || candidate.count() < 2
            || stable.mean() <= 0.0
            || candidate.mean() <= 0.0
        {
            return None;
        }
        let per_arm = |d: &Distribution| {
            let relative_variance = (d.stdev() / d.mean()).powi(2);
            relative_variance.max(MIN_VARIANCE_PER_SAMPLE) / d.count() as f64
        };
        Some(Self {
            difference: (candidate.mean() / stable.mean()).ln(),
            variance: per_arm(stable) + per_arm(candidate),
            samples: SampleCount {
                stable: stable.count(),
                candidate: candidate.count(),
            },
        })
    }
}

/// A set of differences that contains the true one at every look, with probability at
/// least `confidence`, however many looks are taken.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceSequence {
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// The coverage guaranteed over all looks together, `1 − α`.
    pub confidence: f64,
}

impl ConfidenceSequence {
    /// Whether `value` lies in the interval.
    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }
}

/// Whether the candidate is worse than tolerated on one KPI, or on the whole evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The evidence shows a degradation beyond the tolerance.
    Worse,
    /// The evidence shows the degradation, if any, is within the tolerance.
    NotWorse,
    /// The evidence does not settle it yet: keep looking.
    NotYetKnown,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Worse => "worse than tolerated",
            Verdict::NotWorse => "not worse than tolerated",
            Verdict::NotYetKnown => "not yet known",
        })
    }
}

/// The result of a mixture SPRT at one look.
///
/// ```
/// use shadowlib::SampleCount;
/// use shadowlib::analysis::{DifferenceEstimate, MixtureSprt, Verdict};
///
/// let sprt = MixtureSprt::new(0.05, 0.05)?;
/// let estimate = DifferenceEstimate { difference: 0.2, variance: 1e-4, samples: SampleCount::default() };
/// let test = sprt.test(estimate, 0.05);
/// assert!(test.p_value < 1e-6, "0.2 is 20 standard errors away from 0");
/// assert!(test.confidence.contains(0.2));
/// assert_eq!(test.verdict(), Verdict::Worse);
/// # Ok::<(), shadowlib::analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialTest {
    /// The estimate tested.
    pub estimate: DifferenceEstimate,
    /// `ln Λ(0)`: the log mixture likelihood ratio against "no difference".
    pub log_statistic: f64,
    /// Always-valid p-value of "no difference", `min(1, 1/Λ(0))`.
    pub p_value: f64,
    /// Always-valid confidence sequence for the difference.
    pub confidence: ConfidenceSequence,
    /// The largest tolerated difference.
    pub tolerance: f64,
    /// Always-valid p-value of "not worse than tolerated" (`θ ≤ tolerance`): small when the
    /// candidate is worse than tolerated.
    pub worse_p_value: f64,
    /// Always-valid p-value of "worse than tolerated" (`θ ≥ tolerance`): small when the
    /// candidate is within the tolerance.
    pub not_worse_p_value: f64,
    /// The level `α` the verdict is taken at.
    pub alpha: f64,
}

impl SequentialTest {
    /// Worse than tolerated when `worse_p_value ≤ α` (the confidence sequence lies above
    /// the tolerance), not worse when `not_worse_p_value ≤ α` (it lies below), otherwise
    /// not yet known.
    pub fn verdict(&self) -> Verdict {
        if self.worse_p_value <= self.alpha {
            Verdict::Worse
        } else if self.not_worse_p_value <= self.alpha {
            Verdict::NotWorse
        } else {
            Verdict::NotYetKnown
        }
    }
}

/// The mixture SPRT with a normal mixing distribution of standard deviation `τ`, or an
/// equal mixture of several such `τ`.
///
/// `τ` sets the effect size the test is quickest to detect: the test is most powerful for
/// differences around `τ`, and still valid for every other. One `τ` at the tolerance is
/// slow to see a difference ten times the tolerance early on (the mixture puts almost no
/// weight there); an equal mixture over a geometric grid of scales, from the tolerance up
/// to the largest difference worth seeing at the first decision, detects each about as
/// fast as a test tuned to it, for the price of `ln(grid size)` in the threshold. An
/// average of martingales is a martingale, so the mixture is as valid as each.
///
/// ```
/// use shadowlib::SampleCount;
/// use shadowlib::analysis::{DifferenceEstimate, MixtureSprt};
///
/// let single = MixtureSprt::new(0.01, 0.001)?;
/// let grid = MixtureSprt::spanning(0.01, 0.001, 0.1)?;
/// // An error rate up 8 points, seen on 600 requests a side.
/// let estimate = DifferenceEstimate { difference: 0.08, variance: 0.0002, samples: SampleCount::default() };
/// assert!(grid.p_value(&estimate, 0.0) < 0.01, "the grid sees it");
/// assert!(single.p_value(&estimate, 0.0) > 0.5, "one tiny scale does not yet");
/// # Ok::<(), shadowlib::analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureSprt {
    alpha: f64,
    /// The mixing variances `τ²`, weighted equally.
    mixing_variances: Vec<f64>,
}

impl MixtureSprt {
    /// A test at level `alpha` in `(0, 1)` with mixing standard deviation `mixing_sd > 0`.
    pub fn new(alpha: f64, mixing_sd: f64) -> Result<Self, AnalysisError> {
        unit_open("alpha", alpha)?;
        positive("mixing_sd", mixing_sd)?;
        Ok(Self {
            alpha,
            mixing_variances: vec![mixing_sd * mixing_sd],
        })
    }

    /// A test at level `alpha` mixing equally over the scales `smallest, 2·smallest, …` up
    /// to the first at or past `largest` (one scale when `largest ≤ smallest`).
    pub fn spanning(alpha: f64, smallest: f64, largest: f64) -> Result<Self, AnalysisError> {
        unit_open("alpha", alpha)?;
        positive("mixing_sd", smallest)?;
        let mut mixing_variances = vec![smallest * smallest];
        let mut scale = smallest;
        // At most 24 doublings: a grid past 10⁷ times its first scale says nothing more.
        while scale < largest && mixing_variances.len() < 24 {
            scale *= 2.0;
            mixing_variances.push(scale * scale);
        }
        Ok(Self {
            alpha,
            mixing_variances,
        })
    }

    /// The level `α`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The mixing standard deviations.
    pub fn scales(&self) -> impl Iterator<Item = f64> + '_ {
        self.mixing_variances.iter().map(|v| v.sqrt())
    }

    /// `ln Λ(null)` for this estimate: the evidence against "the difference is `null`".
    pub fn log_likelihood_ratio(&self, estimate: &DifferenceEstimate, null: f64) -> f64 {
        let v = estimate.variance;
        let shift = estimate.difference - null;
        let logs = self
            .mixing_variances
            .iter()
            .map(|&t| 0.5 * (v / (v + t)).ln() + t * shift * shift / (2.0 * v * (v + t)));
        log_mean_exp(logs)
    }

    /// Always-valid p-value of "the difference is `null`": `min(1, 1/Λ(null))`.
    pub fn p_value(&self, estimate: &DifferenceEstimate, null: f64) -> f64 {
        (-self.log_likelihood_ratio(estimate, null)).exp().min(1.0)
    }

    /// The confidence sequence `{θ₀ : Λ(θ₀) < 1/α}`. With one scale it solves to
    /// `θ̂ ± sqrt( V (V + τ²) / τ² · (2 ln(1/α) + ln((V + τ²)/V)) )`; with a grid, `Λ` grows
    /// with `|θ̂ − θ₀|`, and the half-width is found by bisection.
    pub fn confidence_sequence(&self, estimate: &DifferenceEstimate) -> ConfidenceSequence {
        let v = estimate.variance;
        let threshold = (1.0 / self.alpha).ln();
        let half_width = match self.mixing_variances.as_slice() {
            [t] => (v * (v + t) / t * (2.0 * threshold + ((v + t) / v).ln())).sqrt(),
            _ => {
                let at = |h: f64| {
                    let shifted = DifferenceEstimate {
                        difference: estimate.difference + h,
                        ..*estimate
                    };
                    self.log_likelihood_ratio(&shifted, estimate.difference)
                };
                // Λ grows without bound with the distance: doubling finds a point past
                // the threshold, and bisection the crossing.
                let mut high = v.sqrt().max(f64::MIN_POSITIVE);
                while at(high) < threshold && high < 1e12 {
                    high *= 2.0;
                }
                let mut low = 0.0;
                for _ in 0..80 {
                    let middle = (low + high) / 2.0;
                    if at(middle) < threshold {
                        low = middle;
                    } else {
                        high = middle;
                    }
                }
                high
            }
        };
        ConfidenceSequence {
            low: estimate.difference - half_width,
            high: estimate.difference + half_width,
            confidence: 1.0 - self.alpha,
        }
    }

    /// Runs the test on an estimate, against no difference and against `tolerance`.
    ///
    /// A variance that is not positive and finite gives a test that says nothing (p-values
    /// of 1 and an unbounded confidence sequence), never a false verdict.
    pub fn test(&self, estimate: DifferenceEstimate, tolerance: f64) -> SequentialTest {
        if !(estimate.variance > 0.0
            && estimate.variance.is_finite()
            && estimate.difference.is_finite())
        {
            return SequentialTest {
                estimate,
                log_statistic: 0.0,
                p_value: 1.0,
                confidence: ConfidenceSequence {
                    low: f64::NEG_INFINITY,
                    high: f64::INFINITY,
                    confidence: 1.0 - self.alpha,
                },
                tolerance,
                worse_p_value: 1.0,
                not_worse_p_value: 1.0,
                alpha: self.alpha,
            };
        }
        let at_tolerance = self.p_value(&estimate, tolerance);
        let above = estimate.difference > tolerance;
        SequentialTest {
            estimate,
            log_statistic: self.log_likelihood_ratio(&estimate, 0.0),
            p_value: self.p_value(&estimate, 0.0),
            confidence: self.confidence_sequence(&estimate),
            tolerance,
            worse_p_value: if above { at_tolerance } else { 1.0 },
            not_worse_p_value: if above { 1.0 } else { at_tolerance },
            alpha: self.alpha,
        }
    }
}

/// `ln( mean(exp(xᵢ)) )`, computed without overflow.
fn log_mean_exp(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    let largest = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !largest.is_finite() {
        return largest;
    }
    let sum: f64 = values.iter().map(|x| (x - largest).exp()).sum();
    largest + (sum / values.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(difference: f64, variance: f64) -> DifferenceEstimate {
        DifferenceEstimate {
            difference,
            variance,
            samples: SampleCount::default(),
        }
    }

    #[test]
    fn invalid_parameters_are_named() {
        assert!(matches!(
            MixtureSprt::new(0.0, 1.0),
            Err(AnalysisError::OutOfRange { field: "alpha", .. })
        ));
        assert!(matches!(
            MixtureSprt::new(1.0, 1.0),
            Err(AnalysisError::OutOfRange { field: "alpha", .. })
        ));
        assert!(matches!(
            MixtureSprt::new(0.05, 0.0),
            Err(AnalysisError::OutOfRange {
                field: "mixing_sd",
                ..
            })
        ));
        assert!(MixtureSprt::new(0.05, f64::NAN).is_err());
    }

    #[test]
    fn a_grid_of_one_scale_is_the_single_scale_test() {
        let single = MixtureSprt::new(0.05, 0.05).expect("valid");
        let grid = MixtureSprt::spanning(0.05, 0.05, 0.01).expect("valid");
        let e = estimate(0.08, 1e-3);
        assert!((single.p_value(&e, 0.0) - grid.p_value(&e, 0.0)).abs() < 1e-15);
    }

    #[test]
    fn the_grid_confidence_sequence_is_where_the_ratio_crosses_the_threshold() {
        let grid = MixtureSprt::spanning(0.05, 0.01, 1.0).expect("valid");
        let e = estimate(0.2, 1e-3);
        let cs = grid.confidence_sequence(&e);
        let threshold = (1.0f64 / 0.05).ln();
        for edge in [cs.low, cs.high] {
            let at = grid.log_likelihood_ratio(&e, edge);
            assert!((at - threshold).abs() < 1e-6, "{at} at {edge}");
        }
        // Inside, the ratio is below the threshold.
        assert!(grid.log_likelihood_ratio(&e, 0.2) < threshold);
    }

    #[test]
    fn degenerate_variance_says_nothing() {
        let sprt = MixtureSprt::new(0.05, 0.1).expect("valid");
        for variance in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let test = sprt.test(estimate(5.0, variance), 0.1);
            assert_eq!(test.verdict(), Verdict::NotYetKnown);
            assert_eq!(test.p_value, 1.0);
        }
    }

    #[test]
    fn verdict_follows_the_confidence_sequence() {
        let sprt = MixtureSprt::new(0.05, 0.05).expect("valid");
        for difference in [-0.3, -0.1, 0.0, 0.04, 0.05, 0.06, 0.1, 0.3] {
            for variance in [1e-5, 1e-4, 1e-3, 1e-2] {
                let test = sprt.test(estimate(difference, variance), 0.05);
                let expected = if test.confidence.low > 0.05 {
                    Verdict::Worse
                } else if test.confidence.high < 0.05 {
                    Verdict::NotWorse
                } else {
                    Verdict::NotYetKnown
                };
                assert_eq!(
                    test.verdict(),
                    expected,
                    "difference {difference}, variance {variance}"
                );
            }
        }
    }

    #[test]
    fn zero_failures_do_not_mean_a_known_zero_rate() {
        let none =
            DifferenceEstimate::proportions(Proportion::new(0, 100), Proportion::new(0, 100))
                .expect("trials on both arms");
        assert_eq!(none.difference, 0.0);
        // Smoothed rate 1/102 on each arm.
        let per_arm = (1.0 / 102.0) * (101.0 / 102.0) / 100.0;
        assert!((none.variance - 2.0 * per_arm).abs() < 1e-15);
    }
}
