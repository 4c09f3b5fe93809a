//! Draws a scenario's requests and each build's runs of them: the paired model of
//! [`Scenario`].

use std::time::Duration;

use rand::Rng;
use rand_distr::weighted::WeightedIndex;
use rand_distr::{Bernoulli, Distribution as _, StandardNormal};

use super::SimulationError;
use super::model::{BuildModel, Scenario};
use crate::metrics::{Allocations, Differed, ReadComparison, ResourceUsage, Run};
use crate::model::{Arm, Outcome};

/// The field a build's wrong response differs in.
pub(super) const WRONG_FIELD: &str = "/price";
/// The timestamp-like field that differs on every response of a noisy scenario.
pub(super) const NOISY_FIELD: &str = "/at";

/// One live request: what both builds' runs of it share.
#[derive(Debug, Clone, Copy)]
pub(super) struct Request {
    /// Index of its route in the scenario's routes.
    pub(super) route: usize,
    /// Whether it is a write (never mirrored).
    pub(super) write: bool,
    /// Its own cost (a big query, a small one) as a standard normal draw, which each
    /// build scales by its `σ`.
    own_cost: f64,
}

/// Where a run happens: live, or in the shadow's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Live,
    Shadow,
}

fn distribution_error(e: &dyn std::fmt::Display) -> SimulationError {
    SimulationError::Distribution(e.to_string())
}

/// One build's parameters, in the log terms the runs are drawn in.
struct BuildSampler {
    ln_median_us: f64,
    sigma: f64,
    tail: Option<(Bernoulli, f64)>,
    failure: Bernoulli,
    ln_cpu_us: Option<f64>,
    wrong: Bernoulli,
    panic: Bernoulli,
    ln_allocated_bytes: Option<f64>,
}

impl BuildSampler {
    fn new(model: &BuildModel) -> Result<Self, SimulationError> {
        let tail = match model.latency.tail {
            Some(t) => Some((
                Bernoulli::new(t.fraction).map_err(|e| distribution_error(&e))?,
                t.slowdown.ln(),
            )),
            None => None,
        };
        Ok(Self {
            ln_median_us: model.latency.median_us.ln(),
            sigma: model.latency.sigma,
            tail,
            failure: Bernoulli::new(model.error_rate).map_err(|e| distribution_error(&e))?,
            ln_cpu_us: model.cpu_us.map(f64::ln),
            wrong: Bernoulli::new(model.wrong_response_rate).map_err(|e| distribution_error(&e))?,
            panic: Bernoulli::new(model.panic_rate).map_err(|e| distribution_error(&e))?,
            ln_allocated_bytes: model.allocated_bytes.map(f64::ln),
        })
    }
}

/// Draws the requests of one scenario and the runs of them.
pub(super) struct ScenarioSampler {
    routes: WeightedIndex<f64>,
    ln_costs: Vec<f64>,
    ln_candidate_factors: Vec<f64>,
    read: Bernoulli,
    ln_write_cost: f64,
    run_noise: f64,
    ln_shadow_speed: f64,
    noisy_field: bool,
    stable: BuildSampler,
    candidate: BuildSampler,
}

fn duration_from_micros(micros: f64) -> Duration {
    // A saturating cast: a pathological draw counts as the longest duration, never panics.
    Duration::from_nanos((micros * 1_000.0) as u64)
}

impl ScenarioSampler {
    /// The sampler of a scenario, which is validated here.
    pub(super) fn new(scenario: &Scenario) -> Result<Self, SimulationError> {
        scenario.validate()?;
        let routes = WeightedIndex::new(scenario.routes.iter().map(|r| r.weight))
            .map_err(|e| distribution_error(&e))?;
        Ok(Self {
            routes,
            ln_costs: scenario.routes.iter().map(|r| r.cost.ln()).collect(),
            ln_candidate_factors: scenario
                .routes
                .iter()
                .map(|r| r.candidate_factor.ln())
                .collect(),
            read: Bernoulli::new(scenario.read_share).map_err(|e| distribution_error(&e))?,
            ln_write_cost: scenario.write_cost.ln(),
            run_noise: scenario.run_noise,
            ln_shadow_speed: scenario.shadow_speed.ln(),
            noisy_field: scenario.noisy_field,
            stable: BuildSampler::new(&scenario.stable)?,
            candidate: BuildSampler::new(&scenario.candidate)?,
        })
    }

