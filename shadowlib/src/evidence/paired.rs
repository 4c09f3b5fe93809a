//! The shadow's paired evidence: the stable twin and the candidate on the same reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Moments;

/// How the two builds' outcomes compare on the same reads: both ran each of them, so a
/// read only one of them failed is evidence about the builds, not about the request.
///
/// ```
/// use shadowlib::PairedOutcomes;
///
/// let mut outcomes = PairedOutcomes::default();
/// outcomes.record(false, false);
/// outcomes.record(false, true); // only the candidate failed
/// assert_eq!(outcomes.pairs(), 2);
/// assert_eq!(outcomes.candidate_only, 1);
/// assert!((outcomes.net_rate() - 0.5).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairedOutcomes {
    /// Reads both builds served.
    pub neither: u64,
    /// Reads only the candidate failed (server error, timeout or panic).
    pub candidate_only: u64,
    /// Reads only the twin failed.
    pub twin_only: u64,
    /// Reads both failed.
    pub both: u64,
}

impl PairedOutcomes {
    /// Adds one pair: whether the twin failed it, whether the candidate did.
    pub fn record(&mut self, twin_failed: bool, candidate_failed: bool) {
        let slot = match (twin_failed, candidate_failed) {
            (false, false) => &mut self.neither,
            (false, true) => &mut self.candidate_only,
            (true, false) => &mut self.twin_only,
            (true, true) => &mut self.both,
        };
        *slot += 1;
    }

    /// Pairs recorded.
    pub fn pairs(&self) -> u64 {
        self.neither + self.candidate_only + self.twin_only + self.both
    }

    /// The candidate's failure rate minus the twin's, on the same reads.
    pub fn net_rate(&self) -> f64 {
        net(self.candidate_only, self.twin_only, self.pairs())
    }

    /// The twin's failure rate.
    pub fn twin_rate(&self) -> f64 {
        rate(self.twin_only + self.both, self.pairs())
    }

    /// Adds another set of pairs.
    pub fn merge(&mut self, other: &PairedOutcomes) {
        self.neither += other.neither;
        self.candidate_only += other.candidate_only;
        self.twin_only += other.twin_only;
        self.both += other.both;
    }
}

/// How each build's response to a read compared with the live response to it.
///
/// The twin is the stable build run again, so where *it* differs from live is noise:
/// timestamps, generated ids, the order of a set. A read counts as the candidate's only
/// when the candidate differs from live in a field in which the twin agreed with live —
/// a difference net of noise. Under identical builds the two one-sided counts have the
/// same distribution, which is what the mismatch test relies on.
///
/// ```
/// use shadowlib::PairedMismatches;
///
/// let mut m = PairedMismatches::default();
/// m.record(true, false); // the candidate differs where the twin agreed
/// m.record(false, false);
/// assert!((m.net_rate() - 0.5).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairedMismatches {
    /// Reads whose three responses (live, twin, candidate) were all compared.
    pub compared: u64,
    /// Reads where the candidate differed from live in a field the twin agreed on.
    pub candidate_only: u64,
    /// Reads where the twin differed from live in a field the candidate agreed on.
    pub twin_only: u64,
}

impl PairedMismatches {
    /// Adds one compared read: whether the candidate differed where the twin agreed, and
    /// whether the twin differed where the candidate agreed.
    pub fn record(&mut self, candidate_only: bool, twin_only: bool) {
        self.compared += 1;
        self.candidate_only += u64::from(candidate_only);
        self.twin_only += u64::from(twin_only);
    }

    /// The candidate's mismatch rate net of noise: `(candidate_only − twin_only) / compared`.
    pub fn net_rate(&self) -> f64 {
        net(self.candidate_only, self.twin_only, self.compared)
    }

    /// Adds another set of comparisons.
    pub fn merge(&mut self, other: &PairedMismatches) {
        self.compared += other.compared;
        self.candidate_only += other.candidate_only;
        self.twin_only += other.twin_only;
    }
}

/// How often one response field differed from live's, on the same reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDifferences {
    /// Reads on which only the candidate differed in it: a mismatch.
    pub candidate_only: u64,
    /// Reads on which only the twin differed in it.
    pub twin_only: u64,
    /// Reads on which both differed in it: noise (the field differs between any two runs).
    pub both: u64,
}

impl FieldDifferences {
    /// Whether the field is noise rather than a candidate's mismatch: the twin, a rerun
    /// of the stable build, differs from live in it at least as often as the candidate
    /// does on its own.
    pub fn is_noise(&self) -> bool {
        self.both + self.twin_only >= self.candidate_only
    }

