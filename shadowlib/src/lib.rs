//! # shadowlib
//!
//! Ship a new version of a service safely, from inside the service.
//!
//! The service links its stable build and a candidate build. shadowlib runs the candidate
//! in the same process, first as a *shadow* that receives copies of live reads (never
//! writes), measures both builds side by side, predicts the candidate's risk, then steers a
//! growing share of real traffic to it — or rolls it back atomically the moment the
//! evidence turns.
//!
//! This crate is the core and holds no HTTP types; `shadowlib-tower` and `shadowlib-actix`
//! adapt it to web frameworks. The pieces:
//!
//! * [`Mirror`] decides which requests may reach the shadow (deny by default).
//! * [`StateDelta`] keeps a stateful shadow current with deltas from live.
//! * [`MetricSource`] yields KPIs per build; [`KpiRecorder`] records them per request.
//! * [`Predictor`] turns the [`Evidence`] into a [`Prediction`].
//! * [`TrafficSteerer`] picks the build for each live request by [`Share`].
//! * [`RolloutController`] runs the loop over the [`RolloutMachine`]:
//!   collect, predict, then step up, hold or roll back — every [`Decision`] with its reasons.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use shadowlib::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (stable, candidate) = (Version::new("shop", "41"), Version::new("shop", "42"));
//! let recorder = Arc::new(KpiRecorder::new(stable.clone(), candidate.clone()));
//! let steerer = Arc::new(WeightedSteerer::new());
//! let policy = RolloutPolicy::from_toml(r#"
//!     interval = "1s"
//!     steps = [5, 50, 100]
//!     min_samples = 50
//!     min_samples_per_step = 10
//! "#)?;
//! let controller = RolloutController::new(stable, candidate, policy, ThresholdPredictor::default(), steerer.clone())?
//!     .with_metric_source(recorder.clone());
//! let handle = controller.handle();
//! let rollout = tokio::spawn(controller.run());
//!
//! // In a real service the adapters do this for every request.
//! while !handle.status().phase.is_terminal() {
//!     for _ in 0..20 {
//!         let arm = steerer.pick(None);
//!         recorder.record(arm, Outcome::Success, Duration::from_micros(900), 0, 0);
//!         if arm == Arm::Stable {
//!             // a mirrored read, served by the shadow
//!             recorder.record(Arm::Candidate, Outcome::Success, Duration::from_micros(900), 0, 0);
//!         }
//!     }
//!     tokio::time::sleep(Duration::from_millis(100)).await;
//! }
//! assert_eq!(rollout.await?.phase, Phase::Promoted);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod config;
mod decision;
mod error;
mod evidence;
mod version;

pub mod analysis;
pub mod budget;
pub mod delta;
pub mod metrics;
pub mod mirror;
pub mod predict;
pub mod rollout;
#[cfg(feature = "simulate")]
pub mod simulate;
pub mod steer;

pub use config::{ConfigError, RolloutPolicy, Thresholds};
pub use decision::{Action, Decision, DecisionSource, Reason, SampleCount};
pub use delta::StateDelta;
pub use error::ShareError;
pub use evidence::{
    ArmEvidence, Comparisons, Distribution, DistributionError, Evidence, Moments, Outcome,
    OutcomeCounts,
};
pub use evidence::{FieldDifferences, ProcessEvidence, RouteEvidence};
pub use metrics::{KpiRecorder, MetricError, MetricSource};
pub use mirror::{Mirror, ReadClass};
pub use predict::SequentialPredictor;
pub use predict::{
    Bottleneck, Certainty, Degradation, Kpi, KpiDegradation, Prediction, Predictor, Resource,
    ThresholdPredictor, ThresholdPredictorConfig,
};
pub use rollout::{
    LivePhase, Phase, Release, ReleaseSwitch, Releases, RolloutController, RolloutEvent,
    RolloutHandle, RolloutMachine, RolloutStatus, Transition, TransitionError,
};
pub use steer::{TrafficSteerer, WeightedSteerer};
pub use version::{Arm, Share, Version};
