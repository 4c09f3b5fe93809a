//! What a rollout can tell, and how soon, worked out before it starts.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::policy::RolloutPolicy;
use crate::analysis::{DifferenceEstimate, MixtureSprt, SequentialConfig};
use crate::model::SampleCount;

/// The spread of the per-read log ratio of latency the plan assumes: two runs of one
/// request on the shadow's thread typically differ by about a fifth.
pub const ASSUMED_PAIR_SPREAD: f64 = 0.2;

/// How many test slots the default analysis splits its budget over (see
/// [`SequentialAnalysis`](crate::analysis::SequentialAnalysis)).
const TEST_SLOTS: f64 = 11.0;

/// One thing a rollout can tell, the samples it needs, and how long they take to come.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanItem {
    /// What: "show +10% latency", say.
    pub what: String,
    /// The shadow's pairs it needs.
    pub pairs: u64,
    /// How long those take at the expected rate, when it is known.
    #[serde(default, with = "crate::duration::option")]
    pub duration: Option<Duration>,
}

/// What a rollout can tell with the default tests, and how soon at the expected rate of
/// mirrored reads ([`RolloutPolicy::expected_reads_per_second`]), worked out when it is
/// built and logged then. It assumes a per-read spread of latency ratios of
/// [`ASSUMED_PAIR_SPREAD`]; the real one is in every prediction's reasons.
///
/// ```
/// use shadowlib::{Rollout, RolloutPolicy, Version};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let policy = RolloutPolicy { expected_reads_per_second: Some(50.0), ..RolloutPolicy::default() };
/// let rollout = Rollout::builder(Version::new("api", "1"), Version::new("api", "2"))
///     .policy(policy)
///     .build()?;
/// let plan = rollout.plan();
/// println!("{plan}");
/// assert!(plan.items[0].duration.is_some());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutPlan {
    /// The predictor's budget of false rollbacks over the whole rollout.
    pub predictor_alpha: f64,
    /// The mismatch test's.
    pub mismatch_alpha: f64,
    /// The mirrored reads per second expected, if told.
    pub reads_per_second: Option<f64>,
    /// What the shadow can tell, and how soon.
    pub items: Vec<PlanItem>,
    /// Things the plan found that the policy may not mean (a deadline shorter than what
    /// the shadow needs to decide).
    pub warnings: Vec<String>,
}

