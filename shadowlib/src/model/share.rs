//! The share of live traffic routed to the candidate.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A share outside `[0%, 100%]`.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ShareError {
    /// The value, as a percentage, is not between 0 and 100.
    #[error("share {0}% is outside [0%, 100%]")]
    OutOfRange(f64),
}

/// The fraction of live traffic routed to the candidate, in parts per million.
///
/// Parts per million rather than percent because early canary steps on a busy service are
/// often far below one percent (0.05% of 20k rps is still 10 rps of evidence).
///
/// ```
/// use shadowlib::Share;
///
/// let s = Share::from_percent(2.5)?;
/// assert_eq!(s.ppm(), 25_000);
/// assert_eq!(s.to_string(), "2.5%");
/// assert!(Share::from_ppm(1_000_001).is_err());
/// # Ok::<(), shadowlib::ShareError>(())
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(try_from = "f64", into = "f64")]
pub struct Share(u32);

impl Share {
    /// One million parts per million: all traffic.
    pub const PPM_SCALE: u32 = 1_000_000;
    /// No traffic to the candidate.
    pub const ZERO: Share = Share(0);
    /// All traffic to the candidate.
    pub const FULL: Share = Share(Self::PPM_SCALE);

    /// A share from parts per million; more than 1,000,000 is an error.
    pub fn from_ppm(ppm: u32) -> Result<Self, ShareError> {
        if ppm > Self::PPM_SCALE {
            return Err(ShareError::OutOfRange(f64::from(ppm) / 10_000.0));
        }
        Ok(Share(ppm))
    }

    /// A share from a percentage in `[0, 100]`, rounded to the nearest part per million.
    pub fn from_percent(percent: f64) -> Result<Self, ShareError> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(ShareError::OutOfRange(percent));
        }
        // In range, so the product fits in u32 after rounding.
        Ok(Share((percent * 10_000.0).round() as u32))
    }

    /// Parts per million.
    pub fn ppm(self) -> u32 {
        self.0
    }

    /// The share as a percentage.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// The share as a fraction in `[0, 1]`.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / f64::from(Self::PPM_SCALE)
    }

    /// Whether no traffic goes to the candidate.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

impl TryFrom<f64> for Share {
    type Error = ShareError;

    /// Serialized shares are percentages, the unit people write in configuration files.
    fn try_from(percent: f64) -> Result<Self, Self::Error> {
        Share::from_percent(percent)
    }
}

impl From<Share> for f64 {
    fn from(share: Share) -> f64 {
        share.percent()
    }
}
