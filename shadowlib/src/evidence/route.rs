//! Evidence per route label.

use serde::{Deserialize, Serialize};

use super::{Distribution, DistributionError, OutcomeCounts};

/// One route's share of an arm's evidence.
///
/// ```
/// use shadowlib::{Outcome, RouteEvidence};
///
/// let mut route = RouteEvidence::default();
/// route.outcomes.add(Outcome::Success, 1);
/// route.latency_us.record(800);
/// assert_eq!(route.latency_us.count(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteEvidence {
    /// Requests by outcome class.
    pub outcomes: OutcomeCounts,
    /// Latency of requests that ran, in microseconds.
    pub latency_us: Distribution,
    /// Bytes of request bodies received.
    pub request_bytes: u64,
    /// Bytes of response bodies sent.
    pub response_bytes: u64,
}

impl Default for RouteEvidence {
    fn default() -> Self {
        Self {
            outcomes: OutcomeCounts::default(),
            latency_us: Distribution::latency_us(),
            request_bytes: 0,
            response_bytes: 0,
        }
    }
}

impl RouteEvidence {
    /// Adds another piece of evidence about the same route to this one.
    pub fn merge(&mut self, other: &RouteEvidence) -> Result<(), DistributionError> {
        self.outcomes.merge(&other.outcomes);
        self.latency_us.merge(&other.latency_us)?;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
        Ok(())
    }
}
