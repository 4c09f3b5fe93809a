//! What the predictors see: the two builds' statistics side by side.
//!
//! Every statistic here is *mergeable*: histograms add bucket by bucket and moments combine
//! exactly, so evidence from several sources, intervals or replicas adds up to the evidence
//! one recorder would have seen. That is why latency is kept as an HDR histogram and not as
//! a list of percentiles (percentiles cannot be averaged).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::rollout::Phase;
use crate::{Arm, Share, Version};

/// The class of a request's outcome, as the recorder counts it.
///
/// ```
/// use shadowlib::Outcome;
///
/// assert!(Outcome::ServerError.is_failure());
/// assert!(!Outcome::ClientError.is_failure());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The request was served (HTTP 1xx–3xx).
    Success,
    /// The request was refused as the client's fault (HTTP 4xx). Not the build's failure.
    ClientError,
    /// The build failed to serve the request (HTTP 5xx or an error value).
    ServerError,
    /// The request did not finish within its deadline.
    Timeout,
    /// The handler panicked.
    Panic,
    /// The request was not run because the build was over budget (shadow work shed first).
    Shed,
}

impl Outcome {
    /// All outcome classes, in a fixed order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::Timeout,
        Outcome::Panic,
        Outcome::Shed,
    ];

    /// Whether this outcome counts against the build (server error, timeout or panic).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::ServerError | Outcome::Timeout | Outcome::Panic
        )
    }

    /// The outcome class of an HTTP status code.
    ///
    /// ```
    /// use shadowlib::Outcome;
    ///
    /// assert_eq!(Outcome::from_http_status(503), Outcome::ServerError);
    /// assert_eq!(Outcome::from_http_status(404), Outcome::ClientError);
    /// ```
    pub fn from_http_status(status: u16) -> Outcome {
        match status {
            500..=599 => Outcome::ServerError,
            400..=499 => Outcome::ClientError,
            _ => Outcome::Success,
        }
    }
}

/// Request counts by outcome class.
///
/// ```
/// use shadowlib::{Outcome, OutcomeCounts};
///
/// let mut counts = OutcomeCounts::default();
/// counts.add(Outcome::Success, 98);
/// counts.add(Outcome::ServerError, 2);
/// assert_eq!(counts.total(), 100);
/// assert_eq!(counts.failures(), 2);
/// assert!((counts.failure_rate() - 0.02).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Successful requests.
    pub success: u64,
    /// Requests refused as the client's fault.
    pub client_error: u64,
    /// Requests the build failed.
    pub server_error: u64,
    /// Requests past their deadline.
    pub timeout: u64,
    /// Requests whose handler panicked.
    pub panic: u64,
    /// Requests not run because of the budget.
    pub shed: u64,
}

impl OutcomeCounts {
    /// Adds `n` requests of class `outcome`.
    pub fn add(&mut self, outcome: Outcome, n: u64) {
        *self.slot(outcome) += n;
    }

    /// The count of one class.
    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Success => self.success,
            Outcome::ClientError => self.client_error,
            Outcome::ServerError => self.server_error,
            Outcome::Timeout => self.timeout,
            Outcome::Panic => self.panic,
            Outcome::Shed => self.shed,
        }
    }

    fn slot(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::Success => &mut self.success,
            Outcome::ClientError => &mut self.client_error,
            Outcome::ServerError => &mut self.server_error,
            Outcome::Timeout => &mut self.timeout,
            Outcome::Panic => &mut self.panic,
            Outcome::Shed => &mut self.shed,
        }
    }

    /// Requests that ran (everything but shed ones).
    pub fn total(&self) -> u64 {
        self.success + self.client_error + self.server_error + self.timeout + self.panic
    }

    /// Requests that count against the build.
    pub fn failures(&self) -> u64 {
        self.server_error + self.timeout + self.panic
    }

    /// Failures over requests that ran; 0 when nothing ran.
    pub fn failure_rate(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            n => self.failures() as f64 / n as f64,
        }
    }

    /// Adds another set of counts to this one.
    pub fn merge(&mut self, other: &OutcomeCounts) {
        for outcome in Outcome::ALL {
            self.add(outcome, other.get(outcome));
        }
    }
}

