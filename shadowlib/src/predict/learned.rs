//! A logistic regression trained on the history of past rollouts (linfa).
//!
//! Each past rollout leaves one line of JSON in a history file: an evidence snapshot and
//! whether that rollout later caused an incident. [`LearnedModel::train`] fits a logistic
//! regression on features derived from the evidence (degradation ratios, error deltas,
//! CPU and allocation ratios, mismatch rate, new error classes); the model saves and loads
//! as JSON, and [`LearnedPredictor`] turns its output into a failure probability.
//!
//! A new team has no history. It can bootstrap one from the simulator
//! (`cargo run -p examples --example train_predictor`), whose records are marked
//! `synthetic` so that a model trained on them says so in every reason it gives.

use std::io::BufRead;

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Prediction, Predictor};
use crate::evidence::{Distribution, Evidence};
use crate::model::{Degradation, Kpi};

/// One past rollout: what the evidence looked like and what happened afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// The evidence at the decision.
    pub evidence: Evidence,
    /// Whether the rollout later caused an incident.
    pub incident: bool,
    /// Whether this record was made by the simulator rather than a real rollout.
    #[serde(default)]
    pub synthetic: bool,
}

/// A history file or a model could not be read or trained on.
#[derive(Debug, Error)]
pub enum LearnedError {
    /// A line of the history is not a valid record.
    #[error("history line {line}: {message}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        message: String,
    },
    /// The history could not be read.
    #[error("reading the history failed: {0}")]
    Io(#[from] std::io::Error),
    /// Training needs both outcomes.
    #[error(
        "the history needs rollouts with and without incidents to learn from (had {incidents} incidents in {records} records)"
    )]
    OneClass {
        /// Records with an incident.
        incidents: usize,
        /// All records.
        records: usize,
    },
    /// The solver failed.
    #[error("logistic regression failed: {0}")]
    Fit(String),
    /// A saved model is not valid.
    #[error("invalid model: {0}")]
    BadModel(String),
}

/// Reads a JSON-lines history; blank lines are skipped, a bad line is an error naming it.
///
/// ```
/// use shadowlib::predict::{read_history, LearnedError};
///
/// let err = read_history("\n{\"not\": \"a record\"}\n".as_bytes()).unwrap_err();
/// assert!(matches!(err, LearnedError::BadLine { line: 2, .. }));
/// ```
pub fn read_history(reader: impl BufRead) -> Result<Vec<HistoryRecord>, LearnedError> {
    let mut records = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| LearnedError::BadLine {
            line: index + 1,
            message: e.to_string(),
        })?;
        records.push(record);
    }
    Ok(records)
}

/// The features the model sees, in order.
pub const FEATURE_NAMES: [&str; 8] = [
    "log p50 latency ratio",
    "log p99 latency ratio",
    "log mean latency ratio",
    "failure rate difference",
    "log CPU per request ratio",
    "log allocated bytes per request ratio",
    "response mismatch rate",
    "new failure class",
];

fn log_ratio(candidate: f64, stable: f64) -> f64 {
    if candidate > 0.0 && stable > 0.0 {
        (candidate / stable).ln()
    } else {
        0.0
    }
}

fn mean_ratio(candidate: Option<&Distribution>, stable: Option<&Distribution>) -> f64 {
    match (candidate, stable) {
        (Some(c), Some(s)) if !c.is_empty() && !s.is_empty() => log_ratio(c.mean(), s.mean()),
        _ => 0.0,
    }
}

