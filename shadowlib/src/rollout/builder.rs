//! The one entry point: a rollout built whole, with the loop that drives it.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use super::controller::Controller;
use super::decision::Decision;
use super::handle::RolloutHandle;
use super::plan::RolloutPlan;
use super::policy::{ConfigError, RolloutPolicy};
use super::release::ReleaseSwitch;
use super::state::{RolloutStatus, Shared};
use crate::evidence::Evidence;
use crate::metrics::{
    KpiRecorder, MetricSource, PairRecorder, ProcessSampler, RecorderConfig, RecorderConfigError,
};
use crate::mirror::redact::{RedactedComparator, Redaction};
use crate::mirror::{
    ArmOverride, HttpMirror, HttpMirrorRef, Mirror, OverrideCounts, PathPattern, RequestCopy,
    RequestHead, RouteLabels,
};
use crate::model::{Arm, Phase, Version};
use crate::predict::{Predictor, SequentialPredictor};
use crate::shadow::{
    BudgetError, Placement, Recorders, ShadowConfig, ShadowCounts, ShadowRuntime, StateLink,
};
use crate::steer::{TrafficSteerer, WeightedSteerer};

/// A rollout that cannot be built, naming what is wrong.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The rollout policy is invalid.
    #[error(transparent)]
    Policy(#[from] ConfigError),
    /// The shadow's budget is invalid.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// The KPI recorder's configuration is invalid.
    #[error(transparent)]
    Recorder(#[from] RecorderConfigError),
    /// The rollout's store cannot be used (feature `persist`; a damaged one is set aside
    /// and replaced instead, see [`store`](crate::store)).
    #[cfg(feature = "persist")]
    #[error(transparent)]
    Store(#[from] crate::rollout::store::StoreError),
    /// [`RolloutBuilder::build`] was called outside a tokio runtime, so the loop that
    /// drives the rollout has nowhere to run. Call it inside one, or use
    /// [`RolloutBuilder::build_driven`] and run the driver yourself.
    #[error(
        "no tokio runtime to drive the rollout on: call build() inside one, or use build_driven()"
    )]
    NoRuntime,
}

/// Builds a [`Rollout`]: every part has a default, and [`build`](Self::build) wires them
/// together, so a rollout cannot be half wired. See [`Rollout::builder`].
///
/// The parts are the five seams of the library, each with a default to replace:
///
/// | part | default |
/// |---|---|
/// | [`Predictor`] | [`SequentialPredictor`]: always-valid sequential tests |
/// | [`TrafficSteerer`] | [`WeightedSteerer`]: share by sticky key hash |
/// | [`Mirror`] | [`HttpMirror`]: `GET`, `HEAD`, `OPTIONS` are reads |
/// | [`MetricSource`]s | the KPI recorder the adapters feed, and the process sampler |
/// | `StateDelta` (feature `delta`, through `state_delta`) | none (a stateless service) |
#[must_use = "a builder does nothing until it is built"]
pub struct RolloutBuilder {
    stable: Version,
    candidate: Version,
    policy: RolloutPolicy,
    predictor: Box<dyn Predictor>,
    steerer: Arc<dyn TrafficSteerer>,
    sources: Vec<Arc<dyn MetricSource>>,
    release_switch: Option<Arc<dyn ReleaseSwitch>>,
    mirror: HttpMirrorRef,
    shadow: ShadowConfig,
    recorder: RecorderConfig,
    route_patterns: Vec<PathPattern>,
    process_sampling: bool,
    shadow_only: bool,
    state: Option<Arc<dyn StateLink>>,
    arm_override: Option<ArmOverride>,
    redaction: Redaction,
    #[cfg(feature = "persist")]
    store_path: Option<std::path::PathBuf>,
}

impl fmt::Debug for RolloutBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RolloutBuilder")
            .field("stable", &self.stable)
            .field("candidate", &self.candidate)
            .field("policy", &self.policy)
            .field("predictor", &self.predictor.name())
            .field("shadow", &self.shadow)
            .field("shadow_only", &self.shadow_only)
            .finish_non_exhaustive()
    }
}

impl RolloutBuilder {
    fn new(stable: Version, candidate: Version) -> Self {
        Self {
            stable,
            candidate,
            policy: RolloutPolicy::default(),
            predictor: Box::new(SequentialPredictor::default()),
            steerer: Arc::new(WeightedSteerer::new()),
            sources: Vec::new(),
            release_switch: None,
            mirror: Arc::new(HttpMirror::new()),
            shadow: ShadowConfig::new(),
            recorder: RecorderConfig::default(),
            route_patterns: Vec::new(),
            process_sampling: true,
            shadow_only: false,
            state: None,
            arm_override: None,
            redaction: Redaction::new(),
            #[cfg(feature = "persist")]
            store_path: None,
        }
    }

