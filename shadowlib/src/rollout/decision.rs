//! What the controller decided at a look, and why.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Action, SampleCount};

/// Who made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionSource {
    /// The controller, from the evidence.
    Controller,
    /// A person or a script, through a [`RolloutHandle`](crate::RolloutHandle).
    Operator,
}

/// One piece of the explanation of a decision: which metric, which statistic, which
/// threshold, how many samples. Only `message` is required.
///
/// ```
/// use shadowlib::{Reason, SampleCount};
///
/// let reason = Reason::new("error rate above tolerance")
///     .metric("error_rate", 0.031_274_9, 0.01)
///     .samples(SampleCount { stable: 5_000, candidate: 4_800 });
/// assert_eq!(
///     reason.to_string(),
///     "error rate above tolerance [error_rate = 0.03127, threshold 0.01; samples stable 5000, candidate 4800]"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// The explanation in words.
    pub message: String,
    /// The metric or statistic the reason is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The value it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The threshold it was compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The samples behind the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<SampleCount>,
}

impl Reason {
    /// A reason that is only words.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            metric: None,
            value: None,
            threshold: None,
            samples: None,
        }
    }

    /// Names the metric, its value and the threshold it was held against.
    pub fn metric(mut self, name: impl Into<String>, value: f64, threshold: f64) -> Self {
        self.metric = Some(name.into());
        self.value = Some(value);
        self.threshold = Some(threshold);
        self
    }

    /// Names the samples behind the value.
    pub fn samples(mut self, samples: SampleCount) -> Self {
        self.samples = Some(samples);
        self
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut details = Vec::new();
        if let (Some(metric), Some(value)) = (&self.metric, self.value) {
            let mut part = format!("{metric} = {}", Number(value));
            if let Some(threshold) = self.threshold {
                part.push_str(&format!(", threshold {}", Number(threshold)));
            }
            details.push(part);
        }
        if let Some(s) = self.samples {
            details.push(format!(
                "samples stable {}, candidate {}",
                s.stable, s.candidate
            ));
        }
        if !details.is_empty() {
            write!(f, " [{}]", details.join("; "))?;
        }
        Ok(())
    }
}

/// A number as people read it: at most four significant decimals, no trailing zeros.
struct Number(f64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if !value.is_finite() || value == value.trunc() || value.abs() >= 1e4 {
            return write!(f, "{value}");
        }
        // Four significant digits after the leading zeros of a small value.
        let decimals = (4 - value.abs().log10().floor() as i32 - 1).clamp(0, 12) as usize;
        let text = format!("{value:.decimals$}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        f.write_str(text)
    }
}

/// A decision with the reasons behind it. A decision without reasons cannot be built.
///
/// ```
/// use shadowlib::{Action, Decision, Reason};
///
/// let d = Decision::controller(Action::Hold, Reason::new("not enough samples"));
/// assert_eq!(d.action, Action::Hold);
/// assert_eq!(d.reasons.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// Who decided.
    pub source: DecisionSource,
    /// Why; never empty.
    pub reasons: Vec<Reason>,
    /// Who gave an operator's command, when they said (the admin API records the name of
    /// the token that authorised it); `None` for the controller's decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl Decision {
    /// A decision of the controller with its first reason.
    pub fn controller(action: Action, reason: Reason) -> Self {
        Self {
            action,
            source: DecisionSource::Controller,
            reasons: vec![reason],
            by: None,
        }
    }

    /// A decision of an operator with its reason.
    pub fn operator(action: Action, reason: Reason) -> Self {
        Self {
            action,
            source: DecisionSource::Operator,
            reasons: vec![reason],
            by: None,
        }
    }

    /// Names who gave the command.
    ///
    /// ```
    /// use shadowlib::{Action, Decision, Reason};
    ///
    /// let d = Decision::operator(Action::Pause, Reason::new("operator: a page")).by("ops-alice");
    /// assert_eq!(d.to_string(), "pause (by ops-alice): operator: a page");
    /// ```
    pub fn by(mut self, identity: impl Into<String>) -> Self {
        self.by = Some(identity.into());
        self
    }

    /// Adds further reasons.
    pub fn with_reasons(mut self, reasons: impl IntoIterator<Item = Reason>) -> Self {
        self.reasons.extend(reasons);
        self
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.action)?;
        if let Some(by) = &self.by {
            write!(f, " (by {by})")?;
        }
        for (i, reason) in self.reasons.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{reason}")?;
        }
        Ok(())
    }
}
