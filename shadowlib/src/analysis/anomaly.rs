//! Anomalies in the difference between the builds: control charts for bursts and drift,
//! and failure classes the stable build never produced.
//!
//! The sequential tests compare cumulative evidence, which is what makes them powerful and
//! valid — and also what makes them slow to notice a candidate that was fine for an hour
//! and then started failing. The charts here watch what changed *since the last look*.
//! They chart the *difference* between the builds, never one build's stream alone: a rise
//! of load or a slow dependency moves both builds alike and raises nothing; only the
//! candidate falling behind its control does.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::AnalysisError;
use super::error::positive;
use crate::evidence::{ArmEvidence, Evidence, Moments};
use crate::model::{Arm, Outcome};

/// How the control charts on the difference between the builds are tuned.
///
/// Each chart is a one-sided CUSUM of log likelihood ratios (Page's CUSUM): it sums, look
/// by look, the evidence that the latest interval came from a worse process than the
/// difference's own history, floored at zero, and alarms above `threshold`. For a CUSUM
/// of likelihood ratios the expected number of in-control looks before a false alarm is at
/// least `e^threshold` (about 22,000 for the default of 10), so a long rollout of a healthy
/// candidate rarely sees one.
///
/// * **Latency**: the mean per-read log ratio candidate/twin of the interval's shadow
///   pairs, against the history's, tuned to a shift of `latency_shift`.
/// * **Shadow failures**: of the interval's reads only one build failed, the share that
///   were the candidate's, against the history's, tuned to odds `error_rate_ratio` times
///   higher.
/// * **Canary failures**: of the interval's live failures, the share that were the
///   candidate's, against its share of the interval's live requests (what identical builds
///   would give whatever the load), tuned to the same odds ratio.
///
/// ```
/// use shadowlib::analysis::ChartConfig;
///
/// let config: ChartConfig = toml::from_str("warmup = 500\nthreshold = 12.0").unwrap();
/// assert_eq!(config.warmup, 500);
/// assert!(config.enabled);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChartConfig {
    /// Whether the charts run at all.
    pub enabled: bool,
    /// Shadow pairs needed before the charts start: the history they compare with.
    pub warmup: u64,
    /// The relative latency increase the latency chart is tuned to detect (0.1 = 10%).
    pub latency_shift: f64,
    /// The odds ratio of failures the failure charts are tuned to detect (above 1).
    pub error_rate_ratio: f64,
    /// The alarm threshold, in natural-log units of likelihood ratio.
    pub threshold: f64,
}

impl Default for ChartConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            warmup: 1_000,
            latency_shift: 0.10,
            error_rate_ratio: 3.0,
            threshold: 10.0,
        }
    }
}

impl ChartConfig {
    /// Checks every field; the first violation found is returned.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        positive("charts.latency_shift", self.latency_shift)?;
        positive("charts.threshold", self.threshold)?;
        if !(self.error_rate_ratio > 1.0 && self.error_rate_ratio.is_finite()) {
            return Err(AnalysisError::OutOfRange {
                field: "charts.error_rate_ratio",
                value: self.error_rate_ratio,
                expected: "(1, infinity)",
            });
        }
        if self.warmup < 2 {
            return Err(AnalysisError::TooFewSamples {
                field: "charts.warmup",
                value: self.warmup,
                minimum: 2,
            });
        }
        Ok(())
    }
}

/// Which chart alarmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Chart {
    /// The per-read latency ratio of the shadow's pairs.
    Latency,
    /// The candidate's share of the shadow's one-sided failures.
    ShadowFailures,
    /// The candidate's share of live failures in the canary.
    CanaryFailures,
}

impl fmt::Display for Chart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Chart::Latency => "latency ratio (shadow pairs)",
            Chart::ShadowFailures => "failures only the candidate had (shadow pairs)",
            Chart::CanaryFailures => "candidate's share of live failures (canary)",
        })
    }
}

/// A chart above its threshold: the difference between the builds moved away from its
/// history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// The chart.
    pub chart: Chart,
    /// Its CUSUM statistic.
    pub statistic: f64,
    /// The threshold it crossed.
    pub threshold: f64,
}

