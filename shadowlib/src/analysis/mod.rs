//! Judging the evidence: sequential tests, anomaly detection and response comparison.
//!
//! The controller looks at the evidence every interval, so a test that is valid only when
//! run once would, repeated look after look, sooner or later fire on two identical builds.
//! The tests here stay valid under continuous monitoring:
//!
//! * [`MixtureSprt`] — the mixture sequential probability ratio test of Johari et al.
//!   (2017) on a [`DifferenceEstimate`] (difference of means, of proportions, or log ratio
//!   of means), with its statistic, an always-valid p-value and a [`ConfidenceSequence`],
//!   and the one-sided "worse than tolerated" form that answers with a [`Verdict`].
//! * [`SequentialAnalysis`] — those tests applied to the [`Evidence`](crate::Evidence) of a
//!   look: log latency, the share of requests above stable's p95 (for tail-only
//!   regressions), error rate, CPU and allocations per request, against configurable
//!   [`Tolerances`], with minimum evidence per build and the zero-heavy error rule.
//! * [`CandidateMonitor`] — CUSUM control charts on the candidate's own stream for bursts
//!   and drift, and [`novel_failures`] for failure classes stable never produced.
//! * [`MannWhitney`] — the fixed-sample test canary judges commonly run, as a baseline.
//!
//! [`SequentialPredictor`](crate::predict::SequentialPredictor) turns all of this into a
//! [`Prediction`](crate::Prediction) for the controller.

mod anomaly;
mod error;
mod mann_whitney;
mod msprt;
mod normal;
mod regression;

pub use anomaly::{
    Alarm, CandidateMonitor, Chart, ChartConfig, NovelFailure, StreamTotals, novel_failures,
};
pub use error::AnalysisError;
pub use mann_whitney::MannWhitney;
pub use msprt::{
    ConfidenceSequence, DifferenceEstimate, MIN_VARIANCE_PER_SAMPLE, MixtureSprt, Proportion,
    SequentialTest, Verdict,
};
pub(crate) use normal::survival as normal_survival;
pub use regression::{
    Assessment, KpiTest, Metric, SequentialAnalysis, SequentialConfig, Tolerances,
};
