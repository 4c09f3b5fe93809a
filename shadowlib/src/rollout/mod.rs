//! The rollout: built once with [`Rollout::builder`], then driven by its loop and steered
//! by operators.
//!
//! ```text
//! Idle -> Shadowing -> Canary(1) -> ... -> Canary(n, 100%) -> Promoted
//!            \______________\___________________/
//!                 Paused (resumes where it left) / RolledBack (share 0, terminal)
//! ```
//!
//! A state machine holds the phases and refuses illegal moves; the loop
//! ([`RolloutDriver`]) runs the seed's loop over it every interval — collect, predict,
//! then step up, hold or roll back, every [`Decision`] with its reasons; the
//! [`RolloutHandle`] gives operators pause, resume, promote and abort, and everyone the
//! status and the event stream.

pub mod admin;
mod builder;
mod controller;
mod decision;
mod handle;
mod machine;
mod plan;
mod policy;
mod release;
mod state;
#[cfg(feature = "persist")]
pub mod store;

pub use builder::{BuildError, Rollout, RolloutBuilder, RolloutDriver};
pub use decision::{Decision, DecisionSource, Reason};
pub use handle::{Command, RolloutHandle, UnknownCommand};
pub use machine::{Transition, TransitionError};
pub use plan::{ASSUMED_PAIR_SPREAD, PlanItem, RolloutPlan};
pub use policy::{ConfigError, MismatchPolicy, RolloutPolicy};
pub use release::{Release, ReleaseSwitch, Releases};
pub use state::{RolloutEvent, RolloutStatus};
