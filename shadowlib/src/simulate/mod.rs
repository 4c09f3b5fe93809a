//! The rollout simulator: synthetic requests of a stable and a candidate build run
//! through the real rollout controller under deterministic (paused) time, many rollouts
//! per scenario, to measure what matters about a predictor: how often it rolls back
//! identical builds, how fast it catches real regressions, and whether its intervals
//! cover the truth.
//!
//! The model is the one the real shadow measures (see [`Scenario`]): live requests of
//! several routes, reads and writes, split between the builds by the steerer's share;
//! stable's live reads mirrored to the shadow, where a stable *twin* and the candidate
//! each run the same read — a pair — in an environment of its own speed; the responses
//! compared with live's field by field. Live requests reach the rollout's recorder with
//! their route label, pairs its shadow recorder, exactly as the adapters feed them.
//!
//! Available with the `simulate` feature. Each rollout gets its own seeded random stream,
//! so a run is reproducible whatever the number of threads.
//!
//! ```
//! use shadowlib::{Phase, SequentialPredictor};
//! use shadowlib::simulate::{BuildModel, LatencyModel, Scenario, Simulation, SimulationConfig, Traffic};
//!
//! let build = BuildModel::new(LatencyModel::lognormal(1_000.0, 0.5));
//! let broken = build.with_error_rate(0.2);
//! let scenario = Scenario::new("20% errors", build, broken, Traffic::Steady { per_interval: 300.0 })
//!     .with_shadow_speed(0.65);
//! let simulation = Simulation::new(SimulationConfig { rollouts: 4, ..Default::default() })?;
//! let report = simulation.run(&scenario, SequentialPredictor::default)?;
//! assert_eq!(report.fraction_in(Phase::RolledBack), 1.0);
//! # Ok::<(), shadowlib::simulate::SimulationError>(())
//! ```

mod baseline;
mod history;
mod model;
mod report;
mod sampler;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Bernoulli, Distribution as _};
use thiserror::Error;

pub use baseline::{KayentaMannWhitney, UnpairedSequential};
pub use history::{HistoryConfig, brier_score, synthetic_history};
pub use model::{BuildModel, LatencyModel, RouteModel, Scenario, Tail, Traffic};
pub use report::{
    Calibration, CalibrationBin, Forecast, ReportTable, RolloutRecord, ScenarioReport,
};

use crate::evidence::Stage;
use crate::metrics::RequestRecord;
use crate::model::{Arm, LivePhase, Phase, Share, Version};
use crate::predict::Predictor;
use crate::rollout::{BuildError, ConfigError, Rollout, RolloutPolicy};
use crate::steer::{TrafficSteerer, WeightedSteerer};
use sampler::{Place, ScenarioSampler};

