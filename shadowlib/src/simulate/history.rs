//! Synthetic rollout histories with known outcomes: training data for the learned
//! predictor, and a held-out set to measure every predictor's calibration.
//!
//! Each record is one simulated rollout seen at the moment of a decision in the shadow: a
//! fixed number of mirrored reads run on the stable twin and on the candidate, drawn by
//! the simulator's paired model (see [`Scenario`](super::Scenario)), with the candidate's
//! true latency change, error rate and CPU cost drawn at random — most candidates close
//! to stable, some clearly worse. The label is what would have happened at full traffic:
//! an incident when the candidate is truly more than the tolerated amount slower or more
//! failing, or when its CPU cost would saturate the service at the declared peak. Every
//! record is marked `synthetic`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution as _, Normal};

use super::model::{BuildModel, LatencyModel, Scenario, Traffic};
use super::sampler::{Place, ScenarioSampler};
use super::{SimulationError, mix};
use crate::evidence::{Evidence, ShadowEvidence};
use crate::metrics::PairRecorder;
use crate::model::{Arm, Phase, Version};
use crate::predict::{CapacityConfig, HistoryRecord};

/// What a synthetic history looks like and when a rollout counts as an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// Records to draw.
    pub records: usize,
    /// Seed; the same seed gives the same history.
    pub seed: u64,
    /// Mirrored reads in each evidence snapshot, each run on both builds (so as many
    /// requests per arm, and as many pairs).
    pub requests_per_arm: u64,
    /// Stable's median latency in microseconds (lognormal, σ 0.5).
    pub stable_median_us: f64,
    /// Stable's failure rate.
    pub stable_error_rate: f64,
    /// Stable's median CPU time per request in nanoseconds (following the request's cost
    /// as latency does: lognormal, σ 0.5, and each run's noise).
    pub stable_cpu_median_ns: f64,
    /// Incident when the true latency change is above this (relative).
    pub latency_tolerance: f64,
    /// Incident when the true failure rate increase is above this (absolute).
    pub error_tolerance: f64,
    /// Incident when the candidate's true CPU cost saturates this capacity at its peak.
    pub capacity: CapacityConfig,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            records: 1_000,
            seed: 0xC0FFEE,
            requests_per_arm: 2_000,
            stable_median_us: 1_000.0,
            stable_error_rate: 0.005,
            stable_cpu_median_ns: 920_000.0,
            latency_tolerance: 0.10,
            error_tolerance: 0.005,
            // Stable at about 84% of 8 cores at 6,400 rps (a mean of 1.04 ms per request).
            capacity: CapacityConfig::new(6_400.0, 8),
        }
    }
}

const LATENCY_SIGMA: f64 = 0.5;

/// The true differences of one synthetic candidate.
struct Truth {
    latency_factor: f64,
    error_rate: f64,
    cpu_factor: f64,
}

fn draw_truth(config: &HistoryConfig, rng: &mut SmallRng) -> Result<Truth, SimulationError> {
    let invalid = |e: &dyn std::fmt::Display| SimulationError::Distribution(e.to_string());
    let small = Normal::<f64>::new(0.0, 0.04).map_err(|e| invalid(&e))?;
    let mut latency_factor: f64 = small.sample(rng).exp();
    if rng.random_bool(0.3) {
        latency_factor *= 1.0 + rng.random_range(0.0..0.4);
    }
    let mut error_rate = config.stable_error_rate + small.sample(rng).abs() * 0.02;
    if rng.random_bool(0.2) {
        error_rate += rng.random_range(0.0..0.02);
    }
    let mut cpu_factor: f64 = small.sample(rng).exp();
    if rng.random_bool(0.2) {
        cpu_factor *= 1.0 + rng.random_range(0.0..0.5);
    }
    Ok(Truth {
        latency_factor,
        error_rate: error_rate.min(1.0),
        cpu_factor,
    })
}

