//! Read classification over request heads: deny by default, widened only by declared routes.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::{ReadClass, RequestHead};

/// The methods HTTP defines as safe and that are read without any declaration.
pub const SAFE_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// A route rule or path pattern that cannot be used, naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    /// A path pattern must start with `/`.
    #[error("path pattern `{pattern}` must start with `/`")]
    NotAbsolute {
        /// The pattern given.
        pattern: String,
    },
    /// A `{…}` segment is malformed: unclosed, empty, or mixed with literal text.
    #[error(
        "path pattern `{pattern}`: segment `{segment}` must be a literal, `{{name}}` or `{{*name}}`"
    )]
    BadSegment {
        /// The pattern given.
        pattern: String,
        /// The offending segment.
        segment: String,
    },
    /// `{*name}` matches the rest of the path, so nothing may follow it.
    #[error("path pattern `{pattern}`: `{{*…}}` must be the last segment")]
    CatchAllNotLast {
        /// The pattern given.
        pattern: String,
    },
    /// A method must be a non-empty HTTP token, such as `POST`.
    #[error("method `{method}` is not an HTTP method token")]
    BadMethod {
        /// The method given.
        method: String,
    },
    /// A rule written as text must be `METHOD /path`.
    #[error("route rule `{rule}` must be written `METHOD /path`")]
    BadRule {
        /// The rule given.
        rule: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    CatchAll,
}

/// A path pattern in the syntax of axum and matchit: literal segments, `{name}` for exactly
/// one segment, and a final `{*name}` for one or more remaining segments. Paths match
/// segment by segment, as sent (no decoding, no trailing-slash folding), so a pattern never
/// matches more than it says.
///
/// ```
/// use shadowlib::mirror::PathPattern;
///
/// let p: PathPattern = "/users/{id}/orders".parse()?;
/// assert!(p.matches("/users/7/orders"));
/// assert!(!p.matches("/users/7/orders/9"));
/// let rest: PathPattern = "/static/{*file}".parse()?;
/// assert!(rest.matches("/static/css/site.css"));
/// assert!(!rest.matches("/static"));
/// assert!("/a/{b".parse::<PathPattern>().is_err());
/// # Ok::<(), shadowlib::mirror::RuleError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Parses a pattern.
    pub fn new(pattern: &str) -> Result<Self, RuleError> {
        let rest = pattern
            .strip_prefix('/')
            .ok_or_else(|| RuleError::NotAbsolute {
                pattern: pattern.to_owned(),
            })?;
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let bad = || RuleError::BadSegment {
                pattern: pattern.to_owned(),
                segment: (*part).to_owned(),
            };
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) => {
                    let (catch_all, name) = match inner.strip_prefix('*') {
                        Some(name) => (true, name),
                        None => (false, inner),
                    };
                    if name.is_empty() || name.contains(['{', '}', '*']) {
                        return Err(bad());
                    }
                    if catch_all && index + 1 != parts.len() {
                        return Err(RuleError::CatchAllNotLast {
                            pattern: pattern.to_owned(),
                        });
                    }
                    if catch_all {
                        Segment::CatchAll
                    } else {
                        Segment::Param
                    }
                }
                None if part.contains(['{', '}']) => return Err(bad()),
                None => Segment::Literal((*part).to_owned()),
            };
            segments.push(segment);
        }
        Ok(Self {
            text: pattern.to_owned(),
            segments,
        })
    }

    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in &self.segments {
            match segment {
                Segment::CatchAll => return parts.next().is_some(),
                Segment::Param => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(literal) => {
                    if parts.next() != Some(literal.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for PathPattern {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A method and a path pattern, such as `POST /search/{index}`.
///
/// Methods are written in uppercase in rules (`post` is taken as `POST`), and compared
/// with the request's method as sent: HTTP methods are case-sensitive, so a request with
/// method `post` is a different, unknown method and matches nothing.
///
/// ```
/// use shadowlib::mirror::RouteRule;
///
/// let rule: RouteRule = "POST /search/{index}".parse()?;
/// assert!(rule.matches("POST", "/search/products"));
/// assert!(!rule.matches("PUT", "/search/products"));
/// assert!("POST search".parse::<RouteRule>().is_err());
/// # Ok::<(), shadowlib::mirror::RuleError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    method: String,
    pattern: PathPattern,
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl RouteRule {
    /// A rule from a method and a path pattern.
    pub fn new(method: &str, pattern: &str) -> Result<Self, RuleError> {
        if method.is_empty() || !method.chars().all(is_token_char) {
            return Err(RuleError::BadMethod {
                method: method.to_owned(),
            });
        }
        Ok(Self {
            method: method.to_ascii_uppercase(),
            pattern: PathPattern::new(pattern)?,
        })
    }

    /// Whether a request with this method and path matches.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method == method && self.pattern.matches(path)
    }

    /// The method, uppercase.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path pattern.
    pub fn pattern(&self) -> &PathPattern {
        &self.pattern
    }
}

impl FromStr for RouteRule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RuleError::BadRule { rule: s.to_owned() };
        let mut words = s.split_whitespace();
        let (Some(method), Some(path), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad());
        };
        if !path.starts_with('/') {
            return Err(bad());
        }
        Self::new(method, path)
    }
}

impl fmt::Display for RouteRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.pattern)
    }
}

