//! The sequential tests applied to the evidence: one test per KPI, each answering worse
//! than tolerated / not worse than tolerated / not yet known, and the verdict they add up to.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::AnalysisError;
use super::anomaly::{ChartConfig, NovelFailure, StreamTotals, novel_failures};
use super::error::{positive, unit_open};
use super::msprt::{DifferenceEstimate, MixtureSprt, Proportion, SequentialTest, Verdict};
use crate::evidence::{Distribution, Evidence};
use crate::model::{Degradation, Kpi, SampleCount};

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
    /// Relative increase of typical latency (the geometric mean): 0.05 = 5% slower.
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
    /// Level of every test: the chance, over the whole rollout, that one test calls the
    /// candidate worse (or not worse) than tolerated when it is not.
    pub alpha: f64,
    /// Requests each build must have served before anything is decided.
    pub min_samples_per_arm: u64,
    /// The quantile of stable's latency whose exceedance the tail test compares.
    pub tail_quantile: f64,
    /// Level at which a failure class stable never produced counts as a regression.
    pub novel_failure_alpha: f64,
    /// The tolerated degradations.
    pub tolerances: Tolerances,
    /// The control charts on the candidate's own stream.
    pub charts: ChartConfig,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            min_samples_per_arm: 200,
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
        if self.min_samples_per_arm < 2 {
            return Err(AnalysisError::TooFewSamples {
                field: "min_samples_per_arm",
                value: self.min_samples_per_arm,
                minimum: 2,
            });
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
    /// Mean log latency: a relative shift of typical latency (the geometric mean).
    Latency,
    /// The share of requests slower than stable's tail quantile: a tail-only slowdown.
    LatencyTail,
    /// The failure rate (server errors, timeouts and panics over requests).
    ErrorRate,
    /// Mean CPU time per request, relative.
    Cpu,
    /// Mean bytes allocated per request, relative.
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

/// One KPI's sequential test and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiTest {
    /// The KPI.
    pub metric: Metric,
    /// The test, on the test's scale (log ratio for relative metrics).
    pub test: SequentialTest,
    /// The verdict, after the minimum-evidence rules.
    pub verdict: Verdict,
    /// Why the verdict is "not yet known" although the test alone would say more.
    pub held_because: Option<String>,
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
        write!(
            f,
            "{}: {} [{}, {}] ({:.0}% confidence sequence), tolerance {}: {} \
             (p worse {:.3}, p not worse {:.3}; samples stable {}, candidate {})",
            self.metric,
            percent(d.estimate),
            percent(d.low),
            percent(d.high),
            self.test.confidence.confidence * 100.0,
            percent(self.tolerance()),
            self.verdict,
            self.test.worse_p_value,
            self.test.not_worse_p_value,
            s.stable,
            s.candidate,
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
    /// Worse if any test is worse or a novel failure class is significant; not worse only
    /// if every test is not worse and nothing is flagged; otherwise not yet known.
    pub verdict: Verdict,
    /// One test per KPI measured on both builds.
    pub tests: Vec<KpiTest>,
    /// Failure classes the candidate produced and stable never did.
    pub novel_failures: Vec<NovelFailure>,
    /// Requests seen on each build.
    pub samples: SampleCount,
    /// Why nothing was tested, when there was too little evidence.
    pub insufficient: Option<String>,
    /// The candidate's stream totals read for the tests, for the control charts.
    pub candidate_stream: StreamTotals,
}

impl Assessment {
    /// The test of one KPI, if it ran.
    pub fn test(&self, metric: Metric) -> Option<&KpiTest> {
        self.tests.iter().find(|t| t.metric == metric)
    }

    /// One readable line per finding.
    pub fn reasons(&self) -> Vec<String> {
        let mut reasons: Vec<String> = self.insufficient.iter().cloned().collect();
        reasons.extend(self.tests.iter().map(ToString::to_string));
        reasons.extend(self.novel_failures.iter().map(ToString::to_string));
        reasons
    }
}

/// Runs the sequential tests on the evidence of a look.
///
/// * **Latency**: mixture SPRT on the difference of mean log latency (a relative shift).
/// * **Latency tail**: mixture SPRT on the difference of the share of requests slower than
///   stable's `tail_quantile` (by default p95), so a regression that only affects the tail
///   is caught even when typical latency is unchanged.
/// * **Error rate**: mixture SPRT for proportions. A zero-heavy count cannot pass just
///   because nothing happened: the test stays "not yet known" until each build served
///   `ln(1/α) / (stable rate + tolerance)` requests — enough that a candidate failing at
///   the tolerated rate would have shown at least one failure with probability `1 − α`.
/// * **CPU** and **allocations** per request: mixture SPRT on the log ratio of the means,
///   when both builds measure them.
/// * **Novel failure classes**: see [`novel_failures`].
///
/// Below `min_samples_per_arm` requests on either build, nothing is decided.
///
/// ```
/// use shadowlib::{Evidence, Outcome, Version};
/// use shadowlib::analysis::{Metric, SequentialAnalysis, SequentialConfig, Verdict};
///
/// let analysis = SequentialAnalysis::new(SequentialConfig::default())?;
/// let mut evidence = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
/// for i in 0..5_000u64 {
///     let latency = 800 + (i * 7919) % 400; // 800..1200 µs on both builds
///     evidence.stable.record_request(Outcome::Success, latency);
///     evidence.candidate.record_request(Outcome::Success, latency * 3 / 2); // 50% slower
/// }
/// let assessment = analysis.analyze(&evidence);
/// assert_eq!(assessment.verdict, Verdict::Worse);
/// assert_eq!(assessment.test(Metric::Latency).unwrap().verdict, Verdict::Worse);
/// # Ok::<(), shadowlib::analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SequentialAnalysis {
    config: SequentialConfig,
    latency: MixtureSprt,
    latency_tail: MixtureSprt,
    error_rate: MixtureSprt,
    cpu: MixtureSprt,
    allocations: MixtureSprt,
}

