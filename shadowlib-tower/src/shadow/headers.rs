//! The core's view of an `http` header map.

use http::HeaderMap;
use shadowlib::mirror::HeaderView;

/// An `http` 1 header map seen through the core's [`HeaderView`].
pub(crate) struct HeaderMapView<'a>(pub(crate) &'a HeaderMap);

impl HeaderView for HeaderMapView<'_> {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|value| value.as_bytes())
    }

    fn each_value<'s>(&'s self, name: &str, visit: &mut dyn FnMut(&'s [u8])) {
        for value in self.0.get_all(name) {
            visit(value.as_bytes());
        }
    }

    fn each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, &'s [u8])) {
        for (name, value) in self.0 {
            visit(name.as_str(), value.as_bytes());
        }
    }
}
