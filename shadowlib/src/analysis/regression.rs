//! The sequential tests applied to the evidence: one test per KPI, each answering worse
//! than tolerated / not worse than tolerated / not yet known, and the verdict they add up to.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::AnalysisError;
use super::anomaly::{ChartConfig, DifferenceTotals, NovelFailure, novel_failures};
use super::error::{positive, unit_open};
use super::msprt::{DifferenceEstimate, MixtureSprt, Proportion, SequentialTest, Verdict};
use super::normal_survival;
use super::quantile::QuantileComparison;
use crate::evidence::{
    CanaryEvidence, Distribution, Evidence, LATENCY_FLOOR_US, OutcomeCounts, Stage,
};
use crate::model::{Arm, Degradation, Kpi, SampleCount};

/// CPU times below this many nanoseconds are taken as it, so that a quantile of nearly
/// nothing is not a ratio of noise.
const CPU_FLOOR_NS: u64 = 1_000;

/// The degradation the user tolerates on each KPI. The smallest of the scales each test
/// mixes over (see [`MixtureSprt::spanning`]) is its tolerance.
///
/// ```
/// use shadowlib::analysis::Tolerances;
///
/// let t: Tolerances = toml::from_str("latency = 0.03\nerror_rate = 0.002").unwrap();
/// assert_eq!(t.latency, 0.03);
/// assert_eq!(t.cpu, Tolerances::default().cpu);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tolerances {
    /// Relative increase of typical latency (the geometric mean of latency plus the
    /// [`LATENCY_FLOOR`](crate::LATENCY_FLOOR)): 0.05 = 5% slower.
    pub latency: f64,
    /// Relative increase of median latency.
    pub latency_p50: f64,
    /// Relative increase of the 95th percentile of latency.
    pub latency_p95: f64,
    /// Relative increase of the 99th percentile of latency: a tail-only regression.
    pub latency_p99: f64,
    /// Absolute increase of the failure rate: 0.001 = 0.1 percentage points.
    pub error_rate: f64,
    /// Relative increase of typical CPU time per request.
    pub cpu: f64,
    /// Relative increase of the 99th percentile of CPU time per request.
    pub cpu_p99: f64,
    /// Relative increase of typical bytes allocated per request.
    pub allocations: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            latency: 0.05,
            latency_p50: 0.05,
            latency_p95: 0.10,
            latency_p99: 0.20,
            error_rate: 0.001,
            cpu: 0.10,
            cpu_p99: 0.25,
            allocations: 0.10,
        }
    }
}

/// How the candidate is judged against stable.
///
/// ```
/// use shadowlib::analysis::SequentialConfig;
///
/// let config: SequentialConfig = toml::from_str(r#"
///     alpha = 0.01
///     min_samples_per_arm = 500
///
///     [tolerances]
///     latency = 0.05
///     error_rate = 0.0025
/// "#).unwrap();
/// config.validate()?;
/// assert_eq!(config.mixing_span, 64.0);
///
/// let bad = SequentialConfig { alpha: 1.5, ..Default::default() };
/// assert_eq!(bad.validate().unwrap_err().to_string(), "alpha: 1.5 is outside (0, 1)");
/// # Ok::<(), shadowlib::analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SequentialConfig {
    /// The chance, over the whole rollout, that any test calls identical builds worse
    /// than tolerated (a false rollback), split evenly among the tests (see
    /// [`SequentialAnalysis`]); also the level at which each test calls the candidate not
    /// worse.
    pub alpha: f64,
    /// Shadow pairs (and, in the canary, live requests of each build) needed before
    /// anything is decided from them.
    pub min_samples_per_arm: u64,
    /// Shadow pairs a route needs before its own latency test runs (the test's normal
    /// approximation needs a few dozen).
    pub min_pairs_per_route: u64,
    /// How far above its tolerance each test's mixing reaches: its scales run from the
    /// tolerance to this many times it, doubling, so a difference many times the
    /// tolerance is seen about as soon as a test tuned to it would (see
    /// [`MixtureSprt::spanning`]). 1 mixes at the tolerance alone.
    pub mixing_span: f64,
    /// Level at which a failure class stable never produced counts as a regression.
    pub novel_failure_alpha: f64,
    /// The scale of the prior on each KPI's difference that `failure_probability` is
    /// computed under, as a multiple of the KPI's tolerance (see
    /// [`SequentialAnalysis::failure_probability`]).
    pub prior_scale: f64,
    /// The tolerated degradations.
    pub tolerances: Tolerances,
    /// The control charts on the difference between the builds.
    pub charts: ChartConfig,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            min_samples_per_arm: 200,
            min_pairs_per_route: 30,
            mixing_span: 64.0,
            novel_failure_alpha: 0.001,
            prior_scale: 2.0,
            tolerances: Tolerances::default(),
            charts: ChartConfig::default(),
        }
    }
}

impl SequentialConfig {
    /// Checks every field; the first violation found is returned.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        unit_open("alpha", self.alpha)?;
        for (field, value) in [
            ("min_samples_per_arm", self.min_samples_per_arm),
            ("min_pairs_per_route", self.min_pairs_per_route),
        ] {
            if value < 2 {
                return Err(AnalysisError::TooFewSamples {
                    field,
                    value,
                    minimum: 2,
                });
            }
        }
        if !(self.mixing_span >= 1.0 && self.mixing_span.is_finite()) {
            return Err(AnalysisError::OutOfRange {
                field: "mixing_span",
                value: self.mixing_span,
                expected: "[1, infinity)",
            });
        }
        unit_open("novel_failure_alpha", self.novel_failure_alpha)?;
        positive("prior_scale", self.prior_scale)?;
        let t = &self.tolerances;
        positive("tolerances.latency", t.latency)?;
        positive("tolerances.latency_p50", t.latency_p50)?;
        positive("tolerances.latency_p95", t.latency_p95)?;
        positive("tolerances.latency_p99", t.latency_p99)?;
        unit_open("tolerances.error_rate", t.error_rate)?;
        positive("tolerances.cpu", t.cpu)?;
        positive("tolerances.cpu_p99", t.cpu_p99)?;
        positive("tolerances.allocations", t.allocations)?;
        self.charts.validate()
    }
}