/// A histogram could not be built or merged.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DistributionError {
    /// The range or precision does not describe a valid HDR histogram.
    #[error(
        "invalid histogram bounds low={low} high={high} significant_figures={significant_figures}: {reason}"
    )]
    InvalidBounds {
        /// Lowest discernible value.
        low: u64,
        /// Highest trackable value.
        high: u64,
        /// Significant decimal digits.
        significant_figures: u8,
        /// What the histogram library said.
        reason: String,
    },
    /// Merging would lose values because the other histogram holds values out of range.
    #[error("cannot merge histograms: {0}")]
    Merge(String),
}

/// A distribution of non-negative integer measurements on an HDR histogram.
///
/// Latency is kept in microseconds, CPU time in nanoseconds, allocations in bytes. Values
/// above the configured range are clamped to its top rather than lost, so a pathological
/// request still counts (as "at least the maximum").
///
/// ```
/// use shadowlib::Distribution;
///
/// let mut latency = Distribution::latency_us();
/// for us in [900, 1_000, 1_100] {
///     latency.record(us);
/// }
/// assert_eq!(latency.count(), 3);
/// assert!((latency.mean() - 1_000.0).abs() < 2.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    histogram: Histogram<u64>,
}

impl Distribution {
    /// A distribution over `[low, high]` with `significant_figures` decimal digits (1–5).
    pub fn new(low: u64, high: u64, significant_figures: u8) -> Result<Self, DistributionError> {
        Histogram::new_with_bounds(low, high, significant_figures)
            .map(|histogram| Self { histogram })
            .map_err(|e| DistributionError::InvalidBounds {
                low,
                high,
                significant_figures,
                reason: format!("{e:?}"),
            })
    }

    fn with_valid_bounds(low: u64, high: u64) -> Self {
        // The bounds are constants checked by the tests below; a failure here is a bug in
        // this file, never something a user can cause.
        Self::new(low, high, 3).expect("constant histogram bounds are valid")
    }

    /// Latency in microseconds, 1 µs to 60 s, 3 significant digits.
    pub fn latency_us() -> Self {
        Self::with_valid_bounds(1, 60_000_000)
    }

    /// CPU time in nanoseconds, 1 ns to 60 s, 3 significant digits.
    pub fn cpu_ns() -> Self {
        Self::with_valid_bounds(1, 60_000_000_000)
    }

    /// Sizes in bytes, 1 B to 1 TiB, 3 significant digits.
    pub fn bytes() -> Self {
        Self::with_valid_bounds(1, 1 << 40)
    }

    /// Counts of things per request (allocations, queries), 1 to 2^40, 3 significant digits.
    pub fn counts() -> Self {
        Self::with_valid_bounds(1, 1 << 40)
    }

    /// An empty distribution with the same range and precision as this one.
    pub fn empty_like(&self) -> Self {
        let mut histogram = self.histogram.clone();
        histogram.reset();
        Self { histogram }
    }

    /// Records one measurement; values above the range count as the range's top.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `n` measurements of the same value.
    pub fn record_n(&mut self, value: u64, n: u64) {
        let value = value.min(self.histogram.high());
        // Cannot fail: the value was clamped into range and the histogram does not resize.
        let _ = self.histogram.record_n(value, n);
    }

