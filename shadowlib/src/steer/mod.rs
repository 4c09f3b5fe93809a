//! Choosing which build serves a live request.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::model::{Arm, Share};

/// Picks stable or candidate for each live request, by share, stickily per key.
///
/// `set_share` is called by the rollout controller (and takes effect from the next request
/// on); `pick` is called on the live path for every request and must be cheap and
/// lock-free. With the same key and a share that only grows, a request that went to the
/// candidate keeps going there, so one user does not flip between builds.
///
/// ```
/// use shadowlib::{Arm, Share, TrafficSteerer, WeightedSteerer};
///
/// let steerer = WeightedSteerer::new();
/// assert_eq!(steerer.pick(Some(b"user-42")), Arm::Stable);
/// steerer.set_share(Share::FULL);
/// assert_eq!(steerer.pick(Some(b"user-42")), Arm::Candidate);
/// ```
pub trait TrafficSteerer: Send + Sync {
    /// Makes `share` the fraction of new requests sent to the candidate.
    fn set_share(&self, share: Share);

    /// The share in force.
    fn share(&self) -> Share;

    /// The build that serves a request with this sticky key (`None`: no key, draw at random).
    fn pick(&self, key: Option<&[u8]>) -> Arm;
}

impl<T: TrafficSteerer + ?Sized> TrafficSteerer for std::sync::Arc<T> {
    fn set_share(&self, share: Share) {
        (**self).set_share(share)
    }

    fn share(&self) -> Share {
        (**self).share()
    }

    fn pick(&self, key: Option<&[u8]>) -> Arm {
        (**self).pick(key)
    }
}

/// Routes by share: a keyed request goes to the candidate when the hash of its key, mapped
/// to `[0, 1,000,000)`, is below the share in parts per million; a key-less one is drawn at
/// random. The share is one atomic, so a change is seen whole by the next request.
///
/// The key hash is FNV-1a followed by the SplitMix64 finalizer, written here rather than
/// taken from `std` because `std`'s hasher may change between Rust releases, and replicas
/// of a fleet built with different compilers must send the same user to the same build.
#[derive(Debug, Default)]
pub struct WeightedSteerer {
    share_ppm: AtomicU32,
}

impl WeightedSteerer {
    /// A steerer that sends everything to stable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where a key falls in `[0, 1,000,000)`; a key is routed to the candidate when this is
    /// below the share.
    pub fn bucket(key: &[u8]) -> u32 {
        (stable_hash(key) % u64::from(Share::PPM_SCALE)) as u32
    }
}

fn stable_hash(key: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = key.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    // SplitMix64 finalizer: spreads FNV's weak low bits over the whole word.
    crate::rng::mix(h)
}

impl TrafficSteerer for WeightedSteerer {
    fn set_share(&self, share: Share) {
        self.share_ppm.store(share.ppm(), Ordering::Release);
    }

    fn share(&self) -> Share {
        // Only values from a valid `Share` are ever stored.
        Share::from_ppm(self.share_ppm.load(Ordering::Acquire)).unwrap_or(Share::ZERO)
    }

    fn pick(&self, key: Option<&[u8]>) -> Arm {
        let share = self.share_ppm.load(Ordering::Acquire);
        if share == 0 {
            return Arm::Stable;
        }
        if share >= Share::PPM_SCALE {
            return Arm::Candidate;
        }
        let bucket = match key {
            Some(key) => Self::bucket(key),
            None => crate::rng::below(Share::PPM_SCALE),
        };
        if bucket < share {
            Arm::Candidate
        } else {
            Arm::Stable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_is_respected_for_keyless_requests() {
        let steerer = WeightedSteerer::new();
        steerer.set_share(Share::from_percent(25.0).expect("valid"));
        let n = 100_000;
        let candidate = (0..n)
            .filter(|_| steerer.pick(None) == Arm::Candidate)
            .count();
        let fraction = candidate as f64 / n as f64;
        assert!((fraction - 0.25).abs() < 0.01, "fraction {fraction}");
    }

    #[test]
    fn keyed_requests_are_sticky_and_monotone_as_share_grows() {
        let steerer = WeightedSteerer::new();
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let mut previous = vec![Arm::Stable; keys.len()];
        for percent in [1.0, 5.0, 25.0, 50.0, 100.0] {
            steerer.set_share(Share::from_percent(percent).expect("valid"));
            let now: Vec<Arm> = keys
                .iter()
                .map(|k| steerer.pick(Some(k.as_bytes())))
                .collect();
            for (before, after) in previous.iter().zip(&now) {
                assert!(!(*before == Arm::Candidate && *after == Arm::Stable));
            }
            let fraction =
                now.iter().filter(|a| **a == Arm::Candidate).count() as f64 / keys.len() as f64;
            assert!(
                (fraction - percent / 100.0).abs() < 0.02,
                "{percent}%: {fraction}"
            );
            // Same key, same answer.
            assert_eq!(
                now,
                keys.iter()
                    .map(|k| steerer.pick(Some(k.as_bytes())))
                    .collect::<Vec<_>>()
            );
            previous = now;
        }
    }

    #[test]
    fn zero_share_never_picks_candidate() {
        let steerer = WeightedSteerer::new();
        assert!((0..1000).all(|i| steerer.pick(Some(format!("{i}").as_bytes())) == Arm::Stable));
        assert!((0..1000).all(|_| steerer.pick(None) == Arm::Stable));
    }
}
