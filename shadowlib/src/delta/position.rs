//! Where a state stands in the stream of deltas, and how far apart two states are.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One run of a live publisher.
///
/// Every [`LiveState`](super::LiveState) draws a fresh random epoch when it starts, and
/// stamps it on every frame it publishes. Sequence numbers restart with each epoch, so a
/// follower that sees a frame from another epoch cannot continue from its own position: it
/// resynchronizes from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch(u64);

impl Epoch {
    /// A fresh epoch, distinct from earlier ones with overwhelming probability.
    ///
    /// 32 random bits keep the varint on the wire at 5 bytes or less; two restarts collide
    /// with probability 2⁻³².
    pub fn random() -> Self {
        Self(crate::rng::next_u64() >> 32)
    }

    /// An epoch with a chosen value, for a publisher that persists its own counter.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The raw value carried on the wire.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A point in the delta stream: the publisher's epoch and the sequence number of the last
/// frame included.
///
/// On the live side it is a watermark: every change committed before
/// [`LiveState::position`](super::LiveState::position) was called is in a frame numbered at
/// most `sequence`. On the shadow side it says exactly which frames its state contains.
/// Sequence numbers count frames, and a frame holds one delta, or a coalesced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The publisher run.
    pub epoch: Epoch,
    /// The last frame included; 0 before the first frame of the epoch.
    pub sequence: u64,
}

impl Position {
    /// Whether a state at this position contains every change up to `live`.
    pub fn has_reached(self, live: Position) -> bool {
        self.epoch == live.epoch && self.sequence >= live.sequence
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.epoch, self.sequence)
    }
}

/// How far the shadow's state was from live's while it served a mirrored read.
///
/// A mirrored read is compared fairly only when the shadow answered from the state live
/// answered from. `behind` counts the frames live had applied but the shadow had not when
/// the shadow started serving; `ahead` counts the frames the shadow applied past live's
/// position before it finished (changes committed after live served the original).
///
/// ```
/// use shadowlib::delta::{Epoch, Freshness, Position, StalenessBound};
///
/// let epoch = Epoch::new(7);
/// let live = Position { epoch, sequence: 10 };
/// let start = Position { epoch, sequence: 9 };
/// let end = Position { epoch, sequence: 10 };
/// let freshness = Freshness::over(live, Some(start), Some(end));
/// assert_eq!(freshness, Freshness::Distance { behind: 1, ahead: 0 });
/// assert!(!freshness.within(&StalenessBound::default()));
/// assert!(freshness.within(&StalenessBound { max_behind: 1, ..StalenessBound::default() }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Freshness {
    /// The shadow followed live's epoch throughout; distances in frames.
    Distance {
        /// Frames live had that the shadow lacked when it started serving.
        behind: u64,
        /// Frames the shadow had past live's position when it finished serving.
        ahead: u64,
    },
    /// The shadow was on another epoch, or had never synchronized: positions cannot be
    /// compared, so neither can the responses.
    Unrelated,
}

impl Freshness {
    /// The freshness of a read that live served at `live` and the shadow served between
    /// positions `start` and `end` (`None`: the shadow had not synchronized yet).
    ///
    /// Positions only move forward within an epoch, so the extremes are at the two ends.
    pub fn over(live: Position, start: Option<Position>, end: Option<Position>) -> Self {
        match (start, end) {
            (Some(start), Some(end)) if start.epoch == live.epoch && end.epoch == live.epoch => {
                Freshness::Distance {
                    behind: live.sequence.saturating_sub(start.sequence),
                    ahead: end.sequence.saturating_sub(live.sequence),
                }
            }
            _ => Freshness::Unrelated,
        }
    }

    /// Whether the shadow answered from exactly live's state.
    pub fn is_exact(&self) -> bool {
        *self
            == Freshness::Distance {
                behind: 0,
                ahead: 0,
            }
    }

    /// Whether the read may be compared under `bound`.
    pub fn within(&self, bound: &StalenessBound) -> bool {
        match *self {
            Freshness::Distance { behind, ahead } => {
                behind <= bound.max_behind && ahead <= bound.max_ahead
            }
            Freshness::Unrelated => false,
        }
    }
}

/// How stale (or how far ahead) the shadow may be for a mirrored read to be compared.
///
/// The default is strict — the shadow must answer from exactly live's state — and waits up
/// to 5 ms for the shadow to catch up first. Loosen `max_ahead` when reads rarely touch
/// keys written in between, to compare more reads at the risk of a few false mismatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StalenessBound {
    /// How long the shadow side may wait for the shadow to reach live's position before
    /// serving the read. The shadow runs off the live path, so waiting costs no live client
    /// anything.
    #[serde(with = "crate::duration")]
    pub max_wait: Duration,
    /// Frames the shadow may lack at the start of the read.
    pub max_behind: u64,
    /// Frames the shadow may have applied past live's position by the end of the read, and
    /// frames live may have published while it served the read.
    pub max_ahead: u64,
}

impl Default for StalenessBound {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(5),
            max_behind: 0,
            max_ahead: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, sequence: u64) -> Position {
        Position {
            epoch: Epoch::new(epoch),
            sequence,
        }
    }

    #[test]
    fn freshness_measures_both_ends_of_the_read() {
        let live = at(1, 10);
        assert!(Freshness::over(live, Some(at(1, 10)), Some(at(1, 10))).is_exact());
        assert_eq!(
            Freshness::over(live, Some(at(1, 8)), Some(at(1, 13))),
            Freshness::Distance {
                behind: 2,
                ahead: 3
            }
        );
    }

    #[test]
    fn another_epoch_or_no_sync_is_unrelated() {
        let live = at(1, 10);
        assert_eq!(
            Freshness::over(live, Some(at(2, 10)), Some(at(2, 10))),
            Freshness::Unrelated
        );
        assert_eq!(
            Freshness::over(live, Some(at(1, 10)), Some(at(2, 1))),
            Freshness::Unrelated
        );
        assert_eq!(
            Freshness::over(live, None, Some(at(1, 10))),
            Freshness::Unrelated
        );
        assert!(!Freshness::Unrelated.within(&StalenessBound {
            max_behind: u64::MAX,
            max_ahead: u64::MAX,
            ..StalenessBound::default()
        }));
    }

    #[test]
    fn reaching_needs_the_same_epoch() {
        assert!(at(1, 5).has_reached(at(1, 5)));
        assert!(!at(1, 4).has_reached(at(1, 5)));
        assert!(!at(2, 9).has_reached(at(1, 5)));
    }

    #[test]
    fn bound_parses_from_toml_and_rejects_unknown_fields() {
        let bound: StalenessBound =
            toml::from_str("max_wait = \"20ms\"\nmax_ahead = 2").expect("valid bound");
        assert_eq!(bound.max_wait, Duration::from_millis(20));
        assert_eq!((bound.max_behind, bound.max_ahead), (0, 2));
        assert!(toml::from_str::<StalenessBound>("max_lag = 1").is_err());
    }
}
