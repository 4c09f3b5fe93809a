//! The phases of a rollout and the legal moves between them.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{Action, LivePhase, Phase, Share};

/// A [`Phase`] readable without a lock: one atomic word, on cache lines of its own so that
/// the readers (every live request) share them with no writer but the rare transition.
///
/// The word holds a tag in its low [`AtomicPhase::TAG_BITS`] bits and the canary step above
/// them, which encodes every phase a rollout can be in without loss.
#[derive(Debug)]
pub(crate) struct AtomicPhase(CachePadded<AtomicU64>);

impl AtomicPhase {
    const TAG_BITS: u32 = 3;
    const TAG_MASK: u64 = (1 << Self::TAG_BITS) - 1;
    const IDLE: u64 = 0;
    const SHADOWING: u64 = 1;
    const CANARY: u64 = 2;
    const PAUSED_SHADOWING: u64 = 3;
    const PAUSED_CANARY: u64 = 4;
    const PROMOTED: u64 = 5;
    const ROLLED_BACK: u64 = 6;

    pub(crate) fn new(phase: Phase) -> Self {
        Self(CachePadded::new(AtomicU64::new(Self::encode(phase))))
    }

    /// The phase last stored. Pairs with [`AtomicPhase::store`], so a reader that sees a
    /// phase also sees everything its writer did before storing it.
    #[inline]
    pub(crate) fn load(&self) -> Phase {
        Self::decode(self.0.load(Ordering::Acquire))
    }

    pub(crate) fn store(&self, phase: Phase) {
        self.0.store(Self::encode(phase), Ordering::Release);
    }

    fn encode(phase: Phase) -> u64 {
        // A canary step indexes the policy's `Vec<Share>`, so it is below
        // `isize::MAX / size_of::<Share>()`: under 2^61 with 4-byte shares (checked below),
        // which leaves the tag's 3 bits free above it.
        const _: () = assert!(
            std::mem::size_of::<Share>() >= 4 && usize::BITS <= 64,
            "a canary step must fit in the bits above the tag"
        );
        let with_step = |tag: u64, step: usize| ((step as u64) << Self::TAG_BITS) | tag;
        match phase {
            Phase::Idle => Self::IDLE,
            Phase::Shadowing => Self::SHADOWING,
            Phase::Canary { step } => with_step(Self::CANARY, step),
            Phase::Paused {
                from: LivePhase::Shadowing,
            } => Self::PAUSED_SHADOWING,
            Phase::Paused {
                from: LivePhase::Canary { step },
            } => with_step(Self::PAUSED_CANARY, step),
            Phase::Promoted => Self::PROMOTED,
            Phase::RolledBack => Self::ROLLED_BACK,
        }
    }

    #[inline]
    fn decode(word: u64) -> Phase {
        // Below 2^61 (see `encode`), so it fits a `usize` on every target `encode` ran on.
        let step = (word >> Self::TAG_BITS) as usize;
        match word & Self::TAG_MASK {
            Self::IDLE => Phase::Idle,
            Self::SHADOWING => Phase::Shadowing,
            Self::CANARY => Phase::Canary { step },
            Self::PAUSED_SHADOWING => Phase::Paused {
                from: LivePhase::Shadowing,
            },
            Self::PAUSED_CANARY => Phase::Paused {
                from: LivePhase::Canary { step },
            },
            Self::PROMOTED => Phase::Promoted,
            Self::ROLLED_BACK => Phase::RolledBack,
            tag => unreachable!("tag {tag}: only `encode` writes the word, and never this tag"),
        }
    }
}

/// A move the state machine refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot {action} while {phase}")]
pub struct TransitionError {
    /// What was asked.
    pub action: Action,
    /// The phase it was asked in.
    pub phase: Phase,
}

/// A change of phase and of share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Phase before.
    pub from: Phase,
    /// Phase after.
    pub to: Phase,
    /// Candidate share before.
    pub share_before: Share,
    /// Candidate share after.
    pub share_after: Share,
}

