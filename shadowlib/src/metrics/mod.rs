//! Measuring both builds: KPI sources for the evidence.
//!
//! * [`MetricSource`] is how every KPI reaches the controller: the rollout's own recorder,
//!   the process sampler, and any source of yours
//!   ([`RolloutBuilder::metric_source`](crate::RolloutBuilder::metric_source)).
//! * [`KpiRecorder`] records every live request of both builds — latency on HDR
//!   histograms, outcome class, bytes, route label — per canary step, without a global
//!   lock. Every rollout has one the adapters feed; keep one of your own for a service that
//!   is not HTTP. What the shadow measures (each mirrored read on the stable twin and on
//!   the candidate, with CPU and allocations) the rollout records as pairs itself.
//! * [`Measured`] (from [`MeasureExt::measured`]) wraps a request's future and adds up the
//!   thread CPU time, and with the `count-allocations` feature the allocations, of every
//!   poll, wherever tokio runs it.
//! * `CountingAllocator` (feature `count-allocations`) is the global allocator that makes
//!   allocations countable; without it reports say "allocations: not measured".
//! * The process's CPU, memory and I/O are sampled at each look (on Linux), unless the
//!   rollout is built [without it](crate::RolloutBuilder::without_process_sampling).
//! * Custom KPIs go through [`Rollout::record_custom`](crate::Rollout::record_custom), or
//!   through your own [`MetricSource`].
//!
//! ```
//! use std::time::Duration;
//! use shadowlib::metrics::{KpiRecorder, MeasureExt, RequestRecord};
//! use shadowlib::{Arm, Outcome, Version};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let recorder = KpiRecorder::new(Version::new("shop", "41"), Version::new("shop", "42"));
//! let started = std::time::Instant::now();
//! let (status, usage) = async { 200u16 }.measured().await;
//! recorder.record_request(
//!     RequestRecord::new(Arm::Candidate, Outcome::from_http_status(status), started.elapsed())
//!         .route("GET /cart")
//!         .usage(usage),
//! );
//! let candidate = recorder.snapshot(Arm::Candidate);
//! assert_eq!(candidate.routes["GET /cart"].outcomes.success, 1);
//! println!("{candidate}");
//! # }
//! ```

mod alloc;
mod attribution;
mod labels;
mod pairs;
mod process;
mod recorder;

pub(crate) use labels::LabelSet;
pub use pairs::OVERFLOW_FIELD;
pub(crate) use pairs::{Differed, PairRecorder, ReadComparison, Run};

use async_trait::async_trait;
use thiserror::Error;

#[cfg(feature = "count-allocations")]
pub use alloc::CountingAllocator;
pub use alloc::{Allocations, thread_allocations};
pub(crate) use attribution::under_valgrind;
pub use attribution::{MeasureExt, Measured, ResourceUsage, thread_cpu_time};
pub(crate) use process::{ProcessSampler, sample_process};
pub use recorder::{KpiRecorder, RecorderConfig, RecorderConfigError, RequestRecord};

use crate::evidence::Evidence;
use crate::model::{Phase, Share};

/// A KPI source could not deliver its measurements this look.
#[derive(Debug, Error)]
#[error("metric source `{source_name}` failed: {message}")]
pub struct MetricError {
    /// The source that failed.
    pub source_name: String,
    /// What went wrong.
    pub message: String,
}

/// Yields KPI measurements (latency, errors, CPU, memory, I/O or any custom one) of the
/// builds.
///
/// At each look the controller asks every source to add what it measured to the
/// [`Evidence`]: the rollout's own recorders fill in the shadow's pairs and the canary's
/// live requests, the process sampler the process's resources, and a source of yours
/// whatever it measures (a custom KPI of each build, say). A source adds only what it
/// measures, and adds its totals since the rollout started (cumulative, not per interval),
/// so merging several sources never double counts. Add what you measured where it was
/// measured: a number from live traffic is not comparable with one from the shadow.
///
/// ```
/// use async_trait::async_trait;
/// use shadowlib::{Arm, Evidence, MetricError, MetricSource};
///
/// /// Reports how many database queries each build issues per request.
/// struct QueriesPerRequest;
///
/// #[async_trait]
/// impl MetricSource for QueriesPerRequest {
///     fn name(&self) -> &str {
///         "db-queries"
///     }
///
///     async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError> {
///         let kpi = into.custom_mut("db_queries_per_request");
///         kpi.arm_mut(Arm::Stable).add(2.0);
///         kpi.arm_mut(Arm::Candidate).add(3.0);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait MetricSource: Send + Sync {
    /// A short name, shown in errors and reports.
    fn name(&self) -> &str;

    /// Adds this source's measurements to `into`.
    async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError>;

    /// The rollout moved to `phase`, in which the candidate has `share` of live traffic.
    /// A source that keeps live measurements apart by canary step (as
    /// [`KpiRecorder`] does) starts recording under the new one; the default does nothing.
    fn phase_changed(&self, phase: Phase, share: Share) {
        let _ = (phase, share);
    }
}

#[async_trait]
impl<T: MetricSource + ?Sized> MetricSource for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError> {
        (**self).collect(into).await
    }

    fn phase_changed(&self, phase: Phase, share: Share) {
        (**self).phase_changed(phase, share);
    }
}
