//! The comparator: diffs response pairs, learns noise from stable re-runs, keeps per-route
//! counts, and serves them as evidence.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::diff::{Change, diff};
use super::report::{ComparisonReport, is_noise};
use super::rules::IgnoreRules;
use super::{
    CompareResponses, Comparison, Difference, ExactComparison, ResponseParts, ResponseSummary,
};
use crate::evidence::{ArmEvidence, FieldDifferences, RouteEvidence};
use crate::metrics::{MetricError, MetricSource};
use crate::model::Arm;

/// The field that differences in fields past [`CompareConfig::max_fields_per_route`] count under.
pub const OVERFLOW_FIELD: &str = "(other fields)";

/// How responses are compared.
///
/// ```
/// use shadowlib::compare::CompareConfig;
///
/// let config: CompareConfig = toml::from_str(r#"
///     ignore_json_paths = ["/**/updated_at", "/meta/request_id"]
///     noise_fraction = 0.1
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
    /// Share of mirrored reads (after the warm-up) also re-run on the stable build to
    /// measure noise, in `[0, 1]`.
    pub noise_fraction: f64,
    /// How many mirrored reads of each route are all re-run on stable first, so that noise
    /// is known before it could be mistaken for mismatches.
    pub noise_warmup: u64,
    /// A field is noise when stable disagrees with itself on it at least this many times as
    /// often as the candidate disagrees with stable (see [`is_noise`]); positive.
    pub noise_ratio: f64,
    /// The most distinct fields kept per route; later ones share [`OVERFLOW_FIELD`].
    pub max_fields_per_route: usize,
    /// How many fields each route of a [`ComparisonReport`] lists.
    pub top_fields: usize,
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
            noise_fraction: 0.05,
            noise_warmup: 20,
            noise_ratio: 0.5,
            max_fields_per_route: 256,
            top_fields: 5,
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
    /// The noise fraction is not within `[0, 1]`.
    #[error("noise_fraction {0} is not within [0, 1]")]
    NoiseFraction(f64),
    /// The noise ratio is not a positive finite number.
    #[error("noise_ratio {0} is not a positive finite number")]
    NoiseRatio(f64),
}

/// The comparison of one response pair, field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComparisonVerdict {
    /// Every field that differed, with whether it is noise.
    pub differences: Vec<FieldVerdict>,
}

/// One differing field of a [`ComparisonVerdict`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldVerdict {
    /// The field: `status`, `header:<name>`, `body` or a JSON path.
    pub field: String,
    /// How it differs from the stable response.
    pub change: Change,
    /// Whether the difference is noise (it differs between two stable runs too).
    pub noise: bool,
}

impl ComparisonVerdict {
    /// Whether any field differs beyond noise.
    pub fn is_mismatch(&self) -> bool {
        self.differences.iter().any(|d| !d.noise)
    }

    /// The fields that differ beyond noise.
    pub fn mismatches(&self) -> impl Iterator<Item = &FieldVerdict> {
        self.differences.iter().filter(|d| !d.noise)
    }
}

/// Compares the stable and candidate responses to the same mirrored read, field by field,
/// and tells real mismatches from noise — Diffy's idea, in-process.
///
/// Some fields differ between any two runs, even of the same build: timestamps, generated
/// ids, ordering of a set. To learn which, the adapter also re-runs the *stable* build on a
/// fraction of mirrored reads (ask [`should_rerun_stable`](Self::should_rerun_stable)): a
/// field on which two stable runs disagree about as often as stable and candidate do is
/// noise, not a regression.
///
/// The comparator is the [`MetricSource`] of comparisons: it adds the candidate's
/// [`comparisons`](ArmEvidence::comparisons) and, per route, the mismatch counts and
/// differing fields. Use it or [`KpiRecorder::record_comparison`](crate::metrics::KpiRecorder::record_comparison),
/// not both.
///
/// ```
/// use shadowlib::compare::{Comparator, ResponseParts};
///
/// let comparator = Comparator::default();
/// let stable = ResponseParts::new(200, br#"{"price": 10, "at": "12:00:01"}"#);
/// let stable_again = ResponseParts::new(200, br#"{"price": 10, "at": "12:00:02"}"#);
/// let candidate = ResponseParts::new(200, br#"{"price": 12, "at": "12:00:03"}"#);
///
/// assert!(comparator.should_rerun_stable("GET /item")); // warming up: re-run stable
/// let verdict = comparator.compare("GET /item", &stable, &candidate, Some(&stable_again));
/// assert!(verdict.is_mismatch());
/// let mismatched: Vec<_> = verdict.mismatches().map(|d| d.field.as_str()).collect();
/// assert_eq!(mismatched, ["/price"]); // "/at" differed too, but it is noise
///
/// let report = comparator.report();
/// assert_eq!(report.routes[0].mismatched, 1);
/// println!("{report}");
/// ```
#[derive(Debug)]
pub struct Comparator {
    config: CompareConfig,
    rules: IgnoreRules,
    routes: Mutex<HashMap<String, RouteState>>,
}

