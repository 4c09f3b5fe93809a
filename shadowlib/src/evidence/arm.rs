//! Everything measured about one build.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Comparisons, Distribution, DistributionError, Moments, OutcomeCounts, ProcessEvidence,
    RouteEvidence,
};
use crate::model::{Outcome, Version};

/// Everything measured about one build.
///
/// ```
/// use shadowlib::{ArmEvidence, Outcome, Version};
///
/// let mut arm = ArmEvidence::new(Version::new("api", "v2"));
/// arm.record_request(Outcome::Success, 1_250);
/// assert_eq!(arm.requests(), 1);
/// assert_eq!(arm.latency_us.count(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmEvidence {
    /// The build measured.
    pub version: Version,
    /// Requests by outcome class.
    pub outcomes: OutcomeCounts,
    /// Latency of requests that ran, in microseconds.
    pub latency_us: Distribution,
    /// CPU time per request in nanoseconds, where measured.
    pub cpu_ns: Option<Distribution>,
    /// Bytes allocated per request, where measured (needs the counting allocator).
    pub alloc_bytes: Option<Distribution>,
    /// Bytes of request bodies received.
    pub request_bytes: u64,
    /// Bytes of response bodies sent.
    pub response_bytes: u64,
    /// Response comparisons against the other build.
    pub comparisons: Comparisons,
    /// User-defined KPIs by name.
    pub custom: BTreeMap<String, Moments>,
    /// Number of allocations per request, where measured (needs the counting allocator).
    #[serde(default)]
    pub alloc_count: Option<Distribution>,
    /// The same statistics per route label. Routes past the recorder's cardinality cap
    /// share one overflow entry, [`OTHER_ROUTES`](crate::OTHER_ROUTES).
    #[serde(default)]
    pub routes: BTreeMap<String, RouteEvidence>,
    /// The process's CPU, memory and I/O over the rollout, where sampled.
    ///
    /// Both builds run in one process, so this is the same for both arms: it is context
    /// (is the process as a whole near a limit?), not something either build is blamed for.
    #[serde(default)]
    pub process: Option<ProcessEvidence>,
}

impl ArmEvidence {
    /// No evidence yet about `version`.
    pub fn new(version: Version) -> Self {
        Self {
            version,
            outcomes: OutcomeCounts::default(),
            latency_us: Distribution::latency_us(),
            cpu_ns: None,
            alloc_bytes: None,
            request_bytes: 0,
            response_bytes: 0,
            comparisons: Comparisons::default(),
            custom: BTreeMap::new(),
            alloc_count: None,
            routes: BTreeMap::new(),
            process: None,
        }
    }

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
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
        self.comparisons.compared += other.comparisons.compared;
        self.comparisons.mismatched += other.comparisons.mismatched;
        for (name, moments) in &other.custom {
            self.custom.entry(name.clone()).or_default().merge(moments);
        }
        merge_optional(&mut self.alloc_count, &other.alloc_count)?;
        for (route, evidence) in &other.routes {
            match self.routes.get_mut(route) {
                Some(into) => into.merge(evidence)?,
                None => {
                    self.routes.insert(route.clone(), evidence.clone());
                }
            }
        }
        match (&mut self.process, &other.process) {
            (_, None) => {}
            (Some(into), Some(from)) => into.merge(from),
            (into @ None, Some(from)) => *into = Some(from.clone()),
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