/// A quantile a test compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantile {
    /// The median.
    P50,
    /// The 95th percentile.
    P95,
    /// The 99th percentile.
    P99,
}

impl Quantile {
    /// The quantile as a fraction.
    pub fn fraction(self) -> f64 {
        match self {
            Quantile::P50 => 0.50,
            Quantile::P95 => 0.95,
            Quantile::P99 => 0.99,
        }
    }
}

impl fmt::Display for Quantile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantile::P50 => "p50",
            Quantile::P95 => "p95",
            Quantile::P99 => "p99",
        })
    }
}

/// What a KPI test measures, and on which scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Metric {
    /// Log latency: a relative shift of typical latency (the geometric mean).
    Latency,
    /// A quantile of latency, relative.
    LatencyQuantile(Quantile),
    /// The failure rate (server errors, timeouts and panics over requests).
    ErrorRate,
    /// Typical CPU time per request, relative.
    Cpu,
    /// A quantile of CPU time per request, relative.
    CpuQuantile(Quantile),
    /// Typical bytes allocated per request, relative.
    Allocations,
    /// The candidate's utilization of its cores at the declared peak load (1 = saturated),
    /// from its CPU per request.
    PeakUtilization,
}

impl Metric {
    /// Whether the test works on the log of a ratio (reported as a relative change) rather
    /// than on a plain difference (reported as is).
    pub fn is_relative(self) -> bool {
        !matches!(self, Metric::ErrorRate | Metric::PeakUtilization)
    }

    /// The KPI a prediction reports it under.
    pub fn kpi(self) -> Kpi {
        match self {
            Metric::Latency => Kpi::Custom("latency (geometric mean)".into()),
            Metric::LatencyQuantile(Quantile::P50) => Kpi::LatencyP50,
            Metric::LatencyQuantile(Quantile::P99) => Kpi::LatencyP99,
            Metric::LatencyQuantile(q) => Kpi::Custom(format!("latency {q}")),
            Metric::ErrorRate => Kpi::ErrorRate,
            Metric::Cpu => Kpi::CpuPerRequest,
            Metric::CpuQuantile(q) => Kpi::Custom(format!("CPU per request {q}")),
            Metric::Allocations => Kpi::AllocPerRequest,
            Metric::PeakUtilization => Kpi::Custom("utilization at peak".into()),
        }
    }

    /// Maps a value on a mixture test's scale to the reported scale.
    fn report(self, value: f64) -> f64 {
        if self.is_relative() {
            value.exp() - 1.0
        } else {
            value
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Latency => f.write_str("latency (geometric mean)"),
            Metric::LatencyQuantile(q) => write!(f, "latency {q}"),
            Metric::ErrorRate => f.write_str("error rate"),
            Metric::Cpu => f.write_str("CPU per request"),
            Metric::CpuQuantile(q) => write!(f, "CPU per request {q}"),
            Metric::Allocations => f.write_str("allocated bytes per request"),
            Metric::PeakUtilization => f.write_str("utilization at the declared peak"),
        }
    }
}

/// Which evidence a test compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "route")]
#[non_exhaustive]
pub enum Scope {
    /// Every shadow pair.
    Shadow,
    /// The shadow pairs of one route.
    ShadowRoute(String),
    /// Live requests in the canary, compared within each step and route and added up.
    Canary,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Shadow => f.write_str("shadow pairs"),
            Scope::ShadowRoute(route) => write!(f, "shadow pairs of {route}"),
            Scope::Canary => f.write_str("canary, per step and route"),
        }
    }
}

/// What a KPI test computed: a mixture SPRT on a difference, or the comparison of a
/// quantile's confidence sequences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Statistic {
    /// A mixture SPRT, on the test's scale (log ratio for relative metrics).
    Mixture(SequentialTest),
    /// A quantile of each build, with their point estimates.
    Quantile {
        /// The confidence sequences and their verdict.
        comparison: QuantileComparison,
        /// Stable's quantile now.
        stable: f64,
        /// The candidate's quantile now.
        candidate: f64,
    },
}

/// One KPI's always-valid test and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiTest {
    /// The KPI.
    pub metric: Metric,
    /// The evidence it compares.
    pub scope: Scope,
    /// What it computed.
    pub statistic: Statistic,
    /// The verdict, after the minimum-evidence rules.
    pub verdict: Verdict,
    /// Why the verdict is "not yet known" although the test alone would say more.
    pub held_because: Option<String>,
    /// Whether the stage's "not worse" needs this test's "not worse" (every test can roll
    /// back; the others only do that).
    pub required: bool,
    /// The samples behind it.
    pub samples: SampleCount,
}

impl KpiTest {
    /// The comparison of one `quantile` of `arms` (stable, candidate) against `1 +
    /// tolerance` at level `alpha`, on values offset by `offset` (a latency floor), in the
    /// shadow: its verdict and each build's point estimate. `None` without observations.
    pub(crate) fn quantile(
        metric: Metric,
        quantile: Quantile,
        (stable, candidate): (&Distribution, &Distribution),
        tolerance: f64,
        alpha: f64,
        offset: u64,
        required: bool,
    ) -> Option<KpiTest> {
        let p = quantile.fraction();
        let comparison = QuantileComparison::of(stable, candidate, p, tolerance, alpha, offset)?;
        let point = |d: &Distribution| d.quantile(p).saturating_add(offset) as f64;
        Some(KpiTest {
            metric,
            scope: Scope::Shadow,
            verdict: comparison.verdict,
            samples: SampleCount {
                stable: stable.count(),
                candidate: candidate.count(),
            },
            statistic: Statistic::Quantile {
                comparison,
                stable: point(stable),
                candidate: point(candidate),
            },
            held_because: None,
            required,
        })
    }

