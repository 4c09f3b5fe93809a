//! The core's view of actix-web's header map, and the head a shadow request gets.

use std::net::SocketAddr;

use actix_web::dev::RequestHead;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, Uri, Version};
use shadowlib::mirror::{ForwardHeader, HeaderPolicy, HeaderView};

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

/// The head of a read as the live path copies it for the shadow: plain `Send` data, one
/// clone of each part. The header policy is applied later, on the shadow thread
/// ([`HeadCopy::into_head`]), so that the live request pays for the copy and nothing more;
/// the candidate only ever sees the filtered head.
pub(crate) struct HeadCopy {
    method: Method,
    uri: Uri,
    version: Version,
    peer_addr: Option<SocketAddr>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl HeadCopy {
    pub(crate) fn of(head: &RequestHead) -> Self {
        Self {
            method: head.method.clone(),
            uri: head.uri.clone(),
            version: head.version,
            peer_addr: head.peer_addr,
            headers: head
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        }
    }

    /// The head of the shadow's request: same method, URI, version and peer address;
    /// headers through the policy (hop-by-hop stripped, redactions applied). Connection
    /// flags and extensions were never copied: they belong to the live connection.
    pub(crate) fn into_head(self, policy: &HeaderPolicy) -> RequestHead {
        let mut head = RequestHead::default();
        {
            let filter = policy.filter(&HeaderPairs(&self.headers));
            for (name, value) in &self.headers {
                match filter.forward(name.as_str()) {
                    ForwardHeader::Keep => head.headers.append(name.clone(), value.clone()),
                    ForwardHeader::Replace(replacement) => {
                        // A replacement that is not a valid header value leaves the
                        // header out, which still keeps the secret from the shadow.
                        if let Ok(replacement) = HeaderValue::from_bytes(replacement) {
                            head.headers.append(name.clone(), replacement);
                        }
                    }
                    ForwardHeader::Drop => {}
                }
            }
        }
        head.method = self.method;
        head.uri = self.uri;
        head.version = self.version;
        head.peer_addr = self.peer_addr;
        head
    }
}

/// Copied headers seen through the core's [`HeaderView`].
struct HeaderPairs<'a>(&'a [(HeaderName, HeaderValue)]);

impl HeaderView for HeaderPairs<'_> {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.as_bytes())
    }

    fn each_value<'s>(&'s self, name: &str, visit: &mut dyn FnMut(&'s [u8])) {
        for (_, value) in self.0.iter().filter(|(n, _)| n.as_str() == name) {
            visit(value.as_bytes());
        }
    }

    fn each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, &'s [u8])) {
        for (name, value) in self.0 {
            visit(name.as_str(), value.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn copies_strip_hop_by_hop_and_redact() {
        let live = head(&[
            ("connection", "keep-alive, x-trace"),
            ("x-trace", "abc"),
            ("transfer-encoding", "chunked"),
            ("authorization", "Bearer secret"),
            ("cookie", "session=s3cr3t"),
            ("accept", "application/json"),
        ]);
        let policy = HeaderPolicy::new()
            .redact("authorization")
            .and_then(|p| p.redact("cookie"))
            .expect("valid names")
            .replace_with("redacted");
        let copy = HeadCopy::of(&live).into_head(&policy);
        assert_eq!(copy.method, Method::GET);
        assert_eq!(copy.uri, live.uri);
        assert_eq!(copy.peer_addr, live.peer_addr);
        let mut names: Vec<&str> = copy.headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "authorization", "cookie"]);
        assert_eq!(
            copy.headers.get("authorization").map(HeaderValue::as_bytes),
            Some(b"redacted".as_slice())
        );
        let dropped =
            HeadCopy::of(&live).into_head(&HeaderPolicy::new().redact("cookie").expect("valid"));
        assert!(dropped.headers.get("cookie").is_none());
        assert!(dropped.headers.get("authorization").is_some());
    }
}
