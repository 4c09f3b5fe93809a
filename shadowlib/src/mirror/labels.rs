//! Route labels: `GET /items/{id}` rather than one label per item, and at most a fixed
//! number of them.
//!
//! A request's label is its method and the first configured [`PathPattern`] its path
//! matches, or its method and path when none does. Paths come from clients, so distinct
//! labels are capped (the one cap every route table of a rollout shares); past it, a new
//! label is [`OTHER_ROUTES`]. Requests already labelled are remembered up to a bound of
//! their own, so a repeated request is labelled without matching patterns or allocating.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::PathPattern;
use crate::metrics::LabelSet;
use crate::model::OTHER_ROUTES;

/// Longest `method path` remembered; longer ones are labelled afresh each time.
const KEY_BUFFER: usize = 256;

/// How many requests (not labels) are remembered per allowed label.
const REQUESTS_PER_LABEL: usize = 16;

/// Labels requests by the configured patterns, within the cap.
pub(crate) struct RouteLabels {
    patterns: Vec<PathPattern>,
    labels: LabelSet,
    other: Arc<str>,
    /// `method path` as written, to its label.
    seen: Mutex<HashMap<Box<str>, Arc<str>>>,
    seen_cap: usize,
}

impl std::fmt::Debug for RouteLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLabels")
            .field("patterns", &self.patterns)
            .field("max_routes", &self.labels.cap())
            .finish_non_exhaustive()
    }
}

impl RouteLabels {
    /// Labels by `patterns`, with at most `max_routes` distinct labels.
    pub(crate) fn new(patterns: Vec<PathPattern>, max_routes: usize) -> Self {
        Self {
            patterns,
            labels: LabelSet::new(max_routes),
            other: Arc::from(OTHER_ROUTES),
            seen: Mutex::new(HashMap::new()),
            seen_cap: max_routes.saturating_mul(REQUESTS_PER_LABEL),
        }
    }

    /// The label of a request with `method` and `path`.
    pub(crate) fn label(&self, method: &str, path: &str) -> Arc<str> {
        let mut buffer = [0u8; KEY_BUFFER];
        let key = join(&mut buffer, method, path);
        // Only the shadow's worker labels, so the lock is never waited for.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(label) = key.and_then(|key| seen.get(key)) {
            return Arc::clone(label);
        }
        let text = match self.patterns.iter().find(|p| p.matches(path)) {
            Some(pattern) => format!("{method} {pattern}"),
            None => format!("{method} {path}"),
        };
        let label = match self.labels.index_of(&text) {
            Some(_) => Arc::from(text),
            None => Arc::clone(&self.other),
        };
        if let Some(key) = key
            && seen.len() < self.seen_cap
        {
            seen.insert(key.into(), Arc::clone(&label));
        }
        label
    }
}

/// `method path` written into `buffer`, if it fits.
fn join<'b>(buffer: &'b mut [u8; KEY_BUFFER], method: &str, path: &str) -> Option<&'b str> {
    let length = method.len() + 1 + path.len();
    let key = buffer.get_mut(..length)?;
    key[..method.len()].copy_from_slice(method.as_bytes());
    key[method.len()] = b' ';
    key[method.len() + 1..].copy_from_slice(path.as_bytes());
    // Two strings joined by an ASCII space are valid UTF-8; this cannot fail.
    std::str::from_utf8(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_patterns_and_overflow_past_the_cap() {
        let pattern = PathPattern::new("/items/{id}").expect("a valid pattern");
        let labels = RouteLabels::new(vec![pattern], 2);
        let first = labels.label("GET", "/items/7");
        assert_eq!(&*first, "GET /items/{id}");
        assert!(Arc::ptr_eq(&first, &labels.label("GET", "/items/7")));
        assert_eq!(&*labels.label("GET", "/items/8"), "GET /items/{id}");
        assert_eq!(&*labels.label("GET", "/other"), "GET /other");
        // Two labels admitted: a third route is counted with every later one.
        assert_eq!(&*labels.label("HEAD", "/items/9"), OTHER_ROUTES);
        assert_eq!(&*labels.label("GET", "/items/9"), "GET /items/{id}");
    }

    #[test]
    fn requests_too_long_for_the_buffer_are_labelled_too() {
        let labels = RouteLabels::new(Vec::new(), 4);
        let path = format!("/{}", "a".repeat(KEY_BUFFER));
        assert_eq!(&*labels.label("GET", &path), format!("GET {path}"));
    }
}