    /// Number of measurements.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// Arithmetic mean; 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.histogram.mean()
        }
    }

    /// Standard deviation; 0 when empty.
    pub fn stdev(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.histogram.stdev()
        }
    }

    /// The value at quantile `q` in `[0, 1]` (clamped); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.histogram.value_at_quantile(q.clamp(0.0, 1.0))
        }
    }

    /// Largest recorded value (to the histogram's precision); 0 when empty.
    pub fn max(&self) -> u64 {
        self.histogram.max()
    }

    /// Number of measurements strictly above `value` (to the histogram's precision).
    pub fn count_above(&self, value: u64) -> u64 {
        self.count() - self.histogram.count_between(0, value)
    }

    /// Mean and variance of the natural log of the values, from the histogram buckets.
    ///
    /// Sequential tests on latency work on the log scale, where a slowdown is a shift and
    /// the noise is close to normal. Values of 0 are taken as 1 so the log is defined.
    pub fn log_moments(&self) -> Moments {
        let mut moments = Moments::default();
        for bucket in self.histogram.iter_recorded() {
            let value = self
                .histogram
                .median_equivalent(bucket.value_iterated_to())
                .max(1);
            moments.add_n((value as f64).ln(), bucket.count_at_value());
        }
        moments
    }

    /// Iterates the non-empty buckets as `(value, count)`.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.histogram
            .iter_recorded()
            .map(|b| (b.value_iterated_to(), b.count_at_value()))
    }

    /// Adds another distribution to this one.
    pub fn merge(&mut self, other: &Distribution) -> Result<(), DistributionError> {
        for (value, count) in other.buckets() {
            self.record_n(value, count);
        }
        Ok(())
    }

    /// The underlying HDR histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }
}

#[derive(Serialize, Deserialize)]
struct DistributionRepr {
    low: u64,
    high: u64,
    significant_figures: u8,
    /// `(value, count)` for every non-empty bucket.
    buckets: Vec<(u64, u64)>,
}

impl Serialize for Distribution {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        DistributionRepr {
            low: self.histogram.low(),
            high: self.histogram.high(),
            significant_figures: self.histogram.sigfig(),
            buckets: self.buckets().collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Distribution {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = DistributionRepr::deserialize(deserializer)?;
        let mut distribution = Distribution::new(repr.low, repr.high, repr.significant_figures)
            .map_err(serde::de::Error::custom)?;
        for (value, count) in repr.buckets {
            distribution.record_n(value, count);
        }
        Ok(distribution)
    }
}

/// Count, mean and variance of a stream of real numbers, mergeable exactly.
///
/// Used for custom KPIs (cache hit rate, queries per request) and for log latency.
///
/// ```
/// use shadowlib::Moments;
///
/// let mut a = Moments::default();
/// let mut b = Moments::default();
/// for x in [1.0, 2.0] { a.add(x); }
/// for x in [3.0, 4.0] { b.add(x); }
/// a.merge(&b);
/// assert_eq!(a.count(), 4);
/// assert!((a.mean() - 2.5).abs() < 1e-12);
/// assert!((a.variance() - 5.0 / 3.0).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    count: u64,
    mean: f64,
    /// Sum of squared deviations from the mean (Welford's M2).
    m2: f64,
}

impl Moments {
    /// Adds one observation.
    pub fn add(&mut self, x: f64) {
        self.add_n(x, 1);
    }

    /// Adds `n` observations of the same value.
    pub fn add_n(&mut self, x: f64, n: u64) {
        if n == 0 || !x.is_finite() {
            return;
        }
        self.merge(&Moments {
            count: n,
            mean: x,
            m2: 0.0,
        });
    }

    /// Combines another set of moments into this one (Chan et al.'s parallel update).
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        let n_a = self.count as f64;
        let n_b = other.count as f64;
        let n = n_a + n_b;
        let delta = other.mean - self.mean;
        self.mean += delta * n_b / n;
        self.m2 += other.m2 + delta * delta * n_a * n_b / n;
        self.count += other.count;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean; 0 when empty.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Unbiased sample variance; 0 with fewer than two observations.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            self.m2 / (self.count - 1) as f64
        }
    }
}

/// How many responses of a build were compared with the other build's, and how many differed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparisons {
    /// Response pairs compared.
    pub compared: u64,
    /// Pairs that differed (after noise filtering, where the comparator does it).
    pub mismatched: u64,
}

impl Comparisons {
    /// Mismatched over compared; 0 when nothing was compared.
    pub fn mismatch_rate(&self) -> f64 {
        match self.compared {
            0 => 0.0,
            n => self.mismatched as f64 / n as f64,
        }
    }
}

