//! What the simulated builds, their routes and their traffic look like.

use rand::Rng;
use rand_distr::{Distribution as _, Poisson};
use serde::{Deserialize, Serialize};

use super::SimulationError;
use crate::evidence::LATENCY_FLOOR;

/// A share of requests that are slower by a factor: a tail mixture.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tail {
    /// Fraction of requests affected, in `[0, 1]`.
    pub fraction: f64,
    /// Factor their latency is multiplied by (10 = ten times slower).
    pub slowdown: f64,
}

/// Request latency: lognormal around a median, optionally with a slow tail mixed in.
///
/// The lognormal's spread is the spread *between requests* (a big query, a small one),
/// which a request shares on both builds; see [`Scenario`] for how a request's cost and
/// each run's own noise combine.
///
/// ```
/// use shadowlib::simulate::LatencyModel;
///
/// let stable = LatencyModel::lognormal(1_000.0, 0.5);
/// let wider = stable.with_variance_scaled(2.0);
/// assert_eq!(wider.median_us, 1_000.0);
/// assert!(wider.sigma > stable.sigma);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyModel {
    /// Median latency of the lognormal part at route cost 1, in microseconds.
    pub median_us: f64,
    /// Standard deviation of log latency between requests (the lognormal's shape).
    pub sigma: f64,
    /// The slow tail, if any: each run is slowed on its own, with this probability.
    pub tail: Option<Tail>,
}

impl LatencyModel {
    /// Lognormal latency with this median (µs) and log standard deviation.
    pub fn lognormal(median_us: f64, sigma: f64) -> Self {
        Self {
            median_us,
            sigma,
            tail: None,
        }
    }

    /// The same latency with a fraction of requests `slowdown` times slower.
    pub fn with_tail(self, fraction: f64, slowdown: f64) -> Self {
        Self {
            tail: Some(Tail { fraction, slowdown }),
            ..self
        }
    }

    /// The same median with the variance of latency (not of its log) multiplied by
    /// `factor`: solves `(e^{s'²} − 1) e^{s'²} = factor · (e^{s²} − 1) e^{s²}` for the new
    /// shape `s'`.
    pub fn with_variance_scaled(self, factor: f64) -> Self {
        let y = (self.sigma * self.sigma).exp();
        let target = factor * (y - 1.0) * y;
        let new_y = (1.0 + (1.0 + 4.0 * target).sqrt()) / 2.0;
        Self {
            sigma: new_y.ln().sqrt(),
            ..self
        }
    }

    /// Expected log latency at route cost 1, `ln median + fraction · ln slowdown`.
    pub fn log_mean(&self) -> f64 {
        self.median_us.ln() + self.tail.map_or(0.0, |t| t.fraction * t.slowdown.ln())
    }

    /// `E[ln(latency + floor)]` of a run at `scale` times the median, with `run_noise`
    /// added to the request's own spread: what the latency tests compare (see
    /// [`LATENCY_FLOOR`](crate::LATENCY_FLOOR)).
    fn floored_log_mean(&self, scale: f64, run_noise: f64, floor_us: f64) -> f64 {
        let spread = (self.sigma * self.sigma + run_noise * run_noise).sqrt();
        let median = self.median_us * scale;
        let at = |median: f64| expected_log_floored(median, spread, floor_us);
        match self.tail {
            None => at(median),
            Some(t) => (1.0 - t.fraction) * at(median) + t.fraction * at(median * t.slowdown),
        }
    }

    fn validate(&self, build: &'static str) -> Result<(), SimulationError> {
        let bad = |field: &'static str, value: f64| SimulationError::Model {
            build,
            field,
            value,
        };
        if !(self.median_us >= 1.0 && self.median_us.is_finite()) {
            return Err(bad("median_us", self.median_us));
        }
        if !(self.sigma >= 0.0 && self.sigma.is_finite()) {
            return Err(bad("sigma", self.sigma));
        }
        if let Some(tail) = self.tail {
            if !(0.0..=1.0).contains(&tail.fraction) {
                return Err(bad("tail.fraction", tail.fraction));
            }
            if !(tail.slowdown > 0.0 && tail.slowdown.is_finite()) {
                return Err(bad("tail.slowdown", tail.slowdown));
            }
        }
        Ok(())
    }
}