#[derive(Debug, Default)]
struct RouteState {
    /// Mirrored reads offered for a stable re-run.
    reads: u64,
    evidence: RouteEvidence,
}

impl Default for Comparator {
    fn default() -> Self {
        Self::new(CompareConfig::default()).expect("the default compare config is valid")
    }
}

impl Comparator {
    /// A comparator with the given configuration.
    pub fn new(config: CompareConfig) -> Result<Self, CompareConfigError> {
        if !(0.0..=1.0).contains(&config.noise_fraction) {
            return Err(CompareConfigError::NoiseFraction(config.noise_fraction));
        }
        if !(config.noise_ratio.is_finite() && config.noise_ratio > 0.0) {
            return Err(CompareConfigError::NoiseRatio(config.noise_ratio));
        }
        let rules = IgnoreRules::new(&config.ignore_headers, &config.ignore_json_paths)?;
        Ok(Self {
            config,
            rules,
            routes: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &CompareConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, RouteState>> {
        // Counts stay valid whatever a panicking thread left half done.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the adapter should also run this mirrored read on the stable build, to
    /// measure noise. Call it once per mirrored read; it says yes for the first
    /// [`noise_warmup`](CompareConfig::noise_warmup) reads of each route, then for an even
    /// [`noise_fraction`](CompareConfig::noise_fraction) of them.
    pub fn should_rerun_stable(&self, route: &str) -> bool {
        let mut routes = self.lock();
        let state = route_state(&mut routes, route);
        state.reads += 1;
        let after_warmup = state.reads.saturating_sub(self.config.noise_warmup);
        if after_warmup == 0 {
            return true;
        }
        // Exactly every (1/fraction)-th read, without randomness: reproducible in tests,
        // and even over time.
        let fraction = self.config.noise_fraction;
        (after_warmup as f64 * fraction).floor() > ((after_warmup - 1) as f64 * fraction).floor()
    }

    /// Compares the candidate's response to the stable one for the same read of `route`,
    /// and records the outcome. `stable_rerun` is a second stable response to the same read,
    /// when [`should_rerun_stable`](Self::should_rerun_stable) asked for one.
    pub fn compare(
        &self,
        route: &str,
        stable: &ResponseParts<'_>,
        candidate: &ResponseParts<'_>,
        stable_rerun: Option<&ResponseParts<'_>>,
    ) -> ComparisonVerdict {
        // The diffs, the costly part, run before taking the lock.
        let raw = diff(stable, candidate, &self.rules);
        let noise = stable_rerun.map(|rerun| diff(stable, rerun, &self.rules));

        let max_fields = self.config.max_fields_per_route;
        let mut routes = self.lock();
        let evidence = &mut route_state(&mut routes, route).evidence;
        if let Some(noise) = &noise {
            evidence.noise_samples += 1;
            for field in noise.keys() {
                field_counts(evidence, field, max_fields).noise += 1;
            }
        }
        evidence.comparisons.compared += 1;
        let mut differences = Vec::with_capacity(raw.len());
        for (field, change) in raw {
            let counts = field_counts(evidence, &field, max_fields);
            counts.differed += 1;
            let counts = *counts;
            let noise_here = noise.as_ref().is_some_and(|n| n.contains_key(&field));
            let noise = noise_here
                || is_noise(
                    counts,
                    evidence.comparisons.compared,
                    evidence.noise_samples,
                    self.config.noise_ratio,
                );
            differences.push(FieldVerdict {
                field,
                change,
                noise,
            });
        }
        let verdict = ComparisonVerdict { differences };
        evidence.comparisons.mismatched += u64::from(verdict.is_mismatch());
        verdict
    }

    /// The comparison evidence per route.
    pub fn routes(&self) -> BTreeMap<String, RouteEvidence> {
        self.lock()
            .iter()
            .map(|(route, state)| (route.clone(), state.evidence.clone()))
            .collect()
    }

    /// Mismatch rate per route with the top differing fields.
    pub fn report(&self) -> ComparisonReport {
        ComparisonReport::from_routes(
            &self.routes(),
            self.config.noise_ratio,
            self.config.top_fields,
        )
    }
}

/// The state of one route. Route labels reaching the comparator through a rollout are
/// already capped ([`OTHER_ROUTES`](crate::OTHER_ROUTES)); a caller of its own must bound
/// them too.
fn route_state<'a>(routes: &'a mut HashMap<String, RouteState>, route: &str) -> &'a mut RouteState {
    routes.entry(route.to_owned()).or_default()
}

fn field_counts<'a>(
    evidence: &'a mut RouteEvidence,
    field: &str,
    max_fields: usize,
) -> &'a mut FieldDifferences {
    let fields = &mut evidence.differing_fields;
    let admitted = fields.len() - usize::from(fields.contains_key(OVERFLOW_FIELD));
    let key = if fields.contains_key(field) || admitted < max_fields {
        field
    } else {
        OVERFLOW_FIELD
    };
    fields.entry(key.to_owned()).or_default()
}

