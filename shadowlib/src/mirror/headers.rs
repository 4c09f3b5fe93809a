//! Which headers the shadow's copy carries, and the sticky key that steers a request.

use thiserror::Error;

use super::HeaderView;

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1). The shadow is
/// not on that connection, so they are never passed to it.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A header name that cannot be used in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{name}` is not a header name (lowercase letters, digits and `-_.!#$%&'*+^`|~` only)")]
pub struct HeaderNameError {
    /// The name given.
    pub name: String,
}

/// Checks a configured header name and returns it lowercased, the form header maps use.
pub(crate) fn header_name(name: &str) -> Result<String, HeaderNameError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    if valid {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(HeaderNameError {
            name: name.to_owned(),
        })
    }
}

/// What happens to one header of a request copied to the shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardHeader<'a> {
    /// Copied as it is.
    Keep,
    /// Left out: hop-by-hop, or redacted without a replacement.
    Drop,
    /// Copied with this value in place of the real one (redacted).
    Replace(&'a [u8]),
}

/// Strips hop-by-hop headers from the shadow's copy and redacts a configured list.
///
/// Redaction keeps secrets (session tokens, API keys) out of the candidate build while it
/// is only a shadow. By default a redacted header is removed; with
/// [`HeaderPolicy::replace_with`] it is kept with a placeholder value instead, for
/// candidates that refuse requests lacking the header.
///
/// ```
/// use shadowlib::mirror::{HeaderList, HeaderPolicy, HttpMirror, Mirror, RequestCopy, RequestHead};
///
/// let policy = HeaderPolicy::new().redact("Authorization")?;
/// let headers = HeaderList(vec![
///     ("authorization", b"Bearer s3cret".as_slice()),
///     ("connection", b"x-trace".as_slice()),
///     ("x-trace", b"abc".as_slice()),
///     ("accept", b"*/*".as_slice()),
/// ]);
/// let mut copy = RequestCopy::default();
/// HttpMirror::new()
///     .with_headers(policy)
///     .copy(&RequestHead::new("GET", "/", &headers), &mut copy);
/// // Redacted, hop-by-hop, and listed in `Connection`: only `accept` is left.
/// assert_eq!(copy.headers().collect::<Vec<_>>(), [("accept", b"*/*".as_slice())]);
/// # Ok::<(), shadowlib::mirror::HeaderNameError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderPolicy {
    redacted: Vec<String>,
    replacement: Option<Vec<u8>>,
}

impl HeaderPolicy {
    /// Strips hop-by-hop headers only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header to redact from the shadow's copy.
    pub fn redact(mut self, name: &str) -> Result<Self, HeaderNameError> {
        self.redacted.push(header_name(name)?);
        Ok(self)
    }

    /// Keeps redacted headers, with `value` in place of the real value.
    pub fn replace_with(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.replacement = Some(value.into());
        self
    }

    /// The headers redacted.
    pub fn redacted(&self) -> &[String] {
        &self.redacted
    }

    /// The filter for one request: hop-by-hop headers include those its `Connection`
    /// header lists.
    pub(crate) fn filter<'p>(&'p self, headers: &dyn HeaderView) -> HeaderFilter<'p> {
        let mut listed = Vec::new();
        headers.each_value("connection", &mut |value| {
            for token in value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if !token.is_empty() {
                    listed.push(String::from_utf8_lossy(token).to_ascii_lowercase());
                }
            }
        });
        HeaderFilter {
            policy: self,
            connection_listed: listed,
        }
    }
}

/// The [`HeaderPolicy`] applied to one request. See [`HeaderPolicy::filter`].
#[derive(Debug, Clone)]
pub(crate) struct HeaderFilter<'p> {
    policy: &'p HeaderPolicy,
    connection_listed: Vec<String>,
}

impl HeaderFilter<'_> {
    /// What to do with header `name` (lowercase).
    pub(crate) fn forward(&self, name: &str) -> ForwardHeader<'_> {
        if HOP_BY_HOP.contains(&name) || self.connection_listed.iter().any(|n| n == name) {
            return ForwardHeader::Drop;
        }
        if self.policy.redacted.iter().any(|n| n == name) {
            return match &self.policy.replacement {
                Some(value) => ForwardHeader::Replace(value),
                None => ForwardHeader::Drop,
            };
        }
        ForwardHeader::Keep
    }
}

