//! What the shadow measured: the stable twin and the candidate, on the same mirrored reads.

use serde::{Deserialize, Serialize};

use super::{ArmEvidence, DistributionError, PairedEvidence};

/// What the shadow measured while it ran mirrored reads on both builds.
///
/// Each mirrored read runs on a clone of the stable build (the *twin*) and on the
/// candidate, one after the other in a random order, on the shadow's thread: the two are
/// measured the same way, in the same place, on the same requests. [`pairs`](Self::pairs)
/// is what the shadow phase is judged on; the two arms describe each build on its own
/// (its latency distribution, its CPU per request) for reports and capacity.
///
/// ```
/// use shadowlib::{Outcome, ShadowEvidence};
///
/// let mut shadow = ShadowEvidence::default();
/// shadow.twin.record_request(Outcome::Success, 900);
/// shadow.candidate.record_request(Outcome::Success, 950);
/// assert_eq!(shadow.candidate.requests(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowEvidence {
    /// The stable build as the shadow ran it.
    pub twin: ArmEvidence,
    /// The candidate as the shadow ran it (its reads without a twin included).
    pub candidate: ArmEvidence,
    /// The reads both ran, paired.
    pub pairs: PairedEvidence,
    /// Reads the candidate ran without the twin (see
    /// [`ShadowConfig::with_twin_share`](crate::shadow::ShadowConfig::with_twin_share)):
    /// counted, never paired.
    pub unpaired: u64,
}

impl ShadowEvidence {
    /// Adds other shadow evidence about the same builds.
    pub fn merge(&mut self, other: &ShadowEvidence) -> Result<(), DistributionError> {
        self.twin.merge(&other.twin)?;
        self.candidate.merge(&other.candidate)?;
        self.pairs.merge(&other.pairs);
        self.unpaired += other.unpaired;
        Ok(())
    }
}
