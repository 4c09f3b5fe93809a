//! Deciding which requests may reach the shadow, and copying them.
//!
//! Classification is deny-by-default: a request reaches the shadow only when the
//! [`Mirror`] calls it a read. Writes never do, so the shadow can never change data the
//! live build owns.
//!
//! Everything here is framework-neutral, so the tower and actix-web adapters share it:
//! they describe each request as a [`RequestHead`] (borrowed from their framework's
//! request, nothing copied), and every request goes through the rollout's [`Mirror`] —
//! [`HttpMirror`] unless you plug in your own.
//!
//! * [`HttpMirror`]: the built-in mirror. [`ReadRules`] say which requests are reads
//!   (`GET`, `HEAD`, `OPTIONS`, plus routes you declare with [`RouteRule`]s and
//!   [`PathPattern`]s); a [`HeaderPolicy`] strips hop-by-hop headers from the copy and
//!   redacts the ones you list.
//! * [`RequestCopy`]: the copy the shadow receives, plain bytes in reused buffers.
//! * [`StickyKey`] and [`ArmOverride`]: the headers that steer a live request (the
//!   override signed, see [`ArmOverride::signed`]).

mod arm_override;
mod classify;
mod copy;
mod head;
mod headers;
mod labels;
pub mod redact;

pub use arm_override::{
    ArmOverride, DEFAULT_OVERRIDE_LIFETIME, MIN_OVERRIDE_SECRET, OverrideCounts, OverrideError,
};
pub use classify::{PathPattern, ReadRules, RouteRule, RuleError, SAFE_METHODS};
pub use copy::RequestCopy;
pub use head::{Attach, BodySize, HeaderList, HeaderPairs, HeaderView, HttpVersion, RequestHead};
pub use headers::{HOP_BY_HOP, HeaderNameError, HeaderPolicy, StickyKey};

pub(crate) use headers::{ForwardHeader, header_name};

pub(crate) use copy::PackedHeaders;
pub(crate) use labels::RouteLabels;

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
/// Both HTTP adapters call the rollout's mirror for every request served by stable while
/// the rollout is live: [`classify`](Mirror::classify) on the live path, then, for a read,
/// [`copy`](Mirror::copy) into a buffer that is used again and again. For HTTP, `Req` is a
/// [`RequestHead`] and the copy a [`RequestCopy`]; [`HttpMirror`] is the built-in one, and
/// a mirror of your own plugs in with
/// [`RolloutBuilder::mirror`](crate::RolloutBuilder::mirror).
///
/// Implementations must be deny-by-default: anything they cannot positively identify as
/// a read is [`ReadClass::NotRead`]. Both methods run on the live path, so they must be
/// cheap and must not block.
///
/// ```
/// use shadowlib::ReadClass;
/// use shadowlib::mirror::{HeaderList, HttpMirror, Mirror, RequestCopy, RequestHead};
///
/// /// GraphQL queries are reads, mutations are not: the client says which in a header.
/// struct GraphQl(HttpMirror);
///
/// impl<'a> Mirror<RequestHead<'a>> for GraphQl {
///     type Copy = RequestCopy;
///
///     fn classify(&self, head: &RequestHead<'a>) -> ReadClass {
///         if head.method == "POST" && head.path == "/graphql" {
///             match head.headers.first("x-graphql-operation") {
///                 Some(b"query") => ReadClass::Read,
///                 _ => ReadClass::NotRead("graphql operation is not a query"),
///             }
///         } else {
///             self.0.classify(head)
///         }
///     }
///
///     fn copy(&self, head: &RequestHead<'a>, copy: &mut RequestCopy) {
///         self.0.copy(head, copy)
///     }
/// }
///
/// let mirror = GraphQl(HttpMirror::new());
/// let mutation = HeaderList(vec![("x-graphql-operation", b"mutation".as_slice())]);
/// assert!(!mirror.classify(&RequestHead::new("POST", "/graphql", &mutation)).is_read());
/// let query = HeaderList(vec![("x-graphql-operation", b"query".as_slice())]);
/// assert!(mirror.classify(&RequestHead::new("POST", "/graphql", &query)).is_read());
/// ```
pub trait Mirror<Req: ?Sized>: Send + Sync {
    /// What the shadow receives.
    type Copy;