#[async_trait]
impl MetricSource for Comparator {
    fn name(&self) -> &str {
        "response-comparator"
    }

    /// Adds the comparisons to the candidate (comparisons are counted on the candidate).
    async fn collect(&self, arm: Arm, into: &mut ArmEvidence) -> Result<(), MetricError> {
        if arm != Arm::Candidate {
            return Ok(());
        }
        for (route, evidence) in self.routes() {
            into.comparisons.compared += evidence.comparisons.compared;
            into.comparisons.mismatched += evidence.comparisons.mismatched;
            match into.routes.get_mut(&route) {
                Some(existing) => existing.merge(&evidence).map_err(|e| MetricError {
                    source_name: self.name().to_owned(),
                    message: e.to_string(),
                })?,
                None => {
                    into.routes.insert(route, evidence);
                }
            }
        }
        Ok(())
    }
}

/// The field-level comparator plugged into an adapter's shadow runtime
/// ([`ShadowConfig::with_comparator`](crate::shadow::ShadowConfig::with_comparator)):
/// JSON bodies are compared key by key, the ignore rules apply, and each field that differs
/// beyond noise is reported as a [`Difference::Field`]. Keep an `Arc` of the comparator to
/// read its [`report`](Comparator::report) with the top differing fields per route.
///
/// The adapters do not re-run the stable build, so noise is judged from the ignore rules
/// and from fields differing stable-vs-stable where re-runs were fed in; a body cut at the
/// body limit on either side cannot be parsed as JSON, so such pairs fall back to
/// [`ExactComparison`]. Since the runtime records the comparison counts itself, do not also
/// register this comparator as a metric source, or they would count twice.
///
/// ```
/// use std::sync::Arc;
/// use shadowlib::compare::{Comparator, CompareConfig};
/// use shadowlib::compare::{CompareResponses, ResponseSummary};
/// use shadowlib::shadow::ShadowConfig;
///
/// let comparator = Arc::new(Comparator::new(CompareConfig {
///     ignore_json_paths: vec!["/served_at".into()],
///     ..CompareConfig::default()
/// })?);
/// let config = ShadowConfig::new().with_comparator(Arc::clone(&comparator));
///
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
/// # let _ = config;
/// # Ok::<(), shadowlib::compare::CompareConfigError>(())
/// ```
impl CompareResponses for Comparator {
    fn compare(&self, route: &str, live: &ResponseSummary, shadow: &ResponseSummary) -> Comparison {
        if live.truncated || shadow.truncated {
            return ExactComparison.compare(route, live, shadow);
        }
        let verdict = Comparator::compare(self, route, &parts(live), &parts(shadow), None);

        Comparison {
            differences: verdict
                .mismatches()
                .map(|d| Difference::Field {
                    field: d.field.clone(),
                })
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
    use crate::model::Version;

    fn json(body: &str) -> ResponseParts<'_> {
        ResponseParts::new(200, body.as_bytes())
    }

    #[test]
    fn invalid_configs_are_typed_errors() {
        let bad_fraction = CompareConfig {
            noise_fraction: 1.5,
            ..CompareConfig::default()
        };
        assert!(matches!(
            Comparator::new(bad_fraction),
            Err(CompareConfigError::NoiseFraction(_))
        ));
        let bad_ratio = CompareConfig {
            noise_ratio: f64::NAN,
            ..CompareConfig::default()
        };
        assert!(matches!(
            Comparator::new(bad_ratio),
            Err(CompareConfigError::NoiseRatio(_))
        ));
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
    fn reruns_cover_the_warmup_then_the_configured_fraction() {
        let comparator = Comparator::new(CompareConfig {
            noise_warmup: 3,
            noise_fraction: 0.25,
            ..CompareConfig::default()
        })
        .expect("valid config");
        let decisions: Vec<bool> = (0..11)
            .map(|_| comparator.should_rerun_stable("r"))
            .collect();
        let reruns = decisions.iter().filter(|&&d| d).count();
        assert!(decisions[..3].iter().all(|&d| d));
        // 3 warm-up reads, then 2 of the next 8.
        assert_eq!(reruns, 5);
        // Each route warms up on its own.
        assert!(comparator.should_rerun_stable("other"));
    }

    #[test]
    fn learned_noise_filters_later_requests_without_a_rerun() {
        let comparator = Comparator::default();
        comparator.compare(
            "r",
            &json(r#"{"at": 1, "v": 1}"#),
            &json(r#"{"at": 2, "v": 1}"#),
            Some(&json(r#"{"at": 3, "v": 1}"#)),
        );
        let later = comparator.compare(
            "r",
            &json(r#"{"at": 4, "v": 1}"#),
            &json(r#"{"at": 5, "v": 1}"#),
            None,
        );
        assert_eq!(later.differences.len(), 1);
        assert!(
            !later.is_mismatch(),
            "the timestamp is known noise: {later:?}"
        );
    }

    #[test]
    fn fields_past_their_cap_overflow() {
        let comparator = Comparator::new(CompareConfig {
            max_fields_per_route: 1,
            ..CompareConfig::default()
        })
        .expect("valid config");
        comparator.compare(
            "a",
            &json(r#"{"x": 1, "y": 1}"#),
            &json(r#"{"x": 2, "y": 2}"#),
            None,
        );
        let routes = comparator.routes();
        let fields: Vec<_> = routes["a"].differing_fields.keys().collect();
        assert_eq!(fields, ["(other fields)", "/x"]);
    }

    #[tokio::test]
    async fn collect_adds_comparisons_to_the_candidate_only() {
        let comparator = Comparator::default();
        comparator.compare("r", &json("1"), &json("2"), None);
        comparator.compare("r", &json("1"), &json("1"), None);
        let mut stable = ArmEvidence::new(Version::new("s", "1"));
        let mut candidate = ArmEvidence::new(Version::new("s", "2"));
        comparator
            .collect(Arm::Stable, &mut stable)
            .await
            .expect("never fails");
        comparator
            .collect(Arm::Candidate, &mut candidate)
            .await
            .expect("never fails");
        assert_eq!(stable.comparisons.compared, 0);
        assert_eq!(candidate.comparisons.compared, 2);
        assert_eq!(candidate.comparisons.mismatched, 1);
        assert_eq!(candidate.routes["r"].differing_fields["body"].differed, 1);
    }
}