/// One simulated build: its latency, failures, CPU and wrong responses.
///
/// ```
/// use shadowlib::simulate::{BuildModel, LatencyModel};
///
/// let stable = BuildModel::new(LatencyModel::lognormal(1_000.0, 0.5))
///     .with_error_rate(0.005)
///     .with_cpu_us(200.0);
/// let wrong_price = stable.with_wrong_response_rate(0.01);
/// assert_eq!(wrong_price.cpu_us, Some(200.0));
/// assert_eq!(wrong_price.wrong_response_rate, 0.01);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BuildModel {
    /// Latency of every request that ran.
    pub latency: LatencyModel,
    /// Probability that a run fails with a server error, in `[0, 1]`.
    pub error_rate: f64,
    /// Median CPU time per request at route cost 1, in microseconds, if the shadow
    /// measures it. It follows the request's own cost, as latency does, with each run's
    /// own noise.
    #[serde(default)]
    pub cpu_us: Option<f64>,
    /// Probability, in `[0, 1]`, that the build's response to a mirrored read differs from
    /// the live response in a field (`/price`). The live response is stable's, so for
    /// stable this is noise (two runs of one build disagreeing); a candidate with a bug on
    /// 1% of reads on top of stable's noise `r` has `r + 0.01`.
    #[serde(default)]
    pub wrong_response_rate: f64,
    /// Probability, in `[0, 1]`, that a run panics: a failure class of its own, with no
    /// latency, which a build that never panics makes "novel".
    #[serde(default)]
    pub panic_rate: f64,
    /// Median bytes allocated per request at route cost 1, if the shadow counts them. It
    /// follows the request's own cost, as CPU time does.
    #[serde(default)]
    pub allocated_bytes: Option<f64>,
}

impl BuildModel {
    /// A build with this latency that never fails, has no CPU measured and answers like
    /// live.
    pub fn new(latency: LatencyModel) -> Self {
        Self {
            latency,
            error_rate: 0.0,
            cpu_us: None,
            wrong_response_rate: 0.0,
            panic_rate: 0.0,
            allocated_bytes: None,
        }
    }

    /// The same build with another latency.
    pub fn with_latency(self, latency: LatencyModel) -> Self {
        Self { latency, ..self }
    }

    /// The same build failing this share of runs.
    pub fn with_error_rate(self, error_rate: f64) -> Self {
        Self { error_rate, ..self }
    }

    /// The same build with this median CPU time per request (µs, at route cost 1),
    /// measured in the shadow.
    pub fn with_cpu_us(self, cpu_us: f64) -> Self {
        Self {
            cpu_us: Some(cpu_us),
            ..self
        }
    }

    /// The same build panicking on this share of runs.
    pub fn with_panic_rate(self, panic_rate: f64) -> Self {
        Self { panic_rate, ..self }
    }

    /// The same build allocating this median of bytes per request (at route cost 1),
    /// counted in the shadow.
    pub fn with_allocated_bytes(self, allocated_bytes: f64) -> Self {
        Self {
            allocated_bytes: Some(allocated_bytes),
            ..self
        }
    }

    /// The same build differing from live in a field on this share of mirrored reads.
    pub fn with_wrong_response_rate(self, wrong_response_rate: f64) -> Self {
        Self {
            wrong_response_rate,
            ..self
        }
    }

    fn validate(&self, build: &'static str) -> Result<(), SimulationError> {
        self.latency.validate(build)?;
        let bad = |field: &'static str, value: f64| SimulationError::Model {
            build,
            field,
            value,
        };
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(bad("error_rate", self.error_rate));
        }
        if let Some(cpu_us) = self.cpu_us
            && !(cpu_us > 0.0 && cpu_us.is_finite())
        {
            return Err(bad("cpu_us", cpu_us));
        }
        if !(0.0..=1.0).contains(&self.wrong_response_rate) {
            return Err(bad("wrong_response_rate", self.wrong_response_rate));
        }
        if !(0.0..=1.0).contains(&self.panic_rate) {
            return Err(bad("panic_rate", self.panic_rate));
        }
        if let Some(bytes) = self.allocated_bytes
            && !(bytes > 0.0 && bytes.is_finite())
        {
            return Err(bad("allocated_bytes", bytes));
        }
        Ok(())
    }
}

/// One route of the simulated service: its share of requests, how costly its requests
/// are on both builds, and how much slower the candidate is on it.
///
/// ```
/// use shadowlib::simulate::RouteModel;
///
/// let search = RouteModel::new("GET /search", 1.0, 10.0).with_candidate_factor(1.1);
/// assert_eq!(search.cost, 10.0);
/// assert_eq!(search.candidate_factor, 1.1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RouteModel {
    /// The route label its reads are recorded under; its writes are recorded under the
    /// label with ` (write)` appended, as a service's writes have routes of their own.
    pub name: String,
    /// Its share of live requests, relative to the other routes' weights (positive).
    pub weight: f64,
    /// Its requests' cost: both builds' median latency (and CPU) on it is the build's
    /// median times this (positive).
    pub cost: f64,
    /// The candidate's latency on this route, relative to what its build model says
    /// (1.1 = 10% slower on this route only).
    pub candidate_factor: f64,
}

