//! What the simulator measured, rollout by rollout and per scenario.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::evidence::Stage;
use crate::model::{Degradation, Phase, SampleCount};
use crate::rollout::Decision;

/// How one simulated rollout ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutRecord {
    /// The phase at the end: promoted, rolled back, paused (a hold reached its deadline;
    /// the rollout waits for an operator), or a live phase if the look budget ran out
    /// first.
    pub phase: Phase,
    /// The stage the last look judged: the shadow (on pairs) or the canary.
    pub stage: Stage,
    /// Looks the controller took.
    pub looks: u64,
    /// The samples behind the stage at the last look: shadow pairs (on both sides) in the
    /// shadow, each build's live requests in the canary.
    pub samples: SampleCount,
    /// Reads run on both builds in the shadow by the end.
    pub pairs: u64,
    /// The headline degradation of the last prediction, if there was one.
    pub degradation: Option<Degradation>,
    /// The controller's last decision, with its reasons.
    pub decision: Option<Decision>,
    /// The predictor's failure probability at each look that had a prediction, in order.
    pub forecasts: Vec<Forecast>,
}

/// A predictor's failure probability at one look.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Forecast {
    /// The look, counted from 1.
    pub look: u64,
    /// The shadow's pairs by then.
    pub pairs: u64,
    /// The failure probability the prediction reported.
    pub failure_probability: f64,
}

impl RolloutRecord {
    /// The smaller of the two sides' samples at the last look: pairs, if the shadow was
    /// judged.
    pub fn samples_per_arm(&self) -> u64 {
        self.samples.stable.min(self.samples.candidate)
    }

    /// Whether it ended promoted or rolled back.
    pub fn is_decided(&self) -> bool {
        self.phase.is_terminal()
    }

    /// The first forecast made on at least `pairs` pairs, if the rollout got that far.
    pub fn forecast_at(&self, pairs: u64) -> Option<Forecast> {
        self.forecasts.iter().find(|f| f.pairs >= pairs).copied()
    }
}

/// One tenth of the unit interval of a reliability diagram: the forecasts that fell in it,
/// their mean, and how often what they forecast happened.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CalibrationBin {
    /// The lowest forecast the bin holds.
    pub low: f64,
    /// The bin holds forecasts below this (the last one, up to 1 inclusive).
    pub high: f64,
    /// Forecasts in the bin.
    pub forecasts: usize,
    /// Their mean.
    pub mean_forecast: f64,
    /// The share of them whose event happened.
    pub observed: f64,
}

/// How well probabilities match frequencies: forecasts binned by tenths, and the expected
/// calibration error, the bins' `|mean forecast − observed|` weighted by their counts (0
/// for a perfectly calibrated forecaster).
///
/// ```
/// use shadowlib::simulate::Calibration;
///
/// // A forecaster that says 0.8 of what happens 8 times in 10 is calibrated there.
/// let points: Vec<(f64, bool)> = (0..10).map(|i| (0.8, i < 8)).collect();
/// let calibration = Calibration::by_tenths(&points).expect("forecasts");
/// assert!(calibration.expected_calibration_error < 1e-12);
/// assert_eq!(calibration.bins[8].forecasts, 10);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Calibration {
    /// The ten bins, from `[0, 0.1)` to `[0.9, 1]`.
    pub bins: Vec<CalibrationBin>,
    /// The expected calibration error.
    pub expected_calibration_error: f64,
    /// The Brier score, the mean squared error of the forecasts.
    pub brier_score: f64,
}