/// A simulation that cannot run, naming what is wrong.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SimulationError {
    /// A build, traffic or scenario parameter outside its range.
    #[error("{build}: {field} = {value} is out of range")]
    Model {
        /// `stable`, `candidate`, `traffic` or `scenario`.
        build: &'static str,
        /// The parameter (`routes` for a scenario without routes, with value 0).
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A route parameter outside its range.
    #[error("routes[{index}] ({route}): {field} = {value} is out of range")]
    Route {
        /// The route's position in the scenario's routes.
        index: usize,
        /// Its name.
        route: String,
        /// The parameter.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A simulation setting outside its range.
    #[error("{field}: {reason}")]
    Setting {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The rollout policy is invalid.
    #[error(transparent)]
    Policy(#[from] ConfigError),
    /// The rollout could not be built.
    #[error("cannot build the rollout: {0}")]
    Build(String),
    /// A sampling distribution refused its parameters.
    #[error("sampling distribution: {0}")]
    Distribution(String),
    /// The tokio runtime for the simulated clock could not be built.
    #[error("cannot build the simulation runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// How many rollouts to simulate and under which policy.
///
/// The default policy suits a few thousand live requests a look: a look every simulated
/// second, canary steps of 20, 50 and 100% of 2,000 candidate requests each, and holds
/// that pause after a minute without data or two minutes undecided. Looks are what a
/// simulated rollout spends most of its time on, so fewer, fuller looks simulate faster.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationConfig {
    /// Rollouts per scenario.
    pub rollouts: usize,
    /// Seed of the whole run; each rollout derives its own from it.
    pub seed: u64,
    /// Looks after which a rollout that is neither decided nor paused counts as
    /// undecided.
    pub max_looks: u64,
    /// Fraction of the reads stable serves live that are mirrored to the shadow (run on
    /// the twin and on the candidate), in `[0, 1]`.
    pub mirror_fraction: f64,
    /// Worker threads; 0 uses every available core.
    pub threads: usize,
    /// The rollout policy the controller runs.
    pub policy: RolloutPolicy,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        let percent = |p: f64| Share::from_percent(p).unwrap_or(Share::FULL);
        Self {
            rollouts: 1_000,
            seed: 0x5EED,
            max_looks: 400,
            mirror_fraction: 1.0,
            threads: 0,
            policy: RolloutPolicy {
                interval: Duration::from_secs(1),
                steps: [20.0, 50.0, 100.0].map(percent).to_vec(),
                min_samples: 200,
                min_samples_per_step: 2_000,
                no_data_deadline: Duration::from_secs(60),
                decision_deadline: Duration::from_secs(120),
                ..RolloutPolicy::default()
            },
        }
    }
}

/// The prior a calibration run draws its candidates from, and what counts as a failure
/// ([`Simulation::calibration`]).
///
/// ```
/// use shadowlib::analysis::SequentialConfig;
/// use shadowlib::simulate::{
///     BuildModel, CalibrationWorld, LatencyModel, Scenario, Simulation, SimulationConfig, Traffic,
/// };
/// use shadowlib::SequentialPredictor;
///
/// let config = SequentialConfig::default();
/// let world = CalibrationWorld::of(&config, 20, 200);
/// let build = BuildModel::new(LatencyModel::lognormal(1_000.0, 0.5)).with_error_rate(0.01);
/// let scenario = Scenario::new("calibration", build, build, Traffic::Steady { per_interval: 250.0 });
/// let simulation = Simulation::new(SimulationConfig { rollouts: 1, max_looks: 1, ..SimulationConfig::default() })?;
/// let calibration = simulation.calibration(&scenario, &world, SequentialPredictor::default)?;
/// assert_eq!(calibration.bins.iter().map(|b| b.forecasts).sum::<usize>(), 20);
/// # Ok::<(), shadowlib::simulate::SimulationError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationWorld {
    /// Standard deviation of the candidate's log shift of median latency.
    pub latency_sd: f64,
    /// A latency degradation above this is a failure.
    pub latency_tolerance: f64,
    /// Standard deviation of the candidate's change of error rate.
    pub error_sd: f64,
    /// An error-rate rise above this is a failure.
    pub error_tolerance: f64,
    /// Candidates drawn.
    pub candidates: usize,
    /// Forecasts are taken at the first look with this many pairs.
    pub at_pairs: u64,
}

impl CalibrationWorld {
    /// The world the sequential predictor's posterior assumes for latency and errors
    /// under `config`: each difference normal, centred on none, with a standard deviation
    /// of `prior_scale` tolerances.
    pub fn of(
        config: &crate::analysis::SequentialConfig,
        candidates: usize,
        at_pairs: u64,
    ) -> Self {
        let t = &config.tolerances;
        Self {
            latency_sd: config.prior_scale * t.latency.ln_1p(),
            latency_tolerance: t.latency,
            error_sd: config.prior_scale * t.error_rate,
            error_tolerance: t.error_rate,
            candidates,
            at_pairs,
        }
    }
}

/// Runs scenarios through the real controller.
#[derive(Debug, Clone)]
pub struct Simulation {
    config: SimulationConfig,
}

/// SplitMix64: decorrelates the seeds of neighbouring rollouts.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The stage a look in `phase` judges.
fn stage_of(phase: Phase) -> Stage {
    match phase {
        Phase::Canary { .. }
        | Phase::Paused {
            from: LivePhase::Canary { .. },
        } => Stage::Canary,
        _ => Stage::Shadow,
    }
}

/// The route labels of a scenario: each route's name for its reads, and the name with
/// ` (write)` for its writes.
struct RouteLabels {
    reads: Vec<String>,
    writes: Vec<String>,
}

impl RouteLabels {
    fn of(scenario: &Scenario) -> Self {
        Self {
            reads: scenario.routes.iter().map(|r| r.name.clone()).collect(),
            writes: scenario
                .routes
                .iter()
                .map(|r| format!("{} (write)", r.name))
                .collect(),
        }
    }

    fn label(&self, route: usize, write: bool) -> &str {
        if write {
            &self.writes[route]
        } else {
            &self.reads[route]
        }
    }
}

/// What every rollout of one scenario shares.
struct Prepared<'a> {
    scenario: &'a Scenario,
    sampler: ScenarioSampler,
    labels: RouteLabels,
    mirror: Bernoulli,
}

