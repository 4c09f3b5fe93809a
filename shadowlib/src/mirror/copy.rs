//! The copy of a read the live path hands to the shadow.
//!
//! The live path only copies bytes: method, target, the headers the policy lets through
//! and the body, into buffers that are used again and again. The shadow's worker builds
//! the request its candidate takes from that copy, on its own thread.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;

use super::{ForwardHeader, HeaderPolicy, HeaderView, HttpVersion, RequestHead};
use crate::compare::BodyCapture;

/// A copy of one mirrored read, as the shadow's candidate is to receive it: method,
/// target (path and query), version, peer address, the headers the
/// [`HeaderPolicy`] forwards (hop-by-hop headers stripped, redactions applied) and the
/// body.
///
/// A [`Mirror`](super::Mirror) fills it on the live path; the adapter reads it on the
/// shadow's side to build the request each build takes (see
/// [`ShadowTarget`](crate::adapter::ShadowTarget)).
///
/// ```
/// use shadowlib::mirror::{HeaderList, HeaderPolicy, HeaderView, HttpVersion, RequestCopy, RequestHead};
///
/// let headers = HeaderList(vec![
///     ("accept", b"application/json".as_slice()),
///     ("connection", b"keep-alive".as_slice()),
///     ("authorization", b"Bearer secret".as_slice()),
/// ]);
/// let policy = HeaderPolicy::new().redact("authorization")?;
/// let mut copy = RequestCopy::default();
/// let head = RequestHead::new("GET", "/items", &headers).with_query(Some("page=2"));
/// copy.fill_head(&head, &policy);
/// assert_eq!((copy.method(), copy.target()), ("GET", "/items?page=2"));
/// assert_eq!(copy.version(), HttpVersion::Http11);
/// let forwarded: Vec<_> = copy.headers().collect();
/// assert_eq!(forwarded, [("accept", b"application/json".as_slice())]);
/// assert_eq!(copy.first("authorization"), None);
/// # Ok::<(), shadowlib::mirror::HeaderNameError>(())
/// ```
#[derive(Default)]
pub struct RequestCopy {
    /// Method, target, then each forwarded header, one after another (see
    /// [`PackedHeaders`]): one buffer, so the copy the live path writes and the worker
    /// reads spans as few cache lines as it can.
    head: Vec<u8>,
    method_len: usize,
    target_len: usize,
    version: HttpVersion,
    peer_addr: Option<SocketAddr>,
    body: BodyCapture,
    attachment: Option<Box<dyn Any + Send>>,
    /// Where live's state stood when the request arrived, for a stateful service:
    /// `(epoch, sequence)` of its delta stream.
    pub(crate) state_position: Option<(u64, u64)>,
}

impl RequestCopy {
    /// The method, as it was sent.
    pub fn method(&self) -> &str {
        text(self.head.get(..self.method_len))
    }

    /// The request target: the path and, if there was one, `?` and the query (or the
    /// whole URI, for a request that came with one, as HTTP/2 requests do).
    pub fn target(&self) -> &str {
        text(
            self.head
                .get(self.method_len..self.method_len + self.target_len),
        )
    }

    /// The path: the target without the query, and without scheme and authority when
    /// the target is a whole URI.
    pub fn path(&self) -> &str {
        let target = self.target();
        let path = match target.find("://") {
            Some(scheme_end) if !target.starts_with('/') => {
                let after_scheme = &target[scheme_end + 3..];
                after_scheme
                    .find(['/', '?'])
                    .map_or("/", |start| &after_scheme[start..])
            }
            _ => target,
        };
        match path.split('?').next() {
            Some(path) if path.starts_with('/') => path,
            _ => "/",
        }
    }

    /// The HTTP version.
    pub fn version(&self) -> HttpVersion {
        self.version
    }

