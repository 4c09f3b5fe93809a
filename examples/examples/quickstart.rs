//! The whole loop in one process, no network: two rollouts of an in-process service.
//!
//! A load generator sends requests to a tiny "service" whose stable build and candidate
//! build are plain async functions, so there is no HTTP adapter: the demo plays its part.
//! Every request is routed by the rollout's `WeightedSteerer` (the demo keeps an `Arc` of
//! it to pick the build); requests served by stable are reads, so each one is also
//! mirrored to the candidate as a shadow copy. The demo's own `KpiRecorder` measures both
//! builds and is the rollout's metric source; the rollout looks at the evidence every
//! 250 ms and asks its default predictor, the `SequentialPredictor`: always-valid tests
//! (mixture SPRT) that can be re-run at every look without rolling back a good build by
//! chance, and that say "not yet known" — hold — until the evidence is enough.
//!
//! * Scenario `regression`: the candidate fails 5% of requests and is 60% slower — it is
//!   rolled back while still a shadow, before any user saw it.
//! * Scenario `healthy`: the candidate is the same as stable — it is promoted through
//!   every step of the schedule.
//!
//! Run with `cargo run -p examples --example quickstart`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use shadowlib::metrics::KpiRecorder;
use shadowlib::{
    Arm, Decision, DecisionSource, Outcome, Phase, Rollout, RolloutEvent, RolloutPolicy, Share,
    TrafficSteerer, Version, WeightedSteerer,
};

/// How a build behaves: its median latency and its failure rate.
#[derive(Debug, Clone, Copy)]
struct Build {
    median: Duration,
    failure_rate: f64,
}

impl Build {
    /// Serves one request: waits for a lognormal latency, then succeeds or fails.
    async fn serve(self) -> Outcome {
        let (latency, failed) = {
            let mut rng = rand::rng();
            let spread = LogNormal::new(0.0, 0.25).expect("constant parameters are valid");
            (
                self.median.mul_f64(spread.sample(&mut rng)),
                rng.random_bool(self.failure_rate),
            )
        };
        tokio::time::sleep(latency).await;
        if failed {
            Outcome::ServerError
        } else {
            Outcome::Success
        }
    }
}

/// Serves one request on `arm` and records its KPIs.
async fn serve_and_record(build: Build, arm: Arm, recorder: Arc<KpiRecorder>) {
    let started = Instant::now();
    let outcome = build.serve().await;
    recorder.record(arm, outcome, started.elapsed(), 0, 0);
}

/// Prints one transition with the decision and every reason behind it.
fn print_transition(elapsed: Duration, from: Phase, to: Phase, share: Share, decision: &Decision) {
    println!(
        "[{:>5.2}s] {from} -> {to} (candidate share {share}), {} decided to {}:",
        elapsed.as_secs_f64(),
        match decision.source {
            DecisionSource::Controller => "the controller",
            DecisionSource::Operator => "an operator",
        },
        decision.action,
    );
    for reason in &decision.reasons {
        println!("          - {reason}");
    }
}

fn print_event(event: &RolloutEvent) {
    let transition = event.transition;
    print_transition(
        event.elapsed,
        transition.from,
        transition.to,
        transition.share_after,
        &event.decision,
    );
}

/// Prints the transition that building the rollout made. Its event went out before
/// anyone could subscribe, so it is told from the status.
fn print_start(rollout: &Rollout) {
    let status = rollout.status();
    println!(
        "[ 0.00s] {} -> {} (candidate share {}), the builder started the rollout of {} against {}",
        Phase::Idle,
        status.phase,
        status.share,
        status.candidate,
        status.stable
    );
}

async fn run_scenario(name: &str, candidate_build: Build) {
    let stable_build = Build {
        median: Duration::from_millis(4),
        failure_rate: 0.001,
    };
    let (stable, candidate) = (
        Version::new("shop", "1.41.0"),
        Version::new("shop", "1.42.0"),
    );
    println!("\n=== scenario {name}: rolling out {candidate} over {stable} ===");

    let recorder = Arc::new(KpiRecorder::new(stable.clone(), candidate.clone()));
    let steerer = Arc::new(WeightedSteerer::new());
    let policy = RolloutPolicy::from_toml(
        r#"
        interval = "250ms"
        steps = [1, 5, 25, 50, 100]
        min_samples = 1000
        min_samples_per_step = 200
        no_data_deadline = "10s"

        [thresholds]
        max_failure_probability = 0.5
        max_degradation = 0.3
        "#,
    )
    .expect("the demo policy is valid");
    // The default predictor (`SequentialPredictor::default()`) judges; the demo's recorder
    // is the evidence, and the demo's steerer picks the build of each request.
    let (rollout, driver) = Rollout::builder(stable, candidate)
        .policy(policy)
        .steerer(steerer.clone())
        .metric_source(recorder.clone())
        // The two builds are simulated in one process: its CPU and memory say nothing of
        // either, so they stay out of the evidence.
        .without_process_sampling()
        .build_driven()
        .expect("the demo's rollout is valid");
    let handle = rollout.handle();
    let mut events = handle.subscribe();
    print_start(&rollout);
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            print_event(&event);
        }
    });
    let driving = tokio::spawn(driver.run());

    // The load: about 4,000 requests a second from 10,000 users, for at most 30 seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while !driving.is_finished() && Instant::now() < deadline {
        tick.tick().await;
        for _ in 0..4 {
            let user = format!("user-{}", rand::rng().random_range(0..10_000));
            let arm = steerer.pick(Some(user.as_bytes()));
            let build = match arm {
                Arm::Stable => stable_build,
                Arm::Candidate => candidate_build,
            };
            tokio::spawn(serve_and_record(build, arm, recorder.clone()));
            if arm == Arm::Stable {
                // A read served by stable: the candidate gets a shadow copy.
                tokio::spawn(serve_and_record(
                    candidate_build,
                    Arm::Candidate,
                    recorder.clone(),
                ));
            }
        }
    }
    let phase = if driving.is_finished() {
        driving
            .await
            .map(|status| status.phase)
            .unwrap_or(Phase::Idle)
    } else {
        // Undecided within the bound: stop looking, and say so.
        driving.abort();
        handle.status().phase
    };
    // Let the printer drain, then stop it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    printer.abort();
    let outcome = match phase {
        Phase::RolledBack => "rolled_back",
        Phase::Promoted => "promoted",
        _ => "unfinished",
    };
    println!("scenario {name}: {outcome}");
}

#[tokio::main]
async fn main() {
    run_scenario(
        "regression",
        Build {
            median: Duration::from_micros(6_400),
            failure_rate: 0.05,
        },
    )
    .await;
    run_scenario(
        "healthy",
        Build {
            median: Duration::from_millis(4),
            failure_rate: 0.001,
        },
    )
    .await;
}
