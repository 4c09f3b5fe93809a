//! What live traffic measured while the candidate served a share of it.

use serde::{Deserialize, Serialize};

use super::{ArmEvidence, DistributionError, OutcomeCounts};
use crate::model::{Arm, Share};

/// Both builds as live traffic measured them at one canary step: same process, same
/// moment, requests assigned to either by the steerer at one share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryStep {
    /// The candidate's share of live traffic at this step.
    pub share: Share,
    /// Live requests stable served during the step.
    pub stable: ArmEvidence,
    /// Live requests the candidate served during the step.
    pub candidate: ArmEvidence,
    /// Live requests the steerer sent to stable during the step, mirrored ones included
    /// (those are counted, not measured): what the split is checked on.
    #[serde(default)]
    pub stable_assigned: u64,
    /// Live requests the steerer sent to the candidate during the step.
    #[serde(default)]
    pub candidate_assigned: u64,
}

impl CanaryStep {
    /// One build's requests at this step.
    pub fn arm(&self, arm: Arm) -> &ArmEvidence {
        match arm {
            Arm::Stable => &self.stable,
            Arm::Candidate => &self.candidate,
        }
    }

    /// One build's requests at this step, to fill in.
    pub fn arm_mut(&mut self, arm: Arm) -> &mut ArmEvidence {
        match arm {
            Arm::Stable => &mut self.stable,
            Arm::Candidate => &mut self.candidate,
        }
    }
}

/// Live evidence from the canary phase, kept per step and, within each step, per route.
///
/// Kept apart because pooling would compare unlike things: at a 1% step the candidate's
/// requests are a thin slice of the hour, at 50% a thick one, so a change of load or of
/// the mix of routes between steps would read as a difference between the builds. Tests
/// compare the builds within each step and route (a *stratum*) and add the differences
/// up. Live traffic during the shadow phase is not here: the candidate served none of it.
///
/// ```
/// use shadowlib::{Arm, CanaryEvidence, Outcome, Share};
///
/// let mut canary = CanaryEvidence::default();
/// let step = canary.step_mut(0, Share::from_percent(5.0)?);
/// step.arm_mut(Arm::Candidate).record_request(Outcome::Success, 1_200);
/// assert_eq!(canary.requests(Arm::Candidate), 1);
/// # Ok::<(), shadowlib::ShareError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryEvidence {
    /// By canary step (the index in the policy's steps).
    pub steps: Vec<CanaryStep>,
}

impl CanaryEvidence {
    /// Step `index`, made (with `share`) if it is not there yet.
    pub fn step_mut(&mut self, index: usize, share: Share) -> &mut CanaryStep {
        if self.steps.len() <= index {
            self.steps.resize_with(index + 1, CanaryStep::default);
        }
        let step = &mut self.steps[index];
        step.share = share;
        step
    }

    /// Live requests one build served over every step.
    pub fn requests(&self, arm: Arm) -> u64 {
        self.steps.iter().map(|s| s.arm(arm).requests()).sum()
    }

    /// One build's outcomes over every step.
    pub fn total_outcomes(&self, arm: Arm) -> OutcomeCounts {
        let mut total = OutcomeCounts::default();
        for step in &self.steps {
            total.merge(&step.arm(arm).outcomes);
        }
        total
    }

    /// One build's requests over every step, merged: for reports, not for tests (see the
    /// type's docs).
    pub fn total(&self, arm: Arm) -> ArmEvidence {
        let mut total = ArmEvidence::default();
        for step in &self.steps {
            // Every step comes from one recorder's bounds.
            let _ = total.merge(step.arm(arm));
        }
        total
    }

    /// Adds other canary evidence, step by step.
    pub fn merge(&mut self, other: &CanaryEvidence) -> Result<(), DistributionError> {
        for (index, step) in other.steps.iter().enumerate() {
            let into = self.step_mut(index, step.share);
            into.stable.merge(&step.stable)?;
            into.candidate.merge(&step.candidate)?;
            into.stable_assigned += step.stable_assigned;
            into.candidate_assigned += step.candidate_assigned;
        }
        Ok(())
    }
}