impl Simulation {
    /// A simulation with these settings, validated here.
    pub fn new(config: SimulationConfig) -> Result<Self, SimulationError> {
        config.policy.validate()?;
        if config.rollouts == 0 {
            return Err(SimulationError::Setting {
                field: "rollouts",
                reason: "at least one rollout is needed",
            });
        }
        if config.max_looks == 0 {
            return Err(SimulationError::Setting {
                field: "max_looks",
                reason: "at least one look is needed",
            });
        }
        if !(0.0..=1.0).contains(&config.mirror_fraction) {
            return Err(SimulationError::Setting {
                field: "mirror_fraction",
                reason: "must lie in [0, 1]",
            });
        }
        Ok(Self { config })
    }

    /// The settings in force.
    pub fn config(&self) -> &SimulationConfig {
        &self.config
    }

    /// Simulates `rollouts` rollouts of `scenario`, each with a fresh predictor from
    /// `new_predictor`, spread over the worker threads.
    pub fn run<P, F>(
        &self,
        scenario: &Scenario,
        new_predictor: F,
    ) -> Result<ScenarioReport, SimulationError>
    where
        P: Predictor + 'static,
        F: Fn() -> P + Sync,
    {
        let prepared = Prepared {
            scenario,
            sampler: ScenarioSampler::new(scenario)?,
            labels: RouteLabels::of(scenario),
            mirror: Bernoulli::new(self.config.mirror_fraction)
                .map_err(|e| SimulationError::Distribution(e.to_string()))?,
        };
        let predictor = new_predictor().name().to_owned();
        let threads = match self.config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(self.config.rollouts);
        let next = AtomicUsize::new(0);
        let records = Mutex::new(vec![None; self.config.rollouts]);
        let scenario_seed = mix(self.config.seed ^ name_hash(&scenario.name));
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> Result<(), SimulationError> {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_time()
                            .start_paused(true)
                            .build()?;
                        loop {
                            let index = next.fetch_add(1, Ordering::Relaxed);
                            if index >= self.config.rollouts {
                                return Ok(());
                            }
                            // Mixed on both sides, so neighbouring run seeds do not share rollouts.
                            let seed = mix(scenario_seed.wrapping_add(mix(index as u64)));
                            let record =
                                runtime.block_on(self.rollout(&prepared, new_predictor(), seed))?;
                            records.lock().unwrap_or_else(PoisonError::into_inner)[index] =
                                Some(record);
                        }
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|worker| {
                // A worker only panics on a bug in the predictor or the controller; pass
                // the panic on rather than reporting a partial table.
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        })?;
        let records = records
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .into_iter()
            .flatten()
            .collect();
        Ok(ScenarioReport {
            scenario: scenario.name.clone(),
            predictor,
            true_degradation: scenario.true_degradation(),
            identical_builds: scenario.identical_builds(),
            records,
        })
    }