/// The feature vector of a piece of evidence (see [`FEATURE_NAMES`]); unmeasured KPIs
/// contribute 0, the value of "no difference".
///
/// The builds are compared like for like: the twin and the candidate in the shadow, the
/// live builds in the canary ([`Evidence::arms`]); the mismatch rate is the shadow's, net
/// of noise.
pub fn features(evidence: &Evidence) -> [f64; 8] {
    let (s, c) = evidence.arms();
    let quantile_ratio = |q: f64| {
        log_ratio(
            c.latency_us.quantile(q) as f64,
            s.latency_us.quantile(q) as f64,
        )
    };
    let new_failure_class = [
        c.outcomes.timeout > 0 && s.outcomes.timeout == 0,
        c.outcomes.panic > 0 && s.outcomes.panic == 0,
    ]
    .iter()
    .any(|new| *new);
    [
        quantile_ratio(0.5),
        quantile_ratio(0.99),
        log_ratio(c.latency_us.mean(), s.latency_us.mean()),
        c.outcomes.failure_rate() - s.outcomes.failure_rate(),
        mean_ratio(c.cpu_ns.as_ref(), s.cpu_ns.as_ref()),
        mean_ratio(c.alloc_bytes.as_ref(), s.alloc_bytes.as_ref()),
        evidence.shadow.pairs.total.mismatches.net_rate(),
        f64::from(u8::from(new_failure_class)),
    ]
}

/// A trained model: standardization of the features and the logistic coefficients,
/// oriented so that it gives P(incident).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedModel {
    /// The names of the features, in order (checked on load).
    pub feature_names: Vec<String>,
    /// Mean of each feature in the training data.
    pub means: Vec<f64>,
    /// Standard deviation of each feature in the training data (1 where it was 0).
    pub scales: Vec<f64>,
    /// Coefficient of each standardized feature.
    pub weights: Vec<f64>,
    /// Intercept.
    pub intercept: f64,
    /// How many records it was trained on.
    pub trained_on: usize,
    /// Whether any of them were synthetic.
    pub synthetic: bool,
}

impl LearnedModel {
    /// Fits a logistic regression (L2-regularized, linfa's L-BFGS) on the history.
    pub fn train(history: &[HistoryRecord]) -> Result<Self, LearnedError> {
        let incidents = history.iter().filter(|r| r.incident).count();
        if incidents == 0 || incidents == history.len() {
            return Err(LearnedError::OneClass {
                incidents,
                records: history.len(),
            });
        }
        let rows: Vec<[f64; 8]> = history.iter().map(|r| features(&r.evidence)).collect();
        let n = rows.len() as f64;
        let width = FEATURE_NAMES.len();
        let means: Vec<f64> = (0..width)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let scales: Vec<f64> = (0..width)
            .map(|j| {
                let variance = rows.iter().map(|r| (r[j] - means[j]).powi(2)).sum::<f64>() / n;
                if variance > 0.0 { variance.sqrt() } else { 1.0 }
            })
            .collect();
        let x = Array2::from_shape_fn((rows.len(), width), |(i, j)| {
            (rows[i][j] - means[j]) / scales[j]
        });
        let y: Array1<bool> = history.iter().map(|r| r.incident).collect();
        let fitted = LogisticRegression::default()
            .alpha(0.1)
            .max_iterations(500)
            .fit(&Dataset::new(x, y))
            .map_err(|e| LearnedError::Fit(e.to_string()))?;
        // linfa models P(labels().pos), which is whichever class was more frequent;
        // orient the coefficients so the model always gives P(incident).
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        Ok(Self {
            feature_names: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            means,
            scales,
            weights: fitted.params().iter().map(|w| sign * w).collect(),
            intercept: sign * fitted.intercept(),
            trained_on: history.len(),
            synthetic: history.iter().any(|r| r.synthetic),
        })
    }

