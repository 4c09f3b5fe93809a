//! What the controller and every handle share: the machine, the status, the events, and
//! the one place a decision is applied.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;

use super::decision::Decision;
use super::machine::{AtomicPhase, RolloutMachine, Transition, TransitionError};
use super::policy::RolloutPolicy;
use super::release::ReleaseSwitch;
use crate::evidence::ShadowActivity;
use crate::metrics::MetricSource;
use crate::model::{Arm, Phase, SampleCount, Share, Version};
use crate::predict::Prediction;
use crate::steer::TrafficSteerer;

/// How many events a subscriber may fall behind before it misses some.
pub(crate) const EVENT_BUFFER: usize = 1024;

/// A change of phase, with the decision that caused it and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutEvent {
    /// 1 for the first event of the rollout, then 2, 3, …
    pub sequence: u64,
    /// Time since the rollout started.
    #[serde(with = "crate::duration")]
    pub elapsed: Duration,
    /// The look that produced it (0 for operator commands between looks and the start).
    pub look: u64,
    /// The change of phase and share.
    pub transition: Transition,
    /// The decision, with its reasons.
    pub decision: Decision,
    /// The prediction the decision was based on, when there was one.
    pub prediction: Option<Prediction>,
    /// The requests seen on each build when it was made.
    pub samples: SampleCount,
    /// What the shadow was mirroring and had cost, as of the last look.
    #[serde(default)]
    pub shadow: ShadowActivity,
}

/// Where the rollout is, readable at any time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutStatus {
    /// The stable build.
    pub stable: Version,
    /// The candidate build.
    pub candidate: Version,
    /// The current phase.
    pub phase: Phase,
    /// The candidate's share of live traffic.
    pub share: Share,
    /// Looks taken so far.
    pub looks: u64,
    /// The last decision, holds included.
    pub last_decision: Option<Decision>,
    /// The last prediction.
    pub last_prediction: Option<Prediction>,
    /// The requests seen on each build at the last look.
    pub samples: SampleCount,
    /// What the shadow mirrors and why, what it has cost, and whether live leaves it CPU
    /// enough, as of the last look.
    #[serde(default)]
    pub shadow: ShadowActivity,
}

pub(crate) struct State {
    pub(crate) machine: RolloutMachine,
    pub(crate) started: Option<Instant>,
    /// Time the rollout had run before this process took it over from its store: event
    /// times count on from there.
    pub(crate) elapsed_before: Duration,
    pub(crate) looks: u64,
    pub(crate) events: u64,
    /// The events so far, the oldest dropped past [`EVENT_BUFFER`]: what a subscriber
    /// that came late missed.
    pub(crate) history: VecDeque<RolloutEvent>,
}

/// What the controller and its handles share.
pub(crate) struct Shared {
    pub(crate) policy: RolloutPolicy,
    pub(crate) stable: Version,
    pub(crate) candidate: Version,
    pub(crate) state: Mutex<State>,
    pub(crate) steerer: Arc<dyn TrafficSteerer>,
    pub(crate) release_switch: Option<Arc<dyn ReleaseSwitch>>,
    /// Every metric source: the controller collects from them, and each is told of every
    /// change of phase.
    pub(crate) sources: Vec<Arc<dyn MetricSource>>,
    pub(crate) events: broadcast::Sender<RolloutEvent>,
    pub(crate) status: watch::Sender<RolloutStatus>,
    /// `status.phase`, readable without the watch channel's lock: stored with the status,
    /// under its write lock, so the two never disagree once a transition has returned.
    pub(crate) phase: AtomicPhase,
    /// Wakes the controller when an operator ends the rollout between looks.
    pub(crate) ended: Notify,
    /// Where each event and the state after it are kept across restarts.
    #[cfg(feature = "persist")]
    pub(crate) store: Option<crate::rollout::store::Store>,
}

