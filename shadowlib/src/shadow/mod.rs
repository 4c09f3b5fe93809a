//! The shadow: where copies of live reads run on the candidate, beside the live path and
//! never in its way.
//!
//! Each rollout has one shadow executor: a thread of its own (`shadowlib-shadow`, with a
//! one-thread tokio runtime), started when the first adapter attaches. Copies reach it
//! through a bounded lock-free queue the live path pushes to without waiting; when the
//! queue is full the copy is dropped and counted. At most
//! [`ShadowBudget::concurrency`] copies run at once, each under
//! [`ShadowBudget::timeout`], with panics caught. A build that blocks its thread stalls
//! only the shadow, never a thread live requests run on.
//!
//! The shadow is an in-process spot instance: its thread runs in the lowest scheduling
//! class the OS offers ([`SchedulingClass`]: `SCHED_IDLE` on Linux), so it gets only CPU
//! that live does not want, and a copy that waited for CPU too long is shed. A governor
//! thread, at the process's own class, looks at live once per interval and sets what the
//! shadow may use until the next look ([`ShadowResources`]): concurrency and queue sized
//! like live, the share of reads mirrored (off-peak windows, an adaptive share that gives
//! way as soon as live needs the room) and a cap on the shadow's CPU per hour.
//!
//! [`ShadowConfig`] sets what is copied and compared and what the shadow may spend;
//! [`ShadowCounts`] says what happened to every read the shadow could have seen, what is
//! in force and why, and what the shadow cost; [`in_shadow`] tells application code it is
//! running as the shadow.

mod budget;
mod config;
mod cpu_sampling;
mod cpu_wait;
mod governor;
mod queue;
mod resources;
mod runtime;
mod slots;
mod state;
mod stats;
pub(crate) mod target;
mod thread;
mod worker;

pub use budget::{BudgetError, ShadowBudget};
pub use config::{DEFAULT_BODY_LIMIT, ShadowConfig};
pub use resources::{
    AdaptiveShare, OffPeakWindow, ResourcesError, ShadowResources, TimeOfDay, TimeOfDayError,
};
pub use stats::ShadowCounts;
pub use thread::SchedulingClass;

pub use crate::evidence::{ShadowActivity, ShadowCost, ShareInForce, ShareReason};

pub(crate) use runtime::{Placement, Recorders, ShadowRuntime};
pub(crate) use slots::{CopySlot, LiveProgress};
pub(crate) use state::{StateLink, StatePosition, StateSpan};
pub(crate) use stats::ShadowStats;
pub(crate) use worker::{Worker, is_bodiless};

use crate::model::Phase;

tokio::task_local! {
    static IN_SHADOW: ();
}

/// Whether the current task is running a shadow copy.
///
/// Application code (and guards around side effects) can refuse to write while it is
/// true: the shadow must never change data the live build owns. Only the task that runs
/// the copy is marked; work it spawns onto other tasks is not.
///
/// ```
/// assert!(!shadowlib::shadow::in_shadow());
/// ```
pub fn in_shadow() -> bool {
    IN_SHADOW.try_with(|_| ()).is_ok()
}

/// What the shadow needs to know of the rollout it serves, and tell it: the shadow depends
/// on this small trait, not on the controller.
pub(crate) trait RolloutLink: Send + Sync + 'static {
    /// The rollout's phase now: one atomic load.
    fn phase(&self) -> Phase;

    /// The candidate cannot run (its app failed to start): the rollout must end.
    fn candidate_cannot_start(&self, why: &str);
}
