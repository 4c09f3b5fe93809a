//! Random draws for routing and sampling: fast, per thread, seeded from the OS.
//!
//! Written here rather than taken from `rand` or `fastrand`: routing a key-less request and
//! sampling the mirror share each need one draw on the live path, and a SplitMix64 step
//! per thread (Steele, Lea and Flood, 2014) is a dozen lines against more crates in every
//! user's build. The seed comes from `std`'s `RandomState`, which the OS seeds. Nothing
//! here is for secrets.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

thread_local! {
    static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
}

/// The next 64 random bits of this thread's stream.
pub(crate) fn next_u64() -> u64 {
    // After the thread's locals are torn down: a constant stream is still a valid draw.
    STATE
        .try_with(|state| {
            let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(next);
            mix(next)
        })
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
}

/// SplitMix64's finalizer: spreads the bits of `z` over the whole word.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A draw uniform in `[0, bound)` (Lemire's multiply-shift; the bias is below 2^-32).
pub(crate) fn below(bound: u32) -> u32 {
    (((next_u64() >> 32) * u64::from(bound)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_below_a_bound_are_uniform() {
        let bound = 10;
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[below(bound) as usize] += 1;
        }
        // Binomial(100,000, 0.1): sd 95, so ±600 is more than 6 sd.
        assert!(
            counts.iter().all(|&c| (9_400..=10_600).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn threads_draw_different_streams() {
        let here: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        let there = std::thread::spawn(|| (0..4).map(|_| next_u64()).collect::<Vec<_>>())
            .join()
            .expect("no panic");
        assert_ne!(here, there);
    }
}
