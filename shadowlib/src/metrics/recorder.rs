//! Records each request's KPIs per build, sharded so that threads do not contend.
//!
//! Each thread records into one of several shards (chosen once per thread), under a lock
//! that only the few threads mapped to that shard ever take: recording never waits on a
//! global lock. Readers fold the shards into the running totals. Histograms start small
//! and grow with the
//! values they see, so idle shards and routes cost little memory.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::labels::LabelSet;
use super::{MetricError, MetricSource, ResourceUsage};
use crate::evidence::{
    ArmEvidence, CanaryEvidence, Distribution, DistributionError, Evidence, Moments, OutcomeCounts,
    RouteEvidence,
};
use crate::model::{Arm, OTHER_ROUTES, Outcome, Phase, Share, Version};

/// How a [`KpiRecorder`] keeps its statistics.
///
/// ```
/// use shadowlib::metrics::RecorderConfig;
///
/// let config: RecorderConfig = toml::from_str(r#"
///     latency_highest = "10s"
///     max_routes = 16
/// "#)?;
/// assert_eq!(config.latency_significant_figures, 3);
/// config.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderConfig {
    /// The shortest latency told apart from zero (at least 1 µs; latency is kept in µs).
    #[serde(with = "crate::duration")]
    pub latency_lowest: Duration,
    /// The longest latency kept as it is; longer ones count as this.
    #[serde(with = "crate::duration")]
    pub latency_highest: Duration,
    /// Significant decimal digits of the latency histograms (1–5).
    pub latency_significant_figures: u8,
    /// Significant digits of the per-route latency histograms (1–5); fewer than the
    /// overall ones by default, as there are many routes.
    pub route_latency_significant_figures: u8,
    /// The most distinct route labels kept; later routes share [`OTHER_ROUTES`].
    pub max_routes: usize,
    /// The most distinct custom KPI names kept; values of later names are dropped.
    pub max_custom_kpis: usize,
    /// How many shards to record into (rounded up to a power of two); by default twice the
    /// available parallelism, at most 64.
    pub shards: Option<NonZeroUsize>,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            latency_lowest: Duration::from_micros(1),
            latency_highest: Duration::from_secs(60),
            latency_significant_figures: 3,
            route_latency_significant_figures: 2,
            max_routes: 64,
            max_custom_kpis: 64,
            shards: None,
        }
    }
}

/// A [`RecorderConfig`] that does not describe a usable recorder.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RecorderConfigError {
    /// The latency range or precision is not a valid histogram.
    #[error("latency histogram: {0}")]
    Latency(DistributionError),
    /// The per-route latency precision is not a valid histogram.
    #[error("route latency histogram: {0}")]
    RouteLatency(DistributionError),
    /// More shards than the recorder supports.
    #[error("{requested} shards requested; at most {max} are supported")]
    TooManyShards {
        /// What the configuration asked for.
        requested: usize,
        /// The most supported.
        max: usize,
    },
}

const MAX_SHARDS: usize = 1024;

impl RecorderConfig {
    /// Checks that the configuration describes a usable recorder.
    pub fn validate(&self) -> Result<(), RecorderConfigError> {
        Bounds::new(self).map(|_| ())
    }

    fn latency_range_us(&self) -> (u64, u64) {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        (micros(self.latency_lowest), micros(self.latency_highest))
    }
}

/// One request's measurements, for [`KpiRecorder::record_request`].
///
/// ```
/// use std::time::Duration;
/// use shadowlib::metrics::RequestRecord;
/// use shadowlib::{Arm, Outcome};
///
/// let record = RequestRecord::new(Arm::Stable, Outcome::Success, Duration::from_millis(3))
///     .route("GET /users/{id}")
///     .bytes(0, 2_048);
/// assert_eq!(record.response_bytes, 2_048);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestRecord<'a> {
    /// The build that served the request.
    pub arm: Arm,
    /// How the request ended.
    pub outcome: Outcome,
    /// How long it took.
    pub latency: Duration,
    /// Bytes of the request body.
    pub request_bytes: u64,
    /// Bytes of the response body.
    pub response_bytes: u64,
    /// The route label (a path template or handler name, never a raw path with ids in it).
    pub route: Option<&'a str>,
    /// CPU and allocations spent, from a [`Measured`](super::Measured) future.
    pub usage: Option<ResourceUsage>,
}

impl<'a> RequestRecord<'a> {
    /// A request of `arm` that ended with `outcome` after `latency`.
    pub fn new(arm: Arm, outcome: Outcome, latency: Duration) -> Self {
        Self {
            arm,
            outcome,
            latency,
            request_bytes: 0,
            response_bytes: 0,
            route: None,
            usage: None,
        }
    }

    /// Sets the request and response body sizes.
    pub fn bytes(mut self, request_bytes: u64, response_bytes: u64) -> Self {
        self.request_bytes = request_bytes;
        self.response_bytes = response_bytes;
        self
    }

