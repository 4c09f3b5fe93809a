//! Route labels: `GET /items/{id}` rather than one label per item, and at most a fixed
//! number of them.
//!
//! A request's label is its method and the first configured [`PathPattern`] its path
//! matches, or its method and path when none does. Paths come from clients, so distinct
//! labels are capped (the one cap every route table of a rollout shares: the live
//! recorder's); past it, a new label is [`OTHER_ROUTES`]. Requests already labelled are
//! remembered up to a bound of their own, so a repeated request is labelled with one hash
//! lookup, without a lock, without matching patterns and without allocating: live requests
//! are labelled on the live path while the candidate serves a share of them.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use super::PathPattern;
use crate::metrics::LabelSet;
use crate::model::OTHER_ROUTES;

/// Longest `method path` or label handled without allocating; longer ones are labelled
/// afresh each time.
const KEY_BUFFER: usize = 256;

/// How many requests (not labels) are remembered per allowed label.
const REQUESTS_PER_LABEL: usize = 16;

/// Labels requests by the configured patterns, within the cap.
pub(crate) struct RouteLabels {
    patterns: Vec<PathPattern>,
    /// The labels, shared with the live recorder, which records by their index.
    labels: Arc<LabelSet>,
    /// Each label's text by index, made once for the shadow's worker; the index past the
    /// last is the overflow.
    names: Box<[OnceLock<Arc<str>>]>,
    /// `method path` as sent, remembered up to a bound...
    seen: LabelSet,
    /// ...and the label index each resolves to, by its index in `seen`.
    resolved: Box<[OnceLock<usize>]>,
}

impl std::fmt::Debug for RouteLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLabels")
            .field("patterns", &self.patterns)
            .field("max_routes", &self.labels.cap())
            .finish_non_exhaustive()
    }
}

/// A stack buffer that formats without allocating, and says when it ran out of room.
struct Buffer {
    bytes: [u8; KEY_BUFFER],
    len: usize,
}

impl Buffer {
    fn new() -> Self {
        Self {
            bytes: [0; KEY_BUFFER],
            len: 0,
        }
    }

    fn as_str(&self) -> Option<&str> {
        // Only whole `&str`s are written, so the bytes are valid UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).ok()
    }
}

impl std::fmt::Write for Buffer {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len + text.len();
        let into = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        into.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `method` and `rest` joined by a space, in `buffer` if it fits.
fn join<'b>(buffer: &'b mut Buffer, method: &str, rest: &str) -> Option<&'b str> {
    buffer.len = 0;
    write!(buffer, "{method} {rest}").ok()?;
    buffer.as_str()
}

impl RouteLabels {
    /// Labels by `patterns`, within the cap of `labels`.
    pub(crate) fn new(patterns: Vec<PathPattern>, labels: Arc<LabelSet>) -> Self {
        let seen = LabelSet::new(labels.cap().saturating_mul(REQUESTS_PER_LABEL));
        Self {
            patterns,
            names: (0..=labels.slots()).map(|_| OnceLock::new()).collect(),
            resolved: (0..seen.slots()).map(|_| OnceLock::new()).collect(),
            seen,
            labels,
        }
    }

    /// The index of the label of a request with `method` and `path`, as the live recorder
    /// records it; `labels.slots()` for the overflow.
    pub(crate) fn index(&self, method: &str, path: &str) -> usize {
        let mut buffer = Buffer::new();
        let Some(key) = join(&mut buffer, method, path) else {
            return self.resolve(method, path);
        };
        match self.seen.index_of(key) {
            Some(seen) => *self.resolved[seen].get_or_init(|| self.resolve(method, path)),
            // Past the bound: labelled afresh, still without allocating when it fits.
            None => self.resolve(method, path),
        }
    }

    /// Matches the patterns and looks the label up, admitting it if there is room.
    fn resolve(&self, method: &str, path: &str) -> usize {
        let rest = self
            .patterns
            .iter()
            .find(|p| p.matches(path))
            .map_or(path, PathPattern::as_str);
        let mut buffer = Buffer::new();
        let index = match join(&mut buffer, method, rest) {
            Some(label) => self.labels.index_of(label),
            None => self.labels.index_of(&format!("{method} {rest}")),
        };
        index.unwrap_or(self.labels.slots())
    }

    /// The label of a request with `method` and `path`.
    pub(crate) fn label(&self, method: &str, path: &str) -> Arc<str> {
        self.name(self.index(method, path))
    }

    /// The text of the label at `index`.
    fn name(&self, index: usize) -> Arc<str> {
        let Some(slot) = self.names.get(index) else {
            return Arc::from(OTHER_ROUTES);
        };
        Arc::clone(slot.get_or_init(|| Arc::from(self.labels.name(index).unwrap_or(OTHER_ROUTES))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(patterns: Vec<PathPattern>, cap: usize) -> RouteLabels {
        RouteLabels::new(patterns, Arc::new(LabelSet::new(cap)))
    }

    #[test]
    fn labels_follow_the_patterns_and_overflow_past_the_cap() {
        let pattern = PathPattern::new("/items/{id}").expect("a valid pattern");
        let labels = labels(vec![pattern], 2);
        let first = labels.label("GET", "/items/7");
        assert_eq!(&*first, "GET /items/{id}");
        assert!(Arc::ptr_eq(&first, &labels.label("GET", "/items/7")));
        assert_eq!(&*labels.label("GET", "/items/8"), "GET /items/{id}");
        assert_eq!(&*labels.label("GET", "/other"), "GET /other");
        // Two labels admitted: a third route is counted with every later one.
        assert_eq!(&*labels.label("HEAD", "/items/9"), OTHER_ROUTES);
        assert_eq!(labels.index("HEAD", "/items/9"), labels.labels.slots());
        assert_eq!(&*labels.label("GET", "/items/9"), "GET /items/{id}");
    }

    #[test]
    fn the_index_is_the_recorders() {
        let shared = Arc::new(LabelSet::new(8));
        let labels = RouteLabels::new(Vec::new(), Arc::clone(&shared));
        let index = labels.index("GET", "/a");
        assert_eq!(shared.index_of("GET /a"), Some(index));
    }

    #[test]
    fn requests_too_long_for_the_buffer_are_labelled_too() {
        let labels = labels(Vec::new(), 4);
        let path = format!("/{}", "a".repeat(KEY_BUFFER));
        assert_eq!(&*labels.label("GET", &path), format!("GET {path}"));
    }

    #[test]
    fn requests_past_the_remembered_bound_are_labelled_afresh() {
        let pattern = PathPattern::new("/items/{id}").expect("a valid pattern");
        let labels = labels(vec![pattern], 1);
        for id in 0..(REQUESTS_PER_LABEL * 4) {
            assert_eq!(
                &*labels.label("GET", &format!("/items/{id}")),
                "GET /items/{id}"
            );
        }
    }
}