    /// How the rollout proceeds: steps, interval, samples, deadlines, the mismatch test (validated by
    /// [`build`](Self::build)).
    pub fn policy(mut self, policy: RolloutPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// What judges the evidence at every look.
    pub fn predictor(mut self, predictor: impl Predictor + 'static) -> Self {
        self.predictor = Box::new(predictor);
        self
    }

    /// What picks the build for each live request. The rollout sets its share; keep an
    /// `Arc` of it to read the share in force.
    pub fn steerer(mut self, steerer: impl TrafficSteerer + 'static) -> Self {
        self.steerer = Arc::new(steerer);
        self
    }

    /// A further source of KPIs, merged into the evidence of every look (for example a
    /// database's query counts per build). Add as many as needed.
    pub fn metric_source(mut self, source: impl MetricSource + 'static) -> Self {
        self.sources.push(Arc::new(source));
        self
    }

    /// Which requests are reads, and what their copy carries (see [`Mirror`]).
    pub fn mirror<M>(mut self, mirror: M) -> Self
    where
        M: for<'a> Mirror<RequestHead<'a>, Copy = RequestCopy> + 'static,
    {
        self.mirror = Arc::new(mirror);
        self
    }

    /// How live requests are routed, and how the shadow copies, compares and spends.
    pub fn shadow(mut self, config: ShadowConfig) -> Self {
        self.shadow = config;
        self
    }

    /// How the KPIs are kept (histogram ranges, the cap on distinct routes).
    pub fn recorder(mut self, config: RecorderConfig) -> Self {
        self.recorder = config;
        self
    }

    /// Path patterns that route labels follow (`/users/{id}`, labelled `GET /users/{id}`,
    /// rather than one label per user). A path no pattern matches is labelled by itself,
    /// within the cap on distinct routes ([`RecorderConfig::max_routes`]).
    pub fn route_patterns(mut self, patterns: impl IntoIterator<Item = PathPattern>) -> Self {
        self.route_patterns = patterns.into_iter().collect();
        self
    }

    /// What is switched, with the code, when the rollout ends: the configuration that goes
    /// with each build (see [`Releases`](crate::Releases)).
    pub fn release_switch(mut self, switch: impl ReleaseSwitch + 'static) -> Self {
        self.release_switch = Some(Arc::new(switch));
        self
    }

    /// Leaves out the process's CPU, memory and I/O from the evidence (sampled once per
    /// look by default, where the platform tells them).
    pub fn without_process_sampling(mut self) -> Self {
        self.process_sampling = false;
        self
    }

    /// The state of a stateful service, kept current in the shadow by deltas from live
    /// (see [`delta`](crate::delta)): a mirrored read is then compared only when the
    /// shadow served it from exactly the state live served it from (within `bound`), and
    /// the shadow's lag joins the evidence.
    ///
    /// In the shadow both builds run each copy — the candidate and the stable twin — so
    /// both must read the shadow's state there: read [`ShadowState`](crate::delta::ShadowState)
    /// when [`in_shadow`](crate::shadow::in_shadow) is true, in the stable build's code too
    /// (it publishes the deltas, so it knows the shadow already).
    #[cfg(feature = "delta")]
    pub fn state_delta<S, T>(
        mut self,
        live: &crate::delta::LiveState<S, T>,
        shadow: &crate::delta::ShadowState<S>,
        bound: crate::delta::StalenessBound,
    ) -> Self
    where
        S: crate::delta::StateDelta + 'static,
        T: crate::delta::Transport,
    {
        self.sources.push(Arc::new(shadow.clone()));
        self.state = Some(Arc::new(crate::delta::DeltaLink::new(live, shadow, bound)));
        self
    }

    /// The header that lets testers pin a live request to one build: only values signed
    /// with your secret for this rollout's builds are honoured, and never a write while
    /// the candidate only shadows (see [`ArmOverride`]). None by default. What it ignored
    /// and refused is in [`Rollout::override_counts`].
    ///
    /// ```
    /// use shadowlib::{Rollout, Version};
    /// use shadowlib::mirror::ArmOverride;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let secret = std::env::var("SHADOWLIB_OVERRIDE_SECRET")
    ///     .unwrap_or_else(|_| "a secret of at least sixteen bytes".into());
    /// let rollout = Rollout::builder(Version::new("api", "1"), Version::new("api", "2"))
    ///     .override_header(ArmOverride::signed("x-shadowlib-arm", secret)?)
    ///     .build()?;
    /// assert_eq!(rollout.override_counts().unsigned, 0);
    /// # Ok(()) }
    /// ```
    pub fn override_header(mut self, header: ArmOverride) -> Self {
        self.arm_override = Some(header);
        self
    }

    /// What counts as a credential beyond the headers that always do (see
    /// [`redact`](crate::redact)): the names of differing fields are cut at its JSON
    /// fields before they are recorded, and the admin API's answers pass through it.
    ///
    /// ```
    /// use shadowlib::{Rollout, Version};
    /// use shadowlib::redact::Redaction;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rollout = Rollout::builder(Version::new("api", "1"), Version::new("api", "2"))
    ///     .redaction(Redaction::new().header("x-api-key")?.json_field("password"))
    ///     .build()?;
    /// assert!(rollout.redaction().is_sensitive_header("x-api-key", false));
    /// # Ok(()) }
    /// ```
    pub fn redaction(mut self, redaction: Redaction) -> Self {
        self.redaction = redaction;
        self
    }

    /// Keeps the rollout's state and every event in a store at `path` (a file, created
    /// with the rollout; its directory must exist), so that a process restarted in the
    /// middle of a rollout comes back on stable, at share 0, paused, with the reason
    /// "restarted during `<phase>` at share `<x>`" and its earlier events — never resuming by
    /// itself. A torn or damaged store is set aside and reported, never a panic: see
    /// [`store`](crate::store) and [`Rollout::recovery`]. Feature `persist`.
    ///
    /// ```
    /// use shadowlib::{LivePhase, Phase, Rollout, Version};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = std::env::temp_dir().join(format!("shadowlib-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("rollout.redb");
    /// # let _ = std::fs::remove_file(&path);
    /// let builds = || (Version::new("api", "1"), Version::new("api", "2"));
    /// {
    ///     let (rollout, _driver) = Rollout::builder(builds().0, builds().1).persist(&path).build_driven()?;
    ///     rollout.handle().step_up("by hand")?;
    /// } // the process "stops" here: the rollout and its driver are gone, the store is closed
    /// let (again, _driver) = Rollout::builder(builds().0, builds().1).persist(&path).build_driven()?;
    /// assert_eq!(again.phase(), Phase::Paused { from: LivePhase::Shadowing });
    /// assert_eq!(again.status().share.percent(), 0.0);
    /// let history = again.handle().history();
    /// assert_eq!(history.len(), 3, "started, stepped up, restarted");
    /// assert!(history[2].decision.to_string().contains("restarted during canary step 1 at share 1%"));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "persist")]
    pub fn persist(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.store_path = Some(path.into());
        self
    }

    /// Compares the builds without rolling anything out, the way GitHub Scientist or
    /// Diffy are used: every read is mirrored and judged, the status and events say what
    /// the evidence shows, and no live request ever goes to the candidate.
    pub fn shadow_only(mut self) -> Self {
        self.shadow_only = true;
        self
    }

    /// Builds the rollout, starts it (it shadows from now on) and spawns the loop that
    /// drives it onto the current tokio runtime. The loop ends when the rollout is
    /// promoted or rolled back.
    pub fn build(self) -> Result<Rollout, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let (rollout, driver) = self.build_driven()?;
        runtime.spawn(driver.run());
        Ok(rollout)
    }

