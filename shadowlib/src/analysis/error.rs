//! What can be wrong with an analysis configuration.

use thiserror::Error;

/// An analysis parameter that cannot be used, naming the field.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AnalysisError {
    /// A number outside the range it must lie in.
    #[error("{field}: {value} is outside {expected}")]
    OutOfRange {
        /// The field's path, e.g. `tolerances.latency`.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range, in words.
        expected: &'static str,
    },
    /// A sample count below what the analysis needs.
    #[error("{field}: {value} is below the minimum of {minimum}")]
    TooFewSamples {
        /// The field's path.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The smallest value allowed.
        minimum: u64,
    },
}

/// Checks that `value` is finite and strictly positive.
pub(crate) fn positive(field: &'static str, value: f64) -> Result<f64, AnalysisError> {
    if value > 0.0 && value.is_finite() {
        Ok(value)
    } else {
        Err(AnalysisError::OutOfRange {
            field,
            value,
            expected: "(0, infinity)",
        })
    }
}

/// Checks that `value` lies strictly between 0 and 1.
pub(crate) fn unit_open(field: &'static str, value: f64) -> Result<f64, AnalysisError> {
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(AnalysisError::OutOfRange {
            field,
            value,
            expected: "(0, 1)",
        })
    }
}
