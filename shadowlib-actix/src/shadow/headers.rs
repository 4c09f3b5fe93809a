//! The core's view of actix-web's header map.

use actix_web::http::header::{HeaderMap, HeaderValue};
use shadowlib::mirror::HeaderView;

/// An actix-web (`http` 0.2) header map seen through the core's [`HeaderView`].
pub(crate) struct HeaderMapView<'a>(pub(crate) &'a HeaderMap);

impl HeaderView for HeaderMapView<'_> {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(HeaderValue::as_bytes)
    }

    fn each_value<'s>(&'s self, name: &str, visit: &mut dyn FnMut(&'s [u8])) {
        for value in self.0.get_all(name) {
            visit(value.as_bytes());
        }
    }

    fn each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, &'s [u8])) {
        for (name, value) in self.0.iter() {
            visit(name.as_str(), value.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::dev::RequestHead;
    use actix_web::http::header::HeaderName;
    use actix_web::http::{Method, Uri};

    use super::*;

    fn head(headers: &[(&'static str, &'static str)]) -> RequestHead {
        let mut head = RequestHead::default();
        head.method = Method::GET;
        head.uri = Uri::from_static("/items?page=2");
        head.peer_addr = Some(([10, 0, 0, 1], 4242).into());
        for (name, value) in headers {
            head.headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        head
    }

    #[test]
    fn the_view_sees_every_value_in_order() {
        let head = head(&[("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2")]);
        let view = HeaderMapView(&head.headers);
        assert_eq!(view.first("accept"), Some(b"*/*".as_slice()));
        assert_eq!(view.first("missing"), None);
        let mut cookies = Vec::new();
        view.each_value("cookie", &mut |v| cookies.push(v.to_vec()));
        assert_eq!(cookies, [b"a=1".to_vec(), b"b=2".to_vec()]);
        let mut count = 0;
        view.each(&mut |_, _| count += 1);
        assert_eq!(count, 3);
    }
}
