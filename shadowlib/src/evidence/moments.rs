//! Count, mean and variance, mergeable exactly.

use serde::{Deserialize, Serialize};

/// Count, mean and variance of a stream of real numbers, mergeable exactly.
///
/// Used for custom KPIs (cache hit rate, queries per request) and for log latency.
///
/// ```
/// use shadowlib::Moments;
///
/// let mut a = Moments::default();
/// let mut b = Moments::default();
/// for x in [1.0, 2.0] { a.add(x); }
/// for x in [3.0, 4.0] { b.add(x); }
/// a.merge(&b);
/// assert_eq!(a.count(), 4);
/// assert!((a.mean() - 2.5).abs() < 1e-12);
/// assert!((a.variance() - 5.0 / 3.0).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    count: u64,
    mean: f64,
    /// Sum of squared deviations from the mean (Welford's M2).
    m2: f64,
}

impl Moments {
    /// Adds one observation.
    pub fn add(&mut self, x: f64) {
        self.add_n(x, 1);
    }

    /// Adds `n` observations of the same value.
    pub fn add_n(&mut self, x: f64, n: u64) {
        if n == 0 || !x.is_finite() {
            return;
        }
        self.merge(&Moments {
            count: n,
            mean: x,
            m2: 0.0,
        });
    }

    /// Combines another set of moments into this one (Chan et al.'s parallel update).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        let n_a = self.count as f64;
        let n_b = other.count as f64;
        let n = n_a + n_b;
        let delta = other.mean - self.mean;
        self.mean += delta * n_b / n;
        self.m2 += other.m2 + delta * delta * n_a * n_b / n;
        self.count += other.count;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean; 0 when empty.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Unbiased sample variance; 0 with fewer than two observations.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            self.m2 / (self.count - 1) as f64
        }
    }
}
