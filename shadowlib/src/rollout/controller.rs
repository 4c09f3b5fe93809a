//! The controller: the seed's loop of collect, predict, then step up, hold or roll back.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::phase::{AtomicPhase, Phase, RolloutMachine, Transition, TransitionError};
use super::release::ReleaseSwitch;
use crate::{
    Action, Arm, ConfigError, Decision, Evidence, MetricSource, Prediction, Predictor, Reason,
    RolloutPolicy, SampleCount, Share, TrafficSteerer, Version,
};

/// How many events a subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 1024;

/// A change of phase, with the decision that caused it and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    /// 1 for the first event of the rollout, then 2, 3, …
    pub sequence: u64,
    /// Time since the rollout started.
    #[serde(with = "humantime_serde")]
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
}

/// Where the rollout is, readable at any time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

struct State {
    machine: RolloutMachine,
    started: Option<Instant>,
    looks: u64,
    events: u64,
    /// Candidate requests seen at the last look, and when the current step began.
    candidate_requests: u64,
    step_baseline: u64,
}

/// What the controller and its handles share.
struct Shared {
    policy: RolloutPolicy,
    stable: Version,
    candidate: Version,
    state: Mutex<State>,
    steerer: Arc<dyn TrafficSteerer>,
    release_switch: Option<Arc<dyn ReleaseSwitch>>,
    events: broadcast::Sender<RolloutEvent>,
    status: watch::Sender<RolloutStatus>,
    /// `status.phase`, readable without the watch channel's lock: stored with the status,
    /// under its write lock, so the two never disagree once a transition has returned.
    phase: AtomicPhase,
    /// Wakes the controller when an operator ends the rollout between looks.
    ended: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of `State` is a few assignments that cannot panic half-way, so the
        // state behind a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a decision: moves the machine, and for a change of phase sets the share,
    /// switches the release and publishes the event, all under one lock so that every
    /// observer sees the changes in the same order.
    fn apply(
        &self,
        decision: Decision,
        prediction: Option<Prediction>,
        look: u64,
        samples: SampleCount,
    ) -> Result<Option<Transition>, TransitionError> {
        let mut state = self.lock();
        let transition = state.machine.apply(decision.action)?;
        if let Some(transition) = transition {
            self.publish(
                &mut state,
                transition,
                decision.clone(),
                prediction.clone(),
                look,
                samples,
            );
        }
        self.status.send_modify(|status| {
            status.last_decision = Some(decision);
            if prediction.is_some() {
                status.last_prediction = prediction;
            }
        });
        Ok(transition)
    }

    fn publish(
        &self,
        state: &mut State,
        transition: Transition,
        decision: Decision,
        prediction: Option<Prediction>,
        look: u64,
        samples: SampleCount,
    ) {
        // Traffic first: from the next request on, new requests follow the new share.
        self.steerer.set_share(transition.share_after);
        if let Some(switch) = &self.release_switch {
            match transition.to {
                Phase::RolledBack => switch.activate(Arm::Stable),
                Phase::Promoted => switch.activate(Arm::Candidate),
                _ => {}
            }
        }
        if matches!(transition.to, Phase::Canary { .. }) && transition.from != transition.to {
            state.step_baseline = state.candidate_requests;
        }
        state.events += 1;
        let elapsed = state.started.map(|s| s.elapsed()).unwrap_or_default();
        tracing::info!(
            from = %transition.from, to = %transition.to, share = %transition.share_after,
            decision = %decision, "rollout transition"
        );
        self.status.send_modify(|status| {
            status.phase = transition.to;
            status.share = transition.share_after;
            self.phase.store(transition.to);
        });
        if transition.to.is_terminal() {
            self.ended.notify_one();
        }
        // No subscriber is fine: the status still says where the rollout is.
        let _ = self.events.send(RolloutEvent {
            sequence: state.events,
            elapsed,
            look,
            transition,
            decision,
            prediction,
            samples,
        });
    }
}

