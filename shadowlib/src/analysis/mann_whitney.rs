//! The fixed-sample Mann–Whitney U test, as canary judges such as Kayenta run it.
//!
//! It is here as a baseline: a fixed-sample test is valid when it is run *once*, on a
//! sample size chosen in advance. Re-run at every look on growing evidence it will, given
//! enough looks, reject on two identical builds — which is what the simulator shows next to
//! the sequential tests.

use serde::{Deserialize, Serialize};

use crate::evidence::Distribution;
use crate::model::SampleCount;

/// The result of a two-sided Mann–Whitney U test of the candidate against stable.
///
/// ```
/// use shadowlib::Distribution;
/// use shadowlib::analysis::MannWhitney;
///
/// let (mut stable, mut candidate) = (Distribution::latency_us(), Distribution::latency_us());
/// for v in 1..=3 { stable.record(v); }
/// for v in 4..=6 { candidate.record(v); }
/// let mw = MannWhitney::test(&stable, &candidate).expect("both have values");
/// assert_eq!(mw.u, 9.0); // every candidate value beats every stable value
/// assert!(mw.z > 0.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// The U statistic of the candidate: pairs (stable, candidate) where the candidate's
    /// value is larger, ties counted one half.
    pub u: f64,
    /// U standardized by its mean and tie-corrected standard deviation under "same
    /// distribution"; positive when the candidate tends to be slower.
    pub z: f64,
    /// Two-sided p-value from the normal approximation.
    pub p_value: f64,
    /// The values behind it.
    pub samples: SampleCount,
}

impl MannWhitney {
    /// Runs the test on two histograms (values equal to the histogram's precision are
    /// ties). `None` when either is empty or every value is the same.
    pub fn test(stable: &Distribution, candidate: &Distribution) -> Option<Self> {
        let (n_s, n_c) = (stable.count() as f64, candidate.count() as f64);
        if n_s == 0.0 || n_c == 0.0 {
            return None;
        }
        let mut stable_buckets = stable.buckets().peekable();
        let mut candidate_buckets = candidate.buckets().peekable();
        let (mut u, mut stable_below, mut ties) = (0.0, 0.0, 0.0);
        loop {
            let value = match (stable_buckets.peek(), candidate_buckets.peek()) {
                (None, None) => break,
                (Some(&(s, _)), None) => s,
                (None, Some(&(c, _))) => c,
                (Some(&(s, _)), Some(&(c, _))) => s.min(c),
            };
            let s = stable_buckets
                .next_if(|&(v, _)| v == value)
                .map_or(0.0, |(_, n)| n as f64);
            let c = candidate_buckets
                .next_if(|&(v, _)| v == value)
                .map_or(0.0, |(_, n)| n as f64);
            u += c * (stable_below + 0.5 * s);
            stable_below += s;
            let t = s + c;
            ties += t * t * t - t;
        }
        let n = n_s + n_c;
        let variance = n_s * n_c / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
        if variance.is_nan() || variance <= 0.0 {
            return None;
        }
        let z = (u - n_s * n_c / 2.0) / variance.sqrt();
        Some(Self {
            u,
            z,
            p_value: 2.0 * super::normal_survival(z.abs()),
            samples: SampleCount {
                stable: stable.count(),
                candidate: candidate.count(),
            },
        })
    }

    /// Whether the test, run once at `confidence` (e.g. 0.98), finds the candidate slower:
    /// `z > 0` and the two-sided p-value below `1 − confidence`.
    pub fn candidate_slower(&self, confidence: f64) -> bool {
        self.z > 0.0 && self.p_value < 1.0 - confidence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distribution(values: &[u64]) -> Distribution {
        let mut d = Distribution::latency_us();
        for v in values {
            d.record(*v);
        }
        d
    }

    #[test]
    fn separated_samples_match_the_textbook_values() {
        let mw = MannWhitney::test(&distribution(&[1, 2, 3]), &distribution(&[4, 5, 6]))
            .expect("values");
        // U = 9, mean 4.5, variance 3·3·7/12 = 5.25: z = 4.5 / sqrt(5.25).
        assert_eq!(mw.u, 9.0);
        assert!((mw.z - 4.5 / 5.25f64.sqrt()).abs() < 1e-12);
        // Two-sided normal p-value for z = 1.963961: 0.049535.
        assert!((mw.p_value - 0.049535).abs() < 1e-5, "{}", mw.p_value);
        assert!(mw.candidate_slower(0.95));
        assert!(!mw.candidate_slower(0.98));
    }

    #[test]
    fn ties_count_half_and_shrink_the_variance() {
        // stable {1, 2, 2}, candidate {2, 3}: candidate 2 beats 1 once and ties two 2s: 1 + 1 = 2; candidate 3 beats all three: 3.
        let mw =
            MannWhitney::test(&distribution(&[1, 2, 2]), &distribution(&[2, 3])).expect("values");
        assert_eq!(mw.u, 5.0);
        // Tie group of three 2s: t³ − t = 24; variance = 3·2/12·(6 − 24/20) = 2.4.
        assert!((mw.z - (5.0 - 3.0) / 2.4f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn identical_constant_samples_are_untestable() {
        assert!(MannWhitney::test(&distribution(&[5, 5]), &distribution(&[5, 5, 5])).is_none());
        assert!(MannWhitney::test(&distribution(&[]), &distribution(&[5])).is_none());
    }
}