    /// The level the test is judged at: its share of the rollback budget.
    pub fn alpha(&self) -> f64 {
        match &self.statistic {
            Statistic::Mixture(test) => test.alpha,
            Statistic::Quantile { comparison, .. } => comparison.alpha,
        }
    }

    /// The degradation with its confidence sequence, on the reported scale (relative change
    /// for latency, CPU and allocations; absolute difference for rates).
    pub fn degradation(&self) -> Degradation {
        match &self.statistic {
            Statistic::Mixture(test) => {
                let m = self.metric;
                Degradation::new(
                    m.report(test.estimate.difference),
                    m.report(test.confidence.low),
                    m.report(test.confidence.high),
                )
            }
            Statistic::Quantile {
                comparison,
                stable,
                candidate,
            } => {
                let (low, estimate, high) = comparison.ratio(*stable, *candidate);
                Degradation::new(estimate, low, high)
            }
        }
    }

    /// The tolerance on the reported scale.
    pub fn tolerance(&self) -> f64 {
        match &self.statistic {
            Statistic::Mixture(test) => self.metric.report(test.tolerance),
            Statistic::Quantile { comparison, .. } => comparison.tolerance,
        }
    }

    /// The mixture test's estimate, where the test is one (for the posterior).
    pub fn estimate(&self) -> Option<(&DifferenceEstimate, f64)> {
        match &self.statistic {
            Statistic::Mixture(test) => Some((&test.estimate, test.tolerance)),
            Statistic::Quantile { .. } => None,
        }
    }

    /// How strongly the evidence says "worse than tolerated": the always-valid p-value of
    /// "not worse" where the test has one, else 0 when worse and 1 otherwise.
    pub fn worse_p_value(&self) -> f64 {
        match &self.statistic {
            Statistic::Mixture(test) => test.worse_p_value,
            Statistic::Quantile { .. } if self.verdict == Verdict::Worse => 0.0,
            Statistic::Quantile { .. } => 1.0,
        }
    }

    /// How strongly the evidence says "not worse": the always-valid p-value of "worse"
    /// where the test has one, else 0 when not worse and 1 otherwise.
    pub fn not_worse_p_value(&self) -> f64 {
        match &self.statistic {
            Statistic::Mixture(test) => test.not_worse_p_value,
            Statistic::Quantile { .. } if self.verdict == Verdict::NotWorse => 0.0,
            Statistic::Quantile { .. } => 1.0,
        }
    }
}

fn percent(value: f64) -> String {
    if value.is_finite() {
        format!("{:+.2}%", value * 100.0)
    } else if value > 0.0 {
        "+inf".to_owned()
    } else {
        "-inf".to_owned()
    }
}

impl fmt::Display for KpiTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.degradation();
        let s = self.samples;
        let samples = match self.scope {
            Scope::Canary => format!(
                "live requests stable {}, candidate {}",
                s.stable, s.candidate
            ),
            _ => format!("{} pairs", s.candidate),
        };
        write!(
            f,
            "{} ({}): {} [{}, {}] ({:.1}% confidence sequence), tolerance {}: {}",
            self.metric,
            self.scope,
            percent(d.estimate),
            percent(d.low),
            percent(d.high),
            (1.0 - self.alpha()) * 100.0,
            percent(self.tolerance()),
            self.verdict,
        )?;
        match &self.statistic {
            Statistic::Mixture(test) => write!(
                f,
                " (p worse {:.3}, p not worse {:.3}, level {:.4}; {samples})",
                test.worse_p_value, test.not_worse_p_value, test.alpha,
            )?,
            Statistic::Quantile { .. } => {
                write!(f, " (level {:.4}; {samples})", self.alpha())?;
            }
        }
        if let Some(why) = &self.held_because {
            write!(f, "; {why}")?;
        }
        Ok(())
    }
}

/// Everything the analysis found at one look, and the verdict it adds up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The stage the verdict is about.
    pub stage: Stage,
    /// Worse if any test is worse or a novel failure class is significant; not worse only
    /// if every required test is not worse and nothing is flagged; otherwise not yet known.
    pub verdict: Verdict,
    /// Every test that ran.
    pub tests: Vec<KpiTest>,
    /// Failure classes the candidate produced and stable never did.
    pub novel_failures: Vec<NovelFailure>,
    /// Whether the novel failures, none significant, are past the samples at which they
    /// would have been: they no longer hold "not worse" back.
    pub novel_failures_decided: bool,
    /// The samples behind the stage.
    pub samples: SampleCount,
    /// Why the stage's tests did not run yet: too little evidence.
    pub insufficient: Option<String>,
    /// The totals the control charts difference look by look.
    pub differences: DifferenceTotals,
}

impl Assessment {
    /// The test of one KPI on one scope, if it ran.
    pub fn test(&self, metric: Metric, scope: &Scope) -> Option<&KpiTest> {
        self.tests
            .iter()
            .find(|t| t.metric == metric && t.scope == *scope)
    }

