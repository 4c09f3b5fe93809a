//! Fixtures the workspace's benchmarks share; the benchmarks themselves live in `benches/`.

use shadowlib::shadow::{ShadowConfig, ShadowCounts};
use shadowlib::{Rollout, Version};

/// A rollout of `bench@1` to `bench@2` under the default policy, for a middleware to
/// serve: it is shadowing, so every read `shadow`'s mirror share lets through is mirrored.
///
/// It is shadow only, so the loop (spawned on the current tokio runtime, which this must
/// be called inside) looks as in production but never moves traffic or rolls back, whatever
/// the candidate does; and it leaves out process sampling, which the middleware's figures
/// do not depend on.
pub fn shadowing_rollout(shadow: ShadowConfig) -> Rollout {
    Rollout::builder(Version::new("bench", "1"), Version::new("bench", "2"))
        .shadow(shadow)
        .shadow_only()
        .without_process_sampling()
        .build()
        .expect("a valid default configuration, built inside a tokio runtime")
}

/// A rollout that mirrors nothing: rolled back as soon as it is built, so every request
/// goes to stable and none is copied. This takes the live path's branch for a rollout
/// that is not live, as an idle, never-started rollout did before the builder started
/// every rollout itself. Call it inside a tokio runtime.
pub fn rolled_back_rollout() -> Rollout {
    let rollout = shadowing_rollout(ShadowConfig::new());
    rollout
        .handle()
        .abort("bench: nothing mirrored")
        .expect("a shadowing rollout can be rolled back");
    rollout
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
