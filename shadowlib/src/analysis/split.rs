//! The sample-ratio-mismatch check: is the traffic split what the steerer was told?

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Share;

/// How far the candidate's share of requests may stray from the step's share, relatively,
/// before the split counts as broken: sticky keys make the split lumpy (a heavy user is
/// all on one side), so only a split a quarter off is one.
pub const SPLIT_TOLERANCE: f64 = 0.25;

/// The level of the check over the whole rollout.
pub const SPLIT_ALPHA: f64 = 0.001;

/// `ln B(a, b)`, the log of the beta function.
fn ln_beta(a: f64, b: f64) -> f64 {
    libm::lgamma(a) + libm::lgamma(b) - libm::lgamma(a + b)
}

/// A confidence sequence for a success probability from `successes` of `trials`, valid at
/// every look: the set of `f` at which the uniform-prior beta-binomial mixture martingale is
/// still below `1/alpha`. `None` without trials.
///
/// ```
/// use shadowlib::analysis::proportion_sequence;
///
/// let (low, high) = proportion_sequence(100, 1_000, 0.01).expect("trials");
/// assert!(low < 0.1 && 0.1 < high);
/// assert!(high - low < 0.1);
/// ```
pub fn proportion_sequence(successes: u64, trials: u64, alpha: f64) -> Option<(f64, f64)> {
    if trials == 0 || !(alpha > 0.0 && alpha < 1.0) {
        return None;
    }
    let (s, n) = (successes.min(trials) as f64, trials as f64);
    let mixture = ln_beta(1.0 + s, 1.0 + n - s);
    let threshold = (1.0 / alpha).ln();
    // ln M(f), convex in f, smallest at s/n.
    let log_martingale = |f: f64| mixture - s * f.ln() - (n - s) * (1.0 - f).ln();
    let centre = s / n;
    let edge = |inside: f64, outside: f64| {
        let (mut inside, mut outside) = (inside, outside);
        for _ in 0..60 {
            let middle = (inside + outside) / 2.0;
            if log_martingale(middle) < threshold {
                inside = middle;
            } else {
                outside = middle;
            }
        }
        inside
    };
    let low = if s == 0.0 { 0.0 } else { edge(centre, 0.0) };
    let high = if s == n { 1.0 } else { edge(centre, 1.0) };
    Some((low, high))
}

/// The split of one canary step checked against its share.
///
/// ```
/// use shadowlib::Share;
/// use shadowlib::analysis::SplitCheck;
///
/// let told = Share::from_percent(10.0)?;
/// assert!(!SplitCheck::of(told, 1_010, 10_000).broken);
/// assert!(SplitCheck::of(told, 2_000, 10_000).broken, "twice the share");
/// # Ok::<(), shadowlib::ShareError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitCheck {
    /// The share the steerer was told.
    pub expected: f64,
    /// The candidate's share of the step's requests.
    pub observed: f64,
    /// The confidence sequence of the candidate's true share.
    pub low: f64,
    /// Its upper end.
    pub high: f64,
    /// The step's requests.
    pub requests: u64,
    /// Whether the sequence lies outside the share give or take [`SPLIT_TOLERANCE`].
    pub broken: bool,
}

impl SplitCheck {
    /// Checks `candidate` requests of `requests` against `share`.
    pub fn of(share: Share, candidate: u64, requests: u64) -> Self {
        let expected = share.fraction();
        let (low, high) =
            proportion_sequence(candidate, requests, SPLIT_ALPHA).unwrap_or((0.0, 1.0));
        let broken =
            low > expected * (1.0 + SPLIT_TOLERANCE) || high < expected * (1.0 - SPLIT_TOLERANCE);
        Self {
            expected,
            observed: if requests == 0 {
                0.0
            } else {
                candidate as f64 / requests as f64
            },
            low,
            high,
            requests,
            broken,
        }
    }
}

impl fmt::Display for SplitCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "traffic split: the candidate served {:.2}% [{:.2}%, {:.2}%] of {} requests at a \
             step of {:.2}% (more than {:.0}% off is a broken split)",
            self.observed * 100.0,
            self.low * 100.0,
            self.high * 100.0,
            self.requests,
            self.expected * 100.0,
            SPLIT_TOLERANCE * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_covers_the_truth_at_every_look() {
        // 300 streams of Bernoulli(0.1), looked at every 100 trials up to 5,000.
        let alpha = 0.05;
        let mut state = 11u64;
        let mut missed = 0;
        for _ in 0..300 {
            let (mut successes, mut trials) = (0u64, 0u64);
            let mut ever = false;
            for _ in 0..50 {
                for _ in 0..100 {
                    state = crate::rng::mix(state);
                    successes += u64::from(state.is_multiple_of(10));
                    trials += 1;
                }
                let (low, high) = proportion_sequence(successes, trials, alpha).expect("trials");
                ever |= !(low <= 0.1 && 0.1 <= high);
            }
            missed += u32::from(ever);
        }
        assert!(missed <= 15, "missed in {missed} of 300 streams");
    }

    #[test]
    fn all_or_nothing_is_bounded_on_one_side() {
        let (low, high) = proportion_sequence(0, 1_000, 0.01).expect("trials");
        assert_eq!(low, 0.0);
        assert!(high < 0.02);
        assert_eq!(proportion_sequence(0, 0, 0.01), None);
    }
}
