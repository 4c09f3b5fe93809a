//! Confidence sequences for quantiles, valid at every look, and the comparison of a
//! quantile of the two builds.
//!
//! Howard & Ramdas, "Sequential estimation of quantiles with applications to A/B-testing
//! and best-arm identification" (Bernoulli, 2022): whether an observation falls at or below
//! a value `x` is a Bernoulli trial with success probability `F(x)`, and a mixture of
//! likelihood ratios over a beta prior is a martingale under `F(x) = p`. Where that
//! martingale has passed `1/α`, `F(x) = p` is ruled out at every look (Ville's inequality):
//! the `p`-quantile lies above every `x` with too few observations below it, and at or
//! below every `x` with too many. The beta-binomial mixture is exact for Bernoulli trials,
//! so the bound holds at every sample size, not only in the limit.

use serde::{Deserialize, Serialize};

use super::msprt::Verdict;
use crate::evidence::Distribution;

/// The effective sample size of the beta prior the mixture uses: how many observations'
/// worth of belief it puts around `p`. A few hundred makes the bound tightest where a
/// quantile's comparison is decided (thousands of observations) without much cost earlier.
const PRIOR_STRENGTH: f64 = 500.0;

/// A confidence sequence for one quantile of a distribution.
///
/// ```
/// use shadowlib::Distribution;
/// use shadowlib::analysis::QuantileSequence;
///
/// let mut latency = Distribution::latency_us();
/// for i in 0..10_000u64 {
///     latency.record(1 + i % 1_000); // uniform on 1..=1000 µs
/// }
/// let p99 = QuantileSequence::of(&latency, 0.99, 0.01, 0).expect("observations");
/// assert!(p99.low <= 990.0 && 990.0 <= p99.high, "{p99:?}");
/// assert!(p99.high - p99.low < 40.0, "tight after 10,000 observations");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileSequence {
    /// Which quantile, in `(0, 1)`.
    pub quantile: f64,
    /// The lowest value the quantile can be; `offset` when nothing rules lower values out.
    pub low: f64,
    /// The highest value it can be; infinite while nothing bounds it from above.
    pub high: f64,
    /// The coverage guaranteed over all looks together, `1 − α`.
    pub confidence: f64,
    /// The observations behind it.
    pub samples: u64,
}

/// `ln B(a, b)`, the log of the beta function.
fn ln_beta(a: f64, b: f64) -> f64 {
    libm::lgamma(a) + libm::lgamma(b) - libm::lgamma(a + b)
}

impl QuantileSequence {
    /// The confidence sequence at level `alpha` for the `quantile` of `values + offset`
    /// (the offset is added to every value, as a latency floor is); `None` without
    /// observations or with a quantile or level outside `(0, 1)`.
    ///
    /// Each side gets `alpha / 2`, so the two-sided sequence covers with `1 − α`.
    pub fn of(values: &Distribution, quantile: f64, alpha: f64, offset: u64) -> Option<Self> {
        let n = values.count();
        let in_unit = |x: f64| x > 0.0 && x < 1.0;
        if n == 0 || !in_unit(quantile) || !in_unit(alpha) {
            return None;
        }
        let p = quantile;
        let (a, b) = (p * PRIOR_STRENGTH, (1.0 - p) * PRIOR_STRENGTH);
        let prior = ln_beta(a, b);
        let threshold = (2.0 / alpha).ln();
        let total = n as f64;
        // ln M(x): the mixture martingale against F(x) = p, from the S observations at or
        // below x.
        let log_martingale = |at_or_below: f64| {
            ln_beta(a + at_or_below, b + total - at_or_below)
                - prior
                - at_or_below * p.ln()
                - (total - at_or_below) * (1.0 - p).ln()
        };
        // ln M is convex in the count at or below x, smallest near p·n: the counts it
        // excludes are those below some count on the left of p·n and above another on the
        // right. Both are found by bisection (a few dozen ln B), and one pass over the
        // buckets maps them to values (with no ln B per bucket: looks stay cheap).
        let n_u = n;
        let excluded = |at_or_below: u64| log_martingale(at_or_below as f64) >= threshold;
        // Counts below p·n: 0..below_end; those excluded are 0..left_excluded.
        let below_end = ((p * total).ceil() as u64).min(n_u);
        let left_excluded = partition_point(0, below_end, excluded);
        // Counts above p·n: above_start..=n; those excluded are right_excluded..=n.
        let above_start = ((p * total).floor() as u64 + 1).min(n_u + 1);
        let right_excluded = partition_point(above_start, n_u + 1, |s| !excluded(s));
        let mut low = offset as f64;
        let mut high = f64::INFINITY;
        let mut at_or_below = 0u64;
        let histogram = values.histogram();
        for (value, count) in values.buckets() {
            // Everything below this bucket: if too few observations lie there for the
            // quantile to, the quantile is at least this bucket's lowest value.
            if at_or_below < left_excluded {
                let lowest = histogram.lowest_equivalent(value).saturating_add(offset);
                low = low.max(lowest as f64);
            }
            at_or_below += count;
            let x = (value.saturating_add(offset)) as f64;
            if at_or_below < left_excluded {
                // Too few observations at or below x for it to be the quantile.
                low = low.max(x);
            } else if at_or_below >= right_excluded && at_or_below >= above_start {
                high = x;
                break;
            }
        }
        Some(Self {
            quantile,
            low,
            high,
            confidence: 1.0 - alpha,
            samples: n,
        })
    }
}

