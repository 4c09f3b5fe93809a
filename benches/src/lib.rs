//! Fixtures the workspace's benchmarks share; the benchmarks themselves live in `benches/`.

use std::sync::Arc;

use shadowlib::mirror::{Rollout, ShadowCounts};
use shadowlib::{
    KpiRecorder, RolloutController, RolloutPolicy, ThresholdPredictor, Version, WeightedSteerer,
};

/// A rollout of `bench@1` to `bench@2` under the default policy, for a middleware to
/// serve. With `shadowing` it is started, so every read is mirrored; without, the rollout
/// stays idle and nothing is.
pub fn bench_rollout(shadowing: bool) -> Rollout {
    let (v1, v2) = (Version::new("bench", "1"), Version::new("bench", "2"));
    let recorder = Arc::new(KpiRecorder::new(v1.clone(), v2.clone()));
    let controller = RolloutController::new(
        v1,
        v2,
        RolloutPolicy::default(),
        ThresholdPredictor::default(),
        Arc::new(WeightedSteerer::new()),
    )
    .expect("the default policy is valid");
    if shadowing {
        controller
            .handle()
            .start()
            .expect("an idle rollout starts: shadowing, every read is mirrored");
    }
    Rollout::of(&controller, recorder)
}

/// The runtime the live requests run on: two workers, one per core of the machine the
/// figures are measured on.
pub fn live_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The middle of `samples` (the upper middle for an even count): the figures are medians
/// so that one burst of load from other processes does not decide them.
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// What the shadow did with the copies, for the figure lines: dropped copies are reported
/// beside every ratio, so a fast live path cannot hide a shadow that gave up.
pub fn copies(counts: &ShadowCounts) -> String {
    format!(
        "shadow copies: mirrored {}, dropped {}, compared {}, mismatched {}",
        counts.mirrored, counts.dropped_queue_full, counts.compared, counts.mismatched
    )
}
