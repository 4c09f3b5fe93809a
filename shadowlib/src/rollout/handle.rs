//! Manual control of a rollout, and a window on it.

use std::sync::Arc;
#[cfg(feature = "persist")]
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::decision::{Decision, Reason};
use super::machine::{Transition, TransitionError};
use super::state::{RolloutEvent, RolloutStatus, Shared};
#[cfg(feature = "persist")]
use crate::model::Share;
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
        self.start_noting(Vec::new())
    }

    /// Starts the rollout, with `notes` after the first reason.
    fn start_noting(&self, notes: Vec<Reason>) -> Result<Transition, TransitionError> {
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
        )
        .with_reasons(notes);
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

    /// Takes the rollout over from what its store held: a new rollout starts; one that
    /// was under way comes back on stable, at share 0, paused, with its earlier events;
    /// one that had ended stays ended; and one whose store could not be read comes back
    /// paused too, since where it was is not known. Never resumes by itself.
    #[cfg(feature = "persist")]
    pub(crate) fn take_over(
        &self,
        found: crate::rollout::store::Found<RolloutEvent>,
        path: &std::path::Path,
    ) -> crate::rollout::store::Recovery {
        use crate::rollout::store::{Found, Recovery};
        let mut recovery = Recovery {
            path: path.to_owned(),
            restarted_from: None,
            restored_events: 0,
            problem: None,
            set_aside: None,
        };
        match found {
            Found::Nothing => {
                // Only an idle rollout can be started, and this one was just made.
                let _ = self.start();
            }
            Found::OtherRollout {
                stable,
                candidate,
                set_aside,
            } => {
                let note = Reason::new(format!(
                    "the store held a rollout of {candidate} against {stable}, other builds: \
                     it was set aside as {}",
                    set_aside.display()
                ));
                let _ = self.start_noting(vec![note]);
                recovery.set_aside = Some(set_aside);
            }
            Found::Unreadable { problem, set_aside } => {
                let why = format!(
                    "restarted with an unreadable rollout store ({problem}), set aside as {}: \
                     where the rollout was is not known, so it comes back on stable, at share \
                     0, paused, for an operator to resume",
                    set_aside.display()
                );
                self.restore(Phase::Idle, Share::ZERO, Vec::new(), 0, Duration::ZERO, why);
                recovery.problem = Some(problem);
                recovery.set_aside = Some(set_aside);
            }
            Found::Rollout(saved, events) => {
                recovery.restarted_from = Some(saved.phase);
                recovery.restored_events = events.len();
                let why = if saved.phase.is_live() {
                    format!(
                        "restarted during {} at share {}: the evidence of the run before is \
                         gone with its process, so the rollout comes back on stable, at share \
                         0, paused; resuming starts again from the shadow",
                        saved.phase, saved.share
                    )
                } else {
                    format!(
                        "restarted after the rollout ended: it stays {}",
                        saved.phase
                    )
                };
                self.restore(
                    saved.phase,
                    saved.share,
                    events,
                    saved.events,
                    saved.elapsed,
                    why,
                );
            }
        }
        recovery
    }

    /// Puts the rollout back where a restart leaves it (paused on stable, or a terminal
    /// phase as it was), with its history, and publishes that as an event.
    #[cfg(feature = "persist")]
    fn restore(
        &self,
        before: Phase,
        share_before: Share,
        events: Vec<RolloutEvent>,
        sequence: u64,
        elapsed: Duration,
        why: String,
    ) {
        let shared = &self.shared;
        let mut state = shared.lock();
        let skip = events.len().saturating_sub(super::state::EVENT_BUFFER);
        state.history = events.into_iter().skip(skip).collect();
        state.events = sequence;
        state.elapsed_before = elapsed;
        state.started = Some(Instant::now());
        let (to, action) = if before.is_terminal() {
            (before, Action::Hold)
        } else {
            (
                Phase::Paused {
                    from: crate::model::LivePhase::Shadowing,
                },
                Action::Pause,
            )
        };
        state.machine.restore(to);
        let transition = Transition {
            from: before,
            to,
            share_before,
            share_after: state.machine.share(),
        };
        let decision = Decision::controller(action, Reason::new(why));
        shared.publish(
            &mut state,
            transition,
            decision,
            None,
            0,
            SampleCount::default(),
        );
    }

    fn operator(&self, action: Action, why: &str) -> Result<Transition, TransitionError> {
        self.operator_by(action, None, why)
    }

    fn operator_by(
        &self,
        action: Action,
        by: Option<&str>,
        why: &str,
    ) -> Result<Transition, TransitionError> {
        let mut decision = Decision::operator(action, Reason::new(format!("operator: {why}")));
        if let Some(by) = by {
            decision = decision.by(by);
        }
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

    /// Carries out an operator's command, recording who gave it in the event's decision
    /// ([`Decision::by`]): what the admin API calls, with the name of the token that
    /// authorised the request.
    ///
    /// ```
    /// use shadowlib::{Command, Rollout, Version};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rollout = Rollout::builder(Version::new("api", "1"), Version::new("api", "2")).build()?;
    /// let handle = rollout.handle();
    /// handle.command(Command::Pause, "ops-alice", "a page")?;
    /// let last = handle.history().pop().expect("the pause");
    /// assert_eq!(last.decision.by.as_deref(), Some("ops-alice"));
    /// assert_eq!(last.decision.to_string(), "pause (by ops-alice): operator: a page");
    /// # Ok(()) }
    /// ```
    pub fn command(
        &self,
        command: Command,
        by: &str,
        why: &str,
    ) -> Result<Transition, TransitionError> {
        self.operator_by(command.action(), Some(by), why)
    }
}

/// An operator's command, as [`RolloutHandle::command`] and the admin API name them.
///
/// ```
/// use shadowlib::Command;
///
/// assert_eq!("abort".parse::<Command>(), Ok(Command::Abort));
/// assert_eq!(Command::Promote.to_string(), "promote");
/// assert!("reboot".parse::<Command>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// [`RolloutHandle::pause`].
    Pause,
    /// [`RolloutHandle::resume`].
    Resume,
    /// [`RolloutHandle::promote_now`].
    Promote,
    /// [`RolloutHandle::abort`].
    Abort,
}

impl Command {
    /// Every command.
    pub const ALL: [Command; 4] = [
        Command::Pause,
        Command::Resume,
        Command::Promote,
        Command::Abort,
    ];

    /// The state machine's action for it.
    pub fn action(self) -> Action {
        match self {
            Command::Pause => Action::Pause,
            Command::Resume => Action::Resume,
            Command::Promote => Action::Promote,
            Command::Abort => Action::RollBack,
        }
    }

    /// Its name: `pause`, `resume`, `promote`, `abort`.
    pub fn name(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Promote => "promote",
            Command::Abort => "abort",
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a command (pause, resume, promote, abort)")]
pub struct UnknownCommand(pub String);

impl std::str::FromStr for Command {
    type Err = UnknownCommand;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Command::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| UnknownCommand(name.to_owned()))
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
