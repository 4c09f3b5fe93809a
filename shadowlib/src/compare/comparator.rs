//! The field-level comparator: which fields of two responses differ, by the ignore rules.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::diff::{Change, diff};
use super::rules::IgnoreRules;
use super::{
    CompareResponses, Comparison, Difference, ExactComparison, ResponseParts, ResponseSummary,
};

/// What the [`Comparator`] leaves out.
///
/// ```
/// use shadowlib::compare::CompareConfig;
///
/// let config: CompareConfig = toml::from_str(r#"
///     ignore_json_paths = ["/**/updated_at", "/meta/request_id"]
/// "#)?;
/// assert!(config.ignore_headers.iter().any(|h| h == "date"));
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompareConfig {
    /// Header names (any case) never compared. By default the ones that differ on every
    /// response by design: `date`, request and trace ids, timing.
    pub ignore_headers: Vec<String>,
    /// JSON path patterns never compared: `/meta/at`, `/items/*/etag`, `/**/updated_at`.
    pub ignore_json_paths: Vec<String>,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            ignore_headers: [
                "date",
                "age",
                "x-request-id",
                "x-correlation-id",
                "x-trace-id",
                "traceparent",
                "tracestate",
                "server-timing",
            ]
            .map(String::from)
            .to_vec(),
            ignore_json_paths: Vec::new(),
        }
    }
}

/// A [`CompareConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CompareConfigError {
    /// A JSON path pattern is malformed.
    #[error("invalid JSON path pattern `{pattern}`: {reason}")]
    InvalidPath {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One field that differs between two responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field: `status`, `header:<name>`, `body` or a JSON path such as `/items/*/price`.
    pub field: String,
    /// How it differs from the first response.
    pub change: Change,
}

/// Compares two responses field by field: status, each header, and the body — JSON
/// bodies key by key and element by element (array positions written `*`), other bodies
/// as bytes — leaving out what the ignore rules name.
///
/// It is the shadow's default way of comparing (as a [`CompareResponses`]). It learns no
/// noise itself: the shadow compares the live response with the stable *twin*'s as well
/// as with the candidate's, and a field that differs between two runs of the stable build
/// is noise by that evidence (see [`PairedMismatches`](crate::PairedMismatches)).
///
/// ```
/// use shadowlib::compare::{Comparator, ResponseParts};
///
/// let comparator = Comparator::default();
/// let live = ResponseParts::new(200, br#"{"price": 10, "at": "12:00:01"}"#);
/// let candidate = ResponseParts::new(200, br#"{"price": 12, "at": "12:00:03"}"#);
/// let fields: Vec<String> = comparator.fields(&live, &candidate).into_iter().map(|f| f.field).collect();
/// assert_eq!(fields, ["/at", "/price"]);
/// ```
#[derive(Debug)]
pub struct Comparator {
    rules: IgnoreRules,
}

impl Default for Comparator {
    fn default() -> Self {
        // The default configuration has no JSON paths, the only part that can be invalid.
        Self::new(CompareConfig::default()).expect("the default compare config is valid")
    }
}

impl Comparator {
    /// A comparator with the given configuration.
    pub fn new(config: CompareConfig) -> Result<Self, CompareConfigError> {
        let rules = IgnoreRules::new(&config.ignore_headers, &config.ignore_json_paths)?;
        Ok(Self { rules })
    }

    /// The fields that differ between `first` and `second`, in field order.
    pub fn fields(
        &self,
        first: &ResponseParts<'_>,
        second: &ResponseParts<'_>,
    ) -> Vec<FieldChange> {
        diff(first, second, &self.rules)
            .into_iter()
            .map(|(field, change)| FieldChange { field, change })
            .collect()
    }
}

