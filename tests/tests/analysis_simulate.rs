//! The rollout simulator on small fixed-seed batches, through the real controller under
//! paused time: identical builds are not rolled back however fast the shadow runs, a
//! slowdown of one route of five is caught from its own pairs, wrong responses roll back
//! and noisy fields do not, CPU counts; runs are reproducible; bad settings are typed
//! errors.

use std::time::Duration;

use shadowlib::analysis::{SequentialConfig, Tolerances};
use shadowlib::simulate::{
    BuildModel, LatencyModel, RouteModel, Scenario, ScenarioReport, Simulation, SimulationConfig,
    SimulationError, Traffic, UnpairedSequential,
};
use shadowlib::{Phase, RolloutPolicy, SequentialPredictor, Share, Stage};

const ALPHA: f64 = 0.05;

/// A short schedule so a debug-build test stays quick: two canary steps of 1,000
/// candidate requests.
fn simulation(rollouts: usize, seed: u64, max_looks: u64) -> Simulation {
    let policy = RolloutPolicy {
        interval: Duration::from_secs(1),
        steps: vec![Share::from_percent(50.0).expect("valid"), Share::FULL],
        min_samples: 200,
        min_samples_per_step: 1_000,
        no_data_deadline: Duration::from_secs(60),
        decision_deadline: Duration::from_secs(60),
        ..RolloutPolicy::default()
    };
    Simulation::new(SimulationConfig {
        rollouts,
        seed,
        max_looks,
        threads: 2,
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
            error_rate: 0.005,
            ..Tolerances::default()
        },
        ..SequentialConfig::default()
    })
    .expect("valid configuration")
}

fn build(median_us: f64) -> BuildModel {
    BuildModel::new(LatencyModel::lognormal(median_us, 0.5)).with_error_rate(0.002)
}

fn steady(per_interval: f64) -> Traffic {
    Traffic::Steady { per_interval }
}

/// Five equally busy routes whose costs span 100x; the candidate 10% slower on the
/// middle one.
fn five_routes_one_slower() -> Vec<RouteModel> {
    [0.1, 0.3, 1.0, 3.0, 10.0]
        .into_iter()
        .enumerate()
        .map(|(i, cost)| {
            let route = RouteModel::new(format!("GET /r{i}"), 1.0, cost);
            if i == 2 {
                route.with_candidate_factor(1.1)
            } else {
                route
            }
        })
        .collect()
}

fn rolled_back(report: &ScenarioReport) -> usize {
    report
        .records
        .iter()
        .filter(|r| r.phase == Phase::RolledBack)
        .count()
}

#[test]
fn identical_builds_are_never_rolled_back_whatever_the_shadows_speed() {
    // 5,000 mirrored reads a look: the shadow's tests (and its 4,606 compared reads) are
    // done at the first look, so eight looks judge the shadow and most of the canary.
    for speed in [0.65, 1.1] {
        let scenario = Scenario::new("A/A", build(1_000.0), build(1_000.0), steady(5_000.0))
            .with_shadow_speed(speed);
        let report = simulation(200, 42, 8)
            .run(&scenario, predictor)
            .expect("runs");
        assert_eq!(report.rollouts(), 200);
        assert_eq!(rolled_back(&report), 0, "shadow speed {speed}");
        assert_eq!(report.false_rollback_rate(), Some(0.0));
        let past_the_shadow = report
            .records
            .iter()
            .filter(|r| r.stage == Stage::Canary || r.phase == Phase::Promoted)
            .count();
        assert_eq!(
            past_the_shadow, 200,
            "shadow speed {speed}: the shadow passed identical builds"
        );
    }
}

#[test]
fn identical_builds_with_writes_routes_and_a_slow_shadow_are_promoted() {
    let scenario = Scenario::new("A/A", build(1_000.0), build(1_000.0), steady(5_000.0))
        .with_routes(
            five_routes_one_slower()
                .into_iter()
                .map(|r| r.with_candidate_factor(1.0))
                .collect(),
        )
        .with_read_share(0.85)
        .with_write_cost(0.5)
        .with_shadow_speed(0.65);
    assert!(scenario.identical_builds());
    let report = simulation(20, 5, 60)
        .run(&scenario, predictor)
        .expect("runs");
    assert_eq!(report.fraction_in(Phase::Promoted), 1.0, "{report:?}");
    assert!(report.coverage().is_some_and(|c| c >= 1.0 - ALPHA));
}