/// The smallest `n` in `[2, 10⁹]` for which `holds(n)`, which must be monotone.
fn smallest(holds: impl Fn(u64) -> bool) -> u64 {
    let (mut low, mut high) = (2u64, 1_000_000_000u64);
    if !holds(high) {
        return high;
    }
    while low < high {
        let middle = low + (high - low) / 2;
        if holds(middle) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    low
}

impl RolloutPlan {
    /// The plan of `policy` with the default tests of `analysis`, and a predictor budget of
    /// `predictor_alpha`.
    pub(crate) fn new(
        policy: &RolloutPolicy,
        analysis: &SequentialConfig,
        predictor_alpha: f64,
    ) -> Self {
        let slot = analysis.alpha / TEST_SLOTS;
        let latency_tolerance = analysis.tolerances.latency.ln_1p();
        let sprt = MixtureSprt::spanning(
            slot,
            latency_tolerance,
            latency_tolerance * analysis.mixing_span,
        );
        let estimate = |difference: f64, n: u64| DifferenceEstimate {
            difference,
            variance: ASSUMED_PAIR_SPREAD * ASSUMED_PAIR_SPREAD / n as f64,
            samples: SampleCount::default(),
        };
        let (show, rule_out) = match &sprt {
            Ok(sprt) => {
                let regression = (1.0 + 2.0 * analysis.tolerances.latency).ln();
                (
                    smallest(|n| {
                        sprt.confidence_sequence(&estimate(regression, n)).low > latency_tolerance
                    }),
                    smallest(|n| {
                        sprt.confidence_sequence(&estimate(0.0, n)).high < latency_tolerance
                    }),
                )
            }
            Err(_) => (u64::MAX, u64::MAX),
        };
        let errors = ((1.0 / slot).ln() / analysis.tolerances.error_rate).ceil() as u64;
        let m = &policy.mismatch;
        let mismatch = ((1.0 / m.alpha).ln() / m.tolerance).ceil() as u64;
        let rate = policy.expected_reads_per_second;
        let at_rate = |pairs: u64| rate.map(|r| Duration::from_secs_f64(pairs as f64 / r));
        let item = |what: String, pairs: u64| PlanItem {
            what,
            pairs,
            duration: at_rate(pairs),
        };
        let latency = analysis.tolerances.latency * 100.0;
        let items = vec![
            item(
                format!(
                    "show typical latency {:.0}% worse (twice the tolerance)",
                    2.0 * latency
                ),
                show,
            ),
            item(
                format!("rule out more than +{latency:.0}% on identical builds"),
                rule_out,
            ),
            item(
                format!(
                    "pass the error rate (a {:.1}-point rise would have shown)",
                    analysis.tolerances.error_rate * 100.0
                ),
                errors,
            ),
            item(
                format!(
                    "pass the responses (a {:.1}% mismatch rate would have shown)",
                    m.tolerance * 100.0
                ),
                mismatch,
            ),
        ];
        let mut warnings = Vec::new();
        if predictor_alpha == 0.0 {
            warnings.push(
                "the predictor declares no error budget (an alpha of 0): unless it rules on its \
                 own (Prediction::ruling), it only explains and the rollout will pause at its \
                 decision deadline; an explaining predictor goes in an Ensemble with a \
                 SequentialPredictor"
                    .to_owned(),
            );
        }
        let longest = items.iter().skip(1).filter_map(|i| i.duration).max();
        if let Some(longest) = longest
            && longest > policy.decision_deadline.max(policy.no_data_deadline)
        {
            warnings.push(format!(
                "the shadow needs about {longest:.0?} to pass identical builds, longer than the \
                 deadlines ({:?} undecided, {:?} without data): it would pause first",
                policy.decision_deadline, policy.no_data_deadline
            ));
        }
        Self {
            predictor_alpha,
            mismatch_alpha: m.alpha,
            reads_per_second: rate,
            items,
            warnings,
        }
    }
}

impl fmt::Display for RolloutPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plan: false rollbacks at most {:.2}% (predictor) + {:.2}% (responses) over the \
             whole rollout",
            self.predictor_alpha * 100.0,
            self.mismatch_alpha * 100.0
        )?;
        match self.reads_per_second {
            Some(rate) => write!(f, "; at {rate} mirrored reads/s the shadow can")?,
            None => write!(f, "; the shadow can")?,
        }
        for (i, item) in self.items.iter().enumerate() {
            let separator = if i == 0 { " " } else { "; " };
            match item.duration {
                Some(d) => write!(
                    f,
                    "{separator}{} within {:.0?} ({} pairs)",
                    item.what, d, item.pairs
                )?,
                None => write!(f, "{separator}{} after {} pairs", item.what, item.pairs)?,
            }
        }
        for warning in &self.warnings {
            write!(f, "; warning: {warning}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_traffic_means_sooner_and_the_samples_do_not_change() {
        let analysis = SequentialConfig::default();
        let slow = RolloutPolicy {
            expected_reads_per_second: Some(1.0),
            ..RolloutPolicy::default()
        };
        let fast = RolloutPolicy {
            expected_reads_per_second: Some(500.0),
            ..RolloutPolicy::default()
        };
        let (slow, fast) = (
            RolloutPlan::new(&slow, &analysis, 0.01),
            RolloutPlan::new(&fast, &analysis, 0.01),
        );
        assert_eq!(slow.items[0].pairs, fast.items[0].pairs);
        assert!(slow.items[0].duration > fast.items[0].duration);
        assert!(
            !slow.warnings.is_empty(),
            "1 read/s cannot pass within the deadlines"
        );
        assert!(fast.warnings.is_empty(), "{fast}");
        // Twice the tolerance and no change lie about as far from the tolerance on the log
        // scale, so showing one takes about the pairs ruling out the other does.
        let (show, rule_out) = (fast.items[0].pairs as f64, fast.items[1].pairs as f64);
        assert!((show / rule_out - 1.0).abs() < 0.2, "{fast}");
    }
}
