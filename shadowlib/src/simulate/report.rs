//! What the simulator measured, rollout by rollout and per scenario.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Degradation, Phase, SampleCount};

/// How one simulated rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The phase at the end: promoted, rolled back, or a live phase if the look budget ran
    /// out first.
    pub phase: Phase,
    /// Looks the controller took.
    pub looks: u64,
    /// Requests seen on each build at the last look.
    pub samples: SampleCount,
    /// The headline degradation of the last prediction, if there was one.
    pub degradation: Option<Degradation>,
}

impl RolloutRecord {
    /// The smaller of the two builds' request counts.
    pub fn samples_per_arm(&self) -> u64 {
        self.samples.stable.min(self.samples.candidate)
    }
}

/// Every rollout of one scenario with one predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub scenario: String,
    /// The predictor's name.
    pub predictor: String,
    /// The true relative change of typical latency.
    pub true_degradation: f64,
    /// One record per rollout, in rollout order.
    pub records: Vec<RolloutRecord>,
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len().saturating_sub(1) / 2).copied()
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

    /// Fraction of rollouts that ended neither promoted nor rolled back.
    pub fn undecided(&self) -> f64 {
        self.fraction(|r| !r.phase.is_terminal())
    }

    /// Fraction of rollouts that ended in `phase` with at most `samples` requests per build.
    pub fn fraction_in_within(&self, phase: Phase, samples: u64) -> f64 {
        self.fraction(|r| r.phase == phase && r.samples_per_arm() <= samples)
    }

    /// Median requests per build at the decision, over rollouts that ended in `phase`.
    pub fn median_samples_in(&self, phase: Phase) -> Option<u64> {
        median(
            self.records
                .iter()
                .filter(|r| r.phase == phase)
                .map(RolloutRecord::samples_per_arm)
                .collect(),
        )
    }

    /// Median requests per build at the decision, over rollouts that were decided.
    pub fn median_samples_at_decision(&self) -> Option<u64> {
        median(
            self.records
                .iter()
                .filter(|r| r.phase.is_terminal())
                .map(RolloutRecord::samples_per_arm)
                .collect(),
        )
    }

    /// Median looks per rollout.
    pub fn median_looks(&self) -> Option<u64> {
        median(self.records.iter().map(|r| r.looks).collect())
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

/// The simulator's table: one row per scenario report.
///
/// ```
/// use shadowlib::simulate::{ReportTable, ScenarioReport};
///
/// let report = ScenarioReport {
///     scenario: "A/A".into(),
///     predictor: "sequential".into(),
///     true_degradation: 0.0,
///     records: Vec::new(),
/// };
/// let table = ReportTable(&[report]).to_string();
/// assert!(table.lines().next().unwrap().starts_with("scenario"));
/// ```
pub struct ReportTable<'a>(pub &'a [ScenarioReport]);

impl fmt::Display for ReportTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dash = || "—".to_string();
        writeln!(
            f,
            "{:<44} {:<22} {:>8} {:>11} {:>9} {:>10} {:>19} {:>12} {:>9}",
            "scenario",
            "predictor",
            "rollouts",
            "rolled back",
            "promoted",
            "undecided",
            "median samples/arm",
            "median looks",
            "coverage"
        )?;
        for r in self.0 {
            writeln!(
                f,
                "{:<44} {:<22} {:>8} {:>10.1}% {:>8.1}% {:>9.1}% {:>19} {:>12} {:>9}",
                r.scenario,
                r.predictor,
                r.rollouts(),
                r.fraction_in(Phase::RolledBack) * 100.0,
                r.fraction_in(Phase::Promoted) * 100.0,
                r.undecided() * 100.0,
                r.median_samples_at_decision()
                    .map_or_else(dash, |s| s.to_string()),
                r.median_looks().map_or_else(dash, |s| s.to_string()),
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

    fn record(phase: Phase, samples: u64, degradation: Option<Degradation>) -> RolloutRecord {
        RolloutRecord {
            phase,
            looks: samples / 100,
            samples: SampleCount {
                stable: samples,
                candidate: samples + 7,
            },
            degradation,
        }
    }

    #[test]
    fn fractions_medians_and_coverage() {
        let report = ScenarioReport {
            scenario: "s".into(),
            predictor: "p".into(),
            true_degradation: 0.1,
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
                record(Phase::Shadowing, 20_000, Some(Degradation::point(0.1))),
            ],
        };
        assert_eq!(report.fraction_in(Phase::RolledBack), 0.5);
        assert_eq!(report.undecided(), 0.25);
        assert_eq!(report.fraction_in_within(Phase::RolledBack, 2_000), 0.25);
        assert_eq!(report.median_samples_in(Phase::RolledBack), Some(1_000));
        assert_eq!(report.median_samples_at_decision(), Some(3_000));
        // Point estimates state no interval and are left out.
        assert_eq!(report.coverage(), Some(0.5));
    }
}
