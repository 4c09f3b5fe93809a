//! The rollout simulator on small fixed-seed batches: the real controller with the
//! sequential predictor keeps A/A false rollbacks at or below α and catches a clear
//! regression; runs are reproducible; bad settings are typed errors.

use std::time::Duration;

use shadowlib::analysis::{SequentialConfig, Tolerances};
use shadowlib::simulate::{
    BuildModel, LatencyModel, Scenario, Simulation, SimulationConfig, SimulationError, Traffic,
};
use shadowlib::{Phase, RolloutPolicy, SequentialPredictor, Share};

const ALPHA: f64 = 0.05;

/// A short schedule so a debug-build test stays quick: two canary steps of 1,000
/// candidate requests, 200 live requests a look.
fn simulation(rollouts: usize, seed: u64, threads: usize) -> Simulation {
    let policy = RolloutPolicy {
        interval: Duration::from_secs(1),
        steps: vec![Share::from_percent(10.0).expect("valid"), Share::FULL],
        min_samples: 200,
        min_samples_per_step: 1_000,
        no_data_deadline: Duration::from_secs(60),
        ..RolloutPolicy::default()
    };
    Simulation::new(SimulationConfig {
        rollouts,
        seed,
        max_looks: 300,
        threads,
        policy,
        ..SimulationConfig::default()
    })
    .expect("valid settings")
}

fn predictor() -> SequentialPredictor {
    SequentialPredictor::new(SequentialConfig {
        alpha: ALPHA,
        tolerances: Tolerances {
            latency: 0.05,
            error_rate: 0.01,
            ..Tolerances::default()
        },
        ..SequentialConfig::default()
    })
    .expect("valid configuration")
}

fn build(median_us: f64) -> BuildModel {
    BuildModel {
        latency: LatencyModel::lognormal(median_us, 0.5),
        error_rate: 0.002,
    }
}

const STEADY: Traffic = Traffic::Steady {
    per_interval: 200.0,
};

#[test]
fn aa_rollouts_through_the_real_controller_rarely_roll_back() {
    let report = simulation(60, 42, 2)
        .run(
            &Scenario::new("A/A", build(100.0), build(100.0), STEADY),
            predictor,
        )
        .expect("runs");
    assert_eq!(report.rollouts(), 60);
    assert!(
        report.fraction_in(Phase::RolledBack) <= ALPHA,
        "{:?}",
        report.fraction_in(Phase::RolledBack)
    );
    assert!(
        report.fraction_in(Phase::Promoted) >= 0.9,
        "{}",
        report.fraction_in(Phase::Promoted)
    );
    assert!(report.coverage().is_some_and(|c| c >= 1.0 - ALPHA));
}

#[test]
fn a_clear_regression_is_rolled_back_and_its_interval_covers_the_truth() {
    let scenario = Scenario::new("+30%", build(100.0), build(130.0), STEADY);
    let report = simulation(20, 42, 2)
        .run(&scenario, predictor)
        .expect("runs");
    assert_eq!(report.fraction_in(Phase::RolledBack), 1.0);
    assert!(
        report
            .median_samples_in(Phase::RolledBack)
            .is_some_and(|n| n < 2_000)
    );
    assert!(
        report.coverage().is_some_and(|c| c >= 1.0 - ALPHA),
        "{:?}",
        report.coverage()
    );
}

#[test]
fn the_same_seed_gives_the_same_rollouts_whatever_the_threads() {
    let scenario = Scenario::new("+10%", build(100.0), build(110.0), STEADY);
    let one = simulation(6, 7, 1).run(&scenario, predictor).expect("runs");
    let again = simulation(6, 7, 2).run(&scenario, predictor).expect("runs");
    assert_eq!(one, again);
    let other_seed = simulation(6, 8, 2).run(&scenario, predictor).expect("runs");
    assert_ne!(one.records, other_seed.records);
}

#[test]
fn sparse_traffic_holds_instead_of_deciding_on_nothing() {
    // One burst of 300 requests every 50 looks: min samples come quickly, but the
    // evidence to pass grows slowly; nothing is rolled back for lack of data.
    let scenario = Scenario::new(
        "sparse",
        build(100.0),
        build(100.0),
        Traffic::Bursty {
            per_burst: 300.0,
            every: 50,
        },
    );
    let report = simulation(10, 3, 2)
        .run(&scenario, predictor)
        .expect("runs");
    assert_eq!(report.fraction_in(Phase::RolledBack), 0.0);
    assert!(
        report.records.iter().all(|r| r.looks > 50),
        "no decision after a single burst"
    );
}

#[test]
fn bad_settings_are_typed_errors() {
    let bad = Simulation::new(SimulationConfig {
        rollouts: 0,
        ..SimulationConfig::default()
    });
    assert!(matches!(
        bad,
        Err(SimulationError::Setting {
            field: "rollouts",
            ..
        })
    ));
    let bad = Simulation::new(SimulationConfig {
        mirror_fraction: 1.5,
        ..SimulationConfig::default()
    });
    assert!(matches!(
        bad,
        Err(SimulationError::Setting {
            field: "mirror_fraction",
            ..
        })
    ));
    let broken = BuildModel {
        error_rate: 2.0,
        ..build(100.0)
    };
    let result = simulation(1, 1, 1).run(
        &Scenario::new("bad", build(100.0), broken, STEADY),
        predictor,
    );
    assert!(matches!(
        result,
        Err(SimulationError::Model {
            build: "candidate",
            field: "error_rate",
            ..
        })
    ));
    let bad_traffic = Scenario::new(
        "bad",
        build(100.0),
        build(100.0),
        Traffic::Bursty {
            per_burst: 10.0,
            every: 0,
        },
    );
    assert!(matches!(
        bad_traffic.validate(),
        Err(SimulationError::Model {
            field: "traffic.every",
            ..
        })
    ));
}
