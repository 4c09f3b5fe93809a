//! Comparing the live and shadow responses of a mirrored read.
//!
//! Adapters capture each side into a [`ResponseSummary`] (status, the configured headers,
//! the body up to the limit); a [`CompareResponses`] judges the pair. [`ExactComparison`]
//! is plain equality; a comparator that understands fields and ignores noise (timestamps,
//! request ids) plugs in through the same trait.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Collects a body's first bytes, up to a limit, and counts all of them.
///
/// ```
/// use shadowlib::compare::BodyCapture;
///
/// let mut capture = BodyCapture::new(4);
/// assert!(capture.push(b"abc"));
/// assert!(!capture.push(b"def")); // over the limit: only the first 4 bytes are kept
/// assert_eq!(capture.bytes(), b"abcd");
/// assert_eq!(capture.seen(), 6);
/// assert!(capture.overflowed());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyCapture {
    limit: usize,
    bytes: Vec<u8>,
    seen: u64,
}

impl BodyCapture {
    /// An empty capture keeping at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: Vec::new(),
            seen: 0,
        }
    }

    /// Adds a chunk; returns whether everything so far fits within the limit.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        self.seen = self.seen.saturating_add(chunk.len() as u64);
        let room = self.limit.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        !self.overflowed()
    }

    /// The bytes kept (the first `limit` bytes of the body).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// All bytes seen, kept or not.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether the body was longer than the limit.
    pub fn overflowed(&self) -> bool {
        self.seen > self.bytes.len() as u64
    }

    /// An empty capture keeping at most `limit` bytes in `buffer`, whose allocation it
    /// reuses.
    pub(crate) fn reusing(limit: usize, mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        Self {
            limit,
            bytes: buffer,
            seen: 0,
        }
    }

    /// The bytes kept, giving up the capture.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// One side of a mirrored read's response, as far as comparison goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseSummary {
    /// The status code.
    pub status: u16,
    /// The compared headers (configured names, lowercase) with their values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body's first bytes, up to the body limit.
    pub body: Vec<u8>,
    /// The body's length as far as it was read.
    pub body_len: u64,
    /// Whether the body was longer than the limit (then only `body` is compared).
    pub truncated: bool,
}

impl ResponseSummary {
    /// A summary with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    /// Adds a compared header value.
    pub fn header(mut self, name: &str, value: &[u8]) -> Self {
        self.push_header(name, value);
        self
    }

    /// Adds a compared header value in place.
    pub fn push_header(&mut self, name: &str, value: &[u8]) {
        self.headers.push((name.to_owned(), value.to_vec()));
    }

    /// Makes this summary the head of a response with `status`, keeping the allocations
    /// of its headers and body for the values `fill` pushes with the pusher it is given.
    pub(crate) fn refill(&mut self, status: u16, fill: impl FnOnce(&mut dyn FnMut(&str, &[u8]))) {
        self.status = status;
        self.body.clear();
        self.body_len = 0;
        self.truncated = false;
        let mut used = 0;
        let headers = &mut self.headers;
        fill(&mut |name, value| {
            match headers.get_mut(used) {
                Some((kept_name, kept_value)) => {
                    kept_name.clear();
                    kept_name.push_str(name);
                    kept_value.clear();
                    kept_value.extend_from_slice(value);
                }
                None => headers.push((name.to_owned(), value.to_vec())),
            }
            used += 1;
        });
        headers.truncate(used);
    }

    /// Sets the body from a capture.
    pub fn with_body(mut self, capture: BodyCapture) -> Self {
        self.set_body(capture);
        self
    }

    /// Sets the body from a capture in place.
    pub fn set_body(&mut self, capture: BodyCapture) {
        self.truncated = capture.overflowed();
        self.body_len = capture.seen();
        self.body = capture.into_bytes();
    }

    /// Drops the body, keeping its buffer: for responses that carry none on the wire.
    pub(crate) fn clear_body(&mut self) {
        self.body.clear();
        self.body_len = 0;
        self.truncated = false;
    }
}

