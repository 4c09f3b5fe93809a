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
//! adapt it to web frameworks.

#![warn(missing_docs)]

mod duration;
mod evidence;
mod model;
mod rng;
mod rollout;
mod steer;

pub mod adapter;
pub mod analysis;
pub mod compare;
#[cfg(feature = "delta")]
pub mod delta;
pub mod metrics;
pub mod mirror;
pub mod predict;
pub mod shadow;
#[cfg(feature = "simulate")]
pub mod simulate;

#[cfg(feature = "delta")]
pub use delta::StateDelta;
pub use evidence::{
    ArmEvidence, Comparisons, Distribution, DistributionError, Evidence, FieldDifferences, Moments,
    OutcomeCounts, ProcessEvidence, RouteEvidence,
};
pub use metrics::{MetricError, MetricSource};
pub use mirror::{Mirror, ReadClass};
pub use model::{
    Action, Arm, Degradation, Kpi, LivePhase, OTHER_ROUTES, Outcome, Phase, SampleCount, Share,
    ShareError, Version,
};
pub use predict::{
    Bottleneck, Certainty, KpiDegradation, Prediction, Predictor, Resource, SequentialPredictor,
    ThresholdPredictor, ThresholdPredictorConfig,
};
pub use rollout::{
    BuildError, ConfigError, Decision, DecisionSource, Reason, Release, ReleaseSwitch, Releases,
    Rollout, RolloutBuilder, RolloutDriver, RolloutEvent, RolloutHandle, RolloutMachine,
    RolloutPolicy, RolloutStatus, Thresholds, Transition, TransitionError,
};
pub use steer::{TrafficSteerer, WeightedSteerer};
