//! Keeping credentials out of every output: logs, events, reports, metric labels,
//! evidence exports and the names of differing fields.
//!
//! The shadow's copy of a request still carries every header (the candidate needs them
//! to answer as stable does); what leaves the process never does. A [`Redaction`] names
//! what is secret:
//!
//! * headers: `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie` always,
//!   every header its framework marks sensitive (`http::HeaderValue::is_sensitive`), and
//!   the ones you list;
//! * JSON fields: the ones you list (`password`, `token`), at any depth;
//! * values: secrets the library itself holds (admin tokens), scrubbed from any text.
//!
//! The rollout applies it where outputs are made ([`RolloutBuilder::redaction`]): the
//! names of differing fields are cut at a listed JSON field (a key inside `token` is part
//! of its value), the admin API's answers pass through [`Redaction::redact_json`], and
//! an operator's reason has known secrets scrubbed before it becomes an event.
//!
//! [`RolloutBuilder::redaction`]: crate::RolloutBuilder::redaction

use std::borrow::Cow;

use serde_json::Value;

use crate::compare::{CompareResponses, Comparison, Difference, ResponseSummary};
use crate::mirror::{HeaderNameError, HeaderView, header_name};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// The headers that are credentials by definition, whatever the configuration.
pub const ALWAYS_REDACTED: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Secrets shorter than this are not scrubbed from text: a two-letter "secret" would
/// blank out every word containing it, and no credential is that short.
const SHORTEST_SCRUBBED: usize = 8;

/// What counts as a credential, and how to keep it out of outputs.
///
/// ```
/// use shadowlib::redact::Redaction;
///
/// let redaction = Redaction::new().header("X-Api-Key")?.json_field("token");
/// assert!(redaction.is_sensitive_header("authorization", false));
/// assert!(redaction.is_sensitive_header("x-api-key", false));
/// assert!(redaction.is_sensitive_header("x-custom", true), "marked sensitive by its framework");
/// assert!(!redaction.is_sensitive_header("accept", false));
///
/// let mut body = serde_json::json!({"user": "ann", "auth": {"token": "s3cr3t-value"}});
/// redaction.redact_json(&mut body);
/// assert_eq!(body, serde_json::json!({"user": "ann", "auth": {"token": "[redacted]"}}));
/// assert_eq!(redaction.redact_field_path("/auth/token/part"), "/auth/token");
/// # Ok::<(), shadowlib::mirror::HeaderNameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    headers: Vec<String>,
    json_fields: Vec<String>,
    secrets: Vec<Vec<u8>>,
}

impl Default for Redaction {
    fn default() -> Self {
        Self::new()
    }
}

