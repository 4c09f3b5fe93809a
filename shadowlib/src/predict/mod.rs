//! Turning evidence into a prediction of the candidate's risk.
//!
//! A [`Predictor`] reads the [`Evidence`] of a look and answers with a [`Prediction`]: the
//! always-valid tests its verdict rests on, the probability that the candidate fails, the
//! expected performance degradation with an interval, the resources likely to become
//! bottlenecks, and the reasons.
//!
//! # The decision rule
//!
//! The controller acts on verdicts, never on point estimates: it rolls back when a test
//! says *worse than tolerated* (or a predictor's [ruling](Prediction::ruling) does, or the
//! policy's mismatch test), steps up when every required test says *not worse* (and the
//! mismatch test does), and holds otherwise. Each test is always valid — its chance of a
//! false "worse" at *any* look is at most its level — and a predictor's tests share the
//! budget it declares ([`Predictor::alpha`]): the chance that identical builds are rolled
//! back by a predictor is at most that budget, however often the controller looks. An
//! [`Ensemble`] spends the sum of its members'. Failure probabilities, degradations and
//! bottlenecks explain the verdict; a predictor that only explains (the learned model,
//! with a budget of 0) never moves a rollout by itself.

mod capacity;
mod ensemble;
#[cfg(feature = "learned")]
mod learned;
mod sequential;
mod threshold;

use serde::{Deserialize, Serialize};

pub use capacity::{CapacityConfig, CapacityConfigError, CapacityPredictor};
pub use ensemble::{Combine, Ensemble};
#[cfg(feature = "learned")]
pub use learned::{
    FEATURE_NAMES, HistoryRecord, LearnedError, LearnedModel, LearnedPredictor, features,
    read_history,
};
pub use sequential::SequentialPredictor;
pub use threshold::{ThresholdPredictor, ThresholdPredictorConfig};

use crate::analysis::{KpiTest, Verdict};
use crate::evidence::Evidence;
use crate::model::{Degradation, Kpi, SampleCount};

/// Turns the evidence of a look into a [`Prediction`].
///
/// Implementations must be cheap enough to run once per interval and must not panic on any
/// evidence: empty arms, zero counts and extreme values are all normal.
///
/// ```
/// use shadowlib::{Evidence, Prediction, Predictor};
///
/// /// Roll back if the candidate ever failed a mirrored read that stable served.
/// struct NoNewErrors;
///
/// impl Predictor for NoNewErrors {
///     fn name(&self) -> &str {
///         "no-new-errors"
///     }
///
///     fn predict(&self, evidence: &Evidence) -> Prediction {
///         let only_candidate = evidence.shadow.pairs.total.outcomes.candidate_only;
///         Prediction::new(self.name(), if only_candidate > 0 { 1.0 } else { 0.0 }, evidence)
///             .with_reason(format!("reads only the candidate failed: {only_candidate}"))
///     }
/// }
/// ```
pub trait Predictor: Send + Sync {
    /// A short name, shown in reasons and reports.
    fn name(&self) -> &str;

    /// The prediction for this evidence.
    fn predict(&self, evidence: &Evidence) -> Prediction;

    /// The chance of a false rollback its tests spend in total, over the whole rollout
    /// (the sum of their levels). 0 for a predictor that only explains, or whose verdicts
    /// are rules rather than statistics.
    fn alpha(&self) -> f64 {
        0.0
    }
}

impl<P: Predictor + ?Sized> Predictor for std::sync::Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        (**self).predict(evidence)
    }

    fn alpha(&self) -> f64 {
        (**self).alpha()
    }
}

impl<P: Predictor + ?Sized> Predictor for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        (**self).predict(evidence)
    }

    fn alpha(&self) -> f64 {
        (**self).alpha()
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
#[non_exhaustive]
pub enum Certainty {
    /// The evidence supports acting on the prediction.
    Conclusive,
    /// Not yet known: the controller holds, whatever the numbers say, until the
    /// policy's decision deadline, then pauses.
    Inconclusive(String),
    /// Too few samples to say anything yet: the controller holds while samples come, until
    /// the policy's no-data deadline.
    NeedsSamples(String),
}

/// A predictor's answer: the verdict's evidence, the risk of the candidate, and why.
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
    /// Probability that the candidate fails (is worse than tolerated, or fails under the
    /// declared peak load), in `[0, 1]`. Reported: the controller acts on the tests.
    pub failure_probability: f64,
    /// The headline performance degradation (latency, relative), with its interval.
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
    /// The always-valid tests the verdict rests on, each at its level.
    #[serde(default)]
    pub tests: Vec<KpiTest>,
    /// The verdict the predictor reached itself — from its tests and the rules it applies
    /// beside them (a failure class stable never produced, a business rule such as "no
    /// checkout may differ") — taken as it is; `None` lets the controller derive it from
    /// [`tests`](Self::tests).
    #[serde(default)]
    pub ruling: Option<Verdict>,
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
            samples: evidence.samples(),
            tests: Vec::new(),
            ruling: None,
        }
    }

    /// A rule's verdict: worse (the controller rolls back) or not worse (it may step up),
    /// taken as it is, with failure probability 1 or 0.
    ///
    /// ```
    /// use shadowlib::analysis::Verdict;
    /// use shadowlib::{Evidence, Prediction, Version};
    ///
    /// let evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
    /// let p = Prediction::ruling("no-differences", Verdict::Worse, &evidence)
    ///     .with_reason("one checkout quoted differently");
    /// assert_eq!(p.verdict(), Verdict::Worse);
    /// ```
    pub fn ruling(predictor: impl Into<String>, verdict: Verdict, evidence: &Evidence) -> Self {
        let probability = match verdict {
            Verdict::Worse => 1.0,
            _ => 0.0,
        };
        let mut p = Self::new(predictor, probability, evidence);
        p.ruling = Some(verdict);
        p
    }

    /// The verdict the controller acts on: the ruling when there is one; otherwise worse
    /// when any test is, not worse when every required test is (and there is one), not yet
    /// known else.
    pub fn verdict(&self) -> Verdict {
        if let Some(ruling) = self.ruling {
            return ruling;
        }
        if self.tests.iter().any(|t| t.verdict == Verdict::Worse) {
            Verdict::Worse
        } else if self.tests.iter().any(|t| t.required)
            && self
                .tests
                .iter()
                .filter(|t| t.required)
                .all(|t| t.verdict == Verdict::NotWorse)
        {
            Verdict::NotWorse
        } else {
            Verdict::NotYetKnown
        }
    }

    /// Adds a test the verdict rests on.
    pub fn with_test(mut self, test: KpiTest) -> Self {
        self.tests.push(test);
        self
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

    /// A prediction that says "too few samples yet", with why.
    pub fn needs_samples(
        predictor: impl Into<String>,
        why: impl Into<String>,
        evidence: &Evidence,
    ) -> Self {
        let why = why.into();
        let mut p = Self::new(predictor, 0.0, evidence);
        p.reasons.push(why.clone());
        p.certainty = Certainty::NeedsSamples(why);
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
