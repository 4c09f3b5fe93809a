//! What is measured, and by how much it changed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A relative change of a KPI of the candidate against stable, with an interval.
///
/// `+0.10` means 10% worse (slower, more errors, more CPU); `-0.02` means 2% better.
///
/// ```
/// use shadowlib::Degradation;
///
/// let d = Degradation::new(0.10, 0.04, 0.16);
/// assert!(d.contains(0.12));
/// assert_eq!(Degradation::point(0.0).low, 0.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Degradation {
    /// The best estimate.
    pub estimate: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

impl Degradation {
    /// An estimate with its interval.
    pub fn new(estimate: f64, low: f64, high: f64) -> Self {
        Self {
            estimate,
            low,
            high,
        }
    }

    /// An estimate with no uncertainty stated.
    pub fn point(estimate: f64) -> Self {
        Self::new(estimate, estimate, estimate)
    }

    /// Whether `value` lies in the interval.
    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }
}

impl Default for Degradation {
    fn default() -> Self {
        Self::point(0.0)
    }
}

impl fmt::Display for Degradation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:+.1}% [{:+.1}%, {:+.1}%]",
            self.estimate * 100.0,
            self.low * 100.0,
            self.high * 100.0
        )
    }
}

/// A key performance indicator a degradation can be about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kpi {
    /// Median latency.
    LatencyP50,
    /// 99th percentile latency.
    LatencyP99,
    /// Share of requests that failed.
    ErrorRate,
    /// CPU time per request.
    CpuPerRequest,
    /// Bytes allocated per request.
    AllocPerRequest,
    /// Share of compared responses that differed.
    MismatchRate,
    /// A user-defined KPI.
    Custom(String),
}

impl fmt::Display for Kpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kpi::LatencyP50 => f.write_str("latency p50"),
            Kpi::LatencyP99 => f.write_str("latency p99"),
            Kpi::ErrorRate => f.write_str("error rate"),
            Kpi::CpuPerRequest => f.write_str("CPU per request"),
            Kpi::AllocPerRequest => f.write_str("allocated bytes per request"),
            Kpi::MismatchRate => f.write_str("response mismatch rate"),
            Kpi::Custom(name) => f.write_str(name),
        }
    }
}