#[test]
fn a_slowdown_of_one_route_of_five_is_caught_from_its_own_pairs() {
    // 25 reads a look, so the pairs at the look that caught it are close to what it took.
    let scenario = Scenario::new("one route", build(1_000.0), build(1_000.0), steady(25.0))
        .with_routes(five_routes_one_slower());
    let report = simulation(100, 9, 60)
        .run(&scenario, SequentialPredictor::default)
        .expect("runs");
    assert!(
        report.fraction_in(Phase::RolledBack) >= 0.95,
        "{}",
        report.fraction_in(Phase::RolledBack)
    );
    assert!(
        report.records.iter().all(|r| r.stage == Stage::Shadow),
        "caught in the shadow"
    );
    let median = report.median_samples_in(Phase::RolledBack);
    // About 290 with five test slots; eleven (quantiles and CPU joined the budget) cost
    // ln(1100) / ln(500) = 1.13 times the pairs.
    assert!(median.is_some_and(|pairs| pairs <= 350), "{median:?}");
    let caught_by_route = report
        .records
        .iter()
        .filter_map(|r| r.decision.as_ref())
        .filter(|d| d.to_string().contains("shadow pairs of GET /r2"))
        .count();
    assert_eq!(caught_by_route, rolled_back(&report));

    // The same test without the pairing does not see it: +1.9% on the whole is within
    // the tolerance, and the spread between routes hides even that.
    let unpaired = simulation(10, 9, 60)
        .run(&scenario, UnpairedSequential::default)
        .expect("runs");
    assert_eq!(rolled_back(&unpaired), 0);
}

#[test]
fn a_field_wrong_on_one_read_in_a_hundred_rolls_back_and_is_named() {
    let stable = build(1_000.0);
    let scenario = Scenario::new(
        "wrong field",
        stable,
        stable.with_wrong_response_rate(0.01),
        steady(500.0),
    );
    let report = simulation(20, 11, 60)
        .run(&scenario, predictor)
        .expect("runs");
    assert_eq!(report.fraction_in(Phase::RolledBack), 1.0);
    for record in &report.records {
        let decision = record.decision.as_ref().expect("decided").to_string();
        assert!(decision.contains("responses:"), "{decision}");
        assert!(decision.contains("/price"), "{decision}");
    }
}

#[test]
fn a_field_that_differs_on_every_response_is_noise_and_promoted() {
    let scenario = Scenario::new("noisy", build(1_000.0), build(1_000.0), steady(5_000.0))
        .with_noisy_field(true);
    let report = simulation(20, 12, 60)
        .run(&scenario, predictor)
        .expect("runs");
    assert_eq!(report.fraction_in(Phase::Promoted), 1.0, "{report:?}");
}

#[test]
fn twice_the_cpu_at_the_same_latency_rolls_back_on_cpu() {
    let stable = build(1_000.0).with_cpu_us(100.0);
    let scenario = Scenario::new("cpu", stable, stable.with_cpu_us(200.0), steady(500.0));
    let report = simulation(10, 13, 60)
        .run(&scenario, predictor)
        .expect("runs");
    assert_eq!(report.fraction_in(Phase::RolledBack), 1.0);
    for record in &report.records {
        let decision = record.decision.as_ref().expect("decided");
        let cpu = decision
            .reasons
            .iter()
            .map(ToString::to_string)
            .find(|r| r.starts_with("CPU per request (shadow pairs)"))
            .expect("the CPU test is in the reasons");
        assert!(
            cpu.contains("tolerance +10.00%: worse than tolerated"),
            "{cpu}"
        );
        let degradation = record.degradation.expect("a prediction");
        assert!(
            degradation.contains(0.0),
            "latency unchanged: {degradation:?}"
        );
    }
}

#[test]
fn a_clear_regression_is_rolled_back_and_its_interval_covers_the_truth() {
    let scenario = Scenario::new("+30%", build(1_000.0), build(1_300.0), steady(200.0));
    let report = simulation(20, 42, 60)
        .run(&scenario, predictor)
        .expect("runs");
    assert_eq!(report.fraction_in(Phase::RolledBack), 1.0);
    assert!(
        report
            .median_samples_in(Phase::RolledBack)
            .is_some_and(|n| n < 1_000)
    );
    assert!(
        report.coverage().is_some_and(|c| c >= 1.0 - ALPHA),
        "{:?}",
        report.coverage()
    );
}

