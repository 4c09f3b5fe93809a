//! A framework-neutral view of a request's head: what classification, steering and copying
//! read.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;

/// Read access to a request's headers, whatever HTTP library holds them.
///
/// Adapters implement it on a thin wrapper around their framework's header map (one for
/// `http` 1, one for `http` 0.2), so the logic that reads headers lives once, here.
/// Header names are compared in lowercase, the form both libraries store them in.
pub trait HeaderView {
    /// The first value of header `name` (lowercase), if any.
    fn first(&self, name: &str) -> Option<&[u8]>;

    /// Calls `visit` with every value of header `name` (lowercase), in order.
    fn each_value<'a>(&'a self, name: &str, visit: &mut dyn FnMut(&'a [u8]));

    /// Calls `visit` with every header as `(lowercase name, value)`, in order.
    fn each<'a>(&'a self, visit: &mut dyn FnMut(&'a str, &'a [u8]));
}

/// Headers as a list of `(name, value)` pairs: for tests and for callers without a header
/// map. Names must already be lowercase.
///
/// ```
/// use shadowlib::mirror::{HeaderList, HeaderView};
///
/// let headers = HeaderList(vec![("cookie", b"a=1".as_slice()), ("cookie", b"b=2".as_slice())]);
/// assert_eq!(headers.first("cookie"), Some(b"a=1".as_slice()));
/// let mut all = Vec::new();
/// headers.each_value("cookie", &mut |v| all.push(v.to_vec()));
/// assert_eq!(all.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList<'a>(pub Vec<(&'a str, &'a [u8])>);

impl HeaderView for HeaderList<'_> {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn each_value<'s>(&'s self, name: &str, visit: &mut dyn FnMut(&'s [u8])) {
        self.0
            .iter()
            .filter(|(n, _)| *n == name)
            .for_each(|(_, v)| visit(v));
    }

    fn each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, &'s [u8])) {
        self.0.iter().for_each(|(n, v)| visit(n, v));
    }
}

/// Any header map that iterates as `(name, value)` pairs, seen as a [`HeaderView`]: the
/// header maps of `http` 1 and of actix-web (`http` 0.2) both do, so both adapters use this
/// one view. Names must be lowercase, as both maps keep them.
///
/// ```
/// use shadowlib::mirror::{HeaderPairs, HeaderView};
///
/// // Like `http::HeaderMap`, a `BTreeMap` iterates as `(&name, &value)`.
/// let map = std::collections::BTreeMap::from([("accept".to_owned(), b"*/*".to_vec())]);
/// assert_eq!(HeaderPairs(&map).first("accept"), Some(b"*/*".as_slice()));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HeaderPairs<'a, M: ?Sized>(pub &'a M);

impl<'a, M, N, V> HeaderView for HeaderPairs<'a, M>
where
    M: ?Sized,
    &'a M: IntoIterator<Item = (&'a N, &'a V)>,
    N: AsRef<str> + ?Sized + 'a,
    V: AsRef<[u8]> + ?Sized + 'a,
{
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.0
            .into_iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }

    fn each_value<'s>(&'s self, name: &str, visit: &mut dyn FnMut(&'s [u8])) {
        for (n, v) in self.0 {
            if n.as_ref() == name {
                visit(v.as_ref());
            }
        }
    }

    fn each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, &'s [u8])) {
        for (n, v) in self.0 {
            visit(n.as_ref(), v.as_ref());
        }
    }
}

/// What the core needs to know about a request to classify, route and copy it, borrowed
/// from the framework's request: nothing is copied to build one.
///
/// The method is as written on the wire (`"GET"`), the path is without the query. The
/// scheme and authority are present only when the request carried an absolute URI (HTTP/2
/// requests, and requests through a forward proxy); a copy then targets the whole URI, as
/// the live build saw it.
///
/// ```
/// use shadowlib::mirror::{HeaderList, HttpVersion, RequestHead};
///
/// let headers = HeaderList::default();
/// let head = RequestHead::new("GET", "/users/7", &headers)
///     .with_query(Some("tab=orders"))
///     .with_version(HttpVersion::Http2);
/// assert_eq!(head.to_string(), "GET /users/7");
/// assert_eq!(head.target(), "/users/7?tab=orders");
/// ```
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The method, in the case it was sent (methods are case-sensitive).
    pub method: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    /// The query string, without the `?`.
    pub query: Option<&'a str>,
    /// The scheme of an absolute request URI.
    pub scheme: Option<&'a str>,
    /// The authority of an absolute request URI.
    pub authority: Option<&'a str>,
    /// The HTTP version.
    pub version: HttpVersion,
    /// The client's address, where the framework knows it.
    pub peer: Option<SocketAddr>,
    /// The headers.
    pub headers: &'a dyn HeaderView,
    /// Makes what the adapter's shadow side needs of the live request beyond bytes (its
    /// framework's request extensions, say); called only when the request is mirrored.
    pub attachment: Option<&'a Attach<'a>>,
}

/// What [`RequestHead::attachment`] calls: the adapter's own data for a copy, if any.
pub type Attach<'a> = dyn Fn() -> Option<Box<dyn Any + Send>> + 'a;

