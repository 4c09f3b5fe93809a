//! The rollout policy: steps, interval, deadlines, evidence requirements, the mismatch test.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::Share;

/// A policy that cannot be used, naming the field that is wrong.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    /// The TOML text could not be parsed (syntax, types, unknown fields).
    #[error("invalid TOML rollout policy: {0}")]
    Toml(String),
    /// The JSON text could not be parsed (syntax, types, unknown fields).
    #[error("invalid JSON rollout policy: {0}")]
    Json(String),
    /// `steps` is empty.
    #[error("steps: at least one step is required, and the last must be 100%")]
    NoSteps,
    /// A step of 0% would not send any traffic to the candidate.
    #[error("steps[{index}]: a step must send some traffic to the candidate, got 0%")]
    ZeroStep {
        /// Position of the step.
        index: usize,
    },
    /// Steps must strictly increase.
    #[error("steps[{index}]: {share} does not increase on the previous step {previous}")]
    StepsNotIncreasing {
        /// Position of the offending step.
        index: usize,
        /// The step before it.
        previous: Share,
        /// The offending step.
        share: Share,
    },
    /// The last step must be 100%.
    #[error("steps: the last step must be 100%, got {last}")]
    LastStepNotFull {
        /// The last step.
        last: Share,
    },
    /// The interval between looks must be positive.
    #[error("interval: must be greater than zero")]
    ZeroInterval,
    /// The no-data deadline must allow at least one look.
    #[error("no_data_deadline: {deadline:?} is shorter than the interval {interval:?}")]
    DeadlineShorterThanInterval {
        /// The deadline.
        deadline: Duration,
        /// The interval.
        interval: Duration,
    },
    /// The decision deadline must allow at least one look.
    #[error("decision_deadline: {deadline:?} is shorter than the interval {interval:?}")]
    DecisionDeadlineShorterThanInterval {
        /// The deadline.
        deadline: Duration,
        /// The interval.
        interval: Duration,
    },
    /// Nothing can be judged on zero samples.
    #[error("min_samples: must be at least 1")]
    ZeroMinSamples,
    /// A threshold outside its allowed range.
    #[error("{field}: {value} is outside {range}")]
    ThresholdOutOfRange {
        /// The field's path, e.g. `mismatch.tolerance`.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range, in words.
        range: &'static str,
    },
}

/// How wrong responses are judged: the candidate's mismatch rate *net of noise* — reads
/// on which the candidate's response differed from live's in a field where the stable
/// twin's agreed, less those the other way round (see
/// [`PairedMismatches`](crate::PairedMismatches)) — tested like any other KPI, with an
/// always-valid test, whatever the predictor.
///
/// ```
/// use shadowlib::RolloutPolicy;
///
/// let policy = RolloutPolicy::from_toml(r#"
///     [mismatch]
///     tolerance = 0.0005
///     rollback_above = 0.002
/// "#)?;
/// assert_eq!(policy.mismatch.alpha, 0.005);
/// # Ok::<(), shadowlib::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MismatchPolicy {
    /// The net mismatch rate the candidate may have and still step up: the test must show
    /// the rate below it. `0.001` = one read in a thousand.
    pub tolerance: f64,
    /// The net mismatch rate above which the rollout rolls back, once the test shows the
    /// rate above it; at least `tolerance`.
    pub rollback_above: f64,
    /// The chance, over the whole rollout, that the test calls identical builds'
    /// responses worse than `rollback_above` (or a candidate within `tolerance`, worse).
    pub alpha: f64,
}

impl Default for MismatchPolicy {
    fn default() -> Self {
        Self {
            tolerance: 0.001,
            rollback_above: 0.001,
            alpha: 0.005,
        }
    }
}