impl fmt::Display for Alarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "control chart of the {} alarmed (CUSUM {:.1} > {:.1}): the candidate's latest \
             requests fell behind stable's more than before",
            self.chart, self.statistic, self.threshold
        )
    }
}

/// The cumulative totals of the difference between the builds that the charts difference
/// look by look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DifferenceTotals {
    /// Shadow pairs.
    pub pairs: u64,
    /// Moments of the per-pair log latency ratio candidate/twin.
    pub latency_ratio: Moments,
    /// Shadow pairs only the candidate failed.
    pub candidate_only_failures: u64,
    /// Shadow pairs only the twin failed.
    pub twin_only_failures: u64,
    /// Live requests each build served in the canary (stable, candidate).
    pub canary_requests: [u64; 2],
    /// Live failures of each build in the canary (stable, candidate).
    pub canary_failures: [u64; 2],
}

impl DifferenceTotals {
    /// The totals of a look's evidence.
    pub fn of(evidence: &Evidence) -> Self {
        let pairs = &evidence.shadow.pairs.total;
        let (stable, candidate) = (
            evidence.canary.total_outcomes(Arm::Stable),
            evidence.canary.total_outcomes(Arm::Candidate),
        );
        Self {
            pairs: pairs.pairs(),
            latency_ratio: pairs.latency,
            candidate_only_failures: pairs.outcomes.candidate_only,
            twin_only_failures: pairs.outcomes.twin_only,
            canary_requests: [stable.total(), candidate.total()],
            canary_failures: [stable.failures(), candidate.failures()],
        }
    }

    fn went_down_from(&self, previous: &DifferenceTotals) -> bool {
        self.pairs < previous.pairs
            || self.latency_ratio.count() < previous.latency_ratio.count()
            || self.candidate_only_failures < previous.candidate_only_failures
            || self.twin_only_failures < previous.twin_only_failures
            || (0..2).any(|arm| {
                self.canary_requests[arm] < previous.canary_requests[arm]
                    || self.canary_failures[arm] < previous.canary_failures[arm]
            })
    }
}

/// CUSUM control charts over the difference between the builds (see [`ChartConfig`]).
///
/// Feed it the totals at every look; it works out what happened since the previous look
/// and updates the charts. A look without new requests changes nothing, so sparse traffic
/// never alarms by itself. Totals that go down mean a new stream (a new rollout), and the
/// charts start over.
///
/// ```
/// use shadowlib::Moments;
/// use shadowlib::analysis::{Chart, ChartConfig, DifferenceMonitor, DifferenceTotals};
///
/// let mut monitor = DifferenceMonitor::new(ChartConfig { warmup: 1_000, ..Default::default() })?;
/// let mut totals = DifferenceTotals::default();
/// let mut look = |pairs: u64, candidate_only: u64, twin_only: u64, monitor: &mut DifferenceMonitor| {
///     totals.pairs += pairs;
///     totals.candidate_only_failures += candidate_only;
///     totals.twin_only_failures += twin_only;
///     monitor.observe(totals)
/// };
/// for _ in 0..10 {
///     assert!(look(1_000, 5, 5, &mut monitor).is_empty(), "as many failures on either side");
/// }
/// // Load doubles and both sides fail more: still even, nothing to say.
/// assert!(look(2_000, 20, 20, &mut monitor).is_empty());
/// let alarms = look(1_000, 40, 4, &mut monitor); // a burst on the candidate alone
/// assert_eq!(alarms[0].chart, Chart::ShadowFailures);
/// # Ok::<(), shadowlib::analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DifferenceMonitor {
    config: ChartConfig,
    previous: Option<DifferenceTotals>,
    latency: f64,
    shadow_failures: f64,
    canary_failures: f64,
}

impl DifferenceMonitor {
    /// Charts with this tuning; the configuration is validated here.
    pub fn new(config: ChartConfig) -> Result<Self, AnalysisError> {
        config.validate()?;
        Ok(Self {
            config,
            previous: None,
            latency: 0.0,
            shadow_failures: 0.0,
            canary_failures: 0.0,
        })
    }

    /// Forgets the history: the next totals start a new stream.
    pub fn reset(&mut self) {
        self.previous = None;
        self.latency = 0.0;
        self.shadow_failures = 0.0;
        self.canary_failures = 0.0;
    }

