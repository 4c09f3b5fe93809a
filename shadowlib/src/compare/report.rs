//! Net mismatch rates per route with the top differing fields.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::evidence::PairedEvidence;

/// One field of a route's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldReport {
    /// The field: `status`, `header:<name>`, `body` or a JSON path.
    pub field: String,
    /// Share of compared reads on which only the candidate differed from live in it.
    pub candidate_rate: f64,
    /// Share of compared reads on which the twin (stable, run again) differed from live
    /// in it: how noisy the field is.
    pub noise_rate: f64,
    /// Whether it is noise: the twin differs in it at least as often as the candidate
    /// alone does.
    pub is_noise: bool,
}

/// One route's comparison results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteComparison {
    /// The route label.
    pub route: String,
    /// Reads whose live, twin and candidate responses were compared.
    pub compared: u64,
    /// Reads on which the candidate differed from live in a field the twin agreed on.
    pub candidate_only: u64,
    /// Reads on which the twin differed from live in a field the candidate agreed on.
    pub twin_only: u64,
    /// The fields that differed most often, mismatches before noise.
    pub top_fields: Vec<FieldReport>,
}

impl RouteComparison {
    /// The candidate's mismatch rate net of noise: `(candidate_only − twin_only) / compared`.
    pub fn net_mismatch_rate(&self) -> f64 {
        match self.compared {
            0 => 0.0,
            n => (self.candidate_only as f64 - self.twin_only as f64) / n as f64,
        }
    }
}

/// Net mismatch rates per route, worst first, each with its top differing fields.
///
/// ```
/// use shadowlib::PairedEvidence;
/// use shadowlib::compare::ComparisonReport;
///
/// let mut pairs = PairedEvidence::default();
/// let route = pairs.routes.entry("GET /item".into()).or_default();
/// for read in 0..100 {
///     route.mismatches.record(read < 3, false);
///     route.fields.entry("/at".into()).or_default().both += 1;
/// }
/// route.fields.entry("/price".into()).or_default().candidate_only = 3;
/// let report = ComparisonReport::from_pairs(&pairs, 5);
/// assert_eq!(report.routes[0].top_fields[0].field, "/price");
/// assert!(report.routes[0].top_fields[1].is_noise);
/// println!("{report}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// Routes that had responses compared, most net mismatches first.
    pub routes: Vec<RouteComparison>,
}

impl ComparisonReport {
    /// The report of the shadow's pairs, with up to `top_fields` fields per route.
    pub fn from_pairs(pairs: &PairedEvidence, top_fields: usize) -> Self {
        let mut routes: Vec<RouteComparison> = pairs
            .routes
            .iter()
            .filter(|(_, stats)| stats.mismatches.compared > 0)
            .map(|(name, stats)| {
                let compared = stats.mismatches.compared as f64;
                let mut fields: Vec<FieldReport> = stats
                    .fields
                    .iter()
                    .map(|(field, counts)| FieldReport {
                        field: field.clone(),
                        candidate_rate: counts.candidate_only as f64 / compared,
                        noise_rate: (counts.twin_only + counts.both) as f64 / compared,
                        is_noise: counts.is_noise(),
                    })
                    .collect();
                fields.sort_by(|a, b| {
                    a.is_noise
                        .cmp(&b.is_noise)
                        .then(b.candidate_rate.total_cmp(&a.candidate_rate))
                        .then(b.noise_rate.total_cmp(&a.noise_rate))
                        .then_with(|| a.field.cmp(&b.field))
                });
                fields.truncate(top_fields);
                RouteComparison {
                    route: name.clone(),
                    compared: stats.mismatches.compared,
                    candidate_only: stats.mismatches.candidate_only,
                    twin_only: stats.mismatches.twin_only,
                    top_fields: fields,
                }
            })
            .collect();
        routes.sort_by(|a, b| {
            b.net_mismatch_rate()
                .total_cmp(&a.net_mismatch_rate())
                .then_with(|| a.route.cmp(&b.route))
        });
        Self { routes }
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
                "{}: {} reads compared; the candidate alone differed from live on {}, the \
                 stable twin alone on {} (net {:+.2}%)",
                route.route,
                route.compared,
                route.candidate_only,
                route.twin_only,
                route.net_mismatch_rate() * 100.0,
            )?;
            for field in &route.top_fields {
                writeln!(
                    f,
                    "  {}: candidate alone {:.2}%, twin {:.2}%{}",
                    field.field,
                    field.candidate_rate * 100.0,
                    field.noise_rate * 100.0,
                    if field.is_noise { " (noise)" } else { "" }
                )?;
            }
        }
        Ok(())
    }
}