impl Shared {
    /// A rollout in `Idle` for this pair of builds.
    pub(crate) fn new(
        stable: Version,
        candidate: Version,
        policy: RolloutPolicy,
        steerer: Arc<dyn TrafficSteerer>,
        release_switch: Option<Arc<dyn ReleaseSwitch>>,
        sources: Vec<Arc<dyn MetricSource>>,
    ) -> Self {
        // The share is set with the start's transition, like every other.
        let machine = RolloutMachine::new(policy.steps.clone());
        let status = RolloutStatus {
            stable: stable.clone(),
            candidate: candidate.clone(),
            phase: machine.phase(),
            share: Share::ZERO,
            looks: 0,
            last_decision: None,
            last_prediction: None,
            samples: SampleCount::default(),
            shadow: ShadowActivity::default(),
        };
        Self {
            policy,
            stable,
            candidate,
            state: Mutex::new(State {
                machine,
                started: None,
                elapsed_before: Duration::ZERO,
                looks: 0,
                events: 0,
                history: VecDeque::new(),
            }),
            steerer,
            release_switch,
            sources,
            events: broadcast::channel(EVENT_BUFFER).0,
            phase: AtomicPhase::new(status.phase),
            status: watch::channel(status).0,
            ended: Notify::new(),
            #[cfg(feature = "persist")]
            store: None,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of `State` is a few assignments that cannot panic half-way, so the
        // state behind a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a decision: moves the machine, and for a change of phase sets the share,
    /// switches the release and publishes the event, all under one lock so that every
    /// observer sees the changes in the same order.
    pub(crate) fn apply(
        &self,
        decision: Decision,
        prediction: Option<Prediction>,
        look: u64,
        samples: SampleCount,
    ) -> Result<Option<Transition>, TransitionError> {
        let mut state = self.lock();
        let transition = state.machine.apply(decision.action)?;
        match transition {
            Some(transition) => {
                self.publish(&mut state, transition, decision, prediction, look, samples)
            }
            None => self.status.send_modify(|status| {
                status.last_decision = Some(decision);
                if prediction.is_some() {
                    status.last_prediction = prediction;
                }
            }),
        }
        Ok(transition)
    }

    pub(crate) fn publish(
        &self,
        state: &mut State,
        transition: Transition,
        decision: Decision,
        prediction: Option<Prediction>,
        look: u64,
        samples: SampleCount,
    ) {
        // The sources first, so that requests at the new share are recorded as such; then
        // traffic: from the next request on, new requests follow the new share.
        for source in &self.sources {
            source.phase_changed(transition.to, transition.share_after);
        }
        self.steerer.set_share(transition.share_after);
        if let Some(switch) = &self.release_switch {
            match transition.to {
                Phase::RolledBack => switch.activate(Arm::Stable),
                Phase::Promoted => switch.activate(Arm::Candidate),
                _ => {}
            }
        }
        state.events += 1;
        let elapsed = state.elapsed_before + state.started.map(|s| s.elapsed()).unwrap_or_default();
        tracing::info!(
            from = %transition.from, to = %transition.to, share = %transition.share_after,
            decision = %decision, "rollout transition"
        );
        // The status first, whole: whoever reads it on seeing the event sees the event's
        // phase, decision and prediction.
        self.status.send_modify(|status| {
            status.phase = transition.to;
            status.share = transition.share_after;
            status.last_decision = Some(decision.clone());
            if prediction.is_some() {
                status.last_prediction = prediction.clone();
            }
            self.phase.store(transition.to);
        });
        if transition.to.is_terminal() {
            self.ended.notify_one();
        }
        let event = RolloutEvent {
            sequence: state.events,
            elapsed,
            look,
            transition,
            decision,
            prediction,
            samples,
            shadow: self.status.borrow().shadow,
        };
        if state.history.len() == EVENT_BUFFER {
            state.history.pop_front();
        }
        // Kept before anyone hears of it: a restart from here on knows of it.
        #[cfg(feature = "persist")]
        if let Some(store) = &self.store {
            let saved = crate::rollout::store::SavedRollout::new(
                &self.stable,
                &self.candidate,
                transition.to,
                transition.share_after,
                state.events,
                elapsed,
            );
            store.record(&saved, event.sequence, &event);
        }
        state.history.push_back(event.clone());
        // No subscriber is fine: the status and the history still say what happened.
        let _ = self.events.send(event);
    }
}