impl Redaction {
    /// The headers in [`ALWAYS_REDACTED`], and those marked sensitive.
    pub fn new() -> Self {
        Self {
            headers: ALWAYS_REDACTED.map(String::from).to_vec(),
            json_fields: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Adds a header (any case) whose value is never output.
    pub fn header(mut self, name: &str) -> Result<Self, HeaderNameError> {
        let name = header_name(name)?;
        if !self.headers.contains(&name) {
            self.headers.push(name);
        }
        Ok(self)
    }

    /// Adds a JSON field name (an object key, at any depth, case-sensitive) whose value is
    /// never output.
    pub fn json_field(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !self.json_fields.contains(&name) {
            self.json_fields.push(name);
        }
        self
    }

    /// Adds a value that is never output, in whatever text it turns up (values shorter
    /// than 8 bytes are not scrubbed from text).
    pub fn secret(mut self, value: impl Into<Vec<u8>>) -> Self {
        let value = value.into();
        if !value.is_empty() && !self.secrets.contains(&value) {
            self.secrets.push(value);
        }
        self
    }

    /// The redacted headers, lowercase.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The redacted JSON fields.
    pub fn json_fields(&self) -> &[String] {
        &self.json_fields
    }

    /// Whether header `name` (lowercase) is a credential: always redacted, listed, or
    /// `marked_sensitive` by its framework.
    pub fn is_sensitive_header(&self, name: &str, marked_sensitive: bool) -> bool {
        marked_sensitive || self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Replaces the value of every listed JSON field, at any depth, with [`REDACTED`], and
    /// scrubs secrets from every string and key left.
    pub fn redact_json(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut inner) in entries {
                    if self.json_fields.contains(&key) {
                        inner = Value::String(REDACTED.to_owned());
                    } else {
                        self.redact_json(&mut inner);
                    }
                    let key = self.redact_text(&key).into_owned();
                    // A key that is a field path (evidence keys fields by path) is cut at
                    // a listed field, as the comparator's are.
                    let key = if key.starts_with('/') {
                        self.redact_field_path(&key).into_owned()
                    } else {
                        key
                    };
                    merge(map, key, inner);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.redact_json(item)),
            Value::String(text) => {
                if let Cow::Owned(scrubbed) = self.redact_text(text) {
                    *text = scrubbed;
                }
            }
            _ => {}
        }
    }

    /// `text` with every known secret (see [`Redaction::secret`]) replaced by
    /// [`REDACTED`].
    pub fn redact_text<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if secret.len() < SHORTEST_SCRUBBED {
                continue;
            }
            let Ok(secret) = std::str::from_utf8(secret) else {
                continue;
            };
            if out.contains(secret) {
                out = Cow::Owned(out.replace(secret, REDACTED));
            }
        }
        out
    }

    /// `text` with known secrets and the values of this request's sensitive headers
    /// scrubbed: for the text of a failure that may quote the request (a candidate's
    /// panic message, an error from its service).
    ///
    /// ```
    /// use shadowlib::mirror::HeaderList;
    /// use shadowlib::redact::Redaction;
    ///
    /// let headers = HeaderList(vec![("authorization", b"Bearer abcdef123456".as_slice())]);
    /// let why = "rejected token Bearer abcdef123456 for /orders";
    /// assert_eq!(
    ///     Redaction::new().redact_text_of_request(why, &headers),
    ///     "rejected token [redacted] for /orders"
    /// );
    /// ```
    pub fn redact_text_of_request<'t>(
        &self,
        text: &'t str,
        headers: &dyn HeaderView,
    ) -> Cow<'t, str> {
        let mut out = self.redact_text(text);
        headers.each(&mut |name, value| {
            if !self.is_sensitive_header(name, false) {
                return;
            }
            let mut scrub = |part: &[u8]| {
                let part = part.trim_ascii();
                if part.len() >= SHORTEST_SCRUBBED
                    && let Ok(part) = std::str::from_utf8(part)
                    && out.contains(part)
                {
                    out = Cow::Owned(out.replace(part, REDACTED));
                }
            };
            scrub(value);
            // Each cookie, and the credential after an auth scheme, on its own too.
            for piece in value.split(|b| matches!(b, b';' | b' ' | b'=' | b',')) {
                scrub(piece);
            }
        });
        out
    }

    /// A JSON field path (`/auth/token/part`) cut after the first listed field it passes
    /// through (`/auth/token`): keys under a secret are part of its value.
    pub fn redact_field_path<'p>(&self, path: &'p str) -> Cow<'p, str> {
        if self.json_fields.is_empty() {
            return Cow::Borrowed(path);
        }
        let mut end = 0;
        for segment in path.split('/').skip(1) {
            end += 1 + segment.len();
            // Paths escape `/` and `~` in keys as JSON Pointer does.
            let key = segment.replace("~1", "/").replace("~0", "~");
            if self.json_fields.contains(&key) {
                if end < path.len() {
                    return Cow::Borrowed(&path[..end]);
                }
                break;
            }
        }
        Cow::Borrowed(path)
    }

    /// `(name, value)` pairs as they may be output: sensitive values replaced by
    /// [`REDACTED`], the rest as text.
    ///
    /// ```
    /// use shadowlib::redact::Redaction;
    ///
    /// let shown = Redaction::new().redact_headers([
    ///     ("cookie", b"session=abc".as_slice(), false),
    ///     ("accept", b"*/*".as_slice(), false),
    /// ]);
    /// assert_eq!(shown, [("cookie".to_owned(), "[redacted]".to_owned()), ("accept".to_owned(), "*/*".to_owned())]);
    /// ```
    pub fn redact_headers<'h>(
        &self,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8], bool)>,
    ) -> Vec<(String, String)> {
        headers
            .into_iter()
            .map(|(name, value, marked)| {
                let shown = if self.is_sensitive_header(name, marked) {
                    REDACTED.to_owned()
                } else {
                    self.redact_text(&String::from_utf8_lossy(value))
                        .into_owned()
                };
                (name.to_ascii_lowercase(), shown)
            })
            .collect()
    }
}