/// The rollout state machine on its own: phases, steps and shares, no I/O and no clock.
///
/// The controller drives it from the evidence and the handle drives it from operators; both
/// go through [`RolloutMachine::apply`], which refuses illegal moves.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RolloutMachine {
    phase: Phase,
    steps: Vec<Share>,
}

impl RolloutMachine {
    /// A machine in `Idle` over these canary steps (validated by
    /// [`RolloutPolicy::validate`](crate::RolloutPolicy::validate); an empty list is read as
    /// one step of 100%).
    pub(crate) fn new(steps: Vec<Share>) -> Self {
        let steps = if steps.is_empty() {
            vec![Share::FULL]
        } else {
            steps
        };
        Self {
            phase: Phase::Idle,
            steps,
        }
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// The candidate's share of live traffic in the current phase.
    pub(crate) fn share(&self) -> Share {
        self.share_of(self.phase)
    }

    fn share_of(&self, phase: Phase) -> Share {
        match phase {
            Phase::Idle | Phase::Shadowing | Phase::RolledBack => Share::ZERO,
            Phase::Canary { step } => self.steps.get(step).copied().unwrap_or(Share::FULL),
            Phase::Paused { from } => self.share_of(from.into()),
            Phase::Promoted => Share::FULL,
        }
    }

    /// Puts the machine in `phase` as it is, legal move or not: for a rollout taken over
    /// from its store, whose phase was decided before the restart.
    #[cfg(feature = "persist")]
    pub(crate) fn restore(&mut self, phase: Phase) {
        self.phase = phase;
    }

    /// Starts the rollout: `Idle -> Shadowing`.
    pub(crate) fn start(&mut self) -> Result<Transition, TransitionError> {
        match self.phase {
            Phase::Idle => Ok(self.move_to(Phase::Shadowing)),
            phase => Err(TransitionError {
                action: Action::StepUp,
                phase,
            }),
        }
    }

    /// Applies an action. `Ok(None)` means the action is legal but changes nothing (hold).
    pub(crate) fn apply(&mut self, action: Action) -> Result<Option<Transition>, TransitionError> {
        let refuse = || TransitionError {
            action,
            phase: self.phase,
        };
        let next = match (action, self.phase) {
            (Action::Hold, _) => return Ok(None),
            (Action::StepUp, Phase::Shadowing) => Phase::Canary { step: 0 },
            (Action::StepUp, Phase::Canary { step }) if step + 1 < self.steps.len() => {
                Phase::Canary { step: step + 1 }
            }
            (Action::StepUp, Phase::Canary { .. }) => Phase::Promoted,
            (Action::Pause, Phase::Shadowing) => Phase::Paused {
                from: LivePhase::Shadowing,
            },
            (Action::Pause, Phase::Canary { step }) => Phase::Paused {
                from: LivePhase::Canary { step },
            },
            (Action::Resume, Phase::Paused { from }) => from.into(),
            (Action::RollBack, phase) if phase.is_live() => Phase::RolledBack,
            (Action::Promote, phase) if phase.is_live() => Phase::Promoted,
            _ => return Err(refuse()),
        };
        Ok(Some(self.move_to(next)))
    }

    fn move_to(&mut self, to: Phase) -> Transition {
        let transition = Transition {
            from: self.phase,
            to,
            share_before: self.share(),
            share_after: self.share_of(to),
        };
        self.phase = to;
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> RolloutMachine {
        let steps = [1.0, 10.0, 100.0].map(|p| Share::from_percent(p).expect("valid"));
        RolloutMachine::new(steps.to_vec())
    }

    fn started() -> RolloutMachine {
        let mut m = machine();
        m.start().expect("starts from idle");
        m
    }

    #[test]
    fn full_path_to_promoted() {
        let mut m = started();
        assert_eq!(m.phase(), Phase::Shadowing);
        assert_eq!(m.share(), Share::ZERO);
        let mut shares = Vec::new();
        while !m.phase().is_terminal() {
            m.apply(Action::StepUp).expect("legal step");
            shares.push(m.share().percent());
        }
        assert_eq!(shares, vec![1.0, 10.0, 100.0, 100.0]);
        assert_eq!(m.phase(), Phase::Promoted);
    }

    #[test]
    fn rollback_from_every_live_phase_sets_share_zero() {
        let live = [
            Phase::Shadowing,
            Phase::Canary { step: 0 },
            Phase::Canary { step: 2 },
            Phase::Paused {
                from: LivePhase::Shadowing,
            },
            Phase::Paused {
                from: LivePhase::Canary { step: 1 },
            },
        ];
        for phase in live {
            let mut m = machine();
            m.phase = phase;
            let t = m
                .apply(Action::RollBack)
                .expect("rollback is legal from live phases")
                .expect("a change of phase");
            assert_eq!(t.to, Phase::RolledBack);
            assert_eq!(t.share_after, Share::ZERO);
            assert_eq!(m.share(), Share::ZERO);
        }
    }

    #[test]
    fn rolled_back_refuses_everything_that_would_send_traffic() {
        let mut m = started();
        m.apply(Action::RollBack).expect("legal");
        for action in [
            Action::StepUp,
            Action::Promote,
            Action::Resume,
            Action::Pause,
            Action::RollBack,
        ] {
            assert_eq!(
                m.apply(action),
                Err(TransitionError {
                    action,
                    phase: Phase::RolledBack
                })
            );
            assert_eq!(m.share(), Share::ZERO);
        }
        assert!(m.start().is_err());
    }

    #[test]
    fn promoted_is_terminal() {
        let mut m = started();
        m.apply(Action::Promote).expect("legal");
        for action in [
            Action::StepUp,
            Action::RollBack,
            Action::Pause,
            Action::Resume,
            Action::Promote,
        ] {
            assert!(m.apply(action).is_err(), "{action} after promotion");
        }
        assert_eq!(m.phase(), Phase::Promoted);
        assert_eq!(m.share(), Share::FULL);
    }

    #[test]
    fn paused_keeps_share_and_resumes_to_the_phase_it_left() {
        let mut m = started();
        m.apply(Action::StepUp).expect("legal");
        m.apply(Action::StepUp).expect("legal");
        let before = m.share();
        m.apply(Action::Pause).expect("legal");
        assert_eq!(
            m.phase(),
            Phase::Paused {
                from: LivePhase::Canary { step: 1 }
            }
        );
        assert_eq!(m.share(), before);
        assert!(
            m.apply(Action::StepUp).is_err(),
            "paused rollouts do not advance"
        );
        assert!(m.apply(Action::Pause).is_err(), "already paused");
        m.apply(Action::Resume).expect("legal");
        assert_eq!(m.phase(), Phase::Canary { step: 1 });
    }

    #[test]
    fn idle_accepts_only_start() {
        let mut m = machine();
        for action in [
            Action::StepUp,
            Action::RollBack,
            Action::Pause,
            Action::Resume,
            Action::Promote,
        ] {
            assert!(m.apply(action).is_err());
        }
        assert_eq!(m.apply(Action::Hold), Ok(None));
        assert!(m.start().is_ok());
        assert!(m.start().is_err(), "starts once");
    }

    #[test]
    fn atomic_phase_holds_every_phase_without_loss() {
        let largest_step = usize::MAX >> AtomicPhase::TAG_BITS;
        let mut phases = vec![
            Phase::Idle,
            Phase::Shadowing,
            Phase::Paused {
                from: LivePhase::Shadowing,
            },
            Phase::Promoted,
            Phase::RolledBack,
        ];
        for step in [0, 1, 2, 7, 8, 1_000_000, largest_step] {
            phases.push(Phase::Canary { step });
            phases.push(Phase::Paused {
                from: LivePhase::Canary { step },
            });
        }
        let atomic = AtomicPhase::new(Phase::Idle);
        for phase in phases {
            atomic.store(phase);
            assert_eq!(atomic.load(), phase);
            assert_eq!(AtomicPhase::new(phase).load(), phase);
        }
    }

    #[test]
    fn resume_without_pause_is_refused() {
        let mut m = started();
        assert!(m.apply(Action::Resume).is_err());
    }
}
