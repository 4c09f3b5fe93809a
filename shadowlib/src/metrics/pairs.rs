//! Records what the shadow measured: each mirrored read on the stable twin and on the
//! candidate, as a pair.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use async_trait::async_trait;

use super::{MetricError, MetricSource, ResourceUsage};
use crate::evidence::{
    ArmEvidence, Distribution, Evidence, FieldDifferences, LATENCY_FLOOR_US, PairStats,
    PairedEvidence, ShadowCost, ShadowEvidence, ShareInForce,
};
use crate::model::Outcome;

/// The field differences past this many per route count under [`OVERFLOW_FIELD`].
const MAX_FIELDS_PER_ROUTE: usize = 64;

/// The field that differences in fields past the 64th of a route are counted under.
pub const OVERFLOW_FIELD: &str = "(other fields)";

/// The smallest CPU time a log ratio is taken of: below a microsecond the thread clock
/// measures the measuring more than the request.
const CPU_FLOOR_NS: f64 = 1_000.0;

/// One build's run of a mirrored read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Run {
    pub(crate) outcome: Outcome,
    /// Time to the response head; `None` when the build gave no response (a timeout, a
    /// panic, an error before the head).
    pub(crate) latency: Option<Duration>,
    pub(crate) usage: ResourceUsage,
    pub(crate) response_bytes: u64,
}

/// Which side of a compared read differed from the live response in one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Differed {
    CandidateOnly,
    TwinOnly,
    Both,
}

/// The live response compared with both builds' responses to one read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReadComparison {
    /// Each field that differed from live, and on which side.
    pub(crate) fields: Vec<(String, Differed)>,
}

impl ReadComparison {
    fn any(&self, side: Differed) -> bool {
        self.fields.iter().any(|(_, d)| *d == side)
    }
}

/// The shadow's recorder: only the shadow's worker writes to it, once per read, so one
/// lock suffices (the controller takes it once per look, the governor once per interval).
/// Copies shed on the live path are counted apart, in an atomic: the live path never
/// takes the lock.
#[derive(Debug, Default)]
pub(crate) struct PairRecorder {
    evidence: Mutex<ShadowEvidence>,
    shed: CachePadded<AtomicU64>,
}

/// Whether a read's wall latencies are evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// They are.
    Evidence,
    /// The shadow's thread waited for CPU past its deadline while the read ran: what the
    /// wait added to them says nothing of either build.
    Starved,
}

fn record_run(arm: &mut ArmEvidence, run: &Run, request_bytes: u64, timing: Timing) {
    match timing {
        Timing::Evidence => {
            let micros = run
                .latency
                .map_or(0, |l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
            arm.record_request(run.outcome, micros);
        }
        Timing::Starved => arm.outcomes.add(run.outcome, 1),
    }
    arm.request_bytes += request_bytes;
    arm.response_bytes += run.response_bytes;
    if let Some(cpu) = run.usage.cpu_time {
        let nanos = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
        arm.cpu_ns
            .get_or_insert_with(Distribution::cpu_ns)
            .record(nanos);
    }
    if let Some(allocations) = run.usage.allocations {
        arm.alloc_bytes
            .get_or_insert_with(Distribution::bytes)
            .record(allocations.bytes);
        arm.alloc_count
            .get_or_insert_with(Distribution::counts)
            .record(allocations.count);
    }
}

fn record_pair(
    stats: &mut PairStats,
    twin: &Run,
    candidate: &Run,
    compared: Option<&ReadComparison>,
    timing: Timing,
) {
    stats
        .outcomes
        .record(twin.outcome.is_failure(), candidate.outcome.is_failure());
    // Resources are compared on reads both builds answered: a run cut short by a timeout
    // or a panic used less than the read needed.
    if let (Some(t), Some(c)) = (twin.latency, candidate.latency) {
        if timing == Timing::Evidence {
            let floor = LATENCY_FLOOR_US as f64;
            let micros = |d: Duration| d.as_secs_f64() * 1e6 + floor;
            stats.latency.add((micros(c) / micros(t)).ln());
        }
        if let (Some(t), Some(c)) = (twin.usage.cpu_time, candidate.usage.cpu_time) {
            stats.cpu.add(cpu_log_ratio(t, c));
        }
        if let (Some(t), Some(c)) = (twin.usage.allocations, candidate.usage.allocations) {
            stats
                .alloc_bytes
                .add(((c.bytes as f64 + 1.0) / (t.bytes as f64 + 1.0)).ln());
        }
    }
    if let Some(compared) = compared {
        record_comparison(stats, compared);
    }
}

/// The pairs of `route`, made empty the first time it is seen (looked up first, so that
/// the route's name is copied only then).
fn route_stats<'a>(pairs: &'a mut PairedEvidence, route: &str) -> Option<&'a mut PairStats> {
    if !pairs.routes.contains_key(route) {
        pairs.route_order.push(route.to_owned());
        pairs.routes.insert(route.to_owned(), PairStats::default());
    }
    pairs.routes.get_mut(route)
}

