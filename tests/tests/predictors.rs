//! The built-in predictors on synthetic evidence: bottlenecks, calibration, ensembles.

use shadowlib::predict::{
    CapacityConfig, CapacityPredictor, Ensemble, LearnedModel, LearnedPredictor,
};
use shadowlib::simulate::{HistoryConfig, brier_score, synthetic_history};
use shadowlib::{
    Distribution, Evidence, Outcome, Predictor, Resource, SequentialPredictor, ThresholdPredictor,
    Version,
};

/// Shadow evidence with identical latency and errors, where the candidate costs `cpu`
/// times as much CPU and `alloc` times as many allocated bytes per read as the twin: on
/// each pair (what the paired tests read) and in each arm's distribution (what the
/// capacity model reads).
fn costly(cpu: f64, alloc: f64) -> Evidence {
    let mut e = Evidence::new(Version::new("svc", "1"), Version::new("svc", "2"));
    let (mut s_cpu, mut c_cpu) = (Distribution::cpu_ns(), Distribution::cpu_ns());
    let (mut s_alloc, mut c_alloc) = (Distribution::bytes(), Distribution::bytes());
    let shadow = &mut e.shadow;
    for i in 0..5_000u64 {
        let latency = 900 + (i * 7_919) % 200;
        shadow.twin.record_request(Outcome::Success, latency);
        shadow.candidate.record_request(Outcome::Success, latency);
        let jitter = 0.9 + (i % 21) as f64 / 100.0;
        s_cpu.record((200_000.0 * jitter) as u64);
        c_cpu.record((200_000.0 * jitter * cpu) as u64);
        s_alloc.record((40_000.0 * jitter) as u64);
        c_alloc.record((40_000.0 * jitter * alloc) as u64);
        let pair = &mut shadow.pairs.total;
        pair.outcomes.record(false, false);
        // Each read's own cost varies; the ratio between the builds does not.
        pair.latency.add(0.0);
        pair.cpu.add(cpu.ln());
        pair.alloc_bytes.add(alloc.ln());
    }
    shadow.twin.cpu_ns = Some(s_cpu);
    shadow.candidate.cpu_ns = Some(c_cpu);
    shadow.twin.alloc_bytes = Some(s_alloc);
    shadow.candidate.alloc_bytes = Some(c_alloc);
    e
}

#[test]
fn a_cpu_heavy_candidate_is_bottlenecked_on_cpu() {
    let prediction = SequentialPredictor::default().predict(&costly(1.5, 1.0));
    let first = prediction
        .bottlenecks
        .first()
        .expect("a bottleneck is named");
    assert_eq!(first.resource, Resource::Cpu);
    assert!(first.ratio.contains(1.5), "{:?}", first.ratio);
    assert!(
        prediction
            .bottlenecks
            .iter()
            .all(|b| b.resource != Resource::Memory)
    );
}

#[test]
fn an_allocation_heavy_candidate_is_bottlenecked_on_memory() {
    let prediction = SequentialPredictor::default().predict(&costly(1.0, 2.0));
    let first = prediction
        .bottlenecks
        .first()
        .expect("a bottleneck is named");
    assert_eq!(first.resource, Resource::Memory);
    assert!(first.ratio.contains(2.0), "{:?}", first.ratio);
    assert!(
        prediction
            .bottlenecks
            .iter()
            .all(|b| b.resource != Resource::Cpu)
    );
}

#[test]
fn the_ensemble_keeps_the_members_bottlenecks_worst_first() {
    let ensemble = Ensemble::max()
        .with(SequentialPredictor::default())
        .with(CapacityPredictor::new(CapacityConfig::new(10_000.0, 4)).expect("valid"));
    let prediction = ensemble.predict(&costly(1.2, 3.0));
    let resources: Vec<Resource> = prediction.bottlenecks.iter().map(|b| b.resource).collect();
    assert_eq!(resources.first(), Some(&Resource::Memory), "{resources:?}");
    assert!(resources.contains(&Resource::Cpu));
}

fn brier<P: Predictor>(
    new_predictor: impl Fn() -> P,
    history: &[shadowlib::predict::HistoryRecord],
) -> f64 {
    let forecasts: Vec<(f64, bool)> = history
        .iter()
        .map(|r| {
            let p = new_predictor().predict(&r.evidence);
            (
                if p.is_conclusive() {
                    p.failure_probability
                } else {
                    0.5
                },
                r.incident,
            )
        })
        .collect();
    brier_score(&forecasts).expect("a non-empty history")
}

#[test]
fn the_learned_predictor_beats_fixed_thresholds_on_held_out_rollouts() {
    let config = HistoryConfig {
        records: 300,
        requests_per_arm: 1_000,
        ..HistoryConfig::default()
    };
    let training = synthetic_history(&config).expect("valid settings");
    let held_out = synthetic_history(&HistoryConfig { seed: 7, ..config }).expect("valid settings");
    assert!(held_out.iter().any(|r| r.incident) && held_out.iter().any(|r| !r.incident));
    let model = LearnedModel::train(&training).expect("both outcomes present");
    let learned = brier(|| LearnedPredictor::new(model.clone()), &held_out);
    let threshold = brier(ThresholdPredictor::default, &held_out);
    assert!(
        learned < threshold,
        "learned {learned:.4} vs threshold {threshold:.4}"
    );
}

#[test]
fn synthetic_histories_are_reproducible_and_labelled() {
    let config = HistoryConfig {
        records: 10,
        requests_per_arm: 100,
        ..HistoryConfig::default()
    };
    let a = synthetic_history(&config).expect("valid settings");
    let b = synthetic_history(&config).expect("valid settings");
    assert_eq!(a, b);
    assert!(a.iter().all(|r| r.synthetic));
}
