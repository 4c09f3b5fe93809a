//! Route labels of mirrored reads, interned so the live path does not build a string per
//! copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;

use super::ShadowConfig;

/// Requests as written (`"GET /items/7"`) mapped to their label (`"GET /items/{id}"`).
type LabelIndex = HashMap<Box<str>, Arc<str>, RandomState>;

/// Longest `method path` looked up without allocating; longer ones are labelled afresh.
const KEY_BUFFER: usize = 256;

/// The labels of the requests seen so far, looked up without a lock or an allocation.
///
/// At most `cap` distinct requests are remembered (request paths come from clients, so an
/// unbounded table would be a leak); past that, each label is built afresh as before.
pub(crate) struct RouteLabels {
    cap: usize,
    /// Published copy, read lock-free.
    index: ArcSwap<LabelIndex>,
    /// Writers serialize here; each admission copies the table, at most `cap` times.
    admitting: Mutex<()>,
}

impl RouteLabels {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            index: ArcSwap::from_pointee(LabelIndex::default()),
            admitting: Mutex::new(()),
        }
    }

    /// The label of `method path` under `config`'s route patterns.
    pub(crate) fn label(&self, config: &ShadowConfig, method: &str, path: &str) -> Arc<str> {
        let mut buffer = [0u8; KEY_BUFFER];
        let Some(key) = join(&mut buffer, method, path) else {
            return config.route_label(method, path).into();
        };
        let published = self.index.load();
        if let Some(label) = published.get(key) {
            return Arc::clone(label);
        }
        let label: Arc<str> = config.route_label(method, path).into();
        if published.len() >= self.cap {
            return label;
        }
        drop(published);
        let _admitting = self
            .admitting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.index.load();
        if current.len() < self.cap && !current.contains_key(key) {
            let mut next = LabelIndex::clone(&current);
            next.insert(key.into(), Arc::clone(&label));
            self.index.store(Arc::new(next));
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
    use crate::mirror::PathPattern;

    #[test]
    fn labels_follow_the_patterns_and_are_shared_once_admitted() {
        let pattern = PathPattern::new("/items/{id}").expect("a valid pattern");
        let config = ShadowConfig::new().with_label_routes([pattern], 8);
        let labels = RouteLabels::new(2);
        let first = labels.label(&config, "GET", "/items/7");
        assert_eq!(&*first, "GET /items/{id}");
        assert!(Arc::ptr_eq(
            &first,
            &labels.label(&config, "GET", "/items/7")
        ));
        assert_eq!(&*labels.label(&config, "GET", "/other"), "GET /other");
        // Past the cap, labels are still right, just not remembered.
        let third = labels.label(&config, "HEAD", "/items/9");
        assert_eq!(&*third, "HEAD /items/{id}");
        assert!(!Arc::ptr_eq(
            &third,
            &labels.label(&config, "HEAD", "/items/9")
        ));
    }

    #[test]
    fn requests_too_long_for_the_buffer_are_labelled_too() {
        let config = ShadowConfig::new();
        let labels = RouteLabels::new(4);
        let path = format!("/{}", "a".repeat(KEY_BUFFER));
        assert_eq!(&*labels.label(&config, "GET", &path), format!("GET {path}"));
    }
}