#[test]
fn the_same_seed_gives_the_same_rollouts_whatever_the_threads() {
    let scenario = Scenario::new("+10%", build(1_000.0), build(1_100.0), steady(200.0));
    let threads = |threads: usize, seed: u64| {
        Simulation::new(SimulationConfig {
            threads,
            rollouts: 6,
            seed,
            max_looks: 30,
            ..simulation(1, 1, 1).config().clone()
        })
        .expect("valid settings")
    };
    let one = threads(1, 7).run(&scenario, predictor).expect("runs");
    let again = threads(2, 7).run(&scenario, predictor).expect("runs");
    assert_eq!(one, again);
    let other_seed = threads(2, 8).run(&scenario, predictor).expect("runs");
    assert_ne!(one.records, other_seed.records);
}

#[test]
fn sparse_traffic_holds_instead_of_deciding_on_nothing() {
    // One burst of 300 requests every 50 looks: the shadow's minimum comes quickly, but
    // the mismatch test's 4,606 compared reads take sixteen bursts; nothing is rolled
    // back for lack of data, and the rollout pauses rather than wait for ever.
    let scenario = Scenario::new(
        "sparse",
        build(1_000.0),
        build(1_000.0),
        Traffic::Bursty {
            per_burst: 300.0,
            every: 50,
        },
    );
    let report = simulation(10, 3, 300)
        .run(&scenario, predictor)
        .expect("runs");
    assert_eq!(report.fraction_in(Phase::RolledBack), 0.0);
    assert_eq!(report.paused(), 1.0, "{report:?}");
    for record in &report.records {
        let decision = record.decision.as_ref().expect("paused").to_string();
        assert!(decision.contains("deadline"), "{decision}");
    }
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
    let result = simulation(1, 1, 1).run(
        &Scenario::new(
            "bad",
            build(1_000.0),
            build(1_000.0).with_error_rate(2.0),
            steady(1.0),
        ),
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
        build(1_000.0),
        build(1_000.0),
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

#[test]
fn bad_paired_parameters_are_typed_errors_naming_the_field() {
    let aa = Scenario::new("aa", build(1_000.0), build(1_000.0), steady(1.0));
    let field_of = |scenario: Scenario| match scenario.validate() {
        Err(SimulationError::Model { build, field, .. }) => Some((build, field)),
        Err(SimulationError::Route { field, .. }) => Some(("routes", field)),
        _ => None,
    };
    let cases = [
        (
            aa.clone().with_shadow_speed(0.0),
            ("scenario", "shadow_speed"),
        ),
        (
            aa.clone().with_shadow_speed(f64::INFINITY),
            ("scenario", "shadow_speed"),
        ),
        (aa.clone().with_read_share(1.5), ("scenario", "read_share")),
        (
            aa.clone().with_read_share(f64::NAN),
            ("scenario", "read_share"),
        ),
        (aa.clone().with_write_cost(-1.0), ("scenario", "write_cost")),
        (aa.clone().with_run_noise(-0.1), ("scenario", "run_noise")),
        (aa.clone().with_routes(Vec::new()), ("scenario", "routes")),
        (
            aa.clone()
                .with_routes(vec![RouteModel::new("GET /", 0.0, 1.0)]),
            ("routes", "weight"),
        ),
        (
            aa.clone()
                .with_routes(vec![RouteModel::new("GET /", 1.0, f64::NAN)]),
            ("routes", "cost"),
        ),
        (
            aa.clone().with_routes(vec![
                RouteModel::new("GET /", 1.0, 1.0).with_candidate_factor(0.0),
            ]),
            ("routes", "candidate_factor"),
        ),
        (
            Scenario::new(
                "cpu",
                build(1_000.0).with_cpu_us(0.0),
                build(1_000.0),
                steady(1.0),
            ),
            ("stable", "cpu_us"),
        ),
        (
            Scenario::new(
                "wrong",
                build(1_000.0),
                build(1_000.0).with_wrong_response_rate(-0.5),
                steady(1.0),
            ),
            ("candidate", "wrong_response_rate"),
        ),
    ];
    for (scenario, expected) in cases {
        assert_eq!(field_of(scenario), Some(expected));
    }
    // The error names the route too.
    let unnamed = aa.with_routes(vec![
        RouteModel::new("GET /a", 1.0, 1.0),
        RouteModel::new("GET /b", -2.0, 1.0),
    ]);
    let error = simulation(1, 1, 1)
        .run(&unnamed, predictor)
        .expect_err("a negative weight");
    assert_eq!(
        error.to_string(),
        "routes[1] (GET /b): weight = -2 is out of range"
    );
}
