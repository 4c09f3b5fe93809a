//! Synthetic rollout histories with known outcomes: training data for the learned
//! predictor, and a held-out set to measure every predictor's calibration.
//!
//! Each record is one simulated rollout seen at the moment of a decision: stable and
//! candidate evidence after a fixed number of requests each, with the candidate's true
//! latency change, error rate and CPU cost drawn at random — most candidates close to
//! stable, some clearly worse. The label is what would have happened at full traffic:
//! an incident when the candidate is truly more than the tolerated amount slower or more
//! failing, or when its CPU cost would saturate the service at the declared peak. Every
//! record is marked `synthetic`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution as _, LogNormal, Normal};

use super::model::{BuildModel, LatencyModel, RequestSampler};
use super::{SimulationError, mix};
use crate::evidence::{Distribution, Evidence};
use crate::model::{Phase, Version};
use crate::predict::{CapacityConfig, HistoryRecord};

/// What a synthetic history looks like and when a rollout counts as an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// Records to draw.
    pub records: usize,
    /// Seed; the same seed gives the same history.
    pub seed: u64,
    /// Requests per build in each evidence snapshot.
    pub requests_per_arm: u64,
    /// Stable's median latency in microseconds (lognormal, σ 0.5).
    pub stable_median_us: f64,
    /// Stable's failure rate.
    pub stable_error_rate: f64,
    /// Stable's median CPU time per request in nanoseconds (lognormal, σ 0.3).
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
            stable_cpu_median_ns: 1_000_000.0,
            latency_tolerance: 0.10,
            error_tolerance: 0.005,
            // Stable at about 84% of 8 cores at 6,400 rps.
            capacity: CapacityConfig::new(6_400.0, 8),
        }
    }
}

const LATENCY_SIGMA: f64 = 0.5;
const CPU_SIGMA: f64 = 0.3;

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

/// Records `n` requests of a build, with their CPU times, into fresh evidence.
fn observe(
    evidence: &mut crate::ArmEvidence,
    build: &BuildModel,
    cpu_median_ns: f64,
    n: u64,
    rng: &mut SmallRng,
) -> Result<(), SimulationError> {
    let sampler = RequestSampler::new(build)?;
    let cpu = LogNormal::new(cpu_median_ns.ln(), CPU_SIGMA)
        .map_err(|e| SimulationError::Distribution(e.to_string()))?;
    let mut cpu_ns = Distribution::cpu_ns();
    for _ in 0..n {
        let (outcome, latency) = sampler.sample(rng);
        evidence.record_request(
            outcome,
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        );
        cpu_ns.record(cpu.sample(rng) as u64);
    }
    evidence.cpu_ns = Some(cpu_ns);
    Ok(())
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
    let stable_build = BuildModel {
        latency: LatencyModel::lognormal(config.stable_median_us, LATENCY_SIGMA),
        error_rate: config.stable_error_rate,
    };
    // The mean of a lognormal is its median times e^{σ²/2}.
    let cpu_mean_factor = (CPU_SIGMA * CPU_SIGMA / 2.0).exp();
    (0..config.records)
        .map(|index| {
            let mut rng = SmallRng::seed_from_u64(mix(config.seed ^ mix(index as u64)));
            let truth = draw_truth(config, &mut rng)?;
            let candidate_build = BuildModel {
                latency: LatencyModel::lognormal(
                    config.stable_median_us * truth.latency_factor,
                    LATENCY_SIGMA,
                ),
                error_rate: truth.error_rate,
            };
            let mut evidence = Evidence::new(
                Version::new("synthetic", "stable"),
                Version::new("synthetic", format!("candidate-{index}")),
            );
            evidence.phase = Phase::Shadowing;
            evidence.look = 1;
            let n = config.requests_per_arm;
            let cpu = config.stable_cpu_median_ns;
            observe(&mut evidence.shadow.twin, &stable_build, cpu, n, &mut rng)?;
            observe(
                &mut evidence.shadow.candidate,
                &candidate_build,
                cpu * truth.cpu_factor,
                n,
                &mut rng,
            )?;
            let capacity = &config.capacity;
            let candidate_cpu_s = cpu * truth.cpu_factor * cpu_mean_factor / 1e9;
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
