//! Records each request's KPIs per build.

use std::sync::Mutex;

use async_trait::async_trait;

use super::{MetricError, MetricSource};
use crate::{Arm, ArmEvidence, Outcome, Version};

/// Records the latency, outcome and bytes of every request of both builds, and serves them
/// to the controller as a [`MetricSource`].
///
/// ```
/// use std::time::Duration;
/// use shadowlib::{Arm, KpiRecorder, Outcome, Version};
///
/// let recorder = KpiRecorder::new(Version::new("api", "1"), Version::new("api", "2"));
/// recorder.record(Arm::Candidate, Outcome::Success, Duration::from_micros(850), 0, 512);
/// assert_eq!(recorder.snapshot(Arm::Candidate).requests(), 1);
/// ```
#[derive(Debug)]
pub struct KpiRecorder {
    stable: Mutex<ArmEvidence>,
    candidate: Mutex<ArmEvidence>,
}

impl KpiRecorder {
    /// An empty recorder for a pair of builds.
    pub fn new(stable: Version, candidate: Version) -> Self {
        Self {
            stable: Mutex::new(ArmEvidence::new(stable)),
            candidate: Mutex::new(ArmEvidence::new(candidate)),
        }
    }

    fn arm(&self, arm: Arm) -> &Mutex<ArmEvidence> {
        match arm {
            Arm::Stable => &self.stable,
            Arm::Candidate => &self.candidate,
        }
    }

    fn with_arm<R>(&self, arm: Arm, f: impl FnOnce(&mut ArmEvidence) -> R) -> R {
        // A panic while holding the lock leaves only counters behind, which stay valid, so
        // a poisoned lock is used as it is rather than losing every later measurement.
        let mut guard = self.arm(arm).lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Records one request.
    pub fn record(
        &self,
        arm: Arm,
        outcome: Outcome,
        latency: std::time::Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.with_arm(arm, |e| {
            e.record_request(outcome, micros);
            e.request_bytes += request_bytes;
            e.response_bytes += response_bytes;
        });
    }

    /// Records the comparison of one response pair, counted on the candidate.
    pub fn record_comparison(&self, mismatched: bool) {
        self.with_arm(Arm::Candidate, |e| {
            e.comparisons.compared += 1;
            e.comparisons.mismatched += u64::from(mismatched);
        });
    }

    /// Everything recorded for one build so far.
    pub fn snapshot(&self, arm: Arm) -> ArmEvidence {
        self.with_arm(arm, |e| e.clone())
    }
}

#[async_trait]
impl MetricSource for KpiRecorder {
    fn name(&self) -> &str {
        "kpi-recorder"
    }

    async fn collect(&self, arm: Arm, into: &mut ArmEvidence) -> Result<(), MetricError> {
        let snapshot = self.snapshot(arm);
        into.merge(&snapshot).map_err(|e| MetricError {
            source_name: self.name().to_owned(),
            message: e.to_string(),
        })
    }
}
