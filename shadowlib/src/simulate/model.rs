//! What the simulated builds and their traffic look like.

use std::time::Duration;

use rand::Rng;
use rand_distr::{Bernoulli, Distribution as _, LogNormal, Poisson};
use serde::{Deserialize, Serialize};

use super::SimulationError;
use crate::model::Outcome;

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
    /// Median latency of the lognormal part, in microseconds.
    pub median_us: f64,
    /// Standard deviation of log latency (the lognormal's shape).
    pub sigma: f64,
    /// The slow tail, if any.
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

    /// Expected log latency, `ln median + fraction · ln slowdown`: what the latency test
    /// compares.
    pub fn log_mean(&self) -> f64 {
        self.median_us.ln() + self.tail.map_or(0.0, |t| t.fraction * t.slowdown.ln())
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

/// One simulated build: its latency and its failure rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BuildModel {
    /// Latency of every request that ran.
    pub latency: LatencyModel,
    /// Probability that a request fails with a server error, in `[0, 1]`.
    pub error_rate: f64,
}

impl BuildModel {
    fn validate(&self, build: &'static str) -> Result<(), SimulationError> {
        self.latency.validate(build)?;
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(SimulationError::Model {
                build,
                field: "error_rate",
                value: self.error_rate,
            });
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

/// A pair of builds and their traffic: one row of the simulator's table.
///
/// ```
/// use shadowlib::simulate::{BuildModel, LatencyModel, Scenario, Traffic};
///
/// let stable = BuildModel { latency: LatencyModel::lognormal(1_000.0, 0.5), error_rate: 0.005 };
/// let slower = BuildModel { latency: LatencyModel::lognormal(1_100.0, 0.5), ..stable };
/// let scenario = Scenario::new("+10%", stable, slower, Traffic::Steady { per_interval: 200.0 });
/// assert!((scenario.true_degradation() - 0.10).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Shown in the table.
    pub name: String,
    /// The stable build.
    pub stable: BuildModel,
    /// The candidate build.
    pub candidate: BuildModel,
    /// The live traffic.
    pub traffic: Traffic,
}

impl Scenario {
    /// A scenario from its parts.
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
        }
    }

    /// The true relative change of typical latency (geometric mean), candidate over
    /// stable: what a latency degradation interval should cover.
    pub fn true_degradation(&self) -> f64 {
        (self.candidate.latency.log_mean() - self.stable.latency.log_mean()).exp() - 1.0
    }

    /// Checks every parameter; the first violation found is returned.
    pub fn validate(&self) -> Result<(), SimulationError> {
        self.stable.validate("stable")?;
        self.candidate.validate("candidate")?;
        self.traffic.validate()
    }
}

/// Draws requests of one build.
pub(super) struct RequestSampler {
    latency: LogNormal<f64>,
    tail: Option<(Bernoulli, f64)>,
    failure: Bernoulli,
}

impl RequestSampler {
    pub(super) fn new(model: &BuildModel) -> Result<Self, SimulationError> {
        let invalid = |e: &dyn std::fmt::Display| SimulationError::Distribution(e.to_string());
        let latency = LogNormal::new(model.latency.median_us.ln(), model.latency.sigma)
            .map_err(|e| invalid(&e))?;
        let tail = match model.latency.tail {
            Some(t) => Some((
                Bernoulli::new(t.fraction).map_err(|e| invalid(&e))?,
                t.slowdown,
            )),
            None => None,
        };
        let failure = Bernoulli::new(model.error_rate).map_err(|e| invalid(&e))?;
        Ok(Self {
            latency,
            tail,
            failure,
        })
    }

    /// One request's outcome and latency.
    pub(super) fn sample(&self, rng: &mut impl Rng) -> (Outcome, Duration) {
        let mut micros = self.latency.sample(rng);
        if let Some((hit, slowdown)) = &self.tail
            && hit.sample(rng)
        {
            micros *= slowdown;
        }
        let outcome = if self.failure.sample(rng) {
            Outcome::ServerError
        } else {
            Outcome::Success
        };
        (outcome, Duration::from_nanos((micros * 1_000.0) as u64))
    }
}
