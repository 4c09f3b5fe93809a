//! The rollout simulator: synthetic stable and candidate request streams run through the
//! real rollout controller under deterministic (paused) time, many rollouts per
//! scenario, to measure what matters about a predictor: how often it rolls back identical
//! builds, how fast it catches real regressions, and whether its intervals cover the truth.
//!
//! Available with the `simulate` feature. Each rollout gets its own seeded random stream,
//! so a run is reproducible whatever the number of threads.
//!
//! ```
//! use std::time::Duration;
//! use shadowlib::{Phase, RolloutPolicy, SequentialPredictor};
//! use shadowlib::simulate::{BuildModel, LatencyModel, Scenario, Simulation, SimulationConfig, Traffic};
//!
//! let build = BuildModel { latency: LatencyModel::lognormal(1_000.0, 0.5), error_rate: 0.0 };
//! let broken = BuildModel { error_rate: 0.2, ..build };
//! let scenario = Scenario::new("20% errors", build, broken, Traffic::Steady { per_interval: 200.0 });
//! let simulation = Simulation::new(SimulationConfig { rollouts: 4, ..Default::default() })?;
//! let report = simulation.run(&scenario, SequentialPredictor::default)?;
//! assert_eq!(report.fraction_in(Phase::RolledBack), 1.0);
//! # Ok::<(), shadowlib::simulate::SimulationError>(())
//! ```

mod baseline;
mod history;
mod model;
mod report;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Binomial, Distribution as _};
use thiserror::Error;

pub use baseline::KayentaMannWhitney;
pub use history::{HistoryConfig, brier_score, synthetic_history};
pub use model::{BuildModel, LatencyModel, Scenario, Tail, Traffic};
pub use report::{ReportTable, RolloutRecord, ScenarioReport};

use crate::metrics::{ReadComparison, ResourceUsage, Run};
use crate::model::{Arm, Share, Version};
use crate::predict::Predictor;
use crate::rollout::{BuildError, ConfigError, Rollout, RolloutPolicy};
use crate::steer::{TrafficSteerer, WeightedSteerer};
use model::RequestSampler;

/// A simulation that cannot run, naming what is wrong.
#[derive(Debug, Error)]
pub enum SimulationError {
    /// A build or traffic parameter outside its range.
    #[error("{build}: {field} = {value} is out of range")]
    Model {
        /// `stable`, `candidate` or `traffic`.
        build: &'static str,
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
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationConfig {
    /// Rollouts per scenario.
    pub rollouts: usize,
    /// Seed of the whole run; each rollout derives its own from it.
    pub seed: u64,
    /// Looks after which a rollout that is neither promoted nor rolled back counts as
    /// undecided.
    pub max_looks: u64,
    /// Fraction of stable's live requests copied to the candidate as shadow reads, in
    /// `[0, 1]`. The candidate also serves its canary share of live traffic.
    pub mirror_fraction: f64,
    /// Worker threads; 0 uses every available core.
    pub threads: usize,
    /// The rollout policy the controller runs.
    pub policy: RolloutPolicy,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            rollouts: 1_000,
            seed: 0x5EED,
            max_looks: 1_000,
            mirror_fraction: 1.0,
            threads: 0,
            policy: RolloutPolicy {
                interval: Duration::from_secs(1),
                min_samples: 200,
                min_samples_per_step: 4_000,
                ..RolloutPolicy::default()
            },
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
        scenario.validate()?;
        let stable = RequestSampler::new(&scenario.stable)?;
        let candidate = RequestSampler::new(&scenario.candidate)?;
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
                            let record = runtime.block_on(self.rollout(
                                scenario,
                                (&stable, &candidate),
                                new_predictor(),
                                seed,
                            ))?;
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
            records,
        })
    }

    /// One rollout: each interval, live requests are split by the steerer's share, stable's
    /// reads are mirrored to the candidate, time advances one interval and the controller
    /// looks.
    async fn rollout<P: Predictor + 'static>(
        &self,
        scenario: &Scenario,
        (stable, candidate): (&RequestSampler, &RequestSampler),
        predictor: P,
        seed: u64,
    ) -> Result<RolloutRecord, SimulationError> {
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
        let split = |n: u64, p: f64, rng: &mut SmallRng| {
            Binomial::new(n, p.clamp(0.0, 1.0)).map_or(0, |b| b.sample(rng))
        };
        let mut looks = 0;
        while looks < self.config.max_looks && !handle.status().phase.is_terminal() {
            let live = scenario.traffic.requests(looks, &mut rng);
            let share: Share = steerer.share();
            let to_candidate = split(live, share.fraction(), &mut rng);
            let to_stable = live - to_candidate;
            let mirrored = split(to_stable, self.config.mirror_fraction, &mut rng);
            for _ in 0..to_stable {
                let (outcome, latency) = stable.sample(&mut rng);
                recorder.record(Arm::Stable, outcome, latency, 0, 0);
            }
            for _ in 0..to_candidate {
                let (outcome, latency) = candidate.sample(&mut rng);
                recorder.record(Arm::Candidate, outcome, latency, 0, 0);
            }
            for _ in 0..mirrored {
                let run = |(outcome, latency): (crate::Outcome, Duration)| Run {
                    outcome,
                    latency: Some(latency),
                    usage: ResourceUsage::default(),
                    response_bytes: 0,
                };
                let twin = run(stable.sample(&mut rng));
                let shadowed = run(candidate.sample(&mut rng));
                let same = ReadComparison::default();
                pairs.record_pair("GET /", 0, &twin, &shadowed, Some(&same));
            }
            tokio::time::advance(policy.interval).await;
            controller.look().await;
            looks += 1;
        }
        let status = handle.status();
        Ok(RolloutRecord {
            phase: status.phase,
            looks,
            samples: status.samples,
            degradation: status.last_prediction.map(|p| p.performance_degradation),
        })
    }
}
