//! The sequential tests applied to the evidence: one test per KPI, each answering worse
//! than tolerated / not worse than tolerated / not yet known, and the verdict they add up to.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::AnalysisError;
use super::anomaly::{ChartConfig, DifferenceTotals, NovelFailure, novel_failures};
use super::error::{positive, unit_open};
use super::msprt::{DifferenceEstimate, MixtureSprt, Proportion, SequentialTest, Verdict};
use crate::evidence::{
    CanaryEvidence, Distribution, Evidence, LATENCY_FLOOR_US, OutcomeCounts, Stage,
};
use crate::model::{Arm, Degradation, Kpi, SampleCount};

/// The degradation the user tolerates on each KPI. Each is also the effect size its test
/// is tuned to detect fastest (the mixing scale of the mSPRT).
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
    /// Absolute increase of the share of requests slower than stable's
    /// [`tail_quantile`](SequentialConfig::tail_quantile): 0.01 = one percentage point more
    /// requests above stable's p95.
    pub latency_tail: f64,
    /// Absolute increase of the failure rate: 0.001 = 0.1 percentage points.
    pub error_rate: f64,
    /// Relative increase of mean CPU time per request.
    pub cpu: f64,
    /// Relative increase of mean bytes allocated per request.
    pub allocations: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            latency: 0.05,
            latency_tail: 0.01,
            error_rate: 0.001,
            cpu: 0.10,
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
///     alpha = 0.05
///     min_samples_per_arm = 500
///
///     [tolerances]
///     latency = 0.05
///     error_rate = 0.0025
/// "#).unwrap();
/// config.validate()?;
/// assert_eq!(config.tail_quantile, 0.95);
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
    /// The quantile of stable's latency whose exceedance the tail test compares.
    pub tail_quantile: f64,
    /// Level at which a failure class stable never produced counts as a regression.
    pub novel_failure_alpha: f64,
    /// The tolerated degradations.
    pub tolerances: Tolerances,
    /// The control charts on the difference between the builds.
    pub charts: ChartConfig,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            min_samples_per_arm: 200,
            min_pairs_per_route: 30,
            tail_quantile: 0.95,
            novel_failure_alpha: 0.001,
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
        unit_open("tail_quantile", self.tail_quantile)?;
        unit_open("novel_failure_alpha", self.novel_failure_alpha)?;
        let t = &self.tolerances;
        positive("tolerances.latency", t.latency)?;
        unit_open("tolerances.latency_tail", t.latency_tail)?;
        unit_open("tolerances.error_rate", t.error_rate)?;
        positive("tolerances.cpu", t.cpu)?;
        positive("tolerances.allocations", t.allocations)?;
        self.charts.validate()
    }
}

/// What a KPI test measures, and on which scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Log latency: a relative shift of typical latency (the geometric mean).
    Latency,
    /// The share of requests slower than stable's tail quantile: a tail-only slowdown.
    LatencyTail,
    /// The failure rate (server errors, timeouts and panics over requests).
    ErrorRate,
    /// CPU time per request, relative.
    Cpu,
    /// Bytes allocated per request, relative.
    Allocations,
}

impl Metric {
    /// Whether the test works on the log of a ratio (reported as a relative change) rather
    /// than on a plain difference (reported as is).
    pub fn is_relative(self) -> bool {
        matches!(self, Metric::Latency | Metric::Cpu | Metric::Allocations)
    }

    /// The KPI a prediction reports it under.
    pub fn kpi(self) -> Kpi {
        match self {
            Metric::Latency => Kpi::Custom("latency (geometric mean)".into()),
            Metric::LatencyTail => {
                Kpi::Custom("share of requests slower than stable's tail quantile".into())
            }
            Metric::ErrorRate => Kpi::ErrorRate,
            Metric::Cpu => Kpi::CpuPerRequest,
            Metric::Allocations => Kpi::AllocPerRequest,
        }
    }

    /// Maps a value on the test's scale to the reported scale.
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
        f.write_str(match self {
            Metric::Latency => "latency (geometric mean)",
            Metric::LatencyTail => "share of requests above stable's tail quantile",
            Metric::ErrorRate => "error rate",
            Metric::Cpu => "CPU per request",
            Metric::Allocations => "allocated bytes per request",
        })
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

/// One KPI's sequential test and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiTest {
    /// The KPI.
    pub metric: Metric,
    /// The evidence it compares.
    pub scope: Scope,
    /// The test, on the test's scale (log ratio for relative metrics).
    pub test: SequentialTest,
    /// The verdict, after the minimum-evidence rules.
    pub verdict: Verdict,
    /// Why the verdict is "not yet known" although the test alone would say more.
    pub held_because: Option<String>,
    /// Whether the stage's "not worse" needs this test's "not worse" (every test can roll
    /// back; per-route tests and, in the canary, the shadow's tests only do that).
    pub required: bool,
}

impl KpiTest {
    /// The degradation with its confidence sequence, on the reported scale (relative change
    /// for latency, CPU and allocations; absolute difference for rates and shares).
    pub fn degradation(&self) -> Degradation {
        let m = self.metric;
        Degradation::new(
            m.report(self.test.estimate.difference),
            m.report(self.test.confidence.low),
            m.report(self.test.confidence.high),
        )
    }

    /// The tolerance on the reported scale.
    pub fn tolerance(&self) -> f64 {
        self.metric.report(self.test.tolerance)
    }
}

fn percent(value: f64) -> String {
    format!("{:+.2}%", value * 100.0)
}