    /// One readable line per finding: every test but the per-route ones that found
    /// nothing, which are summed up in one line.
    pub fn reasons(&self) -> Vec<String> {
        let mut reasons: Vec<String> = self.insufficient.iter().cloned().collect();
        let (routes, others): (Vec<&KpiTest>, Vec<&KpiTest>) = self
            .tests
            .iter()
            .partition(|t| matches!(t.scope, Scope::ShadowRoute(_)));
        reasons.extend(others.iter().map(ToString::to_string));
        reasons.extend(
            routes
                .iter()
                .filter(|t| t.verdict == Verdict::Worse)
                .map(ToString::to_string),
        );
        let quiet = routes
            .iter()
            .filter(|t| t.verdict != Verdict::Worse)
            .count();
        if quiet > 0 {
            let slowest = routes
                .iter()
                .filter(|t| t.verdict != Verdict::Worse)
                .max_by(|a, b| {
                    a.degradation()
                        .estimate
                        .total_cmp(&b.degradation().estimate)
                });
            let slowest = slowest.map_or(String::new(), |t| match &t.scope {
                Scope::ShadowRoute(route) => format!(
                    "; slowest {route} {} [{}, {}]",
                    percent(t.degradation().estimate),
                    percent(t.degradation().low),
                    percent(t.degradation().high)
                ),
                _ => String::new(),
            });
            reasons.push(format!(
                "latency per route: {quiet} route(s) tested on their own pairs, none worse \
                 than tolerated{slowest}"
            ));
        }
        reasons.extend(self.novel_failures.iter().map(|n| {
            if self.novel_failures_decided && !n.significant {
                format!("{n}; not significant after as many pairs as would have shown it: left to the error-rate test")
            } else {
                n.to_string()
            }
        }));
        reasons
    }
}

/// The share of the route budget the `k`-th route (0-based, in order of first appearance)
/// tests at: the first eight share three quarters evenly, later ones the last quarter in
/// proportion to `1/k²`, so that however many routes appear the shares add up to at most
/// one. Order of appearance does not depend on any build's latency, so the levels are set
/// before the evidence they judge.
fn route_share(k: usize) -> f64 {
    const EVEN: usize = 8;
    // Σ_{j>8} 1/j² = π²/6 − Σ_{j≤8} 1/j².
    const TAIL_SUM: f64 = 0.117_512_3;
    if k < EVEN {
        0.75 / EVEN as f64
    } else {
        let j = (k + 1) as f64;
        0.25 / (j * j) / TAIL_SUM
    }
}

/// How many tests share the rollback budget `α`. In the shadow: typical latency, its
/// p50, p95 and p99, latency per route (as one), the error rate, typical CPU, its p99,
/// and allocations; in the canary: typical latency and the error rate.
const TEST_SLOTS: f64 = 11.0;

/// Runs the sequential tests on the evidence of a look.
///
/// **Shadow** (the twin and the candidate on the same mirrored reads; see
/// [`ShadowEvidence`](crate::ShadowEvidence)):
///
/// * **Latency**: mixture SPRT on the mean per-read log ratio candidate/twin — pooled, and
///   for each route with [`min_pairs_per_route`](SequentialConfig::min_pairs_per_route)
///   pairs (a slowdown of one route among many would hide in the pooled mean).
/// * **Latency quantiles** p50, p95 and p99: the confidence sequences of each build's
///   quantile ([`QuantileComparison`]), so a regression of the tail alone (one request in
///   a hundred ten times slower) is caught.
/// * **Error rate**: the reads only the candidate failed against those only the twin
///   failed (a paired test of proportions). A zero-heavy count cannot pass just because
///   nothing happened: "not worse" waits until `ln(1/α) / (twin rate + tolerance)` pairs —
///   enough that a candidate failing at the tolerated rate would have shown a failure with
///   probability `1 − α`.
/// * **CPU** (typical and p99) and **allocations**: per-read log ratios and quantiles, where
///   measured.
///
/// **Canary** (live requests of both builds, compared within each canary step and route
/// and added up): typical latency and the error rate, with the same zero-heavy rule. The
/// canary phase is judged on these; the shadow's tests keep watching and can still roll
/// back.
///
/// **Novel failure classes** (timeouts, panics) in either: see [`novel_failures`]. One not
/// significant holds "not worse" back only until as many pairs as would have shown it.
///
/// The rollback budget `α` is split evenly over eleven test slots (the per-route latency
/// tests share one, spread over the routes in order of appearance), so the chance that
/// *any* test calls identical builds worse at *any* look stays within `α`. Each mixture
/// test mixes over the scales from its tolerance to [`mixing_span`](SequentialConfig::mixing_span)
/// times it. Below `min_samples_per_arm` pairs (or live requests per build, in the canary)
/// nothing is decided from that stage.
///
/// ```
/// use shadowlib::{Evidence, Outcome, Version};
/// use shadowlib::analysis::{Metric, Scope, SequentialAnalysis, SequentialConfig, Verdict};
///
/// let analysis = SequentialAnalysis::new(SequentialConfig::default())?;
/// let mut evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
/// let pairs = &mut evidence.shadow.pairs.total;
/// for i in 0..5_000u64 {
///     pairs.outcomes.record(false, false);
///     // Every read 20% slower on the candidate, give or take 5%.
///     pairs.latency.add(1.2f64.ln() + ((i * 7919) % 100) as f64 / 1_000.0 - 0.05);
/// }
/// let assessment = analysis.analyze(&evidence);
/// assert_eq!(assessment.verdict, Verdict::Worse);
/// assert_eq!(assessment.test(Metric::Latency, &Scope::Shadow).unwrap().verdict, Verdict::Worse);
/// # Ok::<(), shadowlib::analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SequentialAnalysis {
    config: SequentialConfig,
    /// The level of each test slot.
    slot_alpha: f64,
}

