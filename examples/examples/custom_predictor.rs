//! A business rule as a predictor: "roll back if any checkout response differs".
//!
//! Statistical predictors judge latency and error rates; some teams also have rules that
//! no statistic should overrule. Here the rule is that the candidate must return exactly
//! what stable returns for every checkout it is shown. The example records, next to the
//! usual KPIs, a custom KPI — `checkout_mismatch`, 1 for a differing response and 0 for an
//! equal one — and plugs a user-written `Predictor` into the same controller.
//!
//! Run with `cargo run -p examples --example custom_predictor`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shadowlib::{
    Arm, ArmEvidence, Evidence, KpiRecorder, MetricError, MetricSource, Moments, Outcome, Phase,
    Prediction, Predictor, RolloutController, RolloutPolicy, TrafficSteerer, Version,
    WeightedSteerer,
};

/// The custom KPI: one observation per compared checkout response.
#[derive(Default)]
struct CheckoutComparisons(Mutex<Moments>);

impl CheckoutComparisons {
    fn record(&self, differs: bool) {
        let mut moments = self.0.lock().unwrap_or_else(|e| e.into_inner());
        moments.add(f64::from(u8::from(differs)));
    }
}

#[async_trait]
impl MetricSource for CheckoutComparisons {
    fn name(&self) -> &str {
        "checkout-comparisons"
    }

    async fn collect(&self, arm: Arm, into: &mut ArmEvidence) -> Result<(), MetricError> {
        if arm == Arm::Candidate {
            let moments = *self.0.lock().unwrap_or_else(|e| e.into_inner());
            into.custom
                .entry("checkout_mismatch".into())
                .or_default()
                .merge(&moments);
        }
        Ok(())
    }
}

/// Checkouts that must be compared before the rule lets the candidate step up.
const MIN_CHECKOUTS: u64 = 3_000;

/// The rule: any differing checkout response means the candidate must not ship.
struct NoCheckoutDifferences;

impl Predictor for NoCheckoutDifferences {
    fn name(&self) -> &str {
        "no-checkout-differences"
    }

    fn predict(&self, evidence: &Evidence) -> Prediction {
        let checkouts = evidence
            .candidate
            .custom
            .get("checkout_mismatch")
            .copied()
            .unwrap_or_default();
        let differing = (checkouts.mean() * checkouts.count() as f64).round() as u64;
        // A difference is decisive at once; a pass needs enough checkouts to have seen a
        // one-in-a-thousand bug with high probability (1 - 0.999^3000 ≈ 95%).
        if differing == 0 && checkouts.count() < MIN_CHECKOUTS {
            return Prediction::inconclusive(
                self.name(),
                format!(
                    "{} of {MIN_CHECKOUTS} checkouts compared, none differed yet",
                    checkouts.count()
                ),
                evidence,
            );
        }
        let probability = if differing > 0 { 1.0 } else { 0.0 };
        Prediction::new(self.name(), probability, evidence).with_reason(format!(
            "{differing} of {} checkout responses differed from stable",
            checkouts.count()
        ))
    }
}

/// Runs one rollout where the candidate gets every `bug_every`-th checkout wrong (0: never).
async fn rollout(bug_every: u64) -> Phase {
    let (stable, candidate) = (Version::new("shop", "7"), Version::new("shop", "8"));
    let recorder = Arc::new(KpiRecorder::new(stable.clone(), candidate.clone()));
    let checkouts = Arc::new(CheckoutComparisons::default());
    let steerer = Arc::new(WeightedSteerer::new());
    let policy = RolloutPolicy::from_toml(
        r#"
        interval = "100ms"
        steps = [10, 50, 100]
        min_samples = 200
        min_samples_per_step = 50
        "#,
    )
    .expect("the example policy is valid");
    let controller = RolloutController::new(
        stable,
        candidate,
        policy,
        NoCheckoutDifferences,
        steerer.clone(),
    )
    .expect("the example policy is valid")
    .with_metric_source(recorder.clone())
    .with_metric_source(checkouts.clone());
    let handle = controller.handle();
    let run = tokio::spawn(controller.run());

    let mut request = 0u64;
    while !handle.status().phase.is_terminal() && request < 1_000_000 {
        for _ in 0..100 {
            request += 1;
            let arm = steerer.pick(Some(&request.to_le_bytes()));
            recorder.record(arm, Outcome::Success, Duration::from_micros(800), 0, 0);
            if arm == Arm::Stable {
                // The shadow copy of this checkout read, compared with stable's answer.
                recorder.record(
                    Arm::Candidate,
                    Outcome::Success,
                    Duration::from_micros(800),
                    0,
                    0,
                );
                checkouts.record(bug_every > 0 && request.is_multiple_of(bug_every));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = run.await.map(|s| s.phase).unwrap_or(Phase::Idle);
    if let Some(decision) = handle.status().last_decision {
        println!("  last decision: {decision}");
    }
    status
}

#[tokio::main]
async fn main() {
    for (name, bug_every) in [
        ("one checkout in 1,000 wrong", 1_000),
        ("every checkout right", 0),
    ] {
        println!("candidate with {name}:");
        let phase = rollout(bug_every).await;
        println!("  outcome: {phase}\n");
    }
}