    /// Sets the route label.
    pub fn route(mut self, route: &'a str) -> Self {
        self.route = Some(route);
        self
    }

    /// Sets the resources the request used.
    pub fn usage(mut self, usage: ResourceUsage) -> Self {
        self.usage = Some(usage);
        self
    }
}

/// Records the latency, outcome, bytes, CPU and allocations of every live request of both
/// builds, per canary step and route, and serves them to the controller as a
/// [`MetricSource`] (cumulative, as the trait asks).
///
/// Every rollout has one, fed by the adapters. It follows the rollout's phase (as every
/// source is told of it, [`MetricSource::phase_changed`]): while the candidate has no
/// share of live traffic, live requests are only counted; at each canary step they are
/// kept apart from those of other steps, so that tests compare the builds at one share
/// at a time (see [`CanaryEvidence`]). A recorder that follows no rollout keeps one
/// stratum, step 0.
///
/// A service that is not HTTP, or that measures more of its own, can keep one and add it
/// to the rollout with [`RolloutBuilder::metric_source`](crate::RolloutBuilder::metric_source).
///
/// Recording is safe from any thread and takes no global lock: see the module docs.
///
/// ```
/// use std::time::Duration;
/// use shadowlib::metrics::RequestRecord;
/// use shadowlib::metrics::KpiRecorder;
/// use shadowlib::{Arm, Outcome, Version};
///
/// let recorder = KpiRecorder::new(Version::new("api", "1"), Version::new("api", "2"));
/// recorder.record(Arm::Candidate, Outcome::Success, Duration::from_micros(850), 0, 512);
/// recorder.record_request(
///     RequestRecord::new(Arm::Candidate, Outcome::ServerError, Duration::from_millis(2))
///         .route("GET /users/{id}"),
/// );
/// recorder.record_custom(Arm::Candidate, "db_queries", 3.0);
///
/// let candidate = recorder.snapshot(Arm::Candidate);
/// assert_eq!(candidate.requests(), 2);
/// assert_eq!(candidate.routes["GET /users/{id}"].outcomes.server_error, 1);
/// assert_eq!(recorder.live_requests(), 2);
/// ```
pub struct KpiRecorder {
    versions: [Version; 2],
    /// The canary step live requests are recorded under now, or [`NO_STEP`] while the
    /// candidate has no share of live traffic. Written only when the phase changes.
    step: CachePadded<AtomicUsize>,
    /// The candidate's share at each step seen, by step.
    shares: Mutex<Vec<Share>>,
    /// Shared by every recorder with the default configuration: building it allocates the
    /// full-range histograms evidence is made of, which is most of a recorder's set-up cost.
    bounds: Arc<Bounds>,
    shards: Box<[Shard]>,
    routes: Arc<LabelSet>,
    custom: LabelSet,
    custom_overflow_warned: AtomicBool,
    folded: Mutex<ShardStats>,
}

