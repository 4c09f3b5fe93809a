//! Each statistic of the analysis against values computed by hand or from the reference
//! formula, independently of the code under test.

use shadowlib::analysis::{
    DifferenceEstimate, MannWhitney, Metric, MixtureSprt, Proportion, Quantile, Scope,
    SequentialAnalysis, SequentialConfig, Statistic, Verdict,
};
use shadowlib::{Distribution, Evidence, LATENCY_FLOOR, Moments, Outcome, SampleCount, Version};

fn estimate(difference: f64, variance: f64) -> DifferenceEstimate {
    DifferenceEstimate {
        difference,
        variance,
        samples: SampleCount::default(),
    }
}

/// The mixture likelihood ratio from its definition: the likelihood ratio of
/// `θ̂ ~ N(θ, V)` against `N(θ₀, V)`, averaged over `θ ~ N(θ₀, τ²)` by Simpson's rule.
fn mixture_by_quadrature(difference: f64, variance: f64, tau: f64, null: f64) -> f64 {
    let spread = tau.max(variance.sqrt());
    let (low, high) = (
        null.min(difference) - 12.0 * spread,
        null.max(difference) + 12.0 * spread,
    );
    let steps = 20_000;
    let h = (high - low) / steps as f64;
    let integrand = |theta: f64| {
        let likelihood_ratio =
            (((difference - null).powi(2) - (difference - theta).powi(2)) / (2.0 * variance)).exp();
        let prior = (-(theta - null).powi(2) / (2.0 * tau * tau)).exp()
            / (tau * (2.0 * std::f64::consts::PI).sqrt());
        likelihood_ratio * prior
    };
    let inner: f64 = (1..steps)
        .map(|i| integrand(low + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 })
        .sum();
    (integrand(low) + inner + integrand(high)) * h / 3.0
}

#[test]
fn mixture_likelihood_ratio_matches_its_integral_definition() {
    let cases = [
        (0.5, 0.01, 0.1, 0.0),
        (0.1, 0.01, 0.1, 0.0),
        (0.02, 1e-4, 0.05, 0.0),
        (-0.03, 4e-4, 0.02, 0.01),
        (0.004, 2e-6, 0.0025, 0.0025),
    ];
    for (difference, variance, tau, null) in cases {
        let sprt = MixtureSprt::new(0.05, tau).expect("valid");
        let closed_form = sprt.log_likelihood_ratio(&estimate(difference, variance), null);
        let reference = mixture_by_quadrature(difference, variance, tau, null).ln();
        assert!(
            (closed_form - reference).abs() < 1e-6,
            "θ̂ {difference}, V {variance}, τ {tau}, θ₀ {null}: {closed_form} vs {reference}"
        );
    }
}

#[test]
fn statistic_p_value_and_confidence_sequence_by_hand() {
    // θ̂ = 0.5, V = 0.01, τ = 0.1 (τ² = 0.01), α = 0.05:
    // ln Λ(0) = ½ ln(0.01/0.02) + 0.01·0.25 / (2·0.01·0.02) = −0.346574 + 6.25 = 5.903426
    // p = e^(−5.903426) = 0.0027301
    // half-width = sqrt(0.01·0.02/0.01 · (2 ln 20 + ln 2)) = sqrt(0.02 · 6.684612) = 0.365639
    let sprt = MixtureSprt::new(0.05, 0.1).expect("valid");
    let test = sprt.test(estimate(0.5, 0.01), 0.0);
    assert!(
        (test.log_statistic - 5.903_426).abs() < 1e-6,
        "{}",
        test.log_statistic
    );
    assert!(
        (test.p_value - 0.002_730_1).abs() < 1e-7,
        "{}",
        test.p_value
    );
    assert!(
        (test.confidence.high - 0.5 - 0.365_639).abs() < 1e-6,
        "{:?}",
        test.confidence
    );
    assert!((0.5 - test.confidence.low - 0.365_639).abs() < 1e-6);
    assert_eq!(test.confidence.confidence, 0.95);
    // At the ends of the confidence sequence the statistic is exactly ln(1/α).
    for end in [test.confidence.low, test.confidence.high] {
        let at_end = sprt.log_likelihood_ratio(&test.estimate, end);
        assert!((at_end - 20f64.ln()).abs() < 1e-9, "{at_end}");
    }
    // No evidence against the null at θ̂ = θ₀: Λ < 1, p-value capped at 1.
    assert_eq!(sprt.p_value(&estimate(0.0, 0.01), 0.0), 1.0);
}