impl RouteModel {
    /// A route with this label, weight and cost, on which the candidate is as its build
    /// model says.
    pub fn new(name: impl Into<String>, weight: f64, cost: f64) -> Self {
        Self {
            name: name.into(),
            weight,
            cost,
            candidate_factor: 1.0,
        }
    }

    /// The same route with the candidate `factor` times slower on it.
    pub fn with_candidate_factor(self, factor: f64) -> Self {
        Self {
            candidate_factor: factor,
            ..self
        }
    }

    fn validate(&self, index: usize) -> Result<(), SimulationError> {
        for (field, value) in [
            ("weight", self.weight),
            ("cost", self.cost),
            ("candidate_factor", self.candidate_factor),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(SimulationError::Route {
                    index,
                    route: self.name.clone(),
                    field,
                    value,
                });
            }
        }
        Ok(())
    }
}

/// How many live requests arrive per interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Traffic {
    /// Poisson with this mean every interval.
    Steady {
        /// Mean requests per interval.
        per_interval: f64,
    },
    /// Nothing for `every − 1` intervals, then a Poisson burst with this mean: sparse
    /// traffic with long gaps.
    Bursty {
        /// Mean requests per burst.
        per_burst: f64,
        /// Intervals from one burst to the next.
        every: u32,
    },
}

impl Traffic {
    fn validate(&self) -> Result<(), SimulationError> {
        let (field, value) = match *self {
            Traffic::Steady { per_interval } => ("traffic.per_interval", per_interval),
            Traffic::Bursty { per_burst, every } => {
                if every == 0 {
                    return Err(SimulationError::Model {
                        build: "traffic",
                        field: "traffic.every",
                        value: 0.0,
                    });
                }
                ("traffic.per_burst", per_burst)
            }
        };
        if !(value > 0.0 && value.is_finite()) {
            return Err(SimulationError::Model {
                build: "traffic",
                field,
                value,
            });
        }
        Ok(())
    }

    /// Live requests arriving in interval `index` (0-based).
    pub(super) fn requests(&self, index: u64, rng: &mut impl Rng) -> u64 {
        let mean = match *self {
            Traffic::Steady { per_interval } => per_interval,
            Traffic::Bursty { per_burst, every } if index.is_multiple_of(u64::from(every)) => {
                per_burst
            }
            Traffic::Bursty { .. } => return 0,
        };
        // Validated positive and finite, so the distribution exists.
        Poisson::new(mean).map_or(0, |p| p.sample(rng) as u64)
    }
}

fn default_routes() -> Vec<RouteModel> {
    vec![RouteModel::new("GET /", 1.0, 1.0)]
}

fn one() -> f64 {
    1.0
}

fn default_write_cost() -> f64 {
    0.5
}

fn default_run_noise() -> f64 {
    0.05
}