/// Everything measured about one build.
///
/// ```
/// use shadowlib::{ArmEvidence, Outcome, Version};
///
/// let mut arm = ArmEvidence::new(Version::new("api", "v2"));
/// arm.record_request(Outcome::Success, 1_250);
/// assert_eq!(arm.requests(), 1);
/// assert_eq!(arm.latency_us.count(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmEvidence {
    /// The build measured.
    pub version: Version,
    /// Requests by outcome class.
    pub outcomes: OutcomeCounts,
    /// Latency of requests that ran, in microseconds.
    pub latency_us: Distribution,
    /// CPU time per request in nanoseconds, where measured.
    pub cpu_ns: Option<Distribution>,
    /// Bytes allocated per request, where measured (needs the counting allocator).
    pub alloc_bytes: Option<Distribution>,
    /// Bytes of request bodies received.
    pub request_bytes: u64,
    /// Bytes of response bodies sent.
    pub response_bytes: u64,
    /// Response comparisons against the other build.
    pub comparisons: Comparisons,
    /// User-defined KPIs by name.
    pub custom: BTreeMap<String, Moments>,
    /// Number of allocations per request, where measured (needs the counting allocator).
    #[serde(default)]
    pub alloc_count: Option<Distribution>,
    /// The same statistics per route label. Routes past the recorder's cardinality cap
    /// share one overflow entry, [`OVERFLOW_LABEL`](crate::metrics::OVERFLOW_LABEL).
    #[serde(default)]
    pub routes: BTreeMap<String, RouteEvidence>,
    /// The process's CPU, memory and I/O over the rollout, where sampled.
    ///
    /// Both builds run in one process, so this is the same for both arms: it is context
    /// (is the process as a whole near a limit?), not something either build is blamed for.
    #[serde(default)]
    pub process: Option<ProcessEvidence>,
}

impl ArmEvidence {
    /// No evidence yet about `version`.
    pub fn new(version: Version) -> Self {
        Self {
            version,
            outcomes: OutcomeCounts::default(),
            latency_us: Distribution::latency_us(),
            cpu_ns: None,
            alloc_bytes: None,
            request_bytes: 0,
            response_bytes: 0,
            comparisons: Comparisons::default(),
            custom: BTreeMap::new(),
            alloc_count: None,
            routes: BTreeMap::new(),
            process: None,
        }
    }

    /// Requests that ran.
    pub fn requests(&self) -> u64 {
        self.outcomes.total()
    }

    /// Records one request's outcome and latency.
    pub fn record_request(&mut self, outcome: Outcome, latency_us: u64) {
        self.outcomes.add(outcome, 1);
        if outcome != Outcome::Shed {
            self.latency_us.record(latency_us);
        }
    }

    /// Adds another piece of evidence about the same build to this one.
    pub fn merge(&mut self, other: &ArmEvidence) -> Result<(), DistributionError> {
        self.outcomes.merge(&other.outcomes);
        self.latency_us.merge(&other.latency_us)?;
        merge_optional(&mut self.cpu_ns, &other.cpu_ns)?;
        merge_optional(&mut self.alloc_bytes, &other.alloc_bytes)?;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
        self.comparisons.compared += other.comparisons.compared;
        self.comparisons.mismatched += other.comparisons.mismatched;
        for (name, moments) in &other.custom {
            self.custom.entry(name.clone()).or_default().merge(moments);
        }
        merge_optional(&mut self.alloc_count, &other.alloc_count)?;
        for (route, evidence) in &other.routes {
            match self.routes.get_mut(route) {
                Some(into) => into.merge(evidence)?,
                None => {
                    self.routes.insert(route.clone(), evidence.clone());
                }
            }
        }
        match (&mut self.process, &other.process) {
            (_, None) => {}
            (Some(into), Some(from)) => into.merge(from),
            (into @ None, Some(from)) => *into = Some(from.clone()),
        }
        Ok(())
    }
}