impl std::fmt::Debug for KpiRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The histograms are thousands of counters each: show the shape, not the contents.
        f.debug_struct("KpiRecorder")
            .field("stable", &self.versions[0])
            .field("candidate", &self.versions[1])
            .field("shards", &self.shards.len())
            .field("routes", &self.routes.names())
            .field("step", &self.step.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// No canary step: the candidate serves no live traffic.
const NO_STEP: usize = usize::MAX;

/// Recording state for both arms, indexed by [`arm_index`].
type ArmsStats = [Stats; 2];

/// What one shard (or the folded total) holds.
#[derive(Debug, Default)]
struct ShardStats {
    /// Live requests recorded, in a canary step or not.
    live_requests: u64,
    /// Of those, the ones recorded with their latency (every one but mirrored reads),
    /// and the sum of those latencies: what the shadow's governor reads live's load from.
    live_timed: u64,
    live_busy_ns: u64,
    /// By canary step.
    steps: Vec<ArmsStats>,
    /// Custom KPIs by arm, then by name index.
    custom: [Vec<Moments>; 2],
}

impl ShardStats {
    fn step(&mut self, step: usize) -> &mut ArmsStats {
        if self.steps.len() <= step {
            self.steps.resize_with(step + 1, ArmsStats::default);
        }
        &mut self.steps[step]
    }

    /// Moves everything in `other` into this, leaving `other` empty (allocations kept).
    fn absorb(&mut self, bounds: &Bounds, other: &mut ShardStats) {
        self.live_requests += std::mem::take(&mut other.live_requests);
        self.live_timed += std::mem::take(&mut other.live_timed);
        self.live_busy_ns += std::mem::take(&mut other.live_busy_ns);
        for (step, arms) in other.steps.iter_mut().enumerate() {
            let into = self.step(step);
            for arm in 0..2 {
                into[arm].absorb(bounds, &mut arms[arm]);
            }
        }
        for (into, from) in self.custom.iter_mut().zip(&mut other.custom) {
            if into.len() < from.len() {
                into.resize(from.len(), Moments::default());
            }
            for (into, from) in into.iter_mut().zip(from.iter_mut()) {
                into.merge(&std::mem::take(from));
            }
        }
    }
}

/// A shard on its own cache lines, so that threads recording into neighbouring shards do
/// not invalidate each other's caches.
type Shard = CachePadded<Mutex<ShardStats>>;

fn arm_index(arm: Arm) -> usize {
    match arm {
        Arm::Stable => 0,
        Arm::Candidate => 1,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while recording leaves counters and histograms that are each still valid, so
    // a poisoned lock is used as it is rather than losing every later measurement.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shard index of the calling thread, given once per thread, round robin.
fn thread_shard_seed() -> usize {
    static NEXT_SEED: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SEED: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SEED.try_with(|seed| {
        seed.get().unwrap_or_else(|| {
            let next = NEXT_SEED.fetch_add(1, Ordering::Relaxed);
            seed.set(Some(next));
            next
        })
    })
    // Only while the thread is being torn down; any shard is as good as another.
    .unwrap_or(0)
}

impl KpiRecorder {
    /// An empty recorder for a pair of builds, with the default [`RecorderConfig`].
    pub fn new(stable: Version, candidate: Version) -> Self {
        Self::build(
            stable,
            candidate,
            &RecorderConfig::default(),
            Bounds::shared_default(),
        )
    }

    /// An empty recorder with the given configuration.
    pub fn with_config(
        stable: Version,
        candidate: Version,
        config: &RecorderConfig,
    ) -> Result<Self, RecorderConfigError> {
        let bounds = Arc::new(Bounds::new(config)?);
        Ok(Self::build(stable, candidate, config, bounds))
    }

    fn build(
        stable: Version,
        candidate: Version,
        config: &RecorderConfig,
        bounds: Arc<Bounds>,
    ) -> Self {
        let shards = bounds.shards;
        Self {
            versions: [stable, candidate],
            step: CachePadded::new(AtomicUsize::new(0)),
            shares: Mutex::new(vec![Share::ZERO]),
            bounds,
            shards: (0..shards).map(|_| Shard::default()).collect(),
            routes: Arc::new(LabelSet::new(config.max_routes)),
            custom: LabelSet::new(config.max_custom_kpis),
            custom_overflow_warned: AtomicBool::new(false),
            folded: Mutex::new(ShardStats::default()),
        }
    }

    fn shard(&self) -> MutexGuard<'_, ShardStats> {
        // The shard count is a power of two, so the mask spreads the seeds evenly.
        lock(&self.shards[thread_shard_seed() & (self.shards.len() - 1)])
    }

    /// Records one request.
    pub fn record(
        &self,
        arm: Arm,
        outcome: Outcome,
        latency: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.record_request(
            RequestRecord::new(arm, outcome, latency).bytes(request_bytes, response_bytes),
        );
    }

    /// Records one request with everything known about it: route, bytes, CPU, allocations.
    pub fn record_request(&self, request: RequestRecord<'_>) {
        // Resolved before taking the shard lock: it may (rarely) admit a new route.
        let route = request
            .route
            .map(|label| self.routes.index_of(label).unwrap_or(self.routes.slots()));
        self.record_indexed(&request, route);
    }

    /// Records a request whose route label the caller has already resolved to its index
    /// in [`routes`](Self::routes) (the adapters' path).
    pub(crate) fn record_indexed(&self, request: &RequestRecord<'_>, route: Option<usize>) {
        // One load of a word written only at phase changes.
        let step = self.step.load(Ordering::Relaxed);
        let latency_ns = u64::try_from(request.latency.as_nanos()).unwrap_or(u64::MAX);
        let mut shard = self.shard();
        shard.live_requests += 1;
        shard.live_timed += 1;
        shard.live_busy_ns = shard.live_busy_ns.saturating_add(latency_ns);
        if step != NO_STEP {
            let stats = &mut shard.step(step)[arm_index(request.arm)];
            stats.assigned += 1;
            stats.record(&self.bounds, request, route);
        }
    }

    /// Counts a live request of `arm` without recording it: one whose measurement is not
    /// like the others' (a mirrored read, which paid for its copy).
    pub(crate) fn count_live(&self, arm: Arm) {
        let step = self.step.load(Ordering::Relaxed);
        let mut shard = self.shard();
        shard.live_requests += 1;
        if step != NO_STEP {
            shard.step(step)[arm_index(arm)].assigned += 1;
        }
    }

    /// The route labels this recorder keeps, shared with the rollout's route labeller so
    /// a label is resolved once per request.
    pub(crate) fn routes(&self) -> &Arc<LabelSet> {
        &self.routes
    }

    /// Live requests recorded so far, in a canary step or not.
    pub fn live_requests(&self) -> u64 {
        self.fold().live_requests
    }

    /// The live requests recorded with their latency so far, and the sum of those
    /// latencies in nanoseconds (live's busy time: over wall time, the mean number of
    /// requests in flight).
    pub(crate) fn live_load(&self) -> (u64, u64) {
        let folded = self.fold();
        (folded.live_timed, folded.live_busy_ns)
    }

    /// Adds one observation of a custom KPI (database queries of a request, a cache hit as
    /// 1.0 or miss as 0.0, …) to `arm`'s side of [`Evidence::custom`].
    ///
    /// Names should be fixed strings: past [`RecorderConfig::max_custom_kpis`] distinct
    /// names, values of new names are dropped (and a warning logged once).
    pub fn record_custom(&self, arm: Arm, name: &str, value: f64) {
        let Some(index) = self.custom.index_of(name) else {
            // Read before writing: past the cap every record lands here, and a write per
            // record would bounce the flag's cache line between recording threads.
            let warned = &self.custom_overflow_warned;
            if !warned.load(Ordering::Relaxed) && !warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    kpi = name,
                    cap = self.custom.cap(),
                    "too many custom KPI names; values of new names are dropped"
                );
            }
            return;
        };
        let mut shard = self.shard();
        let custom = &mut shard.custom[arm_index(arm)];
        if custom.len() <= index {
            custom.resize(index + 1, Moments::default());
        }
        custom[index].add(value);
    }

    /// The version of one build.
    pub fn version(&self, arm: Arm) -> &Version {
        &self.versions[arm_index(arm)]
    }

    /// Everything recorded for one build so far, over every canary step: for reports and
    /// tests, not for comparisons (see [`CanaryEvidence`]).
    pub fn snapshot(&self, arm: Arm) -> ArmEvidence {
        self.canary().total(arm)
    }

    /// The live evidence of every canary step so far.
    pub fn canary(&self) -> CanaryEvidence {
        let folded = self.fold();
        let shares = lock(&self.shares).clone();
        let mut canary = CanaryEvidence::default();
        for (index, arms) in folded.steps.iter().enumerate() {
            let share = shares.get(index).copied().unwrap_or_default();
            let step = canary.step_mut(index, share);
            step.stable = self.evidence(&arms[0]);
            step.candidate = self.evidence(&arms[1]);
            step.stable_assigned = arms[0].assigned;
            step.candidate_assigned = arms[1].assigned;
        }
        canary
    }

    /// The shards folded into the running totals.
    fn fold(&self) -> MutexGuard<'_, ShardStats> {
        let mut folded = lock(&self.folded);
        for shard in &self.shards {
            folded.absorb(&self.bounds, &mut lock(shard));
        }
        folded
    }

    fn evidence(&self, stats: &Stats) -> ArmEvidence {
        let distribution = |histogram: &Option<LazyHistogram>, shape: &HistogramShape| {
            histogram.as_ref().map(|h| h.to_distribution(shape))
        };
        let mut evidence = ArmEvidence {
            outcomes: stats.outcomes.clone(),
            latency_us: stats.latency.to_distribution(&self.bounds.latency),
            cpu_ns: distribution(&stats.cpu_ns, &self.bounds.cpu_ns),
            alloc_bytes: distribution(&stats.alloc_bytes, &self.bounds.alloc_bytes),
            alloc_count: distribution(&stats.alloc_count, &self.bounds.alloc_count),
            request_bytes: stats.request_bytes,
            response_bytes: stats.response_bytes,
            routes: BTreeMap::new(),
        };

        let route_names = self.routes.names();
        let mut routes = BTreeMap::new();
        for (index, route) in stats.routes.iter().enumerate() {
            let Some(route) = route else { continue };
            // The index past the last slot is the overflow.
            let name = route_names
                .get(index)
                .copied()
                .flatten()
                .unwrap_or(OTHER_ROUTES);
            let evidence = route.to_evidence(&self.bounds.route_latency);
            match routes.get_mut(name) {
                // A user route literally named like the overflow label: count them together.
                Some(existing) => merge_same_bounds(existing, &evidence),
                None => {
                    routes.insert(name.to_owned(), evidence);
                }
            }
        }
        evidence.routes = routes;
        evidence
    }

    /// The custom KPIs of both builds by name.
    fn custom(&self, folded: &ShardStats, into: &mut Evidence) {
        let names = self.custom.names();
        for (arm, values) in [Arm::Stable, Arm::Candidate]
            .into_iter()
            .zip(&folded.custom)
        {
            for (name, moments) in names.iter().zip(values) {
                if let Some(name) = name.filter(|_| moments.count() > 0) {
                    into.custom_mut(name).arm_mut(arm).merge(moments);
                }
            }
        }
    }
}