impl<'a> RequestHead<'a> {
    /// A view of one HTTP/1.1 request in origin form, without a query.
    pub fn new(method: &'a str, path: &'a str, headers: &'a dyn HeaderView) -> Self {
        Self {
            method,
            path,
            query: None,
            scheme: None,
            authority: None,
            version: HttpVersion::Http11,
            peer: None,
            headers,
            attachment: None,
        }
    }

    /// Sets the query string (without the `?`).
    pub fn with_query(mut self, query: Option<&'a str>) -> Self {
        self.query = query;
        self
    }

    /// Sets the scheme and authority of an absolute request URI.
    pub fn with_origin(mut self, scheme: Option<&'a str>, authority: Option<&'a str>) -> Self {
        self.scheme = scheme;
        self.authority = authority;
        self
    }

    /// Sets the HTTP version.
    pub fn with_version(mut self, version: HttpVersion) -> Self {
        self.version = version;
        self
    }

    /// Sets the client's address.
    pub fn with_peer(mut self, peer: Option<SocketAddr>) -> Self {
        self.peer = peer;
        self
    }

    /// Sets what makes the adapter's own data for a copy (see
    /// [`RequestCopy::attachment`](super::RequestCopy::attachment)): called only when the
    /// request is mirrored, so the live path pays for it only then.
    pub fn with_attachment(mut self, attach: &'a Attach<'a>) -> Self {
        self.attachment = Some(attach);
        self
    }

    /// The request target as the live build received it: the path and query, or the whole
    /// URI when the request carried an absolute one.
    pub fn target(&self) -> String {
        let mut target = String::new();
        self.write_target(&mut target);
        target
    }

    /// Appends the request target to `into` (see [`target`](Self::target)).
    pub(crate) fn write_target(&self, into: &mut impl TargetBuffer) {
        if let (Some(scheme), Some(authority)) = (self.scheme, self.authority) {
            into.push_str(scheme);
            into.push_str("://");
            into.push_str(authority);
        }
        into.push_str(self.path);
        if let Some(query) = self.query {
            into.push_str("?");
            into.push_str(query);
        }
    }
}

/// Where a request target is written: a `String`, or a copy's byte buffer.
pub(crate) trait TargetBuffer {
    fn push_str(&mut self, part: &str);
}

impl TargetBuffer for String {
    fn push_str(&mut self, part: &str) {
        String::push_str(self, part);
    }
}

impl TargetBuffer for Vec<u8> {
    fn push_str(&mut self, part: &str) {
        self.extend_from_slice(part.as_bytes());
    }
}

impl fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RequestHead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// The HTTP version of a request, in the core's own words: adapters map their framework's
/// version to it and back with one table (see [`HttpVersion::from_table`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/0.9.
    Http09,
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    #[default]
    Http11,
    /// HTTP/2.
    Http2,
    /// HTTP/3.
    Http3,
}

impl HttpVersion {
    /// Every version, in the order of the tables [`from_table`](Self::from_table) and
    /// [`in_table`](Self::in_table) take.
    pub const ALL: [HttpVersion; 5] = [
        HttpVersion::Http09,
        HttpVersion::Http10,
        HttpVersion::Http11,
        HttpVersion::Http2,
        HttpVersion::Http3,
    ];

    /// The version `version` is in `table`, a framework's five versions in the order of
    /// [`ALL`](Self::ALL); HTTP/1.1 for a version the table lacks.
    ///
    /// ```
    /// use shadowlib::mirror::HttpVersion;
    ///
    /// // A framework's own version type, here plain text.
    /// const TABLE: [&str; 5] = ["0.9", "1.0", "1.1", "2", "3"];
    /// assert_eq!(HttpVersion::from_table(&TABLE, &"2"), HttpVersion::Http2);
    /// assert_eq!(HttpVersion::Http2.in_table(&TABLE), "2");
    /// ```
    pub fn from_table<V: PartialEq>(table: &[V; 5], version: &V) -> HttpVersion {
        table
            .iter()
            .position(|v| v == version)
            .map_or(HttpVersion::Http11, |index| Self::ALL[index])
    }

    /// This version's entry in `table` (see [`from_table`](Self::from_table)).
    pub fn in_table<V: Copy>(self, table: &[V; 5]) -> V {
        let index = Self::ALL.iter().position(|v| *v == self).unwrap_or(2);
        table[index]
    }
}

/// What is known of a request body's length before it is read, as HTTP libraries report
/// it (`Content-Length`, or a body type that knows it is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySize {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Exact(u64),
    /// At least this many bytes, the rest unknown (a chunked or streamed body).
    AtLeast(u64),
}

impl BodySize {
    /// Builds the size from an exact length if known, else a lower bound.
    pub fn from_hint(exact: Option<u64>, lower: u64) -> Self {
        match exact {
            Some(0) => BodySize::Empty,
            Some(n) => BodySize::Exact(n),
            None => BodySize::AtLeast(lower),
        }
    }

    /// Whether a body of this size certainly exceeds `limit` bytes.
    pub fn exceeds(self, limit: usize) -> bool {
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        match self {
            BodySize::Empty => false,
            BodySize::Exact(n) => n > limit,
            BodySize::AtLeast(n) => n > limit,
        }
    }
}
