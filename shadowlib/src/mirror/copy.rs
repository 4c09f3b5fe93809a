//! The copy of a read the live path hands to the shadow, and the slot it travels in.
//!
//! The live path only copies bytes: method, target, the headers the policy lets through
//! and the body, into buffers that are used again and again. The shadow's worker builds
//! the request its candidate takes from that copy, on its own thread. So at one copy per
//! request no memory allocated on the live thread is freed on the shadow's, or the other
//! way round: with the system allocator such a free takes the lock of the other thread's
//! arena, and the two threads would fight over it on every request.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam_queue::ArrayQueue;

use super::{BodyCapture, ForwardHeader, HeaderPolicy, HeaderView, RequestHead, ResponseSummary};

/// The HTTP version of a copied request, in the core's own words (adapters map their
/// framework's version to it and back).
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

/// A copy of one mirrored read, as the shadow's candidate is to receive it: method,
/// target (path and query), version, peer address, the headers the
/// [`HeaderPolicy`] forwards (hop-by-hop headers stripped, redactions applied) and the
/// body.
///
/// The live path fills it through a [`MirrorTicket`](super::MirrorTicket); the adapter's
/// job maker reads it on the shadow's worker (see
/// [`ShadowWorker::run`](super::ShadowWorker::run)).
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
/// copy.fill_head(&RequestHead::new("GET", "/items", &headers), "/items?page=2", &policy);
/// assert_eq!((copy.method(), copy.target()), ("GET", "/items?page=2"));
/// assert_eq!(copy.version(), HttpVersion::Http11);
/// let forwarded: Vec<_> = copy.headers().collect();
/// assert_eq!(forwarded, [("accept", b"application/json".as_slice())]);
/// assert_eq!(copy.first("authorization"), None);
/// # Ok::<(), shadowlib::mirror::HeaderNameError>(())
/// ```
#[derive(Clone, Default)]
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

    /// Replaces the head with `head`'s method and headers (through `policy`) and
    /// `target`, keeping the buffers' allocations; the version is reset to HTTP/1.1 and
    /// the peer address to none. The body is left as it is.
    pub fn fill_head(&mut self, head: &RequestHead<'_>, target: &str, policy: &HeaderPolicy) {
        self.head.clear();
        self.head.extend_from_slice(head.method.as_bytes());
        self.head.extend_from_slice(target.as_bytes());
        (self.method_len, self.target_len) = (head.method.len(), target.len());
        self.version = HttpVersion::default();
        self.peer_addr = None;
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

    /// Sets the HTTP version.
    pub fn set_version(&mut self, version: HttpVersion) {
        self.version = version;
    }

    /// Sets the peer address.
    pub fn set_peer_addr(&mut self, peer_addr: Option<SocketAddr>) {
        self.peer_addr = peer_addr;
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
struct PackedHeaders<'a>(&'a [u8]);

impl PackedHeaders<'_> {
    /// Appends a header to `buffer`. Names longer than 64 KiB and values longer than
    /// 4 GiB do not occur in HTTP (servers refuse heads far smaller); such a header is
    /// left out rather than written wrong.
    fn push(buffer: &mut Vec<u8>, name: &str, value: &[u8]) {
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

/// How far the live response of a mirrored read has got, as the shadow's worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LiveProgress {
    /// Not sent whole yet.
    Awaited,
    /// Sent whole: the slot's summary is the live response.
    Seen,
    /// Will never be seen whole (the client went away, the body failed, nobody observed
    /// it): nothing to compare with.
    Lost,
}

/// The live response of a mirrored read, for the shadow to compare with: status, the
/// compared headers packed into one buffer, and the body's first bytes.
#[derive(Debug)]
pub(crate) struct LiveSide {
    status: u16,
    headers: Vec<u8>,
    pub(crate) body: Vec<u8>,
    body_len: u64,
    truncated: bool,
    pub(crate) progress: LiveProgress,
}

impl LiveSide {
    /// Starts capturing a response with `status` and the `compared` headers of `headers`.
    pub(crate) fn fill_head(&mut self, status: u16, compared: &[String], headers: &dyn HeaderView) {
        self.status = status;
        self.headers.clear();
        for name in compared {
            headers.each_value(name, &mut |value| {
                PackedHeaders::push(&mut self.headers, name, value);
            });
        }
    }

    /// Sets the body from a capture.
    /// An empty body, keeping the buffer for the slot's next read.
    pub(crate) fn clear_body(&mut self) {
        self.body.clear();
        self.body_len = 0;
        self.truncated = false;
    }

    pub(crate) fn set_body(&mut self, body: BodyCapture) {
        self.body_len = body.seen();
        self.truncated = body.overflowed();
        self.body = body.into_bytes();
    }

    /// Writes the captured response into `summary`, reusing its allocations.
    pub(crate) fn summarize(&self, summary: &mut ResponseSummary) {
        summary.refill(self.status, |push| {
            for (name, value) in PackedHeaders(&self.headers) {
                push(name, value);
            }
        });
        summary.body.extend_from_slice(&self.body);
        summary.body_len = self.body_len;
        summary.truncated = self.truncated;
    }
}

/// One mirrored read on its way: the copy the live path made, and the live response once
/// sent. Shared by the live path and the shadow's worker, and used again once both are
/// done with it (see [`SlotPool`]).
#[derive(Debug)]
pub(crate) struct CopySlot {
    request: Mutex<RequestCopy>,
    live: Mutex<LiveSide>,
}

impl CopySlot {
    fn new() -> Self {
        Self {
            request: Mutex::new(RequestCopy::default()),
            live: Mutex::new(LiveSide {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
                body_len: 0,
                truncated: false,
                progress: LiveProgress::Awaited,
            }),
        }
    }

    /// The request copy. Only the ticket holder writes it, before the copy is queued,
    /// and only the worker reads it after, so the lock is never waited for.
    pub(crate) fn request(&self) -> MutexGuard<'_, RequestCopy> {
        lock(&self.request)
    }

    /// The live response.
    pub(crate) fn live(&self) -> MutexGuard<'_, LiveSide> {
        lock(&self.live)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both sides hold plain data that is valid at every point, so a lock poisoned by a
    // panic elsewhere is used as it is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The slots not in use, for the next mirrored reads, and what the live path needs to
/// capture a live response into one.
///
/// A slot is taken on the live path and given back by whichever of the live path and the
/// worker is done with it last; its buffers keep their allocations from one read to the
/// next, so in a steady state mirroring allocates nothing.
///
/// Aligned to two cache lines so that, behind an `Arc`, the reference count the live
/// path changes per read is on a line of its own.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct SlotPool {
    free: ArrayQueue<Arc<CopySlot>>,
    compared_headers: Arc<[String]>,
    body_limit: usize,
}