    /// A new live request.
    pub(super) fn request(&self, rng: &mut impl Rng) -> Request {
        Request {
            route: self.routes.sample(rng),
            write: !self.read.sample(rng),
            own_cost: rng.sample(StandardNormal),
        }
    }

    fn build(&self, arm: Arm) -> &BuildSampler {
        match arm {
            Arm::Stable => &self.stable,
            Arm::Candidate => &self.candidate,
        }
    }

    /// The log of what a request costs `arm` before any run's own noise: the build's
    /// median, the route's and the request's own cost.
    fn ln_cost(&self, arm: Arm, request: &Request, ln_median: f64) -> f64 {
        let build = self.build(arm);
        let write = if request.write {
            self.ln_write_cost
        } else {
            0.0
        };
        ln_median + self.ln_costs[request.route] + write + build.sigma * request.own_cost
    }

    /// One run of `request` on `arm`, live or in the shadow.
    pub(super) fn run<R: Rng>(
        &self,
        arm: Arm,
        request: &Request,
        place: Place,
        rng: &mut R,
    ) -> Run {
        let build = self.build(arm);
        let noise = |rng: &mut R| self.run_noise * rng.sample::<f64, _>(StandardNormal);
        let mut ln_latency = self.ln_cost(arm, request, build.ln_median_us) + noise(rng);
        if arm == Arm::Candidate {
            ln_latency += self.ln_candidate_factors[request.route];
        }
        if let Some((hit, ln_slowdown)) = &build.tail
            && hit.sample(rng)
        {
            ln_latency += ln_slowdown;
        }
        if place == Place::Shadow {
            ln_latency -= self.ln_shadow_speed;
        }
        // Thread CPU time counts only time on the CPU, so a slower shadow environment,
        // which mostly waits longer, leaves it as it is; so do allocations.
        let cpu_time = build.ln_cpu_us.map(|ln_cpu| {
            duration_from_micros((self.ln_cost(arm, request, ln_cpu) + noise(rng)).exp())
        });
        let allocations = build.ln_allocated_bytes.map(|ln_bytes| Allocations {
            // A saturating cast, as for durations.
            bytes: (self.ln_cost(arm, request, ln_bytes) + noise(rng)).exp() as u64,
            count: 1,
        });
        // A panic ends the run without a response, so without a latency.
        if build.panic.sample(rng) {
            return Run {
                outcome: Outcome::Panic,
                latency: None,
                usage: ResourceUsage {
                    cpu_time,
                    allocations,
                    ..ResourceUsage::default()
                },
                response_bytes: 0,
            };
        }
        let outcome = if build.failure.sample(rng) {
            Outcome::ServerError
        } else {
            Outcome::Success
        };
        Run {
            outcome,
            latency: Some(duration_from_micros(ln_latency.exp())),
            usage: ResourceUsage {
                cpu_time,
                allocations,
                ..ResourceUsage::default()
            },
            response_bytes: 0,
        }
    }