    /// Builds the rollout and starts it, and returns the driver for you to run: for a
    /// runtime of your choosing, or for tests that take one look at a time.
    pub fn build_driven(self) -> Result<(Rollout, RolloutDriver), BuildError> {
        let (rollout, driver, _) = self.build_placed(Placement::OwnThread)?;
        Ok((rollout, driver))
    }

    /// As [`build_driven`](Self::build_driven), with the shadow's worker handed back for
    /// the test to run where it likes (on paused time, on its `LocalSet`).
    #[cfg(test)]
    pub(crate) fn build_with_worker(
        self,
    ) -> Result<(Rollout, RolloutDriver, crate::shadow::Worker), BuildError> {
        let (rollout, driver, worker) = self.build_placed(Placement::Manual)?;
        let worker = worker.ok_or(BuildError::NoRuntime)?;
        Ok((rollout, driver, worker))
    }

    fn build_placed(
        self,
        placement: Placement,
    ) -> Result<(Rollout, RolloutDriver, Option<crate::shadow::Worker>), BuildError> {
        self.policy.validate()?;
        self.recorder.validate()?;
        let recorder = Arc::new(KpiRecorder::with_config(
            self.stable.clone(),
            self.candidate.clone(),
            &self.recorder,
        )?);
        let pairs = Arc::new(PairRecorder::default());
        let mut sources: Vec<Arc<dyn MetricSource>> =
            vec![Arc::clone(&recorder) as _, Arc::clone(&pairs) as _];
        if self.process_sampling {
            sources.push(Arc::new(ProcessSampler::new()));
        }
        sources.extend(self.sources);
        #[cfg_attr(not(feature = "persist"), expect(unused_mut))]
        let mut shared = Shared::new(
            self.stable.clone(),
            self.candidate.clone(),
            self.policy,
            Arc::clone(&self.steerer),
            self.release_switch,
            sources,
        );
        #[cfg(feature = "persist")]
        let found = match &self.store_path {
            Some(path) => {
                let (store, found) =
                    crate::rollout::store::Store::open(path, &self.stable, &self.candidate)?;
                shared.store = Some(store);
                Some(found)
            }
            None => None,
        };
        let shared = Arc::new(shared);
        let mut shadow_config = self.shadow;
        shadow_config.arm_override = self
            .arm_override
            .map(|header| header.for_builds(&self.stable, &self.candidate));
        shadow_config.redaction = self.redaction.clone();
        if !self.redaction.json_fields().is_empty() {
            shadow_config.comparator = Arc::new(RedactedComparator {
                inner: shadow_config.comparator,
                redaction: self.redaction.clone(),
            });
        }
        let handle = RolloutHandle {
            shared: Arc::clone(&shared),
        };
        let labels = RouteLabels::new(self.route_patterns, Arc::clone(recorder.routes()));
        let (shadow, worker) = ShadowRuntime::new(
            shadow_config,
            self.mirror,
            self.steerer,
            Arc::new(handle.clone()),
            Recorders {
                live: Arc::clone(&recorder),
                pairs: Arc::clone(&pairs),
            },
            labels,
            self.state,
            placement,
        )?;
        let plan = RolloutPlan::new(
            &shared.policy,
            &crate::analysis::SequentialConfig::default(),
            self.predictor.alpha(),
        );
        tracing::info!(%plan, "rollout of {} against {}", self.candidate, self.stable);
        let controller = Controller::new(self.predictor, shared, self.shadow_only);
        #[cfg(feature = "persist")]
        let recovery = match (found, &self.store_path) {
            (Some(found), Some(path)) => Some(handle.take_over(found, path)),
            _ => {
                // Only an idle rollout can be started, and this one was just made.
                let _ = handle.start();
                None
            }
        };
        #[cfg(not(feature = "persist"))]
        // Only an idle rollout can be started, and this one was just made.
        let _ = handle.start();
        let rollout = Rollout {
            inner: Arc::new(Inner {
                handle,
                shadow,
                recorder,
                pairs,
                plan,
                redaction: self.redaction,
                #[cfg(feature = "persist")]
                recovery,
            }),
        };
        Ok((rollout, RolloutDriver { controller }, worker))
    }
}