impl SlotPool {
    /// A pool keeping at most `capacity` free slots (more are freed), for live responses
    /// captured with `compared_headers` and up to `body_limit` bytes of body.
    pub(crate) fn new(capacity: usize, compared_headers: Arc<[String]>, body_limit: usize) -> Self {
        Self {
            free: ArrayQueue::new(capacity.max(1)),
            compared_headers,
            body_limit,
        }
    }

    /// The response headers compared.
    pub(crate) fn compared_headers(&self) -> &[String] {
        &self.compared_headers
    }

    /// The largest body captured, in bytes.
    pub(crate) fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// A slot for a new read: its live response awaited, its request to be filled with
    /// a body of at most `body_limit` bytes.
    pub(crate) fn take(&self, body_limit: usize) -> Arc<CopySlot> {
        let slot = self.free.pop().unwrap_or_else(|| Arc::new(CopySlot::new()));
        // Nobody else holds it, so neither lock is ever waited for.
        slot.live().progress = LiveProgress::Awaited;
        slot.request().start_body(body_limit);
        slot
    }

    /// Done with `slot`: it goes back to the pool if nobody else holds it any more.
    ///
    /// When both holders give it back at the same moment, each may see the other's
    /// reference and the slot is freed instead: a missed reuse, never a shared one.
    pub(crate) fn give_back(&self, slot: Arc<CopySlot>) {
        if Arc::strong_count(&slot) == 1 {
            // A full pool frees the slot: the pool only has to cover the reads in flight.
            let _ = self.free.push(slot);
        }
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
        copy.fill_head(&RequestHead::new("POST", "/a", &first), "/a?q=1", &policy);
        copy.set_version(HttpVersion::Http2);
        copy.start_body(8);
        assert!(copy.push_body(b"payload"));
        let second = HeaderList(vec![("x-c", b"3".as_slice())]);
        copy.fill_head(&RequestHead::new("GET", "/b", &second), "/b", &policy);
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
        copy.fill_head(&RequestHead::new("GET", "/", &headers), "/", &policy);
        assert_eq!(
            copy.headers().collect::<Vec<_>>(),
            [
                ("cookie", b"redacted".as_slice()),
                ("accept", b"*/*".as_slice())
            ]
        );
    }

    #[test]
    fn the_path_leaves_out_query_scheme_and_authority() {
        let headers = HeaderList::default();
        let mut copy = RequestCopy::default();
        for (target, path) in [
            ("/items?page=2", "/items"),
            ("/", "/"),
            ("https://example.com/items/7?x=1", "/items/7"),
            ("https://example.com", "/"),
            ("https://example.com?x=1", "/"),
            ("*", "/"),
        ] {
            copy.fill_head(
                &RequestHead::new("GET", path, &headers),
                target,
                &HeaderPolicy::new(),
            );
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
            "/",
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

    #[test]
    fn a_slot_returns_to_the_pool_only_from_its_last_holder() {
        let pool = SlotPool::new(4, Arc::from([]), 16);
        let slot = pool.take(16);
        let other = Arc::clone(&slot);
        slot.live().progress = LiveProgress::Seen;
        pool.give_back(slot);
        assert_eq!(pool.free.len(), 0, "the other holder still has it");
        pool.give_back(other);
        assert_eq!(pool.free.len(), 1);
        let again = pool.take(16);
        assert_eq!(again.live().progress, LiveProgress::Awaited);
    }
}