/// A quantile of the candidate against the same quantile of stable, as a ratio: the
/// candidate's confidence sequence over stable's, each at half the level.
///
/// Worse than tolerated when even the candidate's lowest possible quantile is above
/// stable's highest times `1 + tolerance`; not worse when the candidate's highest is below
/// stable's lowest times `1 + tolerance`.
///
/// ```
/// use shadowlib::Distribution;
/// use shadowlib::analysis::{QuantileComparison, Verdict};
///
/// let (mut stable, mut candidate) = (Distribution::latency_us(), Distribution::latency_us());
/// for i in 0..20_000u64 {
///     let latency = 500 + (i * 7_919) % 1_000;
///     stable.record(latency);
///     // One request in fifty ten times slower: the p99 moves, the median does not.
///     candidate.record(if i % 50 == 0 { latency * 10 } else { latency });
/// }
/// let p99 = QuantileComparison::of(&stable, &candidate, 0.99, 0.20, 0.01, 0).expect("both measured");
/// assert_eq!(p99.verdict, Verdict::Worse, "{p99:?}");
/// let p50 = QuantileComparison::of(&stable, &candidate, 0.50, 0.05, 0.01, 0).expect("both measured");
/// assert_ne!(p50.verdict, Verdict::Worse);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileComparison {
    /// Stable's quantile.
    pub stable: QuantileSequence,
    /// The candidate's.
    pub candidate: QuantileSequence,
    /// The tolerated relative increase (0.2 = 20% higher).
    pub tolerance: f64,
    /// The level of the whole comparison.
    pub alpha: f64,
    /// The verdict.
    pub verdict: Verdict,
}

impl QuantileComparison {
    /// Compares the `quantile` of `candidate + offset` with `stable + offset`, at level
    /// `alpha`; `None` when either has no observations.
    pub fn of(
        stable: &Distribution,
        candidate: &Distribution,
        quantile: f64,
        tolerance: f64,
        alpha: f64,
        offset: u64,
    ) -> Option<Self> {
        let stable_sequence = QuantileSequence::of(stable, quantile, alpha / 2.0, offset)?;
        let candidate_sequence = QuantileSequence::of(candidate, quantile, alpha / 2.0, offset)?;
        let limit = 1.0 + tolerance;
        let verdict = if candidate_sequence.low > stable_sequence.high * limit {
            Verdict::Worse
        } else if candidate_sequence.high < stable_sequence.low * limit {
            Verdict::NotWorse
        } else {
            Verdict::NotYetKnown
        };
        Some(Self {
            stable: stable_sequence,
            candidate: candidate_sequence,
            tolerance,
            alpha,
            verdict,
        })
    }

    /// The ratio of the point estimates, candidate over stable, minus one, with the
    /// bounds the sequences allow: `(low, estimate, high)`.
    pub fn ratio(&self, stable_estimate: f64, candidate_estimate: f64) -> (f64, f64, f64) {
        let safe = |x: f64| x.max(f64::MIN_POSITIVE);
        (
            self.candidate.low / safe(self.stable.high) - 1.0,
            candidate_estimate / safe(stable_estimate) - 1.0,
            self.candidate.high / safe(self.stable.low) - 1.0,
        )
    }
}