    /// The model as JSON.
    pub fn to_json(&self) -> String {
        // A struct of numbers, strings and bools always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A model from JSON, checked against the features this version computes.
    pub fn from_json(text: &str) -> Result<Self, LearnedError> {
        let model: Self =
            serde_json::from_str(text).map_err(|e| LearnedError::BadModel(e.to_string()))?;
        let width = FEATURE_NAMES.len();
        if model.feature_names != FEATURE_NAMES
            || model.means.len() != width
            || model.scales.len() != width
            || model.weights.len() != width
        {
            return Err(LearnedError::BadModel(format!(
                "it was trained on features {:?}; this version computes {:?}",
                model.feature_names, FEATURE_NAMES
            )));
        }
        if model.scales.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || model
                .weights
                .iter()
                .chain(&model.means)
                .any(|v| !v.is_finite())
            || !model.intercept.is_finite()
        {
            return Err(LearnedError::BadModel(
                "non-finite or non-positive parameters".into(),
            ));
        }
        Ok(model)
    }

    /// Each standardized feature's contribution to the log-odds of an incident.
    fn contributions(&self, evidence: &Evidence) -> [f64; 8] {
        let x = features(evidence);
        std::array::from_fn(|j| self.weights[j] * (x[j] - self.means[j]) / self.scales[j])
    }

    /// P(incident) for this evidence.
    pub fn probability(&self, evidence: &Evidence) -> f64 {
        let logit = self.intercept + self.contributions(evidence).iter().sum::<f64>();
        1.0 / (1.0 + (-logit).exp())
    }
}

/// A predictor backed by a [`LearnedModel`]: it explains, and never decides.
///
/// Its P(incident) is reported as the failure probability, with the features that moved it
/// most; it runs no test, so it never rolls a rollout back or forward by itself (the same
/// probability thresholded at every look rolled identical builds back in 22.7% of
/// rollouts). Put it in an [`Ensemble`](super::Ensemble) with a
/// [`SequentialPredictor`](super::SequentialPredictor), whose tests decide:
///
/// ```
/// # use shadowlib::predict::{Ensemble, LearnedModel, LearnedPredictor};
/// # use shadowlib::SequentialPredictor;
/// # fn with(model: LearnedModel) -> Ensemble {
/// Ensemble::max()
///     .with(SequentialPredictor::default())
///     .with(LearnedPredictor::new(model))
/// # }
/// ```
///
/// Trained and loaded:
///
/// ```
/// use shadowlib::predict::{HistoryRecord, LearnedModel, LearnedPredictor};
/// use shadowlib::{Evidence, Outcome, Predictor, Version};
///
/// let record = |candidate_errors: u64, incident| {
///     let mut evidence = Evidence::new(Version::new("a", "1"), Version::new("a", "2"));
///     for i in 0..200 {
///         evidence.shadow.twin.record_request(Outcome::Success, 1_000);
///         let failed = i < candidate_errors;
///         evidence.shadow.candidate.record_request(if failed { Outcome::ServerError } else { Outcome::Success }, 1_000);
///     }
///     HistoryRecord { evidence, incident, synthetic: true }
/// };
/// let history: Vec<_> = (0..20).map(|i| record(i, i >= 10)).collect();
/// let model = LearnedModel::train(&history)?;
/// let predictor = LearnedPredictor::new(LearnedModel::from_json(&model.to_json())?);
/// assert!(predictor.predict(&record(19, true).evidence).failure_probability > 0.5);
/// assert!(predictor.predict(&record(0, false).evidence).failure_probability < 0.5);
/// # Ok::<(), shadowlib::predict::LearnedError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LearnedPredictor {
    model: LearnedModel,
}

impl LearnedPredictor {
    /// A predictor with this model.
    pub fn new(model: LearnedModel) -> Self {
        Self { model }
    }

    /// The model.
    pub fn model(&self) -> &LearnedModel {
        &self.model
    }
}

impl Predictor for LearnedPredictor {
    fn name(&self) -> &str {
        "learned"
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        let (stable, candidate) = evidence.arms();
        if stable.latency_us.is_empty() || candidate.latency_us.is_empty() {
            return Prediction::inconclusive(
                self.name(),
                "no latency measured on one of the builds",
                evidence,
            );
        }
        let probability = self.model.probability(evidence);
        let x = features(evidence);
        let mut prediction = Prediction::new(self.name(), probability, evidence)
            .with_degradation(Degradation::point(x[1].exp() - 1.0))
            .with_kpi(Kpi::LatencyP50, Degradation::point(x[0].exp() - 1.0))
            .with_kpi(Kpi::LatencyP99, Degradation::point(x[1].exp() - 1.0))
            .with_kpi(Kpi::ErrorRate, Degradation::point(x[3]));
        let contributions = self.model.contributions(evidence);
        let mut order: Vec<usize> = (0..contributions.len()).collect();
        order.sort_by(|&a, &b| contributions[b].abs().total_cmp(&contributions[a].abs()));
        let origin = if self.model.synthetic {
            "synthetic"
        } else {
            "real"
        };
        prediction = prediction.with_reason(format!(
            "model trained on {} {origin} rollouts gives P(incident) = {probability:.3}",
            self.model.trained_on
        ));
        for &j in order.iter().take(3) {
            prediction = prediction.with_reason(format!(
                "{} = {:.4} moves the log-odds by {:+.2}",
                FEATURE_NAMES[j], x[j], contributions[j]
            ));
        }
        prediction
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Outcome, Version};