    /// The live request's peer address, when the adapter knows it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// The forwarded headers as `(lowercase name, value)`, in the live request's order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let start = (self.method_len + self.target_len).min(self.head.len());
        PackedHeaders(&self.head[start..])
    }

    /// The body (complete: only bodies within the limit are mirrored).
    pub fn body(&self) -> &[u8] {
        self.body.bytes()
    }

    /// The adapter's own data for the copy, made by the live request's
    /// [`RequestHead::attachment`] when it was mirrored: for the tower adapter, the live
    /// request's extensions. Dropped once the builds' requests are made.
    pub fn attachment(&self) -> Option<&(dyn Any + Send)> {
        self.attachment.as_deref()
    }

    /// Replaces the attachment.
    pub(crate) fn set_attachment(&mut self, attachment: Option<Box<dyn Any + Send>>) {
        self.attachment = attachment;
    }

    /// Replaces the head with `head`'s method, target, version, peer address and headers
    /// (through `policy`), keeping the buffers' allocations. The body is left as it is.
    pub fn fill_head(&mut self, head: &RequestHead<'_>, policy: &HeaderPolicy) {
        self.head.clear();
        self.head.extend_from_slice(head.method.as_bytes());
        head.write_target(&mut self.head);
        self.method_len = head.method.len();
        self.target_len = self.head.len() - self.method_len;
        self.version = head.version;
        self.peer_addr = head.peer;
        let filter = policy.filter(head.headers);
        head.headers.each(&mut |name, value| {
            let value = match filter.forward(name) {
                ForwardHeader::Keep => value,
                ForwardHeader::Replace(replacement) => replacement,
                ForwardHeader::Drop => return,
            };
            PackedHeaders::push(&mut self.head, name, value);
        });
    }

    /// Makes the body empty, keeping at most `limit` bytes of what is pushed next, and
    /// keeping its buffer's allocation.
    pub(crate) fn start_body(&mut self, limit: usize) {
        self.body = BodyCapture::reusing(limit, std::mem::take(&mut self.body).into_bytes());
    }

    /// Adds a body chunk; returns whether the body is still within the limit.
    pub(crate) fn push_body(&mut self, chunk: &[u8]) -> bool {
        self.body.push(chunk)
    }

    /// The body's length so far.
    pub(crate) fn body_len(&self) -> u64 {
        self.body.seen()
    }
}

impl HeaderView for RequestCopy {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn each_value<'a>(&'a self, name: &str, visit: &mut dyn FnMut(&'a [u8])) {
        self.headers()
            .filter(|(n, _)| *n == name)
            .for_each(|(_, v)| visit(v));
    }

    fn each<'a>(&'a self, visit: &mut dyn FnMut(&'a str, &'a [u8])) {
        self.headers().for_each(|(n, v)| visit(n, v));
    }
}

/// Text the copy wrote from a `&str` (so valid UTF-8); empty if a range is off.
fn text(bytes: Option<&[u8]>) -> &str {
    bytes
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .unwrap_or_default()
}

/// Headers packed one after another into a byte buffer, each as the name's length (two
/// bytes), the value's length (four bytes), the name, the value. Iterating reads them
/// back in order.
pub(crate) struct PackedHeaders<'a>(pub(crate) &'a [u8]);

impl PackedHeaders<'_> {
    /// Appends a header to `buffer`. Names longer than 64 KiB and values longer than
    /// 4 GiB do not occur in HTTP (servers refuse heads far smaller); such a header is
    /// left out rather than written wrong.
    pub(crate) fn push(buffer: &mut Vec<u8>, name: &str, value: &[u8]) {
        let (Ok(name_len), Ok(value_len)) = (u16::try_from(name.len()), u32::try_from(value.len()))
        else {
            return;
        };
        buffer.extend_from_slice(&name_len.to_le_bytes());
        buffer.extend_from_slice(&value_len.to_le_bytes());
        buffer.extend_from_slice(name.as_bytes());
        buffer.extend_from_slice(value);
    }
}

impl<'a> Iterator for PackedHeaders<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (name_len, rest) = self.0.split_first_chunk::<2>()?;
        let (value_len, rest) = rest.split_first_chunk::<4>()?;
        let name_len = usize::from(u16::from_le_bytes(*name_len));
        let value_len = usize::try_from(u32::from_le_bytes(*value_len)).ok()?;
        let (name, rest) = rest.split_at_checked(name_len)?;
        let (value, rest) = rest.split_at_checked(value_len)?;
        self.0 = rest;
        Some((text(Some(name)), value))
    }
}