fn merge_same_bounds(into: &mut RouteEvidence, from: &RouteEvidence) {
    // Both come from this recorder's route bounds, so no value is out of range.
    let merged = into.merge(from);
    debug_assert!(
        merged.is_ok(),
        "same bounds never fail to merge: {merged:?}"
    );
}

#[async_trait]
impl MetricSource for KpiRecorder {
    fn name(&self) -> &str {
        "kpi-recorder"
    }

    async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError> {
        let canary = self.canary();
        into.canary.merge(&canary).map_err(|e| MetricError {
            source_name: self.name().to_owned(),
            message: e.to_string(),
        })?;
        let folded = self.fold();
        into.live_requests += folded.live_requests;
        self.custom(&folded, into);
        Ok(())
    }

    /// Records live requests under the canary step the rollout is in (a paused canary
    /// keeps its step and share), and only counts them otherwise.
    fn phase_changed(&self, phase: Phase, share: Share) {
        let step = phase.canary_step().unwrap_or(NO_STEP);
        if step != NO_STEP {
            let mut shares = lock(&self.shares);
            if shares.len() <= step {
                shares.resize(step + 1, Share::ZERO);
            }
            shares[step] = share;
        }
        self.step.store(step, Ordering::Relaxed);
    }
}

/// The validated histogram shapes a recorder uses, each as an empty prototype.
#[derive(Debug)]
struct Bounds {
    latency: HistogramShape,
    route_latency: HistogramShape,
    cpu_ns: HistogramShape,
    alloc_bytes: HistogramShape,
    alloc_count: HistogramShape,
    shards: usize,
}