/// The built-in classifier: `GET`, `HEAD` and `OPTIONS` are reads; any other method is a
/// read only on a route the application declared a safe read with [`ReadRules::allow`];
/// and a route declared with [`ReadRules::deny`] is never a read, whatever its method (for
/// the `GET /logout` that every application seems to have).
///
/// ```
/// use shadowlib::mirror::{HeaderList, ReadRules, RequestHead};
///
/// let rules = ReadRules::new()
///     .allow("POST /search")?
///     .deny("GET /logout")?;
/// let h = HeaderList::default();
/// assert!(rules.classify(&RequestHead::new("GET", "/items", &h)).is_read());
/// assert!(rules.classify(&RequestHead::new("POST", "/search", &h)).is_read());
/// assert!(!rules.classify(&RequestHead::new("POST", "/items", &h)).is_read());
/// assert!(!rules.classify(&RequestHead::new("GET", "/logout", &h)).is_read());
/// # Ok::<(), shadowlib::mirror::RuleError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadRules {
    allowed: Vec<RouteRule>,
    denied: Vec<RouteRule>,
}

impl ReadRules {
    /// Only `GET`, `HEAD` and `OPTIONS` are reads.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a route a safe read, written `METHOD /path/{param}`.
    pub fn allow(mut self, rule: &str) -> Result<Self, RuleError> {
        self.allowed.push(rule.parse()?);
        Ok(self)
    }

    /// Declares a route never a read, written `METHOD /path/{param}`. Wins over everything.
    pub fn deny(mut self, rule: &str) -> Result<Self, RuleError> {
        self.denied.push(rule.parse()?);
        Ok(self)
    }

    /// Adds a parsed rule declaring a safe read.
    pub fn allow_rule(mut self, rule: RouteRule) -> Self {
        self.allowed.push(rule);
        self
    }

    /// Adds a parsed rule declaring a route never a read.
    pub fn deny_rule(mut self, rule: RouteRule) -> Self {
        self.denied.push(rule);
        self
    }
}