#[test]
fn one_sided_p_values_test_the_tolerance() {
    let sprt = MixtureSprt::new(0.05, 0.1).expect("valid");
    let above = sprt.test(estimate(0.5, 0.01), 0.1);
    assert_eq!(
        above.not_worse_p_value, 1.0,
        "θ̂ above the tolerance is no evidence of being within it"
    );
    assert!((above.worse_p_value - sprt.p_value(&above.estimate, 0.1)).abs() < 1e-15);
    assert_eq!(above.verdict(), Verdict::Worse);
    let below = sprt.test(estimate(-0.5, 0.01), 0.1);
    assert_eq!(below.worse_p_value, 1.0);
    assert_eq!(below.verdict(), Verdict::NotWorse);
}

#[test]
fn estimates_by_hand() {
    let (mut stable, mut candidate) = (Moments::default(), Moments::default());
    for x in [1.0, 2.0, 3.0, 4.0] {
        stable.add(x); // mean 2.5, variance 5/3
    }
    for x in [2.0, 4.0, 6.0] {
        candidate.add(x); // mean 4, variance 4
    }
    let means = DifferenceEstimate::means(&stable, &candidate).expect("two or more on each side");
    assert!((means.difference - 1.5).abs() < 1e-12);
    assert!((means.variance - (5.0 / 3.0 / 4.0 + 4.0 / 3.0)).abs() < 1e-12);
    assert_eq!(
        means.samples,
        SampleCount {
            stable: 4,
            candidate: 3
        }
    );

    // Rates 10/1000 and 30/1000; variances from the smoothed rates 11/1002 and 31/1002.
    let rates =
        DifferenceEstimate::proportions(Proportion::new(10, 1_000), Proportion::new(30, 1_000))
            .expect("trials");
    let var = |r: f64| r * (1.0 - r) / 1_000.0;
    assert!((rates.difference - 0.02).abs() < 1e-15);
    assert!((rates.variance - (var(11.0 / 1_002.0) + var(31.0 / 1_002.0))).abs() < 1e-15);

    // CPU: stable {100, 300} (mean 200, sd 141.42), candidate {300, 500} (mean 400, sd 141.42), in ns.
    let (mut s, mut c) = (Distribution::cpu_ns(), Distribution::cpu_ns());
    for v in [100, 300] {
        s.record(v);
    }
    for v in [300, 500] {
        c.record(v);
    }
    let ratio = DifferenceEstimate::log_ratio_of_means(&s, &c).expect("two values each");
    assert!((ratio.difference - 2f64.ln()).abs() < 1e-3);
    // Delta method, with the histogram's population standard deviation (100 here):
    // (100/200)²/2 + (100/400)²/2 = 0.125 + 0.03125.
    assert!(
        (ratio.variance - 0.156_25).abs() < 1e-3,
        "{}",
        ratio.variance
    );

    assert!(DifferenceEstimate::means(&Moments::default(), &candidate).is_none());
    assert!(
        DifferenceEstimate::proportions(Proportion::new(0, 0), Proportion::new(1, 10)).is_none()
    );
}

#[test]
fn mann_whitney_matches_the_textbook_computation() {
    // stable 1..=10, candidate 6..=15: U = 5.5 + 6.5 + 7.5 + 8.5 + 9.5 + 5·10 = 87.5; mean 50;
    // five tie groups of two: Σ(t³ − t) = 30; variance = 100/12 · (21 − 30/380) = 174.3421;
    // z = 37.5 / 13.20387 = 2.840077; two-sided p = 0.0045103.
    let (mut stable, mut candidate) = (Distribution::latency_us(), Distribution::latency_us());
    for v in 1..=10 {
        stable.record(v);
    }
    for v in 6..=15 {
        candidate.record(v);
    }
    let mw = MannWhitney::test(&stable, &candidate).expect("values on both sides");
    assert_eq!(mw.u, 87.5);
    assert!((mw.z - 2.840_077).abs() < 1e-6, "{}", mw.z);
    assert!((mw.p_value - 0.004_510_3).abs() < 1e-7, "{}", mw.p_value);
    assert!(mw.candidate_slower(0.98));
    let reversed = MannWhitney::test(&candidate, &stable).expect("values on both sides");
    assert!(
        (reversed.z + mw.z).abs() < 1e-12,
        "swapping the builds flips the sign"
    );
    assert!(!reversed.candidate_slower(0.98));
}

