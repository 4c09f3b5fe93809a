//! The rollout state machine and the controller that drives it.
//!
//! ```text
//! Idle -> Shadowing -> Canary(1) -> ... -> Canary(n, 100%) -> Promoted
//!            \______________\___________________/
//!                 Paused (resumes where it left) / RolledBack (share 0, terminal)
//! ```
//!
//! [`RolloutMachine`] holds the phases and refuses illegal moves; [`RolloutController`]
//! runs the seed's loop over it every interval; [`RolloutHandle`] gives operators pause,
//! resume, promote and abort, and everyone the status and the event stream.

mod controller;
mod phase;
mod release;

pub use controller::{RolloutController, RolloutEvent, RolloutHandle, RolloutStatus};
pub use phase::{LivePhase, Phase, RolloutMachine, Transition, TransitionError};
pub use release::{Release, ReleaseSwitch, Releases};
