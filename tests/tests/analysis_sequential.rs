//! Properties of the sequential tests under continuous monitoring: type-I error on A/A
//! streams peeked at every look, monotonicity in the evidence, and the behaviours the
//! predictor promises (tail-only regressions, novel failure classes, bursts, no data).

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Bernoulli, Distribution as _, Normal};
use shadowlib::analysis::{
    DifferenceEstimate, Metric, MixtureSprt, Proportion, Quantile, Scope, SequentialAnalysis,
    SequentialConfig, Verdict,
};
use shadowlib::{Certainty, Evidence, Moments, Outcome, Predictor, SequentialPredictor, Version};

const ALPHA: f64 = 0.05;

/// Runs `streams` A/A streams of `looks × per_look` observations per arm and counts those
/// in which the test rejected "no difference" at any look.
fn aa_rejections(
    streams: usize,
    looks: usize,
    per_look: usize,
    seed: u64,
    observe: impl Fn(&mut StdRng) -> f64,
) -> usize {
    let sprt = MixtureSprt::new(ALPHA, 0.05).expect("valid");
    let mut rng = StdRng::seed_from_u64(seed);
    (0..streams)
        .filter(|_| {
            let (mut a, mut b) = (Moments::default(), Moments::default());
            (0..looks).any(|_| {
                for _ in 0..per_look {
                    a.add(observe(&mut rng));
                    b.add(observe(&mut rng));
                }
                let e = DifferenceEstimate::means(&a, &b).expect("enough values");
                sprt.test(e, 0.0).p_value <= ALPHA
            })
        })
        .count()
}

#[test]
fn aa_type_one_error_stays_below_alpha_over_a_hundred_looks() {
    // Log latency of a lognormal with σ = 0.5, peeked every 50 requests for 100 looks.
    let normal = Normal::new(0.0, 0.5).expect("valid");
    let streams = 300;
    let rejected = aa_rejections(streams, 100, 50, 7, |rng| normal.sample(rng));
    let rate = rejected as f64 / streams as f64;
    assert!(rate <= ALPHA, "A/A type-I error {rate} above α = {ALPHA}");
}

#[test]
fn aa_type_one_error_for_proportions_stays_below_alpha() {
    let sprt = MixtureSprt::new(ALPHA, 0.005).expect("valid");
    let failure = Bernoulli::new(0.01).expect("valid");
    let mut rng = StdRng::seed_from_u64(11);
    let streams = 300;
    let rejected = (0..streams)
        .filter(|_| {
            let (mut a, mut b, mut n) = (0, 0, 0);
            (0..100).any(|_| {
                for _ in 0..200 {
                    a += u64::from(failure.sample(&mut rng));
                    b += u64::from(failure.sample(&mut rng));
                }
                n += 200;
                let e =
                    DifferenceEstimate::proportions(Proportion::new(a, n), Proportion::new(b, n))
                        .expect("trials");
                sprt.test(e, 0.0).p_value <= ALPHA
            })
        })
        .count();
    let rate = rejected as f64 / streams as f64;
    assert!(rate <= ALPHA, "A/A type-I error {rate} above α = {ALPHA}");
}

/// Mean of the log statistic against "no difference" over `replications` streams with a
/// true difference `shift` (σ = 0.5), at each of the sample sizes in `sizes`.
fn mean_statistic(shift: f64, sizes: &[usize], replications: usize, seed: u64) -> Vec<f64> {
    let sprt = MixtureSprt::new(ALPHA, 0.05).expect("valid");
    let noise = Normal::new(0.0, 0.5).expect("valid");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sums = vec![0.0; sizes.len()];
    for _ in 0..replications {
        let (mut a, mut b) = (Moments::default(), Moments::default());
        for (slot, &size) in sizes.iter().enumerate() {
            while (a.count() as usize) < size {
                a.add(noise.sample(&mut rng));
                b.add(shift + noise.sample(&mut rng));
            }
            let e = DifferenceEstimate::means(&a, &b).expect("enough values");
            sums[slot] += sprt.test(e, 0.0).log_statistic;
        }
    }
    sums.iter().map(|s| s / replications as f64).collect()
}

#[test]
fn more_regression_evidence_never_lowers_the_statistic_in_expectation() {
    // More samples of a regression at least the size the test is tuned to (τ = 0.05).
    let sizes = [100, 200, 400, 800, 1_600];
    for shift in [0.05, 0.1] {
        let means = mean_statistic(shift, &sizes, 200, 3);
        assert!(
            means.windows(2).all(|w| w[1] > w[0]),
            "shift {shift}: {means:?}"
        );
    }
    // A larger regression at the same sample size.
    let by_size: Vec<f64> = [0.0, 0.02, 0.04, 0.08, 0.16]
        .iter()
        .map(|&shift| mean_statistic(shift, &[1_000], 200, 5)[0])
        .collect();
    assert!(by_size.windows(2).all(|w| w[1] > w[0]), "{by_size:?}");
    // And with no regression, more samples push it down: evidence for the null.
    let null = mean_statistic(0.0, &[400, 800, 1_600, 3_200], 200, 9);
    assert!(null.windows(2).all(|w| w[1] < w[0]), "{null:?}");
}

