//! Manual control of a rollout, and a window on it.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::decision::{Decision, Reason};
use super::machine::{Transition, TransitionError};
use super::state::{RolloutEvent, RolloutStatus, Shared};
use crate::model::{Action, Phase, SampleCount};

/// Manual control of a rollout, and a window on it. Cheap to clone; every clone controls
/// the same rollout.
///
/// ```
/// use shadowlib::{Phase, Rollout, Version};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rollout = Rollout::builder(Version::new("api", "1"), Version::new("api", "2")).build()?;
/// let handle = rollout.handle();
/// let mut events = handle.subscribe();
/// handle.pause("investigating a page")?;
/// handle.resume("false alarm")?;
/// handle.abort("customer report")?;
/// assert_eq!(handle.status().phase, Phase::RolledBack);
/// assert_eq!(events.try_recv()?.transition.to, Phase::Paused { from: shadowlib::LivePhase::Shadowing });
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RolloutHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for RolloutHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutHandle")
            .field("stable", &self.shared.stable)
            .field("candidate", &self.shared.candidate)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

impl RolloutHandle {
    /// The current status.
    pub fn status(&self) -> RolloutStatus {
        self.shared.status.borrow().clone()
    }

    /// The current phase: the same as `status().phase`, read without a lock or a copy, for
    /// code that asks on every request.
    ///
    /// It changes with the status, under the same lock, so once a transition has returned
    /// both say the same; between two transitions it is one atomic load, with no write to
    /// memory other readers share.
    ///
    /// ```
    /// use shadowlib::{LivePhase, Phase, Rollout, Version};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rollout = Rollout::builder(Version::new("api", "1"), Version::new("api", "2")).build()?;
    /// let handle = rollout.handle();
    /// if handle.phase().is_live() {
    ///     // mirror reads, steer by share, …
    /// }
    /// handle.pause("load test")?;
    /// assert_eq!(handle.phase(), Phase::Paused { from: LivePhase::Shadowing });
    /// assert_eq!(handle.phase(), handle.status().phase);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn phase(&self) -> Phase {
        self.shared.phase.load()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<RolloutStatus> {
        self.shared.status.subscribe()
    }

    /// A receiver of every transition from now on. A subscriber that falls more than 1,024
    /// events behind misses the oldest (and is told so by the receiver).
    pub fn subscribe(&self) -> broadcast::Receiver<RolloutEvent> {
        self.shared.events.subscribe()
    }

    /// Every transition so far, the start included, oldest first (the last 1,024).
    ///
    /// ```
    /// use shadowlib::{Phase, Rollout, Version};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rollout = Rollout::builder(Version::new("api", "1"), Version::new("api", "2")).build()?;
    /// let history = rollout.handle().history();
    /// assert_eq!(history[0].transition.to, Phase::Shadowing);
    /// assert!(history[0].decision.to_string().contains("started"));
    /// # Ok(()) }
    /// ```
    pub fn history(&self) -> Vec<RolloutEvent> {
        self.shared.lock().history.iter().cloned().collect()
    }

    /// Starts the rollout (`Idle -> Shadowing`); the builder does this itself.
    pub(crate) fn start(&self) -> Result<Transition, TransitionError> {
        let shared = &self.shared;
        let mut state = shared.lock();
        let transition = state.machine.start()?;
        state.started = Some(Instant::now());
        let decision = Decision::operator(
            Action::StepUp,
            Reason::new(format!(
                "rollout of {} against {} started: shadowing reads",
                shared.candidate, shared.stable
            )),
        );
        shared.publish(
            &mut state,
            transition,
            decision,
            None,
            0,
            SampleCount::default(),
        );
        Ok(transition)
    }

    fn operator(&self, action: Action, why: &str) -> Result<Transition, TransitionError> {
        let decision = Decision::operator(action, Reason::new(format!("operator: {why}")));
        let samples = self.status().samples;
        self.shared
            .apply(decision, None, 0, samples)?
            .ok_or(TransitionError {
                action,
                phase: self.phase(),
            })
    }

    /// Stops advancing; the share stays where it is. The controller still rolls back if
    /// the evidence turns bad while paused.
    pub fn pause(&self, why: &str) -> Result<Transition, TransitionError> {
        self.operator(Action::Pause, why)
    }

    /// Resumes to the phase the rollout was paused in.
    pub fn resume(&self, why: &str) -> Result<Transition, TransitionError> {
        self.operator(Action::Resume, why)
    }

    /// Moves to the next step now, without waiting for the evidence: from the shadow to
    /// the first canary step, from a canary step to the next (from the last, to promoted).
    /// The controller goes on judging from there, and still rolls back if the evidence
    /// turns bad.
    ///
    /// ```
    /// use shadowlib::{Phase, Rollout, Version};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rollout = Rollout::builder(Version::new("api", "1"), Version::new("api", "2")).build()?;
    /// let handle = rollout.handle();
    /// handle.step_up("the shadow was run by hand last week")?;
    /// assert_eq!(handle.phase(), Phase::Canary { step: 0 });
    /// # Ok(()) }
    /// ```
    pub fn step_up(&self, why: &str) -> Result<Transition, TransitionError> {
        self.operator(Action::StepUp, why)
    }

    /// Promotes the candidate now, skipping the remaining steps.
    pub fn promote_now(&self, why: &str) -> Result<Transition, TransitionError> {
        self.operator(Action::Promote, why)
    }

    /// Rolls back now: share 0, stable release active.
    pub fn abort(&self, why: &str) -> Result<Transition, TransitionError> {
        self.operator(Action::RollBack, why)
    }
}

impl crate::shadow::RolloutLink for RolloutHandle {
    fn phase(&self) -> Phase {
        RolloutHandle::phase(self)
    }

    fn candidate_cannot_start(&self, why: &str) {
        // Every worker and shadow thread finds the same failure: the first one rolls back.
        if self.phase() == Phase::RolledBack {
            return;
        }
        if let Err(refused) = self.abort(why) {
            tracing::warn!(%refused, "the rollout could not be rolled back");
        }
    }
}
