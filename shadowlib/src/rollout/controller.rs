//! The controller: the seed's loop of collect, predict, then step up, hold or roll back.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{Either, select};
use tokio::time::{Instant, MissedTickBehavior};

use super::decision::{Decision, Reason};
use super::handle::RolloutHandle;
use super::state::{RolloutStatus, Shared};
use crate::analysis::{MismatchTest, SplitCheck, Verdict};
use crate::evidence::{Evidence, ShadowActivity, ShadowCost, Stage};
use crate::model::{Action, Phase};
use crate::predict::{Certainty, Prediction, Predictor};

/// Runs a rollout: every interval it collects the evidence from the metric sources, asks
/// the predictor, tests the responses, and steps up, holds, pauses or rolls back through
/// the traffic steerer. It ends when the rollout is promoted or rolled back, or when
/// nothing holds the rollout any more.
///
/// * No data is not a verdict: while the shadow has fewer than `min_samples` pairs, a
///   canary step fewer than `min_samples_per_step` candidate requests, or the predictor
///   says it needs samples, it holds; once `no_data_deadline` has passed in the phase, it
///   pauses with "no data".
/// * A prediction marked inconclusive, or a mismatch test not yet decided, holds — until
///   `decision_deadline` has passed in the phase; then it pauses with the reason.
/// * A conclusive prediction above either threshold, or a mismatch rate shown above
///   `mismatch.rollback_above`, rolls back.
/// * Otherwise it steps up.
pub(crate) struct Controller {
    predictor: Box<dyn Predictor>,
    shared: Arc<Shared>,
    /// Shadow only: looks and reports, never moves traffic.
    shadow_only: bool,
    /// The phase of the last look, and when the controller first saw it.
    phase: Option<(Phase, Instant)>,
    /// When the controller began holding on evidence that does not decide, in this phase.
    undecided_since: Option<Instant>,
    /// Whether the rollout is paused because the controller waited for samples in vain.
    paused_for_data: bool,
    /// The shadow's cost at the last look: what it shed since is judged against it.
    shadow_cost_before: ShadowCost,
}

/// What a look found: the decision (with the prediction it rests on), or a hold.
type Assessed = Result<(Decision, Option<Prediction>), Box<(Hold, Option<Prediction>)>>;

/// Why the controller holds, which decides the deadline that applies: the reason first,
/// then the evidence it cites.
enum Hold {
    /// Waiting for samples: ends at the no-data deadline.
    Samples(Vec<Reason>),
    /// The evidence does not decide: ends at the decision deadline.
    Undecided(Vec<Reason>),
}

impl Hold {
    /// Adds a reason after the one that leads.
    fn cite(&mut self, reason: Reason) {
        let (Self::Samples(reasons) | Self::Undecided(reasons)) = self;
        reasons.insert(1.min(reasons.len()), reason);
    }
}

/// Why the shadow's evidence grows slowly, when it shed most of what it was handed since
/// the last look: said with every hold, so that a rollout waiting on a starved shadow says
/// so instead of only "not enough samples".
fn starvation(interval: &ShadowCost) -> Reason {
    Reason::new(format!(
        "the shadow is starved of CPU: since the last look it dropped {} copies at its \
         queue's limit and ran {}, {} of them starved past the CPU-wait deadline; it runs \
         only on CPU live leaves idle, and live is using it, so its evidence grows when the \
         load eases or in an off-peak window",
        interval.shed_queue_full, interval.copies_started, interval.starved
    ))
    .metric(
        "shadow_shed_share",
        interval.shed_share().unwrap_or_default(),
        ShadowActivity::STARVED_ABOVE,
    )
}

/// A hold's decision: its first reason leads, the rest follow.
fn holding(mut reasons: Vec<Reason>) -> Decision {
    let rest = reasons.split_off(1.min(reasons.len()));
    let lead = reasons
        .pop()
        .unwrap_or_else(|| Reason::new("holding: no reason given"));
    Decision::controller(Action::Hold, lead).with_reasons(rest)
}