/// The shadow's evidence of `reads` mirrored reads of `scenario`, each run on both builds.
fn observe(
    scenario: &Scenario,
    reads: u64,
    rng: &mut SmallRng,
) -> Result<ShadowEvidence, SimulationError> {
    let sampler = ScenarioSampler::new(scenario)?;
    let recorder = PairRecorder::default();
    for _ in 0..reads {
        let request = sampler.request(rng);
        let twin = sampler.run(Arm::Stable, &request, Place::Shadow, rng);
        let candidate = sampler.run(Arm::Candidate, &request, Place::Shadow, rng);
        let compared = sampler.compare(&twin, &candidate, rng);
        recorder.record_pair("GET /", 0, &twin, &candidate, compared.as_ref());
    }
    Ok(recorder.snapshot())
}

/// Draws a synthetic history (see the module docs).
///
/// ```
/// use shadowlib::simulate::{synthetic_history, HistoryConfig};
///
/// let history = synthetic_history(&HistoryConfig { records: 20, requests_per_arm: 200, ..Default::default() })?;
/// assert_eq!(history.len(), 20);
/// assert!(history.iter().all(|record| record.synthetic));
/// # Ok::<(), shadowlib::simulate::SimulationError>(())
/// ```
pub fn synthetic_history(config: &HistoryConfig) -> Result<Vec<HistoryRecord>, SimulationError> {
    config
        .capacity
        .validate()
        .map_err(|e| SimulationError::Distribution(e.to_string()))?;
    let cpu_us = config.stable_cpu_median_ns / 1_000.0;
    let stable = BuildModel::new(LatencyModel::lognormal(
        config.stable_median_us,
        LATENCY_SIGMA,
    ))
    .with_error_rate(config.stable_error_rate)
    .with_cpu_us(cpu_us);
    let traffic = Traffic::Steady { per_interval: 1.0 };
    (0..config.records)
        .map(|index| {
            let mut rng = SmallRng::seed_from_u64(mix(config.seed ^ mix(index as u64)));
            let truth = draw_truth(config, &mut rng)?;
            let candidate = stable
                .with_latency(LatencyModel::lognormal(
                    config.stable_median_us * truth.latency_factor,
                    LATENCY_SIGMA,
                ))
                .with_error_rate(truth.error_rate)
                .with_cpu_us(cpu_us * truth.cpu_factor);
            let scenario = Scenario::new("synthetic", stable, candidate, traffic);
            let mut evidence = Evidence::new(
                Version::new("synthetic", "stable"),
                Version::new("synthetic", format!("candidate-{index}")),
            );
            evidence.phase = Phase::Shadowing;
            evidence.look = 1;
            evidence.shadow = observe(&scenario, config.requests_per_arm, &mut rng)?;
            // CPU time is lognormal in the request's cost and in each run's noise, so its
            // mean is the median times e^{(σ² + noise²)/2}.
            let cpu_mean_factor =
                ((LATENCY_SIGMA.powi(2) + scenario.run_noise.powi(2)) / 2.0).exp();
            let capacity = &config.capacity;
            let candidate_cpu_s = cpu_us * truth.cpu_factor * cpu_mean_factor / 1e6;
            let saturates = capacity.peak_rps * candidate_cpu_s / f64::from(capacity.cores)
                >= capacity.utilization_limit;
            let incident = truth.latency_factor - 1.0 > config.latency_tolerance
                || truth.error_rate - config.stable_error_rate > config.error_tolerance
                || saturates;
            Ok(HistoryRecord {
                evidence,
                incident,
                synthetic: true,
            })
        })
        .collect()
}

/// The Brier score of probabilities against outcomes: the mean squared difference, 0 for
/// a perfect forecaster, 0.25 for always saying 0.5. `None` when there is nothing to score.
///
/// ```
/// use shadowlib::simulate::brier_score;
///
/// assert_eq!(brier_score(&[(1.0, true), (0.0, false)]), Some(0.0));
/// assert_eq!(brier_score(&[(0.5, true), (0.5, false)]), Some(0.25));
/// ```
pub fn brier_score(forecasts: &[(f64, bool)]) -> Option<f64> {
    if forecasts.is_empty() {
        return None;
    }
    let total: f64 = forecasts
        .iter()
        .map(|(p, happened)| (p - f64::from(u8::from(*happened))).powi(2))
        .sum();
    Some(total / forecasts.len() as f64)
}
