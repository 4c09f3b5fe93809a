//! Everything measured about one build in one place (the shadow, or a canary step).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Distribution, DistributionError, OutcomeCounts, RouteEvidence};
use crate::model::Outcome;

/// Everything measured about one build in one place: the shadow, or live traffic at one
/// canary step. Its distributions are of that build alone; comparisons between the builds
/// are made from like pieces (see [`Evidence`](super::Evidence)).
///
/// ```
/// use shadowlib::{ArmEvidence, Outcome};
///
/// let mut arm = ArmEvidence::default();
/// arm.record_request(Outcome::Success, 1_250);
/// assert_eq!(arm.requests(), 1);
/// assert_eq!(arm.latency_us.count(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmEvidence {
    /// Requests by outcome class.
    pub outcomes: OutcomeCounts,
    /// Latency of requests that ran, in microseconds.
    pub latency_us: Distribution,
    /// CPU time per request in nanoseconds, where measured (in the shadow).
    pub cpu_ns: Option<Distribution>,
    /// Bytes allocated per request, where measured (in the shadow, with the counting
    /// allocator).
    pub alloc_bytes: Option<Distribution>,
    /// Number of allocations per request, where measured.
    pub alloc_count: Option<Distribution>,
    /// Bytes of request bodies received.
    pub request_bytes: u64,
    /// Bytes of response bodies sent.
    pub response_bytes: u64,
    /// The same statistics per route label. Routes past the recorder's cardinality cap
    /// share one overflow entry, [`OTHER_ROUTES`](crate::OTHER_ROUTES).
    pub routes: BTreeMap<String, RouteEvidence>,
}

impl Default for ArmEvidence {
    fn default() -> Self {
        Self {
            outcomes: OutcomeCounts::default(),
            latency_us: Distribution::latency_us(),
            cpu_ns: None,
            alloc_bytes: None,
            alloc_count: None,
            request_bytes: 0,
            response_bytes: 0,
            routes: BTreeMap::new(),
        }
    }
}

impl ArmEvidence {
    /// Requests that ran.
    pub fn requests(&self) -> u64 {
        self.outcomes.total()
    }

    /// Records one request's outcome and latency.
    pub fn record_request(&mut self, outcome: Outcome, latency_us: u64) {
        self.outcomes.add(outcome, 1);
        if outcome != Outcome::Shed {
            self.latency_us.record(latency_us);
        }
    }

    /// Adds another piece of evidence about the same build to this one.
    pub fn merge(&mut self, other: &ArmEvidence) -> Result<(), DistributionError> {
        self.outcomes.merge(&other.outcomes);
        self.latency_us.merge(&other.latency_us)?;
        merge_optional(&mut self.cpu_ns, &other.cpu_ns)?;
        merge_optional(&mut self.alloc_bytes, &other.alloc_bytes)?;
        merge_optional(&mut self.alloc_count, &other.alloc_count)?;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
        for (route, evidence) in &other.routes {
            match self.routes.get_mut(route) {
                Some(into) => into.merge(evidence)?,
                None => {
                    self.routes.insert(route.clone(), evidence.clone());
                }
            }
        }
        Ok(())
    }
}

fn merge_optional(
    into: &mut Option<Distribution>,
    from: &Option<Distribution>,
) -> Result<(), DistributionError> {
    match (into.as_mut(), from) {
        (_, None) => Ok(()),
        (Some(into), Some(from)) => into.merge(from),
        (None, Some(from)) => {
            *into = Some(from.clone());
            Ok(())
        }
    }
}