/// Renders the arm as a short plain-text report, one KPI per line.
///
/// What was not measured says so ("allocations: not measured") rather than showing zero.
///
/// ```
/// use shadowlib::{ArmEvidence, Outcome, Version};
///
/// let mut arm = ArmEvidence::new(Version::new("api", "v2"));
/// arm.record_request(Outcome::Success, 1_250);
/// let report = arm.to_string();
/// assert!(report.contains("1 requests"));
/// assert!(report.contains("allocations: not measured"));
/// ```
impl fmt::Display for ArmEvidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.outcomes;
        writeln!(
            f,
            "{}: {} requests (success {}, client error {}, server error {}, timeout {}, panic {}, shed {})",
            self.version,
            self.requests(),
            o.success,
            o.client_error,
            o.server_error,
            o.timeout,
            o.panic,
            o.shed
        )?;
        let l = &self.latency_us;
        writeln!(
            f,
            "  latency: p50 {}, p99 {}, max {}",
            Micros(l.quantile(0.5)),
            Micros(l.quantile(0.99)),
            Micros(l.max())
        )?;
        match &self.cpu_ns {
            Some(cpu) => writeln!(
                f,
                "  cpu per request: mean {}, p99 {}",
                Micros(cpu.mean() as u64 / 1_000),
                Micros(cpu.quantile(0.99) / 1_000)
            )?,
            None => writeln!(f, "  cpu: not measured")?,
        }
        match (&self.alloc_bytes, &self.alloc_count) {
            (Some(bytes), count) => writeln!(
                f,
                "  allocations per request: mean {} in {:.1} allocations, p99 {}",
                Bytes(bytes.mean() as u64),
                count.as_ref().map_or(0.0, Distribution::mean),
                Bytes(bytes.quantile(0.99))
            )?,
            (None, _) => writeln!(f, "  allocations: not measured")?,
        }
        writeln!(
            f,
            "  bytes: {} received, {} sent",
            Bytes(self.request_bytes),
            Bytes(self.response_bytes)
        )?;
        if self.comparisons.compared > 0 {
            writeln!(
                f,
                "  responses: {} compared, {} mismatched ({:.2}%)",
                self.comparisons.compared,
                self.comparisons.mismatched,
                self.comparisons.mismatch_rate() * 100.0
            )?;
        }
        if let Some(p) = &self.process {
            writeln!(
                f,
                "  process: {:.2} cores, rss {} (peak {}), read {}/s, written {}/s",
                p.cpu_cores.mean(),
                Bytes(p.rss_bytes.mean() as u64),
                Bytes(p.peak_rss_bytes),
                Bytes(p.read_bytes_per_second.mean() as u64),
                Bytes(p.write_bytes_per_second.mean() as u64)
            )?;
        }
        for (name, moments) in &self.custom {
            writeln!(
                f,
                "  {name}: mean {:.3} over {}",
                moments.mean(),
                moments.count()
            )?;
        }
        Ok(())
    }
}

/// Microseconds, shown in the largest unit that keeps them readable.
struct Micros(u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            us @ 0..1_000 => write!(f, "{us} µs"),
            us @ 1_000..1_000_000 => write!(f, "{:.2} ms", us as f64 / 1e3),
            us => write!(f, "{:.2} s", us as f64 / 1e6),
        }
    }
}

/// A byte count in binary units.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// One route's share of an arm's evidence: the request statistics of that route, and how
/// its responses compared with the other build's, field by field.
///
/// ```
/// use shadowlib::{Outcome, RouteEvidence};
///
/// let mut route = RouteEvidence::default();
/// route.outcomes.add(Outcome::Success, 1);
/// route.latency_us.record(800);
/// route.differing_fields.entry("/price".into()).or_default().differed += 1;
/// assert_eq!(route.latency_us.count(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteEvidence {
    /// Requests by outcome class.
    pub outcomes: OutcomeCounts,
    /// Latency of requests that ran, in microseconds.
    pub latency_us: Distribution,
    /// Bytes of request bodies received.
    pub request_bytes: u64,
    /// Bytes of response bodies sent.
    pub response_bytes: u64,
    /// Response comparisons against the other build, after noise filtering.
    pub comparisons: Comparisons,
    /// How many reads were also re-run on the stable build to measure noise.
    pub noise_samples: u64,
    /// By field (`status`, `header:<name>`, `body`, or a JSON path such as `/items/*/price`):
    /// how often it differed between the builds, and between two runs of the stable build.
    pub differing_fields: BTreeMap<String, FieldDifferences>,
}