impl ReadRules {
    /// Whether the request may be mirrored under these rules.
    pub fn classify(&self, head: &RequestHead<'_>) -> ReadClass {
        // Whatever its method, a request that asks to switch protocols takes over the
        // connection it came on: no copy of it may run anywhere but live.
        if head.headers.first("upgrade").is_some() {
            return ReadClass::NotRead("the request asks to upgrade its connection");
        }
        if self
            .denied
            .iter()
            .any(|r| r.matches(head.method, head.path))
        {
            return ReadClass::NotRead("route declared never a read");
        }
        if SAFE_METHODS.contains(&head.method) {
            return ReadClass::Read;
        }
        if self
            .allowed
            .iter()
            .any(|r| r.matches(head.method, head.path))
        {
            return ReadClass::Read;
        }
        ReadClass::NotRead("method is not a read and no rule declares this route one")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::mirror::HeaderList;

    fn class(rules: &ReadRules, method: &str, path: &str) -> bool {
        rules
            .classify(&RequestHead::new(method, path, &HeaderList::default()))
            .is_read()
    }

    #[test]
    fn pattern_errors_name_the_problem() {
        assert!(matches!(
            PathPattern::new("users"),
            Err(RuleError::NotAbsolute { .. })
        ));
        assert!(matches!(
            PathPattern::new("/a/{}"),
            Err(RuleError::BadSegment { .. })
        ));
        assert!(matches!(
            PathPattern::new("/a/x{id}"),
            Err(RuleError::BadSegment { .. })
        ));
        assert!(matches!(
            PathPattern::new("/a/{*rest}/b"),
            Err(RuleError::CatchAllNotLast { .. })
        ));
        assert!(matches!(
            RouteRule::new("PO ST", "/a"),
            Err(RuleError::BadMethod { .. })
        ));
        assert!(matches!(
            "POST".parse::<RouteRule>(),
            Err(RuleError::BadRule { .. })
        ));
        assert!(matches!(
            "POST /a extra".parse::<RouteRule>(),
            Err(RuleError::BadRule { .. })
        ));
    }

    #[test]
    fn patterns_match_segment_by_segment() {
        let p = PathPattern::new("/a/{id}").expect("valid");
        assert!(p.matches("/a/1"));
        assert!(p.matches("/a/"), "an empty segment is still a segment");
        assert!(!p.matches("/a"));
        assert!(!p.matches("/a/1/"));
        assert!(!p.matches("a/1"));
        let root = PathPattern::new("/").expect("valid");
        assert!(root.matches("/"));
        assert!(!root.matches("/x"));
    }

    #[test]
    fn only_safe_methods_are_reads_by_default() {
        let rules = ReadRules::new();
        for method in ["GET", "HEAD", "OPTIONS"] {
            assert!(class(&rules, method, "/x"), "{method}");
        }
        for method in [
            "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "get", "PROPFIND",
        ] {
            assert!(!class(&rules, method, "/x"), "{method}");
        }
    }

    #[test]
    fn upgrade_requests_are_never_reads() {
        let rules = ReadRules::new().allow("GET /ws").expect("valid");
        let upgrade = HeaderList(vec![("upgrade", b"websocket".as_slice())]);
        let head = RequestHead::new("GET", "/ws", &upgrade);
        assert_eq!(
            rules.classify(&head),
            ReadClass::NotRead("the request asks to upgrade its connection")
        );
    }

    #[test]
    fn rule_methods_are_uppercased_but_requests_are_not() {
        let rules = ReadRules::new().allow("post /search").expect("valid");
        assert!(class(&rules, "POST", "/search"));
        assert!(!class(&rules, "post", "/search"));
    }

    #[test]
    fn deny_wins_over_safe_methods_and_allow() {
        let rules = ReadRules::new()
            .allow("POST /a/{x}")
            .and_then(|r| r.deny("POST /a/secret"))
            .and_then(|r| r.deny("GET /logout"))
            .expect("valid");
        assert!(class(&rules, "POST", "/a/open"));
        assert!(!class(&rules, "POST", "/a/secret"));
        assert!(!class(&rules, "GET", "/logout"));
    }

    proptest! {
        #[test]
        fn non_safe_methods_are_reads_only_where_declared(
            method in "[A-Z]{3,7}",
            path in "(/[a-z0-9]{0,3}){1,4}",
            rule_path in "(/([a-z0-9]{1,3}|\\{p\\})){1,4}",
        ) {
            let rules = ReadRules::new().allow_rule(RouteRule::new("POST", &rule_path).expect("generated valid"));
            let is_read = class(&rules, &method, &path);
            let safe = SAFE_METHODS.contains(&method.as_str());
            let declared = method == "POST" && PathPattern::new(&rule_path).expect("valid").matches(&path);
            prop_assert_eq!(is_read, safe || declared);
        }
    }
}
