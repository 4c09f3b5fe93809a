//! Distributions of non-negative measurements on HDR histograms.

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::Moments;

/// A histogram could not be built or merged.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DistributionError {
    /// The range or precision does not describe a valid HDR histogram.
    #[error(
        "invalid histogram bounds low={low} high={high} significant_figures={significant_figures}: {reason}"
    )]
    InvalidBounds {
        /// Lowest discernible value.
        low: u64,
        /// Highest trackable value.
        high: u64,
        /// Significant decimal digits.
        significant_figures: u8,
        /// What the histogram library said.
        reason: String,
    },
    /// Merging would lose values because the other histogram holds values out of range.
    #[error("cannot merge histograms: {0}")]
    Merge(String),
}

/// A distribution of non-negative integer measurements on an HDR histogram.
///
/// Latency is kept in microseconds, CPU time in nanoseconds, allocations in bytes. Values
/// above the configured range are clamped to its top rather than lost, so a pathological
/// request still counts (as "at least the maximum").
///
/// ```
/// use shadowlib::Distribution;
///
/// let mut latency = Distribution::latency_us();
/// for us in [900, 1_000, 1_100] {
///     latency.record(us);
/// }
/// assert_eq!(latency.count(), 3);
/// assert!((latency.mean() - 1_000.0).abs() < 2.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    histogram: Histogram<u64>,
}

impl Distribution {
    /// A distribution over `[low, high]` with `significant_figures` decimal digits (1–5).
    pub fn new(low: u64, high: u64, significant_figures: u8) -> Result<Self, DistributionError> {
        Histogram::new_with_bounds(low, high, significant_figures)
            .map(|histogram| Self { histogram })
            .map_err(|e| DistributionError::InvalidBounds {
                low,
                high,
                significant_figures,
                reason: format!("{e:?}"),
            })
    }

    fn with_valid_bounds(low: u64, high: u64) -> Self {
        // The bounds are constants checked by the tests below; a failure here is a bug in
        // this file, never something a user can cause.
        Self::new(low, high, 3).expect("constant histogram bounds are valid")
    }

    /// Latency in microseconds, 1 µs to 60 s, 3 significant digits.
    pub fn latency_us() -> Self {
        Self::with_valid_bounds(1, 60_000_000)
    }

    /// CPU time in nanoseconds, 1 ns to 60 s, 3 significant digits.
    pub fn cpu_ns() -> Self {
        Self::with_valid_bounds(1, 60_000_000_000)
    }

    /// Sizes in bytes, 1 B to 1 TiB, 3 significant digits.
    pub fn bytes() -> Self {
        Self::with_valid_bounds(1, 1 << 40)
    }

    /// Counts of things per request (allocations, queries), 1 to 2^40, 3 significant digits.
    pub fn counts() -> Self {
        Self::with_valid_bounds(1, 1 << 40)
    }

    /// An empty distribution with the same range and precision as this one.
    pub fn empty_like(&self) -> Self {
        let mut histogram = self.histogram.clone();
        histogram.reset();
        Self { histogram }
    }

    /// Records one measurement; values above the range count as the range's top.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `n` measurements of the same value.
    pub fn record_n(&mut self, value: u64, n: u64) {
        let value = value.min(self.histogram.high());
        // Cannot fail: the value was clamped into range and the histogram does not resize.
        let _ = self.histogram.record_n(value, n);
    }

    /// Number of measurements.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// Arithmetic mean; 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.histogram.mean()
        }
    }

    /// Standard deviation; 0 when empty.
    pub fn stdev(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.histogram.stdev()
        }
    }

    /// The value at quantile `q` in `[0, 1]` (clamped); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.histogram.value_at_quantile(q.clamp(0.0, 1.0))
        }
    }

    /// Largest recorded value (to the histogram's precision); 0 when empty.
    pub fn max(&self) -> u64 {
        self.histogram.max()
    }

    /// Number of measurements strictly above `value` (to the histogram's precision).
    pub fn count_above(&self, value: u64) -> u64 {
        self.count() - self.histogram.count_between(0, value)
    }

    /// Mean and variance of the natural log of the values, from the histogram buckets.
    ///
    /// Sequential tests on latency work on the log scale, where a slowdown is a shift and
    /// the noise is close to normal. Values of 0 are taken as 1 so the log is defined.
    pub fn log_moments(&self) -> Moments {
        let mut moments = Moments::default();
        for bucket in self.histogram.iter_recorded() {
            let value = self
                .histogram
                .median_equivalent(bucket.value_iterated_to())
                .max(1);
            moments.add_n((value as f64).ln(), bucket.count_at_value());
        }
        moments
    }

    /// Mean and variance of `ln(value + offset)`, from the histogram buckets: the log scale
    /// with a floor under it, on which a fixed few hundred nanoseconds on a microsecond
    /// request weigh as little as they matter (see [`LATENCY_FLOOR`](crate::LATENCY_FLOOR)).
    pub fn log_moments_offset(&self, offset: u64) -> Moments {
        let mut moments = Moments::default();
        for bucket in self.histogram.iter_recorded() {
            let value = self
                .histogram
                .median_equivalent(bucket.value_iterated_to())
                .saturating_add(offset)
                .max(1);
            moments.add_n((value as f64).ln(), bucket.count_at_value());
        }
        moments
    }

    /// Iterates the non-empty buckets as `(value, count)`.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.histogram
            .iter_recorded()
            .map(|b| (b.value_iterated_to(), b.count_at_value()))
    }

    /// Adds another distribution to this one.
    pub fn merge(&mut self, other: &Distribution) -> Result<(), DistributionError> {
        for (value, count) in other.buckets() {
            self.record_n(value, count);
        }
        Ok(())
    }

    /// The underlying HDR histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }
}

#[derive(Serialize, Deserialize)]
struct DistributionRepr {
    low: u64,
    high: u64,
    significant_figures: u8,
    /// `(value, count)` for every non-empty bucket.
    buckets: Vec<(u64, u64)>,
}

impl Serialize for Distribution {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DistributionRepr {
            low: self.histogram.low(),
            high: self.histogram.high(),
            significant_figures: self.histogram.sigfig(),
            buckets: self.buckets().collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Distribution {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = DistributionRepr::deserialize(deserializer)?;
        let mut distribution = Distribution::new(repr.low, repr.high, repr.significant_figures)
            .map_err(serde::de::Error::custom)?;
        for (value, count) in repr.buckets {
            distribution.record_n(value, count);
        }
        Ok(distribution)
    }
}