impl Default for RouteEvidence {
    fn default() -> Self {
        Self {
            outcomes: OutcomeCounts::default(),
            latency_us: Distribution::latency_us(),
            request_bytes: 0,
            response_bytes: 0,
            comparisons: Comparisons::default(),
            noise_samples: 0,
            differing_fields: BTreeMap::new(),
        }
    }
}

impl RouteEvidence {
    /// Adds another piece of evidence about the same route to this one.
    pub fn merge(&mut self, other: &RouteEvidence) -> Result<(), DistributionError> {
        self.outcomes.merge(&other.outcomes);
        self.latency_us.merge(&other.latency_us)?;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
        self.comparisons.compared += other.comparisons.compared;
        self.comparisons.mismatched += other.comparisons.mismatched;
        self.noise_samples += other.noise_samples;
        for (field, counts) in &other.differing_fields {
            let into = self.differing_fields.entry(field.clone()).or_default();
            into.differed += counts.differed;
            into.noise += counts.noise;
        }
        Ok(())
    }
}

/// How often one response field differed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDifferences {
    /// Compared response pairs (stable vs candidate) in which the field differed.
    pub differed: u64,
    /// Noise samples (stable vs a second stable run) in which the field differed.
    pub noise: u64,
}

/// The process's resource use, sampled at each look (see
/// [`ProcessSampler`](crate::metrics::ProcessSampler)).
///
/// Rates are per interval between two samples, so their [`Moments`] say both the typical
/// level and how much it moved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessEvidence {
    /// CPU used per wall-clock second, in cores (1.0 = one core busy all the time).
    pub cpu_cores: Moments,
    /// Resident memory in bytes at each sample.
    pub rss_bytes: Moments,
    /// Largest resident memory seen, in bytes.
    pub peak_rss_bytes: u64,
    /// Bytes per second the process read through any descriptor (files, sockets, pipes).
    pub read_bytes_per_second: Moments,
    /// Bytes per second the process wrote through any descriptor (files, sockets, pipes).
    pub write_bytes_per_second: Moments,
    /// Bytes per second fetched from storage devices (empty where the kernel does not say).
    pub storage_read_bytes_per_second: Moments,
    /// Bytes per second sent to storage devices (empty where the kernel does not say).
    pub storage_write_bytes_per_second: Moments,
}

impl ProcessEvidence {
    /// Adds another piece of process evidence (another interval or replica) to this one.
    pub fn merge(&mut self, other: &ProcessEvidence) {
        self.cpu_cores.merge(&other.cpu_cores);
        self.rss_bytes.merge(&other.rss_bytes);
        self.peak_rss_bytes = self.peak_rss_bytes.max(other.peak_rss_bytes);
        self.read_bytes_per_second
            .merge(&other.read_bytes_per_second);
        self.write_bytes_per_second
            .merge(&other.write_bytes_per_second);
        self.storage_read_bytes_per_second
            .merge(&other.storage_read_bytes_per_second);
        self.storage_write_bytes_per_second
            .merge(&other.storage_write_bytes_per_second);
    }
}

fn merge_optional(
    into: &mut Option<Distribution>,
    from: &Option<Distribution>,
) -> Result<(), DistributionError> {
    match (into.as_mut(), from) {
        (_, None) => Ok(()),
        (Some(into), Some(from)) => into.merge(from),
        (None, Some(from)) => {
            *into = Some(from.clone());
            Ok(())
        }
    }
}

/// The paired statistics of stable and candidate at one look, with the rollout's context.
///
/// This is what a [`Predictor`](crate::Predictor) sees. It serializes with serde, so each
/// look can be logged and kept as training data for the learned predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The phase the rollout was in when the evidence was collected.
    pub phase: Phase,
    /// The candidate's share of live traffic at that time.
    pub share: Share,
    /// Time since the rollout started.
    #[serde(with = "humantime_serde")]
    pub elapsed: Duration,
    /// How many looks the controller had taken, this one included.
    pub look: u64,
    /// The stable build's statistics, cumulative since the rollout started.
    pub stable: ArmEvidence,
    /// The candidate's statistics, cumulative since the rollout started.
    pub candidate: ArmEvidence,
}