    /// Whether `request` may be mirrored.
    fn classify(&self, request: &Req) -> ReadClass;

    /// Writes the copy of `request`, a read, into `copy` (which holds an earlier copy:
    /// replace all of it, reusing its buffers).
    fn copy(&self, request: &Req, copy: &mut Self::Copy);
}

impl<Req: ?Sized, M: Mirror<Req> + ?Sized> Mirror<Req> for std::sync::Arc<M> {
    type Copy = M::Copy;

    fn classify(&self, request: &Req) -> ReadClass {
        (**self).classify(request)
    }

    fn copy(&self, request: &Req, copy: &mut Self::Copy) {
        (**self).copy(request, copy)
    }
}

/// The mirror both HTTP adapters use unless told otherwise: [`ReadRules`] classify
/// (`GET`, `HEAD` and `OPTIONS`, plus the routes you allow, minus the ones you deny), and
/// the copy keeps every header but hop-by-hop ones and those the [`HeaderPolicy`] redacts.
///
/// ```
/// use shadowlib::mirror::{HeaderList, HeaderPolicy, HttpMirror, Mirror, RequestCopy, RequestHead};
///
/// let mirror = HttpMirror::new()
///     .allow("POST /search")?
///     .deny("GET /logout")?
///     .with_headers(HeaderPolicy::new().redact("authorization")?);
/// let headers = HeaderList(vec![("authorization", b"Bearer s3cret".as_slice())]);
/// let search = RequestHead::new("POST", "/search", &headers);
/// assert!(mirror.classify(&search).is_read());
/// assert!(!mirror.classify(&RequestHead::new("GET", "/logout", &headers)).is_read());
///
/// let mut copy = RequestCopy::default();
/// mirror.copy(&search, &mut copy);
/// assert_eq!(copy.headers().count(), 0, "redacted");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpMirror {
    rules: ReadRules,
    headers: HeaderPolicy,
}

impl HttpMirror {
    /// Only `GET`, `HEAD` and `OPTIONS` are reads; hop-by-hop headers are stripped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a route a safe read, written `METHOD /path/{param}`.
    pub fn allow(mut self, rule: &str) -> Result<Self, RuleError> {
        self.rules = self.rules.allow(rule)?;
        Ok(self)
    }

    /// Declares a route never a read, written `METHOD /path/{param}`. Wins over
    /// everything.
    pub fn deny(mut self, rule: &str) -> Result<Self, RuleError> {
        self.rules = self.rules.deny(rule)?;
        Ok(self)
    }

    /// Replaces the read rules.
    pub fn with_rules(mut self, rules: ReadRules) -> Self {
        self.rules = rules;
        self
    }

    /// Which headers the copy leaves out or redacts.
    pub fn with_headers(mut self, policy: HeaderPolicy) -> Self {
        self.headers = policy;
        self
    }

    /// The header policy applied to copies.
    pub fn header_policy(&self) -> &HeaderPolicy {
        &self.headers
    }
}

impl<'a> Mirror<RequestHead<'a>> for HttpMirror {
    type Copy = RequestCopy;

    fn classify(&self, head: &RequestHead<'a>) -> ReadClass {
        self.rules.classify(head)
    }

    fn copy(&self, head: &RequestHead<'a>, copy: &mut RequestCopy) {
        copy.fill_head(head, &self.headers);
    }
}

/// The mirror the HTTP adapters call: any [`Mirror`] of [`RequestHead`]s into
/// [`RequestCopy`]s, behind one pointer.
pub(crate) type HttpMirrorRef =
    std::sync::Arc<dyn for<'a> Mirror<RequestHead<'a>, Copy = RequestCopy>>;