impl Bounds {
    fn new(config: &RecorderConfig) -> Result<Self, RecorderConfigError> {
        let (low, high) = config.latency_range_us();
        let latency = Distribution::new(low, high, config.latency_significant_figures)
            .map_err(RecorderConfigError::Latency)?;
        let route_latency = Distribution::new(low, high, config.route_latency_significant_figures)
            .map_err(RecorderConfigError::RouteLatency)?;
        let shards = match config.shards {
            Some(n) if n.get() > MAX_SHARDS => {
                return Err(RecorderConfigError::TooManyShards {
                    requested: n.get(),
                    max: MAX_SHARDS,
                });
            }
            Some(n) => n.get().next_power_of_two(),
            None => default_shards(),
        };
        Ok(Self {
            latency: HistogramShape::of(latency),
            route_latency: HistogramShape::of(route_latency),
            cpu_ns: HistogramShape::of(Distribution::cpu_ns()),
            alloc_bytes: HistogramShape::of(Distribution::bytes()),
            alloc_count: HistogramShape::of(Distribution::counts()),
            shards,
        })
    }

    fn shared_default() -> Arc<Self> {
        static DEFAULT: OnceLock<Arc<Bounds>> = OnceLock::new();
        let default = DEFAULT.get_or_init(|| {
            // The defaults are constants, checked by a test below; a failure is a bug here.
            let bounds = Self::new(&RecorderConfig::default());
            Arc::new(bounds.expect("the default recorder config is valid"))
        });
        Arc::clone(default)
    }
}

fn default_shards() -> usize {
    let parallelism = std::thread::available_parallelism().map_or(4, NonZeroUsize::get);
    (parallelism * 2).next_power_of_two().min(64)
}

/// A histogram shape: the empty full-range distribution that evidence is built in, and a
/// small auto-growing histogram of the same precision that recording starts from.
#[derive(Debug)]
struct HistogramShape {
    empty: Distribution,
    seed: Histogram<u64>,
}

impl HistogramShape {
    fn of(empty: Distribution) -> Self {
        let full = empty.histogram();
        let mut seed = full.clone();
        // Start at the smallest size the precision allows and grow only as far as the
        // values recorded need: most shards and routes never see the top of the range.
        if let Ok(small) =
            Histogram::new_with_bounds(full.low(), (full.low() * 2).max(2), full.sigfig())
        {
            seed = small;
        }
        seed.auto(true);
        Self { empty, seed }
    }

    fn high(&self) -> u64 {
        self.empty.histogram().high()
    }
}

/// A histogram created on first use.
#[derive(Debug, Clone, Default)]
struct LazyHistogram(Option<Histogram<u64>>);

impl LazyHistogram {
    #[inline]
    fn record(&mut self, shape: &HistogramShape, value: u64) {
        let histogram = self.0.get_or_insert_with(|| shape.seed.clone());
        // Clamped into range, so the only failure left (growing past usize) cannot happen.
        let _ = histogram.record(value.min(shape.high()));
    }

    /// Moves `other`'s counts into this histogram, leaving `other` empty but allocated.
    fn absorb(&mut self, shape: &HistogramShape, other: &mut LazyHistogram) {
        let Some(from) = other.0.as_mut() else { return };
        if from.is_empty() {
            return;
        }
        let into = self.0.get_or_insert_with(|| shape.seed.clone());
        // Both grow automatically with the same precision, so adding cannot fail.
        let _ = into.add(&*from);
        from.reset();
    }

    fn to_distribution(&self, shape: &HistogramShape) -> Distribution {
        let mut distribution = shape.empty.clone();
        if let Some(histogram) = &self.0 {
            for bucket in histogram.iter_recorded() {
                distribution.record_n(bucket.value_iterated_to(), bucket.count_at_value());
            }
        }
        distribution
    }
}

