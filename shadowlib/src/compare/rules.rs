//! What not to compare: ignored headers and JSON path patterns.

use std::collections::HashSet;

use super::CompareConfigError;

/// One step of a path into a JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    /// A key of an object.
    Key(&'a str),
    /// A position in an array.
    Index(usize),
}

/// One segment of a [`PathPattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Exactly this key (or this array position, written as a number).
    Literal(String),
    /// Any one key or position: `*`.
    Any,
    /// Zero or more keys or positions: `**`.
    AnyDepth,
}

/// A pattern over JSON paths, written like a JSON pointer: `/meta/generated_at`,
/// `/items/*/etag` (`*` is any one key or array position), `/**/updated_at` (`**` is any
/// number of them, so this is `updated_at` at any depth). `~1` stands for `/` and `~0` for
/// `~` inside a key, as in JSON pointers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPattern {
    segments: Vec<Segment>,
}

impl PathPattern {
    pub(crate) fn parse(pattern: &str) -> Result<Self, CompareConfigError> {
        let invalid = |reason| CompareConfigError::InvalidPath {
            pattern: pattern.to_owned(),
            reason,
        };
        let rest = pattern
            .strip_prefix('/')
            .ok_or_else(|| invalid("a JSON path pattern starts with `/`"))?;
        let segments = rest
            .split('/')
            .map(|segment| match segment {
                "*" => Ok(Segment::Any),
                "**" => Ok(Segment::AnyDepth),
                literal => unescape(literal)
                    .map(Segment::Literal)
                    .ok_or_else(|| invalid("`~` must be followed by `0` or `1`")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { segments })
    }

    pub(crate) fn matches(&self, path: &[Step<'_>]) -> bool {
        matches_from(&self.segments, path)
    }
}

fn matches_from(segments: &[Segment], path: &[Step<'_>]) -> bool {
    let Some((segment, rest)) = segments.split_first() else {
        return path.is_empty();
    };
    match (segment, path.split_first()) {
        (Segment::AnyDepth, _) => (0..=path.len()).any(|skip| matches_from(rest, &path[skip..])),
        (_, None) => false,
        (Segment::Any, Some((_, path_rest))) => matches_from(rest, path_rest),
        (Segment::Literal(literal), Some((step, path_rest))) => {
            let step_matches = match step {
                Step::Key(key) => literal == key,
                Step::Index(index) => literal.parse::<usize>() == Ok(*index),
            };
            step_matches && matches_from(rest, path_rest)
        }
    }
}

fn unescape(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// Escapes a key for a JSON-pointer-like field name.
pub(crate) fn escape(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains(['~', '/']) {
        key.replace('~', "~0").replace('/', "~1").into()
    } else {
        key.into()
    }
}

/// The compiled ignore rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct IgnoreRules {
    /// Lower-case header names.
    headers: HashSet<Vec<u8>>,
    json_paths: Vec<PathPattern>,
}

impl IgnoreRules {
    pub(crate) fn new(
        headers: &[String],
        json_paths: &[String],
    ) -> Result<Self, CompareConfigError> {
        Ok(Self {
            headers: headers
                .iter()
                .map(|h| h.as_bytes().to_ascii_lowercase())
                .collect(),
            json_paths: json_paths
                .iter()
                .map(|p| PathPattern::parse(p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether the header named `lowercase_name` is ignored.
    pub(crate) fn ignores_header(&self, lowercase_name: &[u8]) -> bool {
        self.headers.contains(lowercase_name)
    }

    /// Whether the JSON value at `path` (and everything under it) is ignored.
    pub(crate) fn ignores_path(&self, path: &[Step<'_>]) -> bool {
        self.json_paths.iter().any(|p| p.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &[Step<'_>]) -> bool {
        PathPattern::parse(pattern)
            .expect("valid pattern")
            .matches(path)
    }

    #[test]
    fn literal_wildcard_and_any_depth_patterns() {
        use Step::{Index, Key};
        assert!(matches("/meta/ts", &[Key("meta"), Key("ts")]));
        assert!(!matches("/meta/ts", &[Key("meta")]));
        assert!(!matches("/meta/ts", &[Key("meta"), Key("ts"), Key("x")]));
        assert!(matches(
            "/items/*/etag",
            &[Key("items"), Index(3), Key("etag")]
        ));
        assert!(matches("/items/0", &[Key("items"), Index(0)]));
        assert!(!matches("/items/0", &[Key("items"), Index(1)]));
        assert!(matches("/**/updated_at", &[Key("updated_at")]));
        assert!(matches(
            "/**/updated_at",
            &[Key("a"), Index(2), Key("updated_at")]
        ));
        assert!(!matches("/**/updated_at", &[Key("a"), Key("created_at")]));
        assert!(matches("/a~1b/c~0d", &[Key("a/b"), Key("c~d")]));
    }

    #[test]
    fn malformed_patterns_are_typed_errors() {
        for bad in ["meta/ts", "", "/bad~2escape"] {
            assert!(
                matches!(
                    PathPattern::parse(bad),
                    Err(CompareConfigError::InvalidPath { .. })
                ),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn escape_round_trips_through_the_pattern_syntax() {
        let key = "a/b~c";
        let pattern = format!("/{}", escape(key));
        assert!(matches(&pattern, &[Step::Key(key)]));
    }
}