impl SequentialAnalysis {
    /// An analysis with this configuration, validated here.
    pub fn new(config: SequentialConfig) -> Result<Self, AnalysisError> {
        config.validate()?;
        let t = &config.tolerances;
        let sprt = |scale: f64| MixtureSprt::new(config.alpha, scale);
        Ok(Self {
            latency: sprt(t.latency.ln_1p())?,
            latency_tail: sprt(t.latency_tail)?,
            error_rate: sprt(t.error_rate)?,
            cpu: sprt(t.cpu.ln_1p())?,
            allocations: sprt(t.allocations.ln_1p())?,
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &SequentialConfig {
        &self.config
    }

    /// Tests the evidence of one look.
    pub fn analyze(&self, evidence: &Evidence) -> Assessment {
        let (stable, candidate) = (&evidence.stable, &evidence.candidate);
        let samples = SampleCount {
            stable: stable.requests(),
            candidate: candidate.requests(),
        };
        let candidate_stream = StreamTotals::of(candidate);
        let min = self.config.min_samples_per_arm;
        if evidence.samples_per_arm() < min {
            return Assessment {
                verdict: Verdict::NotYetKnown,
                tests: Vec::new(),
                novel_failures: Vec::new(),
                samples,
                insufficient: Some(format!(
                    "not enough evidence: need {min} requests per build, have stable {}, candidate {}",
                    samples.stable, samples.candidate
                )),
                candidate_stream,
            };
        }

        let t = &self.config.tolerances;
        let mut tests = Vec::new();
        let stable_log = stable.latency_us.log_moments();
        if let Some(e) = DifferenceEstimate::means(&stable_log, &candidate_stream.log_latency) {
            tests.push(self.judge(Metric::Latency, self.latency.test(e, t.latency.ln_1p())));
        }
        if !stable.latency_us.is_empty() && !candidate.latency_us.is_empty() {
            let threshold = stable.latency_us.quantile(self.config.tail_quantile);
            let above = |d: &Distribution| Proportion::new(d.count_above(threshold), d.count());
            let (s, c) = (above(&stable.latency_us), above(&candidate.latency_us));
            if let Some(e) = DifferenceEstimate::proportions(s, c) {
                let test = self.latency_tail.test(e, t.latency_tail);
                tests.push(self.judge_proportion(Metric::LatencyTail, test, s, c));
            }
        }
        let failures =
            |arm: &crate::ArmEvidence| Proportion::new(arm.outcomes.failures(), arm.requests());
        let (s, c) = (failures(stable), failures(candidate));
        if let Some(e) = DifferenceEstimate::proportions(s, c) {
            tests.push(self.judge_proportion(
                Metric::ErrorRate,
                self.error_rate.test(e, t.error_rate),
                s,
                c,
            ));
        }
        let resources = [
            (
                Metric::Cpu,
                &stable.cpu_ns,
                &candidate.cpu_ns,
                &self.cpu,
                t.cpu,
            ),
            (
                Metric::Allocations,
                &stable.alloc_bytes,
                &candidate.alloc_bytes,
                &self.allocations,
                t.allocations,
            ),
        ];
        for (metric, s, c, sprt, tolerance) in resources {
            if let (Some(s), Some(c)) = (s, c)
                && let Some(e) = DifferenceEstimate::log_ratio_of_means(s, c)
            {
                tests.push(self.judge(metric, sprt.test(e, tolerance.ln_1p())));
            }
        }
        let novel = novel_failures(stable, candidate, self.config.novel_failure_alpha);

        let verdict = if tests.iter().any(|t| t.verdict == Verdict::Worse)
            || novel.iter().any(|n| n.significant)
        {
            Verdict::Worse
        } else if !tests.is_empty()
            && tests.iter().all(|t| t.verdict == Verdict::NotWorse)
            && novel.is_empty()
        {
            Verdict::NotWorse
        } else {
            Verdict::NotYetKnown
        };
        Assessment {
            verdict,
            tests,
            novel_failures: novel,
            samples,
            insufficient: None,
            candidate_stream,
        }
    }

    fn judge(&self, metric: Metric, test: SequentialTest) -> KpiTest {
        KpiTest {
            metric,
            verdict: test.verdict(),
            test,
            held_because: None,
        }
    }

    /// The zero-heavy rule: "not worse" on a rate needs enough trials on each build that a
    /// rate at the tolerance would have shown an event with probability `1 − α`:
    /// `(1 − p)^n ≤ e^(−pn) ≤ α` once `n ≥ ln(1/α) / p`, with `p` stable's rate plus the
    /// tolerance.
    fn judge_proportion(
        &self,
        metric: Metric,
        test: SequentialTest,
        stable: Proportion,
        candidate: Proportion,
    ) -> KpiTest {
        let mut judged = self.judge(metric, test);
        if judged.verdict != Verdict::NotWorse {
            return judged;
        }
        let tolerated_rate = stable.rate() + test.tolerance;
        let needed = ((1.0 / self.config.alpha).ln() / tolerated_rate).ceil() as u64;
        let seen = stable.trials.min(candidate.trials);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_heavy_rule_holds_a_pass_until_the_tolerated_rate_could_show() {
        let analysis = SequentialAnalysis::new(SequentialConfig::default()).expect("valid");
        // A test that passes on its own, as one on a raw plug-in variance of zero counts would.
        let sprt = MixtureSprt::new(0.05, 0.001).expect("valid");
        let estimate = DifferenceEstimate {
            difference: 0.0,
            variance: 1e-12,
            samples: SampleCount::default(),
        };
        let test = sprt.test(estimate, 0.001);
        assert_eq!(test.verdict(), Verdict::NotWorse);
        // ln(20) / 0.001 = 2995.7: below 2,996 requests per build, a 0.1% rate could hide.
        let held = analysis.judge_proportion(
            Metric::ErrorRate,
            test,
            Proportion::new(0, 2_995),
            Proportion::new(0, 5_000),
        );
        assert_eq!(held.verdict, Verdict::NotYetKnown);
        assert!(held.held_because.as_deref().is_some_and(|why| why.contains("needs 2996 requests per build to show, have 2995")));
        let passed = analysis.judge_proportion(
            Metric::ErrorRate,
            test,
            Proportion::new(0, 2_996),
            Proportion::new(0, 2_996),
        );
        assert_eq!(passed.verdict, Verdict::NotWorse);
        // A stable rate raises the tolerated rate and lowers the requests needed.
        let with_errors = analysis.judge_proportion(
            Metric::ErrorRate,
            test,
            Proportion::new(9, 1_000),
            Proportion::new(9, 1_000),
        );
        assert_eq!(
            with_errors.verdict,
            Verdict::NotWorse,
            "ln(20) / 0.01 = 300 requests suffice"
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
