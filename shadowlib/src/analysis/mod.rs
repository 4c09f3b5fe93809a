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
//!   look: on the shadow's pairs (per-read log ratios of latency, CPU and allocations,
//!   pooled and per route; reads only one build failed; the tail), and on the canary's live
//!   requests compared within each step and route, against configurable [`Tolerances`],
//!   with minimum evidence and the zero-heavy error rule, under one rollback budget.
//! * [`DifferenceMonitor`] — CUSUM control charts on the *difference* between the builds
//!   for bursts and drift, and [`novel_failures`] for failure classes stable never
//!   produced.
//! * [`MannWhitney`] — the fixed-sample test canary judges commonly run, as a baseline.
//!
//! [`SequentialPredictor`](crate::predict::SequentialPredictor) turns all of this into a
//! [`Prediction`](crate::Prediction) for the controller.

mod anomaly;
mod error;
mod mann_whitney;
mod mismatch;
mod msprt;
mod normal;
mod quantile;
mod regression;
mod split;

pub use anomaly::{
    Alarm, Chart, ChartConfig, DifferenceMonitor, DifferenceTotals, NovelFailure, novel_failures,
};
pub use error::AnalysisError;
pub use mann_whitney::MannWhitney;
pub use mismatch::MismatchTest;
pub use msprt::{
    ConfidenceSequence, DifferenceEstimate, MIN_VARIANCE_PER_SAMPLE, MixtureSprt, Proportion,
    SequentialTest, Verdict,
};
pub(crate) use normal::survival as normal_survival;
pub use quantile::{QuantileComparison, QuantileSequence};
pub use regression::{
    Assessment, KpiTest, Metric, Quantile, Scope, SequentialAnalysis, SequentialConfig, Statistic,
    Tolerances,
};
pub use split::{SPLIT_ALPHA, SPLIT_TOLERANCE, SplitCheck, proportion_sequence};
