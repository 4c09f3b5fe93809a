//! Anomalies in the candidate's own stream: control charts for bursts and drift, and
//! failure classes the stable build never produced.
//!
//! The sequential tests compare cumulative evidence, which is what makes them powerful and
//! valid — and also what makes them slow to notice a candidate that was fine for an hour
//! and then started failing. The charts here watch what changed *since the last look*
//! against the candidate's own history, and say so at once.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::AnalysisError;
use super::error::positive;
use crate::evidence::{ArmEvidence, Moments};
use crate::model::Outcome;

/// How the control charts on the candidate's stream are tuned.
///
/// Each chart is a one-sided CUSUM of log likelihood ratios (Page's CUSUM): it sums, look
/// by look, the evidence that the latest interval came from a worse process (latency
/// `latency_shift` higher, or failures `error_rate_ratio` times more frequent) than the
/// candidate's history, floored at zero, and alarms above `threshold`. For a CUSUM of
/// likelihood ratios the expected number of in-control looks before a false alarm is at
/// least `e^threshold` (about 22,000 for the default of 10), so a long rollout of a healthy
/// candidate rarely sees one.
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
    /// Candidate requests needed before the charts start: the history they compare with.
    pub warmup: u64,
    /// The relative latency increase the latency chart is tuned to detect (0.1 = 10%).
    pub latency_shift: f64,
    /// The multiple of the failure rate the error chart is tuned to detect (above 1).
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
pub enum Chart {
    /// Log latency of the candidate's requests.
    Latency,
    /// The candidate's failure rate.
    ErrorRate,
}

impl fmt::Display for Chart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Chart::Latency => "latency",
            Chart::ErrorRate => "error rate",
        })
    }
}

/// A chart above its threshold: the candidate's recent stream is out of line with its past.
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
            "{} control chart of the candidate's own stream alarmed (CUSUM {:.1} > {:.1}): \
             its latest requests are out of line with its history",
            self.chart, self.statistic, self.threshold
        )
    }
}

/// The cumulative totals of one build's stream that the charts difference look by look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamTotals {
    /// Requests that ran.
    pub requests: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Moments of the natural log of latency in microseconds.
    pub log_latency: Moments,
}

impl StreamTotals {
    /// The totals of one arm's evidence (reads its whole latency histogram once).
    pub fn of(arm: &ArmEvidence) -> Self {
        Self {
            requests: arm.requests(),
            failures: arm.outcomes.failures(),
            log_latency: arm.latency_us.log_moments(),
        }
    }
}

/// CUSUM control charts over the candidate's cumulative evidence.
///
/// Feed it the candidate's totals at every look; it works out what happened since the
/// previous look and updates the charts. A look without new requests changes nothing, so
/// sparse traffic never alarms by itself. Totals that go down mean a new stream (a new
/// rollout), and the charts start over.
///
/// ```
/// use shadowlib::Moments;
/// use shadowlib::analysis::{CandidateMonitor, ChartConfig, StreamTotals, Chart};
///
/// let mut monitor = CandidateMonitor::new(ChartConfig { warmup: 1_000, ..Default::default() })?;
/// let mut totals = StreamTotals::default();
/// let mut look = |requests: u64, failures: u64, monitor: &mut CandidateMonitor| {
///     totals.requests += requests;
///     totals.failures += failures;
///     for _ in 0..requests { totals.log_latency.add(7.0); }
///     monitor.observe(totals)
/// };
/// for _ in 0..10 {
///     assert!(look(1_000, 5, &mut monitor).is_empty(), "0.5% failures, steady");
/// }
/// let alarms = look(1_000, 60, &mut monitor); // a burst: 6% for one interval
/// assert_eq!(alarms[0].chart, Chart::ErrorRate);
/// # Ok::<(), shadowlib::analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CandidateMonitor {
    config: ChartConfig,
    previous: Option<StreamTotals>,
    latency: f64,
    errors: f64,
}

impl CandidateMonitor {
    /// Charts with this tuning; the configuration is validated here.
    pub fn new(config: ChartConfig) -> Result<Self, AnalysisError> {
        config.validate()?;
        Ok(Self {
            config,
            previous: None,
            latency: 0.0,
            errors: 0.0,
        })
    }

    /// Forgets the history: the next totals start a new stream.
    pub fn reset(&mut self) {
        self.previous = None;
        self.latency = 0.0;
        self.errors = 0.0;
    }