impl SequentialAnalysis {
    /// An analysis with this configuration, validated here.
    pub fn new(config: SequentialConfig) -> Result<Self, AnalysisError> {
        config.validate()?;
        Ok(Self {
            slot_alpha: config.alpha / TEST_SLOTS,
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &SequentialConfig {
        &self.config
    }

    /// The tolerance of a mixture test, on its scale.
    fn tolerance(&self, metric: Metric) -> f64 {
        let t = &self.config.tolerances;
        match metric {
            Metric::Latency => t.latency.ln_1p(),
            Metric::ErrorRate => t.error_rate,
            Metric::Cpu => t.cpu.ln_1p(),
            Metric::Allocations => t.allocations.ln_1p(),
            Metric::LatencyQuantile(Quantile::P50) => t.latency_p50,
            Metric::LatencyQuantile(Quantile::P95) => t.latency_p95,
            Metric::LatencyQuantile(Quantile::P99) => t.latency_p99,
            Metric::CpuQuantile(_) => t.cpu_p99,
            // Judged against the capacity declaration's limit, not a tolerance.
            Metric::PeakUtilization => 1.0,
        }
    }

    /// A mixture SPRT of `metric` at `alpha`, mixing from its tolerance up.
    fn run(
        &self,
        metric: Metric,
        scope: Scope,
        estimate: DifferenceEstimate,
        alpha: f64,
        required: bool,
    ) -> KpiTest {
        let tolerance = self.tolerance(metric);
        // Both are validated in (0, 1) and positive, so the test exists.
        let sprt = MixtureSprt::spanning(alpha, tolerance, tolerance * self.config.mixing_span)
            .unwrap_or_else(|_| unreachable!("validated level {alpha} and scale {tolerance}"));
        let test = sprt.test(estimate, tolerance);
        KpiTest {
            metric,
            scope,
            verdict: test.verdict(),
            samples: test.estimate.samples,
            statistic: Statistic::Mixture(test),
            held_because: None,
            required,
        }
    }

    /// The comparison of one quantile of the two builds' distributions.
    #[allow(clippy::too_many_arguments)]
    fn quantile(
        &self,
        metric: Metric,
        quantile: Quantile,
        stable: &Distribution,
        candidate: &Distribution,
        offset: u64,
        required: bool,
    ) -> Option<KpiTest> {
        let tolerance = self.tolerance(metric);
        KpiTest::quantile(
            metric,
            quantile,
            (stable, candidate),
            tolerance,
            self.slot_alpha,
            offset,
            required,
        )
    }

    /// Tests the evidence of one look.
    pub fn analyze(&self, evidence: &Evidence) -> Assessment {
        let stage = evidence.stage();
        let differences = DifferenceTotals::of(evidence);
        let min = self.config.min_samples_per_arm;
        let pairs = evidence.shadow_pairs();
        let mut tests = Vec::new();
        let mut novel = Vec::new();
        let mut insufficient = None;
        if pairs >= min {
            self.shadow_tests(evidence, stage == Stage::Shadow, &mut tests);
            let shadow = &evidence.shadow;
            novel.extend(novel_failures(
                &shadow.twin,
                &shadow.candidate,
                self.config.novel_failure_alpha,
            ));
        } else if stage == Stage::Shadow {
            insufficient = Some(format!(
                "not enough evidence: need {min} reads run on both builds in the shadow, have {pairs}"
            ));
        }
        if stage == Stage::Canary {
            let canary = &evidence.canary;
            let (stable, candidate) = (
                canary.requests(Arm::Stable),
                canary.requests(Arm::Candidate),
            );
            if stable.min(candidate) >= min {
                self.canary_tests(canary, &mut tests);
                novel.extend(novel_failures(
                    &canary.total(Arm::Stable),
                    &canary.total(Arm::Candidate),
                    self.config.novel_failure_alpha,
                ));
            } else {
                insufficient = Some(format!(
                    "not enough canary evidence: need {min} live requests per build, have \
                     stable {stable}, candidate {candidate}"
                ));
            }
        }
        // A class none of whose failures is significant decides once there were as many
        // pairs as a class at the tolerated error rate would have needed to show.
        let decide_after = ((1.0 / self.config.novel_failure_alpha).ln()
            / self.config.tolerances.error_rate)
            .ceil() as u64;
        let novel_failures_decided = pairs >= decide_after;
        let novel_blocks = novel
            .iter()
            .any(|n| n.significant || !novel_failures_decided);
        let verdict = if tests.iter().any(|t| t.verdict == Verdict::Worse)
            || novel.iter().any(|n| n.significant)
        {
            Verdict::Worse
        } else if insufficient.is_none()
            && tests.iter().any(|t| t.required)
            && tests
                .iter()
                .filter(|t| t.required)
                .all(|t| t.verdict == Verdict::NotWorse)
            && !novel_blocks
        {
            Verdict::NotWorse
        } else {
            Verdict::NotYetKnown
        };
        Assessment {
            stage,
            verdict,
            tests,
            novel_failures: novel,
            novel_failures_decided,
            samples: evidence.samples(),
            insufficient,
            differences,
        }
    }

    /// The probability that the candidate is worse than tolerated on at least one of the
    /// required KPIs the mixture tests estimate, under a normal prior on each difference
    /// centred on no difference with standard deviation `prior_scale × tolerance`, taken as
    /// independent: `1 − Π (1 − P(θₖ > tolₖ | θ̂ₖ))`, each from the normal posterior
    /// `N(τ²θ̂/(τ²+V), τ²V/(τ²+V))`.
    ///
    /// It is what a forecaster who believed that prior would say, so it is calibrated on a
    /// world whose differences follow it (the simulator measures how well); it is reported,
    /// and a decision never rests on it.
    pub fn failure_probability(&self, assessment: &Assessment) -> f64 {
        let survival: f64 = assessment
            .tests
            .iter()
            .filter(|t| t.required)
            .filter_map(|t| Some((t, t.estimate()?)))
            .map(|(test, (estimate, tolerance))| {
                let prior = (self.config.prior_scale * tolerance).powi(2);
                // A rate estimated from no (or one kind of) discordant pair has a variance
                // of 0, which would claim certainty from silence: it is floored at what one
                // more discordant pair would give.
                let floor = match test.metric {
                    Metric::ErrorRate => {
                        let n = test.samples.stable.min(test.samples.candidate).max(1) as f64;
                        1.0 / (n * n)
                    }
                    _ => 0.0,
                };
                let v = estimate.variance.max(floor);
                if !(v > 0.0 && v.is_finite()) {
                    return 1.0;
                }
                let mean = prior * estimate.difference / (prior + v);
                let sd = (prior * v / (prior + v)).sqrt();
                1.0 - normal_survival((tolerance - mean) / sd)
            })
            .product();
        (1.0 - survival).clamp(0.0, 1.0)
    }

    /// The shadow's tests; `required` when the shadow is the stage judged.
    fn shadow_tests(&self, evidence: &Evidence, required: bool, tests: &mut Vec<KpiTest>) {
        let alpha = self.slot_alpha;
        let shadow = &evidence.shadow;
        let pairs = &shadow.pairs.total;
        if let Some(e) = DifferenceEstimate::paired(&pairs.latency) {
            tests.push(self.run(Metric::Latency, Scope::Shadow, e, alpha, required));
        }
        for (k, route) in shadow.pairs.route_order.iter().enumerate() {
            let Some(stats) = shadow.pairs.routes.get(route) else {
                continue;
            };
            if stats.latency.count() < self.config.min_pairs_per_route {
                continue;
            }
            if let Some(e) = DifferenceEstimate::paired(&stats.latency) {
                let scope = Scope::ShadowRoute(route.clone());
                tests.push(self.run(Metric::Latency, scope, e, alpha * route_share(k), false));
            }
        }
        let (twin, candidate) = (&shadow.twin.latency_us, &shadow.candidate.latency_us);
        for quantile in [Quantile::P50, Quantile::P95, Quantile::P99] {
            // The p99 is required: a tail-only regression must stop a promotion too.
            let needed = required && quantile == Quantile::P99;
            let metric = Metric::LatencyQuantile(quantile);
            tests.extend(self.quantile(
                metric,
                quantile,
                twin,
                candidate,
                LATENCY_FLOOR_US,
                needed,
            ));
        }
        let o = &pairs.outcomes;
        if let Some(e) =
            DifferenceEstimate::paired_proportions(o.candidate_only, o.twin_only, o.pairs())
        {
            let test = self.run(Metric::ErrorRate, Scope::Shadow, e, alpha, required);
            tests.push(self.zero_heavy(test, o.twin_rate(), o.pairs()));
        }
        for (metric, moments) in [
            (Metric::Cpu, &pairs.cpu),
            (Metric::Allocations, &pairs.alloc_bytes),
        ] {
            if let Some(e) = DifferenceEstimate::paired(moments) {
                tests.push(self.run(metric, Scope::Shadow, e, alpha, required));
            }
        }
        if let (Some(twin), Some(candidate)) = (&shadow.twin.cpu_ns, &shadow.candidate.cpu_ns) {
            let metric = Metric::CpuQuantile(Quantile::P99);
            tests.extend(self.quantile(
                metric,
                Quantile::P99,
                twin,
                candidate,
                CPU_FLOOR_NS,
                false,
            ));
        }
    }

    /// The canary's stratified tests: latency and error rate, compared within each step
    /// and route, and added up with the weights of the Cochran–Mantel–Haenszel estimator,
    /// `nₛ·n꜀ / (nₛ + n꜀)` per stratum: a stratum carries as much weight as the comparison it
    /// holds, so a step where one build served nearly everything (the last, at 100%) adds
    /// its requests without stretching the interval.
    fn canary_tests(&self, canary: &CanaryEvidence, tests: &mut Vec<KpiTest>) {
        let strata = strata(canary);
        let latency = weighted(strata.iter().filter_map(|s| {
            let e = DifferenceEstimate::means(
                &s.stable_latency.log_moments_offset(LATENCY_FLOOR_US),
                &s.candidate_latency.log_moments_offset(LATENCY_FLOOR_US),
            )?;
            Some((s.information(), e))
        }));
        if let Some(e) = latency {
            tests.push(self.run(Metric::Latency, Scope::Canary, e, self.slot_alpha, true));
        }
        let failures = |o: &OutcomeCounts| Proportion::new(o.failures(), o.total());
        let errors = weighted(strata.iter().filter_map(|s| {
            let e = DifferenceEstimate::proportions(failures(s.stable), failures(s.candidate))?;
            Some((s.information(), e))
        }));
        if let Some(e) = errors {
            let stable = canary.total_outcomes(Arm::Stable);
            let candidate = canary.total_outcomes(Arm::Candidate);
            let test = self.run(Metric::ErrorRate, Scope::Canary, e, self.slot_alpha, true);
            tests.push(self.zero_heavy(
                test,
                failures(&stable).rate(),
                stable.total().min(candidate.total()),
            ));
        }
    }

    /// The zero-heavy rule: "not worse" on a rate needs enough trials on each build that a
    /// rate at the tolerance would have shown an event with probability `1 − α`:
    /// `(1 − p)^n ≤ e^(−pn) ≤ α` once `n ≥ ln(1/α) / p`, with `p` stable's rate plus the
    /// tolerance.
    fn zero_heavy(&self, mut judged: KpiTest, stable_rate: f64, seen: u64) -> KpiTest {
        if judged.verdict != Verdict::NotWorse {
            return judged;
        }
        let tolerated_rate = stable_rate + judged.tolerance();
        let needed = ((1.0 / judged.alpha()).ln() / tolerated_rate).ceil() as u64;
        if seen < needed {
            judged.verdict = Verdict::NotYetKnown;
            judged.held_because = Some(format!(
                "held: a candidate rate of {} needs {needed} requests per build to show, have {seen}",
                percent(tolerated_rate).trim_start_matches('+')
            ));
        }
        judged
    }
}

/// One step and route of the canary, both builds.
struct Stratum<'a> {
    stable: &'a OutcomeCounts,
    candidate: &'a OutcomeCounts,
    stable_latency: &'a Distribution,
    candidate_latency: &'a Distribution,
}

impl Stratum<'_> {
    /// The stratum's Cochran–Mantel–Haenszel weight before normalizing, `nₛ·n꜀ / (nₛ + n꜀)`.
    fn information(&self) -> f64 {
        let (stable, candidate) = (self.stable.total() as f64, self.candidate.total() as f64);
        if stable + candidate > 0.0 {
            stable * candidate / (stable + candidate)
        } else {
            0.0
        }
    }
}

/// The strata's estimates added up with their weights normalized over the strata that
/// have one.
fn weighted(strata: impl Iterator<Item = (f64, DifferenceEstimate)>) -> Option<DifferenceEstimate> {
    let strata: Vec<(f64, DifferenceEstimate)> = strata.collect();
    let total: f64 = strata.iter().map(|(w, _)| w).sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    DifferenceEstimate::stratified(strata.into_iter().map(|(w, e)| (w / total, e)))
}

/// The canary's strata: each route of each step that both builds served, or each step as
/// a whole where requests carry no route.
fn strata(canary: &CanaryEvidence) -> Vec<Stratum<'_>> {
    let mut strata = Vec::new();
    for step in &canary.steps {
        let (stable, candidate) = (&step.stable, &step.candidate);
        if stable.routes.is_empty() && candidate.routes.is_empty() {
            strata.push(Stratum {
                stable: &stable.outcomes,
                candidate: &candidate.outcomes,
                stable_latency: &stable.latency_us,
                candidate_latency: &candidate.latency_us,
            });
            continue;
        }
        for (route, s) in &stable.routes {
            if let Some(c) = candidate.routes.get(route) {
                strata.push(Stratum {
                    stable: &s.outcomes,
                    candidate: &c.outcomes,
                    stable_latency: &s.latency_us,
                    candidate_latency: &c.latency_us,
                });
            }
        }
    }
    strata
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing_error_test(analysis: &SequentialAnalysis) -> KpiTest {
        // A test that passes on its own, as one on a raw plug-in variance of zero counts would.
        let estimate = DifferenceEstimate {
            difference: 0.0,
            variance: 1e-12,
            samples: SampleCount::default(),
        };
        let test = analysis.run(Metric::ErrorRate, Scope::Shadow, estimate, 0.05, true);
        assert_eq!(test.verdict, Verdict::NotWorse);
        test
    }