/// Adds one read the shadow ran on both builds: the twin's outcome and latency, the
/// candidate's.
fn pair(e: &mut Evidence, twin: (Outcome, u64), candidate: (Outcome, u64)) {
    let shadow = &mut e.shadow;
    shadow.twin.record_request(twin.0, twin.1);
    shadow.candidate.record_request(candidate.0, candidate.1);
    let pairs = &mut shadow.pairs.total;
    pairs
        .outcomes
        .record(twin.0.is_failure(), candidate.0.is_failure());
    let answered = |o: Outcome| !matches!(o, Outcome::Timeout | Outcome::Panic);
    if answered(twin.0) && answered(candidate.0) {
        pairs
            .latency
            .add((candidate.1.max(1) as f64 / twin.1.max(1) as f64).ln());
    }
}

/// `n` reads on both builds: the twin succeeds in 500..1500 µs, the candidate as told.
fn evidence(n: u64, candidate: impl Fn(u64, u64) -> (Outcome, u64)) -> Evidence {
    let mut e = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
    for i in 0..n {
        let latency = 500 + (i * 7_919) % 1_000;
        pair(&mut e, (Outcome::Success, latency), candidate(i, latency));
    }
    e
}

#[test]
fn a_wider_tail_with_the_same_center_is_caught_by_the_p99_test() {
    // Candidate latencies stretched away from the center (1000 µs) by 80%: the same
    // median and a lower geometric mean, but a p99 about 26% higher.
    let e = evidence(20_000, |_, latency| {
        let stretched = 1_000.0 + (latency as f64 - 1_000.0) * 1.8;
        (Outcome::Success, stretched.max(1.0) as u64)
    });
    let assessment = SequentialAnalysis::new(SequentialConfig::default())
        .expect("valid")
        .analyze(&e);
    let typical = assessment
        .test(Metric::Latency, &Scope::Shadow)
        .expect("measured");
    assert_ne!(typical.verdict, Verdict::Worse, "{typical}");
    let tail = assessment
        .test(Metric::LatencyQuantile(Quantile::P99), &Scope::Shadow)
        .expect("measured");
    assert_eq!(tail.verdict, Verdict::Worse, "{tail}");
    assert_eq!(assessment.verdict, Verdict::Worse);
}

#[test]
fn a_failure_class_stable_never_produced_is_flagged_at_once_and_fails_when_significant() {
    let predictor = SequentialPredictor::default();
    let one_panic = evidence(5_000, |i, latency| {
        (
            if i == 7 {
                Outcome::Panic
            } else {
                Outcome::Success
            },
            latency,
        )
    });
    let p = predictor.predict(&one_panic);
    assert!(
        matches!(p.certainty, Certainty::Inconclusive(ref why) if why.contains("Panic")),
        "{:?}",
        p.certainty
    );
    assert!(
        p.reasons
            .iter()
            .any(|r| r.contains("stable none in 5000 requests"))
    );

    // Ten panics, none on stable: chance (1/2)^10 < 0.001 on identical builds.
    let ten_panics = evidence(5_000, |i, latency| {
        (
            if i % 500 == 0 {
                Outcome::Panic
            } else {
                Outcome::Success
            },
            latency,
        )
    });
    let p = SequentialPredictor::default().predict(&ten_panics);
    assert!(p.is_conclusive());
    assert_eq!(p.verdict(), Verdict::Worse);
    // The posterior of the error rate above its tolerance: 0.2% seen against 0.1%.
    assert!(p.failure_probability > 0.5, "{}", p.failure_probability);
}

#[test]
fn a_burst_of_failures_on_the_candidate_alone_holds_the_rollout() {
    let mut config = SequentialConfig::default();
    config.tolerances.error_rate = 0.005;
    let predictor = SequentialPredictor::new(config).expect("valid");
    // Forty looks of a healthy candidate; cumulative evidence as the controller builds it.
    let mut e = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
    let look = |e: &mut Evidence, candidate_failures: u64| {
        for i in 0..1_000u64 {
            let latency = 500 + (i * 7_919) % 1_000;
            let outcome = |failed| {
                if failed {
                    Outcome::ServerError
                } else {
                    Outcome::Success
                }
            };
            let twin = (outcome(i % 200 == 0), latency);
            pair(e, twin, (outcome(i < candidate_failures), latency));
        }
        predictor.predict(e)
    };
    for _ in 0..40 {
        look(&mut e, 5);
    }
    let before = look(&mut e, 5);
    assert!(
        before.is_conclusive(),
        "healthy and within tolerance: {:?}",
        before.reasons
    );
    // One interval at 8% failures: cumulative rates barely move, the chart does.
    let during = look(&mut e, 80);
    assert!(!during.is_conclusive(), "{:?}", during.reasons);
    assert!(
        during
            .reasons
            .iter()
            .any(|r| r.contains("control chart of the failures only the candidate had")),
        "{:?}",
        during.reasons
    );
}

#[test]
fn no_data_is_not_a_verdict() {
    let predictor = SequentialPredictor::default();
    let empty = Evidence::new(Version::new("api", "1"), Version::new("api", "2"));
    assert!(!predictor.predict(&empty).is_conclusive());
    // A trickle of reads, every one failed by the candidate alone: still nothing decided.
    let trickle = evidence(50, |_, latency| (Outcome::ServerError, latency));
    let p = predictor.predict(&trickle);
    assert!(
        matches!(p.certainty, Certainty::NeedsSamples(_)),
        "{:?}",
        p.reasons
    );
}