    /// The charts above their threshold now.
    pub fn alarms(&self) -> Vec<Alarm> {
        let threshold = self.config.threshold;
        [
            (Chart::Latency, self.latency),
            (Chart::ShadowFailures, self.shadow_failures),
            (Chart::CanaryFailures, self.canary_failures),
        ]
        .into_iter()
        .filter(|(_, statistic)| *statistic > threshold)
        .map(|(chart, statistic)| Alarm {
            chart,
            statistic,
            threshold,
        })
        .collect()
    }

    /// Takes the cumulative totals at a look, updates the charts with what is new since the
    /// previous look, and returns the alarms in force.
    pub fn observe(&mut self, totals: DifferenceTotals) -> Vec<Alarm> {
        if !self.config.enabled {
            return Vec::new();
        }
        let Some(previous) = self.previous else {
            self.previous = Some(totals);
            return Vec::new();
        };
        if totals.went_down_from(&previous) {
            self.reset();
            self.previous = Some(totals);
            return Vec::new();
        }
        if previous.pairs >= self.config.warmup {
            if let Some(step) =
                self.latency_evidence(&previous.latency_ratio, &totals.latency_ratio)
            {
                self.latency = (self.latency + step).max(0.0);
            }
            let step = self.shadow_failure_evidence(&previous, &totals);
            self.shadow_failures = (self.shadow_failures + step).max(0.0);
        }
        let step = self.canary_failure_evidence(&previous, &totals);
        self.canary_failures = (self.canary_failures + step).max(0.0);
        self.previous = Some(totals);
        self.alarms()
    }

    /// The probability of an event under odds `error_rate_ratio` times those of `p`.
    fn raised(&self, p: f64) -> f64 {
        let odds = p / (1.0 - p) * self.config.error_rate_ratio;
        odds / (1.0 + odds)
    }

    /// Log likelihood ratio of `mine` of `mine + theirs` events falling on the candidate,
    /// under a share raised by the odds ratio against the share `p`.
    fn share_evidence(&self, mine: u64, theirs: u64, p: f64) -> f64 {
        if mine + theirs == 0 {
            return 0.0;
        }
        let p = p.clamp(1e-9, 1.0 - 1e-9);
        let raised = self.raised(p);
        mine as f64 * (raised / p).ln() + theirs as f64 * ((1.0 - raised) / (1.0 - p)).ln()
    }

    /// The interval's one-sided shadow failures, against the history's share of them that
    /// were the candidate's (smoothed, so an even split is assumed without history).
    fn shadow_failure_evidence(
        &self,
        previous: &DifferenceTotals,
        totals: &DifferenceTotals,
    ) -> f64 {
        let mine = totals.candidate_only_failures - previous.candidate_only_failures;
        let theirs = totals.twin_only_failures - previous.twin_only_failures;
        let history = (previous.candidate_only_failures as f64 + 1.0)
            / ((previous.candidate_only_failures + previous.twin_only_failures) as f64 + 2.0);
        self.share_evidence(mine, theirs, history)
    }

    /// The interval's live failures, against the candidate's share of the interval's live
    /// requests.
    fn canary_failure_evidence(
        &self,
        previous: &DifferenceTotals,
        totals: &DifferenceTotals,
    ) -> f64 {
        let new = |arm: usize| {
            (
                totals.canary_requests[arm] - previous.canary_requests[arm],
                totals.canary_failures[arm] - previous.canary_failures[arm],
            )
        };
        let ((stable_requests, stable_failures), (candidate_requests, candidate_failures)) =
            (new(0), new(1));
        if stable_requests == 0 || candidate_requests == 0 {
            return 0.0;
        }
        let share = candidate_requests as f64 / (candidate_requests + stable_requests) as f64;
        self.share_evidence(candidate_failures, stable_failures, share)
    }

