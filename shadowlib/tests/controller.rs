//! The rollout controller under deterministic time, and its invariants under random input.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use shadowlib::metrics::KpiRecorder;
use shadowlib::*;
use shadowlib::{MismatchPolicy, ShadowEvidence};

const INTERVAL: Duration = Duration::from_secs(10);

fn versions() -> (Version, Version) {
    (Version::new("svc", "1"), Version::new("svc", "2"))
}

fn policy() -> RolloutPolicy {
    RolloutPolicy {
        interval: INTERVAL,
        steps: [1.0, 10.0, 50.0, 100.0]
            .map(|p| Share::from_percent(p).expect("valid"))
            .to_vec(),
        min_samples: 100,
        min_samples_per_step: 0,
        no_data_deadline: INTERVAL * 5,
        // A tolerance the few thousand reads these tests feed can show (a zero rate passes
        // after ln(1 / alpha) / tolerance = 530 reads; the threshold predictor's p99 needs
        // a few thousand).
        mismatch: MismatchPolicy {
            tolerance: 0.01,
            rollback_above: 0.01,
            ..MismatchPolicy::default()
        },
        ..RolloutPolicy::default()
    }
}

/// A rollout of `versions()` under `policy`, judged by the threshold predictor.
fn builder(policy: RolloutPolicy) -> RolloutBuilder {
    let (stable, candidate) = versions();
    Rollout::builder(stable, candidate)
        .policy(policy)
        .predictor(ThresholdPredictor::default())
        .without_process_sampling()
}

/// The test's own traffic, fed directly, as a metric source like any other: the shadow's
/// pairs, and live requests recorded by a recorder that follows the rollout's phase.
struct Traffic {
    shadow: Mutex<ShadowEvidence>,
    live: KpiRecorder,
    /// The candidate's share of live traffic now, which the live requests fed follow.
    share: Mutex<Share>,
}

fn recorder() -> Arc<Traffic> {
    let (stable, candidate) = versions();
    Arc::new(Traffic {
        shadow: Mutex::new(ShadowEvidence::default()),
        live: KpiRecorder::new(stable, candidate),
        share: Mutex::new(Share::ZERO),
    })
}

#[async_trait]
impl MetricSource for Traffic {
    fn name(&self) -> &str {
        "test-traffic"
    }

    async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError> {
        let shadow = self.shadow.lock().expect("not poisoned").clone();
        into.shadow.merge(&shadow).expect("one bounds");
        self.live.collect(into).await
    }

    fn phase_changed(&self, phase: Phase, share: Share) {
        *self.share.lock().expect("not poisoned") = share;
        self.live.phase_changed(phase, share);
    }
}

/// Counts how often it is asked, and reports nothing.
#[derive(Default)]
struct CountingSource {
    collects: AtomicU64,
}

#[async_trait]
impl MetricSource for CountingSource {
    fn name(&self) -> &str {
        "counting"
    }