    #[test]
    fn zero_heavy_rule_holds_a_pass_until_the_tolerated_rate_could_show() {
        let analysis = SequentialAnalysis::new(SequentialConfig::default()).expect("valid");
        let test = passing_error_test(&analysis);
        // ln(20) / 0.001 = 2995.7: below 2,996 requests per build, a 0.1% rate could hide.
        let held = analysis.zero_heavy(test.clone(), 0.0, 2_995);
        assert_eq!(held.verdict, Verdict::NotYetKnown);
        assert!(held.held_because.as_deref().is_some_and(|why| why.contains("needs 2996 requests per build to show, have 2995")));
        assert_eq!(
            analysis.zero_heavy(test.clone(), 0.0, 2_996).verdict,
            Verdict::NotWorse
        );
        // A stable rate raises the tolerated rate and lowers the requests needed.
        assert_eq!(
            analysis.zero_heavy(test, 0.009, 300).verdict,
            Verdict::NotWorse,
            "ln(20) / 0.01 = 300 requests suffice"
        );
    }

    #[test]
    fn route_shares_add_up_to_at_most_one() {
        let total: f64 = (0..1_000_000).map(route_share).sum();
        assert!(total <= 1.0 && total > 0.999, "{total}");
        assert!(route_share(7) > route_share(8));
    }