    /// Log likelihood ratio of the interval's mean latency ratio under a shift of
    /// `ln(1 + latency_shift)` above the history's mean (normal, history's variance).
    fn latency_evidence(&self, previous: &Moments, totals: &Moments) -> Option<f64> {
        let n = totals
            .count()
            .checked_sub(previous.count())
            .filter(|n| *n > 0)? as f64;
        if previous.count() < 2 {
            return None;
        }
        let interval_mean =
            (totals.mean() * totals.count() as f64 - previous.mean() * previous.count() as f64) / n;
        let variance = previous.variance().max(super::MIN_VARIANCE_PER_SAMPLE);
        let shift = (1.0 + self.config.latency_shift).ln();
        Some(n * shift / variance * (interval_mean - previous.mean() - shift / 2.0))
    }
}

/// A failure class the candidate produced and stable never did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NovelFailure {
    /// The class.
    pub outcome: Outcome,
    /// How many times the candidate produced it.
    pub candidate: u64,
    /// How many requests stable served without producing it.
    pub stable_requests: u64,
    /// The probability that every one of these failures would have fallen on the candidate
    /// if both builds failed this way equally often: `(n_c / (n_c + n_s))^count`.
    pub chance: f64,
    /// Whether `chance` is at or below the level asked for.
    pub significant: bool,
}

impl fmt::Display for NovelFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "candidate produced {} {:?} failure(s), stable none in {} requests (chance alone: {:.2e}{})",
            self.candidate,
            self.outcome,
            self.stable_requests,
            self.chance,
            if self.significant {
                ", significant"
            } else {
                ""
            }
        )
    }
}

