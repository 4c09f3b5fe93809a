//! Request counts by outcome class.

use serde::{Deserialize, Serialize};

use crate::model::Outcome;

/// Request counts by outcome class.
///
/// ```
/// use shadowlib::{Outcome, OutcomeCounts};
///
/// let mut counts = OutcomeCounts::default();
/// counts.add(Outcome::Success, 98);
/// counts.add(Outcome::ServerError, 2);
/// assert_eq!(counts.total(), 100);
/// assert_eq!(counts.failures(), 2);
/// assert!((counts.failure_rate() - 0.02).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Successful requests.
    pub success: u64,
    /// Requests refused as the client's fault.
    pub client_error: u64,
    /// Requests the build failed.
    pub server_error: u64,
    /// Requests past their deadline.
    pub timeout: u64,
    /// Requests whose handler panicked.
    pub panic: u64,
    /// Requests not run because of the budget.
    pub shed: u64,
}

impl OutcomeCounts {
    /// Adds `n` requests of class `outcome`.
    pub fn add(&mut self, outcome: Outcome, n: u64) {
        *self.slot(outcome) += n;
    }

    /// The count of one class.
    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Success => self.success,
            Outcome::ClientError => self.client_error,
            Outcome::ServerError => self.server_error,
            Outcome::Timeout => self.timeout,
            Outcome::Panic => self.panic,
            Outcome::Shed => self.shed,
        }
    }

    fn slot(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::Success => &mut self.success,
            Outcome::ClientError => &mut self.client_error,
            Outcome::ServerError => &mut self.server_error,
            Outcome::Timeout => &mut self.timeout,
            Outcome::Panic => &mut self.panic,
            Outcome::Shed => &mut self.shed,
        }
    }

    /// Requests that ran (everything but shed ones).
    pub fn total(&self) -> u64 {
        self.success + self.client_error + self.server_error + self.timeout + self.panic
    }

    /// Requests that count against the build.
    pub fn failures(&self) -> u64 {
        self.server_error + self.timeout + self.panic
    }

    /// Failures over requests that ran; 0 when nothing ran.
    pub fn failure_rate(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            n => self.failures() as f64 / n as f64,
        }
    }

    /// Adds another set of counts to this one.
    pub fn merge(&mut self, other: &OutcomeCounts) {
        for outcome in Outcome::ALL {
            self.add(outcome, other.get(outcome));
        }
    }
}