/// Manual control of a rollout, and a window on it. Cheap to clone; every clone controls
/// the same rollout.
///
/// ```
/// # use std::sync::Arc;
/// # use shadowlib::*;
/// # let controller = RolloutController::new(
/// #     Version::new("api", "1"), Version::new("api", "2"), RolloutPolicy::default(),
/// #     ThresholdPredictor::default(), Arc::new(WeightedSteerer::new()),
/// # ).unwrap();
/// let handle = controller.handle();
/// let mut events = handle.subscribe();
/// handle.start().unwrap();
/// handle.pause("investigating a page").unwrap();
/// handle.resume("false alarm").unwrap();
/// handle.abort("customer report").unwrap();
/// assert_eq!(handle.status().phase, Phase::RolledBack);
/// assert_eq!(events.try_recv().unwrap().transition.to, Phase::Shadowing);
/// ```
#[derive(Clone)]
pub struct RolloutHandle {
    shared: Arc<Shared>,
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
    /// # use std::sync::Arc;
    /// # use shadowlib::*;
    /// # let controller = RolloutController::new(
    /// #     Version::new("api", "1"), Version::new("api", "2"), RolloutPolicy::default(),
    /// #     ThresholdPredictor::default(), Arc::new(WeightedSteerer::new()),
    /// # ).unwrap();
    /// let handle = controller.handle();
    /// assert_eq!(handle.phase(), Phase::Idle);
    /// handle.start().unwrap();
    /// if handle.phase().is_live() {
    ///     // mirror reads, steer by share, …
    /// }
    /// handle.pause("load test").unwrap();
    /// assert_eq!(handle.phase(), Phase::Paused { from: LivePhase::Shadowing });
    /// assert_eq!(handle.phase(), handle.status().phase);
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

    /// Starts the rollout (`Idle -> Shadowing`). [`RolloutController::run`] does this itself.
    pub fn start(&self) -> Result<Transition, TransitionError> {
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

    /// Promotes the candidate now, skipping the remaining steps.
    pub fn promote_now(&self, why: &str) -> Result<Transition, TransitionError> {
        self.operator(Action::Promote, why)
    }

    /// Rolls back now: share 0, stable release active.
    pub fn abort(&self, why: &str) -> Result<Transition, TransitionError> {
        self.operator(Action::RollBack, why)
    }
}

/// Runs a rollout: every interval it collects the evidence from the metric sources, asks
/// the predictor, and steps up, holds, pauses or rolls back through the traffic steerer.
///
/// * No data is not a verdict: below `min_samples` per build it holds, and once
///   `no_data_deadline` has passed without enough samples it pauses with "no data".
/// * A prediction marked inconclusive holds, whatever its numbers.
/// * A conclusive prediction above either threshold rolls back.
/// * Otherwise it steps up, once the current canary step has `min_samples_per_step` new
///   candidate requests.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use shadowlib::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (stable, candidate) = (Version::new("api", "1"), Version::new("api", "2"));
/// let recorder = Arc::new(KpiRecorder::new(stable.clone(), candidate.clone()));
/// let steerer = Arc::new(WeightedSteerer::new());
/// let policy = RolloutPolicy { interval: Duration::from_millis(10), min_samples: 10, ..Default::default() };
/// let controller = RolloutController::new(stable, candidate, policy, ThresholdPredictor::default(), steerer)?
///     .with_metric_source(recorder.clone());
///
/// // The candidate fails every request it serves.
/// for _ in 0..100 {
///     recorder.record(Arm::Stable, Outcome::Success, Duration::from_millis(1), 0, 0);
///     recorder.record(Arm::Candidate, Outcome::ServerError, Duration::from_millis(1), 0, 0);
/// }
/// let status = controller.run().await;
/// assert_eq!(status.phase, Phase::RolledBack);
/// # Ok(()) }
/// ```
pub struct RolloutController<P, T> {
    predictor: P,
    steerer: Arc<T>,
    sources: Vec<Arc<dyn MetricSource>>,
    shared: Arc<Shared>,
    /// When the controller began waiting for enough samples, if it is waiting.
    waiting_since: Option<Instant>,
    /// Whether any look so far had enough samples.
    had_enough: bool,
}

impl<P, T> RolloutController<P, T>
where
    P: Predictor,
    T: TrafficSteerer + 'static,
{
    /// A controller in `Idle` for this pair of builds; the policy is validated here.
    pub fn new(
        stable: Version,
        candidate: Version,
        policy: RolloutPolicy,
        predictor: P,
        steerer: Arc<T>,
    ) -> Result<Self, ConfigError> {
        policy.validate()?;
        steerer.set_share(Share::ZERO);
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
        };
        let shared = Arc::new(Shared {
            policy,
            stable,
            candidate,
            state: Mutex::new(State {
                machine,
                started: None,
                looks: 0,
                events: 0,
                candidate_requests: 0,
                step_baseline: 0,
            }),
            steerer: Arc::clone(&steerer) as Arc<dyn TrafficSteerer>,
            release_switch: None,
            events: broadcast::channel(EVENT_BUFFER).0,
            phase: AtomicPhase::new(status.phase),
            status: watch::channel(status).0,
            ended: Notify::new(),
        });
        Ok(Self {
            predictor,
            steerer,
            sources: Vec::new(),
            shared,
            waiting_since: None,
            had_enough: false,
        })
    }