/// Flags the failure classes that mark a new bug — timeouts and panics — the candidate
/// produced and stable never did, with the chance of that happening between identical
/// builds. Server errors are left to the error-rate tests, which weigh them against
/// stable's on the same reads: a service with a trickle of 5xx would otherwise see that
/// trickle fall on the candidate alone now and then, and a rollback for it would not
/// stay within the error tests' budget.
///
/// Under identical builds each such failure falls on the candidate with probability
/// `n_c / (n_c + n_s)`, independently, so `count` of them all on the candidate has the
/// stated chance. Because the counts only grow, "stable still has none and the candidate
/// has `k`" happens at *some* look exactly when the first `k` failures of the class all fell
/// on the candidate — the chance is valid under continuous monitoring without correction.
///
/// ```
/// use shadowlib::{ArmEvidence, Outcome};
/// use shadowlib::analysis::novel_failures;
///
/// let mut stable = ArmEvidence::default();
/// let mut candidate = ArmEvidence::default();
/// for _ in 0..1_000 {
///     stable.record_request(Outcome::Success, 900);
///     candidate.record_request(Outcome::Success, 900);
/// }
/// candidate.record_request(Outcome::Panic, 900);
/// let flagged = novel_failures(&stable, &candidate, 0.001);
/// assert_eq!(flagged[0].outcome, Outcome::Panic);
/// assert!(!flagged[0].significant, "one panic could be chance");
/// ```
pub fn novel_failures(
    stable: &ArmEvidence,
    candidate: &ArmEvidence,
    alpha: f64,
) -> Vec<NovelFailure> {
    let (stable_requests, candidate_requests) = (stable.requests(), candidate.requests());
    if stable_requests == 0 || candidate_requests == 0 {
        return Vec::new();
    }
    let candidate_share = candidate_requests as f64 / (candidate_requests + stable_requests) as f64;
    [Outcome::Timeout, Outcome::Panic]
        .into_iter()
        .filter(|outcome| {
            stable.outcomes.get(*outcome) == 0 && candidate.outcomes.get(*outcome) > 0
        })
        .map(|outcome| {
            let count = candidate.outcomes.get(outcome);
            let chance = candidate_share.powf(count as f64);
            NovelFailure {
                outcome,
                candidate: count,
                stable_requests,
                chance,
                significant: chance <= alpha,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_failure_increment_matches_the_binomial_likelihood_ratio() {
        let monitor = DifferenceMonitor::new(ChartConfig::default()).expect("valid");
        let previous = DifferenceTotals {
            pairs: 1_000,
            candidate_only_failures: 9,
            twin_only_failures: 9,
            ..Default::default()
        };
        let now = DifferenceTotals {
            pairs: 2_000,
            candidate_only_failures: 29,
            twin_only_failures: 14,
            ..previous
        };
        // History share (9 + 1) / (18 + 2) = 1/2; raised by odds 3 to 3/4; 20 of 25.
        let expected = 20.0 * (0.75f64 / 0.5).ln() + 5.0 * (0.25f64 / 0.5).ln();
        let got = monitor.shadow_failure_evidence(&previous, &now);
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
    }

    #[test]
    fn canary_failures_are_judged_against_the_candidate_share_of_requests() {
        let mut monitor = DifferenceMonitor::new(ChartConfig::default()).expect("valid");
        let mut totals = DifferenceTotals::default();
        let mut look =
            |stable: (u64, u64), candidate: (u64, u64), monitor: &mut DifferenceMonitor| {
                totals.canary_requests[0] += stable.0;
                totals.canary_failures[0] += stable.1;
                totals.canary_requests[1] += candidate.0;
                totals.canary_failures[1] += candidate.1;
                monitor.observe(totals)
            };
        // 5% of requests and 5% of failures on the candidate, whatever the load.
        for load in [1u64, 1, 10, 10, 2, 20] {
            assert!(look((950 * load, 19 * load), (50 * load, load), &mut monitor).is_empty());
        }
        let alarms = look((9_500, 190), (500, 60), &mut monitor);
        assert_eq!(alarms[0].chart, Chart::CanaryFailures);
    }

    #[test]
    fn latency_increment_matches_the_normal_likelihood_ratio() {
        let monitor = DifferenceMonitor::new(ChartConfig::default()).expect("valid");
        let mut previous = Moments::default();
        for x in [-0.1, 0.1, 0.0, 0.0] {
            previous.add(x); // mean 0, variance 0.02/3
        }
        let mut now = previous;
        for x in [0.15, 0.25] {
            now.add(x); // interval mean 0.2
        }
        let shift = 1.1f64.ln();
        let expected = 2.0 * shift / (0.02 / 3.0) * (0.2 - 0.0 - shift / 2.0);
        let got = monitor
            .latency_evidence(&previous, &now)
            .expect("new values");
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
    }

    #[test]
    fn a_new_stream_resets_the_charts() {
        let config = ChartConfig {
            warmup: 100,
            ..Default::default()
        };
        let mut monitor = DifferenceMonitor::new(config).expect("valid");
        let totals = |pairs, candidate_only| DifferenceTotals {
            pairs,
            candidate_only_failures: candidate_only,
            ..Default::default()
        };
        monitor.observe(totals(1_000, 1));
        assert!(!monitor.observe(totals(2_000, 200)).is_empty());
        // No new pairs: the alarm stands, unchanged.
        let before = monitor.alarms();
        assert_eq!(monitor.observe(totals(2_000, 200)), before);
        // Counts went down: a new rollout, so the charts start over.
        assert!(monitor.observe(totals(10, 0)).is_empty());
    }

    #[test]
    fn invalid_tuning_is_named() {
        let bad = ChartConfig {
            error_rate_ratio: 1.0,
            ..Default::default()
        };
        assert!(matches!(
            DifferenceMonitor::new(bad),
            Err(AnalysisError::OutOfRange {
                field: "charts.error_rate_ratio",
                ..
            })
        ));
        let bad = ChartConfig {
            warmup: 0,
            ..Default::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(AnalysisError::TooFewSamples {
                field: "charts.warmup",
                ..
            })
        ));
    }

    #[test]
    fn novel_failure_chance_is_the_share_to_the_count() {
        let mut stable = ArmEvidence::default();
        let mut candidate = ArmEvidence::default();
        for _ in 0..300 {
            stable.record_request(Outcome::Success, 100);
        }
        for _ in 0..100 {
            candidate.record_request(Outcome::Success, 100);
        }
        for _ in 0..3 {
            candidate.record_request(Outcome::Timeout, 100);
            stable.record_request(Outcome::ServerError, 100);
        }
        candidate.record_request(Outcome::ServerError, 100);
        let flagged = novel_failures(&stable, &candidate, 0.05);
        assert_eq!(
            flagged.len(),
            1,
            "server errors are the error tests' to judge"
        );
        let share = 104.0 / (104.0 + 303.0);
        assert!((flagged[0].chance - f64::powi(share, 3)).abs() < 1e-12);
        assert!(flagged[0].significant, "{} <= 0.05", flagged[0].chance);
    }
}