/// Where the sticky key of a request is read from: a header (`x-user-id`) or a cookie
/// (`session`). Requests with the same key go to the same build while the share grows.
///
/// ```
/// use shadowlib::mirror::{HeaderList, StickyKey};
///
/// let key = StickyKey::cookie("session")?;
/// let headers = HeaderList(vec![("cookie", b"theme=dark; session=abc123".as_slice())]);
/// assert_eq!(key.extract(&headers), Some(b"abc123".as_slice()));
/// # Ok::<(), shadowlib::mirror::HeaderNameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// The value of this header (lowercase name).
    Header(String),
    /// The value of this cookie.
    Cookie(String),
}

impl StickyKey {
    /// The key is the value of header `name`.
    pub fn header(name: &str) -> Result<Self, HeaderNameError> {
        Ok(StickyKey::Header(header_name(name)?))
    }

    /// The key is the value of cookie `name`. Cookie names are case-sensitive and are
    /// kept as given; they follow the same character rules as header names.
    pub fn cookie(name: &str) -> Result<Self, HeaderNameError> {
        header_name(name)?;
        Ok(StickyKey::Cookie(name.to_owned()))
    }

    /// The key of a request, if it carries one (an empty value is no key).
    pub fn extract<'h>(&self, headers: &'h dyn HeaderView) -> Option<&'h [u8]> {
        match self {
            StickyKey::Header(name) => headers.first(name).filter(|v| !v.is_empty()),
            StickyKey::Cookie(name) => {
                let mut found = None;
                headers.each_value("cookie", &mut |value| {
                    if found.is_none() {
                        found = cookie_value(value, name.as_bytes());
                    }
                });
                found.filter(|v| !v.is_empty())
            }
        }
    }
}

/// The value of cookie `name` in one `Cookie` header value (`a=1; b=2`), without quotes.
fn cookie_value<'v>(header: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        let (key, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        if key != name {
            return None;
        }
        let unquoted = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        Some(unquoted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::HeaderList;

    #[test]
    fn header_names_are_validated_and_lowercased() {
        assert_eq!(header_name("X-User"), Ok("x-user".to_owned()));
        assert!(header_name("").is_err());
        assert!(header_name("x user").is_err());
        assert!(header_name("x:user").is_err());
    }

    #[test]
    fn redaction_can_replace_instead_of_drop() {
        let policy = HeaderPolicy::new()
            .redact("cookie")
            .expect("valid")
            .replace_with("redacted");
        let headers = HeaderList::default();
        assert_eq!(
            policy.filter(&headers).forward("cookie"),
            ForwardHeader::Replace(b"redacted")
        );
        assert_eq!(
            policy.filter(&headers).forward("upgrade"),
            ForwardHeader::Drop
        );
    }

    #[test]
    fn connection_tokens_are_hop_by_hop() {
        let policy = HeaderPolicy::new();
        let headers = HeaderList(vec![
            ("connection", b"keep-alive, X-Custom ,".as_slice()),
            ("connection", b"x-other".as_slice()),
        ]);
        let filter = policy.filter(&headers);
        for name in ["x-custom", "x-other", "keep-alive", "connection"] {
            assert_eq!(filter.forward(name), ForwardHeader::Drop, "{name}");
        }
        assert_eq!(filter.forward("accept"), ForwardHeader::Keep);
    }

    #[test]
    fn cookies_are_found_across_headers_and_quotes() {
        let key = StickyKey::cookie("sid").expect("valid");
        let headers = HeaderList(vec![
            ("cookie", b"a=1".as_slice()),
            ("cookie", b"xsid=no; sid=\"q1\"".as_slice()),
        ]);
        assert_eq!(key.extract(&headers), Some(b"q1".as_slice()));
        let empty = HeaderList(vec![("cookie", b"sid=".as_slice())]);
        assert_eq!(key.extract(&empty), None);
        assert_eq!(key.extract(&HeaderList::default()), None);
    }

    #[test]
    fn header_keys() {
        let key = StickyKey::header("X-User").expect("valid");
        let headers = HeaderList(vec![
            ("x-user", b"42".as_slice()),
            ("x-arm", b" stable ".as_slice()),
        ]);
        assert_eq!(key.extract(&headers), Some(b"42".as_slice()));
    }
}