/// One arm's statistics in one shard, or in total.
#[derive(Debug, Clone, Default)]
struct Stats {
    /// Requests the steerer sent to this arm, measured or only counted.
    assigned: u64,
    outcomes: OutcomeCounts,
    latency: LazyHistogram,
    request_bytes: u64,
    response_bytes: u64,
    cpu_ns: Option<LazyHistogram>,
    alloc_bytes: Option<LazyHistogram>,
    alloc_count: Option<LazyHistogram>,
    /// By route index; the index past the last admitted route is the overflow bucket.
    /// Each on its own cache lines: every record writes its route's counters, and two
    /// shards' boxes may sit side by side on the heap.
    routes: Vec<Option<Box<CachePadded<RouteStats>>>>,
}

#[derive(Debug, Clone, Default)]
struct RouteStats {
    outcomes: OutcomeCounts,
    latency: LazyHistogram,
    request_bytes: u64,
    response_bytes: u64,
}

fn latency_micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)
}

fn record_optional(slot: &mut Option<LazyHistogram>, shape: &HistogramShape, value: u64) {
    slot.get_or_insert_with(LazyHistogram::default)
        .record(shape, value);
}

fn absorb_optional(
    into: &mut Option<LazyHistogram>,
    shape: &HistogramShape,
    from: &mut Option<LazyHistogram>,
) {
    if let Some(from) = from {
        into.get_or_insert_with(LazyHistogram::default)
            .absorb(shape, from);
    }
}

impl Stats {
    /// The statistics of route `index`, made on first use.
    fn route(&mut self, index: usize) -> &mut RouteStats {
        if self.routes.len() <= index {
            self.routes.resize_with(index + 1, || None);
        }
        self.routes[index].get_or_insert_with(Box::default)
    }

    #[inline]
    fn record(&mut self, bounds: &Bounds, request: &RequestRecord<'_>, route: Option<usize>) {
        let ran = request.outcome != Outcome::Shed;
        let micros = latency_micros(request.latency);
        self.outcomes.add(request.outcome, 1);
        if ran {
            self.latency.record(&bounds.latency, micros);
        }
        self.request_bytes += request.request_bytes;
        self.response_bytes += request.response_bytes;
        if let Some(usage) = &request.usage {
            if let Some(cpu) = usage.cpu_time {
                let nanos = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
                record_optional(&mut self.cpu_ns, &bounds.cpu_ns, nanos);
            }
            if let Some(allocations) = usage.allocations {
                record_optional(
                    &mut self.alloc_bytes,
                    &bounds.alloc_bytes,
                    allocations.bytes,
                );
                record_optional(
                    &mut self.alloc_count,
                    &bounds.alloc_count,
                    allocations.count,
                );
            }
        }
        if let Some(index) = route {
            let route = self.route(index);
            route.outcomes.add(request.outcome, 1);
            if ran {
                route.latency.record(&bounds.route_latency, micros);
            }
            route.request_bytes += request.request_bytes;
            route.response_bytes += request.response_bytes;
        }
    }

    /// Moves everything in `other` into this, leaving `other` empty (allocations kept).
    fn absorb(&mut self, bounds: &Bounds, other: &mut Stats) {
        self.assigned += std::mem::take(&mut other.assigned);
        self.outcomes.merge(&std::mem::take(&mut other.outcomes));
        self.latency.absorb(&bounds.latency, &mut other.latency);
        self.request_bytes += std::mem::take(&mut other.request_bytes);
        self.response_bytes += std::mem::take(&mut other.response_bytes);
        absorb_optional(&mut self.cpu_ns, &bounds.cpu_ns, &mut other.cpu_ns);
        absorb_optional(
            &mut self.alloc_bytes,
            &bounds.alloc_bytes,
            &mut other.alloc_bytes,
        );
        absorb_optional(
            &mut self.alloc_count,
            &bounds.alloc_count,
            &mut other.alloc_count,
        );
        if self.routes.len() < other.routes.len() {
            self.routes.resize_with(other.routes.len(), || None);
        }
        for (into, from) in self.routes.iter_mut().zip(&mut other.routes) {
            if let Some(from) = from {
                into.get_or_insert_with(Box::default).absorb(bounds, from);
            }
        }
    }
}

impl RouteStats {
    fn absorb(&mut self, bounds: &Bounds, other: &mut RouteStats) {
        self.outcomes.merge(&std::mem::take(&mut other.outcomes));
        self.latency
            .absorb(&bounds.route_latency, &mut other.latency);
        self.request_bytes += std::mem::take(&mut other.request_bytes);
        self.response_bytes += std::mem::take(&mut other.response_bytes);
    }