impl Controller {
    pub(crate) fn new(
        predictor: Box<dyn Predictor>,
        shared: Arc<Shared>,
        shadow_only: bool,
    ) -> Self {
        Self {
            predictor,
            shared,
            shadow_only,
            phase: None,
            undecided_since: None,
            paused_for_data: false,
            shadow_cost_before: ShadowCost::default(),
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
        // A new phase (by the evidence or an operator) starts its waits afresh; the first
        // phase's wait counts from the start of the rollout.
        let entered = match self.phase {
            Some((seen, since)) if seen == phase => since,
            Some(_) => now,
            None => started.unwrap_or(now),
        };
        if self.phase.is_none_or(|(seen, _)| seen != phase) {
            self.undecided_since = None;
            // A pause for want of data is the controller's to lift; any other move ends it.
            if !matches!(phase, Phase::Paused { .. }) {
                self.paused_for_data = false;
            }
        }
        self.phase = Some((phase, entered));

        let shared = &self.shared;
        let mut evidence = Evidence::new(shared.stable.clone(), shared.candidate.clone());
        evidence.phase = phase;
        evidence.share = share;
        evidence.look = look;
        evidence.elapsed = started.map(|s| now.duration_since(s)).unwrap_or_default();
        let mut failures = Vec::new();
        for source in &shared.sources {
            if let Err(e) = source.collect(&mut evidence).await {
                failures.push(Reason::new(e.to_string()));
            }
        }
        let samples = evidence.samples();
        let interval = evidence.shadow.cost.since(&self.shadow_cost_before);
        let activity = ShadowActivity::at_look(&evidence.shadow, &interval);
        let starved =
            (activity.starved && evidence.stage() == Stage::Shadow).then(|| starvation(&interval));
        self.shadow_cost_before = evidence.shadow.cost;
        self.shared.status.send_modify(|s| {
            let reason = |activity: &ShadowActivity| activity.share.map(|share| share.reason);
            if let Some(share) = activity
                .share
                .filter(|_| reason(&s.shadow) != reason(&activity))
            {
                tracing::info!(share = %share, "the shadow's mirror share changed");
            }
            s.samples = samples;
            s.shadow = activity;
        });

        let (decision, prediction, waiting) = match self.assess(&evidence, failures) {
            Ok((decision, prediction)) => (decision, prediction, false),
            Err(held) => {
                let (mut hold, prediction) = *held;
                if let Some(reason) = starved {
                    hold.cite(reason);
                }
                let waiting = matches!(hold, Hold::Samples(_));
                (
                    self.hold(hold, phase, now - entered, now),
                    prediction,
                    waiting,
                )
            }
        };
        let paused = matches!(phase, Phase::Paused { .. });
        let decision = if decision.action == Action::Pause && waiting {
            self.paused_for_data = true;
            decision
        } else if paused
            && self.paused_for_data
            && !waiting
            && self.shared.policy.resume_when_data_returns
            && decision.action == Action::Hold
        {
            // The pause was for want of data, and data came back: carry on where it left.
            Decision::controller(
                Action::Resume,
                Reason::new(
                    "data returned: the rollout paused for want of samples has them now, and \
                     resumes where it left",
                )
                .samples(samples),
            )
            .with_reasons(decision.reasons)
        } else {
            decision
        };
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

    /// A hold, or the pause its deadline calls for once it has passed.
    fn hold(&mut self, hold: Hold, phase: Phase, in_phase: Duration, now: Instant) -> Decision {
        let policy = &self.shared.policy;
        let paused = matches!(phase, Phase::Paused { .. });
        match hold {
            Hold::Samples(reasons) if !paused && in_phase >= policy.no_data_deadline => {
                Decision::controller(
                    Action::Pause,
                    Reason::new(format!(
                        "no data, or too few samples for the tests: waited {:.1?} in this \
                         phase, past the no-data deadline of {:?}; no data is not a verdict, \
                         so the rollout pauses for an operator (and resumes by itself when \
                         the samples come, if the policy says so)",
                        in_phase, policy.no_data_deadline
                    )),
                )
                .with_reasons(reasons)
            }
            Hold::Undecided(reasons) => {
                let since = *self.undecided_since.get_or_insert(now);
                let undecided = now - since;
                if !paused && undecided >= policy.decision_deadline {
                    Decision::controller(
                        Action::Pause,
                        Reason::new(format!(
                            "undecided: the evidence has decided nothing for {:.1?}, past \
                             the decision deadline of {:?}; the rollout pauses for an operator \
                             rather than keep its share for ever",
                            undecided, policy.decision_deadline
                        )),
                    )
                    .with_reasons(reasons)
                } else {
                    holding(reasons)
                }
            }
            Hold::Samples(reasons) => holding(reasons),
        }
    }

    /// The decision the evidence calls for, or the hold it calls for (with the prediction,
    /// when one was made).
    fn assess(&mut self, evidence: &Evidence, source_failures: Vec<Reason>) -> Assessed {
        let policy = &self.shared.policy;
        let samples = evidence.samples();
        let phase = evidence.phase;
        if let Some(first) = source_failures.first() {
            let mut reason = Reason::new(format!(
                "a metric source failed, so the evidence is partial: {first}"
            ));
            for more in &source_failures[1..] {
                reason.message.push_str(&format!("; {more}"));
            }
            return Err(Box::new((Hold::Samples(vec![reason]), None)));
        }
        let pairs = evidence.shadow_pairs();
        if evidence.stage() == Stage::Shadow && pairs < policy.min_samples {
            let reason = Reason::new(format!(
                "not enough samples: need {} reads run on both builds in the shadow, have {pairs}",
                policy.min_samples
            ))
            .samples(samples);
            return Err(Box::new((Hold::Samples(vec![reason]), None)));
        }

        let prediction = self.predictor.predict(evidence);
        let name = prediction.predictor.clone();
        let mut cited: Vec<Reason> = prediction.reasons.iter().map(Reason::new).collect();
        let m = &policy.mismatch;
        // The policy is validated, so the levels are in range.
        let mismatch = MismatchTest::run(
            &evidence.shadow.pairs.total.mismatches,
            m.tolerance,
            m.rollback_above,
            m.alpha,
        )
        .ok()
        .flatten();
        let mismatch_reason = mismatch.as_ref().map(|test| {
            let mut reason = Reason::new(test.to_string()).metric(
                "net_mismatch_rate",
                test.worse.estimate.difference,
                if test.verdict == Verdict::Worse {
                    m.rollback_above
                } else {
                    m.tolerance
                },
            );
            let fields = evidence.shadow.pairs.total.top_fields(3);
            if !fields.is_empty() {
                let named: Vec<String> = fields
                    .iter()
                    .map(|(field, d)| format!("{field} ({} reads)", d.candidate_only))
                    .collect();
                reason.message.push_str(&format!(
                    "; fields only the candidate got different from live: {}",
                    named.join(", ")
                ));
            }
            reason
        });
        if let Some(reason) = &mismatch_reason {
            cited.push(reason.clone());
        }
        let probability = prediction.failure_probability;
        let verdict = prediction.verdict();
        let rollback = |reason: Reason| {
            Decision::controller(Action::RollBack, reason.samples(samples))
                .with_reasons(cited.clone())
        };
        if let (Some(test), Some(reason)) = (&mismatch, &mismatch_reason)
            && test.verdict == Verdict::Worse
        {
            let lead = Reason::new(format!(
                "responses: the candidate answers differently from stable beyond noise on \
                 more than {:.3}% of reads; {}",
                m.rollback_above * 100.0,
                reason.message
            ));
            return Ok((rollback(lead), Some(prediction)));
        }
        // A prediction that does not hold together (a probability outside [0, 1], NaN
        // included) says the predictor is broken: nothing it says moves the rollout.
        if !(0.0..=1.0).contains(&probability) {
            let lead = Reason::new(format!(
                "predictor `{name}` reported a failure probability of {probability}, not a \
                 number in [0, 1]: its prediction is not used"
            ));
            let mut reasons = vec![lead.samples(samples)];
            reasons.extend(cited.iter().cloned());
            return Err(Box::new((Hold::Undecided(reasons), Some(prediction))));
        }
        if verdict == Verdict::Worse {
            // The tests that found it, by name; a ruling of the predictor's own otherwise.
            let failing: Vec<&crate::analysis::KpiTest> = prediction
                .tests
                .iter()
                .filter(|t| t.verdict == Verdict::Worse)
                .collect();
            let lead = match failing.first() {
                Some(test) => {
                    let d = test.degradation();
                    Reason::new(format!(
                        "predictor `{name}`: {} ({}) worse than tolerated: {} [{}]",
                        test.metric,
                        test.scope,
                        d,
                        failing
                            .iter()
                            .map(|t| format!("{} ({})", t.metric, t.scope))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .metric(
                        test.metric.to_string(),
                        d.estimate,
                        test.tolerance(),
                    )
                }
                None => Reason::new(format!("predictor `{name}`: worse than tolerated")),
            };
            return Ok((rollback(lead), Some(prediction)));
        }
        if let Phase::Canary { step } = phase
            && let Some(at_step) = evidence.canary.steps.get(step)
            && at_step.share > crate::model::Share::ZERO
            && at_step.share < crate::model::Share::FULL
        {
            let requests = at_step.stable_assigned + at_step.candidate_assigned;
            let split = SplitCheck::of(at_step.share, at_step.candidate_assigned, requests);
            if split.broken {
                let decision = Decision::controller(
                    Action::Pause,
                    Reason::new(format!(
                        "sample ratio mismatch: {split}; the steerer does not split traffic \
                         as it was told, so the canary's comparison cannot be trusted"
                    ))
                    .metric("candidate_share", split.observed, split.expected),
                )
                .with_reasons(cited);
                return Ok((decision, Some(prediction)));
            }
        }
        let hold = |lead: Reason| -> Vec<Reason> {
            let mut reasons = vec![lead.samples(samples)];
            reasons.extend(cited.iter().cloned());
            reasons
        };
        match &prediction.certainty {
            Certainty::NeedsSamples(why) => {
                let lead = Reason::new(format!("predictor `{name}` needs samples: {why}"));
                return Err(Box::new((Hold::Samples(hold(lead)), Some(prediction))));
            }
            Certainty::Inconclusive(why) => {
                let lead = Reason::new(format!("predictor `{name}`: {why}"));
                return Err(Box::new((Hold::Undecided(hold(lead)), Some(prediction))));
            }
            _ => {}
        }
        if verdict != Verdict::NotWorse {
            let open: Vec<String> = prediction
                .tests
                .iter()
                .filter(|t| t.required && t.verdict != Verdict::NotWorse)
                .map(|t| format!("{} ({})", t.metric, t.scope))
                .collect();
            let lead = Reason::new(if open.is_empty() {
                format!("predictor `{name}`: not yet known")
            } else {
                format!("predictor `{name}`: not yet known: {}", open.join(", "))
            });
            return Err(Box::new((Hold::Undecided(hold(lead)), Some(prediction))));
        }
        match &mismatch {
            None => {
                let lead = Reason::new("responses: none compared yet in the shadow");
                return Err(Box::new((Hold::Samples(hold(lead)), Some(prediction))));
            }
            Some(test) if test.verdict != Verdict::NotWorse => {
                let lead = Reason::new("responses: the mismatch test has not decided yet");
                let hold = if test.held_because.is_some() {
                    Hold::Samples(hold(lead))
                } else {
                    Hold::Undecided(hold(lead))
                };
                return Err(Box::new((hold, Some(prediction))));
            }
            Some(_) => {}
        }
        if matches!(phase, Phase::Paused { .. }) {
            let decision = Decision::controller(
                Action::Hold,
                Reason::new("paused: every required test is not worse than tolerated"),
            )
            .with_reasons(cited);
            return Ok((decision, Some(prediction)));
        }
        if let Phase::Canary { step } = phase {
            let at_step = evidence
                .canary
                .steps
                .get(step)
                .map_or(0, |s| s.candidate.requests());
            if at_step < policy.min_samples_per_step {
                let lead = Reason::new(format!(
                    "not worse than tolerated; {at_step} of {} candidate requests needed at \
                     this step",
                    policy.min_samples_per_step
                ));
                return Err(Box::new((Hold::Samples(hold(lead)), Some(prediction))));
            }
        }
        let decision = Decision::controller(
            Action::StepUp,
            Reason::new(format!(
                "predictor `{name}`: every required test not worse than tolerated \
                 (failure probability {probability:.4})"
            ))
            .samples(samples),
        )
        .with_reasons(cited);
        Ok((decision, Some(prediction)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Differed, ReadComparison, ResourceUsage, Run};
    use crate::model::{Arm, LivePhase, Outcome, Share, Version};
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

    /// A rule, not a statistic: worse once the candidate alone failed a read in the shadow,
    /// not worse otherwise — what these tests need to steer the controller look by look.
    struct NoFailures;

    impl Predictor for NoFailures {
        fn name(&self) -> &str {
            "no-failures"
        }

        fn predict(&self, evidence: &Evidence) -> Prediction {
            let failed = evidence.shadow.pairs.total.outcomes.candidate_only > 0;
            let verdict = if failed {
                Verdict::Worse
            } else {
                Verdict::NotWorse
            };
            Prediction::ruling(self.name(), verdict, evidence)
        }
    }

    fn rollout() -> (Rollout, RolloutDriver) {
        Rollout::builder(Version::new("svc", "1"), Version::new("svc", "2"))
            .policy(policy())
            .predictor(NoFailures)
            .without_process_sampling()
            .build_driven()
            .expect("valid policy")
    }

    /// 5,000 shadow pairs (enough for the mismatch test to pass identical responses) and
    /// 200 live requests of each build, recorded under the phase the rollout is in.
    fn feed(rollout: &Rollout, candidate_outcome: Outcome) {
        feed_with(rollout, candidate_outcome, &ReadComparison::default());
    }

    fn feed_with(rollout: &Rollout, candidate_outcome: Outcome, compared: &ReadComparison) {
        let latency = Duration::from_millis(5);
        let run = |outcome| Run {
            outcome,
            latency: Some(latency),
            usage: ResourceUsage::default(),
            response_bytes: 0,
        };
        // Enough compared reads for the mismatch test to pass a zero rate (about 5,300).
        for _ in 0..6_000 {
            let (twin, candidate) = (run(Outcome::Success), run(candidate_outcome));
            rollout
                .pairs()
                .record_pair("GET /", 0, &twin, &candidate, Some(compared));
        }
        // 200 of the candidate's live requests and stable's in the ratio of the share in
        // force, as a steerer doing its job splits them.
        let share = rollout.status().share.fraction();
        let stable = if share > 0.0 && share < 1.0 {
            (200.0 * (1.0 - share) / share).round() as usize
        } else {
            200
        };
        let recorder = rollout.recorder();
        for _ in 0..200 {
            recorder.record(Arm::Candidate, candidate_outcome, latency, 0, 0);
        }
        for _ in 0..stable {
            recorder.record(Arm::Stable, Outcome::Success, latency, 0, 0);
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

        let canary = |step| Phase::Canary { step };
        let mut seen = vec![];
        while !handle.phase().is_terminal() {
            feed(&rollout, Outcome::Success);
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
        feed(&rollout, Outcome::ServerError);
        let decision = driver.look().await;
        assert_eq!(decision.action, Action::RollBack, "{decision}");
        assert_phase(&rollout.handle(), Phase::RolledBack);
    }

    #[tokio::test]
    async fn a_shadow_only_rollout_reports_and_never_moves_traffic() {
        let (rollout, mut driver) =
            Rollout::builder(Version::new("svc", "1"), Version::new("svc", "2"))
                .policy(policy())
                .predictor(NoFailures)
                .without_process_sampling()
                .shadow_only()
                .build_driven()
                .expect("valid policy");
        feed(&rollout, Outcome::ServerError);
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

    /// Never decides: every look is "not yet known".
    struct Undecided;

    impl Predictor for Undecided {
        fn name(&self) -> &str {
            "undecided"
        }

        fn predict(&self, evidence: &Evidence) -> Prediction {
            Prediction::inconclusive(self.name(), "a test that never ends", evidence)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_on_undecided_evidence_pauses_at_the_decision_deadline() {
        let policy = RolloutPolicy {
            decision_deadline: Duration::from_secs(60),
            ..policy()
        };
        let (rollout, mut driver) =
            Rollout::builder(Version::new("s", "1"), Version::new("s", "2"))
                .policy(policy.clone())
                .predictor(Undecided)
                .without_process_sampling()
                .build_driven()
                .expect("valid policy");
        feed(&rollout, Outcome::Success);
        let mut waited = Duration::ZERO;
        loop {
            let decision = driver.look().await;
            if decision.action == Action::Pause {
                let text = decision.to_string();
                assert!(text.contains("decision deadline"), "{text}");
                assert!(text.contains("a test that never ends"), "{text}");
                break;
            }
            assert_eq!(decision.action, Action::Hold, "{decision}");
            assert!(waited <= policy.decision_deadline, "held past the deadline");
            tokio::time::advance(policy.interval).await;
            waited += policy.interval;
        }
        assert!(waited >= policy.decision_deadline);
        assert_phase(
            &rollout.handle(),
            Phase::Paused {
                from: LivePhase::Shadowing,
            },
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_starved_shadow_says_so_in_the_hold_the_status_and_the_events() {
        use crate::shadow::{ShareInForce, ShareReason};

        let (rollout, mut driver) = rollout();
        let share = ShareInForce {
            share: Share::from_percent(5.0).expect("valid"),
            ceiling: Share::FULL,
            reason: ShareReason::LiveCpu,
            off_peak: false,
        };
        let mut cost = ShadowCost {
            cpu_ns: 1_000_000,
            copies_started: 40,
            ..ShadowCost::default()
        };
        rollout.pairs().set_resources(cost, share);
        let first = driver.look().await;
        assert!(!first.to_string().contains("starved"), "{first}");
        assert!(!rollout.status().shadow.starved, "40 of 40 copies ran");

        // Between two looks: 10 copies run, 990 dropped at the queue's limit.
        cost.copies_started += 10;
        cost.shed_queue_full += 990;
        rollout.pairs().set_resources(cost, share);
        tokio::time::advance(policy().interval).await;
        let held = driver.look().await;
        assert_eq!(held.action, Action::Hold, "{held}");
        let text = held.to_string();
        assert!(
            text.contains("not enough samples"),
            "the lead stays: {text}"
        );
        assert!(text.contains("starved of CPU"), "{text}");
        assert!(text.contains("dropped 990 copies"), "{text}");
        let status = rollout.status();
        assert!(status.shadow.starved);
        assert_eq!(status.shadow.cost, cost);
        assert_eq!(status.shadow.share, Some(share));

        // An event made now carries what the shadow was doing.
        let handle = rollout.handle();
        handle.pause("look at the shadow").expect("pausable");
        let event = handle.history().pop().expect("an event");
        assert_eq!(event.shadow, status.shadow);
        let json = serde_json::to_string(&event).expect("serializes");
        assert!(json.contains("\"live_cpu\""), "{json}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_for_samples_pauses_at_the_no_data_deadline() {
        let policy = RolloutPolicy {
            no_data_deadline: Duration::from_secs(60),
            ..policy()
        };
        let (rollout, mut driver) =
            Rollout::builder(Version::new("s", "1"), Version::new("s", "2"))
                .policy(policy.clone())
                .without_process_sampling()
                .build_driven()
                .expect("valid policy");
        let mut decision = driver.look().await;
        while decision.action == Action::Hold {
            tokio::time::advance(policy.interval).await;
            decision = driver.look().await;
        }
        assert_eq!(decision.action, Action::Pause, "{decision}");
        assert!(decision.to_string().contains("no data"), "{decision}");
        assert_phase(
            &rollout.handle(),
            Phase::Paused {
                from: LivePhase::Shadowing,
            },
        );
    }

    #[tokio::test]
    async fn wrong_responses_roll_back_whatever_the_predictor_says_and_name_the_field() {
        let (rollout, mut driver) = rollout();
        // Every read: a timestamp that differs on both builds (noise), and a price only
        // the candidate gets wrong.
        let compared = ReadComparison {
            fields: vec![
                ("/at".into(), Differed::Both),
                ("/price".into(), Differed::CandidateOnly),
            ],
        };
        feed_with(&rollout, Outcome::Success, &compared);
        let decision = driver.look().await;
        assert_eq!(decision.action, Action::RollBack, "{decision}");
        let text = decision.to_string();
        assert!(text.contains("/price"), "{text}");
        assert!(
            !text.contains("/at ("),
            "noise is not named as a mismatch: {text}"
        );
    }

    #[tokio::test]
    async fn noise_on_both_builds_does_not_hold_promotion_back() {
        let (rollout, mut driver) = rollout();
        let compared = ReadComparison {
            fields: vec![("/at".into(), Differed::Both)],
        };
        feed_with(&rollout, Outcome::Success, &compared);
        let decision = driver.look().await;
        assert_eq!(decision.action, Action::StepUp, "{decision}");
    }
}
