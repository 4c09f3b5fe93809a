//! # shadowlib
//!
//! Ship a new version of a service safely, from inside the service.
//!
//! The service links its stable build and a candidate build. shadowlib runs the candidate
//! in the same process, first as a *shadow* that receives copies of live reads (never
//! writes), measures both builds side by side, predicts the candidate's risk, then steers a
//! growing share of real traffic to it — or rolls it back atomically the moment the
//! evidence turns. Every step says why, with the metric, the statistic, the threshold and
//! the samples behind it.
//!
//! An axum service with a rollout (the actix-web adapter is the same shape):
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use shadowlib::{Rollout, Version};
//! use shadowlib_tower::ShadowLayer;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let v1 = Router::new().route("/", get(|| async { "v1" }));
//!     let v2 = Router::new().route("/", get(|| async { "v2" }));
//!     let rollout = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2")).build()?;
//!     let app = ShadowLayer::new(v2, &rollout).around(v1);
//!     axum::serve(tokio::net::TcpListener::bind("127.0.0.1:8080").await?, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! # How a rollout goes
//!
//! [`Rollout::builder`] makes a rollout with every part at its default and starts it:
//! `Shadowing`, then one canary step after another of the [`RolloutPolicy`], to `Promoted`;
//! `Paused` and `RolledBack` are reachable from every live phase. Every interval the loop
//! collects the [`Evidence`] from its [`MetricSource`]s, asks the [`Predictor`], tests the
//! responses, and steps up, holds, pauses or rolls back; each change of phase is a
//! [`RolloutEvent`] with its [`Decision`] and reasons. Every hold has a deadline, after
//! which the rollout pauses with its reason. Operators watch and steer through
//! [`Rollout::handle`].
//!
//! # Like for like
//!
//! What an in-process shadow can do that no pod-level canary can: run *the same request*
//! on both builds. Each mirrored read runs, on the shadow's own thread, on a second
//! instance of the stable build (the *twin*) and on the candidate, one after the other in
//! a random order, each timed, its CPU and allocations counted, its response compared with
//! the live one. The shadow phase is judged on these pairs alone
//! ([`ShadowEvidence`]): per-read log ratios of latency and CPU, reads only one build
//! failed, and the fields only the candidate got different from live — net of the noise
//! the twin shows (timestamps, ids). The live path pays for none of it. Once the candidate
//! serves a share of live traffic, the canary is judged on live requests of both builds,
//! compared within each canary step and route ([`CanaryEvidence`]) so that neither a change
//! of load nor of the mix of routes reads as a regression; the shadow goes on watching.
//! A shadow measurement is never compared with a live one, nor reads with writes.
//!
//! # The five seams
//!
//! The builder takes each of them, with a default you can replace:
//!
//! | trait | what it does | default |
//! |---|---|---|
//! | [`Mirror`] | which requests are reads, and what their copy carries | [`mirror::HttpMirror`] |
//! | [`MetricSource`] | yields the KPIs of each build | the adapters' recorder, the process sampler |
//! | [`Predictor`] | turns the evidence into a [`Prediction`] | [`SequentialPredictor`] |
//! | [`TrafficSteerer`] | picks the build of each live request, by share | [`WeightedSteerer`] |
//! | `StateDelta` | keeps a stateful shadow current with deltas (feature `delta`) | none |
//!
//! Adapters for other frameworks are written on [`adapter`] alone.
//!
//! # Two builds in one binary
//!
//! The first question: how does one process hold two versions of the same code? Cargo
//! links two versions of a crate side by side when they are renamed, so keep the request
//! handling in a crate of its own (here `shop`, with a `router()`), and let the binary
//! depend on it twice — the released version, and the working tree:
//!
//! ```toml
//! [dependencies]
//! shop_stable = { package = "shop", git = "https://example.com/shop.git", tag = "v1.4.0" }
//! shop_candidate = { package = "shop", path = "../shop" }
//! ```
//!
//! ```text
//! let rollout = Rollout::builder(
//!     Version::new("shop", shop_stable::VERSION),
//!     Version::new("shop", shop_candidate::VERSION),
//! ).build()?;
//! let app = ShadowLayer::new(shop_candidate::router(), &rollout).around(shop_stable::router());
//! ```
//!
//! A registry version (`shop_stable = { package = "shop", version = "=1.4.0" }`) does as
//! well. When the candidate is the same code with another configuration (a new pool size,
//! a feature flag), there is no second crate: build both from one crate and keep the two
//! configurations in [`Releases`], the rollout's
//! [release switch](RolloutBuilder::release_switch), which switches code and configuration
//! together on promotion or rollback. `examples/two-builds` in the repository shows both.
//!
//! # Where things are
//!
//! * [`shadow`]: what the shadow copies, compares and may spend ([`shadow::ShadowConfig`],
//!   [`shadow::ShadowBudget`]); [`shadow::in_shadow`] for application code.
//! * [`mirror`]: read rules, header policies, sticky keys and the override header.
//! * [`predict`], [`analysis`], [`compare`]: the predictors, the always-valid tests they
//!   rest on, and field-by-field response comparison.
//! * [`metrics`]: KPI sources, the recorder, CPU and allocation attribution.
//! * [`adapter`]: what an adapter author needs.
//! * [`admin`]: the authenticated admin API the adapters mount; [`redact`]: what counts as
//!   a credential, kept out of every output.
//!
//! # Features
//!
//! * `learned`: `predict::LearnedPredictor`, a model trained on past rollouts (linfa).
//! * `delta`: the delta bus for stateful services (`delta`), and
//!   `RolloutBuilder::state_delta`.
//! * `simulate`: the rollout simulator (`simulate`), which needs `learned`.
//! * `count-allocations`: `metrics::CountingAllocator`, to attribute allocations to
//!   requests.
//! * `persist`: `RolloutBuilder::persist`, a rollout's state and events kept in a store
//!   (`store`, on redb) so that a restart comes back paused with its history.

#![warn(missing_docs)]

mod duration;
mod evidence;
mod model;
mod rng;
mod rollout;
mod steer;

pub mod adapter;
pub use rollout::admin;
pub mod analysis;
pub mod compare;
#[cfg(feature = "delta")]
pub mod delta;
pub mod metrics;
pub mod mirror;
pub mod predict;
pub use mirror::redact;
pub mod shadow;
#[cfg(feature = "simulate")]
pub mod simulate;
#[cfg(feature = "persist")]
pub use rollout::store;

#[cfg(feature = "delta")]
pub use delta::StateDelta;
pub use evidence::{
    ArmEvidence, CanaryEvidence, CanaryStep, CustomKpi, Distribution, DistributionError, Evidence,
    FieldDifferences, LATENCY_FLOOR, Moments, OutcomeCounts, PairStats, PairedEvidence,
    PairedMismatches, PairedOutcomes, ProcessEvidence, RouteEvidence, ShadowEvidence, Stage,
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
    ASSUMED_PAIR_SPREAD, BuildError, Command, ConfigError, Decision, DecisionSource,
    MismatchPolicy, PlanItem, Reason, Release, ReleaseSwitch, Releases, Rollout, RolloutBuilder,
    RolloutDriver, RolloutEvent, RolloutHandle, RolloutPlan, RolloutPolicy, RolloutStatus,
    Transition, TransitionError, UnknownCommand,
};
pub use steer::{TrafficSteerer, WeightedSteerer};