/// The first `s` in `[low, high)` for which `holds(s)` is false, `holds` being true then
/// false over the range; `high` if it is true throughout.
fn partition_point(mut low: u64, mut high: u64, holds: impl Fn(u64) -> bool) -> u64 {
    while low < high {
        let middle = low + (high - low) / 2;
        if holds(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds by evaluating the martingale at every bucket: what the bisections in
    /// [`QuantileSequence::of`] must find.
    fn every_bucket(values: &Distribution, p: f64, alpha: f64, offset: u64) -> (f64, f64) {
        let total = values.count() as f64;
        let (a, b) = (p * PRIOR_STRENGTH, (1.0 - p) * PRIOR_STRENGTH);
        let log_martingale = |s: f64| {
            ln_beta(a + s, b + total - s)
                - ln_beta(a, b)
                - s * p.ln()
                - (total - s) * (1.0 - p).ln()
        };
        let threshold = (2.0 / alpha).ln();
        let (mut low, mut high, mut at_or_below) = (offset as f64, f64::INFINITY, 0u64);
        for (value, count) in values.buckets() {
            if (at_or_below as f64 / total) < p && log_martingale(at_or_below as f64) >= threshold {
                let lowest = values.histogram().lowest_equivalent(value) + offset;
                low = low.max(lowest as f64);
            }
            at_or_below += count;
            let share = at_or_below as f64 / total;
            if log_martingale(at_or_below as f64) < threshold {
                continue;
            }
            let x = (value + offset) as f64;
            if share < p {
                low = low.max(x);
            } else if share > p && x < high {
                high = x;
            }
        }
        (low, high)
    }

    #[test]
    fn bisection_finds_the_bounds_a_scan_of_every_bucket_finds() {
        for n in [1u64, 10, 99, 100, 1_000, 7_777, 50_000] {
            let mut values = Distribution::latency_us();
            for i in 0..n {
                // A skewed spread: many fast, a long tail.
                let x = 100 + (i * 7_919) % 1_000;
                values.record(if i % 37 == 0 { x * 20 } else { x });
            }
            for p in [0.5, 0.9, 0.95, 0.99, 0.999] {
                let sequence = QuantileSequence::of(&values, p, 0.001, 20).expect("observed");
                let (low, high) = every_bucket(&values, p, 0.001, 20);
                assert_eq!((sequence.low, sequence.high), (low, high), "n {n}, p {p}");
            }
        }
    }

    /// The exact (Clopper–Pearson style) binomial bound at one sample size: the
    /// observations at or below the true quantile of a uniform are Binomial(n, p).
    #[test]
    fn the_sequence_is_never_narrower_than_the_fixed_sample_binomial_interval() {
        let mut values = Distribution::latency_us();
        let n = 20_000u64;
        for i in 0..n {
            values.record(1 + (i * 7_919) % 10_000);
        }
        let sequence = QuantileSequence::of(&values, 0.99, 0.01, 0).expect("observations");
        // A fixed-n 99% interval for the p99 of n uniform draws spans about ±2.58 standard
        // errors of the proportion: ±0.0018 around 0.99, so values within about 18 of 9,900.
        let fixed_half_width = 2.576 * (0.99f64 * 0.01 / n as f64).sqrt() * 10_000.0;
        assert!(sequence.low <= 9_900.0 - fixed_half_width);
        assert!(sequence.high >= 9_900.0 + fixed_half_width);
        assert!(sequence.low <= 9_900.0 && sequence.high >= 9_900.0);
    }

    #[test]
    fn the_sequence_covers_the_true_quantile_at_every_look() {
        // 200 streams of uniform values, looked at every 200 observations up to 5,000:
        // the true p95 may fall outside at some look in at most about α of them.
        let alpha = 0.05;
        let mut state = 0x5EED_u64;
        let mut uniform = move || {
            state = crate::rng::mix(state);
            1 + state % 10_000
        };
        let mut missed = 0;
        for _ in 0..200 {
            let mut values = Distribution::latency_us();
            let mut ever_missed = false;
            for look in 1..=25 {
                for _ in 0..200 {
                    values.record(uniform());
                }
                let sequence = QuantileSequence::of(&values, 0.95, alpha, 0).expect("values");
                // Buckets are three significant digits: allow their width.
                if sequence.low > 9_500.0 * 1.001 || sequence.high < 9_500.0 * 0.999 {
                    ever_missed = true;
                }
                let _ = look;
            }
            missed += u32::from(ever_missed);
        }
        assert!(missed <= 14, "missed in {missed} of 200 streams");
    }

    #[test]
    fn without_enough_observations_nothing_bounds_the_tail() {
        let mut values = Distribution::latency_us();
        for v in [100u64, 200, 300] {
            values.record(v);
        }
        let p99 = QuantileSequence::of(&values, 0.99, 0.01, 0).expect("observations");
        assert_eq!(p99.high, f64::INFINITY);
        assert!(QuantileSequence::of(&values, 1.0, 0.01, 0).is_none());
        assert!(QuantileSequence::of(&Distribution::latency_us(), 0.5, 0.01, 0).is_none());
    }
}
