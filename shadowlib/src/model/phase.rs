//! Where a rollout is.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A phase the rollout can be paused in, and resumed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum LivePhase {
    /// The candidate sees only copies of reads.
    Shadowing,
    /// The candidate serves the share of step `step` (0-based) of the schedule.
    Canary {
        /// Index into the policy's steps.
        step: usize,
    },
}

/// Where a rollout is.
///
/// `Idle -> Shadowing -> Canary(0) -> ... -> Canary(last) -> Promoted`, with `Paused` and
/// `RolledBack` reachable from every live phase. `Promoted` and `RolledBack` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// Not started.
    Idle,
    /// The candidate sees only copies of reads; all live traffic goes to stable.
    Shadowing,
    /// The candidate serves the share of step `step` of the schedule.
    Canary {
        /// Index into the policy's steps.
        step: usize,
    },
    /// Not advancing; keeps the share of the phase it was paused in.
    Paused {
        /// The phase to resume to.
        from: LivePhase,
    },
    /// The candidate serves all traffic. Terminal.
    Promoted,
    /// All traffic is back on stable. Terminal.
    RolledBack,
}

impl Phase {
    /// Whether the rollout is under way (shadowing, canary or paused).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Phase::Shadowing | Phase::Canary { .. } | Phase::Paused { .. }
        )
    }

    /// Whether the rollout has ended (promoted or rolled back).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Promoted | Phase::RolledBack)
    }

    /// The canary step the candidate serves live traffic at, paused or not.
    ///
    /// ```
    /// use shadowlib::{LivePhase, Phase};
    ///
    /// assert_eq!(Phase::Canary { step: 2 }.canary_step(), Some(2));
    /// assert_eq!(Phase::Paused { from: LivePhase::Canary { step: 1 } }.canary_step(), Some(1));
    /// assert_eq!(Phase::Shadowing.canary_step(), None);
    /// ```
    pub fn canary_step(self) -> Option<usize> {
        match self {
            Phase::Canary { step }
            | Phase::Paused {
                from: LivePhase::Canary { step },
            } => Some(step),
            _ => None,
        }
    }
}

impl From<LivePhase> for Phase {
    fn from(live: LivePhase) -> Self {
        match live {
            LivePhase::Shadowing => Phase::Shadowing,
            LivePhase::Canary { step } => Phase::Canary { step },
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Idle => f.write_str("idle"),
            Phase::Shadowing => f.write_str("shadowing"),
            Phase::Canary { step } => write!(f, "canary step {}", step + 1),
            Phase::Paused { from } => write!(f, "paused ({})", Phase::from(*from)),
            Phase::Promoted => f.write_str("promoted"),
            Phase::RolledBack => f.write_str("rolled back"),
        }
    }
}
