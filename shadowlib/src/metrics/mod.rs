//! Measuring both builds: KPI sources for the evidence.

mod recorder;

use async_trait::async_trait;
use thiserror::Error;

pub use recorder::KpiRecorder;

use crate::{Arm, ArmEvidence};

/// A KPI source could not deliver its measurements this look.
#[derive(Debug, Error)]
#[error("metric source `{source_name}` failed: {message}")]
pub struct MetricError {
    /// The source that failed.
    pub source_name: String,
    /// What went wrong.
    pub message: String,
}

/// Yields KPI measurements (latency, errors, CPU, memory, I/O or any custom one) for a build.
///
/// At each look the controller asks every source for each arm and merges what they add
/// into the [`Evidence`](crate::Evidence). A source adds only what it measures, and adds
/// its totals since the rollout started (cumulative, not per interval), so merging
/// several sources never double counts.
///
/// ```
/// use async_trait::async_trait;
/// use shadowlib::{Arm, ArmEvidence, MetricError, MetricSource};
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
///     async fn collect(&self, arm: Arm, into: &mut ArmEvidence) -> Result<(), MetricError> {
///         let per_request = match arm {
///             Arm::Stable => 2.0,
///             Arm::Candidate => 3.0,
///         };
///         into.custom.entry("db_queries_per_request".into()).or_default().add(per_request);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait MetricSource: Send + Sync {
    /// A short name, shown in errors and reports.
    fn name(&self) -> &str;

    /// Adds this source's measurements of `arm` to `into`.
    async fn collect(&self, arm: Arm, into: &mut ArmEvidence) -> Result<(), MetricError>;
}