/// How a rollout proceeds, loaded from TOML or JSON and validated on load.
///
/// In files, shares are percentages and durations are written as in `"10s"` or `"5m"`.
///
/// ```
/// use std::time::Duration;
/// use shadowlib::RolloutPolicy;
///
/// let policy = RolloutPolicy::from_toml(r#"
///     interval = "10s"
///     steps = [0.5, 5, 25, 50, 100]
///     min_samples = 500
///     no_data_deadline = "10m"
///
///     [mismatch]
///     tolerance = 0.0005
/// "#)?;
/// assert_eq!(policy.interval, Duration::from_secs(10));
/// assert_eq!(policy.steps[0].ppm(), 5_000);
///
/// let bad = RolloutPolicy::from_toml("steps = [50, 25, 100]");
/// assert!(bad.unwrap_err().to_string().starts_with("steps[1]"));
/// # Ok::<(), shadowlib::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutPolicy {
    /// Time between two looks at the evidence.
    #[serde(with = "crate::duration")]
    pub interval: Duration,
    /// Shares of live traffic for the candidate, one per canary step, strictly
    /// increasing and ending at 100%.
    pub steps: Vec<Share>,
    /// Reads run on both builds in the shadow before anything is decided.
    pub min_samples: u64,
    /// Candidate requests needed at a canary step before stepping up from it (live
    /// requests the candidate served at that step).
    pub min_samples_per_step: u64,
    /// How long the controller waits for samples (the shadow's `min_samples`, a canary
    /// step's `min_samples_per_step`, a predictor's minimum) before it pauses with "no
    /// data".
    #[serde(with = "crate::duration")]
    pub no_data_deadline: Duration,
    /// How long the controller holds a phase on evidence that does not decide (a test
    /// neither worse nor within tolerance, a control chart alarm) before it pauses with the
    /// reason, for an operator: no rollout sits on a share for ever.
    #[serde(with = "crate::duration")]
    pub decision_deadline: Duration,
    /// How wrong responses are judged.
    pub mismatch: MismatchPolicy,
    /// Whether a rollout paused for want of data resumes by itself when data returns
    /// (the event says so); `false` leaves it to an operator.
    pub resume_when_data_returns: bool,
    /// The mirrored reads per second the service expects, for the plan printed when the
    /// rollout is built ([`Rollout::plan`](crate::Rollout::plan)): how soon it can tell a
    /// regression. Unset, the plan is in samples only.
    pub expected_reads_per_second: Option<f64>,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        let percent = |p: f64| Share::from_percent(p).unwrap_or(Share::FULL);
        Self {
            interval: Duration::from_secs(10),
            steps: [1.0, 5.0, 25.0, 50.0, 100.0].map(percent).to_vec(),
            min_samples: 200,
            min_samples_per_step: 100,
            no_data_deadline: Duration::from_secs(600),
            decision_deadline: Duration::from_secs(1_800),
            mismatch: MismatchPolicy::default(),
            resume_when_data_returns: true,
            expected_reads_per_second: None,
        }
    }
}