impl fmt::Debug for RequestCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be secrets the policy does not redact: names only.
        let names: Vec<&str> = self.headers().map(|(name, _)| name).collect();
        f.debug_struct("RequestCopy")
            .field("method", &self.method())
            .field("target", &self.target())
            .field("version", &self.version)
            .field("headers", &names)
            .field("body_len", &self.body.seen())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::HeaderList;

    impl RequestCopy {
        fn each_value_count(&self, name: &str) -> usize {
            let mut count = 0;
            self.each_value(name, &mut |_| count += 1);
            count
        }
    }

    #[test]
    fn a_refilled_copy_keeps_nothing_of_the_last_request() {
        let policy = HeaderPolicy::new();
        let mut copy = RequestCopy::default();
        let first = HeaderList(vec![("x-a", b"1".as_slice()), ("x-b", b"2".as_slice())]);
        let head = RequestHead::new("POST", "/a", &first)
            .with_query(Some("q=1"))
            .with_version(HttpVersion::Http2);
        copy.fill_head(&head, &policy);
        copy.start_body(8);
        assert!(copy.push_body(b"payload"));
        let second = HeaderList(vec![("x-c", b"3".as_slice())]);
        copy.fill_head(&RequestHead::new("GET", "/b", &second), &policy);
        copy.start_body(8);
        assert_eq!((copy.method(), copy.target()), ("GET", "/b"));
        assert_eq!(copy.version(), HttpVersion::Http11);
        assert_eq!(
            copy.headers().collect::<Vec<_>>(),
            [("x-c", b"3".as_slice())]
        );
        assert!(copy.body().is_empty());
    }

    #[test]
    fn redactions_replace_or_drop_and_hop_by_hop_headers_never_pass() {
        let headers = HeaderList(vec![
            ("connection", b"x-trace".as_slice()),
            ("x-trace", b"abc".as_slice()),
            ("cookie", b"session=s3cr3t".as_slice()),
            ("accept", b"*/*".as_slice()),
        ]);
        let policy = HeaderPolicy::new()
            .redact("cookie")
            .expect("valid name")
            .replace_with("redacted");
        let mut copy = RequestCopy::default();
        copy.fill_head(&RequestHead::new("GET", "/", &headers), &policy);
        assert_eq!(
            copy.headers().collect::<Vec<_>>(),
            [
                ("cookie", b"redacted".as_slice()),
                ("accept", b"*/*".as_slice())
            ]
        );
    }

    #[test]
    fn the_target_is_the_whole_uri_of_an_absolute_request_and_the_path_leaves_it_out() {
        let headers = HeaderList::default();
        let mut copy = RequestCopy::default();
        let origin = |scheme, authority| (Some(scheme), Some(authority));
        for (path, query, (scheme, authority), target) in [
            ("/items", Some("page=2"), (None, None), "/items?page=2"),
            ("/", None, (None, None), "/"),
            (
                "/items/7",
                Some("x=1"),
                origin("https", "example.com"),
                "https://example.com/items/7?x=1",
            ),
            (
                "/",
                None,
                origin("https", "example.com"),
                "https://example.com/",
            ),
            // An authority without a scheme is not an absolute URI: origin form.
            ("/a", None, (None, Some("example.com")), "/a"),
        ] {
            let head = RequestHead::new("GET", path, &headers)
                .with_query(query)
                .with_origin(scheme, authority);
            copy.fill_head(&head, &HeaderPolicy::new());
            assert_eq!(copy.target(), target);
            assert_eq!(copy.path(), path, "{target}");
        }
    }

    #[test]
    fn headers_come_back_in_order_whatever_their_values() {
        let long = vec![b'v'; 70_000];
        let headers = HeaderList(vec![
            ("x-empty", b"".as_slice()),
            ("x-binary", b"\x00\xff\r".as_slice()),
            ("x-long", long.as_slice()),
            ("x-empty", b"".as_slice()),
        ]);
        let mut copy = RequestCopy::default();
        copy.fill_head(
            &RequestHead::new("GET", "/", &headers),
            &HeaderPolicy::new(),
        );
        assert_eq!(copy.headers().collect::<Vec<_>>(), headers.0);
        assert_eq!(copy.each_value_count("x-empty"), 2);
    }

    #[test]
    fn the_body_stops_at_the_limit() {
        let mut copy = RequestCopy::default();
        copy.start_body(4);
        assert!(copy.push_body(b"abcd"));
        assert!(!copy.push_body(b"e"));
        assert_eq!(copy.body_len(), 5);
    }
}