impl fmt::Display for KpiTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.degradation();
        let s = self.test.estimate.samples;
        let samples = match self.scope {
            Scope::Canary => format!(
                "live requests stable {}, candidate {}",
                s.stable, s.candidate
            ),
            _ => format!("{} pairs", s.candidate),
        };
        write!(
            f,
            "{} ({}): {} [{}, {}] ({:.1}% confidence sequence), tolerance {}: {} \
             (p worse {:.3}, p not worse {:.3}, level {:.4}; {samples})",
            self.metric,
            self.scope,
            percent(d.estimate),
            percent(d.low),
            percent(d.high),
            self.test.confidence.confidence * 100.0,
            percent(self.tolerance()),
            self.verdict,
            self.test.worse_p_value,
            self.test.not_worse_p_value,
            self.test.alpha,
        )?;
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
                    a.test
                        .estimate
                        .difference
                        .total_cmp(&b.test.estimate.difference)
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
        reasons.extend(self.novel_failures.iter().map(ToString::to_string));
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

/// How many tests share the rollback budget `α`: pooled shadow latency, shadow latency per
/// route (as one), shadow tail, shadow errors, shadow CPU, shadow allocations, canary
/// latency and canary errors.
const TEST_SLOTS: f64 = 8.0;

/// Runs the sequential tests on the evidence of a look.
///
/// **Shadow** (the twin and the candidate on the same mirrored reads; see
/// [`ShadowEvidence`](crate::ShadowEvidence)):
///
/// * **Latency**: mixture SPRT on the mean per-read log ratio candidate/twin — pooled, and
///   for each route with [`min_pairs_per_route`](SequentialConfig::min_pairs_per_route)
///   pairs (a slowdown of one route among many would hide in the pooled mean).
/// * **Latency tail**: the share of the candidate's reads slower than the twin's
///   `tail_quantile` (by default p95) against the twin's own share, for a regression that
///   only affects the tail.
/// * **Error rate**: the reads only the candidate failed against those only the twin
///   failed (a paired test of proportions). A zero-heavy count cannot pass just because
///   nothing happened: "not worse" waits until `ln(1/α) / (twin rate + tolerance)` pairs —
///   enough that a candidate failing at the tolerated rate would have shown a failure with
///   probability `1 − α`.
/// * **CPU** and **allocations**: the mean per-read log ratio, where measured.
///
/// **Canary** (live requests of both builds, compared within each canary step and route
/// and added up with the stratum's share of requests as weight): latency (mean log
/// latency) and error rate, with the same zero-heavy rule. The canary phase is judged on
/// these; the shadow's tests keep watching and can still roll back.
///
/// **Novel failure classes** in either: see [`novel_failures`].
///
/// The rollback budget `α` is split evenly over eight test slots (the per-route latency
/// tests share one, spread over the routes in order of appearance), so the chance that
/// *any* test calls identical builds worse at *any* look stays within `α`. Below
/// `min_samples_per_arm` pairs (or live requests per build, in the canary) nothing is
/// decided from that stage.
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

    /// The test of `metric` at `alpha`, most powerful near the tolerance.
    fn sprt(&self, metric: Metric, alpha: f64) -> (MixtureSprt, f64) {
        let t = &self.config.tolerances;
        let tolerance = match metric {
            Metric::Latency => t.latency.ln_1p(),
            Metric::LatencyTail => t.latency_tail,
            Metric::ErrorRate => t.error_rate,
            Metric::Cpu => t.cpu.ln_1p(),
            Metric::Allocations => t.allocations.ln_1p(),
        };
        // Both are validated in (0, 1) and positive, so the test exists.
        let sprt = MixtureSprt::new(alpha, tolerance)
            .unwrap_or_else(|_| unreachable!("validated level {alpha} and scale {tolerance}"));
        (sprt, tolerance)
    }

    fn run(
        &self,
        metric: Metric,
        scope: Scope,
        estimate: DifferenceEstimate,
        alpha: f64,
        required: bool,
    ) -> KpiTest {
        let (sprt, tolerance) = self.sprt(metric, alpha);
        let test = sprt.test(estimate, tolerance);
        KpiTest {
            metric,
            scope,
            verdict: test.verdict(),
            test,
            held_because: None,
            required,
        }
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
            && novel.is_empty()
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
            samples: evidence.samples(),
            insufficient,
            differences,
        }
    }

    /// The shadow's paired tests; `required` when the shadow is the stage judged.
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
        if !twin.is_empty() && !candidate.is_empty() {
            // On the same reads the two samples go up and down together, so treating them
            // as independent overstates the variance: slower to decide, never wrong.
            let threshold = twin.quantile(self.config.tail_quantile);
            let above = |d: &Distribution| Proportion::new(d.count_above(threshold), d.count());
            let (t, c) = (above(twin), above(candidate));
            if let Some(e) = DifferenceEstimate::proportions(t, c) {
                let test = self.run(Metric::LatencyTail, Scope::Shadow, e, alpha, required);
                tests.push(self.zero_heavy(test, t.rate(), t.trials.min(c.trials)));
            }
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
        let tolerated_rate = stable_rate + judged.test.tolerance;
        let needed = ((1.0 / judged.test.alpha).ln() / tolerated_rate).ceil() as u64;
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
            tail_quantile: 1.0,
            ..Default::default()
        };
        assert!(matches!(
            config.validate(),
            Err(AnalysisError::OutOfRange {
                field: "tail_quantile",
                ..
            })
        ));
    }
}