/// The log ratio of the candidate's CPU time to the twin's, each floored.
fn cpu_log_ratio(twin: Duration, candidate: Duration) -> f64 {
    let nanos = |d: Duration| (d.as_secs_f64() * 1e9).max(CPU_FLOOR_NS);
    (nanos(candidate) / nanos(twin)).ln()
}

/// Counts which side of a compared read differed from live, and in which fields.
fn record_comparison(stats: &mut PairStats, compared: &ReadComparison) {
    stats.mismatches.record(
        compared.any(Differed::CandidateOnly),
        compared.any(Differed::TwinOnly),
    );
    for (field, differed) in &compared.fields {
        let admitted = stats.fields.len() < MAX_FIELDS_PER_ROUTE;
        let key = if admitted || stats.fields.contains_key(field) {
            field.as_str()
        } else {
            OVERFLOW_FIELD
        };
        let counts: &mut FieldDifferences = match stats.fields.get_mut(key) {
            Some(counts) => counts,
            None => stats.fields.entry(key.to_owned()).or_default(),
        };
        match differed {
            Differed::CandidateOnly => counts.candidate_only += 1,
            Differed::TwinOnly => counts.twin_only += 1,
            Differed::Both => counts.both += 1,
        }
    }
}

impl PairRecorder {
    fn lock(&self) -> MutexGuard<'_, ShadowEvidence> {
        // Every count stays valid whatever a panic interrupted.
        self.evidence.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one read of `route` that both builds ran.
    pub(crate) fn record_pair(
        &self,
        route: &str,
        request_bytes: u64,
        twin: &Run,
        candidate: &Run,
        compared: Option<&ReadComparison>,
    ) {
        self.record_timed(
            route,
            request_bytes,
            Some(twin),
            candidate,
            compared,
            Timing::Evidence,
        );
    }

    /// Records a read only the candidate ran: it describes the candidate, and is never
    /// paired.
    pub(crate) fn record_unpaired(&self, request_bytes: u64, candidate: &Run) {
        self.record_timed("", request_bytes, None, candidate, None, Timing::Evidence);
    }

    /// Records a read that ran while the shadow's thread waited for CPU past its deadline:
    /// as any other (with the twin's run, when it had one), except that neither build's
    /// wall latency is evidence. CPU time, allocations, outcomes and the comparison with
    /// live are: the wait changed none of them (the timeout counts only the time the
    /// shadow had the CPU, so a timeout is still the build's).
    pub(crate) fn record_starved(
        &self,
        route: &str,
        request_bytes: u64,
        twin: Option<&Run>,
        candidate: &Run,
        compared: Option<&ReadComparison>,
    ) {
        self.record_timed(
            route,
            request_bytes,
            twin,
            candidate,
            compared,
            Timing::Starved,
        );
    }

    fn record_timed(
        &self,
        route: &str,
        request_bytes: u64,
        twin: Option<&Run>,
        candidate: &Run,
        compared: Option<&ReadComparison>,
        timing: Timing,
    ) {
        let mut shadow = self.lock();
        record_run(&mut shadow.candidate, candidate, request_bytes, timing);
        let Some(twin) = twin else {
            shadow.unpaired += 1;
            return;
        };
        record_run(&mut shadow.twin, twin, request_bytes, timing);
        let pairs = &mut shadow.pairs;
        record_pair(&mut pairs.total, twin, candidate, compared, timing);
        if let Some(stats) = route_stats(pairs, route) {
            record_pair(stats, twin, candidate, compared, timing);
        }
    }

    /// Records a read neither build ran because the shadow had no room for it.
    pub(crate) fn record_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// What running the shadow cost, and the share in force: the governor's figures at
    /// its last look, which the evidence carries from then on.
    pub(crate) fn set_resources(&self, cost: ShadowCost, share: ShareInForce) {
        let mut shadow = self.lock();
        shadow.cost = cost;
        shadow.share = Some(share);
    }

