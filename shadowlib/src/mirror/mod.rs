//! Deciding which requests may reach the shadow, copying them, and running the copies.
//!
//! Classification is deny-by-default: a request reaches the shadow only when a classifier
//! calls it a read. Writes never do, so the shadow can never change data the live build
//! owns.
//!
//! Everything here is framework-neutral, so the tower and actix-web adapters share it and
//! only translate their request and response types:
//!
//! * [`RequestHead`] and [`HeaderView`]: the view of a request the core reads.
//! * [`ReadClassifier`], [`ReadRules`], [`RouteRule`], [`PathPattern`]: which requests
//!   are reads (`GET`, `HEAD`, `OPTIONS`, plus routes the application declares).
//! * [`HeaderPolicy`]: hop-by-hop headers stripped and a redaction list applied to copies;
//!   [`StickyKey`] and [`ArmOverride`]: the headers that steer a live request.
//! * [`ShadowRuntime`]: routes each request, hands copies ([`RequestCopy`]: plain bytes
//!   in reused buffers) to a bounded queue without waiting, runs them on its own [`ShadowWorker`] under a timeout with panics caught,
//!   compares the responses ([`CompareResponses`]) and records everything into the
//!   [`KpiRecorder`](crate::KpiRecorder) and [`ShadowStats`].
//! * [`Rollout`]: the rollout an adapter serves; [`LiveResponse`]: the recording of each
//!   live response once it has been sent.
//! * [`Mirror`]: the same decision for requests that are not HTTP.

mod classify;
mod compare;
mod config;
mod copy;
mod head;
mod headers;
mod labels;
mod live;
mod runtime;
mod stats;

pub use classify::{PathPattern, ReadClassifier, ReadRules, RouteRule, RuleError, SAFE_METHODS};
pub use compare::{
    BodyCapture, CompareResponses, Comparison, Difference, ExactComparison, ResponseSummary,
};
pub use config::{DEFAULT_BODY_LIMIT, DEFAULT_MAX_ROUTES, ShadowConfig};
pub use copy::{HttpVersion, RequestCopy};
pub use head::{BodySize, HeaderList, HeaderView, RequestHead};
pub use headers::{
    ArmOverride, ForwardHeader, HOP_BY_HOP, HeaderFilter, HeaderNameError, HeaderPolicy, StickyKey,
    header_name,
};
pub use live::{LiveResponse, Rollout};
pub use runtime::{
    LiveBodyObserver, LiveObserver, MirrorTicket, ResponseCapture, Route, SHADOW_TICK, ShadowError,
    ShadowReply, ShadowResult, ShadowRuntime, ShadowWorker, in_shadow,
};
pub use stats::{OTHER_ROUTES, ShadowCounts, ShadowStats};

use std::fmt;

/// Whether a request may be copied to the shadow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadClass {
    /// A read: safe to run on the shadow.
    Read,
    /// Not a read (or not known to be one): never mirrored. The reason is counted.
    NotRead(&'static str),
}

impl ReadClass {
    /// Whether the request may be mirrored.
    pub fn is_read(&self) -> bool {
        matches!(self, ReadClass::Read)
    }
}

impl fmt::Display for ReadClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadClass::Read => f.write_str("read"),
            ReadClass::NotRead(why) => write!(f, "not a read: {why}"),
        }
    }
}

/// Decides whether a request may reach the shadow and produces the copy it gets.
///
/// Implementations must be deny-by-default: anything they cannot positively identify as
/// a read is [`ReadClass::NotRead`]. `copy` is called only for reads, on the live path, so
/// it must be cheap and must not block; returning `None` skips mirroring this request.
///
/// ```
/// use shadowlib::{Mirror, ReadClass};
///
/// #[derive(Clone)]
/// enum Command {
///     Get(String),
///     Put(String, String),
/// }
///
/// struct Commands;
///
/// impl Mirror<Command> for Commands {
///     fn classify(&self, request: &Command) -> ReadClass {
///         match request {
///             Command::Get(_) => ReadClass::Read,
///             Command::Put(..) => ReadClass::NotRead("writes are never mirrored"),
///         }
///     }
///
///     fn copy(&self, request: &Command) -> Option<Command> {
///         Some(request.clone())
///     }
/// }
///
/// assert!(Commands.classify(&Command::Get("k".into())).is_read());
/// assert!(!Commands.classify(&Command::Put("k".into(), "v".into())).is_read());
/// ```
pub trait Mirror<Req>: Send + Sync {
    /// Whether `request` may be mirrored.
    fn classify(&self, request: &Req) -> ReadClass;

    /// The copy handed to the shadow, or `None` to skip this one.
    fn copy(&self, request: &Req) -> Option<Req>;
}
