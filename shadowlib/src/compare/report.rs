//! Mismatch rates per route with the top differing fields, each judged noise or not.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::evidence::{FieldDifferences, RouteEvidence};

/// Whether a field that differs between the builds is noise.
///
/// A field is noise when the stable build, run twice on the same request, disagrees with
/// itself on it at least `noise_ratio` times as often as the candidate disagrees with the
/// stable build: a timestamp differs in every pair either way and is noise; a price the
/// candidate changes on every request but stable never does is a mismatch. Without any
/// noise sample, nothing is known to be noise.
///
/// ```
/// use shadowlib::FieldDifferences;
/// use shadowlib::compare::is_noise;
///
/// let timestamp = FieldDifferences { differed: 100, noise: 10 };
/// let price = FieldDifferences { differed: 100, noise: 0 };
/// // 100 pairs compared, 10 of them also re-run on stable.
/// assert!(is_noise(timestamp, 100, 10, 0.5));
/// assert!(!is_noise(price, 100, 10, 0.5));
/// ```
pub fn is_noise(
    field: FieldDifferences,
    compared: u64,
    noise_samples: u64,
    noise_ratio: f64,
) -> bool {
    if field.noise == 0 || noise_samples == 0 {
        return false;
    }
    let noise_rate = field.noise as f64 / noise_samples as f64;
    let differ_rate = field.differed as f64 / compared.max(1) as f64;
    noise_rate >= differ_rate * noise_ratio
}

/// One field of a route's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldReport {
    /// The field: `status`, `header:<name>`, `body` or a JSON path.
    pub field: String,
    /// Compared pairs in which it differed.
    pub differed: u64,
    /// Share of compared pairs in which it differed.
    pub differ_rate: f64,
    /// Share of noise samples (two stable runs) in which it differed.
    pub noise_rate: f64,
    /// Whether it is judged noise (see [`is_noise`]).
    pub is_noise: bool,
}

/// One route's comparison results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteComparison {
    /// The route label.
    pub route: String,
    /// Response pairs compared.
    pub compared: u64,
    /// Pairs that differed in a field that is not noise.
    pub mismatched: u64,
    /// Reads also re-run on the stable build to measure noise.
    pub noise_samples: u64,
    /// The most often differing fields, mismatches before noise.
    pub top_fields: Vec<FieldReport>,
}

impl RouteComparison {
    /// Mismatched over compared; 0 when nothing was compared.
    pub fn mismatch_rate(&self) -> f64 {
        match self.compared {
            0 => 0.0,
            n => self.mismatched as f64 / n as f64,
        }
    }
}

/// Mismatch rates per route, worst first, each with its top differing fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// Routes that had responses compared, most mismatches first.
    pub routes: Vec<RouteComparison>,
}

impl ComparisonReport {
    /// Builds the report from per-route evidence (one comparator's, or several replicas'
    /// merged: the counts add up exactly, and the judgement is made on the sums).
    pub fn from_routes(
        routes: &BTreeMap<String, RouteEvidence>,
        noise_ratio: f64,
        top_fields: usize,
    ) -> Self {
        let mut report: Vec<RouteComparison> = routes
            .iter()
            .filter(|(_, route)| route.comparisons.compared > 0)
            .map(|(name, route)| {
                let compared = route.comparisons.compared;
                let mut fields: Vec<FieldReport> = route
                    .differing_fields
                    .iter()
                    .filter(|(_, counts)| counts.differed > 0)
                    .map(|(field, counts)| FieldReport {
                        field: field.clone(),
                        differed: counts.differed,
                        differ_rate: counts.differed as f64 / compared as f64,
                        noise_rate: match route.noise_samples {
                            0 => 0.0,
                            n => counts.noise as f64 / n as f64,
                        },
                        is_noise: is_noise(*counts, compared, route.noise_samples, noise_ratio),
                    })
                    .collect();
                fields.sort_by(|a, b| {
                    (a.is_noise, std::cmp::Reverse(a.differed), &a.field).cmp(&(
                        b.is_noise,
                        std::cmp::Reverse(b.differed),
                        &b.field,
                    ))
                });
                fields.truncate(top_fields);
                RouteComparison {
                    route: name.clone(),
                    compared,
                    mismatched: route.comparisons.mismatched,
                    noise_samples: route.noise_samples,
                    top_fields: fields,
                }
            })
            .collect();
        report.sort_by(|a, b| {
            b.mismatched
                .cmp(&a.mismatched)
                .then_with(|| a.route.cmp(&b.route))
        });
        Self { routes: report }
    }
}

impl fmt::Display for ComparisonReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.routes.is_empty() {
            return writeln!(f, "responses: none compared");
        }
        for route in &self.routes {
            writeln!(
                f,
                "{}: {} of {} responses mismatched ({:.2}%), {} noise samples",
                route.route,
                route.mismatched,
                route.compared,
                route.mismatch_rate() * 100.0,
                route.noise_samples
            )?;
            for field in &route.top_fields {
                writeln!(
                    f,
                    "  {} differed in {:.1}% (stable vs stable {:.1}%){}",
                    field.field,
                    field.differ_rate * 100.0,
                    field.noise_rate * 100.0,
                    if field.is_noise { " — noise" } else { "" }
                )?;
            }
        }
        Ok(())
    }
}