impl Calibration {
    /// The calibration of `(forecast, happened)` pairs; `None` without any, or with a
    /// forecast outside `[0, 1]`.
    pub fn by_tenths(points: &[(f64, bool)]) -> Option<Self> {
        if points.is_empty() || points.iter().any(|(p, _)| !(0.0..=1.0).contains(p)) {
            return None;
        }
        let mut sums = [(0usize, 0.0f64, 0usize); 10];
        for &(p, happened) in points {
            // Forecasts of exactly 1 go in the last bin.
            let bin = ((p * 10.0) as usize).min(9);
            sums[bin].0 += 1;
            sums[bin].1 += p;
            sums[bin].2 += usize::from(happened);
        }
        let total = points.len() as f64;
        let mut error = 0.0;
        let bins = sums
            .iter()
            .enumerate()
            .map(|(i, &(n, sum, happened))| {
                let (mean_forecast, observed) = if n > 0 {
                    (sum / n as f64, happened as f64 / n as f64)
                } else {
                    (f64::NAN, f64::NAN)
                };
                if n > 0 {
                    error += n as f64 / total * (mean_forecast - observed).abs();
                }
                CalibrationBin {
                    low: i as f64 / 10.0,
                    high: (i + 1) as f64 / 10.0,
                    forecasts: n,
                    mean_forecast,
                    observed,
                }
            })
            .collect();
        let brier_score = points
            .iter()
            .map(|&(p, happened)| (p - f64::from(u8::from(happened))).powi(2))
            .sum::<f64>()
            / total;
        Some(Self {
            bins,
            expected_calibration_error: error,
            brier_score,
        })
    }
}

impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected calibration error {:.3}, Brier {:.3}; by tenth (forecasts: mean forecast \
             / observed):",
            self.expected_calibration_error, self.brier_score
        )?;
        for bin in self.bins.iter().filter(|b| b.forecasts > 0) {
            write!(
                f,
                " [{:.1},{:.1}) {}: {:.2}/{:.2}",
                bin.low, bin.high, bin.forecasts, bin.mean_forecast, bin.observed
            )?;
        }
        Ok(())
    }
}

/// Every rollout of one scenario with one predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScenarioReport {
    /// The scenario's name.
    pub scenario: String,
    /// The predictor's name.
    pub predictor: String,
    /// The true relative change of typical latency.
    pub true_degradation: f64,
    /// Whether the builds were identical, so that every rollback was a false one.
    pub identical_builds: bool,
    /// One record per rollout, in rollout order.
    pub records: Vec<RolloutRecord>,
}

/// The value at quantile `q` by nearest rank (the lower median at 0.5).
fn quantile(mut values: Vec<u64>, q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values.get(rank - 1).copied()
}

impl ScenarioReport {
    /// Rollouts simulated.
    pub fn rollouts(&self) -> usize {
        self.records.len()
    }

    fn fraction(&self, keep: impl Fn(&RolloutRecord) -> bool) -> f64 {
        match self.records.len() {
            0 => 0.0,
            n => self.records.iter().filter(|r| keep(r)).count() as f64 / n as f64,
        }
    }

    /// Fraction of rollouts that ended in `phase`.
    pub fn fraction_in(&self, phase: Phase) -> f64 {
        self.fraction(|r| r.phase == phase)
    }

    /// Fraction of rollouts that ended neither promoted nor rolled back: paused at a
    /// deadline, or still live when the look budget ran out.
    pub fn undecided(&self) -> f64 {
        self.fraction(|r| !r.is_decided())
    }

    /// Fraction of rollouts that ended paused.
    pub fn paused(&self) -> f64 {
        self.fraction(|r| matches!(r.phase, Phase::Paused { .. }))
    }

    /// On identical builds, the fraction rolled back (every one of them false); `None`
    /// when the builds differ.
    pub fn false_rollback_rate(&self) -> Option<f64> {
        self.identical_builds
            .then(|| self.fraction_in(Phase::RolledBack))
    }

    /// Fraction of rollouts that ended in `phase` with at most `samples` per side.
    pub fn fraction_in_within(&self, phase: Phase, samples: u64) -> f64 {
        self.fraction(|r| r.phase == phase && r.samples_per_arm() <= samples)
    }