    /// How well a predictor's failure probability is calibrated, in a world drawn from a
    /// prior: [`CalibrationWorld::candidates`] variants of `scenario`, each candidate's
    /// median latency shifted by a factor `exp(θ)` and its error rate by `δ`, `θ` and `δ`
    /// drawn from centred normals, each variant rolled out
    /// [`rollouts`](SimulationConfig::rollouts) times. The forecast is the failure
    /// probability at the first look with at least [`CalibrationWorld::at_pairs`] pairs; the
    /// event is a true latency degradation ([`Scenario::true_degradation`]) or error-rate
    /// rise above its tolerance.
    ///
    /// A forecaster is calibrated only for a world like the one it assumes: draw from the
    /// prior the predictor's posterior uses to check it, and from another to see how much
    /// that matters.
    pub fn calibration<P, F>(
        &self,
        scenario: &Scenario,
        world: &CalibrationWorld,
        new_predictor: F,
    ) -> Result<Calibration, SimulationError>
    where
        P: Predictor + 'static,
        F: Fn() -> P + Sync,
    {
        let normal = |sd: f64| {
            rand_distr::Normal::new(0.0, sd)
                .map_err(|e| SimulationError::Distribution(e.to_string()))
        };
        let (latency_prior, error_prior) = (normal(world.latency_sd)?, normal(world.error_sd)?);
        let mut rng = SmallRng::seed_from_u64(mix(self.config.seed ^ name_hash(&scenario.name)));
        let mut points = Vec::new();
        for i in 0..world.candidates {
            let shift: f64 = latency_prior.sample(&mut rng);
            let rise: f64 = error_prior.sample(&mut rng);
            let mut variant = scenario.clone();
            variant.name = format!("{} #{i}", scenario.name);
            variant.candidate.latency.median_us *= shift.exp();
            // A rate cannot fall below zero: such draws are clamped there.
            let error_rate = (variant.candidate.error_rate + rise).clamp(0.0, 1.0);
            variant.candidate.error_rate = error_rate;
            let worse = variant.true_degradation() > world.latency_tolerance
                || error_rate - variant.stable.error_rate > world.error_tolerance;
            let report = self.run(&variant, &new_predictor)?;
            points.extend(
                report
                    .records
                    .iter()
                    .filter_map(|r| r.forecast_at(world.at_pairs))
                    .map(|f| (f.failure_probability, worse)),
            );
        }
        Calibration::by_tenths(&points).ok_or(SimulationError::Setting {
            field: "at_pairs",
            reason: "no rollout made a forecast on that many pairs",
        })
    }