    /// The charts above their threshold now.
    pub fn alarms(&self) -> Vec<Alarm> {
        let threshold = self.config.threshold;
        [
            (Chart::Latency, self.latency),
            (Chart::ErrorRate, self.errors),
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
    pub fn observe(&mut self, totals: StreamTotals) -> Vec<Alarm> {
        if !self.config.enabled {
            return Vec::new();
        }
        let Some(previous) = self.previous else {
            self.previous = Some(totals);
            return Vec::new();
        };
        if totals.requests < previous.requests
            || totals.failures < previous.failures
            || totals.log_latency.count() < previous.log_latency.count()
        {
            self.reset();
            self.previous = Some(totals);
            return Vec::new();
        }
        if totals.requests == previous.requests {
            return self.alarms();
        }
        if previous.requests >= self.config.warmup {
            let error_step = self.error_evidence(&previous, &totals);
            self.errors = (self.errors + error_step).max(0.0);
            if let Some(latency_step) =
                self.latency_evidence(&previous.log_latency, &totals.log_latency)
            {
                self.latency = (self.latency + latency_step).max(0.0);
            }
        }
        self.previous = Some(totals);
        self.alarms()
    }

    /// Log likelihood ratio of the interval's failures under a rate `error_rate_ratio`
    /// times the history's, against the history's rate (Bernoulli).
    fn error_evidence(&self, previous: &StreamTotals, totals: &StreamTotals) -> f64 {
        let trials = (totals.requests - previous.requests) as f64;
        let failures = (totals.failures - previous.failures) as f64;
        // Smoothed so that a history without failures still has a rate to compare with.
        let in_control = (previous.failures as f64 + 1.0) / (previous.requests as f64 + 2.0);
        let out_of_control = (in_control * self.config.error_rate_ratio).min(1.0 - 1e-9);
        failures * (out_of_control / in_control).ln()
            + (trials - failures) * ((1.0 - out_of_control) / (1.0 - in_control)).ln()
    }

    /// Log likelihood ratio of the interval's mean log latency under a shift of
    /// `ln(1 + latency_shift)`, against the history's mean (normal, history's variance).
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

/// Flags every failure class (server error, timeout, panic) the candidate produced and
/// stable never did, with the chance of that happening between identical builds.
///
/// Under identical builds each such failure falls on the candidate with probability
/// `n_c / (n_c + n_s)`, independently, so `count` of them all on the candidate has the
/// stated chance. Because the counts only grow, "stable still has none and the candidate
/// has `k`" happens at *some* look exactly when the first `k` failures of the class all fell
/// on the candidate — the chance is valid under continuous monitoring without correction.
///
/// ```
/// use shadowlib::{ArmEvidence, Outcome, Version};
/// use shadowlib::analysis::novel_failures;
///
/// let mut stable = ArmEvidence::new(Version::new("api", "1"));
/// let mut candidate = ArmEvidence::new(Version::new("api", "2"));
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
    Outcome::ALL
        .into_iter()
        .filter(|outcome| outcome.is_failure())
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
    use crate::model::Version;

    fn totals(requests: u64, failures: u64, log_latency: Moments) -> StreamTotals {
        StreamTotals {
            requests,
            failures,
            log_latency,
        }
    }

    #[test]
    fn error_increment_matches_the_bernoulli_likelihood_ratio() {
        let monitor = CandidateMonitor::new(ChartConfig::default()).expect("valid");
        let previous = totals(998, 9, Moments::default());
        let now = totals(1_998, 29, Moments::default());
        // History rate (9 + 1) / (998 + 2) = 0.01; out of control 0.03; 20 failures in 1,000.
        let expected = 20.0 * (0.03f64 / 0.01).ln() + 980.0 * (0.97f64 / 0.99).ln();
        let got = monitor.error_evidence(&previous, &now);
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
    }

    #[test]
    fn latency_increment_matches_the_normal_likelihood_ratio() {
        let monitor = CandidateMonitor::new(ChartConfig::default()).expect("valid");
        let mut previous = Moments::default();
        for x in [6.0, 7.0, 8.0, 7.0] {
            previous.add(x); // mean 7, variance 2/3
        }
        let mut now = previous;
        for x in [7.5, 7.7] {
            now.add(x); // interval mean 7.6
        }
        let shift = 1.1f64.ln();
        let expected = 2.0 * shift / (2.0 / 3.0) * (7.6 - 7.0 - shift / 2.0);
        let got = monitor
            .latency_evidence(&previous, &now)
            .expect("new values");
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
    }

    #[test]
    fn looks_without_traffic_change_nothing_and_a_new_stream_resets() {
        let config = ChartConfig {
            warmup: 100,
            ..Default::default()
        };
        let mut monitor = CandidateMonitor::new(config).expect("valid");
        monitor.observe(totals(1_000, 1, Moments::default()));
        assert!(
            !monitor
                .observe(totals(2_000, 200, Moments::default()))
                .is_empty()
        );
        // No new requests: the alarm stands, unchanged.
        let before = monitor.alarms();
        assert_eq!(
            monitor.observe(totals(2_000, 200, Moments::default())),
            before
        );
        // Counts went down: a new rollout, so the charts start over.
        assert!(
            monitor
                .observe(totals(10, 0, Moments::default()))
                .is_empty()
        );
    }

    #[test]
    fn invalid_tuning_is_named() {
        let bad = ChartConfig {
            error_rate_ratio: 1.0,
            ..Default::default()
        };
        assert!(matches!(
            CandidateMonitor::new(bad),
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
        let mut stable = ArmEvidence::new(Version::new("a", "1"));
        let mut candidate = ArmEvidence::new(Version::new("a", "2"));
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
            "server errors are not novel: stable had them"
        );
        let share = 104.0 / (104.0 + 303.0);
        assert!((flagged[0].chance - f64::powi(share, 3)).abs() < 1e-12);
        assert!(flagged[0].significant, "{} <= 0.05", flagged[0].chance);
    }
}
