//! Turning evidence into a prediction of the candidate's risk.
//!
//! A [`Predictor`] reads the [`Evidence`] of a look and answers with a [`Prediction`]: the
//! probability that the candidate fails under peak load, the expected performance
//! degradation with an interval, the resources likely to become bottlenecks, and the
//! reasons. The controller compares the prediction with the thresholds of the
//! [`RolloutPolicy`](crate::RolloutPolicy) to step up, hold or roll back.

mod capacity;
mod ensemble;
mod learned;
mod sequential;
mod threshold;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use capacity::{CapacityConfig, CapacityConfigError, CapacityPredictor};
pub use ensemble::{Combine, Ensemble};
pub use learned::{
    FEATURE_NAMES, HistoryRecord, LearnedError, LearnedModel, LearnedPredictor, features,
    read_history,
};
pub use sequential::SequentialPredictor;
pub use threshold::{ThresholdPredictor, ThresholdPredictorConfig};

use crate::{Evidence, SampleCount};

/// Turns the evidence of a look into a [`Prediction`].
///
/// Implementations must be cheap enough to run once per interval and must not panic on any
/// evidence: empty arms, zero counts and extreme values are all normal.
///
/// ```
/// use shadowlib::{Evidence, Prediction, Predictor};
///
/// /// Roll back if the candidate ever failed a request that stable served.
/// struct NoNewErrors;
///
/// impl Predictor for NoNewErrors {
///     fn name(&self) -> &str {
///         "no-new-errors"
///     }
///
///     fn predict(&self, evidence: &Evidence) -> Prediction {
///         let failed = evidence.candidate.outcomes.failures() > evidence.stable.outcomes.failures();
///         Prediction::new(self.name(), if failed { 1.0 } else { 0.0 }, evidence)
///             .with_reason(format!("candidate failures: {}", evidence.candidate.outcomes.failures()))
///     }
/// }
/// ```
pub trait Predictor: Send + Sync {
    /// A short name, shown in reasons and reports.
    fn name(&self) -> &str;

    /// The prediction for this evidence.
    fn predict(&self, evidence: &Evidence) -> Prediction;
}

impl<P: Predictor + ?Sized> Predictor for std::sync::Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        (**self).predict(evidence)
    }
}

impl<P: Predictor + ?Sized> Predictor for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        (**self).predict(evidence)
    }
}

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

/// The degradation of one KPI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiDegradation {
    /// Which KPI.
    pub kpi: Kpi,
    /// By how much, relative to stable.
    pub degradation: Degradation,
}

/// A resource the candidate is likely to exhaust first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Processor time.
    Cpu,
    /// Memory (allocations, resident size).
    Memory,
    /// Disk or network I/O.
    Io,
    /// Concurrency: threads, connections, queue slots.
    Concurrency,
}

/// A likely bottleneck: the candidate's per-request cost of a resource relative to stable's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    /// The resource.
    pub resource: Resource,
    /// Candidate cost over stable cost (1.3 = 30% more), with its interval.
    pub ratio: Degradation,
}

/// Whether a prediction is firm enough to act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "why")]
pub enum Certainty {
    /// The evidence supports acting on the prediction.
    Conclusive,
    /// Not yet known: the controller holds, whatever the numbers say.
    Inconclusive(String),
}

/// A predictor's answer: the risk of the candidate and why.
///
/// ```
/// use shadowlib::{Degradation, Evidence, Prediction, Version};
///
/// let evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
/// let p = Prediction::new("example", 1.7, &evidence)
///     .with_degradation(Degradation::new(0.08, 0.05, 0.11))
///     .with_reason("p99 latency up 8%");
/// assert_eq!(p.failure_probability, 1.0, "clamped into [0, 1]");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The predictor that made it.
    pub predictor: String,
    /// Probability that the candidate fails under peak load, in `[0, 1]`.
    pub failure_probability: f64,
    /// The headline performance degradation (latency, relative), compared with the
    /// policy's `max_degradation`.
    pub performance_degradation: Degradation,
    /// Degradation per KPI, where the predictor estimates it.
    pub degradations: Vec<KpiDegradation>,
    /// Resources likely to become bottlenecks, worst first.
    pub bottlenecks: Vec<Bottleneck>,
    /// Readable sentences that cite the numbers.
    pub reasons: Vec<String>,
    /// Whether the controller may act on it.
    pub certainty: Certainty,
    /// The samples behind it.
    pub samples: SampleCount,
}

impl Prediction {
    /// A conclusive prediction with the given failure probability (clamped into `[0, 1]`;
    /// NaN becomes an inconclusive prediction, since it says nothing).
    pub fn new(
        predictor: impl Into<String>,
        failure_probability: f64,
        evidence: &Evidence,
    ) -> Self {
        let (failure_probability, certainty) = if failure_probability.is_nan() {
            (
                0.0,
                Certainty::Inconclusive("failure probability was NaN".into()),
            )
        } else {
            (failure_probability.clamp(0.0, 1.0), Certainty::Conclusive)
        };
        Self {
            predictor: predictor.into(),
            failure_probability,
            performance_degradation: Degradation::default(),
            degradations: Vec::new(),
            bottlenecks: Vec::new(),
            reasons: Vec::new(),
            certainty,
            samples: SampleCount {
                stable: evidence.stable.requests(),
                candidate: evidence.candidate.requests(),
            },
        }
    }

    /// A prediction that says "not yet known", with why.
    pub fn inconclusive(
        predictor: impl Into<String>,
        why: impl Into<String>,
        evidence: &Evidence,
    ) -> Self {
        let why = why.into();
        let mut p = Self::new(predictor, 0.0, evidence);
        p.reasons.push(why.clone());
        p.certainty = Certainty::Inconclusive(why);
        p
    }

    /// Sets the headline degradation.
    pub fn with_degradation(mut self, degradation: Degradation) -> Self {
        self.performance_degradation = degradation;
        self
    }

    /// Adds the degradation of one KPI.
    pub fn with_kpi(mut self, kpi: Kpi, degradation: Degradation) -> Self {
        self.degradations.push(KpiDegradation { kpi, degradation });
        self
    }

    /// Adds a likely bottleneck.
    pub fn with_bottleneck(mut self, resource: Resource, ratio: Degradation) -> Self {
        self.bottlenecks.push(Bottleneck { resource, ratio });
        self
    }

    /// Adds a reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reasons.push(reason.into());
        self
    }

    /// Whether the controller may act on it.
    pub fn is_conclusive(&self) -> bool {
        self.certainty == Certainty::Conclusive
    }
}