/// Deterministic shadow evidence: the twin's latencies spread over 500..1500 µs, the
/// candidate's on the same reads mapped through `candidate`, paired read by read.
fn evidence(n: u64, candidate: impl Fn(u64, u64) -> u64) -> Evidence {
    let mut e = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
    for i in 0..n {
        let latency = 500 + (i * 7_919) % 1_000;
        let candidate_latency = candidate(i, latency);
        let shadow = &mut e.shadow;
        shadow.twin.record_request(Outcome::Success, latency);
        shadow
            .candidate
            .record_request(Outcome::Success, candidate_latency);
        let pairs = &mut shadow.pairs.total;
        pairs.outcomes.record(false, false);
        pairs
            .latency
            .add((candidate_latency as f64 / latency as f64).ln());
    }
    e
}

#[test]
fn kpi_tests_read_the_evidence_as_the_formulas_say() {
    let analysis = SequentialAnalysis::new(SequentialConfig::default()).expect("valid");
    // Every 10th candidate request 4x slower: 10% of requests above stable's p95 instead of 5%.
    let e = evidence(
        10_000,
        |i, latency| if i % 10 == 0 { latency * 4 } else { latency },
    );
    let assessment = analysis.analyze(&e);

    // Latency: the mean per-read log ratio, with the variance of that mean.
    let latency = assessment
        .test(Metric::Latency, &Scope::Shadow)
        .expect("latency measured on both");
    let ratios = e.shadow.pairs.total.latency;
    let (estimate, _) = latency.estimate().expect("a mixture test");
    assert!((estimate.difference - ratios.mean()).abs() < 1e-12);
    assert!((estimate.variance - ratios.variance() / 10_000.0).abs() < 1e-15);
    assert!((latency.degradation().estimate - ratios.mean().exp_m1()).abs() < 1e-12);
    assert!(
        (ratios.mean() - 0.1 * 4f64.ln()).abs() < 1e-9,
        "a tenth of reads 4x slower"
    );

    // The p95: each build's point estimate is its histogram's p95 on the floored scale,
    // and a tenth of reads 4x slower moves the candidate's p95 into the slow tenth.
    let p95 = assessment
        .test(Metric::LatencyQuantile(Quantile::P95), &Scope::Shadow)
        .expect("latency measured on both");
    let (twin, candidate) = (&e.shadow.twin.latency_us, &e.shadow.candidate.latency_us);
    let Statistic::Quantile {
        stable: twin_p95,
        candidate: candidate_p95,
        ..
    } = p95.statistic
    else {
        panic!("a quantile test: {p95}");
    };
    let floor = LATENCY_FLOOR.as_micros() as f64;
    assert_eq!(twin_p95, twin.quantile(0.95) as f64 + floor);
    assert_eq!(candidate_p95, candidate.quantile(0.95) as f64 + floor);
    assert!(
        candidate_p95 > 2.5 * twin_p95,
        "{candidate_p95} vs {twin_p95}"
    );
    assert_eq!(p95.verdict, Verdict::Worse);

    let errors = assessment
        .test(Metric::ErrorRate, &Scope::Shadow)
        .expect("requests on both");
    let (estimate, _) = errors.estimate().expect("a mixture test");
    assert_eq!(estimate.difference, 0.0);
    assert!(
        assessment.test(Metric::Cpu, &Scope::Shadow).is_none(),
        "CPU is not measured here"
    );
    assert_eq!(assessment.verdict, Verdict::Worse);
}
