//! What a rollout can be told to do, and the samples behind a statement.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What to do with the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Move to the next step of the schedule (or to `Promoted` after the last one).
    StepUp,
    /// Keep the current share and look again at the next interval.
    Hold,
    /// Send all traffic back to stable and stop.
    RollBack,
    /// Stop advancing until an operator resumes.
    Pause,
    /// Leave `Paused` for the phase it was paused in (operators only).
    Resume,
    /// Skip the remaining steps and promote the candidate (operators only).
    Promote,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::StepUp => "step up",
            Action::Hold => "hold",
            Action::RollBack => "roll back",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote => "promote",
        })
    }
}

/// Request counts behind a statistic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleCount {
    /// Requests seen on stable.
    pub stable: u64,
    /// Requests seen on the candidate.
    pub candidate: u64,
}