    /// Adds a source of KPIs; the evidence of each look merges what every source adds.
    pub fn with_metric_source(mut self, source: Arc<dyn MetricSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// Switches the active (version, configuration) pair when the rollout ends.
    ///
    /// Must be called before the first handle is taken.
    pub fn with_release_switch(mut self, switch: Arc<dyn ReleaseSwitch>) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.release_switch = Some(switch),
            None => tracing::error!("with_release_switch called after a handle was taken; ignored"),
        }
        self
    }

    /// A handle for manual control and status.
    pub fn handle(&self) -> RolloutHandle {
        RolloutHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The traffic steerer the controller drives.
    pub fn steerer(&self) -> &Arc<T> {
        &self.steerer
    }

    /// The policy in force.
    pub fn policy(&self) -> &RolloutPolicy {
        &self.shared.policy
    }

    /// Starts the rollout if it is idle, then looks once per interval until it is promoted
    /// or rolled back (by the evidence or by a handle), and returns the final status.
    pub async fn run(mut self) -> RolloutStatus {
        let handle = self.handle();
        if handle.phase() == Phase::Idle {
            // Only an already-started rollout can refuse, and then there is nothing to do.
            let _ = handle.start();
        }
        let interval = self.shared.policy.interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while !handle.phase().is_terminal() {
            tokio::select! {
                _ = ticker.tick() => {
                    self.look().await;
                }
                _ = self.shared.ended.notified() => {}
            }
        }
        handle.status()
    }

    /// Takes one look: collects the evidence, decides, and applies the decision. Returns
    /// the decision (a hold when the rollout is not live).
    pub async fn look(&mut self) -> Decision {
        let now = Instant::now();
        let (phase, share, look, started) = {
            let mut state = self.shared.lock();
            state.looks += 1;
            (
                state.machine.phase(),
                state.machine.share(),
                state.looks,
                state.started,
            )
        };
        self.shared.status.send_modify(|s| s.looks = look);
        if !phase.is_live() {
            return Decision::controller(Action::Hold, Reason::new(format!("rollout is {phase}")));
        }

        let mut evidence = Evidence::new(self.shared.stable.clone(), self.shared.candidate.clone());
        evidence.phase = phase;
        evidence.share = share;
        evidence.look = look;
        evidence.elapsed = started.map(|s| now.duration_since(s)).unwrap_or_default();
        let mut failures = Vec::new();
        for source in &self.sources {
            for arm in [Arm::Stable, Arm::Candidate] {
                if let Err(e) = source.collect(arm, evidence.arm_mut(arm)).await {
                    failures.push(Reason::new(e.to_string()));
                }
            }
        }
        let samples = SampleCount {
            stable: evidence.stable.requests(),
            candidate: evidence.candidate.requests(),
        };
        let step_samples = {
            let mut state = self.shared.lock();
            state.candidate_requests = samples.candidate;
            samples.candidate.saturating_sub(state.step_baseline)
        };
        self.shared.status.send_modify(|s| s.samples = samples);

        // Until the first time there is enough data, the wait counts from the start.
        let wait_start = if self.had_enough {
            now
        } else {
            started.unwrap_or(now)
        };
        let waiting_since = *self.waiting_since.get_or_insert(wait_start);
        let (decision, prediction) = self.assess(
            &evidence,
            phase,
            samples,
            step_samples,
            failures,
            now - waiting_since,
        );
        match self
            .shared
            .apply(decision.clone(), prediction, look, samples)
        {
            Ok(_) => decision,
            // An operator changed the phase between our read and now; their move stands.
            Err(refused) => Decision::controller(Action::Hold, Reason::new(refused.to_string())),
        }
    }

    fn assess(
        &mut self,
        evidence: &Evidence,
        phase: Phase,
        samples: SampleCount,
        step_samples: u64,
        source_failures: Vec<Reason>,
        waited: Duration,
    ) -> (Decision, Option<Prediction>) {
        let policy = &self.shared.policy;
        let min = policy.min_samples;
        if evidence.samples_per_arm() < min || !source_failures.is_empty() {
            let shortage = Reason::new(format!(
                "not enough samples: need {min} per build, have stable {}, candidate {}",
                samples.stable, samples.candidate
            ))
            .samples(samples);
            let paused = matches!(phase, Phase::Paused { .. });
            let decision = if !paused && waited >= policy.no_data_deadline {
                Decision::controller(
                    Action::Pause,
                    Reason::new(format!(
                        "no data: waited {waited:?}, past the no-data deadline of {:?}; \
                         no data is not a verdict, so the rollout pauses for an operator",
                        policy.no_data_deadline
                    ))
                    .samples(samples),
                )
            } else {
                Decision::controller(Action::Hold, shortage)
            };
            return (decision.with_reasons(source_failures), None);
        }
        self.waiting_since = None;
        self.had_enough = true;

        let prediction = self.predictor.predict(evidence);
        let thresholds = &policy.thresholds;
        let cited: Vec<Reason> = prediction.reasons.iter().map(Reason::new).collect();
        let probability = prediction.failure_probability;
        let degradation = prediction.performance_degradation.estimate;
        let decision = if !prediction.is_conclusive() {
            Decision::controller(
                Action::Hold,
                Reason::new(format!(
                    "predictor `{}`: not yet known",
                    prediction.predictor
                ))
                .samples(samples),
            )
        } else if probability.is_nan() || degradation.is_nan() {
            // A predictor bug is not evidence against the candidate, nor for it.
            Decision::controller(
                Action::Hold,
                Reason::new(format!(
                    "predictor `{}` returned a value that is not a number; ignored",
                    prediction.predictor
                )),
            )
        } else if probability > thresholds.max_failure_probability {
            Decision::controller(
                Action::RollBack,
                Reason::new(format!(
                    "predictor `{}`: failure probability too high",
                    prediction.predictor
                ))
                .metric(
                    "failure_probability",
                    probability,
                    thresholds.max_failure_probability,
                )
                .samples(samples),
            )
        } else if degradation > thresholds.max_degradation {
            Decision::controller(
                Action::RollBack,
                Reason::new(format!(
                    "predictor `{}`: performance degradation {} too high",
                    prediction.predictor, prediction.performance_degradation
                ))
                .metric(
                    "performance_degradation",
                    degradation,
                    thresholds.max_degradation,
                )
                .samples(samples),
            )
        } else if matches!(phase, Phase::Paused { .. }) {
            Decision::controller(
                Action::Hold,
                Reason::new("paused: the evidence is within the thresholds"),
            )
        } else if matches!(phase, Phase::Canary { .. })
            && step_samples < policy.min_samples_per_step
        {
            Decision::controller(
                Action::Hold,
                Reason::new(format!(
                    "within thresholds; {step_samples} of {} candidate requests needed at this step",
                    policy.min_samples_per_step
                ))
                .samples(samples),
            )
        } else {
            Decision::controller(
                Action::StepUp,
                Reason::new(format!(
                    "predictor `{}`: within thresholds",
                    prediction.predictor
                ))
                .metric(
                    "failure_probability",
                    probability,
                    thresholds.max_failure_probability,
                )
                .samples(samples),
            )
        };
        (decision.with_reasons(cited), Some(prediction))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KpiRecorder, LivePhase, Outcome, ThresholdPredictor, WeightedSteerer};

    fn versions() -> (Version, Version) {
        (Version::new("svc", "1"), Version::new("svc", "2"))
    }

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            steps: [1.0, 10.0, 100.0]
                .map(|p| Share::from_percent(p).expect("valid"))
                .to_vec(),
            min_samples: 50,
            min_samples_per_step: 0,
            ..RolloutPolicy::default()
        }
    }

    fn controller(
        recorder: &Arc<KpiRecorder>,
    ) -> RolloutController<ThresholdPredictor, WeightedSteerer> {
        let (stable, candidate) = versions();
        RolloutController::new(
            stable,
            candidate,
            policy(),
            ThresholdPredictor::default(),
            Arc::new(WeightedSteerer::new()),
        )
        .expect("valid policy")
        .with_metric_source(Arc::clone(recorder) as Arc<dyn MetricSource>)
    }

    fn feed(recorder: &KpiRecorder, candidate_outcome: Outcome) {
        for _ in 0..200 {
            let latency = Duration::from_millis(5);
            recorder.record(Arm::Stable, Outcome::Success, latency, 0, 0);
            recorder.record(Arm::Candidate, candidate_outcome, latency, 0, 0);
        }
    }

    /// The lock-free phase and the status agree, and are `expected`.
    #[track_caller]
    fn assert_phase(handle: &RolloutHandle, expected: Phase) {
        assert_eq!(handle.status().phase, expected, "status");
        assert_eq!(handle.phase(), expected, "phase()");
    }

    #[test]
    fn operator_transitions_move_phase_and_status_together() {
        let recorder = Arc::new(KpiRecorder::new(versions().0, versions().1));
        let handle = controller(&recorder).handle();
        assert_phase(&handle, Phase::Idle);
        let check = |moved: Result<Transition, TransitionError>, expected: Phase| {
            assert_eq!(moved.expect("a legal move").to, expected);
            assert_phase(&handle, expected);
        };
        check(handle.start(), Phase::Shadowing);
        let from = LivePhase::Shadowing;
        check(handle.pause("test"), Phase::Paused { from });
        check(handle.resume("test"), Phase::Shadowing);
        check(handle.promote_now("test"), Phase::Promoted);
        // A refused move changes neither.
        handle.abort("too late").expect_err("promoted is terminal");
        assert_phase(&handle, Phase::Promoted);
    }

    #[tokio::test]
    async fn controller_transitions_move_phase_and_status_together() {
        let recorder = Arc::new(KpiRecorder::new(versions().0, versions().1));
        let mut controller = controller(&recorder);
        let handle = controller.handle();
        let mut events = handle.subscribe();
        handle.start().expect("starts from idle");
        feed(&recorder, Outcome::Success);

        let canary = |step| Phase::Canary { step };
        let mut seen = vec![handle.phase()];
        while !handle.phase().is_terminal() {
            let decision = controller.look().await;
            assert_eq!(decision.action, Action::StepUp, "{decision}");
            assert_eq!(handle.phase(), handle.status().phase);
            seen.push(handle.phase());
            if handle.phase() == canary(1) {
                // An operator's pause in the middle of the canary carries its step.
                let paused = handle.pause("test").expect("legal in canary");
                let from = LivePhase::Canary { step: 1 };
                assert_phase(&handle, Phase::Paused { from });
                handle.resume("test").expect("legal when paused");
                assert_phase(&handle, canary(1));
                seen.extend([paused.to, canary(1)]);
            }
        }
        let paused = Phase::Paused {
            from: LivePhase::Canary { step: 1 },
        };
        assert_eq!(
            seen,
            [
                Phase::Shadowing,
                canary(0),
                canary(1),
                paused,
                canary(1),
                canary(2),
                Phase::Promoted
            ]
        );
        // Each event's phase was the one published with it.
        for expected in &seen {
            let event = events.try_recv().expect("one event per transition");
            assert_eq!(event.transition.to, *expected);
        }
    }

    #[tokio::test]
    async fn a_rollback_by_the_evidence_shows_in_phase() {
        let recorder = Arc::new(KpiRecorder::new(versions().0, versions().1));
        let mut controller = controller(&recorder);
        let handle = controller.handle();
        handle.start().expect("starts from idle");
        feed(&recorder, Outcome::ServerError);
        let decision = controller.look().await;
        assert_eq!(decision.action, Action::RollBack, "{decision}");
        assert_phase(&handle, Phase::RolledBack);
    }
}