/// Inserts `value` under `key`; two keys redacted to the same one keep the first value.
fn merge(map: &mut serde_json::Map<String, Value>, key: String, value: Value) {
    map.entry(key).or_insert(value);
}

/// A comparator whose field names are cut at the redaction's JSON fields, so that no
/// key under a secret field reaches the evidence, the events or the logs. The rollout
/// wraps its comparator in it.
pub(crate) struct RedactedComparator {
    pub(crate) inner: std::sync::Arc<dyn CompareResponses>,
    pub(crate) redaction: Redaction,
}

impl CompareResponses for RedactedComparator {
    fn compare(&self, route: &str, live: &ResponseSummary, shadow: &ResponseSummary) -> Comparison {
        let mut comparison = self.inner.compare(route, live, shadow);
        let mut differences: Vec<Difference> = Vec::with_capacity(comparison.differences.len());
        for difference in comparison.differences {
            let difference = match difference {
                Difference::Field { field } => Difference::Field {
                    field: self.redaction.redact_field_path(&field).into_owned(),
                },
                other => other,
            };
            // Two keys under one secret field are one field once cut.
            if !differences.contains(&difference) {
                differences.push(difference);
            }
        }
        comparison.differences = differences;
        if let Some(why) = &mut comparison.not_comparable
            && let Cow::Owned(scrubbed) = self.redaction.redact_text(why)
        {
            *why = scrubbed;
        }
        comparison
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Comparator;
    use crate::mirror::HeaderList;

    #[test]
    fn field_paths_are_cut_at_a_listed_field_only() {
        let redaction = Redaction::new().json_field("token").json_field("a/b");
        assert_eq!(redaction.redact_field_path("/token"), "/token");
        assert_eq!(redaction.redact_field_path("/x/token/abc123/y"), "/x/token");
        assert_eq!(redaction.redact_field_path("/tokens/abc"), "/tokens/abc");
        assert_eq!(redaction.redact_field_path("/a~1b/k"), "/a~1b");
        assert_eq!(redaction.redact_field_path(""), "");
        assert_eq!(Redaction::new().redact_field_path("/token/k"), "/token/k");
    }

    #[test]
    fn secrets_are_scrubbed_from_text_keys_and_values() {
        let redaction = Redaction::new().secret("hunter2-hunter2").secret("ab");
        let mut value = serde_json::json!({
            "reason": "paused by token hunter2-hunter2",
            "hunter2-hunter2": 1,
            "list": ["ab", "x hunter2-hunter2"],
        });
        redaction.redact_json(&mut value);
        let text = value.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("\"ab\""), "short secrets are left: {text}");
    }

    #[test]
    fn the_values_of_a_requests_credentials_are_scrubbed_from_failure_text() {
        let redaction = Redaction::new().header("x-api-key").expect("valid");
        let headers = HeaderList(vec![
            ("cookie", b"theme=dark; session=sess-0123456789".as_slice()),
            ("x-api-key", b"key-abcdefgh".as_slice()),
            ("accept", b"application/json".as_slice()),
        ]);
        let why = "panic: session sess-0123456789 with key key-abcdefgh wants application/json";
        let scrubbed = redaction.redact_text_of_request(why, &headers);
        assert_eq!(
            scrubbed,
            "panic: session [redacted] with key [redacted] wants application/json"
        );
    }

    #[test]
    fn the_comparator_names_no_key_under_a_secret_field() {
        let redacted = RedactedComparator {
            inner: std::sync::Arc::new(Comparator::default()),
            redaction: Redaction::new().json_field("sessions"),
        };
        let body = |json: &str| {
            let mut summary = ResponseSummary::new(200);
            summary.body = json.as_bytes().to_vec();
            summary.body_len = json.len() as u64;
            summary
        };
        let live = body(r#"{"sessions": {"tok-aaaa": 1, "tok-bbbb": 2}, "n": 1}"#);
        let shadow = body(r#"{"sessions": {"tok-cccc": 1}, "n": 2}"#);
        let fields: Vec<String> = redacted
            .compare("GET /", &live, &shadow)
            .differences
            .iter()
            .map(|d| d.field().into_owned())
            .collect();
        assert_eq!(fields, ["/n", "/sessions"]);
    }
}