/// One way in which the two responses differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Difference {
    /// Different status codes.
    Status {
        /// Live status.
        live: u16,
        /// Shadow status.
        shadow: u16,
    },
    /// A compared header is missing on one side or has other values.
    Header {
        /// The header.
        name: String,
    },
    /// A field differs beyond noise, as a field-level comparator (such as
    /// [`analysis::Comparator`](crate::compare::Comparator)) names it: `status`,
    /// `header:<name>`, `body` or a JSON path.
    Field {
        /// The field.
        field: String,
    },
    /// Different bodies (within the limit).
    Body {
        /// Live body length as read.
        live_len: u64,
        /// Shadow body length as read.
        shadow_len: u64,
    },
}

impl Difference {
    /// The field it is about, named as the [`Comparator`](super::Comparator) names fields:
    /// `status`, `header:<name>`, `body`, or the field a field-level comparator named.
    ///
    /// ```
    /// use shadowlib::compare::Difference;
    ///
    /// assert_eq!(Difference::Header { name: "etag".into() }.field(), "header:etag");
    /// assert_eq!(Difference::Field { field: "/price".into() }.field(), "/price");
    /// ```
    pub fn field(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Difference::Status { .. } => "status".into(),
            Difference::Header { name } => format!("header:{name}").into(),
            Difference::Field { field } => field.as_str().into(),
            Difference::Body { .. } => "body".into(),
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Status { live, shadow } => write!(f, "status {live} vs {shadow}"),
            Difference::Header { name } => write!(f, "header `{name}` differs"),
            Difference::Field { field } => write!(f, "field `{field}` differs"),
            Difference::Body {
                live_len,
                shadow_len,
            } => {
                write!(f, "body differs ({live_len} vs {shadow_len} bytes)")
            }
        }
    }
}

/// The verdict on one response pair: the differences found (none means a match), or why
/// the pair cannot be judged at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// What differs.
    pub differences: Vec<Difference>,
    /// Set when the two responses were produced from states that cannot be compared (a
    /// stateful shadow that was behind or ahead of live, say): the pair then counts
    /// neither as a match nor as a mismatch, only as [`ShadowCounts::not_comparable`].
    ///
    /// [`ShadowCounts::not_comparable`]: crate::shadow::ShadowCounts::not_comparable
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_comparable: Option<String>,
}

impl Comparison {
    /// A pair that cannot be judged, and why.
    ///
    /// ```
    /// use shadowlib::compare::Comparison;
    ///
    /// let stale = Comparison::not_comparable("shadow state 3 frames behind live");
    /// assert!(!stale.mismatched());
    /// assert!(!stale.is_comparable());
    /// ```
    pub fn not_comparable(why: impl Into<String>) -> Self {
        Self {
            differences: Vec::new(),
            not_comparable: Some(why.into()),
        }
    }

    /// Whether the pair was judged.
    pub fn is_comparable(&self) -> bool {
        self.not_comparable.is_none()
    }

    /// Whether the responses differ.
    pub fn mismatched(&self) -> bool {
        !self.differences.is_empty()
    }
}

/// Judges a live response and the shadow's response to the same read.
///
/// Called on a shadow worker, never on the live path, so it may take its time.
pub trait CompareResponses: Send + Sync + 'static {
    /// The differences between the two sides of one read of `route` (the route label the
    /// runtime records comparisons under, e.g. `GET /items/{id}`).
    fn compare(&self, route: &str, live: &ResponseSummary, shadow: &ResponseSummary) -> Comparison;
}

impl<T: CompareResponses> CompareResponses for std::sync::Arc<T> {
    fn compare(&self, route: &str, live: &ResponseSummary, shadow: &ResponseSummary) -> Comparison {
        (**self).compare(route, live, shadow)
    }
}