impl Evidence {
    /// Empty evidence for a pair of builds, before the first look.
    pub fn new(stable: Version, candidate: Version) -> Self {
        Self {
            phase: Phase::Idle,
            share: Share::ZERO,
            elapsed: Duration::ZERO,
            look: 0,
            stable: ArmEvidence::new(stable),
            candidate: ArmEvidence::new(candidate),
        }
    }

    /// The statistics of one arm.
    pub fn arm(&self, arm: Arm) -> &ArmEvidence {
        match arm {
            Arm::Stable => &self.stable,
            Arm::Candidate => &self.candidate,
        }
    }

    /// The statistics of one arm, to fill in.
    pub fn arm_mut(&mut self, arm: Arm) -> &mut ArmEvidence {
        match arm {
            Arm::Stable => &mut self.stable,
            Arm::Candidate => &mut self.candidate,
        }
    }

    /// The smaller of the two arms' request counts: what "enough samples" is judged on.
    pub fn samples_per_arm(&self) -> u64 {
        self.stable.requests().min(self.candidate.requests())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_bounds_are_valid() {
        assert!(Distribution::new(1, 60_000_000, 3).is_ok());
        assert!(Distribution::new(1, 60_000_000_000, 3).is_ok());
        assert!(Distribution::new(1, 1 << 40, 3).is_ok());
    }

    #[test]
    fn invalid_bounds_are_an_error_not_a_panic() {
        assert!(matches!(
            Distribution::new(10, 5, 3),
            Err(DistributionError::InvalidBounds {
                low: 10,
                high: 5,
                ..
            })
        ));
        assert!(Distribution::new(1, 1000, 9).is_err());
    }

    #[test]
    fn values_above_range_are_clamped_not_lost() {
        let mut d = Distribution::latency_us();
        d.record(u64::MAX);
        assert_eq!(d.count(), 1);
        assert!(d.max() >= 60_000_000);
    }

    #[test]
    fn distribution_round_trips_through_json() {
        let mut d = Distribution::latency_us();
        for v in [1, 10, 100, 1000, 10_000, 123_456] {
            d.record(v);
        }
        let json = serde_json::to_string(&d).expect("serializes");
        let back: Distribution = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back.count(), d.count());
        assert_eq!(back.quantile(0.5), d.quantile(0.5));
        assert_eq!(back.max(), d.max());
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = ArmEvidence::new(Version::new("x", "1"));
        let mut b = ArmEvidence::new(Version::new("x", "1"));
        let mut all = ArmEvidence::new(Version::new("x", "1"));
        for i in 0..100u64 {
            let outcome = if i % 10 == 0 {
                Outcome::ServerError
            } else {
                Outcome::Success
            };
            let target = if i % 2 == 0 { &mut a } else { &mut b };
            target.record_request(outcome, 100 + i);
            all.record_request(outcome, 100 + i);
        }
        a.merge(&b).expect("same bounds");
        assert_eq!(a.outcomes, all.outcomes);
        assert_eq!(a.latency_us.quantile(0.9), all.latency_us.quantile(0.9));
    }

    #[test]
    fn log_moments_match_direct_computation() {
        let mut d = Distribution::latency_us();
        let mut direct = Moments::default();
        for v in [100u64, 200, 400, 800, 1600] {
            d.record(v);
            direct.add((v as f64).ln());
        }
        let m = d.log_moments();
        assert_eq!(m.count(), 5);
        assert!((m.mean() - direct.mean()).abs() < 1e-3);
        assert!((m.variance() - direct.variance()).abs() < 1e-2);
    }

    #[test]
    fn count_above_counts_the_tail() {
        let mut d = Distribution::latency_us();
        for v in 1..=100u64 {
            d.record(v * 10);
        }
        assert_eq!(d.count_above(500), 50);
    }
}