    async fn collect(&self, _into: &mut Evidence) -> Result<(), MetricError> {
        self.collects.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// `n` reads run on both builds in the shadow, their responses the same, and `n` live
/// requests of the candidate with as many of stable's as the share in force implies (`n`
/// outside a partial share), so that the split is the one the steerer was told: stable
/// succeeds in 10 ms, the candidate as told.
fn feed(traffic: &Traffic, n: usize, candidate_outcome: Outcome, candidate_latency_ms: u64) {
    let stable_latency = Duration::from_millis(10);
    let candidate_latency = Duration::from_millis(candidate_latency_ms);
    {
        let mut shadow = traffic.shadow.lock().expect("not poisoned");
        for _ in 0..n {
            shadow.twin.record_request(Outcome::Success, 10_000);
            shadow
                .candidate
                .record_request(candidate_outcome, candidate_latency_ms * 1_000);
            let pairs = &mut shadow.pairs.total;
            pairs.outcomes.record(false, candidate_outcome.is_failure());
            pairs.latency.add((candidate_latency_ms as f64 / 10.0).ln());
            pairs.mismatches.record(false, false);
        }
    }
    let share = traffic.share.lock().expect("not poisoned").fraction();
    let stable_requests = if share > 0.0 && share < 1.0 {
        (n as f64 * (1.0 - share) / share).round() as usize
    } else {
        n
    };
    let live = &traffic.live;
    for _ in 0..n {
        live.record(Arm::Candidate, candidate_outcome, candidate_latency, 0, 0);
    }
    for _ in 0..stable_requests {
        live.record(Arm::Stable, Outcome::Success, stable_latency, 0, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn looks_exactly_once_per_interval() {
    let source = Arc::new(CountingSource::default());
    let rollout = builder(RolloutPolicy {
        no_data_deadline: INTERVAL * 1_000,
        ..policy()
    })
    .metric_source(source.clone())
    .build()
    .expect("valid policy");
    let handle = rollout.handle();

    tokio::time::sleep(INTERVAL / 2).await;
    assert_eq!(
        handle.status().looks,
        0,
        "no look before the first interval has passed"
    );
    tokio::time::sleep(INTERVAL * 10).await;
    assert_eq!(handle.status().looks, 10);
    assert_eq!(
        source.collects.load(Ordering::SeqCst),
        10,
        "one collect per look"
    );
}

#[tokio::test(start_paused = true)]
async fn no_data_holds_then_pauses_at_the_deadline() {
    let rollout = builder(policy()).build().expect("valid policy");
    let handle = rollout.handle();

    tokio::time::sleep(INTERVAL * 4 + INTERVAL / 2).await;
    let status = handle.status();
    assert_eq!(status.phase, Phase::Shadowing, "holds before the deadline");
    assert_eq!(status.last_decision.expect("decided").action, Action::Hold);

    tokio::time::sleep(INTERVAL).await;
    let status = handle.status();
    assert_eq!(
        status.phase,
        Phase::Paused {
            from: LivePhase::Shadowing
        }
    );
    let decision = status.last_decision.expect("decided");
    assert_eq!(decision.action, Action::Pause);
    assert!(
        decision.reasons[0].message.starts_with("no data"),
        "{decision}"
    );
    assert_eq!(status.share, Share::ZERO, "no data never passes");

    // Still no verdict while paused: neither rolled back nor promoted.
    tokio::time::sleep(INTERVAL * 20).await;
    assert!(matches!(handle.status().phase, Phase::Paused { .. }));
}

#[tokio::test(start_paused = true)]
async fn regression_is_rolled_back_with_reasons_and_the_stable_release_restored() {
    let (stable, candidate) = versions();
    let recorder = recorder();
    let releases = Arc::new(Releases::new(stable, 1u32, candidate, 2u32));
    let steerer = Arc::new(WeightedSteerer::new());
    let (rollout, driver) = builder(policy())
        .metric_source(recorder.clone())
        .release_switch(releases.clone())
        .steerer(steerer.clone())
        .build_driven()
        .expect("valid policy");
    let handle = rollout.handle();
    let mut events = handle.subscribe();
    let rollout = tokio::spawn(driver.run());

    feed(&recorder, 3_000, Outcome::Success, 10);
    tokio::time::sleep(INTERVAL * 2 + INTERVAL / 2).await;
    assert!(matches!(handle.status().phase, Phase::Canary { .. }));
    assert!(!steerer.share().is_zero());

    feed(&recorder, 2_000, Outcome::ServerError, 10);
    let status = rollout.await.expect("controller finished");
    assert_eq!(status.phase, Phase::RolledBack);
    assert_eq!(steerer.share(), Share::ZERO);
    assert_eq!(
        releases.active().config,
        1,
        "stable configuration restored with stable code"
    );

    let mut last = None;
    while let Ok(event) = events.try_recv() {
        assert!(
            !event.decision.reasons.is_empty(),
            "every transition explains itself"
        );
        last = Some(event);
    }
    let last = last.expect("events were published");
    assert_eq!(last.transition.to, Phase::RolledBack);
    assert_eq!(last.decision.action, Action::RollBack);
    let reason = &last.decision.reasons[0];
    assert_eq!(reason.metric.as_deref(), Some("error rate"));
    assert_eq!(
        reason.threshold,
        Some(0.01),
        "the threshold predictor's limit"
    );
    assert!(reason.samples.expect("samples cited").candidate >= 2_000);
    assert!(last.prediction.is_some());
}

#[tokio::test(start_paused = true)]
async fn healthy_candidate_is_promoted_through_every_step() {
    let (stable, candidate) = versions();
    let recorder = recorder();
    let releases = Arc::new(Releases::new(stable, 1u32, candidate, 2u32));
    // Subscribed before the rollout starts, to see its first event too.
    let (rollout, driver) = builder(RolloutPolicy {
        min_samples_per_step: 100,
        ..policy()
    })
    .metric_source(recorder.clone())
    .release_switch(releases.clone())
    .build_driven()
    .expect("valid policy");
    let mut events = rollout.handle().subscribe();
    let rollout = tokio::spawn(driver.run());
    let feeder = tokio::spawn({
        let recorder = recorder.clone();
        async move {
            loop {
                feed(&recorder, 150, Outcome::Success, 10);
                tokio::time::sleep(INTERVAL).await;
            }
        }
    });
    let status = rollout.await.expect("controller finished");
    feeder.abort();
    assert_eq!(status.phase, Phase::Promoted);
    assert_eq!(releases.active().config, 2);
    let mut phases = Vec::new();
    while let Ok(event) = events.try_recv() {
        phases.push(event.transition.to);
    }
    assert_eq!(
        phases,
        vec![
            Phase::Canary { step: 0 },
            Phase::Canary { step: 1 },
            Phase::Canary { step: 2 },
            Phase::Canary { step: 3 },
            Phase::Promoted
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn operator_abort_ends_the_run_at_once() {
    let (rollout, driver) = builder(policy()).build_driven().expect("valid policy");
    let handle = rollout.handle();
    let rollout = tokio::spawn(driver.run());
    tokio::time::sleep(INTERVAL / 2).await;
    let transition = handle
        .abort("page from on-call")
        .expect("live rollouts can be aborted");
    assert_eq!(transition.to, Phase::RolledBack);
    let status = tokio::time::timeout(Duration::from_millis(1), rollout)
        .await
        .expect("run returns without waiting for the next interval")
        .expect("controller finished");
    assert_eq!(status.phase, Phase::RolledBack);
    let decision = status.last_decision.expect("decided");
    assert_eq!(decision.source, DecisionSource::Operator);
    assert!(decision.reasons[0].message.contains("page from on-call"));
}

#[tokio::test(start_paused = true)]
async fn pause_holds_the_share_and_resume_continues() {
    let recorder = recorder();
    let steerer = Arc::new(WeightedSteerer::new());
    let rollout = builder(policy())
        .metric_source(recorder.clone())
        .steerer(steerer.clone())
        .build()
        .expect("valid policy");
    let handle = rollout.handle();
    feed(&recorder, 3_000, Outcome::Success, 10);
    tokio::time::sleep(INTERVAL + INTERVAL / 2).await;
    assert_eq!(handle.status().phase, Phase::Canary { step: 0 });
    handle.pause("deploy freeze").expect("pausable");
    tokio::time::sleep(INTERVAL * 5).await;
    let status = handle.status();
    assert_eq!(
        status.phase,
        Phase::Paused {
            from: LivePhase::Canary { step: 0 }
        }
    );
    assert_eq!(steerer.share().percent(), 1.0);
    handle.resume("freeze over").expect("resumable");
    assert_eq!(handle.status().phase, Phase::Canary { step: 0 });
    // Live requests at this step: what the canary is judged on.
    feed(&recorder, 3_000, Outcome::Success, 10);
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(handle.status().phase, Phase::Canary { step: 1 });
}

#[test]
fn an_invalid_policy_is_refused_by_the_builder() {
    let result = builder(RolloutPolicy {
        steps: vec![],
        ..policy()
    })
    .build_driven();
    assert!(matches!(
        result,
        Err(BuildError::Policy(ConfigError::NoSteps))
    ));
}

#[test]
fn building_outside_a_runtime_is_an_error_that_says_what_to_do() {
    let error = builder(policy()).build().expect_err("no runtime here");
    assert!(matches!(error, BuildError::NoRuntime));
    assert!(error.to_string().contains("build_driven"), "{error}");
}

/// What the scripted predictor says at the next look.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Good,
    Bad,
    Unknown,
}

struct Scripted(Mutex<Verdict>);

impl Predictor for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        match *self.0.lock().expect("not poisoned") {
            Verdict::Good => Prediction::new(self.name(), 0.0, evidence),
            Verdict::Bad => Prediction::new(self.name(), 1.0, evidence),
            Verdict::Unknown => Prediction::inconclusive(self.name(), "scripted", evidence),
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Look { verdict: Verdict, requests: usize },
    Pause,
    Resume,
    Promote,
    Abort,
}

fn step() -> impl Strategy<Value = Step> {
    let verdict = prop_oneof![
        Just(Verdict::Good),
        Just(Verdict::Bad),
        Just(Verdict::Unknown)
    ];
    prop_oneof![
        8 => (verdict, 0usize..300).prop_map(|(verdict, requests)| Step::Look { verdict, requests }),
        1 => Just(Step::Pause),
        1 => Just(Step::Resume),
        1 => Just(Step::Promote),
        1 => Just(Step::Abort),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the evidence and the operators do: the share never exceeds the current
    /// step's, it only ever falls to 0 (on rollback), and RolledBack always means share 0.
    #[test]
    fn share_invariants_hold(steps in proptest::collection::vec(step(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        runtime.block_on(async {
            let recorder = recorder();
            let verdict = Arc::new(Scripted(Mutex::new(Verdict::Good)));
            let steerer = Arc::new(WeightedSteerer::new());
            let policy = RolloutPolicy { min_samples_per_step: 50, ..policy() };
            let step_shares = policy.steps.clone();
            let (rollout, mut controller) = builder(policy)
                .predictor(verdict.clone())
                .steerer(steerer.clone())
                .metric_source(recorder.clone())
                .build_driven()
                .expect("valid policy");
            let handle = rollout.handle();
            let mut previous = Share::ZERO;
            for step in steps {
                let before = handle.status().phase;
                match step {
                    Step::Look { verdict: v, requests } => {
                        *verdict.0.lock().expect("not poisoned") = v;
                        feed(&recorder, requests, Outcome::Success, 10);
                        controller.look().await;
                    }
                    Step::Pause => { let _ = handle.pause("test"); }
                    Step::Resume => { let _ = handle.resume("test"); }
                    Step::Promote => { let _ = handle.promote_now("test"); }
                    Step::Abort => { let _ = handle.abort("test"); }
                }
                let status = handle.status();
                let share = steerer.share();
                prop_assert_eq!(share, status.share, "steerer and status agree");
                let allowed = match status.phase {
                    Phase::Canary { step } | Phase::Paused { from: LivePhase::Canary { step } } => step_shares[step],
                    Phase::Promoted => Share::FULL,
                    _ => Share::ZERO,
                };
                prop_assert!(share <= allowed, "share {} above step {} in {}", share, allowed, status.phase);
                if share < previous {
                    prop_assert_eq!(status.phase, Phase::RolledBack, "share fell without a rollback");
                    prop_assert_eq!(share, Share::ZERO);
                }
                if status.phase == Phase::RolledBack {
                    prop_assert_eq!(share, Share::ZERO);
                }
                if before.is_terminal() {
                    prop_assert_eq!(status.phase, before, "terminal phases are final");
                }
                previous = share;
            }
            Ok(())
        })?;
    }
}

/// A predictor whose numbers are not numbers.
struct Broken;

impl Predictor for Broken {
    fn name(&self) -> &str {
        "broken"
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        let mut p = Prediction::new(self.name(), 0.0, evidence);
        p.failure_probability = f64::NAN;
        p
    }
}

#[tokio::test(start_paused = true)]
async fn a_nan_prediction_holds_instead_of_deciding() {
    let recorder = recorder();
    let (rollout, mut controller) = builder(policy())
        .predictor(Broken)
        .metric_source(recorder.clone())
        .build_driven()
        .expect("valid policy");
    feed(&recorder, 3_000, Outcome::Success, 10);
    let decision = controller.look().await;
    assert_eq!(decision.action, Action::Hold);
    assert!(
        decision.reasons[0].message.contains("not a number"),
        "{decision}"
    );
    assert_eq!(rollout.status().phase, Phase::Shadowing);
}

#[tokio::test(start_paused = true)]
async fn a_split_unlike_the_steerers_share_pauses_the_canary_with_the_reason() {
    let recorder = recorder();
    let (rollout, mut driver) = builder(policy())
        .metric_source(recorder.clone())
        .build_driven()
        .expect("valid policy");
    feed(&recorder, 3_000, Outcome::Success, 10);
    let decision = driver.look().await;
    assert_eq!(
        rollout.status().phase,
        Phase::Canary { step: 0 },
        "{decision}"
    );
    // The steerer was told 1%, but the service (a load balancer in front, a cache, a
    // sticky key that lands everyone on one arm) splits half and half.
    for _ in 0..1_000 {
        recorder.live.record(
            Arm::Candidate,
            Outcome::Success,
            Duration::from_millis(10),
            0,
            0,
        );
        recorder.live.record(
            Arm::Stable,
            Outcome::Success,
            Duration::from_millis(10),
            0,
            0,
        );
    }
    let decision = driver.look().await;
    assert_eq!(decision.action, Action::Pause, "{decision}");
    let reason = &decision.reasons[0];
    assert!(
        reason.message.starts_with("sample ratio mismatch"),
        "{decision}"
    );
    assert_eq!(reason.metric.as_deref(), Some("candidate_share"));
    assert_eq!(reason.value, Some(0.5));
    assert_eq!(
        rollout.status().phase,
        Phase::Paused {
            from: LivePhase::Canary { step: 0 }
        }
    );
}