/// Equality of status, compared headers and body. Bodies longer than the limit on either
/// side are compared on their first bytes only, since that is all that was kept.
///
/// ```
/// use shadowlib::compare::{CompareResponses, ExactComparison, ResponseSummary};
///
/// let live = ResponseSummary::new(200).header("content-type", b"application/json");
/// let same = live.clone();
/// let other = ResponseSummary::new(500).header("content-type", b"application/json");
/// assert!(!ExactComparison.compare("GET /r", &live, &same).mismatched());
/// assert_eq!(ExactComparison.compare("GET /r", &live, &other).differences.len(), 1);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ExactComparison;

impl CompareResponses for ExactComparison {
    fn compare(
        &self,
        _route: &str,
        live: &ResponseSummary,
        shadow: &ResponseSummary,
    ) -> Comparison {
        let mut differences = Vec::new();
        if live.status != shadow.status {
            differences.push(Difference::Status {
                live: live.status,
                shadow: shadow.status,
            });
        }
        let mut names: Vec<&str> = live
            .headers
            .iter()
            .chain(&shadow.headers)
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            if !header_values(live, name).eq(header_values(shadow, name)) {
                differences.push(Difference::Header {
                    name: name.to_owned(),
                });
            }
        }
        let bodies_differ = if live.truncated || shadow.truncated {
            let kept = live.body.len().min(shadow.body.len());
            live.body[..kept] != shadow.body[..kept]
        } else {
            live.body != shadow.body
        };
        if bodies_differ {
            differences.push(Difference::Body {
                live_len: live.body_len,
                shadow_len: shadow.body_len,
            });
        }
        Comparison {
            differences,
            not_comparable: None,
        }
    }
}

/// The values of one compared header, in order.
fn header_values<'s>(side: &'s ResponseSummary, name: &'s str) -> impl Iterator<Item = &'s [u8]> {
    side.headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refilled_summary_keeps_nothing_of_the_response_it_held() {
        let mut recycled = ResponseSummary::new(500)
            .header("content-type", b"text/html; charset=utf-8")
            .header("etag", b"\"old\"")
            .with_body({
                let mut body = BodyCapture::new(2);
                body.push(b"old body");
                body
            });
        recycled.refill(200, |push| push("content-type", b"text/plain"));
        assert_eq!(
            recycled,
            ResponseSummary::new(200).header("content-type", b"text/plain")
        );
        let body = BodyCapture::reusing(8, std::mem::take(&mut recycled.body));
        assert_eq!(
            (body.bytes(), body.seen(), body.overflowed()),
            (&b""[..], 0, false)
        );
    }

    fn summary(status: u16, body: &[u8], limit: usize) -> ResponseSummary {
        let mut capture = BodyCapture::new(limit);
        capture.push(body);
        ResponseSummary::new(status).with_body(capture)
    }

    #[test]
    fn equal_responses_match() {
        let a = summary(200, b"hello", 64).header("etag", b"1");
        assert_eq!(
            ExactComparison.compare("GET /r", &a, &a.clone()),
            Comparison::default()
        );
    }

    #[test]
    fn every_difference_is_reported() {
        let live = summary(200, b"hello", 64).header("etag", b"1");
        let shadow = summary(500, b"oops", 64).header("etag", b"2");
        let c = ExactComparison.compare("GET /r", &live, &shadow);
        assert_eq!(
            c.differences,
            vec![
                Difference::Status {
                    live: 200,
                    shadow: 500
                },
                Difference::Header {
                    name: "etag".into()
                },
                Difference::Body {
                    live_len: 5,
                    shadow_len: 4
                },
            ]
        );
        let missing = ExactComparison.compare("GET /r", &live, &summary(200, b"hello", 64));
        assert_eq!(
            missing.differences,
            vec![Difference::Header {
                name: "etag".into()
            }]
        );
    }

    #[test]
    fn truncated_bodies_compare_on_their_kept_prefix() {
        let live = summary(200, b"abcdef-live", 6);
        let shadow = summary(200, b"abcdef-shadow", 6);
        assert!(
            !ExactComparison
                .compare("GET /r", &live, &shadow)
                .mismatched()
        );
        let different = summary(200, b"abcdXf-shadow", 6);
        assert!(
            ExactComparison
                .compare("GET /r", &live, &different)
                .mismatched()
        );
    }
}
