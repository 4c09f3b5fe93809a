//! What the shadow may spend.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::ResourcesError;

/// A budget that cannot be used, naming the field that is wrong.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BudgetError {
    /// The TOML text could not be parsed (syntax, types, unknown fields).
    #[error("invalid TOML shadow budget: {0}")]
    Toml(String),
    /// A queue of zero could hold no copy, so nothing would ever be mirrored.
    #[error("queue_capacity: must be at least 1")]
    ZeroQueue,
    /// No worker would ever run a copy.
    #[error("concurrency: must be at least 1")]
    ZeroConcurrency,
    /// Every copy would time out before it started.
    #[error("timeout: must be greater than zero")]
    ZeroTimeout,
    /// One of the [`ShadowResources`](super::ShadowResources) beyond the budget is wrong.
    #[error(transparent)]
    Resources(Box<ResourcesError>),
}

/// What the shadow may spend: queue depth, concurrency and time per request.
///
/// The shadow is work the live path did not ask for, so it is bounded in every direction:
/// at most [`ShadowBudget::queue_capacity`] copies wait, at most
/// [`ShadowBudget::concurrency`] run at once, and each one gets
/// [`ShadowBudget::timeout`] of the time the shadow had the CPU before it is cancelled and
/// recorded as a timeout. A copy that finds the queue full is dropped and counted; it
/// never waits, so the live request that produced it never waits either.
///
/// These are the most the shadow ever uses. By default it uses what live does, within
/// them: see [`ShadowResources::follow_live`](super::ShadowResources::follow_live), and
/// [`ShadowResources`](super::ShadowResources) for what else the budget file may say.
///
/// ```
/// use std::time::Duration;
/// use shadowlib::shadow::ShadowBudget;
///
/// let budget = ShadowBudget::from_toml(r#"
///     queue_capacity = 256
///     concurrency = 4
///     timeout = "2s"
/// "#)?;
/// assert_eq!(budget.timeout, Duration::from_secs(2));
/// assert!(ShadowBudget { concurrency: 0, ..budget }.validate().is_err());
/// # Ok::<(), shadowlib::shadow::BudgetError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowBudget {
    /// Copies that may wait for a worker; one more is dropped and counted.
    pub queue_capacity: usize,
    /// Copies run at once by the shadow's worker (in flight together, on one task).
    pub concurrency: usize,
    /// Time a copy may take on the candidate before it is cancelled and recorded as a
    /// timeout. The same bound applies to waiting for the live response to compare with.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
}

impl Default for ShadowBudget {
    /// 1,024 queued copies, 16 at once, 5 seconds each: enough to follow a few thousand
    /// reads per second of a service answering in milliseconds, and small enough that a
    /// hung candidate holds at most 16 copies in flight and 1,024 waiting.
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            concurrency: 16,
            timeout: Duration::from_secs(5),
        }
    }
}

impl ShadowBudget {
    /// Parses and validates a budget written in TOML. A file that also sets what the
    /// budget does not (off-peak windows, a cost cap, the adaptive share) is refused with
    /// an error that says to read it with
    /// [`ShadowResources::from_toml`](super::ShadowResources::from_toml), which reads both.
    pub fn from_toml(text: &str) -> Result<Self, BudgetError> {
        let budget: Self = toml::from_str(text).map_err(|e| {
            let hint = if super::ShadowResources::from_toml(text).is_ok() {
                " (the file sets shadow resources beyond the budget: read it with ShadowResources::from_toml)"
            } else {
                ""
            };
            BudgetError::Toml(format!("{e}{hint}"))
        })?;
        budget.validate()?;
        Ok(budget)
    }

    /// Checks every field; the first violation found is returned.
    pub fn validate(&self) -> Result<(), BudgetError> {
        if self.queue_capacity == 0 {
            return Err(BudgetError::ZeroQueue);
        }
        if self.concurrency == 0 {
            return Err(BudgetError::ZeroConcurrency);
        }
        if self.timeout.is_zero() {
            return Err(BudgetError::ZeroTimeout);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips() {
        let budget = ShadowBudget::default();
        budget.validate().expect("default is valid");
        let text = toml::to_string(&budget).expect("serializes");
        assert_eq!(ShadowBudget::from_toml(&text).expect("parses"), budget);
    }

    #[test]
    fn each_bad_field_has_its_own_error() {
        assert_eq!(
            ShadowBudget::from_toml("queue_capacity = 0"),
            Err(BudgetError::ZeroQueue)
        );
        assert_eq!(
            ShadowBudget::from_toml("concurrency = 0"),
            Err(BudgetError::ZeroConcurrency)
        );
        assert_eq!(
            ShadowBudget::from_toml(r#"timeout = "0s""#),
            Err(BudgetError::ZeroTimeout)
        );
        let unknown = ShadowBudget::from_toml("workers = 3").expect_err("unknown field");
        assert!(unknown.to_string().contains("workers"), "{unknown}");
        let resources =
            ShadowBudget::from_toml("cpu_seconds_per_hour = 60").expect_err("not a budget key");
        assert!(
            resources.to_string().contains("ShadowResources::from_toml"),
            "{resources}"
        );
    }
}