/// A pair of builds, their routes and their traffic: one row of the simulator's table.
///
/// Each live request belongs to a [route](RouteModel) (drawn by weight) and is a read
/// (with probability [`read_share`](Self::read_share)) or a write. It has an intrinsic
/// cost both builds share — `route cost × (write_cost for a write) × e^{σ·u}`, with one
/// standard normal `u` per request and each build's own `σ` — and every *run* of it adds
/// its own noise `e^{run_noise·ε}`. A run of build `b` takes
///
/// ```text
/// median_b × cost × e^{σ_b·u} × e^{run_noise·ε} × (tail slowdown, if drawn)
///          × (route's candidate_factor, for the candidate) ÷ (shadow_speed, in the shadow)
/// ```
///
/// and fails with the build's error rate. Live requests (stable's, and the candidate's
/// canary share) run once, live. Stable's live reads are mirrored to the shadow, where
/// the twin (stable again) and the candidate each run them: a pair, compared field by
/// field with the live response (see [`BuildModel::wrong_response_rate`] and
/// [`noisy_field`](Self::noisy_field)). Writes are never mirrored.
///
/// ```
/// use shadowlib::simulate::{BuildModel, LatencyModel, RouteModel, Scenario, Traffic};
///
/// let stable = BuildModel::new(LatencyModel::lognormal(1_000.0, 0.5)).with_error_rate(0.005);
/// let slower = stable.with_latency(LatencyModel::lognormal(1_100.0, 0.5));
/// let scenario = Scenario::new("+10%", stable, slower, Traffic::Steady { per_interval: 200.0 })
///     .with_shadow_speed(0.65);
/// // On the floored scale the tests judge, 10% of a millisecond is a little less.
/// assert!((scenario.true_degradation() - 0.10).abs() < 0.003);
///
/// // +10% on one route of two equally busy ones: about +4.9% on the geometric mean.
/// let one_route = Scenario::new("one route", stable, stable, Traffic::Steady { per_interval: 200.0 })
///     .with_routes(vec![
///         RouteModel::new("GET /a", 1.0, 1.0),
///         RouteModel::new("GET /b", 1.0, 3.0).with_candidate_factor(1.1),
///     ]);
/// assert!((one_route.true_degradation() - (1.1f64.sqrt() - 1.0)).abs() < 0.001);
/// assert!(!one_route.identical_builds());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Scenario {
    /// Shown in the table.
    pub name: String,
    /// The stable build.
    pub stable: BuildModel,
    /// The candidate build.
    pub candidate: BuildModel,
    /// The live traffic.
    pub traffic: Traffic,
    /// The service's routes (at least one); by default one, `GET /`, of cost 1.
    #[serde(default = "default_routes")]
    pub routes: Vec<RouteModel>,
    /// Share of live requests that are reads, in `[0, 1]` (default 1): only reads are
    /// mirrored to the shadow.
    #[serde(default = "one")]
    pub read_share: f64,
    /// A write's cost relative to a read of the same route (default 0.5: writes twice as
    /// fast as reads).
    #[serde(default = "default_write_cost")]
    pub write_cost: f64,
    /// Standard deviation of each run's own log-latency (and log-CPU) noise, what two
    /// runs of one request on one build differ by (default 0.05).
    #[serde(default = "default_run_noise")]
    pub run_noise: f64,
    /// How fast the shadow runs relative to live (default 1): 0.65 means shadow runs
    /// take 1/0.65 of their live time (a busier thread, no socket), 1.1 that they are
    /// faster. It applies to the twin and the candidate alike.
    #[serde(default = "one")]
    pub shadow_speed: f64,
    /// Whether responses carry a timestamp-like field (`/at`) that differs from live on
    /// every response of both builds: noise the mismatch test must see through.
    #[serde(default)]
    pub noisy_field: bool,
}

impl Scenario {
    /// A scenario from its parts, with one route, reads only, run noise 0.05 and a shadow
    /// as fast as live.
    pub fn new(
        name: impl Into<String>,
        stable: BuildModel,
        candidate: BuildModel,
        traffic: Traffic,
    ) -> Self {
        Self {
            name: name.into(),
            stable,
            candidate,
            traffic,
            routes: default_routes(),
            read_share: 1.0,
            write_cost: default_write_cost(),
            run_noise: default_run_noise(),
            shadow_speed: 1.0,
            noisy_field: false,
        }
    }

    /// The same scenario with these routes.
    pub fn with_routes(self, routes: Vec<RouteModel>) -> Self {
        Self { routes, ..self }
    }

    /// The same scenario with this share of reads (the rest are writes).
    pub fn with_read_share(self, read_share: f64) -> Self {
        Self { read_share, ..self }
    }

    /// The same scenario with writes costing `write_cost` times a read of their route.
    pub fn with_write_cost(self, write_cost: f64) -> Self {
        Self { write_cost, ..self }
    }

    /// The same scenario with this per-run noise.
    pub fn with_run_noise(self, run_noise: f64) -> Self {
        Self { run_noise, ..self }
    }

    /// The same scenario with the shadow running at this speed relative to live.
    pub fn with_shadow_speed(self, shadow_speed: f64) -> Self {
        Self {
            shadow_speed,
            ..self
        }
    }

    /// The same scenario with (or without) a field that differs on every response.
    pub fn with_noisy_field(self, noisy_field: bool) -> Self {
        Self {
            noisy_field,
            ..self
        }
    }

    /// The true relative change of typical latency, candidate over stable, on the
    /// requests' mix of routes and in the shadow's environment, on the scale the latency
    /// tests judge (`ln(latency + LATENCY_FLOOR)`): what a shadow-phase degradation
    /// interval should cover. For latencies far above the floor it is the change of the
    /// geometric mean.
    pub fn true_degradation(&self) -> f64 {
        let floor = LATENCY_FLOOR.as_secs_f64() * 1e6;
        let total: f64 = self.routes.iter().map(|r| r.weight).sum();
        let scale = |route: &RouteModel| route.cost / self.shadow_speed;
        let difference: f64 = self
            .routes
            .iter()
            .map(|r| {
                let candidate = self.candidate.latency.floored_log_mean(
                    scale(r) * r.candidate_factor,
                    self.run_noise,
                    floor,
                );
                let stable = self
                    .stable
                    .latency
                    .floored_log_mean(scale(r), self.run_noise, floor);
                r.weight / total * (candidate - stable)
            })
            .sum();
        difference.exp() - 1.0
    }