    fn to_evidence(&self, shape: &HistogramShape) -> RouteEvidence {
        RouteEvidence {
            outcomes: self.outcomes.clone(),
            latency_us: self.latency.to_distribution(shape),
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Allocations;

    fn recorder() -> KpiRecorder {
        KpiRecorder::new(Version::new("t", "1"), Version::new("t", "2"))
    }

    #[test]
    fn default_config_is_valid() {
        RecorderConfig::default()
            .validate()
            .expect("defaults are valid");
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let too_precise = RecorderConfig {
            latency_significant_figures: 9,
            ..RecorderConfig::default()
        };
        assert!(matches!(
            too_precise.validate(),
            Err(RecorderConfigError::Latency(_))
        ));
        let below_a_microsecond = RecorderConfig {
            latency_lowest: Duration::from_nanos(10),
            ..RecorderConfig::default()
        };
        assert!(matches!(
            below_a_microsecond.validate(),
            Err(RecorderConfigError::Latency(_))
        ));
        let bad_route = RecorderConfig {
            route_latency_significant_figures: 6,
            ..RecorderConfig::default()
        };
        assert!(matches!(
            bad_route.validate(),
            Err(RecorderConfigError::RouteLatency(_))
        ));
        let too_many_shards = RecorderConfig {
            shards: NonZeroUsize::new(MAX_SHARDS + 1),
            ..RecorderConfig::default()
        };
        assert!(matches!(
            too_many_shards.validate(),
            Err(RecorderConfigError::TooManyShards { .. })
        ));
    }

    #[test]
    fn records_from_many_threads_add_up() {
        let recorder = recorder();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let recorder = &recorder;
                s.spawn(move || {
                    for i in 0..1_000u64 {
                        let outcome = if i % 100 == 0 {
                            Outcome::ServerError
                        } else {
                            Outcome::Success
                        };
                        recorder.record(Arm::Stable, outcome, Duration::from_micros(100 + t), 1, 2);
                    }
                });
            }
        });
        let stable = recorder.snapshot(Arm::Stable);
        assert_eq!(stable.requests(), 4_000);
        assert_eq!(stable.outcomes.server_error, 40);
        assert_eq!(stable.latency_us.count(), 4_000);
        assert_eq!(
            (stable.request_bytes, stable.response_bytes),
            (4_000, 8_000)
        );
        assert_eq!(recorder.snapshot(Arm::Candidate).requests(), 0);
    }

    #[test]
    fn snapshots_keep_growing_and_do_not_consume() {
        let recorder = recorder();
        let record =
            |outcome| recorder.record(Arm::Candidate, outcome, Duration::from_millis(1), 0, 0);
        for _ in 0..3 {
            record(Outcome::Success);
        }
        assert_eq!(recorder.snapshot(Arm::Candidate).requests(), 3);
        record(Outcome::Timeout);
        let candidate = recorder.snapshot(Arm::Candidate);
        assert_eq!(candidate.requests(), 4);
        assert_eq!(candidate.outcomes.timeout, 1);
        assert_eq!(recorder.snapshot(Arm::Candidate).requests(), 4);
        assert_eq!(recorder.snapshot(Arm::Stable).requests(), 0);
    }

    #[test]
    fn latency_keeps_the_configured_precision() {
        let recorder = recorder();
        for us in [1_000u64, 2_000, 3_000, 4_000, 100_000] {
            recorder.record(
                Arm::Stable,
                Outcome::Success,
                Duration::from_micros(us),
                0,
                0,
            );
        }
        let latency = recorder.snapshot(Arm::Stable).latency_us;
        // 3 significant digits: within 0.1%.
        assert!(latency.quantile(0.5).abs_diff(3_000) <= 3);
        assert!(latency.max().abs_diff(100_000) <= 100);
    }

    #[test]
    fn latency_beyond_the_range_is_clamped_to_its_top() {
        let config = RecorderConfig {
            latency_highest: Duration::from_secs(1),
            ..RecorderConfig::default()
        };
        let recorder =
            KpiRecorder::with_config(Version::new("t", "1"), Version::new("t", "2"), &config)
                .expect("valid config");
        recorder.record(Arm::Stable, Outcome::Timeout, Duration::from_secs(90), 0, 0);
        let latency = recorder.snapshot(Arm::Stable).latency_us;
        assert_eq!(latency.count(), 1);
        assert!(latency.max() >= 1_000_000 && latency.max() < 1_002_000);
    }

    #[test]
    fn shed_requests_are_counted_without_latency() {
        let recorder = recorder();
        recorder.record(Arm::Candidate, Outcome::Shed, Duration::ZERO, 0, 0);
        let candidate = recorder.snapshot(Arm::Candidate);
        assert_eq!(candidate.outcomes.shed, 1);
        assert_eq!(candidate.latency_us.count(), 0);
    }

    #[test]
    fn usage_fills_cpu_and_allocation_distributions() {
        let recorder = recorder();
        recorder.record(
            Arm::Stable,
            Outcome::Success,
            Duration::from_millis(1),
            0,
            0,
        );
        let stable = recorder.snapshot(Arm::Stable);
        assert!(stable.cpu_ns.is_none() && stable.alloc_bytes.is_none());

        let usage = ResourceUsage {
            cpu_time: Some(Duration::from_micros(250)),
            allocations: Some(Allocations {
                bytes: 4_096,
                count: 3,
            }),
            polls: 2,
        };
        recorder.record_request(
            RequestRecord::new(Arm::Stable, Outcome::Success, Duration::from_millis(1))
                .usage(usage),
        );
        let stable = recorder.snapshot(Arm::Stable);
        let cpu = stable.cpu_ns.expect("cpu recorded");
        assert_eq!(cpu.count(), 1);
        assert!(cpu.max().abs_diff(250_000) <= 250);
        let alloc_bytes = stable.alloc_bytes.expect("allocations recorded");
        assert!(alloc_bytes.max().abs_diff(4_096) <= 4);
        assert_eq!(stable.alloc_count.expect("allocations recorded").max(), 3);
    }

    #[tokio::test]
    async fn custom_kpis_flow_into_the_evidence_per_arm() {
        let recorder = recorder();
        recorder.record_custom(Arm::Stable, "db_queries", 2.0);
        recorder.record_custom(Arm::Candidate, "db_queries", 3.0);
        recorder.record_custom(Arm::Candidate, "db_queries", 5.0);
        let evidence = collected(&recorder).await;
        let kpi = evidence.custom["db_queries"];
        assert_eq!(kpi.candidate.count(), 2);
        assert_eq!(kpi.candidate.mean(), 4.0);
        assert_eq!(kpi.stable.mean(), 2.0);
    }

    async fn collected(recorder: &KpiRecorder) -> Evidence {
        let mut evidence = Evidence::new(Version::new("t", "1"), Version::new("t", "2"));
        recorder.collect(&mut evidence).await.expect("same bounds");
        evidence
    }

    #[tokio::test]
    async fn custom_kpis_past_the_cap_are_dropped() {
        let config = RecorderConfig {
            max_custom_kpis: 1,
            ..RecorderConfig::default()
        };
        let recorder =
            KpiRecorder::with_config(Version::new("t", "1"), Version::new("t", "2"), &config)
                .expect("valid config");
        recorder.record_custom(Arm::Stable, "kept", 1.0);
        recorder.record_custom(Arm::Stable, "dropped", 1.0);
        let custom = collected(&recorder).await.custom;
        assert_eq!(custom.keys().collect::<Vec<_>>(), ["kept"]);
    }

    #[test]
    fn routes_are_recorded_separately() {
        let recorder = recorder();
        let record = |route, outcome| {
            recorder.record_request(
                RequestRecord::new(Arm::Stable, outcome, Duration::from_millis(1))
                    .route(route)
                    .bytes(10, 20),
            );
        };
        record("GET /a", Outcome::Success);
        record("GET /a", Outcome::Success);
        record("GET /b", Outcome::ServerError);
        let stable = recorder.snapshot(Arm::Stable);
        assert_eq!(stable.routes["GET /a"].outcomes.success, 2);
        assert_eq!(stable.routes["GET /a"].latency_us.count(), 2);
        assert_eq!(stable.routes["GET /a"].response_bytes, 40);
        assert_eq!(stable.routes["GET /b"].outcomes.server_error, 1);
        assert_eq!(stable.requests(), 3);
    }

    #[tokio::test]
    async fn collect_merges_the_totals_into_the_evidence() {
        let recorder = recorder();
        recorder.record(
            Arm::Candidate,
            Outcome::Success,
            Duration::from_millis(1),
            0,
            0,
        );
        let evidence = collected(&recorder).await;
        // Collecting does not consume: a second look sees the same totals.
        let again = collected(&recorder).await;
        assert_eq!(evidence.canary.requests(Arm::Candidate), 1);
        assert_eq!(again.canary.requests(Arm::Candidate), 1);
        assert_eq!(again.live_requests, 1);
    }

    #[tokio::test]
    async fn live_requests_are_kept_per_canary_step_and_only_counted_outside_one() {
        let recorder = recorder();
        let record = |arm| recorder.record(arm, Outcome::Success, Duration::from_millis(1), 0, 0);
        let five = Share::from_percent(5.0).expect("valid");
        let half = Share::from_percent(50.0).expect("valid");
        recorder.phase_changed(Phase::Shadowing, Share::ZERO);
        record(Arm::Stable);
        recorder.phase_changed(Phase::Canary { step: 0 }, five);
        record(Arm::Stable);
        record(Arm::Candidate);
        let paused = Phase::Paused {
            from: crate::model::LivePhase::Canary { step: 0 },
        };
        recorder.phase_changed(paused, five);
        record(Arm::Candidate);
        recorder.phase_changed(Phase::Canary { step: 1 }, half);
        record(Arm::Candidate);
        recorder.phase_changed(Phase::RolledBack, Share::ZERO);
        record(Arm::Stable);

        let evidence = collected(&recorder).await;
        assert_eq!(evidence.live_requests, 6);
        let steps = &evidence.canary.steps;
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].share, five);
        assert_eq!(
            (steps[0].stable.requests(), steps[0].candidate.requests()),
            (1, 2)
        );
        assert_eq!(steps[1].share, half);
        assert_eq!(
            (steps[1].stable.requests(), steps[1].candidate.requests()),
            (0, 1)
        );
    }
}