    /// Pairs with a log latency ratio of `shift` (± 5%) on `route`, in `evidence`.
    fn pairs(evidence: &mut Evidence, route: &str, n: u64, shift: f64) {
        let pairs = &mut evidence.shadow.pairs;
        if !pairs.routes.contains_key(route) {
            pairs.route_order.push(route.to_owned());
        }
        let stats = pairs.routes.entry(route.to_owned()).or_default();
        for i in 0..n {
            let ratio = shift + ((i * 7919) % 100) as f64 / 1_000.0 - 0.05;
            for stats in [&mut *stats, &mut pairs.total] {
                stats.outcomes.record(false, false);
                stats.latency.add(ratio);
            }
        }
    }

    #[test]
    fn a_slowdown_of_one_route_is_found_by_its_own_test() {
        let analysis = SequentialAnalysis::new(SequentialConfig::default()).expect("valid");
        let mut evidence =
            Evidence::new(crate::Version::new("a", "1"), crate::Version::new("a", "2"));
        for route in ["GET /a", "GET /b", "GET /c", "GET /d"] {
            pairs(&mut evidence, route, 2_000, 0.0);
        }
        pairs(&mut evidence, "GET /e", 2_000, 1.25f64.ln());
        let assessment = analysis.analyze(&evidence);
        let pooled = assessment
            .test(Metric::Latency, &Scope::Shadow)
            .expect("ran");
        assert_ne!(
            pooled.verdict,
            Verdict::Worse,
            "+25% on a fifth is +4.6% in all: {pooled}"
        );
        let route = assessment
            .test(Metric::Latency, &Scope::ShadowRoute("GET /e".into()))
            .expect("ran");
        assert_eq!(route.verdict, Verdict::Worse, "{route}");
        assert_eq!(assessment.verdict, Verdict::Worse);
        assert!(!route.required);
    }

