//! The rollout simulator: how often each predictor rolls back identical builds, how fast
//! it catches real regressions, and whether its degradation intervals cover the truth.
//!
//! ```text
//! cargo run --release -p examples --example simulate [-- --rollouts N] [--seed S] [--threads T]
//! ```
//!
//! Every rollout is a real one, built with `Rollout::builder` and driven under paused
//! tokio time: each simulated second, live requests arrive, are split by the steerer's
//! share, stable's reads are mirrored to the candidate, and the rollout's driver takes a
//! look.

use std::error::Error;
use std::time::{Duration, Instant};

use shadowlib::analysis::{SequentialConfig, Tolerances};
use shadowlib::simulate::{
    BuildModel, KayentaMannWhitney, LatencyModel, ReportTable, Scenario, ScenarioReport,
    Simulation, SimulationConfig, Traffic,
};
use shadowlib::{Phase, RolloutPolicy, SequentialPredictor, Share};

struct Args {
    rollouts: usize,
    seed: u64,
    threads: usize,
}

const USAGE: &str =
    "usage: simulate [--rollouts N (default 1000)] [--seed S] [--threads T (0: every core)]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rollouts: 1_000,
        seed: 0x5EED,
        threads: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--rollouts" => args.rollouts = number(&value)? as usize,
            "--seed" => args.seed = number(&value)?,
            "--threads" => args.threads = number(&value)? as usize,
            _ => {
                return Err(format!("unknown argument {flag}; {USAGE}"));
            }
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let started = Instant::now();

    // A look every simulated second; ~200 live requests a second; five canary steps of
    // 4,000 candidate requests each, so a rollout that runs its course takes 100+ looks.
    let percent = |p: f64| Share::from_percent(p);
    let policy = RolloutPolicy {
        interval: Duration::from_secs(1),
        steps: vec![
            percent(1.0)?,
            percent(5.0)?,
            percent(25.0)?,
            percent(50.0)?,
            Share::FULL,
        ],
        min_samples: 200,
        min_samples_per_step: 4_000,
        no_data_deadline: Duration::from_secs(600),
        ..RolloutPolicy::default()
    };
    let simulation = Simulation::new(SimulationConfig {
        rollouts: args.rollouts,
        seed: args.seed,
        max_looks: 1_000,
        mirror_fraction: 1.0,
        threads: args.threads,
        policy,
    })?;
    let analysis = SequentialConfig {
        alpha: 0.05,
        min_samples_per_arm: 200,
        tolerances: Tolerances {
            latency: 0.04,
            latency_tail: 0.01,
            error_rate: 0.0025,
            ..Tolerances::default()
        },
        ..SequentialConfig::default()
    };
    analysis.validate()?;
    let sequential = || {
        SequentialPredictor::new(analysis.clone()).expect("the configuration was validated above")
    };

    // An in-process handler: median 100 µs. Short latencies also keep the HDR histograms
    // compact, which is what lets 8,000 rollouts of 100+ looks run in well under 2 minutes.
    let base = BuildModel {
        latency: LatencyModel::lognormal(100.0, 0.5),
        error_rate: 0.005,
    };
    let steady = Traffic::Steady {
        per_interval: 200.0,
    };
    let with_latency = |latency: LatencyModel| BuildModel { latency, ..base };
    let scenarios = [
        Scenario::new("A/A (identical builds)", base, base, steady),
        Scenario::new(
            "+10% median latency, sigma 0.5",
            base,
            with_latency(LatencyModel::lognormal(110.0, 0.5)),
            steady,
        ),
        Scenario::new(
            "error rate 0.5% -> 1.5%",
            base,
            BuildModel {
                error_rate: 0.015,
                ..base
            },
            steady,
        ),
        Scenario::new(
            "tail only: 5% of requests 10x slower",
            base,
            with_latency(base.latency.with_tail(0.05, 10.0)),
            steady,
        ),
        Scenario::new(
            "variance doubled, same median",
            base,
            with_latency(base.latency.with_variance_scaled(2.0)),
            steady,
        ),
        Scenario::new(
            "healthy: 2% faster",
            base,
            with_latency(LatencyModel::lognormal(98.0, 0.5)),
            steady,
        ),
        Scenario::new(
            "A/A, sparse: a burst every 10 s",
            base,
            base,
            Traffic::Bursty {
                per_burst: 2_000.0,
                every: 10,
            },
        ),
    ];

    println!(
        "{} rollouts per scenario; a look every simulated second, ~200 requests/s; steps 1/5/25/50/100% of {} candidate requests each",
        args.rollouts,
        simulation.config().policy.min_samples_per_step
    );
    println!(
        "sequential predictor: alpha {}, tolerances latency +{:.0}%, tail +{:.0} pp above stable's p{:.0}, errors +{} pp\n",
        analysis.alpha,
        analysis.tolerances.latency * 100.0,
        analysis.tolerances.latency_tail * 100.0,
        analysis.tail_quantile * 100.0,
        analysis.tolerances.error_rate * 100.0,
    );
    let run = |scenario: &Scenario| -> Result<ScenarioReport, Box<dyn Error>> {
        let t = Instant::now();
        let report = simulation.run(scenario, sequential)?;
        eprintln!("{:<44} {:>6.1} s", scenario.name, t.elapsed().as_secs_f64());
        Ok(report)
    };
    let [aa, slower, errors, tail, variance, faster, sparse] = &scenarios;
    let reports = [
        run(aa)?,
        run(slower)?,
        run(errors)?,
        run(tail)?,
        run(variance)?,
        run(faster)?,
        run(sparse)?,
    ];
    let t = Instant::now();
    let kayenta = simulation.run(aa, KayentaMannWhitney::default)?;
    eprintln!(
        "{:<44} {:>6.1} s",
        "A/A, Kayenta-style Mann-Whitney",
        t.elapsed().as_secs_f64()
    );

    let mut table = reports.to_vec();
    table.push(kayenta.clone());
    println!("{}", ReportTable(&table));
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let samples = |s: Option<u64>| s.map_or_else(|| "-".into(), |s| s.to_string());
    let [aa, slower, errors, tail, variance, faster, _sparse] = &reports;
    println!("figures (target in brackets):");
    println!(
        "  A/A rolled back:                          {} [<= 1%]",
        pct(aa.fraction_in(Phase::RolledBack))
    );
    println!(
        "  +10% latency caught:                      {} [>= 95%], median samples/arm at rollback {} [<= 2,000]",
        pct(slower.fraction_in(Phase::RolledBack)),
        samples(slower.median_samples_in(Phase::RolledBack))
    );
    println!(
        "  error 0.5% -> 1.5% caught within 10,000:  {} [>= 95%]",
        pct(errors.fraction_in_within(Phase::RolledBack, 10_000))
    );
    println!(
        "  tail only caught:                         {} [>= 90%]",
        pct(tail.fraction_in(Phase::RolledBack))
    );
    println!(
        "  variance doubled caught:                  {} [>= 90%]",
        pct(variance.fraction_in(Phase::RolledBack))
    );
    println!(
        "  2% faster promoted:                       {} [>= 99%]",
        pct(faster.fraction_in(Phase::Promoted))
    );
    let worst_coverage = reports
        .iter()
        .filter_map(ScenarioReport::coverage)
        .fold(1.0, f64::min);
    println!(
        "  degradation interval coverage, worst:     {} [>= 95%]",
        pct(worst_coverage)
    );
    println!(
        "  Kayenta-style Mann-Whitney (98%) re-run at every look, A/A rolled back: {} (median {} looks)",
        pct(kayenta.fraction_in(Phase::RolledBack)),
        samples(kayenta.median_looks())
    );
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