    /// How the twin's and the candidate's responses to a mirrored read differ from the
    /// live response; `None` when either failed (an error is the error test's, not a
    /// mismatch).
    pub(super) fn compare(
        &self,
        twin: &Run,
        candidate: &Run,
        rng: &mut impl Rng,
    ) -> Option<ReadComparison> {
        if twin.outcome.is_failure() || candidate.outcome.is_failure() {
            return None;
        }
        let mut fields = Vec::new();
        if self.noisy_field {
            fields.push((NOISY_FIELD.to_owned(), Differed::Both));
        }
        let differed = match (
            self.stable.wrong.sample(rng),
            self.candidate.wrong.sample(rng),
        ) {
            (true, true) => Some(Differed::Both),
            (true, false) => Some(Differed::TwinOnly),
            (false, true) => Some(Differed::CandidateOnly),
            (false, false) => None,
        };
        if let Some(differed) = differed {
            fields.push((WRONG_FIELD.to_owned(), differed));
        }
        Some(ReadComparison { fields })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::evidence::Moments;
    use crate::simulate::{LatencyModel, RouteModel, Traffic};

    fn scenario(stable: BuildModel, candidate: BuildModel) -> Scenario {
        Scenario::new(
            "test",
            stable,
            candidate,
            Traffic::Steady { per_interval: 1.0 },
        )
    }

    fn micros(run: &Run) -> f64 {
        run.latency
            .expect("every simulated run answers")
            .as_secs_f64()
            * 1e6
    }

    #[test]
    fn runs_of_one_request_share_its_cost_and_differ_by_run_noise() {
        let build = BuildModel::new(LatencyModel::lognormal(1_000.0, 0.5));
        let sampler = ScenarioSampler::new(&scenario(build, build)).expect("valid");
        let mut rng = SmallRng::seed_from_u64(1);
        let (mut between, mut within) = (Moments::default(), Moments::default());
        for _ in 0..20_000 {
            let request = sampler.request(&mut rng);
            let twin = sampler.run(Arm::Stable, &request, Place::Shadow, &mut rng);
            let candidate = sampler.run(Arm::Candidate, &request, Place::Shadow, &mut rng);
            between.add(micros(&twin).ln());
            within.add((micros(&candidate) / micros(&twin)).ln());
        }
        // ln latency varies by σ² + noise² between requests, a pair's log ratio only by
        // 2 · noise².
        assert!(
            (between.variance() - 0.2525).abs() < 0.01,
            "{}",
            between.variance()
        );
        assert!(
            (within.variance() - 0.005).abs() < 0.0005,
            "{}",
            within.variance()
        );
        assert!(within.mean().abs() < 0.002, "{}", within.mean());
    }

    #[test]
    fn the_shadow_environment_slows_both_builds_alike() {
        let build = BuildModel::new(LatencyModel::lognormal(1_000.0, 0.0)).with_cpu_us(100.0);
        let scenario = scenario(build, build)
            .with_run_noise(0.0)
            .with_shadow_speed(0.5);
        let sampler = ScenarioSampler::new(&scenario).expect("valid");
        let mut rng = SmallRng::seed_from_u64(2);
        let request = sampler.request(&mut rng);
        let live = sampler.run(Arm::Stable, &request, Place::Live, &mut rng);
        let twin = sampler.run(Arm::Stable, &request, Place::Shadow, &mut rng);
        let candidate = sampler.run(Arm::Candidate, &request, Place::Shadow, &mut rng);
        assert!((micros(&live) - 1_000.0).abs() < 0.01);
        assert!((micros(&twin) - 2_000.0).abs() < 0.01);
        assert_eq!(twin.latency, candidate.latency);
        assert_eq!(twin.usage.cpu_time, Some(Duration::from_micros(100)));
        assert_eq!(live.usage.cpu_time, twin.usage.cpu_time);
    }

    #[test]
    fn routes_writes_and_the_candidates_route_factor_scale_latency() {
        let build = BuildModel::new(LatencyModel::lognormal(100.0, 0.0));
        let scenario = scenario(build, build)
            .with_run_noise(0.0)
            .with_read_share(0.0)
            .with_write_cost(0.5)
            .with_routes(vec![
                RouteModel::new("GET /slow", 1.0, 10.0).with_candidate_factor(1.1),
            ]);
        let sampler = ScenarioSampler::new(&scenario).expect("valid");
        let mut rng = SmallRng::seed_from_u64(3);
        let request = sampler.request(&mut rng);
        assert!(request.write);
        let stable = sampler.run(Arm::Stable, &request, Place::Live, &mut rng);
        let candidate = sampler.run(Arm::Candidate, &request, Place::Live, &mut rng);
        assert!((micros(&stable) - 500.0).abs() < 0.01);
        assert!((micros(&candidate) - 550.0).abs() < 0.01);
    }

    #[test]
    fn wrong_responses_and_noise_are_told_apart() {
        let stable = BuildModel::new(LatencyModel::lognormal(100.0, 0.1));
        let scenario =
            scenario(stable, stable.with_wrong_response_rate(1.0)).with_noisy_field(true);
        let sampler = ScenarioSampler::new(&scenario).expect("valid");
        let mut rng = SmallRng::seed_from_u64(4);
        let request = sampler.request(&mut rng);
        let twin = sampler.run(Arm::Stable, &request, Place::Shadow, &mut rng);
        let candidate = sampler.run(Arm::Candidate, &request, Place::Shadow, &mut rng);
        let compared = sampler
            .compare(&twin, &candidate, &mut rng)
            .expect("both answered");
        assert_eq!(
            compared.fields,
            [
                (NOISY_FIELD.to_owned(), Differed::Both),
                (WRONG_FIELD.to_owned(), Differed::CandidateOnly)
            ]
        );
        let failed = Run {
            outcome: Outcome::ServerError,
            ..candidate
        };
        assert_eq!(sampler.compare(&twin, &failed, &mut rng), None);
    }
}