/// The loop that drives a rollout: every interval it collects the evidence, asks the
/// predictor, and steps up, holds, pauses or rolls back. [`RolloutBuilder::build`] runs it
/// for you; [`RolloutBuilder::build_driven`] hands it to you.
pub struct RolloutDriver {
    controller: Controller,
}

impl fmt::Debug for RolloutDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RolloutDriver").finish_non_exhaustive()
    }
}

impl RolloutDriver {
    /// Looks once per interval until the rollout is promoted or rolled back (by the
    /// evidence or by an operator), and returns the final status.
    pub async fn run(self) -> RolloutStatus {
        self.controller.run().await
    }

    /// Takes one look now: collects the evidence, decides, and applies the decision.
    /// Returns the decision (a hold when the rollout is not live).
    pub async fn look(&mut self) -> Decision {
        self.controller.look().await
    }
}

/// A rollout of a candidate build beside the stable one: built once with
/// [`Rollout::builder`], then handed to an adapter (`shadowlib_tower::ShadowLayer::new`,
/// `shadowlib_actix::Shadow::new`) and watched or steered through its
/// [`handle`](Self::handle). Cheap to clone; every clone is the same rollout.
///
/// ```
/// use shadowlib::{Phase, Rollout, RolloutPolicy, Version};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rollout = Rollout::builder(Version::new("shop", "1.41.0"), Version::new("shop", "1.42.0"))
///     .policy(RolloutPolicy::from_toml(r#"
///         interval = "10s"
///         steps = [1, 5, 25, 50, 100]
///     "#)?)
///     .build()?;
/// assert_eq!(rollout.status().phase, Phase::Shadowing);
/// // Hand `&rollout` to the adapter; operators use `rollout.handle()`.
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Rollout {
    inner: Arc<Inner>,
}