impl RolloutPolicy {
    /// Parses and validates a policy written in TOML.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let policy: Self = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Parses and validates a policy written in JSON.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let policy: Self =
            serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks every field; the first violation found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.is_zero() {
            return Err(ConfigError::ZeroInterval);
        }
        if self.no_data_deadline < self.interval {
            return Err(ConfigError::DeadlineShorterThanInterval {
                deadline: self.no_data_deadline,
                interval: self.interval,
            });
        }
        if self.decision_deadline < self.interval {
            return Err(ConfigError::DecisionDeadlineShorterThanInterval {
                deadline: self.decision_deadline,
                interval: self.interval,
            });
        }
        if self.min_samples == 0 {
            return Err(ConfigError::ZeroMinSamples);
        }
        let last = self.steps.last().ok_or(ConfigError::NoSteps)?;
        for (index, share) in self.steps.iter().enumerate() {
            if share.is_zero() {
                return Err(ConfigError::ZeroStep { index });
            }
            if index > 0 && *share <= self.steps[index - 1] {
                return Err(ConfigError::StepsNotIncreasing {
                    index,
                    previous: self.steps[index - 1],
                    share: *share,
                });
            }
        }
        if *last != Share::FULL {
            return Err(ConfigError::LastStepNotFull { last: *last });
        }
        if let Some(rate) = self.expected_reads_per_second
            && !(rate > 0.0 && rate.is_finite())
        {
            return Err(ConfigError::ThresholdOutOfRange {
                field: "expected_reads_per_second",
                value: rate,
                range: "(0, infinity)",
            });
        }
        let m = &self.mismatch;
        for (field, value) in [
            ("mismatch.tolerance", m.tolerance),
            ("mismatch.rollback_above", m.rollback_above),
            ("mismatch.alpha", m.alpha),
        ] {
            if !(value > 0.0 && value < 1.0) {
                return Err(ConfigError::ThresholdOutOfRange {
                    field,
                    value,
                    range: "(0, 1)",
                });
            }
        }
        if m.rollback_above < m.tolerance {
            return Err(ConfigError::ThresholdOutOfRange {
                field: "mismatch.rollback_above",
                value: m.rollback_above,
                range: "[mismatch.tolerance, 1)",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml_err(text: &str) -> ConfigError {
        RolloutPolicy::from_toml(text).expect_err("policy should be rejected")
    }

    #[test]
    fn default_policy_is_valid_and_round_trips() {
        let policy = RolloutPolicy::default();
        policy.validate().expect("default is valid");
        let toml = toml::to_string(&policy).expect("serializes");
        assert_eq!(RolloutPolicy::from_toml(&toml).expect("parses"), policy);
        let json = serde_json::to_string(&policy).expect("serializes");
        assert_eq!(RolloutPolicy::from_json(&json).expect("parses"), policy);
    }

    #[test]
    fn each_bad_field_has_its_own_error() {
        assert_eq!(toml_err("steps = []"), ConfigError::NoSteps);
        assert_eq!(
            toml_err("steps = [0, 100]"),
            ConfigError::ZeroStep { index: 0 }
        );
        assert!(matches!(
            toml_err("steps = [5, 5, 100]"),
            ConfigError::StepsNotIncreasing { index: 1, .. }
        ));
        assert!(matches!(
            toml_err("steps = [5, 50]"),
            ConfigError::LastStepNotFull { .. }
        ));
        assert_eq!(toml_err(r#"interval = "0s""#), ConfigError::ZeroInterval);
        assert!(matches!(
            toml_err(
                r#"interval = "10s"
no_data_deadline = "5s""#
            ),
            ConfigError::DeadlineShorterThanInterval { .. }
        ));
        assert_eq!(toml_err("min_samples = 0"), ConfigError::ZeroMinSamples);

        assert!(matches!(
            toml_err("[mismatch]\ntolerance = 0.01\nrollback_above = 0.001"),
            ConfigError::ThresholdOutOfRange {
                field: "mismatch.rollback_above",
                ..
            }
        ));
        assert!(matches!(
            toml_err("[mismatch]\nalpha = 0"),
            ConfigError::ThresholdOutOfRange {
                field: "mismatch.alpha",
                ..
            }
        ));
        assert!(matches!(
            toml_err("interval = \"1m\"\ndecision_deadline = \"30s\""),
            ConfigError::DecisionDeadlineShorterThanInterval { .. }
        ));
        assert!(
            toml_err("[thresholds]\nmax_degradation = 0.1")
                .to_string()
                .contains("thresholds"),
            "no thresholds on point estimates: the tests decide"
        );
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = toml_err("steps = [5, 150]").to_string();
        assert!(e.contains("steps") && e.contains("150"), "{e}");
        let e = toml_err("intervall = \"1s\"").to_string();
        assert!(e.contains("intervall"), "{e}");
        let e = RolloutPolicy::from_json(r#"{"min_samples": -1}"#)
            .expect_err("rejected")
            .to_string();
        assert!(e.contains("JSON"), "{e}");
    }
}
