//! The controller: the seed's loop of collect, predict, then step up, hold or roll back.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{Either, select};
use tokio::time::{Instant, MissedTickBehavior};

use super::decision::{Decision, Reason};
use super::handle::RolloutHandle;
use super::state::{RolloutStatus, Shared};
use crate::evidence::Evidence;
use crate::metrics::MetricSource;
use crate::model::{Action, Arm, Phase, SampleCount};
use crate::predict::{Prediction, Predictor};

/// Runs a rollout: every interval it collects the evidence from the metric sources, asks
/// the predictor, and steps up, holds, pauses or rolls back through the traffic steerer.
/// It ends when the rollout is promoted or rolled back, or when nothing holds the rollout
/// any more.
///
/// * No data is not a verdict: below `min_samples` per build it holds, and once
///   `no_data_deadline` has passed without enough samples it pauses with "no data".
/// * A prediction marked inconclusive holds, whatever its numbers.
/// * A conclusive prediction above either threshold rolls back.
/// * Otherwise it steps up, once the current canary step has `min_samples_per_step` new
///   candidate requests.
pub(crate) struct Controller {
    predictor: Box<dyn Predictor>,
    sources: Vec<Arc<dyn MetricSource>>,
    shared: Arc<Shared>,
    /// Shadow only: looks and reports, never moves traffic.
    shadow_only: bool,
    /// When the controller began waiting for enough samples, if it is waiting.
    waiting_since: Option<Instant>,
    /// Whether any look so far had enough samples.
    had_enough: bool,
}

impl Controller {
    pub(crate) fn new(
        predictor: Box<dyn Predictor>,
        sources: Vec<Arc<dyn MetricSource>>,
        shared: Arc<Shared>,
        shadow_only: bool,
    ) -> Self {
        Self {
            predictor,
            sources,
            shared,
            shadow_only,
            waiting_since: None,
            had_enough: false,
        }
    }

    fn handle(&self) -> RolloutHandle {
        RolloutHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Starts the rollout if it is idle, then looks once per interval until it is promoted
    /// or rolled back (by the evidence or by a handle), and returns the final status.
    pub(crate) async fn run(mut self) -> RolloutStatus {
        if self.shared.phase.load() == Phase::Idle {
            // Only an already-started rollout can refuse, and then there is nothing to do.
            let _ = self.handle().start();
        }
        let interval = self.shared.policy.interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while !self.shared.phase.load().is_terminal() {
            let ticked = {
                let next_tick = pin!(ticker.tick());
                let ended = pin!(self.shared.ended.notified());
                matches!(select(next_tick, ended).await, Either::Left(_))
            };
            // Once every `Rollout`, adapter and handle is gone, nobody can see the rollout
            // or serve its traffic: the loop would only look at nothing.
            if Arc::strong_count(&self.shared) == 1 {
                break;
            }
            if ticked {
                self.look().await;
            }
        }
        self.shared.status.borrow().clone()
    }

    /// Takes one look: collects the evidence, decides, and applies the decision. Returns
    /// the decision (a hold when the rollout is not live).
    pub(crate) async fn look(&mut self) -> Decision {
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
        let decision = if self.shadow_only && decision.action != Action::Hold {
            // Comparing without rolling out: say what the evidence would have done.
            Decision::controller(
                Action::Hold,
                Reason::new(format!(
                    "shadow only: the evidence says {}, and this rollout never moves traffic",
                    decision.action
                )),
            )
            .with_reasons(decision.reasons)
        } else {
            decision
        };
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
    use crate::metrics::KpiRecorder;
    use crate::model::{LivePhase, Outcome, Share, Version};
    use crate::predict::ThresholdPredictor;
    use crate::rollout::{Rollout, RolloutDriver, RolloutPolicy};

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

    fn rollout() -> (Rollout, RolloutDriver) {
        Rollout::builder(Version::new("svc", "1"), Version::new("svc", "2"))
            .policy(policy())
            .predictor(ThresholdPredictor::default())
            .without_process_sampling()
            .build_driven()
            .expect("valid policy")
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
        let (rollout, _driver) = rollout();
        let handle = rollout.handle();
        assert_phase(&handle, Phase::Shadowing);
        let check = |moved: Result<super::super::Transition, super::super::TransitionError>,
                     expected: Phase| {
            assert_eq!(moved.expect("a legal move").to, expected);
            assert_phase(&handle, expected);
        };
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
        let (rollout, mut driver) = rollout();
        let handle = rollout.handle();
        let mut events = handle.subscribe();
        feed(rollout.recorder(), Outcome::Success);

        let canary = |step| Phase::Canary { step };
        let mut seen = vec![];
        while !handle.phase().is_terminal() {
            let decision = driver.look().await;
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
        let (rollout, mut driver) = rollout();
        feed(rollout.recorder(), Outcome::ServerError);
        let decision = driver.look().await;
        assert_eq!(decision.action, Action::RollBack, "{decision}");
        assert_phase(&rollout.handle(), Phase::RolledBack);
    }

    #[tokio::test]
    async fn a_shadow_only_rollout_reports_and_never_moves_traffic() {
        let (rollout, mut driver) =
            Rollout::builder(Version::new("svc", "1"), Version::new("svc", "2"))
                .policy(policy())
                .predictor(ThresholdPredictor::default())
                .without_process_sampling()
                .shadow_only()
                .build_driven()
                .expect("valid policy");
        feed(rollout.recorder(), Outcome::ServerError);
        let decision = driver.look().await;
        assert_eq!(decision.action, Action::Hold, "{decision}");
        assert!(
            decision
                .to_string()
                .contains("shadow only: the evidence says roll back")
        );
        assert_phase(&rollout.handle(), Phase::Shadowing);
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_ends_once_nothing_holds_the_rollout() {
        let (rollout, driver) = rollout();
        let running = tokio::spawn(driver.run());
        tokio::time::sleep(policy().interval * 3).await;
        assert!(!running.is_finished(), "looks while the rollout is held");
        drop(rollout);
        tokio::time::sleep(policy().interval * 2).await;
        let status = running.await.expect("the loop ended without a panic");
        assert_eq!(
            status.phase,
            Phase::Shadowing,
            "ended as it was, decided nothing"
        );
    }
}