    /// Adds another field's counts.
    pub fn merge(&mut self, other: &FieldDifferences) {
        self.candidate_only += other.candidate_only;
        self.twin_only += other.twin_only;
        self.both += other.both;
    }
}

/// The paired statistics of a set of reads (all of them, or one route's).
///
/// Latency, CPU and allocations are kept as moments of the per-read log ratio
/// `ln(candidate / twin)`: each read is its own control, so a read that is slow on both
/// builds (a big query, a cold cache) says nothing about either, and the mix of reads
/// cancels out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PairStats {
    /// Outcomes of every read both builds ran.
    pub outcomes: PairedOutcomes,
    /// `ln((candidate latency + floor) / (twin latency + floor))` over the reads both
    /// answered, with the [`LATENCY_FLOOR`](crate::LATENCY_FLOOR).
    pub latency: Moments,
    /// `ln(candidate CPU / twin CPU)` over the reads both answered, where measured.
    pub cpu: Moments,
    /// `ln((candidate bytes + 1) / (twin bytes + 1))` allocated, where measured.
    pub alloc_bytes: Moments,
    /// Reads whose responses were compared with live's.
    pub mismatches: PairedMismatches,
    /// By field (`status`, `header:<name>`, `body` or a JSON path such as
    /// `/items/*/price`): how often it differed from live on each side.
    pub fields: BTreeMap<String, FieldDifferences>,
}

impl PairStats {
    /// Reads both builds ran.
    pub fn pairs(&self) -> u64 {
        self.outcomes.pairs()
    }

    /// Pairs one side of which did not answer (a timeout, a panic, an error before the
    /// response), so no latency was paired for them.
    pub fn incomplete(&self) -> u64 {
        self.pairs().saturating_sub(self.latency.count())
    }

    /// The fields on which the candidate differed where the twin agreed, most often
    /// first, leaving out those that are [noise](FieldDifferences::is_noise).
    pub fn top_fields(&self, limit: usize) -> Vec<(&str, FieldDifferences)> {
        let mut fields: Vec<(&str, FieldDifferences)> = self
            .fields
            .iter()
            .filter(|(_, d)| !d.is_noise())
            .map(|(f, d)| (f.as_str(), *d))
            .collect();
        fields.sort_by(|a, b| {
            b.1.candidate_only
                .cmp(&a.1.candidate_only)
                .then(a.0.cmp(b.0))
        });
        fields.truncate(limit);
        fields
    }

    /// Adds another set of pairs.
    pub fn merge(&mut self, other: &PairStats) {
        self.outcomes.merge(&other.outcomes);
        self.latency.merge(&other.latency);
        self.cpu.merge(&other.cpu);
        self.alloc_bytes.merge(&other.alloc_bytes);
        self.mismatches.merge(&other.mismatches);
        for (field, counts) in &other.fields {
            self.fields.entry(field.clone()).or_default().merge(counts);
        }
    }
}

/// Every read both builds ran in the shadow, in total and per route label.
///
/// ```
/// use shadowlib::PairedEvidence;
///
/// let mut one = PairedEvidence::default();
/// let route = one.routes.entry("GET /items/{id}".into()).or_default();
/// route.outcomes.record(false, false);
/// route.latency.add((1_100.0f64 / 1_000.0).ln());
/// one.total = route.clone();
/// one.route_order.push("GET /items/{id}".into());
///
/// let mut all = PairedEvidence::default();
/// all.merge(&one);
/// all.merge(&one);
/// assert_eq!(all.total.pairs(), 2);
/// assert_eq!(all.route_order.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PairedEvidence {
    /// All pairs.
    pub total: PairStats,
    /// The pairs of each route label; routes past the recorder's cap share
    /// [`OTHER_ROUTES`](crate::OTHER_ROUTES).
    pub routes: BTreeMap<String, PairStats>,
    /// The routes in the order they first appeared (each route's own test gets a share of
    /// the budget by this order, fixed before any of its latencies were seen).
    pub route_order: Vec<String>,
}

impl PairedEvidence {
    /// Adds other pairs.
    pub fn merge(&mut self, other: &PairedEvidence) {
        self.total.merge(&other.total);
        for route in &other.route_order {
            if !self.routes.contains_key(route) {
                self.route_order.push(route.clone());
            }
        }
        for (route, stats) in &other.routes {
            self.routes.entry(route.clone()).or_default().merge(stats);
        }
    }
}

fn rate(events: u64, trials: u64) -> f64 {
    match trials {
        0 => 0.0,
        n => events as f64 / n as f64,
    }
}

fn net(mine: u64, theirs: u64, trials: u64) -> f64 {
    rate(mine, trials) - rate(theirs, trials)
}