    /// One rollout: each interval, live requests are split by the steerer's share and
    /// recorded live; stable's reads are mirrored and run on the twin and the candidate in
    /// the shadow; time advances one interval and the controller looks. It ends when the
    /// rollout is decided or paused (a paused rollout waits for an operator), or when the
    /// look budget is spent.
    async fn rollout<P: Predictor + 'static>(
        &self,
        prepared: &Prepared<'_>,
        predictor: P,
        seed: u64,
    ) -> Result<RolloutRecord, SimulationError> {
        let Prepared {
            scenario,
            sampler,
            labels,
            mirror,
        } = prepared;
        let mut rng = SmallRng::seed_from_u64(seed);
        let policy = &self.config.policy;
        let (stable_version, candidate_version) = (
            Version::new(&scenario.name, "stable"),
            Version::new(&scenario.name, "candidate"),
        );
        let steerer = Arc::new(WeightedSteerer::new());
        let (rollout, mut controller) = Rollout::builder(stable_version, candidate_version)
            .policy(policy.clone())
            .predictor(predictor)
            .steerer(Arc::clone(&steerer))
            .without_process_sampling()
            .build_driven()
            .map_err(|e| match e {
                BuildError::Policy(e) => SimulationError::Policy(e),
                other => SimulationError::Build(other.to_string()),
            })?;
        let recorder = Arc::clone(rollout.recorder());
        let pairs = Arc::clone(rollout.pairs());
        let handle = rollout.handle();
        let mut looks = 0;
        let mut stage = Stage::Shadow;
        let mut forecasts = Vec::new();
        loop {
            let phase = handle.status().phase;
            if looks >= self.config.max_looks
                || phase.is_terminal()
                || matches!(phase, Phase::Paused { .. })
            {
                break;
            }
            stage = stage_of(phase);
            let share: Share = steerer.share();
            let to_candidate = Bernoulli::new(share.fraction().clamp(0.0, 1.0))
                .map_err(|e| SimulationError::Distribution(e.to_string()))?;
            for _ in 0..scenario.traffic.requests(looks, &mut rng) {
                let request = sampler.request(&mut rng);
                let arm = if to_candidate.sample(&mut rng) {
                    Arm::Candidate
                } else {
                    Arm::Stable
                };
                let route = labels.label(request.route, request.write);
                let live = sampler.run(arm, &request, Place::Live, &mut rng);
                let latency = live.latency.unwrap_or_default();
                recorder
                    .record_request(RequestRecord::new(arm, live.outcome, latency).route(route));
                if arm == Arm::Stable && !request.write && mirror.sample(&mut rng) {
                    let twin = sampler.run(Arm::Stable, &request, Place::Shadow, &mut rng);
                    let candidate = sampler.run(Arm::Candidate, &request, Place::Shadow, &mut rng);
                    let compared = sampler.compare(&twin, &candidate, &mut rng);
                    pairs.record_pair(route, 0, &twin, &candidate, compared.as_ref());
                }
            }
            tokio::time::advance(policy.interval).await;
            controller.look().await;
            looks += 1;
            if let Some(prediction) = handle.status().last_prediction {
                forecasts.push(Forecast {
                    look: looks,
                    pairs: pairs.snapshot().pairs.total.pairs(),
                    failure_probability: prediction.failure_probability,
                });
            }
        }
        let status = handle.status();
        Ok(RolloutRecord {
            phase: status.phase,
            stage,
            looks,
            samples: status.samples,
            pairs: pairs.snapshot().pairs.total.pairs(),
            degradation: status.last_prediction.map(|p| p.performance_degradation),
            decision: status.last_decision,
            forecasts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::SequentialPredictor;

    fn one_rollout(max_looks: u64, mirror_fraction: f64) -> Simulation {
        Simulation::new(SimulationConfig {
            rollouts: 1,
            max_looks,
            mirror_fraction,
            threads: 1,
            ..SimulationConfig::default()
        })
        .expect("valid settings")
    }

    fn aa(read_share: f64) -> Scenario {
        let build = BuildModel::new(LatencyModel::lognormal(100.0, 0.5));
        Scenario::new(
            "A/A",
            build,
            build,
            Traffic::Steady {
                per_interval: 1_000.0,
            },
        )
        .with_read_share(read_share)
    }

    #[test]
    fn writes_are_never_mirrored_so_a_write_only_service_has_no_shadow_data() {
        let report = one_rollout(400, 1.0)
            .run(&aa(0.0), SequentialPredictor::default)
            .expect("runs");
        let record = &report.records[0];
        assert_eq!(record.pairs, 0);
        assert_eq!(
            record.phase,
            Phase::Paused {
                from: LivePhase::Shadowing
            }
        );
        let decision = record.decision.as_ref().expect("paused").to_string();
        assert!(decision.contains("no data"), "{decision}");
    }

    #[test]
    fn only_the_mirrored_share_of_stables_reads_is_paired() {
        // One look of ~1,000 requests, half of them reads, half of those mirrored.
        let report = one_rollout(1, 0.5)
            .run(&aa(0.5), SequentialPredictor::default)
            .expect("runs");
        let pairs = report.records[0].pairs;
        assert!((175..=325).contains(&pairs), "{pairs}");
    }

    #[test]
    fn a_rollout_stops_once_paused() {
        let report = one_rollout(1_000, 0.0)
            .run(&aa(1.0), SequentialPredictor::default)
            .expect("runs");
        let record = &report.records[0];
        // The no-data deadline is a minute of one-second looks.
        assert!(matches!(record.phase, Phase::Paused { .. }));
        assert!(record.looks <= 62, "{}", record.looks);
        assert_eq!(record.stage, Stage::Shadow);
    }
}