    /// Everything recorded so far.
    pub(crate) fn snapshot(&self) -> ShadowEvidence {
        let mut snapshot = self.lock().clone();
        let shed = self.shed.load(Ordering::Relaxed);
        snapshot.candidate.outcomes.add(Outcome::Shed, shed);
        snapshot
    }
}

#[async_trait]
impl MetricSource for PairRecorder {
    fn name(&self) -> &str {
        "shadow-pairs"
    }

    async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError> {
        let snapshot = self.snapshot();
        into.shadow.merge(&snapshot).map_err(|e| MetricError {
            source_name: self.name().to_owned(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Allocations;

    fn run(outcome: Outcome, micros: Option<u64>, cpu_us: u64) -> Run {
        Run {
            outcome,
            latency: micros.map(Duration::from_micros),
            usage: ResourceUsage {
                cpu_time: Some(Duration::from_micros(cpu_us)),
                allocations: Some(Allocations {
                    bytes: 1_000,
                    count: 4,
                }),
                polls: 1,
            },
            response_bytes: 10,
        }
    }

    #[test]
    fn a_pair_is_paired_in_total_and_for_its_route() {
        let recorder = PairRecorder::default();
        let twin = run(Outcome::Success, Some(1_000), 100);
        let candidate = run(Outcome::Success, Some(1_100), 200);
        let compared = ReadComparison {
            fields: vec![
                ("/at".into(), Differed::Both),
                ("/price".into(), Differed::CandidateOnly),
            ],
        };
        recorder.record_pair("GET /a", 3, &twin, &candidate, Some(&compared));
        let shadow = recorder.snapshot();
        for stats in [&shadow.pairs.total, &shadow.pairs.routes["GET /a"]] {
            assert_eq!(stats.pairs(), 1);
            assert!((stats.latency.mean() - (1_120.0f64 / 1_020.0).ln()).abs() < 1e-9);
            assert!((stats.cpu.mean() - 2f64.ln()).abs() < 1e-9);
            assert_eq!(stats.alloc_bytes.mean(), 0.0);
            assert_eq!(stats.mismatches.candidate_only, 1);
            assert_eq!(stats.mismatches.twin_only, 0);
            assert_eq!(
                stats.top_fields(5),
                [(
                    "/price",
                    FieldDifferences {
                        candidate_only: 1,
                        ..Default::default()
                    }
                )]
            );
        }
        assert_eq!(shadow.twin.requests(), 1);
        assert_eq!(shadow.candidate.request_bytes, 3);
        assert!(shadow.candidate.cpu_ns.is_some());
    }

    #[test]
    fn a_pair_missing_a_response_counts_for_outcomes_not_latency() {
        let recorder = PairRecorder::default();
        let twin = run(Outcome::Success, Some(1_000), 100);
        let timed_out = run(Outcome::Timeout, None, 100);
        recorder.record_pair("GET /a", 0, &twin, &timed_out, None);
        let total = recorder.snapshot().pairs.total;
        assert_eq!(total.pairs(), 1);
        assert_eq!(total.outcomes.candidate_only, 1);
        assert_eq!(total.latency.count(), 0);
        assert_eq!(total.incomplete(), 1);
        assert_eq!(total.mismatches.compared, 0);
    }

    #[test]
    fn unpaired_and_shed_reads_are_counted_apart() {
        let recorder = PairRecorder::default();
        recorder.record_unpaired(0, &run(Outcome::Success, Some(900), 50));
        recorder.record_shed();
        let shadow = recorder.snapshot();
        assert_eq!(shadow.unpaired, 1);
        assert_eq!(shadow.pairs.total.pairs(), 0);
        assert_eq!(shadow.candidate.outcomes.shed, 1);
        assert_eq!(shadow.candidate.requests(), 1);
    }

    #[test]
    fn fields_past_the_cap_overflow() {
        let recorder = PairRecorder::default();
        let side = run(Outcome::Success, Some(1_000), 100);
        let fields = (0..MAX_FIELDS_PER_ROUTE + 3)
            .map(|i| (format!("/f{i}"), Differed::CandidateOnly))
            .collect();
        recorder.record_pair("r", 0, &side, &side, Some(&ReadComparison { fields }));
        let stats = &recorder.snapshot().pairs.routes["r"];
        assert_eq!(stats.fields.len(), MAX_FIELDS_PER_ROUTE + 1);
        assert_eq!(stats.fields[OVERFLOW_FIELD].candidate_only, 3);
    }
}