    /// Quantile `q` of the samples per side at the decision, over rollouts that ended in
    /// `phase`.
    pub fn samples_quantile_in(&self, phase: Phase, q: f64) -> Option<u64> {
        quantile(
            self.records
                .iter()
                .filter(|r| r.phase == phase)
                .map(RolloutRecord::samples_per_arm)
                .collect(),
            q,
        )
    }

    /// Median samples per side at the decision, over rollouts that ended in `phase`:
    /// with `RolledBack` on a regression caught in the shadow, the pairs it took to
    /// detect.
    pub fn median_samples_in(&self, phase: Phase) -> Option<u64> {
        self.samples_quantile_in(phase, 0.5)
    }

    /// Quantile `q` of the samples per side at the decision, over decided rollouts.
    pub fn samples_quantile_at_decision(&self, q: f64) -> Option<u64> {
        quantile(
            self.records
                .iter()
                .filter(|r| r.is_decided())
                .map(RolloutRecord::samples_per_arm)
                .collect(),
            q,
        )
    }

    /// Median samples per side at the decision, over decided rollouts.
    pub fn median_samples_at_decision(&self) -> Option<u64> {
        self.samples_quantile_at_decision(0.5)
    }

    /// Median looks per rollout.
    pub fn median_looks(&self) -> Option<u64> {
        quantile(self.records.iter().map(|r| r.looks).collect(), 0.5)
    }

    /// Fraction of rollouts whose last degradation interval covers the true degradation,
    /// over those that had a prediction; `None` when the predictor states no intervals.
    pub fn coverage(&self) -> Option<f64> {
        let intervals: Vec<Degradation> = self
            .records
            .iter()
            .filter_map(|r| r.degradation)
            .filter(|d| d.low < d.high)
            .collect();
        if intervals.is_empty() {
            return None;
        }
        let covered = intervals
            .iter()
            .filter(|d| d.contains(self.true_degradation))
            .count();
        Some(covered as f64 / intervals.len() as f64)
    }
}

/// The simulator's table: one line per scenario report.
///
/// "Samples" are those the decision was taken on: shadow pairs for a decision in the
/// shadow, the fewer of the two builds' live requests for one in the canary.
///
/// ```
/// use shadowlib::SequentialPredictor;
/// use shadowlib::simulate::{BuildModel, LatencyModel, ReportTable, Scenario, Simulation, SimulationConfig, Traffic};
///
/// let build = BuildModel::new(LatencyModel::lognormal(100.0, 0.5));
/// let broken = build.with_error_rate(0.3);
/// let scenario = Scenario::new("30% errors", build, broken, Traffic::Steady { per_interval: 300.0 });
/// let simulation = Simulation::new(SimulationConfig { rollouts: 2, ..Default::default() })?;
/// let report = simulation.run(&scenario, SequentialPredictor::default)?;
/// let table = ReportTable(&[report]).to_string();
/// assert!(table.lines().next().unwrap().starts_with("scenario"));
/// assert!(table.lines().nth(1).unwrap().starts_with("30% errors"));
/// # Ok::<(), shadowlib::simulate::SimulationError>(())
/// ```
pub struct ReportTable<'a>(pub &'a [ScenarioReport]);

