//! The standard normal distribution's tail, from `libm`'s complementary error function.

/// `P(Z > z)` for a standard normal `Z`, accurate in the far tails too (`erfc` does not
/// lose digits there, as `1 - cdf` would).
pub(crate) fn survival(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_known_tail_probabilities() {
        assert!((survival(0.0) - 0.5).abs() < 1e-15);
        assert!((survival(1.959_963_984_540_054) - 0.025).abs() < 1e-12);
        assert!((survival(-1.0) - 0.841_344_746_068_542_9).abs() < 1e-12);
        // Far in the tail, still relative precision.
        let far = survival(10.0);
        assert!(
            (far / 7.619_853_024_160_527e-24 - 1.0).abs() < 1e-9,
            "{far}"
        );
    }
}