    #[test]
    fn the_canary_compares_within_steps_so_a_shifting_mix_is_not_a_regression() {
        use crate::model::{Outcome, Phase, Share};
        let analysis = SequentialAnalysis::new(SequentialConfig::default()).expect("valid");
        let mut evidence =
            Evidence::new(crate::Version::new("a", "1"), crate::Version::new("a", "2"));
        evidence.phase = Phase::Canary { step: 1 };
        pairs(&mut evidence, "GET /a", 5_000, 0.0);
        // Step 0 is quiet and fast, step 1 busy and four times slower, for both builds
        // alike; the candidate's requests are mostly from step 1.
        let share = |p| Share::from_percent(p).expect("valid");
        for (index, percent, latency, requests) in
            [(0, 5.0, 1_000, 20_000u64), (1, 50.0, 4_000, 20_000)]
        {
            let step = evidence.canary.step_mut(index, share(percent));
            let to_candidate = (requests as f64 * percent / 100.0) as u64;
            for i in 0..requests {
                let arm = if i < to_candidate {
                    Arm::Candidate
                } else {
                    Arm::Stable
                };
                step.arm_mut(arm)
                    .record_request(Outcome::Success, latency + (i * 7919) % 200);
            }
        }
        let assessment = analysis.analyze(&evidence);
        let canary = assessment
            .test(Metric::Latency, &Scope::Canary)
            .expect("ran");
        assert!(canary.degradation().contains(0.0), "{canary}");
        assert_ne!(
            assessment.verdict,
            Verdict::Worse,
            "{:?}",
            assessment.reasons()
        );
        let (stable, candidate) = evidence.arms();
        let pooled =
            candidate.latency_us.log_moments().mean() - stable.latency_us.log_moments().mean();
        assert!(
            pooled > 0.3,
            "pooled, the candidate looks {pooled} slower in log terms"
        );
    }

    #[test]
    fn each_tolerance_is_validated_by_name() {
        let mut config = SequentialConfig::default();
        config.tolerances.error_rate = 0.0;
        assert!(matches!(
            SequentialAnalysis::new(config),
            Err(AnalysisError::OutOfRange {
                field: "tolerances.error_rate",
                ..
            })
        ));
        let config = SequentialConfig {
            min_samples_per_arm: 1,
            ..Default::default()
        };
        assert!(matches!(
            config.validate(),
            Err(AnalysisError::TooFewSamples {
                field: "min_samples_per_arm",
                ..
            })
        ));
        let config = SequentialConfig {
            mixing_span: 0.5,
            ..Default::default()
        };
        assert!(matches!(
            config.validate(),
            Err(AnalysisError::OutOfRange {
                field: "mixing_span",
                ..
            })
        ));
    }

    #[test]
    fn a_tail_only_regression_is_caught_by_the_p99_test() {
        let analysis = SequentialAnalysis::new(SequentialConfig::default()).expect("valid");
        let mut evidence =
            Evidence::new(crate::Version::new("a", "1"), crate::Version::new("a", "2"));
        let shadow = &mut evidence.shadow;
        let mut state = 7u64;
        let mut uniform = || {
            state = crate::rng::mix(state);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for i in 0..40_000u64 {
            // Lognormal latency around a millisecond (σ 0.5), one candidate read in a
            // hundred ten times slower: the p99 moves, the median does not.
            let normal = (-2.0 * uniform().max(1e-12).ln()).sqrt()
                * (2.0 * std::f64::consts::PI * uniform()).cos();
            let latency = (1_000.0 * (0.5 * normal).exp()) as u64;
            let candidate = if i % 100 == 0 { latency * 10 } else { latency };
            shadow.twin.record_request(crate::Outcome::Success, latency);
            shadow
                .candidate
                .record_request(crate::Outcome::Success, candidate);
            let pairs = &mut shadow.pairs.total;
            pairs.outcomes.record(false, false);
            pairs
                .latency
                .add(((candidate + 20) as f64 / (latency + 20) as f64).ln());
        }
        let assessment = analysis.analyze(&evidence);
        let p99 = assessment
            .test(Metric::LatencyQuantile(Quantile::P99), &Scope::Shadow)
            .expect("ran");
        assert_eq!(p99.verdict, Verdict::Worse, "{p99}");
        let p50 = assessment
            .test(Metric::LatencyQuantile(Quantile::P50), &Scope::Shadow)
            .expect("ran");
        assert_ne!(p50.verdict, Verdict::Worse, "{p50}");
    }

    #[test]
    fn the_failure_probability_follows_the_evidence() {
        let analysis = SequentialAnalysis::new(SequentialConfig::default()).expect("valid");
        let probability = |shift: f64, n: u64| {
            let mut evidence =
                Evidence::new(crate::Version::new("a", "1"), crate::Version::new("a", "2"));
            pairs(&mut evidence, "GET /", n, shift);
            analysis.failure_probability(&analysis.analyze(&evidence))
        };
        // No difference, many pairs: nearly certainly within the tolerance.
        assert!(probability(0.0, 20_000) < 0.01);
        // 20% slower: nearly certainly worse.
        assert!(probability(1.2f64.ln(), 20_000) > 0.99);
        // Just below and just above the tolerance of 5%.
        assert!(probability(1.04f64.ln(), 20_000) < 0.05);
        assert!(probability(1.06f64.ln(), 20_000) > 0.95);
        // Few pairs at the tolerance: undecided, and said so.
        let unsure = probability(1.05f64.ln(), 300);
        assert!((0.05..0.95).contains(&unsure), "{unsure}");
    }
}