struct Inner {
    handle: RolloutHandle,
    shadow: ShadowRuntime,
    recorder: Arc<KpiRecorder>,
    pairs: Arc<PairRecorder>,
    plan: RolloutPlan,
    redaction: Redaction,
    #[cfg(feature = "persist")]
    recovery: Option<crate::rollout::store::Recovery>,
}

impl fmt::Debug for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rollout")
            .field("handle", &self.inner.handle)
            .finish_non_exhaustive()
    }
}

impl Rollout {
    /// A builder for a rollout of `candidate` beside `stable`, with every part at its
    /// default (see [`RolloutBuilder`]).
    pub fn builder(stable: Version, candidate: Version) -> RolloutBuilder {
        RolloutBuilder::new(stable, candidate)
    }

    /// The operator's handle: status, events, pause, resume, promote, abort.
    pub fn handle(&self) -> RolloutHandle {
        self.inner.handle.clone()
    }

    /// Where the rollout is now.
    pub fn status(&self) -> RolloutStatus {
        self.inner.handle.status()
    }

    /// The phase now: one atomic load, for code that asks on every request.
    pub fn phase(&self) -> Phase {
        self.inner.handle.phase()
    }

    /// What the rollout can tell, and how soon, worked out when it was built (and logged
    /// then): see [`RolloutPlan`].
    pub fn plan(&self) -> &RolloutPlan {
        &self.inner.plan
    }

    /// What counts as a credential in this rollout's outputs
    /// ([`RolloutBuilder::redaction`]).
    pub fn redaction(&self) -> &Redaction {
        &self.inner.redaction
    }

    /// What the override header ignored and refused (all zero without one): see
    /// [`ArmOverride`]. Requests it pinned are [`ShadowCounts::overridden`].
    pub fn override_counts(&self) -> OverrideCounts {
        self.inner
            .shadow
            .shared()
            .config
            .arm_override
            .as_ref()
            .map(ArmOverride::counts)
            .unwrap_or_default()
    }

    /// What the rollout found in its store when it was built, when it has one
    /// ([`RolloutBuilder::persist`]): where it restarted from, how many events it read
    /// back, and what was set aside.
    #[cfg(feature = "persist")]
    pub fn recovery(&self) -> Option<&crate::rollout::store::Recovery> {
        self.inner.recovery.as_ref()
    }

    /// Writes to the rollout's store that failed (each is logged; the rollout goes on in
    /// memory). Zero without a store.
    #[cfg(feature = "persist")]
    pub fn store_failures(&self) -> u64 {
        self.inner
            .handle
            .shared
            .store
            .as_ref()
            .map_or(0, crate::rollout::store::Store::failed_writes)
    }

    /// What happened to every read the shadow could have seen.
    pub fn shadow_counts(&self) -> ShadowCounts {
        self.inner.shadow.counts()
    }

    /// What the rollout has recorded of both builds so far — the shadow's pairs and the
    /// canary's live requests — as the controller's next look will see it (before the
    /// process sampler and your own metric sources add theirs).
    pub fn evidence(&self) -> Evidence {
        let recorder = &self.inner.recorder;
        let mut evidence = Evidence::new(
            recorder.version(Arm::Stable).clone(),
            recorder.version(Arm::Candidate).clone(),
        );
        let status = self.status();
        evidence.phase = status.phase;
        evidence.share = status.share;
        evidence.look = status.looks;
        evidence.shadow = self.inner.pairs.snapshot();
        evidence.canary = recorder.canary();
        evidence.live_requests = recorder.live_requests();
        evidence
    }

    /// Records a value of a KPI of your own for a request served by `arm` (cache hits,
    /// queries per request), kept beside the built-in KPIs in the evidence.
    pub fn record_custom(&self, arm: Arm, name: &str, value: f64) {
        self.inner.recorder.record_custom(arm, name, value);
    }

    /// The recorder the adapters feed (for the simulator and tests, which play their part).
    #[cfg(any(test, feature = "simulate"))]
    pub(crate) fn recorder(&self) -> &Arc<KpiRecorder> {
        &self.inner.recorder
    }

    /// The recorder of the shadow's pairs (for the simulator and tests, which play their
    /// part).
    #[cfg(any(test, feature = "simulate"))]
    pub(crate) fn pairs(&self) -> &Arc<PairRecorder> {
        &self.inner.pairs
    }

    pub(crate) fn shadow_runtime(&self) -> &ShadowRuntime {
        &self.inner.shadow
    }

    pub(crate) fn candidate_cannot_start(&self, why: &str) {
        crate::shadow::RolloutLink::candidate_cannot_start(&self.inner.handle, why);
    }
}