/// Each differing field becomes a [`Difference::Field`]. A body cut at the body limit on
/// either side cannot be parsed as JSON, so such pairs are compared as
/// [`ExactComparison`] does.
///
/// ```
/// use shadowlib::compare::{Comparator, CompareConfig, CompareResponses, ResponseSummary};
/// use shadowlib::shadow::ShadowConfig;
///
/// let comparator = Comparator::new(CompareConfig {
///     ignore_json_paths: vec!["/served_at".into()],
///     ..CompareConfig::default()
/// })?;
/// let body = |json: &str| {
///     let mut summary = ResponseSummary::new(200);
///     summary.body = json.as_bytes().to_vec();
///     summary.body_len = json.len() as u64;
///     summary
/// };
/// let live = body(r#"{"price": 10, "served_at": "12:00:01"}"#);
/// let later = body(r#"{"price": 10, "served_at": "12:00:02"}"#);
/// let wrong = body(r#"{"price": 12, "served_at": "12:00:03"}"#);
/// assert!(!comparator.compare("GET /item", &live, &later).mismatched());
/// let differences = comparator.compare("GET /item", &live, &wrong).differences;
/// assert_eq!(differences.len(), 1);
/// assert_eq!(differences[0].to_string(), "field `/price` differs");
/// let config = ShadowConfig::new().with_comparator(comparator);
/// # let _ = config;
/// # Ok::<(), shadowlib::compare::CompareConfigError>(())
/// ```
impl CompareResponses for Comparator {
    fn compare(&self, route: &str, live: &ResponseSummary, shadow: &ResponseSummary) -> Comparison {
        // Byte-identical responses differ in no field, whatever the rules ignore: the
        // usual case, decided without parsing or allocating.
        if live.status == shadow.status
            && live.truncated == shadow.truncated
            && live.headers == shadow.headers
            && live.body == shadow.body
        {
            return Comparison::default();
        }
        if live.truncated || shadow.truncated {
            return ExactComparison.compare(route, live, shadow);
        }
        Comparison {
            differences: self
                .fields(&parts(live), &parts(shadow))
                .into_iter()
                .map(|f| Difference::Field { field: f.field })
                .collect(),
            not_comparable: None,
        }
    }
}

/// A response summary seen as the comparator's HTTP-agnostic parts.
fn parts(side: &ResponseSummary) -> ResponseParts<'_> {
    ResponseParts::new(side.status, &side.body).with_headers(
        side.headers
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_slice())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> ResponseParts<'_> {
        ResponseParts::new(200, body.as_bytes())
    }

    fn names(changes: Vec<FieldChange>) -> Vec<String> {
        changes.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn an_invalid_path_is_a_typed_error() {
        let bad_path = CompareConfig {
            ignore_json_paths: vec!["no-slash".into()],
            ..CompareConfig::default()
        };
        assert!(matches!(
            Comparator::new(bad_path),
            Err(CompareConfigError::InvalidPath { .. })
        ));
    }

    #[test]
    fn ignored_paths_and_headers_are_left_out() {
        let comparator = Comparator::new(CompareConfig {
            ignore_json_paths: vec!["/**/at".into()],
            ..CompareConfig::default()
        })
        .expect("valid config");
        let first = json(r#"{"items": [{"at": 1, "v": 1}], "n": 1}"#).header(b"Date", b"x");
        let second = json(r#"{"items": [{"at": 2, "v": 2}], "n": 1}"#).header(b"date", b"y");
        assert_eq!(names(comparator.fields(&first, &second)), ["/items/*/v"]);
    }

    #[test]
    fn identical_responses_match() {
        let comparator = Comparator::default();
        let mut live = ResponseSummary::new(200);
        live.body = b"not json".to_vec();
        live.body_len = 8;
        live.headers = vec![("content-type".into(), b"text/plain".to_vec())];
        assert_eq!(
            comparator.compare("r", &live, &live.clone()),
            Comparison::default()
        );
        let mut other = live.clone();
        other.body = b"not jsoN".to_vec();
        assert!(
            !comparator
                .compare("r", &live, &other)
                .differences
                .is_empty()
        );
    }

    #[test]
    fn a_cut_body_is_compared_exactly() {
        let comparator = Comparator::default();
        let mut live = ResponseSummary::new(200);
        live.body = b"{\"a\": 1".to_vec();
        live.truncated = true;
        let mut shadow = live.clone();
        shadow.body = b"{\"a\": 2".to_vec();
        let differences = comparator.compare("r", &live, &shadow).differences;
        assert!(matches!(differences[..], [Difference::Body { .. }]));
    }
}
