//! The vocabulary every other module speaks: which build, what share, how a request
//! ended, where a rollout is, what is measured. It imports nothing else of this crate, so
//! every module can use it and it can never be part of a cycle.

mod action;
mod kpi;
mod outcome;
mod phase;
mod share;
mod version;

pub use action::{Action, SampleCount};
pub use kpi::{Degradation, Kpi};
pub use outcome::Outcome;
pub use phase::{LivePhase, Phase};
pub use share::{Share, ShareError};
pub use version::{Arm, Version};

/// The route label under which requests of every route past the cap on distinct routes
/// are counted, wherever routes are counted: the KPI recorder, the shadow's comparison
/// counters and the response comparator all cap routes at the same number
/// ([`RecorderConfig::max_routes`](crate::metrics::RecorderConfig::max_routes)) and share
/// this label. Route labels come from request data, so an unbounded set would be an
/// unbounded memory leak.
pub const OTHER_ROUTES: &str = "(other routes)";
