//! How live requests are routed and how the shadow copies, compares and spends.

use std::fmt;
use std::sync::Arc;

use super::{ShadowBudget, ShadowResources};
#[cfg(doc)]
use crate::compare::ExactComparison;
use crate::compare::{Comparator, CompareResponses};
use crate::mirror::redact::Redaction;
use crate::mirror::{ArmOverride, HeaderNameError, StickyKey, header_name};
use crate::model::Share;

/// The default body limit: 64 KiB, per request body copied and per response body compared.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// How live requests are routed, how much of each read is copied and compared, and what
/// the shadow may spend. Framework-neutral: both adapters follow the rollout's.
///
/// The defaults are safe: bodies up to 64 KiB are copied, `content-type` is compared along
/// with status and body, every read is mirrored, no sticky key. (An override header, which
/// must be signed, is the rollout's: see
/// [`RolloutBuilder::override_header`](crate::RolloutBuilder::override_header).) Which
/// requests are reads, and which headers a copy carries, is the rollout's
/// [`Mirror`](crate::mirror::Mirror)'s to say.
///
/// ```
/// use shadowlib::Share;
/// use shadowlib::mirror::StickyKey;
/// use shadowlib::shadow::ShadowConfig;
///
/// let config = ShadowConfig::new()
///     .with_sticky_key(StickyKey::cookie("session")?)
///     .with_body_limit(16 * 1024)
///     .with_compare_headers(["content-type", "cache-control"])?
///     .with_mirror_share(Share::from_percent(25.0)?);
/// assert_eq!(config.body_limit(), 16 * 1024);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ShadowConfig {
    pub(crate) sticky: Option<StickyKey>,
    pub(crate) arm_override: Option<ArmOverride>,
    pub(crate) body_limit: usize,
    pub(crate) mirror_share: Share,
    pub(crate) twin_share: Share,
    pub(crate) canary_mirror_share: Share,
    pub(crate) compared_headers: Arc<[String]>,
    pub(crate) comparator: Arc<dyn CompareResponses>,
    pub(crate) resources: ShadowResources,
    /// The rollout's: what the adapters scrub from what they log of a request.
    pub(crate) redaction: Redaction,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            sticky: None,
            arm_override: None,
            body_limit: DEFAULT_BODY_LIMIT,
            mirror_share: Share::FULL,
            twin_share: Share::FULL,
            canary_mirror_share: Share::from_ppm(Share::PPM_SCALE / 2).unwrap_or(Share::FULL),
            compared_headers: Arc::from(["content-type".to_owned()]),
            comparator: Arc::new(Comparator::default()),
            resources: ShadowResources::default(),
            redaction: Redaction::new(),
        }
    }
}

impl fmt::Debug for ShadowConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowConfig")
            .field("sticky", &self.sticky)
            .field("arm_override", &self.arm_override)
            .field("body_limit", &self.body_limit)
            .field("mirror_share", &self.mirror_share)
            .field("twin_share", &self.twin_share)
            .field("canary_mirror_share", &self.canary_mirror_share)
            .field("compared_headers", &self.compared_headers)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

impl ShadowConfig {
    /// The safe defaults described above.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the sticky routing key is read from.
    pub fn with_sticky_key(mut self, key: StickyKey) -> Self {
        self.sticky = Some(key);
        self
    }

    /// The largest request body copied to the shadow, and the largest response body
    /// compared, in bytes. A read with a larger body is not mirrored (and is counted).
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The share of reads going to stable that are copied to the shadow, drawn at random
    /// per read (default: all). The rest are counted as
    /// [`not_sampled`](super::ShadowCounts::not_sampled) and cost the live path only the
    /// draw.
    ///
    /// Mirroring is the live path's main cost beyond the layer itself (see the adapters'
    /// "What it costs" docs): on handlers of a few microseconds, a share below 100% buys
    /// most of it back, at the price of fewer comparisons and less shadow evidence per
    /// minute, so a rollout waits longer for the same certainty.
    ///
    /// It is the share outside [off-peak windows](ShadowResources::off_peak), and the
    /// ceiling of the [adaptive share](ShadowResources::adaptive); the share in force is
    /// [`ShadowCounts::mirror_share`](super::ShadowCounts::mirror_share).
    pub fn with_mirror_share(mut self, share: Share) -> Self {
        self.mirror_share = share;
        self
    }

    /// The share of reads copied to the shadow outside off-peak windows.
    pub fn mirror_share(&self) -> Share {
        self.mirror_share
    }

    /// The most of the reads stable serves that are mirrored while the candidate serves a
    /// share of live traffic (default: half; the mirror share applies too, whichever is
    /// lower).
    ///
    /// A mirrored read costs its live request the copy: in the canary that would make
    /// stable's live requests slower than the candidate's by exactly that, and the canary
    /// compares live requests of both. So mirrored requests are kept out of the canary's
    /// evidence (counted only), and this share leaves the canary the rest of stable's reads
    /// to compare with, while the shadow keeps watching.
    pub fn with_canary_mirror_share(mut self, share: Share) -> Self {
        self.canary_mirror_share = share;
        self
    }

    /// The share of mirrored reads the stable *twin* (a second instance of the stable
    /// build, in the shadow) runs too, drawn at random per read (default: all).
    ///
    /// Each read the twin runs is a *pair*: both builds measured the same way, on the same
    /// request, in the same place, which is what the shadow phase is judged on — latency,
    /// CPU and allocations per read, failures, and mismatches net of noise (the twin's
    /// own differences from live). A read without the twin is compared with live and
    /// counted, but never paired. A lower share halves the shadow's cost at 50%, at the
    /// price of fewer pairs per minute.
    pub fn with_twin_share(mut self, share: Share) -> Self {
        self.twin_share = share;
        self
    }

    /// The response headers compared besides status and body.
    pub fn with_compare_headers<'a>(
        mut self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, HeaderNameError> {
        let names = names
            .into_iter()
            .map(header_name)
            .collect::<Result<Vec<_>, _>>()?;
        self.compared_headers = Arc::from(names);
        Ok(self)
    }

    /// Names what differs between a live response and a shadow one (default: the
    /// field-level [`Comparator`], with its default ignore rules; [`ExactComparison`]
    /// compares whole bodies).
    pub fn with_comparator(mut self, comparator: impl CompareResponses) -> Self {
        self.comparator = Arc::new(comparator);
        self
    }

    /// What one copy may spend, and the most copies queued and running (validated when
    /// the runtime is built). The same as setting [`ShadowResources::budget`].
    pub fn with_budget(mut self, budget: ShadowBudget) -> Self {
        self.resources.budget = budget;
        self
    }

    /// What the shadow may use and when: sized like live, how long a copy may wait for
    /// CPU, the adaptive share, off-peak windows and the cost cap, with the budget
    /// (validated when the runtime is built; see [`ShadowResources`]).
    ///
    /// The share outside off-peak windows is [`with_mirror_share`](Self::with_mirror_share)'s.
    pub fn with_resources(mut self, resources: ShadowResources) -> Self {
        self.resources = resources;
        self
    }

    /// The body limit in bytes.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// The shadow's budget.
    pub fn budget(&self) -> &ShadowBudget {
        &self.resources.budget
    }

    /// What the shadow may use, and when.
    pub fn resources(&self) -> &ShadowResources {
        &self.resources
    }
}
