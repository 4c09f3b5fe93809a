//! Evidence per route label.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Comparisons, Distribution, DistributionError, OutcomeCounts};

/// One route's share of an arm's evidence: the request statistics of that route, and how
/// its responses compared with the other build's, field by field.
///
/// ```
/// use shadowlib::{Outcome, RouteEvidence};
///
/// let mut route = RouteEvidence::default();
/// route.outcomes.add(Outcome::Success, 1);
/// route.latency_us.record(800);
/// route.differing_fields.entry("/price".into()).or_default().differed += 1;
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
    /// Response comparisons against the other build, after noise filtering.
    pub comparisons: Comparisons,
    /// How many reads were also re-run on the stable build to measure noise.
    pub noise_samples: u64,
    /// By field (`status`, `header:<name>`, `body`, or a JSON path such as `/items/*/price`):
    /// how often it differed between the builds, and between two runs of the stable build.
    pub differing_fields: BTreeMap<String, FieldDifferences>,
}

impl Default for RouteEvidence {
    fn default() -> Self {
        Self {
            outcomes: OutcomeCounts::default(),
            latency_us: Distribution::latency_us(),
            request_bytes: 0,
            response_bytes: 0,
            comparisons: Comparisons::default(),
            noise_samples: 0,
            differing_fields: BTreeMap::new(),
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
        self.comparisons.compared += other.comparisons.compared;
        self.comparisons.mismatched += other.comparisons.mismatched;
        self.noise_samples += other.noise_samples;
        for (field, counts) in &other.differing_fields {
            let into = self.differing_fields.entry(field.clone()).or_default();
            into.differed += counts.differed;
            into.noise += counts.noise;
        }
        Ok(())
    }
}

/// How often one response field differed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDifferences {
    /// Compared response pairs (stable vs candidate) in which the field differed.
    pub differed: u64,
    /// Noise samples (stable vs a second stable run) in which the field differed.
    pub noise: u64,
}
