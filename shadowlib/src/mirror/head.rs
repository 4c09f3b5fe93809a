//! A framework-neutral view of a request's head: what classification and steering read.

use std::fmt;

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

/// What the core needs to know about a request to classify and route it: the method as
/// written on the wire (`"GET"`), the path without the query, and the headers.
///
/// ```
/// use shadowlib::mirror::{HeaderList, RequestHead};
///
/// let headers = HeaderList::default();
/// let head = RequestHead::new("GET", "/users/7", &headers);
/// assert_eq!(head.to_string(), "GET /users/7");
/// ```
#[derive(Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method, in the case it was sent (methods are case-sensitive).
    pub method: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    /// The headers.
    pub headers: &'a dyn HeaderView,
}

impl<'a> RequestHead<'a> {
    /// A view of one request.
    pub fn new(method: &'a str, path: &'a str, headers: &'a dyn HeaderView) -> Self {
        Self {
            method,
            path,
            headers,
        }
    }
}

impl fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RequestHead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
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
