//! Errors shared by several modules.

use thiserror::Error;

/// A share outside `[0%, 100%]`.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ShareError {
    /// The value, as a percentage, is not between 0 and 100.
    #[error("share {0}% is outside [0%, 100%]")]
    OutOfRange(f64),
}