    /// Whether the two builds are the same in every respect the simulator models (an A/A
    /// scenario, on which every rollback is a false one).
    pub fn identical_builds(&self) -> bool {
        self.stable == self.candidate && self.routes.iter().all(|r| r.candidate_factor == 1.0)
    }

    /// Checks every parameter; the first violation found is returned.
    pub fn validate(&self) -> Result<(), SimulationError> {
        self.stable.validate("stable")?;
        self.candidate.validate("candidate")?;
        self.traffic.validate()?;
        if self.routes.is_empty() {
            return Err(SimulationError::Model {
                build: "scenario",
                field: "routes",
                value: 0.0,
            });
        }
        for (index, route) in self.routes.iter().enumerate() {
            route.validate(index)?;
        }
        let bad = |field: &'static str, value: f64| SimulationError::Model {
            build: "scenario",
            field,
            value,
        };
        if !(0.0..=1.0).contains(&self.read_share) {
            return Err(bad("read_share", self.read_share));
        }
        if !(self.write_cost > 0.0 && self.write_cost.is_finite()) {
            return Err(bad("write_cost", self.write_cost));
        }
        if !(self.run_noise >= 0.0 && self.run_noise.is_finite()) {
            return Err(bad("run_noise", self.run_noise));
        }
        if !(self.shadow_speed > 0.0 && self.shadow_speed.is_finite()) {
            return Err(bad("shadow_speed", self.shadow_speed));
        }
        Ok(())
    }
}

/// `E[ln(median · e^{spread·Z} + floor)]` for a standard normal `Z`, by the trapezoid rule
/// on `[-8, 8]` (the rest of the normal carries under 10⁻¹⁴ of its weight).
fn expected_log_floored(median: f64, spread: f64, floor: f64) -> f64 {
    const STEPS: u32 = 1_600;
    let step = 16.0 / f64::from(STEPS);
    let sum: f64 = (0..=STEPS)
        .map(|i| {
            let z = -8.0 + f64::from(i) * step;
            let weight = if i == 0 || i == STEPS { 0.5 } else { 1.0 };
            weight * (median * (spread * z).exp() + floor).ln() * (-z * z / 2.0).exp()
        })
        .sum();
    sum * step / (2.0 * std::f64::consts::PI).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aa_at(per_interval: f64) -> Scenario {
        let build = BuildModel::new(LatencyModel::lognormal(100.0, 0.5));
        Scenario::new("A/A", build, build, Traffic::Steady { per_interval })
    }

    fn aa() -> Scenario {
        aa_at(1.0)
    }

    #[test]
    fn the_truth_weighs_each_routes_factor_by_its_share_on_the_floored_scale() {
        let routes = vec![
            RouteModel::new("GET /a", 3.0, 0.1),
            RouteModel::new("GET /b", 1.0, 10.0).with_candidate_factor(1.2),
        ];
        let scenario = aa().with_routes(routes).with_shadow_speed(0.65);
        // Far above the floor, the floored truth is the geometric mean's.
        let expected = (0.25 * 1.2f64.ln()).exp() - 1.0;
        let truth = scenario.true_degradation();
        assert!((truth - expected).abs() < 0.002, "{truth} vs {expected}");
        assert!(truth < expected, "the floor takes a little off");
        // Without a spread, the floored mean is exact.
        let exact = expected_log_floored(100.0, 0.0, 20.0);
        assert!((exact - 120f64.ln()).abs() < 1e-12);
        assert!(!scenario.identical_builds());
        assert!(aa().with_shadow_speed(0.65).identical_builds());
        assert!(aa().validate().is_ok());
    }

    #[test]
    fn a_scenario_reads_from_json_with_the_paired_defaults() {
        let json = r#"{
            "name": "A/A",
            "stable": { "latency": { "median_us": 100.0, "sigma": 0.5, "tail": null }, "error_rate": 0.0 },
            "candidate": { "latency": { "median_us": 100.0, "sigma": 0.5, "tail": null }, "error_rate": 0.0 },
            "traffic": { "kind": "steady", "per_interval": 10.0 }
        }"#;
        let scenario: Scenario = serde_json::from_str(json).expect("parses");
        assert_eq!(scenario, aa_at(10.0));
    }
}