impl fmt::Display for ReportTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dash = || "—".to_string();
        let count = |n: Option<u64>| n.map_or_else(dash, |n| n.to_string());
        writeln!(
            f,
            "{:<50} {:<20} {:>8} {:>11} {:>9} {:>10} {:>14} {:>11} {:>6} {:>9}",
            "scenario",
            "predictor",
            "rollouts",
            "rolled back",
            "promoted",
            "undecided",
            "median samples",
            "p90 samples",
            "looks",
            "coverage"
        )?;
        for r in self.0 {
            writeln!(
                f,
                "{:<50} {:<20} {:>8} {:>10.1}% {:>8.1}% {:>9.1}% {:>14} {:>11} {:>6} {:>9}",
                r.scenario,
                r.predictor,
                r.rollouts(),
                r.fraction_in(Phase::RolledBack) * 100.0,
                r.fraction_in(Phase::Promoted) * 100.0,
                r.undecided() * 100.0,
                count(r.median_samples_at_decision()),
                count(r.samples_quantile_at_decision(0.9)),
                count(r.median_looks()),
                r.coverage()
                    .map_or_else(dash, |c| format!("{:.1}%", c * 100.0)),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LivePhase;

    fn record(phase: Phase, samples: u64, degradation: Option<Degradation>) -> RolloutRecord {
        RolloutRecord {
            phase,
            stage: Stage::Shadow,
            looks: samples / 100,
            samples: SampleCount {
                stable: samples,
                candidate: samples + 7,
            },
            pairs: samples,
            degradation,
            decision: None,
            forecasts: Vec::new(),
        }
    }

    #[test]
    fn calibration_bins_forecasts_by_tenth_and_weighs_their_errors() {
        // 0.15 said of what happens 1 time in 10 (error 0.05), and 0.95 of what happens
        // always (error 0.05): an ECE of 0.05 whatever the mix.
        let mut points: Vec<(f64, bool)> = (0..20).map(|i| (0.15, i % 10 == 0)).collect();
        points.extend((0..5).map(|_| (0.95, true)));
        points.push((1.0, true));
        let c = Calibration::by_tenths(&points).expect("forecasts");
        assert_eq!(c.bins[1].forecasts, 20);
        assert_eq!(c.bins[9].forecasts, 6, "1.0 goes in the last tenth");
        let expected = (20.0 * 0.05 + 6.0 * (1.0 - (5.0 * 0.95 + 1.0) / 6.0)) / 26.0;
        assert!((c.expected_calibration_error - expected).abs() < 1e-12);
        assert!(Calibration::by_tenths(&[]).is_none());
        assert!(Calibration::by_tenths(&[(1.5, true)]).is_none());
        assert!(Calibration::by_tenths(&[(f64::NAN, true)]).is_none());
    }

    fn report(identical_builds: bool) -> ScenarioReport {
        ScenarioReport {
            scenario: "s".into(),
            predictor: "p".into(),
            true_degradation: 0.1,
            identical_builds,
            records: vec![
                record(
                    Phase::RolledBack,
                    1_000,
                    Some(Degradation::new(0.1, 0.05, 0.15)),
                ),
                record(
                    Phase::RolledBack,
                    3_000,
                    Some(Degradation::new(0.2, 0.15, 0.25)),
                ),
                record(Phase::Promoted, 9_000, None),
                record(
                    Phase::Paused {
                        from: LivePhase::Shadowing,
                    },
                    20_000,
                    Some(Degradation::point(0.1)),
                ),
            ],
        }
    }

    #[test]
    fn fractions_quantiles_and_coverage() {
        let report = report(false);
        assert_eq!(report.fraction_in(Phase::RolledBack), 0.5);
        assert_eq!(report.undecided(), 0.25);
        assert_eq!(report.paused(), 0.25);
        assert_eq!(report.false_rollback_rate(), None);
        assert_eq!(report.fraction_in_within(Phase::RolledBack, 2_000), 0.25);
        assert_eq!(report.median_samples_in(Phase::RolledBack), Some(1_000));
        assert_eq!(report.median_samples_at_decision(), Some(3_000));
        assert_eq!(report.samples_quantile_at_decision(0.9), Some(9_000));
        assert_eq!(report.median_samples_in(Phase::Shadowing), None);
        // Point estimates state no interval and are left out.
        assert_eq!(report.coverage(), Some(0.5));
    }

    #[test]
    fn every_rollback_of_identical_builds_is_false() {
        assert_eq!(report(true).false_rollback_rate(), Some(0.5));
    }

    #[test]
    fn the_table_has_one_line_per_scenario() {
        let reports = [report(false), report(true)];
        let table = ReportTable(&reports).to_string();
        assert_eq!(table.lines().count(), 3);
        assert!(table.lines().nth(1).is_some_and(|l| l.contains("50.0%")));
    }
}
