//! The test of wrong responses: the candidate's mismatch rate net of noise.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::AnalysisError;
use super::error::unit_open;
use super::msprt::{DifferenceEstimate, MixtureSprt, SequentialTest, Verdict};
use crate::evidence::PairedMismatches;

/// The always-valid test of the candidate's mismatch rate net of noise, on the shadow's
/// compared reads (see [`PairedMismatches`]).
///
/// Worse when the confidence sequence of the net rate lies above `rollback_above`; not
/// worse when it lies below `tolerance` and enough reads were compared that a rate at the
/// tolerance would have shown (the zero-heavy rule: `ln(1/α) / (twin rate + tolerance)`
/// reads); otherwise not yet known.
///
/// ```
/// use shadowlib::PairedMismatches;
/// use shadowlib::analysis::{MismatchTest, Verdict};
///
/// let mut reads = PairedMismatches::default();
/// for read in 0..10_000 {
///     reads.record(read % 100 == 0, false); // 1% wrong on the candidate alone
/// }
/// let test = MismatchTest::run(&reads, 0.001, 0.001, 0.01)?.expect("reads were compared");
/// assert_eq!(test.verdict, Verdict::Worse);
/// # Ok::<(), shadowlib::analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MismatchTest {
    /// The test against `rollback_above`, whose worse p-value decides a rollback.
    pub worse: SequentialTest,
    /// The test against `tolerance`, whose not-worse p-value decides a step up.
    pub within: SequentialTest,
    /// The verdict.
    pub verdict: Verdict,
    /// Why the verdict is "not yet known" although the tests alone would say more.
    pub held_because: Option<String>,
    /// The reads compared.
    pub compared: u64,
}

impl MismatchTest {
    /// Runs the test on the compared reads; `None` before any read was compared. The
    /// rates and `alpha` must lie in `(0, 1)`.
    pub fn run(
        reads: &PairedMismatches,
        tolerance: f64,
        rollback_above: f64,
        alpha: f64,
    ) -> Result<Option<Self>, AnalysisError> {
        unit_open("tolerance", tolerance)?;
        unit_open("rollback_above", rollback_above)?;
        unit_open("alpha", alpha)?;
        let Some(estimate) = DifferenceEstimate::paired_proportions(
            reads.candidate_only,
            reads.twin_only,
            reads.compared,
        ) else {
            return Ok(None);
        };
        let worse = MixtureSprt::new(alpha, rollback_above)?.test(estimate, rollback_above);
        let within = MixtureSprt::new(alpha, tolerance)?.test(estimate, tolerance);
        let mut held_because = None;
        let verdict = if worse.verdict() == Verdict::Worse {
            Verdict::Worse
        } else if within.verdict() == Verdict::NotWorse {
            let twin_rate = reads.twin_only as f64 / reads.compared as f64;
            let needed = ((1.0 / alpha).ln() / (twin_rate + tolerance)).ceil() as u64;
            if reads.compared < needed {
                held_because = Some(format!(
                    "held: a rate of {:.2}% needs {needed} compared reads to show, have {}",
                    tolerance * 100.0,
                    reads.compared
                ));
                Verdict::NotYetKnown
            } else {
                Verdict::NotWorse
            }
        } else {
            Verdict::NotYetKnown
        };
        Ok(Some(Self {
            worse,
            within,
            verdict,
            held_because,
            compared: reads.compared,
        }))
    }
}

impl fmt::Display for MismatchTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.worse.estimate;
        let cs = &self.worse.confidence;
        write!(
            f,
            "response mismatch rate net of noise: {:+.3}% [{:+.3}%, {:+.3}%], tolerance {:.3}%, \
             rollback above {:.3}%: {} (p worse {:.3}, p not worse {:.3}; {} reads compared)",
            e.difference * 100.0,
            cs.low * 100.0,
            cs.high * 100.0,
            self.within.tolerance * 100.0,
            self.worse.tolerance * 100.0,
            self.verdict,
            self.worse.worse_p_value,
            self.within.not_worse_p_value,
            self.compared,
        )?;
        if let Some(why) = &self.held_because {
            write!(f, "; {why}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(n: u64, candidate_every: u64, twin_every: u64) -> PairedMismatches {
        let mut reads = PairedMismatches::default();
        for i in 0..n {
            reads.record(
                candidate_every > 0 && i % candidate_every == 0,
                twin_every > 0 && i % twin_every == 1,
            );
        }
        reads
    }

    #[test]
    fn identical_responses_pass_once_enough_reads_were_compared() {
        // ln(100) / 0.001 = 4,605.2 reads.
        let early = MismatchTest::run(&reads(4_000, 0, 0), 0.001, 0.001, 0.01)
            .expect("valid")
            .expect("compared");
        assert_eq!(early.verdict, Verdict::NotYetKnown);
        assert!(early.held_because.is_some());
        let later = MismatchTest::run(&reads(5_000, 0, 0), 0.001, 0.001, 0.01)
            .expect("valid")
            .expect("compared");
        assert_eq!(later.verdict, Verdict::NotWorse, "{later}");
    }

    #[test]
    fn noise_on_both_sides_is_not_a_mismatch() {
        // A field both builds get "wrong" as often is noise, however often.
        let test = MismatchTest::run(&reads(50_000, 10, 10), 0.01, 0.01, 0.01)
            .expect("valid")
            .expect("compared");
        assert_ne!(test.verdict, Verdict::Worse, "{test}");
        assert!(test.worse.confidence.contains(0.0));
    }

    #[test]
    fn bad_levels_are_named() {
        assert!(matches!(
            MismatchTest::run(&reads(10, 0, 0), 0.0, 0.1, 0.01),
            Err(AnalysisError::OutOfRange {
                field: "tolerance",
                ..
            })
        ));
        assert_eq!(
            MismatchTest::run(&PairedMismatches::default(), 0.1, 0.1, 0.01).expect("valid"),
            None
        );
    }
}