    fn record(latency_factor: f64, incident: bool) -> HistoryRecord {
        let mut evidence = Evidence::new(Version::new("a", "1"), Version::new("a", "2"));
        for i in 0..300u64 {
            evidence
                .shadow
                .twin
                .record_request(Outcome::Success, 1_000 + i);
            evidence.shadow.candidate.record_request(
                Outcome::Success,
                ((1_000 + i) as f64 * latency_factor) as u64,
            );
        }
        HistoryRecord {
            evidence,
            incident,
            synthetic: false,
        }
    }

    fn history() -> Vec<HistoryRecord> {
        (0..40)
            .map(|i| {
                let factor = 0.9 + f64::from(i) * 0.02;
                record(factor, factor > 1.2)
            })
            .collect()
    }

    #[test]
    fn learns_that_slower_means_riskier() {
        let model = LearnedModel::train(&history()).expect("trains");
        let slow = model.probability(&record(1.6, true).evidence);
        let same = model.probability(&record(1.0, false).evidence);
        assert!(slow > 0.8 && same < 0.2, "slow {slow}, same {same}");
    }

    #[test]
    fn save_and_load_give_identical_predictions() {
        let model = LearnedModel::train(&history()).expect("trains");
        let loaded = LearnedModel::from_json(&model.to_json()).expect("loads");
        for factor in [0.8, 1.0, 1.1, 1.3, 2.0] {
            let evidence = record(factor, false).evidence;
            assert_eq!(model.probability(&evidence), loaded.probability(&evidence));
        }
    }

    #[test]
    fn incident_orientation_does_not_depend_on_the_majority_class() {
        // Mostly incidents this time: linfa's positive class flips, the model must not.
        let history: Vec<_> = (0..40)
            .map(|i| {
                let factor = 0.9 + f64::from(i) * 0.02;
                record(factor, factor > 1.0)
            })
            .collect();
        let model = LearnedModel::train(&history).expect("trains");
        assert!(model.probability(&record(1.6, true).evidence) > 0.8);
        assert!(model.probability(&record(0.9, false).evidence) < 0.2);
    }

    #[test]
    fn bad_history_line_is_named() {
        let good = serde_json::to_string(&record(1.0, false)).expect("serializes");
        let text = format!("{good}\n\n{good}\n{{broken\n");
        match read_history(text.as_bytes()) {
            Err(LearnedError::BadLine { line, .. }) => assert_eq!(line, 4),
            other => panic!("expected a bad line error, got {other:?}"),
        }
        assert_eq!(
            read_history(format!("{good}\n{good}\n").as_bytes())
                .expect("reads")
                .len(),
            2
        );
    }

    #[test]
    fn one_class_history_is_an_error() {
        let history: Vec<_> = (0..5).map(|_| record(1.0, false)).collect();
        assert!(matches!(
            LearnedModel::train(&history),
            Err(LearnedError::OneClass {
                incidents: 0,
                records: 5
            })
        ));
    }

    #[test]
    fn a_model_for_other_features_is_refused() {
        let mut model = LearnedModel::train(&history()).expect("trains");
        model.feature_names.pop();
        model.weights.pop();
        assert!(matches!(
            LearnedModel::from_json(&model.to_json()),
            Err(LearnedError::BadModel(_))
        ));
    }
}
